// SPDX-License-Identifier: MIT
// Tests for the shard selection (tools/common/dataset.hpp: shard, select_inputs) and the partial
// results that `shapebias merge` combines (tools/common/partial.hpp).
#include "common/partial.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <fstream>
#include <numeric>
#include <set>

#include "../tmpdir.hpp"
#include "common/cli.hpp"
#include "shapebias/io/state.hpp"

using namespace shapebias;
using namespace shapebias::tools;

namespace {

data_options ids_file(const tmpdir& t, const std::string& text) {
  std::ofstream(t / "ids.txt") << text;
  data_options d;
  d.path = "data";
  d.ids = t / "ids.txt";
  return d;
}

std::string message(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("shard: K/N parsed, every other form refused naming --shard") {
  CHECK(shard::parse("").whole());
  const auto s = shard::parse("2/5");
  CHECK(s.index == 2);
  CHECK(s.count == 5);
  CHECK(s.to_string() == "2/5");
  CHECK(s.to_json()["rule"] == "input id mod count = index");
  CHECK(shard::parse("0/1").whole());
  CHECK(shard::parse("0/1").to_json().is_null());
  for (const char* bad : {"5/5", "1/0", "-1/2", "1", "1/2/3", "a/2", "1/b", "/2", "1/", " 1/2", "1/2 ", "1.0/2"}) {
    INFO(bad);
    CHECK_THROWS_AS(shard::parse(bad), usage_error);
    CHECK(message([&] { shard::parse(bad); }).find("--shard '" + std::string(bad) + "'") == 0);
  }
}

TEST_CASE("shard: the shards of a run hold each id exactly once, by id mod N") {
  for (std::uint64_t n : {1, 2, 3, 7}) {
    std::vector<int> held(1000, 0);
    for (std::uint64_t k = 0; k < n; ++k) {
      const shard s{k, n};
      for (std::int64_t id = 0; id < 1000; ++id) held[static_cast<std::size_t>(id)] += s.contains(id);
      CHECK(s.contains(static_cast<std::int64_t>(k)));
      CHECK(s.contains(static_cast<std::int64_t>(k + 5 * n)));
    }
    CHECK(std::all_of(held.begin(), held.end(), [](int h) { return h == 1; }));
  }
}

TEST_CASE("select_inputs: --ids, then --limit, then --shard, in the list's order") {
  tmpdir t;
  SECTION("every input") {
    data_options d;
    d.shard = "1/3";
    const auto s = select_inputs(d, 10);
    CHECK(s.ids == std::vector<std::uint64_t>{1, 4, 7});
    CHECK(s.id_list.is_null());
    CHECK(s.shard["index"] == 1);
    d.shard = "";
    CHECK(select_inputs(d, 4).ids == std::vector<std::uint64_t>{0, 1, 2, 3});
    CHECK(select_inputs(d, 4, 2).ids == std::vector<std::uint64_t>{0, 1});
  }
  SECTION("the limit applies before the shard, so shards cover the limited run") {
    auto d = ids_file(t, "9 3 4 8\n5 0 # comment\n7\n");
    std::vector<std::uint64_t> all;
    for (const char* k : {"0/2", "1/2"}) {
      d.shard = k;
      const auto s = select_inputs(d, 10, 5);
      all.insert(all.end(), s.ids.begin(), s.ids.end());
      CHECK(s.id_list["ids"] == 7);  // the list as read is described, not the selection
    }
    std::sort(all.begin(), all.end());
    CHECK(all == std::vector<std::uint64_t>{3, 4, 5, 8, 9});
    d.shard = "1/2";
    CHECK(select_inputs(d, 10, 5).ids == std::vector<std::uint64_t>{9, 3, 5});  // the list's order
  }
  SECTION("a shard with none of the inputs is an error naming it") {
    data_options d;
    d.shard = "3/4";
    CHECK_THROWS_WITH(select_inputs(d, 10, 3), Catch::Contains("shard 3/4 holds none of the selected inputs"));
  }
}

TEST_CASE("keep_shard_rows: the rows of other shards leave every layer, ids and labels") {
  io::batch b;
  b.ids = {4, 5, 6, 7, 9};
  b.labels = {40, 50, 60, 70, 90};
  b.data.push_back(xt::xarray<float>::from_shape({5, 2}));
  b.data.push_back(xt::xarray<float>::from_shape({5, 1, 2, 2}));
  std::iota(b.data[0].begin(), b.data[0].end(), 0.f);
  std::iota(b.data[1].begin(), b.data[1].end(), 100.f);
  keep_shard_rows(b, shard{1, 2});
  CHECK(b.ids == std::vector<std::int64_t>{5, 7, 9});
  CHECK(b.labels == std::vector<std::int64_t>{50, 70, 90});
  CHECK((b.data[0] == xt::xarray<float>{{2, 3}, {6, 7}, {8, 9}}));
  CHECK(b.data[1].shape() == std::vector<std::size_t>{3, 1, 2, 2});
  CHECK(b.data[1](0, 0, 0, 0) == 104.f);
  CHECK(b.data[1](2, 0, 1, 1) == 119.f);
  keep_shard_rows(b, shard{});
  CHECK(b.rows() == 3);
}

TEST_CASE("check_parts: one run's shards pass; every mismatch is one line naming the parts") {
  const nlohmann::json key{{"params", {{"beta", 1}, {"layers", {"a", "b"}}}}, {"sources", {{{"model_sha256", "aa"}}}}};
  auto part = [&](std::uint64_t k, std::uint64_t n) { return partial_info::of("tv", shard{k, n}, key); };
  const std::vector<std::string> names{"p0", "p1", "p2"};
  const auto whole = check_parts({part(2, 3), part(0, 3), part(1, 3)}, names);
  CHECK(whole.whole());
  CHECK(whole.shards == std::vector<std::uint64_t>{0, 1, 2});
  CHECK(whole.shard_record().is_null());
  CHECK(!part(1, 3).whole());
  CHECK(part(1, 3).shard_record()["shards"] == nlohmann::json{1});

  CHECK_THROWS_WITH(check_parts({part(0, 3), part(1, 3)}, names), Catch::Contains("missing shard(s) 2/3"));
  CHECK(check_parts({part(0, 3), part(2, 3)}, names, false).shards == std::vector<std::uint64_t>{0, 2});
  CHECK_THROWS_WITH(check_parts({part(0, 2), part(0, 2)}, names), Catch::Contains("shard 0/2 is in both 'p0' and 'p1'"));
  CHECK_THROWS_WITH(check_parts({part(0, 2), part(1, 3)}, names), Catch::Contains("'p1' holds shards of 3, 'p0' of 2"));
  auto other = part(1, 2);
  other.verb = "dissect";
  CHECK_THROWS_WITH(check_parts({part(0, 2), other}, names), Catch::Contains("'p1' is a dissect result, 'p0' a tv result"));
  other = part(1, 2);
  other.key["params"]["beta"] = 2;
  CHECK_THROWS_WITH(check_parts({part(0, 2), other}, names), Catch::Contains("differ in /params/beta (2 vs 1)"));
  other = part(1, 2);
  other.key["sources"][0]["model_sha256"] = "bb";
  CHECK_THROWS_WITH(check_parts({part(0, 2), other}, names), Catch::Contains("/sources/0/model_sha256"));
  other = part(1, 2);
  other.key["params"]["layers"] = {"a"};
  CHECK_THROWS_WITH(check_parts({part(0, 2), other}, names), Catch::Contains("/params/layers"));
}

TEST_CASE("partial records and states survive an HDF5 file image (the form MPI ranks send)") {
  stats::state s;
  s.kind = "example";
  s.params = {{"count", 7}};
  s.text = {{"norm", "l1"}};
  s.arrays = {{"x", xt::xarray<double>{{1, 2}, {3, 4}}}};
  const auto p = partial_info::of("tv", shard{1, 4}, {{"params", {{"beta", 2}}}});
  const nlohmann::json rec{{"verb", "tv"}, {"seeds", {{"noise", 3}}}};
  const auto bytes = partial_image("part.h5", p, rec, [&](hid_t h5) { io::write_state(h5, "S/layer/tv", s, "part.h5"); });
  CHECK(bytes.size() > 0);
  const auto back = open_file_image(bytes, "rank 1");
  CHECK(nlohmann::json::parse(io::h5::read_string_attribute(back.get(), "provenance", "rank 1")) == nlohmann::json{{"run", rec}});
  const auto q = read_partial(back.get(), "rank 1");
  CHECK(q.verb == "tv");
  CHECK(q.count == 4);
  CHECK(q.shards == std::vector<std::uint64_t>{1});
  CHECK(q.key == p.key);
  const auto t = io::read_state(back.get(), "S/layer/tv", "rank 1");
  CHECK(t.params == s.params);
  CHECK(t.text == s.text);
  CHECK((t.array("x") == s.array("x")));

  auto empty = create_memory_file("none.h5");
  CHECK_THROWS_WITH(read_partial(empty.get(), "none.h5"), Catch::Contains("'none.h5': holds no partial result"));
  io::h5::write_attribute(empty.get(), "partial", std::string("{\"verb\": 3}"), "none.h5");
  CHECK_THROWS_WITH(read_partial(empty.get(), "none.h5"), Catch::Contains("damaged or of a newer format"));
}

TEST_CASE("source_identity: the model, preprocessing and ablations of the last step that ran one") {
  const nlohmann::json log = nlohmann::json::array(
      {{{"verb", "dump"}, {"model", {{"sha256", "aa"}}}, {"params", {{"preprocessing", {{"crop", 1}}}}}},
       {{"verb", "dump"}, {"model", {{"sha256", "bb"}}}, {"params", {{"preprocessing", {{"crop", 2}}}, {"ablate", {1}}}}},
       {{"verb", "tv"}}});
  const auto id = source_identity(log);
  CHECK(id["model_sha256"] == "bb");
  CHECK(id["preprocessing"]["crop"] == 2);
  CHECK(id["ablate"] == nlohmann::json{1});
  CHECK(source_identity(nlohmann::json::array({{{"verb", "fixture"}}})).is_null());
}

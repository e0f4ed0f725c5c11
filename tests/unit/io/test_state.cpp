// SPDX-License-Identifier: MIT
// Tests for include/shapebias/io/state.hpp: accumulator states written to and read from HDF5.
#include "shapebias/io/state.hpp"

#include <catch2/catch.hpp>

#include <xtensor/xarray.hpp>
#include <xtensor/xview.hpp>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include "../tmpdir.hpp"
#include "shapebias/stats/shape_bias.hpp"
#include "shapebias/stats/spectrum.hpp"
#include "shapebias/stats/tv.hpp"

namespace io = shapebias::io;
namespace stats = shapebias::stats;

namespace {

template <class T>
xt::xarray<T> random_maps(const std::vector<std::size_t>& shape, unsigned seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<double> u(-1.0, 1.0);
  xt::xarray<T> x = xt::zeros<T>(shape);
  for (auto& v : x) v = static_cast<T>(u(gen));
  return x;
}

/// Bit-for-bit equality of two doubles (so NaN equals NaN and -0 differs from 0).
bool same_bits(double a, double b) { return std::memcmp(&a, &b, sizeof a) == 0; }

void check_equal(const stats::state& got, const stats::state& want) {
  CHECK(got.kind == want.kind);
  CHECK(got.text == want.text);
  REQUIRE(got.params.size() == want.params.size());
  for (const auto& [k, v] : want.params) {
    CAPTURE(k);
    REQUIRE(got.params.count(k) == 1);
    CHECK(same_bits(got.params.at(k), v));
  }
  REQUIRE(got.arrays.size() == want.arrays.size());
  for (const auto& [k, a] : want.arrays) {
    CAPTURE(k);
    REQUIRE(got.arrays.count(k) == 1);
    const auto& g = got.arrays.at(k);
    REQUIRE(g.shape() == a.shape());
    for (std::size_t i = 0; i < a.size(); ++i) CHECK(same_bits(g.data()[i], a.data()[i]));
  }
}

/// A new HDF5 file, closed when it goes out of scope.
io::h5::handle create_file(const std::string& path) {
  io::h5::handle f(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT));
  REQUIRE(f);
  return f;
}
io::h5::handle open_file(const std::string& path) {
  io::h5::handle f(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT));
  REQUIRE(f);
  return f;
}

}  // namespace

TEST_CASE("state: TV and spectrum accumulator states survive HDF5 exactly", "[state]") {
  tmpdir t;
  const std::string path = t / "states.h5";

  auto batch = random_maps<float>({7, 3, 6, 5}, 600);
  batch(2, 1, 3, 3) = std::numeric_limits<float>::quiet_NaN();
  stats::tv_accumulator tv(3, {2.0, stats::tv_norm::l1}, stats::nonfinite_policy::skip);
  tv.update(batch);
  stats::spectrum_accumulator sp(3, 6, 5, 0.3);
  sp.update(batch, 2);
  const auto tv_state = tv.save(), sp_state = sp.save();
  REQUIRE(sp_state.array("ring_power").dimension() == 2);

  {
    auto f = create_file(path);
    io::write_state(f.get(), "tv", tv_state, path);
    io::write_state(f.get(), "stats/layer1/spectrum", sp_state, path);  // intermediate groups made
  }
  auto f = open_file(path);
  const auto tv_back = io::read_state(f.get(), "tv", path);
  const auto sp_back = io::read_state(f.get(), "/stats/layer1/spectrum", path);
  check_equal(tv_back, tv_state);
  check_equal(sp_back, sp_state);

  SECTION("the accumulators loaded from the file give the same results") {
    const auto tv2 = stats::tv_accumulator::load(tv_back);
    CHECK(tv2.rows() == tv.rows());
    CHECK(tv2.height() == 6);
    CHECK(tv2.width() == 5);
    CHECK(tv2.params().beta == 2.0);
    CHECK(tv2.params().norm == stats::tv_norm::l1);
    CHECK(tv2.policy() == stats::nonfinite_policy::skip);
    for (std::size_t c = 0; c < 3; ++c) {
      CHECK(tv2.moments().count(c) == tv.moments().count(c));
      CHECK(tv2.moments().mean(c) == tv.moments().mean(c));
      CHECK(tv2.moments().variance(c) == tv.moments().variance(c));
      CHECK(tv2.skipped(c) == tv.skipped(c));
    }
    CHECK(tv2.skipped(1) == 1);

    const auto sp2 = stats::spectrum_accumulator::load(sp_back);
    CHECK(sp2.rows() == sp.rows());
    CHECK(sp2.skipped() == 1);
    CHECK(sp2.spectrum().cutoff() == 0.3);
    for (std::size_t c = 0; c < 3; ++c) {
      CHECK(sp2.high_fraction().count(c) == sp.high_fraction().count(c));
      CHECK(sp2.high_fraction().mean(c) == sp.high_fraction().mean(c));
      CHECK(sp2.high_fraction().variance(c) == sp.high_fraction().variance(c));
      CHECK(sp2.profile(c) == sp.profile(c));
    }
  }
}

TEST_CASE("state: any state's kind, params, text and arrays round trip", "[state]") {
  tmpdir t;
  const std::string path = t / "custom.h5";
  stats::state s;
  s.kind = "custom";
  s.params = {{"big", 9007199254740992.0},  // 2^53: counts stay exact
              {"neg", -1.5e-300},
              {"third", 1.0 / 3.0},
              {"nan", std::numeric_limits<double>::quiet_NaN()},
              {"inf", -std::numeric_limits<double>::infinity()}};
  s.text = {{"norm", "pixel"}, {"utf8", "\xce\xb2 = 2"}, {"empty", ""}};
  xt::xarray<double> a3 = xt::zeros<double>({2, 3, 4});
  for (std::size_t i = 0; i < a3.size(); ++i) a3.data()[i] = std::ldexp(double(i) + 0.25, int(i) - 12);
  s.arrays = {{"one", xt::xarray<double>{1.0, -0.0, std::numeric_limits<double>::quiet_NaN()}},
              {"two", xt::xarray<double>{{1.0, 2.0, 3.0}, {4.0, 5.0, 6.0}}},
              {"three", a3},
              {"empty", xt::zeros<double>({0})}};
  {
    auto f = create_file(path);
    io::write_state(f.get(), "a/b", s, path);
  }
  auto f = open_file(path);
  const auto back = io::read_state(f.get(), "a/b", path);
  check_equal(back, s);
  CHECK(back.array("two")(1, 0) == 4.0);
}

TEST_CASE("state: reading a missing state is an io_error naming the file", "[state]") {
  tmpdir t;
  const std::string path = t / "missing.h5";
  {
    auto f = create_file(path);
    stats::state s;
    s.kind = "tv";
    s.params = {{"x", 1.0}};
    io::write_state(f.get(), "present", s, path);
  }
  auto f = open_file(path);
  CHECK_THROWS_AS(io::read_state(f.get(), "absent", path), shapebias::io_error);
  CHECK_THROWS_WITH(io::read_state(f.get(), "absent", path), Catch::Contains(path) && Catch::Contains("absent"));
  CHECK_THROWS_WITH(io::read_state(f.get(), "no/such/group", path), Catch::Contains(path));
  CHECK_THROWS_WITH(io::read_state(f.get(), "present/deeper", path), Catch::Contains(path));
  CHECK_NOTHROW(io::read_state(f.get(), "present", path));
}

TEST_CASE("state: writing over an existing state is an io_error naming the file", "[state]") {
  tmpdir t;
  const std::string path = t / "twice.h5";
  stats::state s;
  s.kind = "tv";
  auto f = create_file(path);
  io::write_state(f.get(), "g", s, path);
  CHECK_THROWS_AS(io::write_state(f.get(), "g", s, path), shapebias::io_error);
  CHECK_THROWS_WITH(io::write_state(f.get(), "g", s, path), Catch::Contains(path));
}

TEST_CASE("state: a shape-bias state survives HDF5; a name both text and number is refused", "[state]") {
  tmpdir t;
  const std::string path = t / "bias.h5";
  stats::coarse_mapping m{{"cat", "dog"}, {{0, 2}, {1}}};
  stats::shape_bias_accumulator a(m);
  const xt::xarray<double> p{{0.7, 0.2, 0.1}, {0.1, 0.8, 0.1}, {0.2, 0.2, 0.6}};
  const std::size_t shape[] = {0, 0, 1}, texture[] = {1, 1, 0};
  a.update(p, shape, texture);
  auto f = create_file(path);
  io::write_state(f.get(), "bias", a.save(), path);
  const auto b = stats::shape_bias_accumulator::load(io::read_state(f.get(), "bias", path));
  CHECK(b.mapping() == a.mapping());
  CHECK(b.shape_decisions() == a.shape_decisions());
  CHECK(b.texture_decisions() == a.texture_decisions());
  stats::state s;
  s.kind = "clash";
  s.params = {{"categories", 2}};
  s.text = {{"categories", "a\nb"}};
  CHECK_THROWS_WITH(io::write_state(f.get(), "clash", s, path), Catch::Contains("'categories' is both"));
  s.params.clear();
  s.text = {{"kind", "x"}};
  CHECK_THROWS_AS(io::write_state(f.get(), "clash2", s, path), std::invalid_argument);
}

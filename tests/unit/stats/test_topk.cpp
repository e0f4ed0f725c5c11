// SPDX-License-Identifier: MIT
// Tests for include/shapebias/stats/topk.hpp (topk_units, unit_activity). The reference is a full
// sort of every row, written here; scores are compared exactly (no arithmetic differs).
#include <catch2/catch.hpp>

#include <xtensor/xarray.hpp>
#include <xtensor/xbuilder.hpp>
#include <xtensor/xview.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <stdexcept>
#include <type_traits>
#include <utility>
#include <vector>

#include "shapebias/stats/topk.hpp"

using shapebias::stats::map_scores;
using shapebias::stats::ranks_before;
using shapebias::stats::topk_entry;
using shapebias::stats::topk_rank;
using shapebias::stats::topk_units;
using shapebias::stats::unit_activity;

namespace {

/// [n, U, H, W] (or [n, U] when h = 0) of integers in [0, distinct) (many ties), or normal values.
xt::xarray<float> batch(std::size_t n, std::size_t units, std::size_t h, std::size_t w, unsigned seed, int distinct) {
  std::mt19937 gen(seed);
  std::normal_distribution<double> d(0.0, 1.0);
  std::uniform_int_distribution<int> k(0, distinct > 0 ? distinct - 1 : 0);
  xt::xarray<float> x = h ? xt::xarray<float>(xt::zeros<float>({n, units, h, w})) : xt::xarray<float>(xt::zeros<float>({n, units}));
  for (auto& v : x) v = static_cast<float>(distinct > 0 ? double(k(gen)) : d(gen));
  return x;
}

/// n distinct ids in shuffled order, so id order is not row order.
std::vector<std::int64_t> shuffled_ids(std::size_t n, unsigned seed) {
  std::vector<std::int64_t> ids(n);
  for (std::size_t i = 0; i < n; ++i) ids[i] = 1000 + 7 * static_cast<std::int64_t>(i);
  std::shuffle(ids.begin(), ids.end(), std::mt19937(seed));
  return ids;
}

/// Every row of unit u scored directly, sorted by the order, first k kept.
std::vector<topk_entry> full_sort(const xt::xarray<float>& x, const std::vector<std::int64_t>& ids, std::size_t u,
                                  std::size_t k, topk_rank rank) {
  const std::size_t n = x.shape()[0], units = x.shape()[1], w = x.dimension() == 4 ? x.shape()[3] : 1;
  const std::size_t per = x.size() / (n * units);
  std::vector<topk_entry> all;
  for (std::size_t r = 0; r < n; ++r) {
    const float* p = x.data() + (r * units + u) * per;
    std::size_t arg = 0;
    double sum = 0;
    for (std::size_t j = 0; j < per; ++j) {
      if (p[j] > p[arg]) arg = j;
      sum += p[j];
    }
    all.push_back({rank == topk_rank::max ? double(p[arg]) : sum / double(per), ids[r], arg / w, arg % w});
  }
  std::sort(all.begin(), all.end(), ranks_before);
  all.resize(std::min(k, all.size()));
  return all;
}

/// Feeds x in batches of `size` rows (the last one shorter).
void feed(topk_units& t, const xt::xarray<float>& x, const std::vector<std::int64_t>& ids, std::size_t size,
          unsigned threads = 1, std::size_t from = 0, std::size_t to = ~std::size_t(0)) {
  to = std::min<std::size_t>(to, x.shape()[0]);
  for (std::size_t r = from; r < to; r += size) {
    const std::size_t e = std::min(to, r + size);
    xt::xarray<float> b = xt::view(x, xt::range(r, e));
    t.update(b, ids.data() + r, threads);
  }
}

bool same(const topk_units& a, const topk_units& b) {
  if (a.units() != b.units() || a.count() != b.count()) return false;
  for (std::size_t u = 0; u < a.units(); ++u)
    if (a.result(u) != b.result(u)) return false;
  return true;
}

}  // namespace

TEST_CASE("topk: equals a full sort, with many ties, for every batch size", "[stats][topk]") {
  const std::size_t n = 300, units = 5, k = 7;
  const auto ids = shuffled_ids(n, 3);
  for (int distinct : {3, 0}) {  // 3: most scores tie (the id decides); 0: continuous
    const auto x = batch(n, units, 3, 4, 11, distinct);
    for (std::size_t size : {std::size_t(1), std::size_t(7), std::size_t(64), n}) {
      topk_units t(units, k);
      feed(t, x, ids, size);
      CHECK(t.count() == n);
      for (std::size_t u = 0; u < units; ++u) CHECK(t.result(u) == full_sort(x, ids, u, k, topk_rank::max));
    }
  }
  SECTION("K larger than the rows seen keeps them all, sorted") {
    const auto x = batch(20, units, 2, 2, 5, 4);
    topk_units t(units, 49);
    feed(t, x, ids, 6);
    CHECK(t.result(2).size() == 20);
    CHECK(t.result(2) == full_sort(x, ids, 2, 49, topk_rank::max));
  }
  SECTION("[B, U] batches and no ids: the row number is the id") {
    const auto x = batch(50, units, 0, 0, 9, 5);
    std::vector<std::int64_t> rows(50);
    std::iota(rows.begin(), rows.end(), 0);
    topk_units t(units, 10);
    t.update(xt::xarray<float>(xt::view(x, xt::range(0, 20))));
    t.update(xt::xarray<float>(xt::view(x, xt::range(20, 50))));
    for (std::size_t u = 0; u < units; ++u) CHECK(t.result(u) == full_sort(x, rows, u, 10, topk_rank::max));
  }
}

TEST_CASE("topk: mean ranking equals a full sort of spatial means", "[stats][topk]") {
  const std::size_t n = 120, units = 4;
  const auto ids = shuffled_ids(n, 8);
  const auto x = batch(n, units, 3, 3, 21, 4);
  topk_units t(units, 9, topk_rank::mean);
  feed(t, x, ids, 17);
  for (std::size_t u = 0; u < units; ++u) CHECK(t.result(u) == full_sort(x, ids, u, 9, topk_rank::mean));
}

TEST_CASE("topk: argmax positions on a hand-made case", "[stats][topk]") {
  // 2 rows, 2 units, 2 × 3 maps.
  xt::xarray<float> x = xt::zeros<float>({2, 2, 2, 3});
  x(0, 0, 1, 2) = 5.0f;                       // row 0, unit 0: max at (1, 2)
  x(0, 1, 0, 1) = 2.0f, x(0, 1, 1, 0) = 2.0f;  // row 0, unit 1: tie, the first in row-major order (0, 1)
  x(1, 0, 0, 0) = 7.0f;                       // row 1, unit 0: (0, 0)
  xt::view(x, 1, 1) = -1.0f;                  // row 1, unit 1: all −1 …
  x(1, 1, 1, 1) = -0.5f;                      // … except (1, 1)
  const std::vector<std::int64_t> ids = {40, 30};
  topk_units t(2, 2);
  t.update(x, ids.data());
  CHECK(t.result(0) == std::vector<topk_entry>{{7.0, 30, 0, 0}, {5.0, 40, 1, 2}});
  CHECK(t.result(1) == std::vector<topk_entry>{{2.0, 40, 0, 1}, {-0.5, 30, 1, 1}});
  topk_units m(2, 2, topk_rank::mean);
  m.update(x, ids.data());
  CHECK(m.result(0) == std::vector<topk_entry>{{7.0 / 6, 30, 0, 0}, {5.0 / 6, 40, 1, 2}});
  CHECK(m.result(1)[1] == topk_entry{(-5.0 - 0.5) / 6, 30, 1, 1});
}

TEST_CASE("topk: merge of shards, thread counts and batch order give one pass's result", "[stats][topk]") {
  const std::size_t n = 400, units = 6, k = 11;
  const auto ids = shuffled_ids(n, 4);
  const auto x = batch(n, units, 2, 5, 33, 3);
  topk_units whole(units, k);
  feed(whole, x, ids, n);
  SECTION("three shards merged in either order") {
    topk_units a(units, k), b(units, k), c(units, k);
    feed(a, x, ids, 13, 1, 0, 90);
    feed(b, x, ids, 50, 1, 90, 310);
    feed(c, x, ids, 7, 1, 310, n);
    topk_units abc = a;
    abc.merge(b);
    abc.merge(c);
    CHECK(same(abc, whole));
    topk_units cba = c;
    cba.merge(b);
    cba.merge(a);
    CHECK(same(cba, whole));
    topk_units empty(units, k);
    empty.merge(abc);
    CHECK(same(empty, whole));
  }
  SECTION("1 and 2 threads") {
    topk_units one(units, k), two(units, k);
    feed(one, x, ids, 64, 1);
    feed(two, x, ids, 64, 2);
    CHECK(same(one, two));
    CHECK(same(two, whole));
  }
  SECTION("batches in reverse order") {
    topk_units rev(units, k);
    for (std::size_t r = n; r > 0; r -= 40) feed(rev, x, ids, 40, 1, r - 40, r);
    CHECK(same(rev, whole));
  }
  SECTION("merge refuses other U, K or ranking") {
    topk_units t(units, k);
    CHECK_THROWS_AS(t.merge(topk_units(units + 1, k)), std::invalid_argument);
    CHECK_THROWS_AS(t.merge(topk_units(units, k + 1)), std::invalid_argument);
    CHECK_THROWS_AS(t.merge(topk_units(units, k, topk_rank::mean)), std::invalid_argument);
  }
}

TEST_CASE("topk: save and load round trip", "[stats][topk]") {
  const std::size_t n = 200, units = 3, k = 8;
  const auto ids = shuffled_ids(n, 6);
  const auto x = batch(n, units, 2, 2, 44, 0);
  topk_units t(units, k, topk_rank::mean);
  feed(t, x, ids, 30, 1, 0, 120);
  const auto s = t.save();
  CHECK(s.kind == "topk_units");
  CHECK(s.array("id").shape()[1] == k);
  auto back = topk_units::load(s);
  CHECK(back.k() == k);
  CHECK(back.rank() == topk_rank::mean);
  CHECK(same(back, t));
  // Both continue identically.
  feed(t, x, ids, 30, 1, 120, n);
  feed(back, x, ids, 80, 1, 120, n);
  CHECK(same(back, t));
  SECTION("a state of another kind, version or shape is refused") {
    auto bad = s;
    bad.kind = "tv";
    CHECK_THROWS_AS(topk_units::load(bad), std::invalid_argument);
    bad = s;
    bad.params["version"] = 2;
    CHECK_THROWS_AS(topk_units::load(bad), std::invalid_argument);
    bad = s;
    bad.arrays["id"] = xt::zeros<double>({units, k - 1});
    CHECK_THROWS_AS(topk_units::load(bad), std::invalid_argument);
    bad = s;
    bad.arrays["size"](0) = double(k + 1);
    CHECK_THROWS_AS(topk_units::load(bad), std::invalid_argument);
  }
}

TEST_CASE("topk: memory does not grow with the rows", "[stats][topk]") {
  const std::size_t units = 16, k = 49;
  topk_units t(units, k);
  std::vector<std::int64_t> ids(1000);
  std::iota(ids.begin(), ids.end(), 0);
  t.update(batch(1000, units, 0, 0, 1, 0), ids.data());
  const auto bytes = t.retained_bytes();
  for (int rep = 1; rep < 10; ++rep) {
    std::iota(ids.begin(), ids.end(), rep * 1000);
    t.update(batch(1000, units, 0, 0, unsigned(rep + 1), 0), ids.data());
  }
  CHECK(t.count() == 10000);
  CHECK(t.retained_bytes() == bytes);
  CHECK(bytes < sizeof(t) + units * (sizeof(std::vector<topk_entry>) + 2 * k * sizeof(topk_entry)));
}

TEST_CASE("topk: errors leave the accumulator unchanged", "[stats][topk]") {
  CHECK_THROWS_AS(topk_units(3, 0), std::invalid_argument);
  topk_units t(3, 4);
  const std::vector<std::int64_t> ids = {10, 11, 12, 13};
  t.update(batch(4, 3, 2, 2, 1, 0), ids.data());
  const topk_units before = t;
  SECTION("NaN and Inf name row, input id and unit") {
    auto x = batch(4, 3, 2, 2, 2, 0);
    const std::vector<std::int64_t> more = {20, 21, 22, 23};
    x(2, 1, 1, 0) = std::numeric_limits<float>::quiet_NaN();
    CHECK_THROWS_WITH(t.update(x, more.data()), Catch::Contains("row 6 (input id 22), unit 1 holds NaN"));
    x(2, 1, 1, 0) = 0;
    x(3, 2, 0, 0) = -std::numeric_limits<float>::infinity();
    CHECK_THROWS_AS(t.update(x, more.data()), std::domain_error);
    CHECK_THROWS_WITH(t.update(x, more.data(), 2), Catch::Contains("row 7 (input id 23), unit 2 holds Inf"));
  }
  SECTION("wrong shapes and ids beyond 2^53") {
    CHECK_THROWS_AS(t.update(batch(4, 2, 2, 2, 1, 0), ids.data()), std::invalid_argument);
    CHECK_THROWS_AS(t.update(xt::xarray<float>(xt::zeros<float>({4, 3, 2})), ids.data()), std::invalid_argument);
    const std::vector<std::int64_t> huge = {1, (std::int64_t(1) << 53) + 1, 2, 3};
    CHECK_THROWS_AS(t.update(batch(4, 3, 2, 2, 3, 0), huge.data()), std::invalid_argument);
  }
  CHECK(same(t, before));
}

TEST_CASE("map_scores: max, mean and argmax against a direct loop, float and double", "[stats][topk]") {
  // Normal values (negative ones included), some maps all negative, some holding subnormals.
  std::mt19937 gen(17);
  std::normal_distribution<double> d(0.0, 1.0);
  xt::xarray<double> x = xt::zeros<double>({5, 7, 3, 5});
  for (auto& v : x) v = d(gen);
  xt::view(x, 1, 2) = xt::view(x, 1, 2) - 10.0;
  xt::view(x, 2, 3) = xt::view(x, 2, 3) * 1e-310;
  const xt::xarray<float> xf = x;
  auto check = [](const auto& a, const auto& s) {
    const std::size_t per = 15;
    for (std::size_t r = 0; r < 5; ++r)
      for (std::size_t u = 0; u < 7; ++u) {
        const auto* p = a.data() + (r * 7 + u) * per;
        std::size_t arg = 0;
        double sum = 0;
        for (std::size_t j = 0; j < per; ++j) {
          if (p[j] > p[arg]) arg = j;
          sum += double(p[j]);
        }
        CHECK(s.max(r, u) == double(p[arg]));
        CHECK(s.mean(r, u) == sum / double(per));
        CHECK(s.argmax(r, u) == std::pair<std::size_t, std::size_t>{arg / 5, arg % 5});
      }
  };
  for (unsigned threads : {1u, 2u}) {
    const map_scores sd(x, topk_rank::mean, threads);
    const map_scores sf(xf, topk_rank::mean, threads);
    static_assert(std::is_same_v<decltype(sd), const map_scores<double>>);
    static_assert(std::is_same_v<decltype(sf), const map_scores<float>>);
    CHECK(sd.rows() == 5);
    CHECK(sd.units() == 7);
    CHECK(sd.has_mean());
    check(x, sd);
    check(xf, sf);
  }
  CHECK_FALSE(map_scores(xf).has_mean());
  CHECK_THROWS_AS(map_scores(xt::xarray<float>(xt::zeros<float>({2, 3, 4}))), std::invalid_argument);
  CHECK_THROWS_AS(map_scores(xt::xarray<float>(xt::zeros<float>({2, 3, 0, 4}))), std::invalid_argument);
}

TEST_CASE("map_scores: signed zeros score as the first maximum", "[stats][topk]") {
  // Maps 1 × 3: the first zero decides the sign of the score, as a first-maximum loop finds it.
  const float z = 0.0f, nz = -0.0f;
  const xt::xarray<float> x = {{{{nz, z, -1.0f}}, {{z, nz, -1.0f}}}, {{{-1.0f, nz, z}}, {{-2.0f, -1.0f, nz}}}};
  const map_scores s(x);
  CHECK(std::signbit(s.max(0, 0)));
  CHECK_FALSE(std::signbit(s.max(0, 1)));
  CHECK(std::signbit(s.max(1, 0)));
  CHECK(s.argmax(1, 0) == std::pair<std::size_t, std::size_t>{0, 1});
  CHECK(std::signbit(s.max(1, 1)));
  topk_units t(2, 1);
  unit_activity a(2);
  t.update(s);
  a.update(s);
  CHECK(std::signbit(t.result(0)[0].score));  // row 0 (id 0) ranks first among the tied zeros
  CHECK_FALSE(std::signbit(t.result(1)[0].score));
  CHECK(std::signbit(a.max(0)));  // std::max keeps the first of equal maxima
  CHECK_FALSE(std::signbit(a.max(1)));
}

TEST_CASE("map_scores: one scoring fed to both accumulators equals their own updates", "[stats][topk]") {
  const std::size_t n = 200, units = 6, k = 9;
  const auto ids = shuffled_ids(n, 12);
  const auto x = batch(n, units, 3, 4, 29, 4);
  const std::vector<double> thresholds = {0.0, 1.0, 2.0, 3.0, 0.5, 2.5};
  for (const auto rank : {topk_rank::max, topk_rank::mean}) {
    topk_units own(units, k, rank), once(units, k, rank);
    unit_activity own_a(thresholds), once_a(thresholds);
    for (std::size_t r = 0; r < n; r += 64) {
      const xt::xarray<float> b = xt::view(x, xt::range(r, std::min(n, r + 64)));
      own.update(b, ids.data() + r);
      own_a.update(b, ids.data() + r);
      const map_scores s(b, rank, 2);
      once.update(s, ids.data() + r, 2);
      once_a.update(s, ids.data() + r);
    }
    CHECK(same(once, own));
    for (std::size_t u = 0; u < units; ++u) {
      CHECK(once.result(u) == full_sort(x, ids, u, k, rank));
      CHECK(once_a.above(u) == own_a.above(u));
      CHECK(once_a.max(u) == own_a.max(u));
    }
    CHECK(once_a.count() == n);
  }
  SECTION("errors name the accumulator and leave it unchanged") {
    topk_units t(units, k, topk_rank::mean);
    unit_activity a(thresholds);
    const xt::xarray<float> b = xt::view(x, xt::range(0, 10));
    t.update(b, ids.data());
    a.update(b, ids.data());
    const topk_units before = t;
    CHECK_THROWS_WITH(t.update(map_scores(b), ids.data()), Catch::Contains("spatial mean"));
    auto bad = b;
    bad(3, 4, 2, 1) = std::numeric_limits<float>::infinity();
    bad(5, 0, 0, 0) = std::numeric_limits<float>::quiet_NaN();
    const map_scores s(bad, topk_rank::mean);
    CHECK_THROWS_WITH(t.update(s, ids.data() + 10), Catch::Contains("topk_units: row 13 (input id " +
                                                                    std::to_string(ids[13]) + "), unit 4 holds Inf"));
    CHECK_THROWS_WITH(a.update(s), Catch::Contains("unit_activity: row 13 (input id 13), unit 4 holds Inf"));
    CHECK_THROWS_WITH(unit_activity(units + 1).update(s), Catch::Contains("[B, 7, H, W] or [B, 7], got [10, 6, 3, 4]"));
    CHECK(same(t, before));
    CHECK(a.count() == 10);
  }
}

TEST_CASE("unit_activity: sparsity and dead units on constructed activations", "[stats][topk]") {
  // 3 units, maps 1 × 2. Unit 0 fires in rows 0 and 2; unit 1 is positive everywhere but above its
  // threshold 0.5 only in row 1; unit 2 never exceeds 0 (dead; its max is 0).
  xt::xarray<float> x = {{{{1.0f, -1.0f}}, {{0.2f, 0.3f}}, {{0.0f, -2.0f}}},
                         {{{-1.0f, 0.0f}}, {{0.1f, 0.9f}}, {{-1.0f, -1.0f}}},
                         {{{0.0f, 0.25f}}, {{0.5f, 0.1f}}, {{-3.0f, 0.0f}}}};
  unit_activity a(std::vector<double>{0.0, 0.5, 0.0});
  a.update(xt::xarray<float>(xt::view(x, xt::range(0, 1))));
  a.update(xt::xarray<float>(xt::view(x, xt::range(1, 3))), nullptr, 2);
  CHECK(a.count() == 3);
  CHECK(a.above(0) == 2);
  CHECK(a.above(1) == 1);  // 0.5 is not above 0.5
  CHECK(a.above(2) == 0);
  CHECK(a.fraction_above(0) == 2.0 / 3);
  CHECK(a.max(0) == 1.0);
  CHECK(a.max(1) == double(0.9f));
  CHECK(a.max(2) == 0.0);
  CHECK(a.dead(2));
  CHECK_FALSE(a.dead(1));
  CHECK(a.dead_units() == 1);
  CHECK(a.dead_units(0.95) == 2);  // ε = 0.95 also takes unit 1
  SECTION("one threshold for every unit") {
    unit_activity z(3);
    z.update(x);
    CHECK(z.above(1) == 3);
    CHECK(z.threshold(2) == 0.0);
  }
  SECTION("merge equals one pass; save and load") {
    unit_activity b(std::vector<double>{0.0, 0.5, 0.0}), c(std::vector<double>{0.0, 0.5, 0.0});
    b.update(xt::xarray<float>(xt::view(x, xt::range(0, 2))));
    c.update(xt::xarray<float>(xt::view(x, xt::range(2, 3))));
    b.merge(c);
    const auto back = unit_activity::load(b.save());
    for (std::size_t u = 0; u < 3; ++u) {
      CHECK(b.above(u) == a.above(u));
      CHECK(b.max(u) == a.max(u));
      CHECK(back.above(u) == a.above(u));
      CHECK(back.max(u) == a.max(u));
      CHECK(back.threshold(u) == a.threshold(u));
    }
    CHECK(back.count() == 3);
    CHECK_THROWS_AS(b.merge(unit_activity(3)), std::invalid_argument);
    CHECK_THROWS_AS(b.merge(unit_activity(2)), std::invalid_argument);
  }
  SECTION("errors") {
    CHECK_THROWS_AS(unit_activity(3).max(0), std::runtime_error);
    CHECK_THROWS_AS(unit_activity(std::vector<double>{0.0, std::nan("")}), std::invalid_argument);
    auto y = x;
    y(1, 2, 0, 1) = std::numeric_limits<float>::infinity();
    const std::vector<std::int64_t> ids = {5, 6, 7};
    CHECK_THROWS_WITH(a.update(y, ids.data()), Catch::Contains("row 4 (input id 6), unit 2 holds Inf"));
    CHECK(a.count() == 3);
    CHECK(a.above(0) == 2);
  }
}

// SPDX-License-Identifier: MIT
// Tests for include/shapebias/stats/quantile.hpp (exact_quantiles, quantile_sketch).
// Hand values of NumPy's "linear" and "hazen" quantiles are worked out in the test itself.
#include <catch2/catch.hpp>

#include <xtensor/xarray.hpp>
#include <xtensor/xbuilder.hpp>
#include <xtensor/xview.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "shapebias/stats/quantile.hpp"

using shapebias::stats::exact_quantiles;
using shapebias::stats::quantile_sketch;

namespace {

// Sketch readout vs exact hazen below capacity: the same interpolation computed in a different
// order ((p − x_i)/Δx vs n·p − 0.5 − i), so a few ulps of the value range.
constexpr double interp_rel_tol = 1e-12;
// Practical rank-error bound asserted for the default resolution on 10^6 values (NetDissect-Lite
// documents "better than ~0.1 %"); the deterministic guarantee rank_error_bound() is checked too.
constexpr double practical_rank_tol = 1e-3;

template <class T = float>
xt::xarray<T> random_batch(const std::vector<std::size_t>& shape, unsigned seed, int distinct = 0) {
  std::mt19937 gen(seed);
  std::normal_distribution<double> d(0.0, 1.0);
  std::uniform_int_distribution<int> k(0, distinct > 0 ? distinct - 1 : 0);
  xt::xarray<T> x = xt::zeros<T>(shape);
  for (auto& v : x) v = static_cast<T>(distinct > 0 ? double(k(gen)) : d(gen));  // distinct > 0: many ties
  return x;
}

/// A batch [n, 1]: one unit, one value per row.
xt::xarray<float> column(const std::vector<float>& v) {
  xt::xarray<float> x = xt::zeros<float>({v.size(), std::size_t(1)});
  std::copy(v.begin(), v.end(), x.begin());
  return x;
}

/// Unit u's population of a batch [B, U, H, W] or [B, U], in row then spatial order.
std::vector<float> population(const xt::xarray<float>& x, std::size_t u) {
  const std::size_t b = x.shape()[0], units = x.shape()[1], per = x.size() / (b * units);
  std::vector<float> v;
  for (std::size_t r = 0; r < b; ++r)
    for (std::size_t j = 0; j < per; ++j) v.push_back(x.data()[(r * units + u) * per + j]);
  return v;
}

/// NumPy's quantile on sorted values, written directly: linear (h = p(n−1)) or hazen (h = np − 0.5).
double numpy_quantile(const std::vector<float>& sorted, double p, bool hazen) {
  const double n = static_cast<double>(sorted.size());
  const double h = std::clamp(hazen ? n * p - 0.5 : (n - 1) * p, 0.0, n - 1);
  const auto lo = static_cast<std::size_t>(std::floor(h));
  const double t = h - double(lo);
  if (lo + 1 >= sorted.size()) return sorted[lo];
  return sorted[lo] + t * (double(sorted[lo + 1]) - double(sorted[lo]));
}

/// How far (as a fraction of n) level p is from the rank interval [#{x < v}, #{x ≤ v}] of v.
double rank_error(const std::vector<float>& sorted, double v, double p) {
  const double n = static_cast<double>(sorted.size());
  const double less = double(std::lower_bound(sorted.begin(), sorted.end(), v, [](float a, double b) { return a < b; }) - sorted.begin());
  const double le = double(std::upper_bound(sorted.begin(), sorted.end(), v, [](double a, float b) { return a < b; }) - sorted.begin());
  const double target = p * n;
  if (target < less) return (less - target) / n;
  if (target > le) return (target - le) / n;
  return 0.0;
}

/// 10^6 values of one unit fed as 100 batches [10000, 1]; `heavy`: Pareto (alpha 1.1), else uniform.
std::vector<xt::xarray<float>> million(bool heavy, unsigned seed) {
  std::mt19937_64 gen(seed);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  std::vector<xt::xarray<float>> batches;
  for (int b = 0; b < 100; ++b) {
    xt::xarray<float> x = xt::zeros<float>({std::size_t(10000), std::size_t(1)});
    for (auto& v : x) {
      const double r = u(gen);
      v = static_cast<float>(heavy ? std::pow(1.0 - r, -1.0 / 1.1) : r);
    }
    batches.push_back(std::move(x));
  }
  return batches;
}

std::vector<float> sorted_all(const std::vector<xt::xarray<float>>& batches, std::size_t from = 0, std::size_t to = ~std::size_t(0)) {
  std::vector<float> v;
  for (std::size_t i = from; i < std::min(to, batches.size()); ++i) v.insert(v.end(), batches[i].begin(), batches[i].end());
  std::sort(v.begin(), v.end());
  return v;
}

/// Largest rank error over a 1001-point readout and at the threshold level.
double max_readout_error(const quantile_sketch& q, std::size_t u, const std::vector<float>& sorted) {
  const auto r = q.readout(u, 1001);
  double worst = 0;
  for (std::size_t k = 0; k < r.size(); ++k) worst = std::max(worst, rank_error(sorted, r(k), double(k) / 1000.0));
  return std::max(worst, rank_error(sorted, q.threshold(u), 994.0 / 999.0));
}

bool same_readout(const quantile_sketch& a, const quantile_sketch& b, std::size_t u) {
  const auto ra = a.readout(u, 1000), rb = b.readout(u, 1000);
  for (std::size_t k = 0; k < ra.size(); ++k)
    if (!(ra(k) == rb(k))) return false;
  return a.retained(u) == b.retained(u) && a.count(u) == b.count(u) && a.min(u) == b.min(u) && a.max(u) == b.max(u);
}

}  // namespace

TEST_CASE("exact_quantiles: linear and hazen equal NumPy's definitions on sorted data, ties and ends", "[stats][quantile]") {
  for (int distinct : {0, 5}) {  // continuous values, then only 5 distinct values (many ties)
    const auto a = random_batch({7, 3, 4, 5}, 11 + distinct, distinct), b = random_batch({2, 3, 4, 5}, 12 + distinct, distinct);
    exact_quantiles q(3);
    q.update(a);
    q.update(b);
    CHECK(q.rows() == 9);
    for (std::size_t u = 0; u < 3; ++u) {
      auto v = population(a, u);
      const auto w = population(b, u);
      v.insert(v.end(), w.begin(), w.end());
      std::sort(v.begin(), v.end());
      REQUIRE(q.count(u) == 180);
      CHECK(q.quantile(u, 0.0) == v.front());
      CHECK(q.quantile(u, 1.0) == v.back());
      CHECK(q.quantile_hazen(u, 0.0) == v.front());
      CHECK(q.quantile_hazen(u, 1.0) == v.back());
      for (double p : {0.001, 0.1, 0.25, 0.333, 0.5, 0.77, 0.995, 0.999}) {
        CHECK(q.quantile(u, p) == Approx(numpy_quantile(v, p, false)).epsilon(1e-12).margin(1e-12));
        CHECK(q.quantile_hazen(u, p) == Approx(numpy_quantile(v, p, true)).epsilon(1e-12).margin(1e-12));
      }
    }
  }
  SECTION("[B, U] batches, double input, several threads, merge = concatenation") {
    const auto x = random_batch<double>({50, 4}, 3);
    exact_quantiles one(4), many(4), left(4), right(4);
    one.update(x);
    many.update(x, 3);
    left.update(xt::xarray<double>(xt::view(x, xt::range(0, 20))));
    right.update(xt::xarray<double>(xt::view(x, xt::range(20, 50))));
    left.merge(right);
    for (std::size_t u = 0; u < 4; ++u)
      for (double p : {0.0, 0.3, 0.5, 0.9, 1.0}) {
        CHECK(many.quantile(u, p) == one.quantile(u, p));
        CHECK(left.quantile(u, p) == one.quantile(u, p));
      }
    const auto back = exact_quantiles::load(one.save());
    CHECK(back.quantile(2, 0.37) == one.quantile(2, 0.37));
    CHECK(back.rows() == 50);
  }
}

TEST_CASE("exact_quantiles: hazen vs linear by hand on {4, 1, 3, 2}", "[stats][quantile]") {
  // Sorted 1 2 3 4, n = 4.
  //   linear: h = 3p          p=0.1 → h=0.3 → 1.3;   p=0.25 → 0.75 → 1.75;  p=0.5 → 1.5 → 2.5;  p=0.9 → 2.7 → 3.7
  //   hazen:  h = 4p − 0.5    p=0.1 → −0.1 → clip 0 → 1;  p=0.25 → 0.5 → 1.5;  p=0.5 → 1.5 → 2.5;  p=0.9 → 3.1 → clip 3 → 4
  const xt::xarray<float> x = column({4.f, 1.f, 3.f, 2.f});
  exact_quantiles q(1);
  q.update(x);
  CHECK(q.quantile(0, 0.1) == Approx(1.3));
  CHECK(q.quantile(0, 0.25) == Approx(1.75));
  CHECK(q.quantile(0, 0.5) == Approx(2.5));
  CHECK(q.quantile(0, 0.9) == Approx(3.7));
  CHECK(q.quantile_hazen(0, 0.1) == 1.0);
  CHECK(q.quantile_hazen(0, 0.25) == Approx(1.5));
  CHECK(q.quantile_hazen(0, 0.5) == Approx(2.5));
  CHECK(q.quantile_hazen(0, 0.9) == 4.0);
}

TEST_CASE("quantile_sketch: below capacity the readout is exact hazen interpolation", "[stats][quantile]") {
  // 3 units, 40 images of 5x5 = 1000 values per unit = resolution: nothing is discarded.
  for (int distinct : {0, 7}) {
    const auto x = random_batch({40, 3, 5, 5}, 21 + distinct, distinct);
    quantile_sketch q(3, 1000);
    q.update(xt::xarray<float>(xt::view(x, xt::range(0, 13))));
    q.update(xt::xarray<float>(xt::view(x, xt::range(13, 40))));
    exact_quantiles e(3);
    e.update(x);
    for (std::size_t u = 0; u < 3; ++u) {
      REQUIRE(q.count(u) == 1000);
      CHECK(q.retained(u) == 1000);
      const auto r = q.readout(u, 1000);
      const double scale = e.quantile(u, 1.0) - e.quantile(u, 0.0);
      for (std::size_t k = 0; k < 1000; ++k)
        CHECK(r(k) == Approx(e.quantile_hazen(u, double(k) / 999.0)).margin(interp_rel_tol * scale));
      CHECK(r(0) == e.quantile(u, 0.0));
      CHECK(r(999) == e.quantile(u, 1.0));
      CHECK(q.threshold(u) == r(994));
      CHECK(q.threshold(u, 0.01) == r(989));
      CHECK(q.quantile(u, 994.0 / 999.0) == r(994));
      CHECK(q.rank_error_bound(u) == Approx(0.5 / 1000));
    }
  }
}

TEST_CASE("quantile_sketch: rank error on 10^6 values within the stated bounds", "[stats][quantile]") {
  for (bool heavy : {false, true}) {
    CAPTURE(heavy);
    const auto batches = million(heavy, heavy ? 7 : 5);
    const auto sorted = sorted_all(batches);
    quantile_sketch q(1);
    for (const auto& b : batches) q.update(b);
    REQUIRE(q.count(0) == 1000000);
    CHECK(q.min(0) == sorted.front());
    CHECK(q.max(0) == sorted.back());
    const double at_threshold = rank_error(sorted, q.threshold(0), 994.0 / 999.0);
    const double worst = max_readout_error(q, 0, sorted);
    const double bound = q.rank_error_bound(0);
    CAPTURE(at_threshold, worst, bound, q.retained(0));
    CHECK(worst <= bound);
    CHECK(worst <= practical_rank_tol);
    CHECK(bound <= 0.002);  // the guarantee stated in the header for this size (0.13 %)
    CHECK(q.retained(0) <= q.max_retained());
  }
}

TEST_CASE("quantile_sketch: merge of two halves is within the bound and deterministic", "[stats][quantile]") {
  const auto batches = million(true, 9);
  const auto sorted = sorted_all(batches);
  quantile_sketch a(1), b(1);
  for (std::size_t i = 0; i < 50; ++i) a.update(batches[i]);
  for (std::size_t i = 50; i < 100; ++i) b.update(batches[i]);
  quantile_sketch a2 = a, b2 = b;
  a.merge(b);
  a2.merge(b2);
  CHECK(same_readout(a, a2, 0));
  CHECK(a.count(0) == 1000000);
  CHECK(a.rows() == 1000000);
  const double worst = max_readout_error(a, 0, sorted);
  CAPTURE(worst, a.rank_error_bound(0));
  CHECK(worst <= a.rank_error_bound(0));
  CHECK(worst <= practical_rank_tol);
  CHECK(a.retained(0) <= a.max_retained());
  SECTION("an empty sketch merged in changes nothing; merged into an empty one it is copied") {
    quantile_sketch c = a2, empty(1);
    c.merge(quantile_sketch(1));
    CHECK(same_readout(c, a2, 0));
    empty.merge(a2);
    CHECK(same_readout(empty, a2, 0));
  }
  SECTION("merging a sketch into itself doubles the counts") {
    quantile_sketch c(1, 64);
    c.update(batches[0]);
    const auto before = c.count(0);
    c.merge(c);
    CHECK(c.count(0) == 2 * before);
    CHECK(c.retained(0) <= c.max_retained());
  }
}

TEST_CASE("quantile_sketch: results do not depend on the thread count", "[stats][quantile]") {
  const auto x = random_batch({30, 6, 8, 8}, 31);
  quantile_sketch one(6, 100, 42), four(6, 100, 42);
  one.update(x, 1);
  four.update(x, 4);
  for (std::size_t u = 0; u < 6; ++u) CHECK(same_readout(one, four, u));
  quantile_sketch other_seed(6, 100, 43);
  other_seed.update(x);
  bool differs = false;
  for (std::size_t u = 0; u < 6; ++u) differs = differs || !same_readout(one, other_seed, u);
  CHECK(differs);  // the seed is used
}

TEST_CASE("quantile_sketch: memory stays under the ceiling as N grows 10x", "[stats][quantile]") {
  for (std::size_t res : {std::size_t(2), std::size_t(3), std::size_t(100), std::size_t(512)}) {
    CAPTURE(res);
    quantile_sketch q(2, res);
    std::size_t peak_small = 0, peak_large = 0;
    for (int b = 0; b < 110; ++b) {  // 10^4 values per unit, then 10^5 more
      q.update(random_batch({1, 2, 10, 100}, 100 + b));
      for (std::size_t u = 0; u < 2; ++u) {
        REQUIRE(q.retained(u) <= q.max_retained());
        (b < 10 ? peak_small : peak_large) = std::max(b < 10 ? peak_small : peak_large, q.retained(u));
      }
    }
    CHECK(q.count(0) == 110000);
    CHECK(q.max_retained() == std::max<std::size_t>(res, 64));
    CHECK(peak_large <= std::max<std::size_t>(res, 64));
    if (res >= 64) CHECK(peak_large <= res);
  }
}

TEST_CASE("quantile_sketch: save and load round trip", "[stats][quantile]") {
  const auto x = random_batch({20, 3, 10, 10}, 41), y = random_batch({20, 3, 10, 10}, 42);
  quantile_sketch q(3, 150, 0x123456789abcdefULL);
  q.update(x);
  const auto s = q.save();
  CHECK(s.kind == "quantile_sketch");
  CHECK(s.param("version") == 1);
  auto back = quantile_sketch::load(s);
  CHECK(back.seed() == q.seed());
  CHECK(back.rows() == q.rows());
  for (std::size_t u = 0; u < 3; ++u) {
    CHECK(same_readout(back, q, u));
    CHECK(back.rank_error_bound(u) == q.rank_error_bound(u));
  }
  // The generators resume where they were: further updates stay bit-identical.
  q.update(y);
  back.update(y);
  for (std::size_t u = 0; u < 3; ++u) CHECK(same_readout(back, q, u));
  SECTION("an empty sketch round-trips") {
    auto e = quantile_sketch::load(quantile_sketch(2, 10).save());
    CHECK(e.count(1) == 0);
    CHECK(e.resolution() == 10);
  }
  SECTION("wrong kind, version or inconsistent arrays are refused") {
    auto bad = s;
    bad.kind = "tv";
    CHECK_THROWS_AS(quantile_sketch::load(bad), std::invalid_argument);
    bad = s;
    bad.params["version"] = 2;
    CHECK_THROWS_WITH(quantile_sketch::load(bad), Catch::Contains("version"));
    bad = s;
    bad.arrays["count"](0) += 1;
    CHECK_THROWS_WITH(quantile_sketch::load(bad), Catch::Contains("unit 0"));
    bad = s;
    bad.arrays.erase("items");
    CHECK_THROWS_AS(quantile_sketch::load(bad), std::invalid_argument);
  }
}

TEST_CASE("quantiles: errors", "[stats][quantile]") {
  SECTION("NaN and Inf are refused naming row and unit, before any change") {
    quantile_sketch q(3, 100);
    exact_quantiles e(3);
    auto x = random_batch({4, 3, 2, 2}, 51);
    q.update(x);
    e.update(x);
    x(2, 1, 1, 0) = std::numeric_limits<float>::quiet_NaN();
    CHECK_THROWS_AS(q.update(x), std::domain_error);
    CHECK_THROWS_WITH(q.update(x), Catch::Contains("row 6") && Catch::Contains("unit 1") && Catch::Contains("NaN"));
    CHECK_THROWS_WITH(e.update(x), Catch::Contains("row 6") && Catch::Contains("unit 1") && Catch::Contains("NaN"));
    CHECK(q.count(0) == 16);
    CHECK(e.count(0) == 16);
    xt::xarray<float> y = xt::zeros<float>({std::size_t(2), std::size_t(3)});
    y(1, 2) = std::numeric_limits<float>::infinity();
    CHECK_THROWS_WITH(q.update(y), Catch::Contains("row 5") && Catch::Contains("unit 2") && Catch::Contains("Inf"));
  }
  SECTION("wrong unit count or rank") {
    quantile_sketch q(3);
    exact_quantiles e(3);
    CHECK_THROWS_WITH(q.update(random_batch({2, 4, 2, 2}, 1)), Catch::Contains("[2, 4, 2, 2]"));
    CHECK_THROWS_AS(e.update(random_batch({2, 4}, 1)), std::invalid_argument);
    CHECK_THROWS_AS(q.update(random_batch({2, 3, 4}, 1)), std::invalid_argument);
  }
  SECTION("merge mismatch") {
    quantile_sketch q(3, 100);
    CHECK_THROWS_AS(q.merge(quantile_sketch(4, 100)), std::invalid_argument);
    CHECK_THROWS_WITH(q.merge(quantile_sketch(3, 101)), Catch::Contains("resolution"));
    exact_quantiles e(3);
    CHECK_THROWS_AS(e.merge(exact_quantiles(2)), std::invalid_argument);
  }
  SECTION("resolution < 2") {
    CHECK_THROWS_WITH(quantile_sketch(1, 1), Catch::Contains("resolution"));
    CHECK_THROWS_AS(quantile_sketch(1, 0), std::invalid_argument);
    CHECK_NOTHROW(quantile_sketch(1, 2));
  }
  SECTION("bad probabilities, empty units, bad levels") {
    quantile_sketch q(1, 10);
    exact_quantiles e(1);
    CHECK_THROWS_AS(q.threshold(0), std::runtime_error);
    CHECK_THROWS_AS(e.quantile(0, 0.5), std::runtime_error);
    const xt::xarray<float> x = column({1.f, 2.f});
    q.update(x);
    e.update(x);
    CHECK_THROWS_AS(e.quantile(0, 1.5), std::invalid_argument);
    CHECK_THROWS_AS(e.quantile_hazen(0, std::nan("")), std::invalid_argument);
    CHECK_THROWS_AS(q.quantile(0, -0.1), std::invalid_argument);
    CHECK_THROWS_AS(q.readout(0, 1), std::invalid_argument);
    CHECK_THROWS_AS(q.threshold(0, 0.0), std::invalid_argument);
    CHECK_THROWS_AS(q.threshold(0, 1.0), std::invalid_argument);
    CHECK_THROWS_AS(q.retained(1), std::out_of_range);
  }
}

TEST_CASE("sort_floats (the sketch's compaction sort) orders as std::sort does", "[stats][quantile]") {
  std::mt19937 rng(17);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  const float specials[] = {0.0f, -0.0f, std::numeric_limits<float>::denorm_min(), -std::numeric_limits<float>::denorm_min(),
                            std::numeric_limits<float>::max(), std::numeric_limits<float>::lowest(),
                            std::numeric_limits<float>::min(), 1.0f, -1.0f};
  for (std::size_t n : {0u, 1u, 2u, 511u, 512u, 513u, 4097u, 30000u}) {
    std::vector<float> v(n);
    for (std::size_t i = 0; i < n; ++i) {
      const auto pick = rng() % 4;  // post-ReLU-like zeros, repeated values, specials, and spread values
      v[i] = pick == 0 ? 0.0f : pick == 1 ? std::round(normal(rng)) : pick == 2 ? specials[rng() % 9] : normal(rng) * 1e3f;
    }
    auto ref = v;
    std::sort(ref.begin(), ref.end());
    shapebias::stats::detail::sort_floats(v);
    CHECK(v == ref);  // equal as values (-0 == +0, in either order)
  }
}

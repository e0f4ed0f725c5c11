// SPDX-License-Identifier: MIT
// Tests for include/shapebias/stats/tv.hpp (total_variation, tv_accumulator) and
// include/shapebias/stats/moments.hpp (channel_moments).
#include <catch2/catch.hpp>

#include "random_maps.hpp"

#include <xtensor/xarray.hpp>
#include <xtensor/xbuilder.hpp>
#include <xtensor/xmanipulation.hpp>
#include <xtensor/xmath.hpp>
#include <xtensor/xview.hpp>

#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <random>
#include <stdexcept>
#include <vector>

#include "shapebias/stats/tv.hpp"

using shapebias::stats::channel_moments;
using shapebias::stats::nonfinite_error;
using shapebias::stats::nonfinite_policy;
using shapebias::stats::total_variation;
using shapebias::stats::tv_accumulator;
using shapebias::stats::tv_norm;
using shapebias::stats::tv_params;

namespace {

constexpr double nan_v = std::numeric_limits<double>::quiet_NaN();
constexpr double inf_v = std::numeric_limits<double>::infinity();

/// Same shape and the same values, bit for bit (no NaN expected).
bool identical(const xt::xarray<double>& a, const xt::xarray<double>& b) {
  if (a.shape() != b.shape()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (!(a.data()[i] == b.data()[i])) return false;
  return true;
}

/// A row-major h x w map from its values, row by row.
template <class T>
xt::xarray<T> map_of(std::size_t h, std::size_t w, std::initializer_list<double> values) {
  REQUIRE(values.size() == h * w);
  xt::xarray<T> x = xt::zeros<T>({h, w});
  std::size_t k = 0;
  for (double v : values) x.data()[k++] = static_cast<T>(v);
  return x;
}


/// An independent TV: numpy-style differences along each axis (values widened to double first, so
/// every difference is exact for float maps), raised to β and summed.
template <class T>
double tv_reference(const xt::xarray<T>& map, double beta = 1.0) {
  const xt::xarray<double> x = xt::cast<double>(map);
  const xt::xarray<double> dy = xt::abs(xt::diff(x, 1, 0)), dx = xt::abs(xt::diff(x, 1, 1));
  if (beta == 1.0) return xt::sum(dy)() + xt::sum(dx)();
  return xt::sum(xt::pow(dy, beta))() + xt::sum(xt::pow(dx, beta))();
}

/// Per channel mean and sample variance of tv [B, C], two passes, rows with skip[b * C + c] left out.
struct direct_moments {
  std::vector<double> mean, var;
  std::vector<std::uint64_t> n;
};
direct_moments two_pass(const xt::xarray<double>& tv, const std::vector<char>& skip = {}) {
  const std::size_t b = tv.shape()[0], c = tv.shape()[1];
  direct_moments d{std::vector<double>(c, 0.0), std::vector<double>(c, 0.0), std::vector<std::uint64_t>(c, 0)};
  auto used = [&](std::size_t i, std::size_t k) { return skip.empty() || !skip[i * c + k]; };
  for (std::size_t k = 0; k < c; ++k) {
    for (std::size_t i = 0; i < b; ++i)
      if (used(i, k)) {
        d.mean[k] += tv(i, k);
        ++d.n[k];
      }
    d.mean[k] /= static_cast<double>(d.n[k]);
    for (std::size_t i = 0; i < b; ++i)
      if (used(i, k)) d.var[k] += (tv(i, k) - d.mean[k]) * (tv(i, k) - d.mean[k]);
    d.var[k] /= static_cast<double>(d.n[k] - 1);
  }
  return d;
}

void check_same_state(const tv_accumulator& a, const tv_accumulator& b) {
  REQUIRE(a.channels() == b.channels());
  CHECK(a.rows() == b.rows());
  CHECK(a.height() == b.height());
  CHECK(a.width() == b.width());
  CHECK(a.params().beta == b.params().beta);
  CHECK(a.params().norm == b.params().norm);
  CHECK(a.policy() == b.policy());
  CHECK(a.moments().counts() == b.moments().counts());
  CHECK(a.moments().means() == b.moments().means());
  CHECK(a.moments().m2() == b.moments().m2());
  for (std::size_t c = 0; c < a.channels(); ++c) CHECK(a.skipped(c) == b.skipped(c));
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// total_variation: small maps by hand

TEST_CASE("TV of a 2x3 map worked by hand", "[tv]") {
  // rows: |1-4|+|2-6|+|3-5| = 3+4+2 = 9; columns: |1-2|+|2-3|+|4-6|+|6-5| = 1+1+2+1 = 5
  const auto x = map_of<float>(2, 3, {1, 2, 3, 4, 6, 5});
  CHECK(total_variation(x)() == 14.0);
}

TEST_CASE("TV of a 3x3 map by hand: beta 1, 2, 0.5 and the pixel and l1 normalisations", "[tv]") {
  //  0 1  0
  //  2 0 -1
  //  1 1  4
  // vertical  |0-2|,|1-0|,|0+1| = 2,1,1 ; |2-1|,|0-1|,|-1-4| = 1,1,5
  // horizontal |0-1|,|1-0| = 1,1 ; |2-0|,|0+1| = 2,1 ; |1-1|,|1-4| = 0,3
  // β=1: (2+1+1+1+1+5) + (1+1+2+1+0+3) = 11 + 8 = 19
  // β=2: (4+1+1+1+1+25) + (1+1+4+1+0+9) = 33 + 16 = 49
  // β=½: (√2+1+1+1+1+√5) + (1+1+√2+1+0+√3) = 7 + 2√2 + √3 + √5
  // Σ|x| = 0+1+0+2+0+1+1+1+4 = 10; H·W = 9
  const auto x = map_of<double>(3, 3, {0, 1, 0, 2, 0, -1, 1, 1, 4});
  const xt::xarray<float> xf = x;
  CHECK(total_variation(x)() == 19.0);
  CHECK(total_variation(xf)() == 19.0);
  CHECK(total_variation(x, {2.0})() == 49.0);
  CHECK(total_variation(xf, {2.0})() == 49.0);
  CHECK(total_variation(x, {0.5})() == Approx(7 + 2 * std::sqrt(2.0) + std::sqrt(3.0) + std::sqrt(5.0)).epsilon(1e-14));
  CHECK(total_variation(x, {1.0, tv_norm::pixel})() == 19.0 / 9.0);
  CHECK(total_variation(x, {1.0, tv_norm::l1})() == 19.0 / 10.0);
  CHECK(total_variation(x, {2.0, tv_norm::pixel})() == 49.0 / 9.0);
  CHECK(total_variation(x, {2.0, tv_norm::l1})() == 49.0 / 10.0);
}

TEST_CASE("TV of 1xW and Hx1 maps by hand", "[tv]") {
  SECTION("1x5: only horizontal differences") {
    // |3+1|,|-1-4|,|4-4|,|4+2| = 4,5,0,6: β=1 15, β=2 16+25+0+36 = 77; Σ|x| = 3+1+4+4+2 = 14
    const auto x = map_of<float>(1, 5, {3, -1, 4, 4, -2});
    CHECK(total_variation(x)() == 15.0);
    CHECK(total_variation(x, {2.0})() == 77.0);
    CHECK(total_variation(x, {1.0, tv_norm::pixel})() == 15.0 / 5.0);
    CHECK(total_variation(x, {1.0, tv_norm::l1})() == 15.0 / 14.0);
    CHECK(total_variation(x, {2.0, tv_norm::l1})() == 77.0 / 14.0);
  }
  SECTION("4x1: only vertical differences") {
    // |2+3|,|-3-0.5|,|0.5-0.5| = 5,3.5,0: β=1 8.5, β=2 25+12.25+0 = 37.25; Σ|x| = 2+3+.5+.5 = 6
    const auto x = map_of<double>(4, 1, {2, -3, 0.5, 0.5});
    CHECK(total_variation(x)() == 8.5);
    CHECK(total_variation(x, {2.0})() == 37.25);
    CHECK(total_variation(x, {1.0, tv_norm::pixel})() == 8.5 / 4.0);
    CHECK(total_variation(x, {1.0, tv_norm::l1})() == 8.5 / 6.0);
    CHECK(total_variation(x, {2.0, tv_norm::pixel})() == 37.25 / 4.0);
  }
  SECTION("1x1: no differences at all") {
    const auto x = map_of<double>(1, 1, {-7});
    CHECK(total_variation(x)() == 0.0);
    CHECK(total_variation(x, {1.0, tv_norm::l1})() == 0.0);
    // no differences to carry a NaN or Inf, yet such a map's TV is NaN like any larger map's
    for (double bad : {nan_v, inf_v, -inf_v}) {
      CHECK(std::isnan(total_variation(map_of<double>(1, 1, {bad}))()));
      CHECK(std::isnan(total_variation(map_of<float>(1, 1, {bad}), {2.0, tv_norm::pixel})()));
      CHECK_FALSE(std::isfinite(total_variation(map_of<double>(1, 2, {bad, 0.0}))()));
      CHECK_FALSE(std::isfinite(total_variation(map_of<double>(2, 1, {0.0, bad}), {1.0, tv_norm::l1})()));
    }
  }
}

TEST_CASE("TV of an all-zero map is 0 under every normalisation", "[tv]") {
  const xt::xarray<float> z = xt::zeros<float>({4, 6});
  CHECK(total_variation(z)() == 0.0);
  CHECK(total_variation(z, {1.0, tv_norm::pixel})() == 0.0);
  CHECK(total_variation(z, {1.0, tv_norm::l1})() == 0.0);  // 0 / 0 is defined as 0, not NaN
  CHECK(total_variation(z, {2.0, tv_norm::l1})() == 0.0);
}

TEST_CASE("TV normalisation names", "[tv]") {
  using shapebias::stats::parse_tv_norm;
  for (auto n : {tv_norm::none, tv_norm::pixel, tv_norm::l1}) CHECK(parse_tv_norm(to_string(n)) == n);
  CHECK(to_string(tv_norm::l1) == "l1");
  CHECK(to_string(tv_norm::pixel) == "pixel");
  CHECK(to_string(tv_norm::none) == "none");
  CHECK_THROWS_AS(parse_tv_norm("L1"), std::invalid_argument);
  CHECK_THROWS_AS(parse_tv_norm(""), std::invalid_argument);
}

// ---------------------------------------------------------------------------------------------
// total_variation: properties on random data

TEST_CASE("TV of a constant map is 0", "[tv]") {
  for (double v : {0.0, 1.0, -3.25, 1e6}) {
    const xt::xarray<float> xf = xt::ones<float>({2, 3, 9, 37}) * static_cast<float>(v);
    const xt::xarray<double> xd = xt::ones<double>({5, 1100}) * v;  // rows longer than a 1024 block
    CHECK(xt::all(xt::equal(total_variation(xf), 0.0)));
    CHECK(total_variation(xd)() == 0.0);
    CHECK(xt::all(xt::equal(total_variation(xf, {2.0, tv_norm::pixel}), 0.0)));
    CHECK(xt::all(xt::equal(total_variation(xf, {0.5, tv_norm::l1}), 0.0)));
  }
}

TEST_CASE("TV scales as |a|^beta", "[tv]") {
  const auto x = random_maps<double>({3, 17, 29}, 11);
  const double a = -2.5;
  const xt::xarray<double> ax = a * x;
  for (double beta : {1.0, 2.0, 0.7}) {
    const auto t = total_variation(x, {beta});
    const auto ta = total_variation(ax, {beta});
    for (std::size_t i = 0; i < t.size(); ++i) {
      REQUIRE(t(i) > 0);
      CHECK(ta(i) == Approx(std::pow(std::abs(a), beta) * t(i)).epsilon(1e-12));
    }
  }
  // l1 normalisation is scale invariant for β = 1, and scales as |a|^(β-1) otherwise
  const auto n1 = total_variation(x, {1.0, tv_norm::l1}), n1a = total_variation(ax, {1.0, tv_norm::l1});
  const auto n2 = total_variation(x, {2.0, tv_norm::l1}), n2a = total_variation(ax, {2.0, tv_norm::l1});
  for (std::size_t i = 0; i < n1.size(); ++i) {
    CHECK(n1a(i) == Approx(n1(i)).epsilon(1e-12));
    CHECK(n2a(i) == Approx(2.5 * n2(i)).epsilon(1e-12));
  }
}

TEST_CASE("TV of the transposed map is the same", "[tv]") {
  SECTION("double") {
    const auto x = random_maps<double>({4, 23, 41}, 12);
    const xt::xarray<double> xt_ = xt::transpose(x, {0, 2, 1});
    for (double beta : {1.0, 2.0}) {
      const auto a = total_variation(x, {beta}), b = total_variation(xt_, {beta});
      for (std::size_t i = 0; i < a.size(); ++i) CHECK(b(i) == Approx(a(i)).epsilon(1e-12));
    }
  }
  SECTION("float, long rows") {
    const auto x = random_maps<float>({3, 1500}, 13);
    const xt::xarray<float> xt_ = xt::transpose(x);
    CHECK(total_variation(xt_)() == Approx(total_variation(x)()).epsilon(1e-6));
  }
}

TEST_CASE("TV result has the shape of the leading axes, one value per map", "[tv]") {
  const auto x = random_maps<float>({2, 3, 5, 6}, 14);
  const auto t = total_variation(x);
  REQUIRE(t.dimension() == 2);
  CHECK(t.shape()[0] == 2);
  CHECK(t.shape()[1] == 3);
  for (std::size_t i = 0; i < 2; ++i)
    for (std::size_t j = 0; j < 3; ++j) {
      // a single map (a contiguous view at an offset) gives a 0-d result
      const auto one = total_variation(xt::view(x, i, j));
      CHECK(one.dimension() == 0);
      CHECK(one.size() == 1);
      CHECK(t(i, j) == one());
      CHECK(t(i, j) == Approx(tv_reference<float>(xt::view(x, i, j))).epsilon(1e-6));
    }
  const auto t3 = total_variation(xt::view(x, 1));
  REQUIRE(t3.dimension() == 1);
  CHECK(t3.shape()[0] == 3);
  CHECK(t3(2) == t(1, 2));
  const xt::xarray<float> v1 = {1.f, 2.f, 3.f};
  CHECK_THROWS_AS(total_variation(v1), std::invalid_argument);
}

TEST_CASE("TV does not depend on the thread count", "[tv]") {
  const auto xf = random_maps<float>({13, 3, 9, 40}, 15);
  const auto xd = random_maps<double>({7, 5, 11, 12}, 16);
  for (double beta : {1.0, 2.0}) {
    const auto a = total_variation(xf, {beta, tv_norm::l1}, 1), b = total_variation(xf, {beta, tv_norm::l1}, 3);
    REQUIRE(a.shape() == b.shape());
    CHECK(identical(a, b));
    const auto c = total_variation(xd, {beta}, 1), d = total_variation(xd, {beta}, 3);
    CHECK(identical(c, d));
  }
  // more threads than maps
  const auto s = random_maps<float>({2, 6, 6}, 17);
  CHECK(identical(total_variation(s, {}, 1), total_variation(s, {}, 8)));
}

TEST_CASE("TV of a non-contiguous view equals that of its evaluated copy", "[tv]") {
  const auto x = random_maps<float>({4, 20, 33}, 18);
  SECTION("strided view") {
    auto v = xt::view(x, xt::all(), xt::range(1, 19, 3), xt::range(2, 31, 2));
    const xt::xarray<float> copy = v;
    REQUIRE(copy.shape()[1] == 6);
    REQUIRE(copy.shape()[2] == 15);
    CHECK(identical(total_variation(v), total_variation(copy)));
    CHECK(identical(total_variation(v, {2.0, tv_norm::pixel}, 3), total_variation(copy, {2.0, tv_norm::pixel})));
  }
  SECTION("transposed") {
    auto v = xt::transpose(x, {0, 2, 1});
    const xt::xarray<float> copy = v;
    CHECK(identical(total_variation(v), total_variation(copy)));
    CHECK(identical(total_variation(v, {1.0, tv_norm::l1}), total_variation(copy, {1.0, tv_norm::l1})));
  }
  SECTION("column-major container") {
    xt::xarray<float, xt::layout_type::column_major> cm = x;
    const xt::xarray<float> copy = cm;
    CHECK(identical(total_variation(cm), total_variation(copy)));
    CHECK(identical(total_variation(cm), total_variation(x)));
  }
  SECTION("contiguous view at an offset") {
    auto v = xt::view(x, xt::range(1, 3));
    const xt::xarray<float> copy = v;
    CHECK(identical(total_variation(v), total_variation(copy)));
  }
  SECTION("an expression") {
    auto e = x * 2.0f;
    const xt::xarray<float> copy = e;
    CHECK(identical(total_variation(e), total_variation(copy)));
  }
}

TEST_CASE("TV agrees with sum(abs(diff)) over both axes", "[tv]") {
  // The fast path sums 16 float lanes in blocks of 1024: sizes that are not multiples of 16, rows
  // and whole maps longer than a block, and maps narrower than a lane.
  const std::vector<std::vector<std::size_t>> sizes = {{55, 55}, {7, 300}, {300, 7}, {3, 2500}, {1, 1030},
                                                       {1033, 1}, {17, 17}, {16, 16}, {2, 15},  {33, 1025},
                                                       {9, 2},    {2, 2},   {1, 2},   {2, 1},   {31, 16}};
  unsigned seed = 100;
  for (const auto& s : sizes) {
    CAPTURE(s[0], s[1]);
    const auto xf = random_maps<float>(s, ++seed, -3.0, 5.0);
    const auto xd = random_maps<double>(s, ++seed, -3.0, 5.0);
    CHECK(total_variation(xf)() == Approx(tv_reference(xf)).epsilon(1e-6));
    CHECK(total_variation(xd)() == Approx(tv_reference(xd)).epsilon(1e-12));
    CHECK(total_variation(xf, {2.0})() == Approx(tv_reference(xf, 2.0)).epsilon(1e-6));
    CHECK(total_variation(xd, {2.0})() == Approx(tv_reference(xd, 2.0)).epsilon(1e-12));
    const double mass = xt::sum(xt::abs(xt::cast<double>(xf)))();
    CHECK(total_variation(xf, {1.0, tv_norm::l1})() == Approx(tv_reference(xf) / mass).epsilon(1e-6));
    CHECK(total_variation(xf, {1.0, tv_norm::pixel})() ==
          Approx(tv_reference(xf) / static_cast<double>(s[0] * s[1])).epsilon(1e-6));
  }
  // large values whose float differences are not small: the float lanes must not lose them
  const auto big = random_maps<float>({9, 2049}, 7, -1e4, 1e4);
  CHECK(total_variation(big)() == Approx(tv_reference(big)).epsilon(1e-6));
}

TEST_CASE("TV of long float maps keeps the rounding of short sums", "[tv]") {
  // The float lanes are flushed into a double every 1024 values: the error stays near that of a
  // 64-term float sum (~1e-9 relative here). Without the flush it grows to ~1e-6 at 10^6 values.
  const auto line = random_maps<float>({1, 1000000}, 8, -3.0, 5.0);
  CHECK(total_variation(line)() == Approx(tv_reference(line)).epsilon(1e-8));
  const auto square = random_maps<float>({1000, 1000}, 9, -3.0, 5.0);
  CHECK(total_variation(square)() == Approx(tv_reference(square)).epsilon(1e-8));
  const auto tall = random_maps<float>({1000000, 1}, 10, -3.0, 5.0);
  CHECK(total_variation(tall)() == Approx(tv_reference(tall)).epsilon(1e-8));
}

TEST_CASE("TV refuses an invalid beta", "[tv]") {
  const auto x = map_of<float>(2, 2, {1, 2, 3, 4});
  for (double beta : {0.0, -1.0, nan_v, inf_v, -inf_v}) {
    CAPTURE(beta);
    CHECK_THROWS_AS(tv_params{beta}.check(), std::invalid_argument);
    CHECK_THROWS_AS(total_variation(x, {beta}), std::invalid_argument);
    CHECK_THROWS_AS(tv_accumulator(2, {beta}), std::invalid_argument);
  }
  CHECK_NOTHROW(tv_accumulator(2, {0.5}));
}

// ---------------------------------------------------------------------------------------------
// tv_accumulator

TEST_CASE("tv_accumulator: per-channel mean and variance equal a direct computation", "[tv]") {
  const auto batch = random_maps<double>({9, 3, 6, 7}, 21);
  for (tv_params p : {tv_params{}, tv_params{2.0, tv_norm::l1}, tv_params{0.5, tv_norm::pixel}}) {
    CAPTURE(p.beta, to_string(p.norm));
    tv_accumulator acc(3, p);
    acc.update(xt::view(batch, xt::range(0, 4)));
    acc.update(xt::view(batch, xt::range(4, 5)));
    acc.update(xt::view(batch, xt::range(5, 9)));
    const auto d = two_pass(total_variation(batch, p));
    CHECK(acc.rows() == 9);
    CHECK(acc.height() == 6);
    CHECK(acc.width() == 7);
    for (std::size_t c = 0; c < 3; ++c) {
      CHECK(acc.moments().count(c) == 9);
      CHECK(acc.moments().mean(c) == Approx(d.mean[c]).epsilon(1e-12));
      CHECK(acc.moments().variance(c) == Approx(d.var[c]).epsilon(1e-12));
      CHECK(acc.skipped(c) == 0);
    }
  }
}

TEST_CASE("tv_accumulator: merging two halves equals one pass", "[tv]") {
  const auto batch = random_maps<float>({11, 4, 8, 5}, 22);
  const tv_params p{2.0, tv_norm::pixel};
  tv_accumulator one(4, p), a(4, p), b(4, p);
  one.update(batch, nullptr, 2);
  a.update(xt::view(batch, xt::range(0, 5)));
  b.update(xt::view(batch, xt::range(5, 11)));
  a.merge(b);
  CHECK(a.rows() == one.rows());
  CHECK(a.height() == 8);
  CHECK(a.width() == 5);
  CHECK(a.moments().counts() == one.moments().counts());
  for (std::size_t c = 0; c < 4; ++c) {
    CHECK(a.moments().mean(c) == Approx(one.moments().mean(c)).epsilon(1e-12));
    CHECK(a.moments().variance(c) == Approx(one.moments().variance(c)).epsilon(1e-12));
  }
  SECTION("merged into an empty accumulator, which takes the map size") {
    tv_accumulator e(4, p);
    e.merge(one);
    check_same_state(e, one);
    CHECK_THROWS_AS(e.update(random_maps<float>({1, 4, 5, 8}, 1)), std::invalid_argument);
  }
  SECTION("an empty accumulator merged in changes nothing") {
    const tv_accumulator before = one;
    one.merge(tv_accumulator(4, p));
    check_same_state(one, before);
  }
}

TEST_CASE("tv_accumulator: save and load round trip", "[tv]") {
  const auto batch = random_maps<float>({6, 2, 5, 9}, 23);
  tv_accumulator acc(2, {0.5, tv_norm::l1}, nonfinite_policy::skip);
  acc.update(batch);
  auto bad = random_maps<float>({2, 2, 5, 9}, 24);
  bad(1, 0, 3, 3) = std::numeric_limits<float>::quiet_NaN();
  acc.update(bad);
  REQUIRE(acc.skipped(0) == 1);

  const auto s = acc.save();
  CHECK(s.kind == "tv");
  CHECK(s.choice("norm") == "l1");
  CHECK(s.choice("nonfinite") == "skip");
  const auto back = tv_accumulator::load(s);
  check_same_state(back, acc);
  // the loaded one goes on exactly as the original
  tv_accumulator cont = back;
  const auto more = random_maps<float>({3, 2, 5, 9}, 25);
  acc.update(more);
  cont.update(more);
  check_same_state(cont, acc);
  CHECK_THROWS_AS(tv_accumulator::load(s).update(random_maps<float>({1, 2, 9, 5}, 1)), std::invalid_argument);

  SECTION("a state of another kind or with missing or short arrays is refused") {
    auto other = s;
    other.kind = "spectrum";
    CHECK_THROWS_AS(tv_accumulator::load(other), std::invalid_argument);
    auto missing = s;
    missing.arrays.erase("m2");
    CHECK_THROWS_AS(tv_accumulator::load(missing), std::invalid_argument);
    auto shortened = s;
    shortened.arrays["mean"] = xt::zeros<double>({1});
    CHECK_THROWS_AS(tv_accumulator::load(shortened), std::invalid_argument);
  }
}

TEST_CASE("tv_accumulator: merge refuses other channels, beta, norm, policy or map size", "[tv]") {
  const auto batch = random_maps<float>({3, 2, 6, 7}, 26);
  tv_accumulator a(2);
  a.update(batch);
  const tv_accumulator before = a;
  CHECK_THROWS_AS(a.merge(tv_accumulator(3)), std::invalid_argument);
  CHECK_THROWS_AS(a.merge(tv_accumulator(2, {2.0})), std::invalid_argument);
  CHECK_THROWS_AS(a.merge(tv_accumulator(2, {1.0, tv_norm::pixel})), std::invalid_argument);
  CHECK_THROWS_AS(a.merge(tv_accumulator(2, {}, nonfinite_policy::skip)), std::invalid_argument);
  tv_accumulator other_size(2);
  other_size.update(random_maps<float>({1, 2, 7, 6}, 27));
  CHECK_THROWS_AS(a.merge(other_size), std::invalid_argument);
  CHECK_THROWS_AS(other_size.merge(a), std::invalid_argument);
  check_same_state(a, before);  // refused merges change nothing
}

TEST_CASE("tv_accumulator: update refuses a wrong rank, channel count or a change of map size", "[tv]") {
  tv_accumulator acc(3);
  CHECK_THROWS_AS(acc.update(random_maps<float>({3, 6, 7}, 1)), std::invalid_argument);
  CHECK_THROWS_AS(acc.update(random_maps<float>({1, 2, 3, 6, 7}, 1)), std::invalid_argument);
  CHECK_THROWS_AS(acc.update(random_maps<float>({2, 4, 6, 7}, 1)), std::invalid_argument);
  CHECK_THROWS_AS(acc.update(random_maps<float>({2, 2, 6, 7}, 1)), std::invalid_argument);
  CHECK(acc.rows() == 0);
  acc.update(random_maps<float>({2, 3, 6, 7}, 2));
  CHECK_THROWS_AS(acc.update(random_maps<float>({2, 3, 7, 6}, 3)), std::invalid_argument);
  CHECK_THROWS_AS(acc.update(random_maps<float>({2, 3, 6, 8}, 3)), std::invalid_argument);
  CHECK_THROWS_WITH(acc.update(random_maps<float>({2, 3, 5, 7}, 3)), Catch::Contains("5x7") && Catch::Contains("6x7"));
  CHECK(acc.rows() == 2);
  CHECK(acc.moments().count(0) == 2);
}

TEST_CASE("tv_accumulator: a NaN or Inf map is an error naming the row, input id and channel", "[tv]") {
  auto first = random_maps<float>({4, 3, 5, 6}, 31);
  auto batch = random_maps<float>({3, 3, 5, 6}, 32);
  tv_accumulator acc(3);
  acc.update(first);
  const tv_accumulator before = acc;

  SECTION("NaN, with ids") {
    batch(1, 2, 4, 0) = std::numeric_limits<float>::quiet_NaN();
    const std::int64_t ids[] = {70, 71, 72};
    try {
      acc.update(batch, ids);
      FAIL("no exception");
    } catch (const nonfinite_error& e) {
      CHECK(e.row == 5);  // 4 rows before, then row 1 of this batch
      CHECK(e.id == 71);
      CHECK(e.channel == 2);
      const std::string what = e.what();
      CHECK_THAT(what, Catch::Contains("row 5") && Catch::Contains("input id 71") && Catch::Contains("channel 2"));
    }
    check_same_state(acc, before);
  }
  SECTION("Inf, without ids: the id is the row") {
    batch(2, 0, 0, 0) = std::numeric_limits<float>::infinity();
    try {
      acc.update(batch);
      FAIL("no exception");
    } catch (const nonfinite_error& e) {
      CHECK(e.row == 6);
      CHECK(e.id == 6);
      CHECK(e.channel == 0);
      CHECK_THAT(std::string(e.what()), Catch::Contains("row 6") && Catch::Contains("channel 0"));
    }
    check_same_state(acc, before);
  }
  SECTION("the first NaN of several is named; under every normalisation") {
    batch(2, 0, 1, 1) = std::numeric_limits<float>::quiet_NaN();
    batch(1, 1, 1, 1) = -std::numeric_limits<float>::infinity();
    for (tv_params p : {tv_params{}, tv_params{2.0, tv_norm::pixel}, tv_params{1.0, tv_norm::l1}}) {
      tv_accumulator b(3, p);
      CHECK_THROWS_MATCHES(b.update(batch), nonfinite_error,
                           Catch::Predicate<nonfinite_error>([](const nonfinite_error& e) {
                             return e.row == 1 && e.channel == 1;
                           }));
      CHECK(b.rows() == 0);
      CHECK(b.moments().count(1) == 0);
    }
  }
  SECTION("it is a std::domain_error") {
    batch(0, 0, 0, 0) = std::numeric_limits<float>::quiet_NaN();
    CHECK_THROWS_AS(acc.update(batch), std::domain_error);
  }
}

TEST_CASE("tv_accumulator: a failed first update leaves no map size behind", "[tv]") {
  // "Throws nonfinite_error under the error policy, before changing the accumulator": a refused
  // first batch must not fix the map size of the stream.
  auto bad = random_maps<float>({2, 1, 5, 6}, 33);
  bad(0, 0, 2, 2) = std::numeric_limits<float>::quiet_NaN();
  tv_accumulator acc(1);
  CHECK_THROWS_AS(acc.update(bad), nonfinite_error);
  CHECK(acc.rows() == 0);
  CHECK(acc.height() == 0);
  CHECK(acc.width() == 0);
  CHECK_NOTHROW(acc.update(random_maps<float>({2, 1, 7, 4}, 34)));
  CHECK(acc.height() == 7);
  CHECK(acc.width() == 4);
}

TEST_CASE("tv_accumulator: a NaN in a 1x1 map is reported too", "[tv]") {
  // A 1x1 map has no differences, so its TV never sees the value; it must still be reported.
  xt::xarray<float> x = xt::ones<float>({3, 2, 1, 1});
  x(1, 1, 0, 0) = std::numeric_limits<float>::quiet_NaN();
  tv_accumulator err(2);
  CHECK_THROWS_AS(err.update(x), nonfinite_error);
  tv_accumulator skip(2, {}, nonfinite_policy::skip);
  skip.update(x);
  CHECK(skip.skipped(1) == 1);
  CHECK(skip.moments().count(1) == 2);
  CHECK(skip.moments().count(0) == 3);
}

TEST_CASE("tv_accumulator: under the skip policy NaN/Inf maps are skipped and counted", "[tv]") {
  auto batch = random_maps<double>({8, 3, 6, 5}, 35);
  batch(1, 2, 0, 4) = nan_v;
  batch(3, 0, 5, 0) = inf_v;
  batch(6, 2, 2, 2) = -inf_v;
  std::vector<char> skip(8 * 3, 0);
  skip[1 * 3 + 2] = skip[3 * 3 + 0] = skip[6 * 3 + 2] = 1;
  tv_accumulator acc(3, {}, nonfinite_policy::skip);
  acc.update(xt::view(batch, xt::range(0, 3)));
  acc.update(xt::view(batch, xt::range(3, 8)), nullptr, 3);
  CHECK(acc.rows() == 8);
  CHECK(acc.skipped(0) == 1);
  CHECK(acc.skipped(1) == 0);
  CHECK(acc.skipped(2) == 2);
  CHECK(acc.moments().count(0) == 7);
  CHECK(acc.moments().count(1) == 8);
  CHECK(acc.moments().count(2) == 6);
  const auto d = two_pass(total_variation(batch), skip);
  for (std::size_t c = 0; c < 3; ++c) {
    CHECK(std::isfinite(acc.moments().mean(c)));
    CHECK(acc.moments().mean(c) == Approx(d.mean[c]).epsilon(1e-12));
    CHECK(acc.moments().variance(c) == Approx(d.var[c]).epsilon(1e-12));
  }
  // skipped counts add up on merge
  tv_accumulator other(3, {}, nonfinite_policy::skip);
  other.update(xt::view(batch, xt::range(6, 8)));
  acc.merge(other);
  CHECK(acc.skipped(2) == 3);
  CHECK(acc.skipped(0) == 1);
  CHECK(acc.rows() == 10);
  CHECK_THROWS_AS(acc.skipped(3), std::out_of_range);
}

// ---------------------------------------------------------------------------------------------
// channel_moments

TEST_CASE("channel_moments: Welford equals a two-pass mean and variance", "[moments]") {
  std::mt19937 gen(41);
  std::uniform_real_distribution<double> u(-3.0, 5.0);
  channel_moments m(3);
  std::vector<std::vector<double>> v(3);
  for (int i = 0; i < 1000; ++i) {
    const std::size_t c = static_cast<std::size_t>(i) % 3;
    if (c == 2 && i > 30) continue;  // an unequal count
    const double x = u(gen) + (c == 1 ? 1e4 : 0.0);  // a large offset in channel 1
    v[c].push_back(x);
    m.add(c, x);
  }
  for (std::size_t c = 0; c < 3; ++c) {
    double mean = 0, var = 0;
    for (double x : v[c]) mean += x;
    mean /= static_cast<double>(v[c].size());
    for (double x : v[c]) var += (x - mean) * (x - mean);
    var /= static_cast<double>(v[c].size() - 1);
    CHECK(m.count(c) == v[c].size());
    CHECK(m.mean(c) == Approx(mean).epsilon(1e-12));
    CHECK(m.variance(c) == Approx(var).epsilon(1e-10));
  }
  // by hand: 2, 4, 4, 4, 5, 5, 7, 9 has mean 5, Σ(x-5)² = 32, sample variance 32/7
  channel_moments h(1);
  for (double x : {2, 4, 4, 4, 5, 5, 7, 9}) h.add(0, x);
  CHECK(h.mean(0) == 5.0);
  CHECK(h.variance(0) == Approx(32.0 / 7.0).epsilon(1e-15));
}

TEST_CASE("channel_moments: no values give NaN mean, fewer than two give NaN variance", "[moments]") {
  channel_moments m(2);
  CHECK(m.count(0) == 0);
  CHECK(std::isnan(m.mean(0)));
  CHECK(std::isnan(m.variance(0)));
  m.add(1, 3.5);
  CHECK(m.mean(1) == 3.5);
  CHECK(std::isnan(m.variance(1)));
  m.add(1, 5.5);
  CHECK(m.mean(1) == 4.5);
  CHECK(m.variance(1) == 2.0);
  CHECK_THROWS_AS(m.mean(2), std::out_of_range);
  CHECK_THROWS_AS(m.count(2), std::out_of_range);
}

TEST_CASE("channel_moments: merge", "[moments]") {
  std::mt19937 gen(42);
  std::normal_distribution<double> g(10.0, 3.0);
  channel_moments all(2), a(2), b(2);
  for (int i = 0; i < 301; ++i) {
    const double x = g(gen), y = g(gen);
    all.add(0, x);
    all.add(1, y);
    (i < 120 ? a : b).add(0, x);
    (i < 7 ? a : b).add(1, y);
  }
  SECTION("halves equal one pass") {
    a.merge(b);
    CHECK(a.counts() == all.counts());
    for (std::size_t c = 0; c < 2; ++c) {
      CHECK(a.mean(c) == Approx(all.mean(c)).epsilon(1e-12));
      CHECK(a.variance(c) == Approx(all.variance(c)).epsilon(1e-12));
    }
  }
  SECTION("with an empty one, either way round") {
    channel_moments full = all;
    full.merge(channel_moments(2));
    CHECK(full.counts() == all.counts());
    CHECK(full.means() == all.means());
    CHECK(full.m2() == all.m2());
    channel_moments empty(2);
    empty.merge(all);
    CHECK(empty.counts() == all.counts());
    for (std::size_t c = 0; c < 2; ++c) {
      CHECK(empty.mean(c) == Approx(all.mean(c)).epsilon(1e-15));
      CHECK(empty.m2()[c] == Approx(all.m2()[c]).epsilon(1e-15));
    }
  }
  SECTION("channels that only one side has") {
    channel_moments p(2), q(2);
    p.add(0, 1.0);
    p.add(0, 3.0);
    q.add(1, 10.0);
    p.merge(q);
    CHECK(p.count(0) == 2);
    CHECK(p.mean(0) == 2.0);
    CHECK(p.variance(0) == 2.0);
    CHECK(p.count(1) == 1);
    CHECK(p.mean(1) == 10.0);
  }
  SECTION("other channel counts are refused") { CHECK_THROWS_AS(a.merge(channel_moments(3)), std::invalid_argument); }
}

TEST_CASE("channel_moments: raw state round trip, and length mismatches refused", "[moments]") {
  channel_moments m(3);
  for (int i = 0; i < 10; ++i) m.add(static_cast<std::size_t>(i) % 3, i * 0.37);
  const auto r = channel_moments::from_raw(m.counts(), m.means(), m.m2());
  CHECK(r.channels() == 3);
  CHECK(r.counts() == m.counts());
  CHECK(r.means() == m.means());
  CHECK(r.m2() == m.m2());
  CHECK(r.variance(0) == m.variance(0));
  CHECK_THROWS_AS(channel_moments::from_raw({1, 2}, {0.0, 0.0, 0.0}, {0.0, 0.0}), std::invalid_argument);
  CHECK_THROWS_AS(channel_moments::from_raw({1, 2}, {0.0, 0.0}, {0.0}), std::invalid_argument);
  CHECK_THROWS_AS(channel_moments::from_raw({1}, {}, {}), std::invalid_argument);
}

// SPDX-License-Identifier: MIT
// Tests for include/shapebias/stats/spectrum.hpp: radial power spectra against Parseval and a naive
// DFT, known maps, and the streaming spectrum_accumulator.
#include <catch2/catch.hpp>

#include "random_maps.hpp"

#include <xtensor/xarray.hpp>
#include <xtensor/xbuilder.hpp>
#include <xtensor/xmanipulation.hpp>
#include <xtensor/xview.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <stdexcept>
#include <vector>

#include "shapebias/stats/spectrum.hpp"

using shapebias::stats::power_sums;
using shapebias::stats::radial_spectrum;
using shapebias::stats::spectrum_accumulator;

namespace {

const double pi = std::acos(-1.0);

/// Same shape and the same values, bit for bit (no NaN expected).
bool identical(const xt::xarray<double>& a, const xt::xarray<double>& b) {
  if (a.shape() != b.shape()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (!(a.data()[i] == b.data()[i])) return false;
  return true;
}


/// The power sums of one 2-D map through radial_spectrum.
power_sums sums_of(const radial_spectrum& s, const xt::xarray<double>& map) {
  const xt::xarray<double> m = map;  // row-major, contiguous
  radial_spectrum::workspace ws(s);
  power_sums p;
  s.add_power(m.data(), p, ws);
  return p;
}

/// The same from the definition: a full O(H²W²) DFT, every frequency's power |F|² / (H·W), its
/// signed frequency (ky', kx') with |k'| ≤ N/2, r = √((ky'/H)² + (kx'/W)²), ring round(r·max(H, W)).
struct naive_sums {
  std::vector<double> ring, count;
  double high = 0, ac = 0;
};
naive_sums naive_dft(const xt::xarray<double>& x, double cutoff) {
  const std::size_t h = x.shape()[0], w = x.shape()[1], n = std::max(h, w);
  naive_sums out;
  for (std::size_t ky = 0; ky < h; ++ky)
    for (std::size_t kx = 0; kx < w; ++kx) {
      double re = 0, im = 0;
      for (std::size_t i = 0; i < h; ++i)
        for (std::size_t j = 0; j < w; ++j) {
          const double phase =
              2 * pi * (double((ky * i) % h) / double(h) + double((kx * j) % w) / double(w));
          re += x(i, j) * std::cos(phase);
          im -= x(i, j) * std::sin(phase);
        }
      const double p = (re * re + im * im) / double(h * w);
      const double sy = 2 * ky <= h ? double(ky) : double(ky) - double(h);
      const double sx = 2 * kx <= w ? double(kx) : double(kx) - double(w);
      const double r = std::sqrt((sy / double(h)) * (sy / double(h)) + (sx / double(w)) * (sx / double(w)));
      const auto b = static_cast<std::size_t>(std::lround(r * double(n)));
      if (b >= out.ring.size()) {
        out.ring.resize(b + 1, 0.0);
        out.count.resize(b + 1, 0.0);
      }
      out.ring[b] += p;
      out.count[b] += 1;
      if (ky || kx) out.ac += p;
      if (r > cutoff) out.high += p;
    }
  return out;
}

double sum_sq(const xt::xarray<double>& x) {
  double s = 0;
  for (double v : x) s += v * v;
  return s;
}

void check_same(const spectrum_accumulator& a, const spectrum_accumulator& b) {
  REQUIRE(a.channels() == b.channels());
  CHECK(a.rows() == b.rows());
  CHECK(a.skipped() == b.skipped());
  CHECK(a.high_fraction().counts() == b.high_fraction().counts());
  CHECK(a.high_fraction().means() == b.high_fraction().means());
  CHECK(a.high_fraction().m2() == b.high_fraction().m2());
  for (std::size_t c = 0; c < a.channels(); ++c) CHECK(a.profile(c) == b.profile(c));
  const auto sa = a.save(), sb = b.save();
  CHECK(sa.params == sb.params);
  REQUIRE(sa.arrays.size() == sb.arrays.size());
  for (const auto& [name, arr] : sa.arrays) {
    CAPTURE(name);
    REQUIRE(sb.arrays.count(name) == 1);
    CHECK(arr.shape() == sb.arrays.at(name).shape());
    CHECK(identical(arr, sb.arrays.at(name)));
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// radial_spectrum

TEST_CASE("spectrum: Parseval, the ring sums add up to the sum of squares", "[spectrum]") {
  unsigned seed = 200;
  for (auto [h, w] : std::vector<std::pair<std::size_t, std::size_t>>{
           {8, 8}, {7, 9}, {6, 5}, {5, 6}, {9, 7}, {1, 1}, {1, 10}, {11, 1}, {32, 24}, {13, 17}}) {
    CAPTURE(h, w);
    const radial_spectrum s(h, w);
    const auto x = random_maps<double>({h, w}, ++seed, -2.0, 3.0);
    const auto p = sums_of(s, x);
    REQUIRE(p.ring.size() == s.bins());
    const double total = std::accumulate(p.ring.begin(), p.ring.end(), 0.0);
    CHECK(total == Approx(sum_sq(x)).epsilon(1e-10));
    // ring 0 holds the mean alone: |F(0,0)|² / (H·W) = (Σx)² / (H·W)
    const double sum = xt::sum(x)();
    CHECK(p.ring[0] == Approx(sum * sum / double(h * w)).epsilon(1e-10));
    CHECK(p.ac == Approx(total - p.ring[0]).epsilon(1e-10).margin(1e-12));
    CHECK(p.high <= p.ac * (1 + 1e-12));
    CHECK(p.high >= 0);
  }
}

TEST_CASE("spectrum: ring sums, high and ac equal a naive DFT", "[spectrum]") {
  unsigned seed = 300;
  for (auto [h, w] : std::vector<std::pair<std::size_t, std::size_t>>{
           {6, 7}, {7, 6}, {5, 4}, {4, 4}, {8, 6}, {1, 8}, {7, 1}, {3, 3}}) {
    for (double cutoff : {0.25, 0.1, 0.4, 0.6}) {
      CAPTURE(h, w, cutoff);
      const radial_spectrum s(h, w, cutoff);
      const auto x = random_maps<double>({h, w}, ++seed);
      const auto p = sums_of(s, x);
      const auto n = naive_dft(x, cutoff);
      REQUIRE(n.ring.size() <= s.bins());
      REQUIRE(p.ring.size() == s.bins());
      for (std::size_t b = 0; b < s.bins(); ++b) {
        CAPTURE(b);
        const double expect = b < n.ring.size() ? n.ring[b] : 0.0;
        const double count = b < n.count.size() ? n.count[b] : 0.0;
        CHECK(p.ring[b] == Approx(expect).epsilon(1e-9).margin(1e-9));
        CHECK(s.ring_count()[b] == count);
      }
      CHECK(p.high == Approx(n.high).epsilon(1e-9).margin(1e-9));
      CHECK(p.ac == Approx(n.ac).epsilon(1e-9).margin(1e-9));
      CHECK(p.high_fraction() == Approx(n.high / n.ac).epsilon(1e-9));
    }
  }
}

TEST_CASE("spectrum: a constant map has no AC power and fraction 0", "[spectrum]") {
  // FFT rounding leaves ~1e-30 in the AC bins of a constant 7x9, 14x14 or 56x56 map: fraction 0 must
  // not become the ratio of two rounding errors.
  for (auto [h, w] : std::vector<std::pair<std::size_t, std::size_t>>{
           {8, 8}, {7, 9}, {6, 5}, {1, 12}, {13, 1}, {14, 14}, {56, 56}, {1, 1}}) {
    for (double v : {0.0, 1.0, -2.5, 0.3, 0.7}) {
      CAPTURE(h, w, v);
      const radial_spectrum s(h, w, 0.25);
      const xt::xarray<double> x = xt::ones<double>({h, w}) * v;
      const auto p = sums_of(s, x);
      CHECK(p.ac == 0.0);
      CHECK(p.high == 0.0);
      CHECK(p.high_fraction() == 0.0);
      CHECK(p.ring[0] == Approx(v * v * double(h * w)).epsilon(1e-12));
      for (std::size_t b = 1; b < p.ring.size(); ++b) CHECK(p.ring[b] == 0.0);
    }
  }
  // through the accumulator: constant channels have fraction exactly 0, mean and variance
  xt::xarray<float> batch = xt::zeros<float>({5, 2, 14, 14});
  xt::view(batch, xt::all(), 0) = 0.7f;
  for (std::size_t i = 0; i < 5; ++i) xt::view(batch, i, 1) = 0.1f * float(i + 1);
  spectrum_accumulator acc(2, 14, 14);
  acc.update(batch, 2);
  for (std::size_t c = 0; c < 2; ++c) {
    CHECK(acc.high_fraction().count(c) == 5);
    CHECK(acc.high_fraction().mean(c) == 0.0);
    CHECK(acc.high_fraction().variance(c) == 0.0);
  }
}

TEST_CASE("spectrum: a checkerboard has all its AC power at (0.5, 0.5) cycles per pixel", "[spectrum]") {
  for (auto [h, w] : std::vector<std::pair<std::size_t, std::size_t>>{{8, 8}, {8, 6}, {4, 10}, {2, 2}}) {
    CAPTURE(h, w);
    const radial_spectrum s(h, w, 0.25);
    xt::xarray<double> x = xt::zeros<double>({h, w});
    for (std::size_t i = 0; i < h; ++i)
      for (std::size_t j = 0; j < w; ++j) x(i, j) = (i + j) % 2 ? -1.0 : 1.0;
    const auto p = sums_of(s, x);
    const std::size_t top = static_cast<std::size_t>(std::lround(std::sqrt(0.5) * double(std::max(h, w))));
    CHECK(top == s.bins() - 1);
    CHECK(p.high_fraction() == Approx(1.0).epsilon(1e-12));
    CHECK(p.ac == Approx(double(h * w)).epsilon(1e-12));  // Σx² = H·W, mean 0
    for (std::size_t b = 0; b < s.bins(); ++b) {
      CAPTURE(b);
      CHECK(p.ring[b] == Approx(b == top ? double(h * w) : 0.0).margin(1e-12 * double(h * w)));
    }
  }
}

TEST_CASE("spectrum: single cosines fall below or above the cutoff", "[spectrum]") {
  const std::size_t h = 8, w = 16;
  const radial_spectrum s(h, w, 0.25);
  auto cosine = [&](double cycles_x, double cycles_y) {
    xt::xarray<double> x = xt::zeros<double>({h, w});
    for (std::size_t i = 0; i < h; ++i)
      for (std::size_t j = 0; j < w; ++j)
        x(i, j) = 3.0 + std::cos(2 * pi * (cycles_x * double(j) / double(w) + cycles_y * double(i) / double(h)));
    return x;
  };
  SECTION("one cycle over the width: r = 1/16") {
    const auto p = sums_of(s, cosine(1, 0));
    CHECK(p.high_fraction() == Approx(0.0).margin(1e-12));
    CHECK(p.ring[1] == Approx(double(h * w) / 2).epsilon(1e-12));  // Σcos² = H·W/2, in ring round(1/16·16)
    CHECK(p.ac == Approx(double(h * w) / 2).epsilon(1e-12));
    CHECK(s.ring_frequency(1) == 1.0 / 16.0);
  }
  SECTION("one cycle over the height: r = 1/8") {
    const auto p = sums_of(s, cosine(0, 1));
    CHECK(p.high_fraction() == Approx(0.0).margin(1e-12));
    CHECK(p.ring[2] == Approx(double(h * w) / 2).epsilon(1e-12));
  }
  SECTION("five cycles over the width: r = 5/16 > 1/4") {
    const auto p = sums_of(s, cosine(5, 0));
    CHECK(p.high_fraction() == Approx(1.0).epsilon(1e-12));
    CHECK(p.ring[5] == Approx(double(h * w) / 2).epsilon(1e-12));
  }
  SECTION("exactly at the cutoff (r = 4/16) is not above it") {
    const auto p = sums_of(s, cosine(4, 0));
    CHECK(p.high_fraction() == Approx(0.0).margin(1e-12));
    CHECK(p.ring[4] == Approx(double(h * w) / 2).epsilon(1e-12));
  }
  SECTION("diagonal: (2/8, 4/16) has r = √2/4 > 1/4") {
    const auto p = sums_of(s, cosine(4, 2));
    CHECK(p.high_fraction() == Approx(1.0).epsilon(1e-12));
    CHECK(p.ring[static_cast<std::size_t>(std::lround(std::sqrt(2.0) / 4 * 16))] == Approx(double(h * w) / 2).epsilon(1e-12));
  }
  SECTION("half the AC power below and half above") {
    const auto p = sums_of(s, cosine(1, 0) + cosine(6, 0) - 3.0);
    CHECK(p.high_fraction() == Approx(0.5).epsilon(1e-12));
  }
}

TEST_CASE("spectrum: ring counts add up to H*W and profile is ring sums over counts", "[spectrum]") {
  for (auto [h, w] : std::vector<std::pair<std::size_t, std::size_t>>{{8, 8}, {7, 9}, {6, 5}, {1, 16}, {9, 1}, {31, 4}}) {
    CAPTURE(h, w);
    const radial_spectrum s(h, w);
    CHECK(s.height() == h);
    CHECK(s.width() == w);
    CHECK(s.bins() == static_cast<std::size_t>(std::lround(std::sqrt(0.5) * double(std::max(h, w)))) + 1);
    REQUIRE(s.ring_count().size() == s.bins());
    CHECK(std::accumulate(s.ring_count().begin(), s.ring_count().end(), 0.0) == double(h * w));
    CHECK(s.ring_count()[0] == 1.0);  // only the mean is at r = 0
    const auto x = random_maps<double>({h, w}, 400);
    const auto p = sums_of(s, x);
    const auto prof = s.profile(p.ring), prof2 = s.profile(p.ring, 2);
    REQUIRE(prof.size() == s.bins());
    for (std::size_t b = 0; b < s.bins(); ++b) {
      CAPTURE(b);
      const double cnt = s.ring_count()[b];
      CHECK(prof[b] == (cnt > 0 ? p.ring[b] / cnt : 0.0));
      CHECK(prof2[b] == (cnt > 0 ? p.ring[b] / (cnt * 2) : 0.0));
      CHECK(std::isfinite(prof[b]));
      CHECK(s.ring_frequency(b) == double(b) / double(std::max(h, w)));
    }
  }
  // a 1x16 map only reaches r = 1/2: rings 9..11 are empty and their profile is 0, not NaN
  const radial_spectrum line(1, 16);
  REQUIRE(line.bins() == 12);
  CHECK(line.ring_count()[8] == 1.0);
  for (std::size_t b = 9; b < 12; ++b) CHECK(line.ring_count()[b] == 0.0);
}

TEST_CASE("spectrum: radial_spectrum refuses bad cutoffs and empty maps", "[spectrum]") {
  for (double c : {0.0, -0.1, 0.75, 0.8, std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::infinity()}) {
    CAPTURE(c);
    CHECK_THROWS_AS(radial_spectrum(8, 8, c), std::invalid_argument);
    CHECK_THROWS_AS(spectrum_accumulator(2, 8, 8, c), std::invalid_argument);
  }
  CHECK_THROWS_AS(radial_spectrum(0, 8), std::invalid_argument);
  CHECK_THROWS_AS(radial_spectrum(8, 0), std::invalid_argument);
  CHECK_THROWS_AS(spectrum_accumulator(2, 0, 8), std::invalid_argument);
  CHECK_THROWS_AS(spectrum_accumulator(2, 8, 0), std::invalid_argument);
  CHECK_NOTHROW(radial_spectrum(8, 8, 0.01));
  CHECK_NOTHROW(radial_spectrum(8, 8, 0.7));
  CHECK(radial_spectrum(8, 8, 0.3).cutoff() == 0.3);
}

// ---------------------------------------------------------------------------------------------
// spectrum_accumulator

TEST_CASE("spectrum_accumulator: equals per-map spectra, whatever the threads", "[spectrum]") {
  const std::size_t b = 10, c = 3, h = 6, w = 7;
  const auto batch = random_maps<float>({b, c, h, w}, 500);
  spectrum_accumulator one(c, h, w), three(c, h, w);
  one.update(batch, 1);
  three.update(batch, 3);
  check_same(one, three);
  CHECK(one.rows() == b);
  CHECK(one.skipped() == 0);

  // direct: each map's fraction and rings through radial_spectrum
  const radial_spectrum s(h, w);
  for (std::size_t k = 0; k < c; ++k) {
    CAPTURE(k);
    std::vector<double> hf, ring(s.bins(), 0.0);
    for (std::size_t i = 0; i < b; ++i) {
      const xt::xarray<double> m = xt::view(batch, i, k);
      const auto p = sums_of(s, m);
      hf.push_back(p.high_fraction());
      for (std::size_t r = 0; r < s.bins(); ++r) ring[r] += p.ring[r];
    }
    double mean = std::accumulate(hf.begin(), hf.end(), 0.0) / double(b), var = 0;
    for (double v : hf) var += (v - mean) * (v - mean);
    var /= double(b - 1);
    CHECK(one.high_fraction().count(k) == b);
    CHECK(one.high_fraction().mean(k) == Approx(mean).epsilon(1e-12));
    CHECK(one.high_fraction().variance(k) == Approx(var).epsilon(1e-10));
    const auto prof = one.profile(k), expect = s.profile(ring, double(b));
    REQUIRE(prof.size() == expect.size());
    for (std::size_t r = 0; r < prof.size(); ++r) CHECK(prof[r] == Approx(expect[r]).epsilon(1e-12));
  }
  SECTION("float and double maps of the same values give the same result") {
    spectrum_accumulator d(c, h, w);
    d.update(xt::xarray<double>(xt::cast<double>(batch)));
    check_same(d, one);
  }
  SECTION("a non-contiguous view gives the same result as its copy") {
    const auto big = random_maps<float>({4, c, w, h}, 501);
    auto v = xt::transpose(big, {0, 1, 3, 2});
    const xt::xarray<float> copy = v;
    spectrum_accumulator a(c, h, w), e(c, h, w);
    a.update(v, 2);
    e.update(copy);
    check_same(a, e);
  }
}

TEST_CASE("spectrum_accumulator: merging halves equals one pass", "[spectrum]") {
  const auto batch = random_maps<float>({9, 2, 8, 5}, 510);
  spectrum_accumulator one(2, 8, 5, 0.3), a(2, 8, 5, 0.3), b(2, 8, 5, 0.3);
  one.update(batch);
  a.update(xt::view(batch, xt::range(0, 4)));
  b.update(xt::view(batch, xt::range(4, 9)), 2);
  a.merge(b);
  CHECK(a.rows() == 9);
  CHECK(a.skipped() == 0);
  CHECK(a.high_fraction().counts() == one.high_fraction().counts());
  for (std::size_t c = 0; c < 2; ++c) {
    CHECK(a.high_fraction().mean(c) == Approx(one.high_fraction().mean(c)).epsilon(1e-12));
    CHECK(a.high_fraction().variance(c) == Approx(one.high_fraction().variance(c)).epsilon(1e-12));
    const auto pa = a.profile(c), po = one.profile(c);
    REQUIRE(pa.size() == po.size());
    for (std::size_t r = 0; r < pa.size(); ++r) CHECK(pa[r] == Approx(po[r]).epsilon(1e-12));
  }
  SECTION("an empty one merged in changes nothing") {
    const auto before = one.save();
    one.merge(spectrum_accumulator(2, 8, 5, 0.3));
    const auto after = one.save();
    CHECK(after.params == before.params);
    for (const auto& [name, arr] : before.arrays) CHECK(identical(after.arrays.at(name), arr));
  }
}

TEST_CASE("spectrum_accumulator: save and load round trip", "[spectrum]") {
  auto batch = random_maps<float>({7, 3, 6, 6}, 520);
  batch(2, 1, 0, 0) = std::numeric_limits<float>::quiet_NaN();
  spectrum_accumulator acc(3, 6, 6, 0.2);
  acc.update(batch);
  const auto s = acc.save();
  CHECK(s.kind == "spectrum");
  CHECK(s.param("cutoff") == 0.2);
  CHECK(s.param("skipped") == 1);
  CHECK(s.array("ring_power").dimension() == 2);
  CHECK(s.array("ring_power").shape()[0] == 3);
  CHECK(s.array("ring_power").shape()[1] == acc.spectrum().bins());
  const auto back = spectrum_accumulator::load(s);
  CHECK(back.spectrum().cutoff() == 0.2);
  CHECK(back.spectrum().height() == 6);
  CHECK(back.spectrum().width() == 6);
  check_same(back, acc);
  // both go on alike
  spectrum_accumulator cont = spectrum_accumulator::load(s);
  const auto more = random_maps<float>({2, 3, 6, 6}, 521);
  acc.update(more);
  cont.update(more);
  check_same(cont, acc);

  SECTION("states that do not fit are refused") {
    auto other = s;
    other.kind = "tv";
    CHECK_THROWS_AS(spectrum_accumulator::load(other), std::invalid_argument);
    auto ring = s;
    ring.arrays["ring_power"] = xt::zeros<double>({3, 2});
    CHECK_THROWS_AS(spectrum_accumulator::load(ring), std::invalid_argument);
    auto missing = s;
    missing.params.erase("cutoff");
    CHECK_THROWS_AS(spectrum_accumulator::load(missing), std::invalid_argument);
  }
}

TEST_CASE("spectrum_accumulator: maps with NaN or Inf are skipped and counted", "[spectrum]") {
  const std::size_t b = 6, c = 3, h = 5, w = 8;
  auto batch = random_maps<double>({b, c, h, w}, 530);
  batch(1, 2, 4, 7) = std::numeric_limits<double>::quiet_NaN();
  batch(4, 0, 0, 3) = std::numeric_limits<double>::infinity();
  batch(5, 2, 2, 2) = -std::numeric_limits<double>::infinity();
  spectrum_accumulator acc(c, h, w);
  acc.update(batch, 2);
  CHECK(acc.rows() == b);
  CHECK(acc.skipped() == 3);
  CHECK(acc.high_fraction().count(0) == b - 1);
  CHECK(acc.high_fraction().count(1) == b);
  CHECK(acc.high_fraction().count(2) == b - 2);
  // the rest equals an accumulator fed only the finite maps, channel by channel
  const radial_spectrum s(h, w);
  for (std::size_t k = 0; k < c; ++k) {
    CAPTURE(k);
    std::vector<double> ring(s.bins(), 0.0), hf;
    for (std::size_t i = 0; i < b; ++i) {
      const xt::xarray<double> m = xt::view(batch, i, k);
      if (!xt::all(xt::isfinite(m))) continue;
      const auto p = sums_of(s, m);
      hf.push_back(p.high_fraction());
      for (std::size_t r = 0; r < s.bins(); ++r) ring[r] += p.ring[r];
    }
    const double mean = std::accumulate(hf.begin(), hf.end(), 0.0) / double(hf.size());
    CHECK(std::isfinite(acc.high_fraction().mean(k)));
    CHECK(acc.high_fraction().mean(k) == Approx(mean).epsilon(1e-12));
    const auto prof = acc.profile(k), expect = s.profile(ring, double(hf.size()));
    for (std::size_t r = 0; r < prof.size(); ++r) {
      CHECK(std::isfinite(prof[r]));
      CHECK(prof[r] == Approx(expect[r]).epsilon(1e-12));
    }
  }
  // skipped counts add on merge
  spectrum_accumulator more(c, h, w);
  more.update(xt::view(batch, xt::range(4, 6)));
  acc.merge(more);
  CHECK(acc.skipped() == 5);
  CHECK(acc.rows() == b + 2);
}

TEST_CASE("spectrum_accumulator: merge refuses another cutoff, size or channel count", "[spectrum]") {
  spectrum_accumulator a(2, 6, 7, 0.25);
  a.update(random_maps<float>({3, 2, 6, 7}, 540));
  const auto before = a.save();
  CHECK_THROWS_AS(a.merge(spectrum_accumulator(2, 6, 7, 0.3)), std::invalid_argument);
  CHECK_THROWS_AS(a.merge(spectrum_accumulator(2, 7, 6, 0.25)), std::invalid_argument);
  CHECK_THROWS_AS(a.merge(spectrum_accumulator(2, 6, 8, 0.25)), std::invalid_argument);
  CHECK_THROWS_AS(a.merge(spectrum_accumulator(3, 6, 7, 0.25)), std::invalid_argument);
  const auto after = a.save();
  CHECK(after.params == before.params);
  for (const auto& [name, arr] : before.arrays) CHECK(identical(after.arrays.at(name), arr));
}

TEST_CASE("spectrum_accumulator: update refuses a wrong shape", "[spectrum]") {
  spectrum_accumulator a(2, 6, 7);
  CHECK_THROWS_AS(a.update(random_maps<float>({2, 6, 7}, 1)), std::invalid_argument);
  CHECK_THROWS_AS(a.update(random_maps<float>({1, 2, 2, 6, 7}, 1)), std::invalid_argument);
  CHECK_THROWS_AS(a.update(random_maps<float>({2, 3, 6, 7}, 1)), std::invalid_argument);
  CHECK_THROWS_AS(a.update(random_maps<float>({2, 2, 7, 6}, 1)), std::invalid_argument);
  CHECK_THROWS_AS(a.update(random_maps<float>({2, 2, 6, 8}, 1)), std::invalid_argument);
  CHECK_THROWS_WITH(a.update(random_maps<double>({2, 2, 5, 7}, 1)), Catch::Contains("[B, 2, 6, 7]"));
  CHECK(a.rows() == 0);
  CHECK(a.high_fraction().count(0) == 0);
  CHECK_NOTHROW(a.update(random_maps<float>({1, 2, 6, 7}, 2)));
  CHECK(a.rows() == 1);
}

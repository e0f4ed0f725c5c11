// SPDX-License-Identifier: MIT
// Tests for include/shapebias/stats/diversity.hpp. Hand values are worked out in the comments;
// the naive references (pairwise distances, silhouette) are plain double loops over coordinates.
#include <catch2/catch.hpp>

#include <xtensor/xarray.hpp>
#include <xtensor/xbuilder.hpp>
#include <xtensor/xview.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <numbers>
#include <random>
#include <stdexcept>
#include <vector>

#include "shapebias/stats/diversity.hpp"

namespace st = shapebias::stats;

namespace {

// Entropies: a handful of logs and products, each rounded once.
constexpr double entropy_tol = 1e-15;
// Gram-matrix distances vs coordinate differences: the Gram form loses about 1e-16·‖x‖² in each
// squared distance; with ‖x‖² ≈ 10² times the squared distances here, 1e-12 relative is ample.
constexpr double gram_rel_tol = 1e-12;

/// Independent N(centre, σ²) rows.
xt::xarray<double> gaussian(std::size_t n, std::size_t d, double sigma, unsigned seed, double offset = 0.0) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<double> g(0.0, sigma);
  xt::xarray<double> x = xt::zeros<double>({n, d});
  for (auto& v : x) v = offset + g(gen);
  return x;
}

/// Three blobs (σ = 0.5, 15/16/18 rows) around 0, 10·e0 and 10·e1 in 8 dimensions, rows shuffled;
/// `truth` receives each row's blob.
xt::xarray<double> three_blobs(std::vector<std::size_t>& truth, unsigned seed) {
  const std::size_t sizes[] = {15, 16, 18}, d = 8;
  std::vector<std::size_t> blob;
  for (std::size_t b = 0; b < 3; ++b) blob.insert(blob.end(), sizes[b], b);
  std::mt19937_64 gen(seed);
  std::shuffle(blob.begin(), blob.end(), gen);
  auto x = gaussian(blob.size(), d, 0.5, seed + 1);
  for (std::size_t i = 0; i < blob.size(); ++i)
    if (blob[i] > 0) x(i, blob[i] - 1) += 10.0;
  truth = blob;
  return x;
}

/// Same partition, whatever the numbering.
bool same_partition(const std::vector<std::size_t>& a, const std::vector<std::size_t>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    for (std::size_t j = 0; j < a.size(); ++j)
      if ((a[i] == a[j]) != (b[i] == b[j])) return false;
  return true;
}

double euclid(const xt::xarray<double>& x, std::size_t i, std::size_t j) {
  double s = 0;
  for (std::size_t c = 0; c < x.shape()[1]; ++c) s += (x(i, c) - x(j, c)) * (x(i, c) - x(j, c));
  return std::sqrt(s);
}

/// Rousseeuw's silhouette, straight from the definition.
double naive_silhouette(const xt::xarray<double>& x, const std::vector<std::size_t>& l) {
  const std::size_t n = l.size();
  double total = 0;
  for (std::size_t i = 0; i < n; ++i) {
    std::map<std::size_t, std::pair<double, std::size_t>> to;  // cluster → (sum, count) over j ≠ i
    for (std::size_t j = 0; j < n; ++j)
      if (j != i) {
        to[l[j]].first += euclid(x, i, j);
        ++to[l[j]].second;
      }
    if (!to.count(l[i])) continue;  // singleton: 0
    const double a = to[l[i]].first / double(to[l[i]].second);
    double b = std::numeric_limits<double>::infinity();
    for (const auto& [c, sc] : to)
      if (c != l[i]) b = std::min(b, sc.first / double(sc.second));
    total += (b - a) / std::max(a, b);
  }
  return total / double(n);
}

}  // namespace

TEST_CASE("diversity: distinct labels and entropy in nats, by hand", "[stats][diversity]") {
  auto r = st::label_diversity({0, 0, 1, 1});
  CHECK(r.n == 4);
  CHECK(r.distinct == 2);
  CHECK(r.entropy == Approx(std::log(2.0)).epsilon(entropy_tol));
  r = st::label_diversity({3, 3, 3});
  CHECK(r.distinct == 1);
  CHECK(r.entropy == 0.0);
  r = st::label_diversity({7, -1, 2, 9});  // four labels once each: ln 4
  CHECK(r.distinct == 4);
  CHECK(r.entropy == Approx(std::log(4.0)).epsilon(entropy_tol));
  r = st::label_diversity({5, 5, 5, 1});  // −(3/4 ln 3/4 + 1/4 ln 1/4) = ln 4 − (3/4) ln 3 ≈ 0.5623
  CHECK(r.distinct == 2);
  CHECK(r.entropy == Approx(std::log(4.0) - 0.75 * std::log(3.0)).epsilon(entropy_tol));
  CHECK_THROWS_AS(st::label_diversity(std::vector<std::int64_t>{}), std::invalid_argument);
}

TEST_CASE("diversity: labels of a unit's top-K, and a top-K that saw too few inputs", "[stats][diversity]") {
  // One unit, scores = row number: the top-4 are ids 105, 104, 103, 102 with labels 1, 1, 2, 3.
  xt::xarray<float> x = xt::zeros<float>({6, 1});
  for (std::size_t r = 0; r < 6; ++r) x(r, 0) = float(r);
  const std::vector<std::int64_t> ids = {100, 101, 102, 103, 104, 105};
  const std::map<std::int64_t, int> label = {{100, 9}, {101, 9}, {102, 3}, {103, 2}, {104, 1}, {105, 1}};
  st::topk_units t(1, 4);
  t.update(x, ids.data());
  const auto r = st::label_diversity(t, 0, [&](std::int64_t id) { return label.at(id); });
  CHECK(r.n == 4);
  CHECK(r.distinct == 3);  // entropy −(1/2 ln 1/2 + 2 · 1/4 ln 1/4) = 1.5 ln 2
  CHECK(r.entropy == Approx(1.5 * std::log(2.0)).epsilon(entropy_tol));

  st::topk_units few(2, 49);
  few.update(xt::xarray<float>(xt::zeros<float>({10, 2})));
  CHECK_THROWS_WITH(st::top_inputs(few, 1), Catch::Contains("K = 49 but only 10 inputs"));
  CHECK_THROWS_AS(st::label_diversity(few, 0, [](std::int64_t) { return 0; }), std::invalid_argument);
}

TEST_CASE("diversity: mean pairwise cosine and L2 distances", "[stats][diversity]") {
  SECTION("three vectors by hand") {
    // a = (1, 0), b = (0, 1), c = (1, 1): cosine distances 1, 1 − 1/√2, 1 − 1/√2 (mean (3 − √2)/3);
    // L2 distances √2, 1, 1 (mean (2 + √2)/3).
    const xt::xarray<double> x = {{1.0, 0.0}, {0.0, 1.0}, {1.0, 1.0}};
    const auto r = st::embedding_diversity(x);
    CHECK(r.pairs == 3);
    CHECK(r.mean_cosine == Approx((3 - std::sqrt(2.0)) / 3).epsilon(gram_rel_tol));
    CHECK(r.mean_l2 == Approx((2 + std::sqrt(2.0)) / 3).epsilon(gram_rel_tol));
    const xt::xarray<float> f = {{2.0f, 0.0f}, {0.0f, 3.0f}};  // float rows; scale does not change cosine
    CHECK(st::embedding_diversity(f).mean_cosine == Approx(1.0).epsilon(gram_rel_tol));
    CHECK(st::embedding_diversity(f).mean_l2 == Approx(std::sqrt(13.0)).epsilon(gram_rel_tol));
  }
  SECTION("random rows against a double loop") {
    const auto x = gaussian(49, 64, 1.0, 17, 0.7);
    double cos = 0, l2 = 0;
    for (std::size_t i = 0; i < 49; ++i)
      for (std::size_t j = i + 1; j < 49; ++j) {
        double dot = 0, ni = 0, nj = 0;
        for (std::size_t c = 0; c < 64; ++c) {
          dot += x(i, c) * x(j, c);
          ni += x(i, c) * x(i, c);
          nj += x(j, c) * x(j, c);
        }
        cos += 1 - dot / std::sqrt(ni * nj);
        l2 += euclid(x, i, j);
      }
    const auto r = st::embedding_diversity(x);
    CHECK(r.pairs == 49 * 48 / 2);
    CHECK(r.mean_cosine == Approx(cos / double(r.pairs)).epsilon(gram_rel_tol));
    CHECK(r.mean_l2 == Approx(l2 / double(r.pairs)).epsilon(gram_rel_tol));
  }
  SECTION("errors") {
    CHECK_THROWS_AS(st::embedding_diversity(xt::xarray<double>(xt::zeros<double>({0, 4}))), std::invalid_argument);
    CHECK_THROWS_AS(st::embedding_diversity(xt::xarray<double>(xt::ones<double>({1, 4}))), std::invalid_argument);
    CHECK_THROWS_AS(st::embedding_diversity(xt::xarray<double>(xt::ones<double>({3, 4, 2}))), std::invalid_argument);
    xt::xarray<double> x = xt::ones<double>({3, 4});
    x(2, 1) = std::nan("");
    CHECK_THROWS_WITH(st::embedding_diversity(x), Catch::Contains("row 2, column 1 holds NaN"));
    x(2, 1) = 1;
    xt::view(x, 1) = 0.0;
    CHECK_THROWS_WITH(st::embedding_diversity(x), Catch::Contains("row 1 is all zero"));
  }
}

TEST_CASE("diversity: k-means recovers three blobs; silhouette and BIC choose k = 3", "[stats][diversity]") {
  std::vector<std::size_t> truth;
  const auto x = three_blobs(truth, 5);
  const auto km = st::kmeans(x, 3);
  CHECK(km.converged);
  CHECK(same_partition(km.labels, truth));
  CHECK(km.labels[0] == 0);  // numbered by first appearance
  CHECK(km.sizes[km.labels[0]] == std::size_t(std::count(truth.begin(), truth.end(), truth[0])));
  // Deterministic for a seed.
  CHECK(st::kmeans(x, 3).labels == km.labels);
  CHECK(st::kmeans(x, 3).inertia == km.inertia);

  const auto f = st::facets(x);
  CHECK(f.runs.size() == 8);
  CHECK(f.k_silhouette == 3);
  CHECK(f.k_bic == 3);
  CHECK(f.k == 3);
  CHECK(same_partition(f.labels(), truth));
  CHECK(std::isnan(f.silhouette[0]));
  CHECK(f.silhouette[2] > 0.8);
  st::facet_params p;
  p.rule = st::facet_rule::bic;
  p.kmax = 4;
  const auto g = st::facets(x, p);
  CHECK(g.k == 3);
  CHECK(g.runs.size() == 4);
  CHECK(g.runs[3].labels == f.runs[3].labels);  // each k's seeds do not depend on kmax
}

TEST_CASE("diversity: one blob is one facet under the silhouette rule", "[stats][diversity]") {
  const auto x = gaussian(49, 16, 1.0, 23);
  const auto f = st::facets(x);
  for (std::size_t k = 2; k <= 8; ++k) CHECK(f.silhouette[k - 1] < 0.25);
  CHECK(f.k_silhouette == 1);
  CHECK(f.k == 1);
  CHECK(f.k_bic == 1);
  CHECK(f.labels() == std::vector<std::size_t>(49, 0));
  st::facet_params low;
  low.min_silhouette = -1;  // with no floor the best k ≥ 2 is taken
  CHECK(st::facets(x, low).k >= 2);
}

TEST_CASE("diversity: k-means inertia, silhouette and BIC against direct computations", "[stats][diversity]") {
  SECTION("inertia of k = 1 is the scatter about the mean") {
    const auto x = gaussian(20, 5, 2.0, 3, 1.0);
    double scatter = 0;
    for (std::size_t c = 0; c < 5; ++c) {
      double m = 0;
      for (std::size_t i = 0; i < 20; ++i) m += x(i, c) / 20;
      for (std::size_t i = 0; i < 20; ++i) scatter += (x(i, c) - m) * (x(i, c) - m);
    }
    CHECK(st::kmeans(x, 1).inertia == Approx(scatter).epsilon(gram_rel_tol));
  }
  SECTION("silhouette on a small case, with a singleton cluster") {
    const auto x = gaussian(10, 3, 1.0, 8);
    const std::vector<std::size_t> l = {4, 4, 1, 1, 1, 4, 9, 1, 4, 4};  // cluster 9 is a singleton
    CHECK(st::silhouette(x, l) == Approx(naive_silhouette(x, l)).epsilon(gram_rel_tol));
    CHECK(std::isnan(st::silhouette(x, std::vector<std::size_t>(10, 2))));
    CHECK_THROWS_AS(st::silhouette(x, std::vector<std::size_t>(9, 0)), std::invalid_argument);
  }
  SECTION("BIC by hand: points 0, 1, 10, 11 in one dimension") {
    // k = 2: sizes 2, 2, W = 4 · 0.25 = 1, σ² = W/(d(n − k)) = 0.5,
    // ln L = 4 ln(1/2) − (4/2) ln(2π · 0.5) − (4 − 2)/2, BIC = ln L − (2 · 2/2) ln 4.
    const double lnl = 4 * std::log(0.5) - 2 * std::log(std::numbers::pi) - 1;
    CHECK(st::xmeans_bic(4, 1, {2, 2}, 1.0) == Approx(lnl - 2 * std::log(4.0)).epsilon(entropy_tol));
    xt::xarray<double> x = xt::zeros<double>({4, 1});
    x(1, 0) = 1, x(2, 0) = 10, x(3, 0) = 11;
    const auto f = st::facets(x);
    CHECK(f.bic.size() == 3);  // kmax capped at n − 1
    CHECK(f.bic[1] == Approx(lnl - 2 * std::log(4.0)).epsilon(gram_rel_tol));
    CHECK(f.k_bic == 2);
    CHECK(f.k_silhouette == 2);
    CHECK(std::isnan(st::xmeans_bic(3, 2, {1, 1, 1}, 0.0)));         // n ≤ k
    CHECK(st::xmeans_bic(4, 2, {2, 2}, 0.0) == std::numeric_limits<double>::infinity());
  }
  SECTION("repeated rows: fewer distinct rows than k") {
    const xt::xarray<double> x = {{1.0, 2.0}, {1.0, 2.0}, {1.0, 2.0}, {5.0, 5.0}};
    const auto km = st::kmeans(x, 3);
    CHECK(km.inertia == 0.0);
    CHECK(same_partition(km.labels, {0, 0, 0, 1}));
  }
}

TEST_CASE("diversity: facet and k-means errors", "[stats][diversity]") {
  const auto x = gaussian(6, 2, 1.0, 1);
  CHECK_THROWS_AS(st::kmeans(x, 0), std::invalid_argument);
  CHECK_THROWS_WITH(st::kmeans(x, 7), Catch::Contains("k = 7"));
  st::kmeans_params none;
  none.restarts = 0;
  CHECK_THROWS_AS(st::kmeans(x, 2, none), std::invalid_argument);
  CHECK_THROWS_AS(st::facets(xt::xarray<double>(xt::zeros<double>({0, 3}))), std::invalid_argument);
  st::facet_params zero;
  zero.kmax = 0;
  CHECK_THROWS_AS(st::facets(x, zero), std::invalid_argument);
  auto y = x;
  y(4, 0) = std::numeric_limits<double>::infinity();
  CHECK_THROWS_AS(st::facets(y), std::domain_error);
  CHECK(st::facets(xt::xarray<double>({{1.0, 1.0}})).k == 1);  // one row: one facet
}

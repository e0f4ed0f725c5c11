// SPDX-License-Identifier: MIT
// How many kinds of input a unit responds to (paper-spec §5.2–5.4), measured on its top-K
// (topk.hpp). Flag every output "paper metric unconfirmed": the paper's own measure is unknown.
//
// Labels of the K inputs, with counts c_l (n = Σ c_l):
//   distinct  the number of labels with c_l > 0
//   entropy   H = −Σ_l (c_l/n) ln(c_l/n), in nats (natural log); 0 for one label, ln K at most
//
// Embeddings X [K, D] of the K inputs (rows, from a fixed reference layer), Gram G = X Xᵀ (BLAS):
//   cosine distance  1 − G_ij / √(G_ii G_jj)     L2 distance  √(G_ii + G_jj − 2 G_ij)
//   each averaged over the K(K−1)/2 pairs i < j.
//
// Facets: k-means of the rows for k = 1..kmax (k-means++ seeding, Lloyd iterations, restarts, the
// lowest inertia W = Σ_i ‖x_i − μ_c(i)‖² kept), then k chosen by
//   silhouette  s(i) = (b − a)/max(a, b), a = mean distance from i to the rest of its cluster,
//               b = the lowest mean distance from i to another cluster, s(i) = 0 in a singleton
//               cluster (Rousseeuw 1987; Euclidean distances). k = argmax over 2..kmax of the mean
//               s; when that mean is below min_silhouette (0.25, Kaufman & Rousseeuw's "no
//               substantial structure") k = 1. The floor suits high-dimensional embeddings: one
//               Gaussian blob of 49 rows scores ≈ 0.08 in 16 dimensions but ≈ 0.35–0.4 in 2, where
//               the rule would split it.
//   BIC         X-means' spherical Gaussian model (Pelleg & Moore 2000), n points, dimension d,
//               k' non-empty clusters of sizes n_j:
//                 σ² = W / (d (n − k'))                       (pooled variance per dimension)
//                 ln L = Σ_j n_j ln(n_j/n) − (n d/2) ln(2π σ²) − d (n − k')/2
//                 BIC = ln L − (k'(d + 1)/2) ln n             (k' − 1 weights, k'd means, σ²)
//               and k = argmax BIC (larger is better). PARITY: Pelleg & Moore write σ² without
//               the division by d and the last term of ln L without the factor d; this is the
//               consistent maximum-likelihood form. Undefined (NaN) when n ≤ k'; +Inf when W = 0.
// Ties choose the smaller k. Every distance comes from G, so it carries an absolute rounding
// error of about 1e-16 · max_i G_ii in the squared distance.
#pragma once

#include <xtensor-blas/xlinalg.hpp>
#include <xtensor/xarray.hpp>
#include <xtensor/xtensor.hpp>
#include <xtensor/xmanipulation.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <map>
#include <numbers>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "shapebias/stats/topk.hpp"

namespace shapebias::stats {

/// Unit u's top-K, best first, refusing a top-K that saw fewer than K inputs (its diversity would
/// be measured on fewer inputs than every other unit's).
/// @throws std::invalid_argument "… K = 49 but only 10 inputs"
inline std::vector<topk_entry> top_inputs(const topk_units& t, std::size_t u) {
  if (t.count() < t.k())
    throw std::invalid_argument("diversity of unit " + std::to_string(u) + ": K = " + std::to_string(t.k()) +
                                " but only " + std::to_string(t.count()) + " inputs");
  return t.result(u);
}

struct label_diversity_result {
  std::size_t n = 0;         // labels counted
  std::size_t distinct = 0;  // different labels
  double entropy = 0;        // nats
};

/// Distinct labels and their Shannon entropy (natural log). @throws std::invalid_argument when empty.
inline label_diversity_result label_diversity(const std::vector<std::int64_t>& labels) {
  if (labels.empty()) throw std::invalid_argument("label_diversity: no labels");
  std::map<std::int64_t, std::size_t> c;  // ordered: the sum runs in label order
  for (auto l : labels) ++c[l];
  const double n = static_cast<double>(labels.size());
  double h = 0;
  for (const auto& [l, m] : c) {
    const double p = static_cast<double>(m) / n;
    h -= p * std::log(p);
  }
  return {labels.size(), c.size(), h};
}

/// label_diversity of unit u's top-K; label_of(id) gives an input's label.
template <class L>
label_diversity_result label_diversity(const topk_units& t, std::size_t u, L&& label_of) {
  std::vector<std::int64_t> labels;
  for (const auto& e : top_inputs(t, u)) labels.push_back(static_cast<std::int64_t>(label_of(e.id)));
  return label_diversity(labels);
}

namespace detail {

/// Embeddings as a checked [n, D] double matrix: 2 axes, n ≥ min_rows, D ≥ 1, all finite.
template <class E>
xt::xtensor<double, 2> embedding_matrix(const xt::xexpression<E>& e, std::size_t min_rows, const char* who) {
  const xt::xarray<double> a = e.derived_cast();
  if (a.dimension() != 2)
    throw std::invalid_argument(std::string(who) + " expects embeddings [K, D], got " +
                                shape_string({a.shape().begin(), a.shape().end()}));
  if (a.shape()[0] < min_rows || a.shape()[1] == 0)
    throw std::invalid_argument(std::string(who) + " needs at least " + std::to_string(min_rows) +
                                " embedding rows of at least 1 value, got " +
                                shape_string({a.shape().begin(), a.shape().end()}));
  for (std::size_t i = 0; i < a.size(); ++i)
    if (!std::isfinite(a.data()[i]))
      throw std::domain_error(std::string(who) + ": embedding row " + std::to_string(i / a.shape()[1]) + ", column " +
                              std::to_string(i % a.shape()[1]) + " holds " + (std::isnan(a.data()[i]) ? "NaN" : "Inf"));
  xt::xtensor<double, 2> x = a;
  return x;
}

/// G = X Xᵀ through BLAS.
inline xt::xtensor<double, 2> gram(const xt::xtensor<double, 2>& x) {
  xt::xtensor<double, 2> g = xt::linalg::dot(x, xt::transpose(x));
  return g;
}

/// Euclidean distances from a Gram matrix (squared distances clipped at 0; the diagonal exactly 0).
inline xt::xtensor<double, 2> distances(const xt::xtensor<double, 2>& g) {
  const std::size_t n = g.shape()[0];
  xt::xtensor<double, 2> d = xt::zeros<double>({n, n});
  for (std::size_t i = 0; i < n; ++i)
    for (std::size_t j = i + 1; j < n; ++j) d(i, j) = d(j, i) = std::sqrt(std::max(0.0, g(i, i) + g(j, j) - 2 * g(i, j)));
  return d;
}

/// Mean silhouette from Euclidean distances d [n, n]; NaN with fewer than 2 distinct labels.
inline double silhouette(const xt::xtensor<double, 2>& d, const std::vector<std::size_t>& labels) {
  std::map<std::size_t, std::size_t> index;  // label → cluster number
  for (auto l : labels) index.emplace(l, 0);
  if (index.size() < 2) return std::numeric_limits<double>::quiet_NaN();
  std::size_t c = 0;
  for (auto& [l, k] : index) k = c++;
  std::vector<std::size_t> of(labels.size()), size(c, 0);
  for (std::size_t i = 0; i < labels.size(); ++i) ++size[of[i] = index[labels[i]]];
  double total = 0;
  std::vector<double> sum(c);
  for (std::size_t i = 0; i < labels.size(); ++i) {
    if (size[of[i]] == 1) continue;  // s(i) = 0
    std::fill(sum.begin(), sum.end(), 0.0);
    for (std::size_t j = 0; j < labels.size(); ++j) sum[of[j]] += d(i, j);
    const double a = sum[of[i]] / static_cast<double>(size[of[i]] - 1);
    double b = std::numeric_limits<double>::infinity();
    for (std::size_t k = 0; k < c; ++k)
      if (k != of[i]) b = std::min(b, sum[k] / static_cast<double>(size[k]));
    const double m = std::max(a, b);
    if (m > 0) total += (b - a) / m;
  }
  return total / static_cast<double>(labels.size());
}

inline std::mt19937_64 facet_rng(std::uint64_t seed, std::size_t k, std::size_t restart) {
  std::seed_seq seq{static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32),
                    static_cast<std::uint32_t>(k), static_cast<std::uint32_t>(restart)};
  return std::mt19937_64(seq);
}

/// A uniform double in [0, 1) from 53 bits: the same on every standard library (unlike
/// std::uniform_real_distribution, whose algorithm is unspecified).
inline double unit_interval(std::mt19937_64& rng) { return static_cast<double>(rng() >> 11) * 0x1.0p-53; }

}  // namespace detail

struct embedding_diversity_result {
  std::size_t pairs = 0;     // K(K−1)/2
  double mean_cosine = 0;    // mean of 1 − cos over pairs, in [0, 2]
  double mean_l2 = 0;        // mean Euclidean distance over pairs
};

/// Mean pairwise cosine and L2 distances of the rows of `embeddings` [K, D] (any value type).
/// @throws std::invalid_argument for fewer than 2 rows or another shape; std::domain_error for a
///         NaN/Inf value or an all-zero row (its cosine is undefined).
template <class E>
embedding_diversity_result embedding_diversity(const xt::xexpression<E>& embeddings) {
  const auto x = detail::embedding_matrix(embeddings, 2, "embedding_diversity");
  const auto g = detail::gram(x);
  const std::size_t n = g.shape()[0];
  for (std::size_t i = 0; i < n; ++i)
    if (!(g(i, i) > 0))
      throw std::domain_error("embedding_diversity: embedding row " + std::to_string(i) +
                              " is all zero (its cosine distance is undefined)");
  double cosd = 0, l2 = 0;
  for (std::size_t i = 0; i < n; ++i)
    for (std::size_t j = i + 1; j < n; ++j) {
      cosd += std::clamp(1.0 - g(i, j) / std::sqrt(g(i, i) * g(j, j)), 0.0, 2.0);
      l2 += std::sqrt(std::max(0.0, g(i, i) + g(j, j) - 2 * g(i, j)));
    }
  const std::size_t pairs = n * (n - 1) / 2;
  return {pairs, cosd / static_cast<double>(pairs), l2 / static_cast<double>(pairs)};
}

struct kmeans_params {
  std::size_t restarts = 10;   // independent seedings; the lowest inertia is kept (the first on ties)
  std::size_t max_iter = 300;  // Lloyd iterations per restart
  std::uint64_t seed = 0;      // restart r for k draws from mt19937_64(seed_seq{seed, k, r})
};

struct kmeans_result {
  std::vector<std::size_t> labels;  // per row, numbered by first appearance (row 0 is in cluster 0)
  std::vector<std::size_t> sizes;   // per cluster (k entries; 0 only when rows repeat)
  double inertia = 0;               // Σ_i ‖x_i − μ_c(i)‖², μ the cluster means
  std::size_t iterations = 0;       // Lloyd iterations of the kept restart
  bool converged = false;           // its assignment stopped changing before max_iter
};

namespace detail {

/// k-means on a Gram matrix. A centre is kept as the set of rows it averages, so every distance
/// ‖x_i − μ_S‖² = G_ii − (2/|S|) Σ_{j∈S} G_ij + (1/|S|²) Σ_{j,l∈S} G_jl costs O(n) per centre
/// whatever D. Seeding: k-means++ (first row uniform, then rows drawn with probability ∝ squared
/// distance to the nearest chosen one; the lowest unchosen row when all are 0). Lloyd: assign to
/// the nearest centre (the lower index on ties), recentre on the means; an empty cluster takes
/// the row farthest from its own centre (the lower row on ties). Stops when the assignment
/// repeats, or after max_iter iterations.
inline kmeans_result kmeans_gram(const xt::xtensor<double, 2>& g, std::size_t k, const kmeans_params& p) {
  const std::size_t n = g.shape()[0];
  if (k == 0 || k > n)
    throw std::invalid_argument("kmeans: k = " + std::to_string(k) + " must be in [1, " + std::to_string(n) + "] for " +
                                std::to_string(n) + " rows");
  if (p.restarts == 0 || p.max_iter == 0) throw std::invalid_argument("kmeans: restarts and max_iter must be at least 1");
  auto d2 = [&](std::size_t i, std::size_t j) { return std::max(0.0, g(i, i) + g(j, j) - 2 * g(i, j)); };
  std::vector<double> t(n * k), dist(n);
  // Assigns every row to its nearest centre; returns whether any label changed.
  auto assign = [&](const std::vector<std::vector<std::size_t>>& sets, std::vector<std::size_t>& labels) {
    std::fill(t.begin(), t.end(), 0.0);
    std::vector<double> s(k, 0.0);
    for (std::size_t c = 0; c < k; ++c) {
      const double m = static_cast<double>(sets[c].size());
      for (auto j : sets[c])
        for (std::size_t i = 0; i < n; ++i) t[i * k + c] += g(j, i) / m;
      for (auto j : sets[c]) s[c] += t[j * k + c] / m;
    }
    bool changed = false;
    for (std::size_t i = 0; i < n; ++i) {
      std::size_t best = 0;
      double bd = std::numeric_limits<double>::infinity();
      for (std::size_t c = 0; c < k; ++c) {
        const double v = std::max(0.0, g(i, i) - 2 * t[i * k + c] + s[c]);
        if (v < bd) bd = v, best = c;
      }
      changed |= labels[i] != best;
      labels[i] = best;
      dist[i] = bd;
    }
    return changed;
  };
  kmeans_result best;
  best.inertia = std::numeric_limits<double>::infinity();
  for (std::size_t r = 0; r < p.restarts; ++r) {
    auto rng = facet_rng(p.seed, k, r);
    std::vector<std::vector<std::size_t>> sets(k);
    std::vector<double> near(n);
    std::vector<bool> chosen(n, false);
    for (std::size_t c = 0; c < k; ++c) {
      std::size_t pick = n;
      if (c == 0) {
        pick = std::min(n - 1, static_cast<std::size_t>(unit_interval(rng) * static_cast<double>(n)));
      } else {
        double total = 0;
        for (double v : near) total += v;
        if (total > 0) {
          const double u = unit_interval(rng) * total;
          double cum = 0;
          for (std::size_t i = 0; i < n && pick == n; ++i)
            if (near[i] > 0 && (cum += near[i]) > u) pick = i;
          if (pick == n)  // u rounded to total: the last row with weight
            for (std::size_t i = n; i-- > 0 && pick == n;)
              if (near[i] > 0) pick = i;
        } else {
          for (std::size_t i = 0; i < n && pick == n; ++i)
            if (!chosen[i]) pick = i;
        }
      }
      chosen[pick] = true;
      sets[c] = {pick};
      for (std::size_t i = 0; i < n; ++i) near[i] = c == 0 ? d2(i, pick) : std::min(near[i], d2(i, pick));
    }
    std::vector<std::size_t> labels(n, k);
    assign(sets, labels);
    std::size_t it = 0;
    bool converged = false;
    while (it < p.max_iter && !converged) {
      ++it;
      for (auto& s : sets) s.clear();
      for (std::size_t i = 0; i < n; ++i) sets[labels[i]].push_back(i);
      std::vector<bool> moved(n, false);
      for (auto& s : sets)
        if (s.empty()) {
          std::size_t far = n;
          for (std::size_t i = 0; i < n; ++i)
            if (!moved[i] && (far == n || dist[i] > dist[far])) far = i;
          moved[far] = true;
          s = {far};
        }
      converged = !assign(sets, labels);
    }
    // The inertia of the final partition about its own means.
    std::vector<std::size_t> size(k, 0);
    std::vector<double> within(k, 0.0), diag(k, 0.0);
    for (std::size_t i = 0; i < n; ++i) {
      ++size[labels[i]];
      diag[labels[i]] += g(i, i);
      for (std::size_t j = 0; j < n; ++j)
        if (labels[j] == labels[i]) within[labels[i]] += g(i, j);
    }
    double inertia = 0;
    for (std::size_t c = 0; c < k; ++c)
      if (size[c]) inertia += std::max(0.0, diag[c] - within[c] / static_cast<double>(size[c]));
    if (inertia < best.inertia) {
      // Renumber by first appearance, so equal partitions give equal labels.
      std::vector<std::size_t> to(k, k), sizes(k, 0);
      std::size_t next = 0;
      for (auto& l : labels) {
        if (to[l] == k) to[l] = next++;
        l = to[l];
        ++sizes[l];
      }
      best = {std::move(labels), std::move(sizes), inertia, it, converged};
    }
  }
  return best;
}

}  // namespace detail

/// k-means of the rows of x [n, D] into k clusters (see detail::kmeans_gram). Deterministic for a
/// seed. @throws std::invalid_argument unless 1 ≤ k ≤ n; std::domain_error on NaN/Inf.
template <class E>
kmeans_result kmeans(const xt::xexpression<E>& x, std::size_t k, const kmeans_params& p = {}) {
  return detail::kmeans_gram(detail::gram(detail::embedding_matrix(x, 1, "kmeans")), k, p);
}

/// The mean silhouette of `labels` on the rows of x [n, D] (Euclidean); NaN with fewer than 2
/// distinct labels. @throws std::invalid_argument when labels has not one value per row.
template <class E>
double silhouette(const xt::xexpression<E>& x, const std::vector<std::size_t>& labels) {
  const auto m = detail::embedding_matrix(x, 1, "silhouette");
  if (labels.size() != m.shape()[0])
    throw std::invalid_argument("silhouette: " + std::to_string(labels.size()) + " labels for " +
                                std::to_string(m.shape()[0]) + " rows");
  return detail::silhouette(detail::distances(detail::gram(m)), labels);
}

/// The X-means BIC of a partition (the formula in the file comment): n rows of dimension d,
/// cluster sizes (zeros ignored), inertia W. NaN when n ≤ k'; +Inf when W = 0.
inline double xmeans_bic(std::size_t n, std::size_t d, const std::vector<std::size_t>& sizes, double inertia) {
  std::size_t kk = 0;
  double fit = 0;
  const double nn = static_cast<double>(n), dd = static_cast<double>(d);
  for (auto m : sizes)
    if (m) {
      ++kk;
      fit += static_cast<double>(m) * std::log(static_cast<double>(m) / nn);
    }
  if (n <= kk || d == 0) return std::numeric_limits<double>::quiet_NaN();
  if (!(inertia > 0)) return std::numeric_limits<double>::infinity();
  const double dof = nn - static_cast<double>(kk);
  const double var = inertia / (dd * dof);
  const double loglik = fit - nn * dd / 2 * std::log(2 * std::numbers::pi * var) - dd * dof / 2;
  return loglik - static_cast<double>(kk) * (dd + 1) / 2 * std::log(nn);
}

enum class facet_rule { silhouette, bic };

struct facet_params {
  std::size_t kmax = 8;          // largest k tried (capped at K − 1)
  facet_rule rule = facet_rule::silhouette;
  double min_silhouette = 0.25;  // below it the silhouette rule answers k = 1
  kmeans_params kmeans;
};

struct facet_result {
  std::size_t k = 1;              // chosen by the rule asked for
  std::size_t k_silhouette = 1;   // chosen by the silhouette rule
  std::size_t k_bic = 1;          // chosen by BIC
  std::vector<double> silhouette; // [kmax'] for k = 1..kmax' (index k − 1); NaN for k = 1
  std::vector<double> bic;        // [kmax']
  std::vector<kmeans_result> runs;  // [kmax'] the k-means of each k
  /// The clustering of the chosen k.
  const std::vector<std::size_t>& labels() const { return runs.at(k - 1).labels; }
};

/// Facets of the rows of `embeddings` [K, D]: k-means for k = 1..min(kmax, K − 1) (at least 1),
/// k chosen by silhouette and by BIC (file comment).
/// @throws std::invalid_argument for no rows, another shape or kmax = 0; std::domain_error on NaN/Inf.
template <class E>
facet_result facets(const xt::xexpression<E>& embeddings, const facet_params& p = {}) {
  if (p.kmax == 0) throw std::invalid_argument("facets: kmax must be at least 1");
  const auto x = detail::embedding_matrix(embeddings, 1, "facets");
  const std::size_t n = x.shape()[0], d = x.shape()[1];
  const auto g = detail::gram(x);
  const auto dist = detail::distances(g);
  const std::size_t kmax = std::max<std::size_t>(1, std::min(p.kmax, n - 1));
  facet_result r;
  for (std::size_t k = 1; k <= kmax; ++k) {
    r.runs.push_back(detail::kmeans_gram(g, k, p.kmeans));
    const auto& run = r.runs.back();
    r.silhouette.push_back(k == 1 ? std::numeric_limits<double>::quiet_NaN() : detail::silhouette(dist, run.labels));
    r.bic.push_back(xmeans_bic(n, d, run.sizes, run.inertia));
  }
  double best_s = -std::numeric_limits<double>::infinity(), best_b = best_s;
  for (std::size_t k = 1; k <= kmax; ++k) {
    if (k >= 2 && r.silhouette[k - 1] > best_s) best_s = r.silhouette[k - 1], r.k_silhouette = k;
    if (r.bic[k - 1] > best_b) best_b = r.bic[k - 1], r.k_bic = k;
  }
  if (!(best_s >= p.min_silhouette)) r.k_silhouette = 1;
  r.k = p.rule == facet_rule::bic ? r.k_bic : r.k_silhouette;
  return r;
}

}  // namespace shapebias::stats

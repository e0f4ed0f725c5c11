// SPDX-License-Identifier: MIT
// The inputs a unit responds to most (paper-spec §5.1, §5.5): a streaming per-unit top-K, and
// per-unit activity (sparsity and dead units).
//
// Each row of a batch [B, U, H, W] (or [B, U]) gives unit u one score, the spatial max of its
// H × W map (NetDissect's ranking) or, as an option, the spatial mean:
//
//   max:  s = max_{y,x} a[y, x]        mean:  s = (1/(H·W)) Σ_{y,x} a[y, x]  (summed in double)
//
// and the argmax position (y, x), the first maximum in row-major order (y = x = 0 for [B, U]).
//
//   topk_units     keeps the K best rows per unit under a total order: higher score first, then
//                  lower input id, then lower (y, x). The kept set is the K smallest elements of
//                  that order over every row seen, so it does not depend on batch order, batch
//                  size, thread count or merge order.
//   unit_activity  per unit: rows whose spatial max exceeds the unit's threshold (strictly), and
//                  the running maximum over the data (a unit is dead when it is ≤ ε).
//
// NaN and ±Inf are refused (std::domain_error naming row, input id and unit) before the
// accumulator changes.
#pragma once

#include <xtensor/xarray.hpp>
#include <xtensor/xbuilder.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "shapebias/stats/detail.hpp"
#include "shapebias/stats/state.hpp"

namespace shapebias::stats {

enum class topk_rank { max, mean };

inline std::string to_string(topk_rank r) { return r == topk_rank::mean ? "mean" : "max"; }
inline topk_rank parse_topk_rank(const std::string& s) {
  if (s == "max") return topk_rank::max;
  if (s == "mean") return topk_rank::mean;
  throw std::invalid_argument("top-K ranking '" + s + "' is not one of max, mean");
}

/// One kept row of a unit: its score, input id and argmax position.
struct topk_entry {
  double score = 0;
  std::int64_t id = 0;
  std::size_t y = 0, x = 0;
  friend bool operator==(const topk_entry&, const topk_entry&) = default;
};

/// The order of topk_units: a before b when a ranks higher (see the file comment).
inline bool ranks_before(const topk_entry& a, const topk_entry& b) noexcept {
  if (a.score != b.score) return a.score > b.score;
  if (a.id != b.id) return a.id < b.id;
  return a.y != b.y ? a.y < b.y : a.x < b.x;
}

namespace detail {

/// Ids and positions are saved as float64: integers up to 2^53 are exact.
inline constexpr double max_exact_id = 9007199254740992.0;  // 2^53
inline constexpr std::int64_t max_exact_int = std::int64_t(1) << 53;

/// The scores of one batch, checked: right unit count, every value finite. Throws before the
/// caller changes anything. `rows` = rows already seen (for messages); `ids` may be nullptr (the
/// row number is then the id).
struct batch_scores {
  template <class E>
  batch_scores(const xt::xexpression<E>& e, std::size_t units, topk_rank rank, const std::int64_t* ids,
               std::uint64_t rows, const char* who, unsigned threads) {
    using T = std::conditional_t<std::is_same_v<std::remove_cv_t<typename E::value_type>, float>, float, double>;
    const row_major_block<T> x(e);
    const auto& s = x.shape();
    if ((s.size() != 2 && s.size() != 4) || s[1] != units)
      throw std::invalid_argument(std::string(who) + " update expects [B, " + std::to_string(units) + ", H, W] or [B, " +
                                  std::to_string(units) + "], got " + shape_string(s));
    b = s[0];
    w = s.size() == 4 ? s[3] : 1;
    const std::size_t per = s.size() == 4 ? s[2] * s[3] : 1;
    if (per == 0 && b * units > 0) throw std::invalid_argument(std::string(who) + ": empty maps " + shape_string(s));
    score.resize(b * units);
    pos.resize(b * units);
    parallel_for(b * units, threads, [&](std::size_t i0, std::size_t i1) {
      for (std::size_t i = i0; i < i1; ++i) {
        const T* p = x.data() + i * per;
        std::size_t best = 0;
        double sum = 0;
        bool finite = true;
        for (std::size_t j = 0; j < per; ++j) {
          if (!std::isfinite(p[j])) {
            finite = false;
            best = j;
            break;
          }
          if (p[j] > p[best]) best = j;
          sum += static_cast<double>(p[j]);
        }
        // A map with NaN/Inf scores as that value, so the check below finds it.
        score[i] = !finite || rank == topk_rank::max ? static_cast<double>(p[best]) : sum / static_cast<double>(per);
        pos[i] = best;
      }
    });
    for (std::size_t i = 0; i < b * units; ++i)
      if (!std::isfinite(score[i])) {
        const std::size_t r = i / units;
        throw std::domain_error(std::string(who) + ": row " + std::to_string(rows + r) + " (input id " +
                                std::to_string(id(ids, rows, r)) + "), unit " + std::to_string(i % units) + " holds " +
                                (std::isnan(score[i]) ? "NaN" : "Inf") + " (scores need finite values)");
      }
  }
  static std::int64_t id(const std::int64_t* ids, std::uint64_t rows, std::size_t r) {
    return ids ? ids[r] : static_cast<std::int64_t>(rows + r);
  }
  std::size_t b = 0, w = 1;
  std::vector<double> score;     // [B, U]
  std::vector<std::size_t> pos;  // [B, U], flat argmax index y·W + x
};

}  // namespace detail

/// Streaming per-unit top-K rows (paper-spec §5.1; the default K = 49 there is unconfirmed).
///
/// Algorithm. Per unit a bounded heap of at most K entries whose root is the lowest-ranked kept
/// entry; a new row replaces the root when it ranks before it. Units are independent and each
/// unit's heap is changed by one thread only. merge inserts the other accumulator's entries: the
/// result equals one pass over the concatenated rows, exactly (scores are compared, never summed).
///
/// Memory. At most K entries of 32 bytes per unit (plus std::vector growth slack, capacity < 2K),
/// whatever the number of rows; retained_bytes() reports it. Each update also holds the batch's
/// B × U scores and positions (16 bytes each) while it runs.
///
/// Ids. `update` takes one int64 id per row (nullptr: the running row number, which repeats across
/// shards, so give ids to anything that will be merged). Ids are meant to be unique; they must lie
/// in [−2^53, 2^53] because the state stores them as float64.
class topk_units {
 public:
  static constexpr int state_version = 1;

  /// @param units U  @param k K ≥ 1  @param rank the score of a row: spatial max or mean
  topk_units(std::size_t units, std::size_t k, topk_rank rank = topk_rank::max) : k_(k), rank_(rank), heaps_(units) {
    if (k == 0) throw std::invalid_argument("topk_units: K must be at least 1");
  }

  /// Adds a batch [B, U, H, W] or [B, U] (float or double; other types are read as double).
  /// @param ids B input ids, or nullptr for the running row numbers
  /// @throws std::invalid_argument on a wrong shape or an id beyond ±2^53; std::domain_error on NaN
  ///         or Inf (naming row, id and unit). Nothing changes when it throws.
  template <class E>
  void update(const xt::xexpression<E>& batch, const std::int64_t* ids = nullptr, unsigned threads = 1) {
    const detail::batch_scores s(batch, units(), rank_, ids, rows_, "topk_units", threads);
    if (ids)
      for (std::size_t r = 0; r < s.b; ++r)
        if (ids[r] > detail::max_exact_int || ids[r] < -detail::max_exact_int)
          throw std::invalid_argument("topk_units: input id " + std::to_string(ids[r]) + " of row " +
                                      std::to_string(rows_ + r) + " is beyond ±2^53 (ids are saved as float64)");
    const std::size_t nu = units();
    detail::parallel_for(nu, threads, [&](std::size_t u0, std::size_t u1) {
      for (std::size_t u = u0; u < u1; ++u)
        for (std::size_t r = 0; r < s.b; ++r) {
          const std::size_t i = r * nu + u;
          push(heaps_[u], {s.score[i], detail::batch_scores::id(ids, rows_, r), s.pos[i] / s.w, s.pos[i] % s.w});
        }
    });
    rows_ += s.b;
  }

  /// Adds another accumulator's rows. Refuses another U, K or ranking.
  void merge(const topk_units& o) {
    if (o.units() != units() || o.k_ != k_ || o.rank_ != rank_)
      throw std::invalid_argument("cannot merge topk_units of " + std::to_string(o.units()) + " units, K = " +
                                  std::to_string(o.k_) + ", rank " + to_string(o.rank_) + " into " +
                                  std::to_string(units()) + " units, K = " + std::to_string(k_) + ", rank " +
                                  to_string(rank_));
    const std::vector<std::vector<topk_entry>> theirs = o.heaps_;  // a copy: o may be *this
    for (std::size_t u = 0; u < units(); ++u)
      for (const auto& e : theirs[u]) push(heaps_[u], e);
    rows_ += o.rows_;
  }

  std::size_t units() const noexcept { return heaps_.size(); }
  std::size_t k() const noexcept { return k_; }
  topk_rank rank() const noexcept { return rank_; }
  /// Rows seen (over every update and merge).
  std::uint64_t count() const noexcept { return rows_; }

  /// Unit u's kept rows, best first: min(K, count()) entries.
  std::vector<topk_entry> result(std::size_t u) const {
    std::vector<topk_entry> r = heaps_.at(u);
    std::sort(r.begin(), r.end(), ranks_before);
    return r;
  }

  std::size_t retained_bytes() const noexcept {
    std::size_t n = sizeof(*this) + heaps_.capacity() * sizeof(heaps_[0]);
    for (const auto& h : heaps_) n += h.capacity() * sizeof(topk_entry);
    return n;
  }

  /// kind "topk_units"; params version, units, k, rows; text rank; arrays size [U] and score, id,
  /// y, x [U, K] (each unit's entries best first, zero-padded). Exact: scores are doubles, ids and
  /// positions integers below 2^53.
  state save() const {
    state s;
    s.kind = "topk_units";
    s.params = {{"version", static_cast<double>(state_version)}, {"units", static_cast<double>(units())},
                {"k", static_cast<double>(k_)}, {"rows", static_cast<double>(rows_)}};
    s.text = {{"rank", to_string(rank_)}};
    xt::xarray<double> size = xt::zeros<double>({units()});
    xt::xarray<double> score = xt::zeros<double>({units(), k_}), id = score, y = score, x = score;
    for (std::size_t u = 0; u < units(); ++u) {
      const auto r = result(u);
      size(u) = static_cast<double>(r.size());
      for (std::size_t j = 0; j < r.size(); ++j) {
        score(u, j) = r[j].score;
        id(u, j) = static_cast<double>(r[j].id);
        y(u, j) = static_cast<double>(r[j].y);
        x(u, j) = static_cast<double>(r[j].x);
      }
    }
    s.arrays = {{"size", size}, {"score", score}, {"id", id}, {"y", y}, {"x", x}};
    return s;
  }

  /// @throws std::invalid_argument on another kind or version, or inconsistent arrays.
  static topk_units load(const state& s) {
    s.expect_kind("topk_units");
    if (s.param("version") != static_cast<double>(state_version))
      throw std::invalid_argument("topk_units state: unknown version " + std::to_string(s.param("version")) +
                                  " (possible corruption)");
    auto whole = [](double v, double hi) { return v >= 0 && v <= hi && v == std::floor(v); };
    const double nu = s.param("units"), k = s.param("k"), rows = s.param("rows");
    if (!whole(nu, detail::max_exact_id) || !whole(k, detail::max_exact_id) || k < 1 || !whole(rows, detail::max_exact_id))
      throw std::invalid_argument("topk_units state: units, k or rows is not a count (possible corruption)");
    topk_units t(static_cast<std::size_t>(nu), static_cast<std::size_t>(k), parse_topk_rank(s.choice("rank")));
    t.rows_ = static_cast<std::uint64_t>(rows);
    const auto &size = s.array("size"), &score = s.array("score"), &id = s.array("id"), &y = s.array("y"),
               &x = s.array("x");
    const std::vector<std::size_t> full{t.units(), t.k_};
    auto is_full = [&](const xt::xarray<double>& a) { return std::vector<std::size_t>(a.shape().begin(), a.shape().end()) == full; };
    if (size.size() != t.units() || !is_full(score) || !is_full(id) || !is_full(y) || !is_full(x))
      throw std::invalid_argument("topk_units state: arrays are not [units] and [units, k] (possible corruption)");
    for (std::size_t u = 0; u < t.units(); ++u) {
      if (!whole(size(u), std::min(k, rows)))
        throw std::invalid_argument("topk_units state: unit " + std::to_string(u) + " keeps more rows than K or than seen");
      for (std::size_t j = 0; j < static_cast<std::size_t>(size(u)); ++j) {
        if (!std::isfinite(score(u, j)) || std::floor(id(u, j)) != id(u, j) || std::abs(id(u, j)) > detail::max_exact_id ||
            !whole(y(u, j), detail::max_exact_id) || !whole(x(u, j), detail::max_exact_id))
          throw std::invalid_argument("topk_units state: entry " + std::to_string(j) + " of unit " + std::to_string(u) +
                                      " is not a finite score with integer id and position (possible corruption)");
        t.push(t.heaps_[u], {score(u, j), static_cast<std::int64_t>(id(u, j)), static_cast<std::size_t>(y(u, j)),
                           static_cast<std::size_t>(x(u, j))});
      }
    }
    return t;
  }

 private:
  /// Keeps the K first entries of the order: a heap whose root ranks last.
  void push(std::vector<topk_entry>& h, const topk_entry& e) const {
    if (h.size() < k_) {
      h.push_back(e);
      std::push_heap(h.begin(), h.end(), ranks_before);
    } else if (ranks_before(e, h.front())) {
      std::pop_heap(h.begin(), h.end(), ranks_before);
      h.back() = e;
      std::push_heap(h.begin(), h.end(), ranks_before);
    }
  }

  std::size_t k_;
  topk_rank rank_;
  std::vector<std::vector<topk_entry>> heaps_;
  std::uint64_t rows_ = 0;
};

/// Per-unit activity over a data set (paper-spec §5.5): above(u), the rows whose spatial max
/// exceeds threshold[u] (strictly; NetDissect's T_k, or one value such as 0, for every unit), and
/// max(u), the largest spatial max seen. Sparsity is fraction_above(u) = above(u)/count(); a unit
/// is dead when max(u) ≤ ε. Exact (integer counts and maxima), so split-, merge- and
/// thread-invariant. Memory: 3 numbers per unit.
class unit_activity {
 public:
  static constexpr int state_version = 1;

  /// One threshold for every unit (default 0: "the unit fires").
  explicit unit_activity(std::size_t units, double threshold = 0.0) : unit_activity(std::vector<double>(units, threshold)) {}
  /// One threshold per unit (finite).
  explicit unit_activity(std::vector<double> thresholds)
      : t_(std::move(thresholds)), above_(t_.size(), 0), max_(t_.size(), -std::numeric_limits<double>::infinity()) {
    for (std::size_t u = 0; u < t_.size(); ++u)
      if (!std::isfinite(t_[u]))
        throw std::invalid_argument("unit_activity: the threshold of unit " + std::to_string(u) + " is not finite");
  }

  /// Adds a batch [B, U, H, W] or [B, U]. `ids` (B values, or nullptr) name inputs in messages.
  /// @throws std::invalid_argument on a wrong shape; std::domain_error on NaN or Inf, before any change.
  template <class E>
  void update(const xt::xexpression<E>& batch, const std::int64_t* ids = nullptr, unsigned threads = 1) {
    const detail::batch_scores s(batch, units(), topk_rank::max, ids, rows_, "unit_activity", threads);
    const std::size_t nu = units();
    for (std::size_t r = 0; r < s.b; ++r)
      for (std::size_t u = 0; u < nu; ++u) {
        const double v = s.score[r * nu + u];
        above_[u] += v > t_[u];
        max_[u] = std::max(max_[u], v);
      }
    rows_ += s.b;
  }

  /// Adds another accumulator's rows. Refuses other units or thresholds.
  void merge(const unit_activity& o) {
    if (o.t_ != t_)
      throw std::invalid_argument("cannot merge unit_activity of " + std::to_string(o.units()) + " units into " +
                                  std::to_string(units()) + " units, or with other thresholds");
    for (std::size_t u = 0; u < units(); ++u) {
      above_[u] += o.above_[u];
      max_[u] = std::max(max_[u], o.max_[u]);
    }
    rows_ += o.rows_;
  }

  std::size_t units() const noexcept { return t_.size(); }
  std::uint64_t count() const noexcept { return rows_; }
  double threshold(std::size_t u) const { return t_.at(u); }
  std::uint64_t above(std::size_t u) const { return above_.at(u); }
  /// above(u) / count(). @throws std::runtime_error before any row.
  double fraction_above(std::size_t u) const {
    nonempty();
    return static_cast<double>(above(u)) / static_cast<double>(rows_);
  }
  /// The largest spatial max of unit u. @throws std::runtime_error before any row.
  double max(std::size_t u) const {
    nonempty();
    return max_.at(u);
  }
  bool dead(std::size_t u, double eps = 0.0) const { return max(u) <= eps; }
  std::size_t dead_units(double eps = 0.0) const {
    std::size_t n = 0;
    for (std::size_t u = 0; u < units(); ++u) n += dead(u, eps);
    return n;
  }

  /// kind "unit_activity"; params version, units, rows; arrays threshold, above, max [U]
  /// (max is −Inf before any row).
  state save() const {
    state s;
    s.kind = "unit_activity";
    s.params = {{"version", static_cast<double>(state_version)}, {"units", static_cast<double>(units())},
                {"rows", static_cast<double>(rows_)}};
    xt::xarray<double> t = xt::zeros<double>({units()}), a = t, m = t;
    for (std::size_t u = 0; u < units(); ++u) {
      t(u) = t_[u];
      a(u) = static_cast<double>(above_[u]);
      m(u) = max_[u];
    }
    s.arrays = {{"threshold", t}, {"above", a}, {"max", m}};
    return s;
  }

  static unit_activity load(const state& s) {
    s.expect_kind("unit_activity");
    if (s.param("version") != static_cast<double>(state_version))
      throw std::invalid_argument("unit_activity state: unknown version (possible corruption)");
    const auto nu = static_cast<std::size_t>(s.param("units"));
    const auto &t = s.array("threshold"), &a = s.array("above"), &m = s.array("max");
    if (t.size() != nu || a.size() != nu || m.size() != nu)
      throw std::invalid_argument("unit_activity state: arrays do not have one value per unit (possible corruption)");
    unit_activity r(std::vector<double>(t.begin(), t.end()));
    r.rows_ = static_cast<std::uint64_t>(s.param("rows"));
    for (std::size_t u = 0; u < nu; ++u) {
      if (!(a(u) >= 0 && a(u) <= static_cast<double>(r.rows_)) || std::isnan(m(u)))
        throw std::invalid_argument("unit_activity state: unit " + std::to_string(u) + " is inconsistent (possible corruption)");
      r.above_[u] = static_cast<std::uint64_t>(a(u));
      r.max_[u] = m(u);
    }
    return r;
  }

 private:
  void nonempty() const {
    if (rows_ == 0) throw std::runtime_error("unit_activity: no rows yet");
  }
  std::vector<double> t_;
  std::vector<std::uint64_t> above_;
  std::vector<double> max_;
  std::uint64_t rows_ = 0;
};

}  // namespace shapebias::stats

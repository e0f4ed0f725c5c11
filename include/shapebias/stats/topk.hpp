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
//   map_scores     a batch's scores, computed once; both accumulators take it in place of the
//                  batch, so a batch fed to both is read once.
//
// NaN and ±Inf are refused (std::domain_error naming row, input id and unit) before the
// accumulator changes.
#pragma once

#include <xtensor/xarray.hpp>
#include <xtensor/xbuilder.hpp>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
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

/// Refuses a batch shape other than [B, units, H, W] or [B, units], or empty maps.
inline void expect_batch(const std::vector<std::size_t>& s, std::size_t units, const std::string& who) {
  if ((s.size() != 2 && s.size() != 4) || s[1] != units)
    throw std::invalid_argument(who + " update expects [B, " + std::to_string(units) + ", H, W] or [B, " +
                                std::to_string(units) + "], got " + shape_string(s));
  if (s.size() == 4 && s[2] * s[3] == 0 && s[0] * units > 0)
    throw std::invalid_argument(who + ": empty maps " + shape_string(s));
}

/// The input id of row r of a batch: ids[r], or the running row number when ids is nullptr.
inline std::int64_t row_id(const std::int64_t* ids, std::uint64_t rows, std::size_t r) {
  return ids ? ids[r] : static_cast<std::int64_t>(rows + r);
}

/// The largest of p[0, n) (n ≥ 1; of −0 and +0, +0) and whether every value is finite, in one
/// pass. The values are compared through an order-preserving integer image of their bits
/// (sign-magnitude to two's complement): integer max and or reductions vectorise without
/// -ffast-math, floating-point ones do not.
template <class T>
std::pair<T, bool> max_and_finite(const T* p, std::size_t n) noexcept {
  using I = std::conditional_t<sizeof(T) == 4, std::int32_t, std::int64_t>;
  static_assert(sizeof(I) == sizeof(T) && std::numeric_limits<T>::is_iec559);
  constexpr I magnitude = std::numeric_limits<I>::max();                     // every bit but the sign
  constexpr I exponent = std::bit_cast<I>(std::numeric_limits<T>::infinity());  // all set: Inf or NaN
  constexpr int sign = 8 * sizeof(I) - 1;
  I best = std::numeric_limits<I>::min(), inf_or_nan = 0;
  for (std::size_t j = 0; j < n; ++j) {
    const I b = std::bit_cast<I>(p[j]);
    inf_or_nan |= (b & exponent) == exponent;
    const I key = b ^ ((b >> sign) & magnitude);  // increases with the value
    best = key > best ? key : best;
  }
  return {std::bit_cast<T>(best ^ ((best >> sign) & magnitude)), inf_or_nan == 0};
}

/// float batches are read as float, others as double.
template <class E>
using score_value_t = std::conditional_t<std::is_same_v<std::remove_cv_t<typename E::value_type>, float>, float, double>;

}  // namespace detail

/// One batch [B, U, H, W] (or [B, U]) scored once: the spatial max of every map, and its spatial
/// mean when `rank` is mean (see the file comment), computed on `threads` threads over the maps.
/// topk_units::update and unit_activity::update take it in place of the batch, so a batch fed to
/// both is read once:
///
///   const stats::map_scores s(batch, top.rank(), threads);
///   top.update(s, ids, threads);
///   activity.update(s, ids);
///
/// The argmax of a map is found on demand (argmax()), so only for rows that enter a top-K. A map
/// holding NaN or Inf is recorded, not refused, so that each accumulator refuses it in its own
/// words (require_finite). The batch is read in place when it is row-major float or double (else
/// copied): it must outlive this object, which cannot be copied.
template <class T>
class map_scores {
 public:
  /// @throws std::invalid_argument unless the batch is [B, U, H, W] or [B, U] with non-empty maps
  template <class E>
  explicit map_scores(const xt::xexpression<E>& batch, topk_rank rank = topk_rank::max, unsigned threads = 1)
      : block_(batch) {
    const auto& s = block_.shape();
    if (s.size() != 2 && s.size() != 4)
      throw std::invalid_argument("map_scores expects a batch [B, U, H, W] or [B, U], got " + detail::shape_string(s));
    detail::expect_batch(s, s[1], "map_scores");
    w_ = s.size() == 4 ? s[3] : 1;
    per_ = s.size() == 4 ? s[2] * s[3] : 1;
    const std::size_t n = s[0] * s[1];
    max_.resize(n);
    if (rank == topk_rank::mean) mean_.resize(n);
    detail::parallel_for(n, threads, [&](std::size_t i0, std::size_t i1) {
      for (std::size_t i = i0; i < i1; ++i) {
        const T* p = map(i);
        auto [m, finite] = detail::max_and_finite(p, per_);
        if (!finite) {
          max_[i] = std::numeric_limits<double>::quiet_NaN();  // found by the scan below
          continue;
        }
        if (m == 0) m = *std::find(p, p + per_, m);  // the first zero's sign, as a first-maximum loop gives
        max_[i] = static_cast<double>(m);
        if (!mean_.empty()) {
          double sum = 0;  // in order: the mean does not depend on the thread count
          for (std::size_t j = 0; j < per_; ++j) sum += static_cast<double>(p[j]);
          mean_[i] = sum / static_cast<double>(per_);
        }
      }
    });
    const auto bad = std::find_if(max_.begin(), max_.end(), [](double v) { return std::isnan(v); });
    bad_ = static_cast<std::size_t>(bad - max_.begin());
  }
  map_scores(const map_scores&) = delete;
  map_scores& operator=(const map_scores&) = delete;

  /// The batch's shape.
  const std::vector<std::size_t>& shape() const noexcept { return block_.shape(); }
  std::size_t rows() const noexcept { return shape()[0]; }
  std::size_t units() const noexcept { return shape()[1]; }
  bool has_mean() const noexcept { return !mean_.empty(); }

  /// The spatial max of unit u in row r: the value of its first maximum (NaN for a map holding
  /// NaN or Inf).
  double max(std::size_t r, std::size_t u) const noexcept { return max_[r * units() + u]; }
  /// The spatial mean (summed in double, in row-major order); only when has_mean().
  double mean(std::size_t r, std::size_t u) const noexcept { return mean_[r * units() + u]; }
  /// The position (y, x) of the first maximum of the map of unit u in row r, in row-major order
  /// ((0, 0) for [B, U]). Found now: one pass over the map, up to that maximum.
  std::pair<std::size_t, std::size_t> argmax(std::size_t r, std::size_t u) const noexcept {
    const T* p = map(r * units() + u);
    const auto j = static_cast<std::size_t>(std::find(p, p + per_, static_cast<T>(max(r, u))) - p);
    return {j / w_, j % w_};
  }

  /// @throws std::domain_error "<who>: row <rows + r> (input id <id>), unit <u> holds NaN|Inf ..."
  ///         for the first map (row-major over [B, U]) that holds NaN or Inf; its first such value
  ///         names the kind. `rows` = the rows the accumulator has seen; ids as in its update.
  void require_finite(const std::string& who, std::uint64_t rows, const std::int64_t* ids) const {
    if (bad_ == max_.size()) return;
    const T* p = map(bad_);
    const T v = *std::find_if(p, p + per_, [](T x) { return !std::isfinite(x); });
    const std::size_t r = bad_ / units();
    throw std::domain_error(who + ": row " + std::to_string(rows + r) + " (input id " +
                            std::to_string(detail::row_id(ids, rows, r)) + "), unit " + std::to_string(bad_ % units()) +
                            " holds " + (std::isnan(v) ? "NaN" : "Inf") + " (scores need finite values)");
  }

 private:
  const T* map(std::size_t i) const noexcept { return block_.data() + i * per_; }

  detail::row_major_block<T> block_;
  std::size_t w_ = 1, per_ = 1;
  std::vector<double> max_, mean_;  // [B, U]
  std::size_t bad_ = 0;             // the first map holding NaN or Inf; B·U when none
};

template <class E>
map_scores(const xt::xexpression<E>&, topk_rank = topk_rank::max, unsigned = 1) -> map_scores<detail::score_value_t<E>>;

/// Streaming per-unit top-K rows (paper-spec §5.1; the default K = 49 there is unconfirmed).
///
/// Algorithm. A batch is scored once (map_scores). Per unit a bounded heap of at most K entries
/// whose root is the lowest-ranked kept entry; a new row replaces the root when it ranks before it.
/// Once the heap is full most rows score below the root and are passed over after one comparison;
/// only the others have their argmax found and enter the heap. Units are independent and each
/// unit's heap is changed by one thread only. merge inserts the other accumulator's entries: the
/// result equals one pass over the concatenated rows, exactly (scores are compared, never summed).
///
/// Memory. At most K entries of 32 bytes per unit (plus std::vector growth slack, capacity < 2K),
/// whatever the number of rows; retained_bytes() reports it. Each update also holds the batch's
/// B × U scores (8 bytes each, 16 when ranking by the mean) while it runs.
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
    const auto& shape = batch.derived_cast().shape();
    detail::expect_batch({shape.begin(), shape.end()}, units(), "topk_units");
    update(map_scores(batch, rank_, threads), ids, threads);
  }

  /// Adds a batch already scored (see map_scores): the same as update(batch, ids, threads).
  /// @throws as update(batch), and std::invalid_argument when ranking by the mean and `s` has no means.
  template <class T>
  void update(const map_scores<T>& s, const std::int64_t* ids = nullptr, unsigned threads = 1) {
    detail::expect_batch(s.shape(), units(), "topk_units");
    if (rank_ == topk_rank::mean && !s.has_mean())
      throw std::invalid_argument("topk_units ranks by the spatial mean: score the batch with topk_rank::mean");
    s.require_finite("topk_units", rows_, ids);
    if (ids)
      for (std::size_t r = 0; r < s.rows(); ++r)
        if (ids[r] > detail::max_exact_int || ids[r] < -detail::max_exact_int)
          throw std::invalid_argument("topk_units: input id " + std::to_string(ids[r]) + " of row " +
                                      std::to_string(rows_ + r) + " is beyond ±2^53 (ids are saved as float64)");
    detail::parallel_for(units(), threads, [&](std::size_t u0, std::size_t u1) {
      // The root's score and id of each unit's heap, side by side (−Inf while the heap is not
      // full): most rows rank after the root on these alone and stop there, without visiting the
      // heap or finding their argmax.
      std::vector<std::pair<double, std::int64_t>> root(u1 - u0, {-std::numeric_limits<double>::infinity(), 0});
      auto set_root = [&](std::size_t u) {
        if (heaps_[u].size() == k_) root[u - u0] = {heaps_[u].front().score, heaps_[u].front().id};
      };
      for (std::size_t u = u0; u < u1; ++u) set_root(u);
      for (std::size_t r = 0; r < s.rows(); ++r) {  // rows outside: the scores are read in order
        const std::int64_t id = detail::row_id(ids, rows_, r);
        for (std::size_t u = u0; u < u1; ++u) {
          const double v = rank_ == topk_rank::max ? s.max(r, u) : s.mean(r, u);
          const auto [score, root_id] = root[u - u0];
          if (v < score || (v == score && id > root_id)) continue;
          const auto [y, x] = s.argmax(r, u);
          push(heaps_[u], {v, id, y, x});
          set_root(u);
        }
      }
    });
    rows_ += s.rows();
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
    const auto& shape = batch.derived_cast().shape();
    detail::expect_batch({shape.begin(), shape.end()}, units(), "unit_activity");
    update(map_scores(batch, topk_rank::max, threads), ids);
  }

  /// Adds a batch already scored (see map_scores): the same as update(batch, ids).
  template <class T>
  void update(const map_scores<T>& s, const std::int64_t* ids = nullptr) {
    detail::expect_batch(s.shape(), units(), "unit_activity");
    s.require_finite("unit_activity", rows_, ids);
    const std::size_t nu = units();
    for (std::size_t r = 0; r < s.rows(); ++r)
      for (std::size_t u = 0; u < nu; ++u) {
        const double v = s.max(r, u);
        above_[u] += v > t_[u];
        max_[u] = std::max(max_[u], v);
      }
    rows_ += s.rows();
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

// SPDX-License-Identifier: MIT
// Cue-conflict shape bias, Geirhos et al.'s procedure (paper-spec §2.3):
//   1. map each row of fine-class probabilities (e.g. the 1000-way softmax) to coarse categories
//      (e.g. Geirhos' 16) by the MEAN probability of each category's member classes;
//   2. the decision is the argmax over categories (the lowest index wins a tie);
//   3. stimuli whose shape and texture category are the same are excluded;
//   4. shape bias = #(decision = shape) / (#(decision = shape) + #(decision = texture)); decisions
//      that match neither are counted but left out of the ratio.
// The input is probabilities: softmax_rows turns logits into them.
#pragma once

#include <xtensor/xarray.hpp>
#include <xtensor/xbuilder.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "shapebias/stats/detail.hpp"
#include "shapebias/stats/state.hpp"

namespace shapebias::stats {

/// Coarse categories, each the set of fine-class indices (e.g. ImageNet classes) it stands for.
struct coarse_mapping {
  std::vector<std::string> categories;
  std::vector<std::vector<std::size_t>> members;  // per category, fine-class indices

  /// Throws std::invalid_argument, naming the category (and the index), when: there are no
  /// categories; categories and members differ in length; a name is empty, holds a newline or is
  /// repeated; a category has no members or lists one twice; a member index is >= fine_classes.
  void check(std::size_t fine_classes) const {
    if (categories.empty()) throw std::invalid_argument("coarse mapping: no categories");
    if (members.size() != categories.size())
      throw std::invalid_argument("coarse mapping: " + std::to_string(categories.size()) + " categories but " +
                                  std::to_string(members.size()) + " member lists");
    std::set<std::string> seen;
    for (std::size_t c = 0; c < categories.size(); ++c) {
      const std::string& name = categories[c];
      if (name.empty()) throw std::invalid_argument("coarse mapping: category " + std::to_string(c) + " has no name");
      if (name.find('\n') != std::string::npos)
        throw std::invalid_argument("coarse mapping: category '" + name + "' has a newline in its name");
      if (!seen.insert(name).second) throw std::invalid_argument("coarse mapping: category '" + name + "' appears twice");
      if (members[c].empty()) throw std::invalid_argument("coarse mapping: category '" + name + "' has no members");
      std::vector<std::size_t> sorted = members[c];
      std::sort(sorted.begin(), sorted.end());
      if (sorted.back() >= fine_classes)
        throw std::invalid_argument("coarse mapping: category '" + name + "' lists fine class " +
                                    std::to_string(sorted.back()) + ", outside [0, " + std::to_string(fine_classes) + ")");
      const auto twice = std::adjacent_find(sorted.begin(), sorted.end());
      if (twice != sorted.end())
        throw std::invalid_argument("coarse mapping: category '" + name + "' lists fine class " +
                                    std::to_string(*twice) + " twice");
    }
  }

  /// The index of the category called `name`, if there is one.
  std::optional<std::size_t> find(const std::string& name) const {
    const auto it = std::find(categories.begin(), categories.end(), name);
    if (it == categories.end()) return std::nullopt;
    return static_cast<std::size_t>(it - categories.begin());
  }

  bool operator==(const coarse_mapping&) const = default;
};

namespace detail {

template <class T>
void coarse_scores_into(const T* probs, const coarse_mapping& m, double* out) noexcept {
  for (std::size_t c = 0; c < m.members.size(); ++c) {
    double sum = 0;
    for (std::size_t j : m.members[c]) sum += static_cast<double>(probs[j]);
    out[c] = sum / static_cast<double>(m.members[c].size());
  }
}

/// The first index of the largest value; n if any value is NaN.
inline std::size_t argmax_first(const double* v, std::size_t n) noexcept {
  std::size_t best = 0;
  for (std::size_t c = 0; c < n; ++c) {
    if (std::isnan(v[c])) return n;
    if (v[c] > v[best]) best = c;
  }
  return best;
}

}  // namespace detail

/// Per category, the mean of the probabilities of its member classes, for one row of
/// `fine_classes` probabilities. Checks the mapping first (coarse_mapping::check).
template <class T>
std::vector<double> coarse_scores(const T* probs, std::size_t fine_classes, const coarse_mapping& m) {
  m.check(fine_classes);
  std::vector<double> out(m.categories.size());
  detail::coarse_scores_into(probs, m, out.data());
  return out;
}

/// The category with the highest coarse score (the lowest index wins a tie). Throws
/// std::domain_error when a score is NaN.
template <class T>
std::size_t coarse_decision(const T* probs, std::size_t fine_classes, const coarse_mapping& m) {
  const auto s = coarse_scores(probs, fine_classes, m);
  const std::size_t d = detail::argmax_first(s.data(), s.size());
  if (d == s.size()) throw std::domain_error("coarse decision: the probabilities hold NaN");
  return d;
}

/// Softmax of each row of a 2-D array of logits (float or double), in double: exp(x − max) / Σ,
/// so large logits (1000, 1001) do not overflow. A row holding NaN or +Inf, or only −Inf, gives
/// NaN (which shape_bias_accumulator::update refuses).
template <class E>
xt::xarray<double> softmax_rows(const xt::xexpression<E>& logits) {
  const detail::row_major_block<double> x(logits);
  const auto& s = x.shape();
  if (s.size() != 2)
    throw std::invalid_argument("softmax_rows expects a 2-D array of logits, got " + std::to_string(s.size()) + " axes");
  const std::size_t b = s[0], k = s[1];
  xt::xarray<double> out = xt::zeros<double>({b, k});
  for (std::size_t i = 0; i < b; ++i) {
    const double* row = x.data() + i * k;
    double* o = out.data() + i * k;
    double top = -std::numeric_limits<double>::infinity();
    for (std::size_t j = 0; j < k; ++j) top = std::isnan(row[j]) || row[j] > top ? row[j] : top;
    if (std::isnan(top)) {
      std::fill(o, o + k, std::numeric_limits<double>::quiet_NaN());
      continue;
    }
    double sum = 0;
    for (std::size_t j = 0; j < k; ++j) sum += o[j] = std::exp(row[j] - top);
    for (std::size_t j = 0; j < k; ++j) o[j] /= sum;
  }
  return out;
}

/// Streaming cue-conflict decisions: totals and, per shape category, the number of shape, texture
/// and neither decisions and of excluded rows (shape category == texture category). Mergeable.
class shape_bias_accumulator {
 public:
  /// Checks the mapping's structure (coarse_mapping::check, without the fine-class bound, which is
  /// checked on the first update).
  explicit shape_bias_accumulator(coarse_mapping m)
      : map_(std::move(m)), shape_(map_.categories.size(), 0), texture_(shape_.size(), 0), neither_(shape_.size(), 0),
        excluded_(shape_.size(), 0) {
    map_.check(std::numeric_limits<std::size_t>::max());
  }

  /// Adds a batch of probabilities [B, fine] (float or double; softmax already applied) with each
  /// row's shape and texture category (indices into the mapping). Every batch of a stream has the
  /// same fine width. Throws std::invalid_argument for a wrong shape, a category index out of range
  /// or a row that does not look like probabilities (a value outside [0, 1] or a sum more than
  /// 0.01 away from 1: logits passed by mistake), std::domain_error for a row holding NaN; errors
  /// name the row (counted over the stream) and are raised before anything changes.
  template <class E>
  void update(const xt::xexpression<E>& probs, const std::size_t* shape_cat, const std::size_t* texture_cat) {
    using T = std::conditional_t<std::is_same_v<std::remove_cv_t<typename E::value_type>, float>, float, double>;
    const detail::row_major_block<T> x(probs);
    const auto& s = x.shape();
    if (s.size() != 2 || s[1] == 0)
      throw std::invalid_argument("shape bias expects probabilities [B, fine classes], got " + detail::shape_string(s));
    const std::size_t b = s[0], fine = s[1], n = categories();
    if (fine_ && fine != fine_)
      throw std::invalid_argument("shape bias: a batch of " + std::to_string(fine) + " fine classes after batches of " +
                                  std::to_string(fine_));
    if (!fine_) map_.check(fine);
    if (b > 0 && (!shape_cat || !texture_cat))
      throw std::invalid_argument("shape bias: a batch of " + std::to_string(b) + " rows without shape and texture categories");
    std::vector<std::size_t> decision(b);
    std::vector<double> scores(n);
    auto row_name = [&](std::size_t i) { return "shape bias: row " + std::to_string(rows_ + i); };
    for (std::size_t i = 0; i < b; ++i) {
      if (shape_cat[i] >= n || texture_cat[i] >= n)
        throw std::invalid_argument(row_name(i) + ": shape category " + std::to_string(shape_cat[i]) +
                                    " or texture category " + std::to_string(texture_cat[i]) + " is outside [0, " +
                                    std::to_string(n) + ")");
      const T* row = x.data() + i * fine;
      double sum = 0;
      for (std::size_t j = 0; j < fine; ++j) {
        const double v = static_cast<double>(row[j]);
        if (std::isnan(v)) throw std::domain_error(row_name(i) + ": the probabilities hold NaN");
        if (!(v >= 0 && v <= 1))
          throw std::invalid_argument(row_name(i) + ": value " + std::to_string(v) + " of fine class " + std::to_string(j) +
                                      " is not a probability (pass logits through softmax_rows)");
        sum += v;
      }
      if (std::abs(sum - 1.0) > 0.01)
        throw std::invalid_argument(row_name(i) + ": the probabilities sum to " + std::to_string(sum) +
                                    ", not 1 (pass logits through softmax_rows)");
      detail::coarse_scores_into(row, map_, scores.data());
      decision[i] = detail::argmax_first(scores.data(), n);
    }
    fine_ = fine;  // only once the batch is accepted
    for (std::size_t i = 0; i < b; ++i) {
      const std::size_t sc = shape_cat[i], tc = texture_cat[i], d = decision[i];
      if (sc == tc) ++excluded_[sc];
      else if (d == sc) ++shape_[sc];
      else if (d == tc) ++texture_[sc];
      else ++neither_[sc];
    }
    rows_ += b;
  }

  /// Adds another accumulator's rows. Throws std::invalid_argument when the mappings (names,
  /// order and members) or the fine widths differ.
  void merge(const shape_bias_accumulator& o) {
    if (!(o.map_ == map_) || (o.fine_ && fine_ && o.fine_ != fine_))
      throw std::invalid_argument("cannot merge shape-bias accumulators with different coarse mappings or fine classes");
    for (std::size_t c = 0; c < categories(); ++c) {
      shape_[c] += o.shape_[c];
      texture_[c] += o.texture_[c];
      neither_[c] += o.neither_[c];
      excluded_[c] += o.excluded_[c];
    }
    if (!fine_) fine_ = o.fine_;
    rows_ += o.rows_;
  }

  const coarse_mapping& mapping() const noexcept { return map_; }
  std::size_t categories() const noexcept { return map_.categories.size(); }
  /// The fine width of the stream; 0 before the first batch.
  std::size_t fine_classes() const noexcept { return fine_; }
  std::uint64_t rows() const noexcept { return rows_; }

  std::uint64_t shape_decisions() const noexcept { return total(shape_); }
  std::uint64_t texture_decisions() const noexcept { return total(texture_); }
  std::uint64_t neither() const noexcept { return total(neither_); }
  std::uint64_t excluded() const noexcept { return total(excluded_); }
  /// shape / (shape + texture) decisions; NaN when both are 0.
  double shape_bias() const noexcept { return ratio(shape_decisions(), texture_decisions()); }

  // The same, over the rows whose shape category is c.
  std::uint64_t shape_decisions(std::size_t c) const { return shape_.at(c); }
  std::uint64_t texture_decisions(std::size_t c) const { return texture_.at(c); }
  std::uint64_t neither(std::size_t c) const { return neither_.at(c); }
  std::uint64_t excluded(std::size_t c) const { return excluded_.at(c); }
  double shape_bias(std::size_t c) const { return ratio(shape_.at(c), texture_.at(c)); }

  /// The state: category names joined by newlines in text "category_names"; members as one array
  /// "members" (all categories' indices in order) and "member_count" (per category); and the
  /// per-category counts.
  state save() const {
    state s;
    s.kind = "shape_bias";
    const std::size_t n = categories();
    s.params = {{"categories", static_cast<double>(n)}, {"fine_classes", static_cast<double>(fine_)},
                {"rows", static_cast<double>(rows_)}};
    std::string names;
    for (std::size_t c = 0; c < n; ++c) names += (c ? "\n" : "") + map_.categories[c];
    s.text = {{"category_names", names}};  // not "categories": a text and a number share HDF5's attribute names
    std::size_t all = 0;
    for (const auto& m : map_.members) all += m.size();
    xt::xarray<double> members = xt::zeros<double>({all}), count = xt::zeros<double>({n});
    std::size_t k = 0;
    for (std::size_t c = 0; c < n; ++c) {
      count(c) = static_cast<double>(map_.members[c].size());
      for (std::size_t j : map_.members[c]) members(k++) = static_cast<double>(j);
    }
    s.arrays = {{"members", members}, {"member_count", count}, {"shape", counts_array(shape_)},
                {"texture", counts_array(texture_)}, {"neither", counts_array(neither_)},
                {"excluded", counts_array(excluded_)}};
    return s;
  }

  static shape_bias_accumulator load(const state& s) {
    s.expect_kind("shape_bias");
    const auto n = static_cast<std::size_t>(s.param("categories"));
    coarse_mapping m;
    const std::string& names = s.choice("category_names");
    for (std::size_t start = 0;;) {
      const std::size_t end = names.find('\n', start);
      m.categories.push_back(names.substr(start, end == std::string::npos ? std::string::npos : end - start));
      if (end == std::string::npos) break;
      start = end + 1;
    }
    const auto &members = s.array("members"), &count = s.array("member_count");
    if (m.categories.size() != n || count.size() != n)
      throw std::invalid_argument("shape_bias state: the category names or member counts do not number " + std::to_string(n));
    std::size_t k = 0;
    for (std::size_t c = 0; c < n; ++c) {
      const auto len = static_cast<std::size_t>(count(c));
      if (k + len > members.size()) throw std::invalid_argument("shape_bias state: fewer members than member counts say");
      m.members.emplace_back();
      for (std::size_t j = 0; j < len; ++j) m.members.back().push_back(static_cast<std::size_t>(members(k++)));
    }
    if (k != members.size()) throw std::invalid_argument("shape_bias state: more members than member counts say");
    shape_bias_accumulator a(std::move(m));
    a.fine_ = static_cast<std::size_t>(s.param("fine_classes"));
    if (a.fine_) a.map_.check(a.fine_);
    a.rows_ = static_cast<std::uint64_t>(s.param("rows"));
    a.shape_ = counts_vector(s, "shape", n);
    a.texture_ = counts_vector(s, "texture", n);
    a.neither_ = counts_vector(s, "neither", n);
    a.excluded_ = counts_vector(s, "excluded", n);
    return a;
  }

 private:
  static std::uint64_t total(const std::vector<std::uint64_t>& v) noexcept {
    std::uint64_t t = 0;
    for (auto x : v) t += x;
    return t;
  }
  static double ratio(std::uint64_t shape, std::uint64_t texture) noexcept {
    return shape + texture ? static_cast<double>(shape) / static_cast<double>(shape + texture)
                           : std::numeric_limits<double>::quiet_NaN();
  }
  static xt::xarray<double> counts_array(const std::vector<std::uint64_t>& v) {
    xt::xarray<double> a = xt::zeros<double>({v.size()});
    for (std::size_t c = 0; c < v.size(); ++c) a(c) = static_cast<double>(v[c]);
    return a;
  }
  static std::vector<std::uint64_t> counts_vector(const state& s, const std::string& name, std::size_t n) {
    const auto& a = s.array(name);
    if (a.size() != n) throw std::invalid_argument("shape_bias state: array '" + name + "' does not have one value per category");
    std::vector<std::uint64_t> v(n);
    for (std::size_t c = 0; c < n; ++c) v[c] = static_cast<std::uint64_t>(a(c));
    return v;
  }
  coarse_mapping map_;
  std::vector<std::uint64_t> shape_, texture_, neither_, excluded_;  // per shape category
  std::size_t fine_ = 0;
  std::uint64_t rows_ = 0;
};

}  // namespace shapebias::stats

// SPDX-License-Identifier: MIT
// Top-1 / top-k accuracy over batches of scores (logits or probabilities), streamed and mergeable,
// and the ImageNet-CL intersection of correctly classified ids (paper-spec §2.1).
//
// Ties: a row's label counts as in the top k when fewer than k scores of the row are strictly
// greater than the label's score. A label tied with other classes at the k-th place therefore
// counts as correct (for top-1: a label that shares the maximum score is correct), whatever order
// a sort or torch.topk would put the tied classes in.
#pragma once

#include <xtensor/xarray.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "shapebias/stats/detail.hpp"
#include "shapebias/stats/state.hpp"

namespace shapebias::stats {

/// Streaming top-1 and top-k accuracy over batches [B, classes] of scores with one label per row.
/// Memory O(1) whatever the number of rows.
class topk_accuracy {
 public:
  /// Throws std::invalid_argument unless 1 <= k <= classes.
  explicit topk_accuracy(std::size_t classes, std::size_t k = 5) : classes_(classes), k_(k) {
    if (classes == 0 || k == 0 || k > classes)
      throw std::invalid_argument("top-k accuracy needs 1 <= k <= classes, got k = " + std::to_string(k) +
                                  " with " + std::to_string(classes) + " classes");
  }

  /// Adds a batch of scores [B, classes] (float or double) and its B labels in [0, classes).
  /// When given, correct1_out and correctk_out (B values each) receive 1 for a row whose label is
  /// in the top 1 / top k (ties as in the file comment), else 0. Throws std::invalid_argument for a
  /// wrong shape or a label outside [0, classes), std::domain_error for a row holding NaN; errors
  /// name the row (counted over the stream) and are raised before anything changes (neither the
  /// counts nor the output flags).
  template <class E>
  void update(const xt::xexpression<E>& scores, const std::int64_t* labels, std::uint8_t* correct1_out = nullptr,
              std::uint8_t* correctk_out = nullptr) {
    using T = std::conditional_t<std::is_same_v<std::remove_cv_t<typename E::value_type>, float>, float, double>;
    const detail::row_major_block<T> x(scores);
    const auto& s = x.shape();
    if (s.size() != 2 || s[1] != classes_)
      throw std::invalid_argument("top-k accuracy expects scores [B, " + std::to_string(classes_) + "], got " +
                                  detail::shape_string(s));
    const std::size_t b = s[0];
    if (b > 0 && !labels) throw std::invalid_argument("top-k accuracy: a batch of " + std::to_string(b) + " rows without labels");
    for (std::size_t i = 0; i < b; ++i) {
      if (labels[i] < 0 || static_cast<std::uint64_t>(labels[i]) >= classes_)
        throw std::invalid_argument("top-k accuracy: row " + std::to_string(count_ + i) + ": label " +
                                    std::to_string(labels[i]) + " is outside [0, " + std::to_string(classes_) + ")");
      const T* row = x.data() + i * classes_;
      if (std::any_of(row, row + classes_, [](T v) { return std::isnan(v); }))
        throw std::domain_error("top-k accuracy: row " + std::to_string(count_ + i) + ": the scores hold NaN");
    }
    for (std::size_t i = 0; i < b; ++i) {
      const T* row = x.data() + i * classes_;
      const T mine = row[labels[i]];
      std::size_t greater = 0;
      for (std::size_t j = 0; j < classes_; ++j) greater += row[j] > mine;
      const bool c1 = greater < 1, ck = greater < k_;
      correct1_ += c1;
      correctk_ += ck;
      if (correct1_out) correct1_out[i] = c1;
      if (correctk_out) correctk_out[i] = ck;
    }
    count_ += b;
  }

  /// Adds another accumulator's rows. Throws std::invalid_argument when classes or k differ.
  void merge(const topk_accuracy& o) {
    if (o.classes_ != classes_ || o.k_ != k_)
      throw std::invalid_argument("cannot merge top-" + std::to_string(o.k_) + " accuracy over " +
                                  std::to_string(o.classes_) + " classes into top-" + std::to_string(k_) + " over " +
                                  std::to_string(classes_));
    count_ += o.count_;
    correct1_ += o.correct1_;
    correctk_ += o.correctk_;
  }

  std::size_t classes() const noexcept { return classes_; }
  std::size_t k() const noexcept { return k_; }
  std::uint64_t count() const noexcept { return count_; }
  std::uint64_t correct1() const noexcept { return correct1_; }
  std::uint64_t correctk() const noexcept { return correctk_; }
  /// The fraction of rows correct at top 1; NaN with no rows.
  double top1() const noexcept { return fraction(correct1_); }
  /// The fraction of rows correct at top k; NaN with no rows.
  double topk() const noexcept { return fraction(correctk_); }

  state save() const {
    state s;
    s.kind = "topk_accuracy";
    s.params = {{"classes", static_cast<double>(classes_)}, {"k", static_cast<double>(k_)},
                {"count", static_cast<double>(count_)}, {"correct1", static_cast<double>(correct1_)},
                {"correctk", static_cast<double>(correctk_)}};
    return s;
  }

  static topk_accuracy load(const state& s) {
    s.expect_kind("topk_accuracy");
    topk_accuracy a(static_cast<std::size_t>(s.param("classes")), static_cast<std::size_t>(s.param("k")));
    const double n = s.param("count"), c1 = s.param("correct1"), ck = s.param("correctk");
    if (!(0 <= c1 && c1 <= ck && ck <= n))
      throw std::invalid_argument("topk_accuracy state: needs 0 <= correct1 <= correctk <= count");
    a.count_ = static_cast<std::uint64_t>(n);
    a.correct1_ = static_cast<std::uint64_t>(c1);
    a.correctk_ = static_cast<std::uint64_t>(ck);
    return a;
  }

 private:
  double fraction(std::uint64_t c) const noexcept {
    return count_ ? static_cast<double>(c) / static_cast<double>(count_) : std::numeric_limits<double>::quiet_NaN();
  }
  std::size_t classes_, k_;
  std::uint64_t count_ = 0, correct1_ = 0, correctk_ = 0;
};

/// The ids present in every list, sorted and without repeats: ImageNet-CL (paper-spec §2.1) from
/// the correctly classified ids of each network. The lists may be unsorted and hold repeats. No
/// lists give an empty result (there is no universe to intersect from).
inline std::vector<std::int64_t> intersect_correct(const std::vector<std::vector<std::int64_t>>& correct_ids) {
  auto sorted = [](const std::vector<std::int64_t>& v) {
    std::vector<std::int64_t> r = v;
    std::sort(r.begin(), r.end());
    r.erase(std::unique(r.begin(), r.end()), r.end());
    return r;
  };
  if (correct_ids.empty()) return {};
  std::vector<std::int64_t> out = sorted(correct_ids[0]), next;
  for (std::size_t l = 1; l < correct_ids.size() && !out.empty(); ++l) {
    const auto other = sorted(correct_ids[l]);
    next.clear();
    std::set_intersection(out.begin(), out.end(), other.begin(), other.end(), std::back_inserter(next));
    out.swap(next);
  }
  return out;
}

}  // namespace shapebias::stats

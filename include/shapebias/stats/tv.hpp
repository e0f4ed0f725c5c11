// SPDX-License-Identifier: MIT
// Total variation (paper-spec §3.1) of 2-D maps, and a streaming per-channel accumulator of it.
//
//   TV(X) = Σ_{i<H-1, j} |X[i,j] − X[i+1,j]|^β + Σ_{i, j<W-1} |X[i,j] − X[i,j+1]|^β
//
// the anisotropic form, unnormalised by default. Normalisations: "pixel" divides by H·W, "l1"
// divides by Σ|X| (a map that is all zero has TV 0 under every normalisation).
#pragma once

#include <xtensor/xadapt.hpp>
#include <xtensor/xarray.hpp>
#include <xtensor/xbuilder.hpp>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "shapebias/stats/detail.hpp"
#include "shapebias/stats/moments.hpp"
#include "shapebias/stats/state.hpp"

namespace shapebias::stats {

enum class tv_norm { none, pixel, l1 };

inline std::string to_string(tv_norm n) {
  switch (n) {
    case tv_norm::pixel: return "pixel";
    case tv_norm::l1: return "l1";
    default: return "none";
  }
}
inline tv_norm parse_tv_norm(const std::string& s) {
  if (s == "none") return tv_norm::none;
  if (s == "pixel") return tv_norm::pixel;
  if (s == "l1") return tv_norm::l1;
  throw std::invalid_argument("TV normalisation '" + s + "' is not one of none, pixel, l1");
}

struct tv_params {
  double beta = 1.0;  // exponent of each absolute difference; > 0
  tv_norm norm = tv_norm::none;

  void check() const {
    if (!(beta > 0) || !std::isfinite(beta)) throw std::invalid_argument("TV exponent beta must be a positive number");
  }
};

namespace detail {

/// Σ |a[j] − b[j]| · m[j] over n values (m: nullptr for all ones; otherwise 0 or 1 per position).
/// Written with GCC/Clang vector types, four accumulators of 16 bytes: compilers do not vectorise
/// a floating-point sum on their own (it would reorder it). Each block of 1024 values is flushed
/// into a double, so rounding stays that of short sums.
template <class T>
double abs_diff_sum(const T* a, const T* b, const T* m, std::size_t n) noexcept {
  using I = std::conditional_t<sizeof(T) == 4, std::int32_t, std::int64_t>;
  typedef T V __attribute__((vector_size(16)));
  typedef I VI __attribute__((vector_size(16)));
  constexpr std::size_t w = 16 / sizeof(T), step = 4 * w, block = 1024;
  const VI abs_mask = (VI{} + ~I(0)) & ~(I(1) << (8 * sizeof(T) - 1));  // every bit but the sign
  auto load = [](const T* p) {
    V v;
    std::memcpy(&v, p, sizeof v);
    return v;
  };
  auto term = [&](std::size_t j) {
    V d = (V)((VI)(load(a + j) - load(b + j)) & abs_mask);
    return m ? d * load(m + j) : d;
  };
  double total = 0;
  std::size_t j = 0;
  while (j + step <= n) {
    V s0{}, s1{}, s2{}, s3{};
    const std::size_t end = j + std::min(block, (n - j) / step * step);
    for (; j < end; j += step) {
      s0 += term(j);
      s1 += term(j + w);
      s2 += term(j + 2 * w);
      s3 += term(j + 3 * w);
    }
    const V s = (s0 + s1) + (s2 + s3);
    for (std::size_t k = 0; k < w; ++k) total += static_cast<double>(s[k]);
  }
  for (; j < n; ++j) total += std::abs(static_cast<double>(a[j]) - static_cast<double>(b[j])) * (m ? double(m[j]) : 1.0);
  return total;
}

template <class T>
double pow_diff_sum(const T* a, const T* b, const T* m, std::size_t n, double beta) noexcept {
  double total = 0;
  for (std::size_t j = 0; j < n; ++j)
    if (!m || m[j] != 0) total += std::pow(std::abs(static_cast<double>(a[j]) - static_cast<double>(b[j])), beta);
  return total;
}

/// The mask of horizontal neighbours in a row-major h × w map read as one line of h·w − 1
/// differences x[k+1] − x[k]: 0 where k ends a row (the difference wraps to the next row), else 1.
/// One sweep over the whole map vectorises where short rows would not.
template <class T>
std::vector<T> row_mask(std::size_t h, std::size_t w) {
  std::vector<T> m(h * w > 0 ? h * w - 1 : 0, T(1));
  for (std::size_t i = 1; i < h; ++i) m[i * w - 1] = T(0);
  return m;
}

/// The TV of one row-major h × w map; `mask` = row_mask(h, w).
template <class T>
double tv_map(const T* x, std::size_t h, std::size_t w, const T* mask, const tv_params& p) noexcept {
  // A 1x1 map has no differences: let NaN or Inf show in its TV as it does for any larger map.
  if (h * w == 1 && !std::isfinite(static_cast<double>(x[0]))) return std::numeric_limits<double>::quiet_NaN();
  double tv = 0;
  const bool l1 = p.beta == 1.0;
  if (h > 1) tv += l1 ? abs_diff_sum<T>(x, x + w, nullptr, (h - 1) * w) : pow_diff_sum<T>(x, x + w, nullptr, (h - 1) * w, p.beta);
  if (w > 1) tv += l1 ? abs_diff_sum(x + 1, x, mask, h * w - 1) : pow_diff_sum(x + 1, x, mask, h * w - 1, p.beta);
  switch (p.norm) {
    case tv_norm::pixel: return tv / static_cast<double>(h * w);
    case tv_norm::l1: {
      double mass = 0;
      for (std::size_t k = 0; k < h * w; ++k) mass += std::abs(static_cast<double>(x[k]));
      return mass > 0 ? tv / mass : (std::isfinite(mass) ? 0.0 : std::numeric_limits<double>::quiet_NaN());
    }
    default: return tv;
  }
}

}  // namespace detail

/// The TV of every 2-D map over the last two axes of `e` (float or double), as an array of the
/// leading axes' shape (0-d for a single map). Maps are computed on up to `threads` threads; the
/// values do not depend on the thread count.
template <class E>
xt::xarray<double> total_variation(const xt::xexpression<E>& e, const tv_params& p = {}, unsigned threads = 1) {
  p.check();
  using T = std::conditional_t<std::is_same_v<std::remove_cv_t<typename E::value_type>, float>, float, double>;
  const detail::row_major_block<T> x(e);
  const auto& s = x.shape();
  if (s.size() < 2) throw std::invalid_argument("total_variation needs at least 2 axes, got " + std::to_string(s.size()));
  const std::size_t h = s[s.size() - 2], w = s[s.size() - 1];
  std::vector<std::size_t> lead(s.begin(), s.end() - 2);
  xt::xarray<double> out = xt::zeros<double>(lead);
  const std::size_t maps = out.size();
  const auto mask = detail::row_mask<T>(h, w);
  detail::parallel_for(maps, threads, [&](std::size_t b, std::size_t end) {
    for (std::size_t m = b; m < end; ++m) out.data()[m] = detail::tv_map(x.data() + m * h * w, h, w, mask.data(), p);
  });
  return out;
}

/// What an accumulator does with a map that holds NaN or Inf.
enum class nonfinite_policy { error, skip };

/// A map with NaN or Inf, under nonfinite_policy::error. Names the row (and input id) and channel.
class nonfinite_error : public std::domain_error {
 public:
  nonfinite_error(std::uint64_t row_, std::int64_t id_, std::size_t channel_)
      : std::domain_error("row " + std::to_string(row_) + " (input id " + std::to_string(id_) + "), channel " +
                          std::to_string(channel_) + ": the map holds NaN or Inf"),
        row(row_), id(id_), channel(channel_) {}
  std::uint64_t row;
  std::int64_t id;
  std::size_t channel;
};

/// Streaming per-channel TV over images: count, mean and variance of each channel's TV, over
/// batches [B, C, H, W]. Mergeable; memory O(C) whatever the number of images.
class tv_accumulator {
 public:
  tv_accumulator(std::size_t channels, tv_params p = {}, nonfinite_policy policy = nonfinite_policy::error)
      : p_(p), policy_(policy), m_(channels), skipped_(channels, 0) {
    p_.check();
  }

  /// Adds a batch [B, C, H, W]. `ids` (B values), when given, name inputs in error messages.
  /// Every map of a stream must have the same H × W. Throws nonfinite_error under the error
  /// policy, before changing the accumulator.
  template <class E>
  void update(const xt::xexpression<E>& batch, const std::int64_t* ids = nullptr, unsigned threads = 1) {
    const auto& s = batch.derived_cast().shape();
    if (s.size() != 4 || s[1] != channels())
      throw std::invalid_argument("TV update expects [B, " + std::to_string(channels()) + ", H, W], got " +
                                  detail::shape_string({s.begin(), s.end()}));
    const bool first = rows_ == 0 && h_ == 0;
    if (!first && (s[2] != h_ || s[3] != w_))
      throw std::invalid_argument("TV update: maps of " + std::to_string(s[2]) + "x" + std::to_string(s[3]) +
                                  " after maps of " + std::to_string(h_) + "x" + std::to_string(w_));
    const auto tv = total_variation(batch, p_, threads);
    const std::size_t b = s[0], c = s[1];
    for (std::size_t i = 0; i < b * c; ++i)
      if (!std::isfinite(tv.data()[i]) && policy_ == nonfinite_policy::error)
        throw nonfinite_error(rows_ + i / c, ids ? ids[i / c] : static_cast<std::int64_t>(rows_ + i / c), i % c);
    if (first) {  // only once the batch is accepted: a refused first batch fixes no map size
      h_ = s[2];
      w_ = s[3];
    }
    for (std::size_t i = 0; i < b * c; ++i) {
      const double v = tv.data()[i];
      if (std::isfinite(v)) m_.add(i % c, v);
      else ++skipped_[i % c];
    }
    rows_ += b;
  }

  /// Adds another accumulator's images. Throws std::invalid_argument when channels, map size,
  /// β, normalisation or policy differ.
  void merge(const tv_accumulator& o) {
    if (o.channels() != channels() || o.p_.beta != p_.beta || o.p_.norm != p_.norm || o.policy_ != policy_ ||
        (o.rows_ && rows_ && (o.h_ != h_ || o.w_ != w_)))
      throw std::invalid_argument("cannot merge TV accumulators with different channels, map size or parameters");
    m_.merge(o.m_);
    for (std::size_t c = 0; c < channels(); ++c) skipped_[c] += o.skipped_[c];
    if (!rows_) {
      h_ = o.h_;
      w_ = o.w_;
    }
    rows_ += o.rows_;
  }

  std::size_t channels() const noexcept { return m_.channels(); }
  std::uint64_t rows() const noexcept { return rows_; }
  std::size_t height() const noexcept { return h_; }
  std::size_t width() const noexcept { return w_; }
  const tv_params& params() const noexcept { return p_; }
  nonfinite_policy policy() const noexcept { return policy_; }
  /// Per channel: count, mean and sample variance of the maps' TV.
  const channel_moments& moments() const noexcept { return m_; }
  /// Per channel: maps skipped because they held NaN or Inf (skip policy).
  std::uint64_t skipped(std::size_t c) const { return skipped_.at(c); }

  state save() const {
    state s;
    s.kind = "tv";
    s.params = {{"beta", p_.beta}, {"channels", static_cast<double>(channels())}, {"rows", static_cast<double>(rows_)},
                {"height", static_cast<double>(h_)}, {"width", static_cast<double>(w_)}};
    s.text = {{"norm", to_string(p_.norm)}, {"nonfinite", policy_ == nonfinite_policy::skip ? "skip" : "error"}};
    const std::size_t c = channels();
    xt::xarray<double> sk = xt::zeros<double>({c});
    for (std::size_t k = 0; k < c; ++k) sk(k) = static_cast<double>(skipped_[k]);
    s.arrays["skipped"] = sk;
    m_.save_to(s, "");
    return s;
  }

  static tv_accumulator load(const state& s) {
    s.expect_kind("tv");
    const auto c = static_cast<std::size_t>(s.param("channels"));
    tv_params p{s.param("beta"), parse_tv_norm(s.choice("norm"))};
    tv_accumulator a(c, p, s.choice("nonfinite") == "skip" ? nonfinite_policy::skip : nonfinite_policy::error);
    const auto& sk = s.array("skipped");
    if (sk.size() != c) throw std::invalid_argument("tv state: 'skipped' does not have one value per channel");
    for (std::size_t k = 0; k < c; ++k) a.skipped_[k] = static_cast<std::uint64_t>(sk(k));
    a.m_ = channel_moments::load_from(s, "", c);
    a.rows_ = static_cast<std::uint64_t>(s.param("rows"));
    a.h_ = static_cast<std::size_t>(s.param("height"));
    a.w_ = static_cast<std::size_t>(s.param("width"));
    return a;
  }

 private:
  tv_params p_;
  nonfinite_policy policy_;
  channel_moments m_;
  std::vector<std::uint64_t> skipped_;
  std::uint64_t rows_ = 0;
  std::size_t h_ = 0, w_ = 0;
};

}  // namespace shapebias::stats

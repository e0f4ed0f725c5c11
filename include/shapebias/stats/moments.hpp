// SPDX-License-Identifier: MIT
// Streaming count, mean and variance of one value per channel, with an exact-order-independent
// merge (Chan, Golub & LeVeque's pairwise update of Welford's sums).
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include <xtensor/xadapt.hpp>
#include <xtensor/xarray.hpp>
#include <xtensor/xbuilder.hpp>

#include "shapebias/stats/state.hpp"

namespace shapebias::stats {

class channel_moments {
 public:
  channel_moments() = default;
  explicit channel_moments(std::size_t channels) : n_(channels, 0), mean_(channels, 0.0), m2_(channels, 0.0) {}

  std::size_t channels() const noexcept { return n_.size(); }

  /// Adds one value to channel c (Welford).
  void add(std::size_t c, double v) noexcept {
    const double d = v - mean_[c];
    n_[c] += 1;
    mean_[c] += d / static_cast<double>(n_[c]);
    m2_[c] += d * (v - mean_[c]);
  }

  /// Combines another accumulator over other values of the same channels. The result equals one
  /// pass over all values up to floating-point rounding (exactly for the counts).
  void merge(const channel_moments& o) {
    if (o.channels() != channels())
      throw std::invalid_argument("cannot merge moments of " + std::to_string(o.channels()) + " channels into " +
                                  std::to_string(channels()));
    for (std::size_t c = 0; c < channels(); ++c) {
      if (o.n_[c] == 0) continue;
      const double na = static_cast<double>(n_[c]), nb = static_cast<double>(o.n_[c]), n = na + nb;
      const double d = o.mean_[c] - mean_[c];
      mean_[c] += d * nb / n;
      m2_[c] += o.m2_[c] + d * d * na * nb / n;
      n_[c] += o.n_[c];
    }
  }

  std::uint64_t count(std::size_t c) const { return n_.at(c); }
  /// The mean of channel c; NaN when it has no values.
  double mean(std::size_t c) const { return n_.at(c) ? mean_[c] : std::numeric_limits<double>::quiet_NaN(); }
  /// The sample variance (divisor n − 1) of channel c; NaN with fewer than two values.
  double variance(std::size_t c) const {
    return n_.at(c) > 1 ? m2_[c] / static_cast<double>(n_[c] - 1) : std::numeric_limits<double>::quiet_NaN();
  }

  /// Puts the state into `s` as the arrays PREFIXcount, PREFIXmean and PREFIXm2.
  void save_to(state& s, const std::string& prefix) const {
    const std::size_t c = channels();
    xt::xarray<double> n = xt::zeros<double>({c});
    for (std::size_t k = 0; k < c; ++k) n(k) = static_cast<double>(n_[k]);
    s.arrays[prefix + "count"] = n;
    s.arrays[prefix + "mean"] = xt::adapt(mean_, {c});
    s.arrays[prefix + "m2"] = xt::adapt(m2_, {c});
  }
  /// The moments saved by save_to; throws std::invalid_argument unless they have `channels` values.
  static channel_moments load_from(const state& s, const std::string& prefix, std::size_t channels) {
    const auto &n = s.array(prefix + "count"), &mean = s.array(prefix + "mean"), &m2 = s.array(prefix + "m2");
    if (n.size() != channels || mean.size() != channels || m2.size() != channels)
      throw std::invalid_argument(s.kind + " state: '" + prefix + "count/mean/m2' do not have one value per channel");
    std::vector<std::uint64_t> counts(channels);
    for (std::size_t k = 0; k < channels; ++k) counts[k] = static_cast<std::uint64_t>(n(k));
    return from_raw(std::move(counts), {mean.begin(), mean.end()}, {m2.begin(), m2.end()});
  }

  // The raw state (see state.hpp).
  const std::vector<std::uint64_t>& counts() const noexcept { return n_; }
  const std::vector<double>& means() const noexcept { return mean_; }
  const std::vector<double>& m2() const noexcept { return m2_; }
  static channel_moments from_raw(std::vector<std::uint64_t> n, std::vector<double> mean, std::vector<double> m2) {
    if (n.size() != mean.size() || n.size() != m2.size())
      throw std::invalid_argument("moments state: count, mean and m2 differ in length");
    channel_moments m;
    m.n_ = std::move(n);
    m.mean_ = std::move(mean);
    m.m2_ = std::move(m2);
    return m;
  }

 private:
  std::vector<std::uint64_t> n_;
  std::vector<double> mean_, m2_;
};

}  // namespace shapebias::stats

// SPDX-License-Identifier: MIT
// Radially averaged power spectra of 2-D maps (filters, activation maps) and the fraction of their
// energy above a cutoff frequency, with FFTW; and a streaming per-channel accumulator of both.
//
// For an H × W map X with 2-D DFT F, the power of frequency (ky, kx) is |F|² / (H·W), so the
// powers sum to Σ X² (Parseval). Its radial frequency is r = √((ky'/H)² + (kx'/W)²) in cycles per
// pixel, where ky', kx' are the signed indices (|ky'| ≤ H/2): r runs from 0 (the mean) to √2 / 2.
// Ring b collects the frequencies with round(r · max(H, W)) = b; the profile is the mean power per
// ring. The high-frequency fraction is the power at r > cutoff over the power at r > 0 (the mean,
// r = 0, is left out of both; a constant map has fraction 0).
//
// Needs FFTW 3 (Debian: libfftw3-dev; link fftw3). Plans are made under a lock (FFTW's planner is
// not thread-safe); executing them is, so maps are transformed on several threads.
#pragma once

#include <fftw3.h>

#include <xtensor/xarray.hpp>
#include <xtensor/xbuilder.hpp>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "shapebias/stats/detail.hpp"
#include "shapebias/stats/moments.hpp"
#include "shapebias/stats/state.hpp"

namespace shapebias::stats {

namespace detail {
inline std::mutex& fftw_planner_lock() {
  static std::mutex m;
  return m;
}
struct fftw_free_deleter {
  void operator()(void* p) const noexcept { fftw_free(p); }
};
}  // namespace detail

/// Power summed per ring, plus the high-frequency and non-constant totals, of one or more maps.
struct power_sums {
  std::vector<double> ring;
  double high = 0;  // power at r > cutoff
  double ac = 0;    // power at r > 0

  /// high / ac, or 0 when the maps are constant.
  double high_fraction() const noexcept { return ac > 0 ? high / ac : 0.0; }
};

/// The transform of one map size, reusable across threads (each thread brings a workspace).
class radial_spectrum {
 public:
  radial_spectrum(std::size_t h, std::size_t w, double cutoff = 0.25) : h_(h), w_(w), wc_(w / 2 + 1), cutoff_(cutoff) {
    if (h == 0 || w == 0) throw std::invalid_argument("radial_spectrum: empty map");
    if (!(cutoff > 0) || !(cutoff < 0.75)) throw std::invalid_argument("spectrum cutoff must be in (0, 0.75) cycles per pixel");
    const std::size_t n = std::max(h, w);
    bins_ = static_cast<std::size_t>(std::lround(std::sqrt(0.5) * static_cast<double>(n))) + 1;
    ring_of_.resize(h * wc_);
    weight_.resize(h * wc_);
    high_.resize(h * wc_);
    ring_count_.assign(bins_, 0.0);
    for (std::size_t ky = 0; ky < h; ++ky) {
      const double fy = (ky <= h / 2 ? double(ky) : double(ky) - double(h)) / double(h);
      for (std::size_t kx = 0; kx < wc_; ++kx) {
        const double fx = double(kx) / double(w);
        const double r = std::sqrt(fy * fy + fx * fx);
        const std::size_t k = ky * wc_ + kx;
        // The half spectrum holds each frequency pair (k, −k) once, except columns 0 and W/2.
        weight_[k] = (kx == 0 || (w % 2 == 0 && kx == w / 2)) ? 1.0 : 2.0;
        ring_of_[k] = static_cast<std::size_t>(std::lround(r * double(n)));
        high_[k] = r > cutoff;
        ring_count_[ring_of_[k]] += weight_[k];
      }
    }
    std::lock_guard lock(detail::fftw_planner_lock());
    workspace probe(*this);
    plan_ = fftw_plan_dft_r2c_2d(static_cast<int>(h), static_cast<int>(w), probe.in.get(), probe.out.get(),
                                 FFTW_ESTIMATE);
    if (!plan_) throw std::runtime_error("FFTW could not plan a " + std::to_string(h) + "x" + std::to_string(w) + " transform");
  }
  radial_spectrum(const radial_spectrum&) = delete;
  radial_spectrum& operator=(const radial_spectrum&) = delete;
  ~radial_spectrum() {
    std::lock_guard lock(detail::fftw_planner_lock());
    fftw_destroy_plan(plan_);
  }

  /// One thread's buffers.
  struct workspace {
    explicit workspace(const radial_spectrum& s)
        : in(static_cast<double*>(fftw_malloc(sizeof(double) * s.h_ * s.w_))),
          out(static_cast<fftw_complex*>(fftw_malloc(sizeof(fftw_complex) * s.h_ * s.wc_))) {
      if (!in || !out) throw std::bad_alloc();
    }
    std::unique_ptr<double, detail::fftw_free_deleter> in;
    std::unique_ptr<fftw_complex, detail::fftw_free_deleter> out;
  };

  std::size_t height() const noexcept { return h_; }
  std::size_t width() const noexcept { return w_; }
  std::size_t bins() const noexcept { return bins_; }
  double cutoff() const noexcept { return cutoff_; }
  /// The number of frequencies in each ring (for turning ring sums into means).
  const std::vector<double>& ring_count() const noexcept { return ring_count_; }
  /// The centre frequency of ring b, in cycles per pixel.
  double ring_frequency(std::size_t b) const noexcept { return double(b) / double(std::max(h_, w_)); }

  /// Adds the power of one row-major map to `sums` (sized on first use).
  template <class T>
  void add_power(const T* x, power_sums& sums, workspace& ws) const {
    if (sums.ring.empty()) sums.ring.assign(bins_, 0.0);
    double* in = ws.in.get();
    bool constant = true;
    for (std::size_t k = 0; k < h_ * w_; ++k) {
      in[k] = static_cast<double>(x[k]);
      constant = constant && in[k] == in[0];
    }
    if (constant) {  // all power at r = 0: the FFT would leak rounding noise into ac and high
      sums.ring[0] += in[0] * in[0] * double(h_ * w_);
      return;
    }
    fftw_execute_dft_r2c(plan_, in, ws.out.get());
    const double scale = 1.0 / double(h_ * w_);
    const fftw_complex* f = ws.out.get();
    for (std::size_t k = 0; k < h_ * wc_; ++k) {
      const double p = weight_[k] * (f[k][0] * f[k][0] + f[k][1] * f[k][1]) * scale;
      sums.ring[ring_of_[k]] += p;
      if (k != 0) sums.ac += p;
      if (high_[k]) sums.high += p;
    }
  }

  /// Mean power per ring from ring sums over `maps` maps.
  std::vector<double> profile(const std::vector<double>& ring, double maps = 1) const {
    std::vector<double> out(bins_, 0.0);
    for (std::size_t b = 0; b < bins_; ++b) out[b] = ring_count_[b] > 0 ? ring[b] / (ring_count_[b] * maps) : 0.0;
    return out;
  }

 private:
  std::size_t h_, w_, wc_, bins_;
  double cutoff_;
  fftw_plan plan_ = nullptr;
  std::vector<std::size_t> ring_of_;
  std::vector<double> weight_, ring_count_;
  std::vector<char> high_;
};

/// Streaming per-channel spectra over images [B, C, H, W]: the moments of each channel's
/// high-frequency fraction, and each channel's mean radial profile. Mergeable; memory O(C × rings).
class spectrum_accumulator {
 public:
  spectrum_accumulator(std::size_t channels, std::size_t h, std::size_t w, double cutoff = 0.25)
      : spec_(std::make_shared<radial_spectrum>(h, w, cutoff)), hf_(channels),
        ring_(xt::zeros<double>({channels, spec_->bins()})), maps_(channels, 0) {}

  /// Adds a batch [B, C, H, W]. Maps holding NaN or Inf are not added and are counted in
  /// skipped() (the TV accumulator, run on the same batches, reports them by row and channel).
  template <class E>
  void update(const xt::xexpression<E>& batch, unsigned threads = 1) {
    using T = std::conditional_t<std::is_same_v<std::remove_cv_t<typename E::value_type>, float>, float, double>;
    const detail::row_major_block<T> x(batch);
    const auto& s = x.shape();
    if (s.size() != 4 || s[1] != channels() || s[2] != spec_->height() || s[3] != spec_->width())
      throw std::invalid_argument("spectrum update expects [B, " + std::to_string(channels()) + ", " +
                                  std::to_string(spec_->height()) + ", " + std::to_string(spec_->width()) + "]");
    const std::size_t c = s[1], maps = s[0] * c, hw = s[2] * s[3];
    std::vector<power_sums> per(maps);
    std::vector<char> finite(maps, 1);
    detail::parallel_for(maps, threads, [&](std::size_t b, std::size_t e) {
      radial_spectrum::workspace ws(*spec_);
      for (std::size_t m = b; m < e; ++m) {
        const T* p = x.data() + m * hw;
        for (std::size_t k = 0; k < hw && finite[m]; ++k) finite[m] = std::isfinite(p[k]);
        if (finite[m]) spec_->add_power(p, per[m], ws);
      }
    });
    for (std::size_t m = 0; m < maps; ++m) {  // in row order: results do not depend on threads
      const std::size_t ch = m % c;
      if (!finite[m]) {
        ++skipped_;
        continue;
      }
      hf_.add(ch, per[m].high_fraction());
      for (std::size_t b = 0; b < spec_->bins(); ++b) ring_(ch, b) += per[m].ring[b];
      ++maps_[ch];
    }
    rows_ += s[0];
  }

  void merge(const spectrum_accumulator& o) {
    if (o.channels() != channels() || o.spec_->height() != spec_->height() || o.spec_->width() != spec_->width() ||
        o.spec_->cutoff() != spec_->cutoff())
      throw std::invalid_argument("cannot merge spectrum accumulators with different channels, map size or cutoff");
    hf_.merge(o.hf_);
    ring_ += o.ring_;
    for (std::size_t c = 0; c < channels(); ++c) maps_[c] += o.maps_[c];
    rows_ += o.rows_;
    skipped_ += o.skipped_;
  }

  std::size_t channels() const noexcept { return hf_.channels(); }
  std::uint64_t rows() const noexcept { return rows_; }
  std::uint64_t skipped() const noexcept { return skipped_; }
  const radial_spectrum& spectrum() const noexcept { return *spec_; }
  /// Per channel: moments of the high-frequency fraction over maps.
  const channel_moments& high_fraction() const noexcept { return hf_; }
  /// Channel c's mean radial power profile (one value per ring).
  std::vector<double> profile(std::size_t c) const {
    std::vector<double> ring(spec_->bins());
    for (std::size_t b = 0; b < ring.size(); ++b) ring[b] = ring_(c, b);
    return spec_->profile(ring, static_cast<double>(std::max<std::uint64_t>(maps_.at(c), 1)));
  }

  state save() const {
    state s;
    s.kind = "spectrum";
    const std::size_t c = channels();
    s.params = {{"channels", double(c)}, {"height", double(spec_->height())}, {"width", double(spec_->width())},
                {"cutoff", spec_->cutoff()}, {"rows", double(rows_)}, {"skipped", double(skipped_)}};
    xt::xarray<double> maps = xt::zeros<double>({c});
    for (std::size_t k = 0; k < c; ++k) maps(k) = double(maps_[k]);
    s.arrays = {{"maps", maps}, {"ring_power", ring_}};
    hf_.save_to(s, "hf_");
    return s;
  }

  static spectrum_accumulator load(const state& s) {
    s.expect_kind("spectrum");
    const auto c = static_cast<std::size_t>(s.param("channels"));
    spectrum_accumulator a(c, static_cast<std::size_t>(s.param("height")), static_cast<std::size_t>(s.param("width")),
                           s.param("cutoff"));
    const auto &maps = s.array("maps"), &ring = s.array("ring_power");
    if (maps.size() != c || ring.shape() != a.ring_.shape())
      throw std::invalid_argument("spectrum state: arrays do not match its channels and rings");
    for (std::size_t k = 0; k < c; ++k) a.maps_[k] = static_cast<std::uint64_t>(maps(k));
    a.hf_ = channel_moments::load_from(s, "hf_", c);
    a.ring_ = ring;
    a.rows_ = static_cast<std::uint64_t>(s.param("rows"));
    a.skipped_ = static_cast<std::uint64_t>(s.param("skipped"));
    return a;
  }

 private:
  std::shared_ptr<const radial_spectrum> spec_;
  channel_moments hf_;
  xt::xarray<double> ring_;  // [C, rings] power sums
  std::vector<std::uint64_t> maps_;
  std::uint64_t rows_ = 0, skipped_ = 0;
};

}  // namespace shapebias::stats

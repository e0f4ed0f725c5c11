// SPDX-License-Identifier: MIT
// NetDissect tally and threshold-pass throughput of shapebias::stats::iou_tally and quantile_sketch,
// on a fixture written by benchmarks/tally_benchmark.py (which runs the numpy side on the same data).
//
//   bench_tally tally  FIXTURE sparse|dense lite|original THREADS SECONDS NCHECK COUNTS_OUT [per-image]
//       tallies the first NCHECK images once and writes G, I, A (uint64) to COUNTS_OUT; then tallies
//       all images again and again for SECONDS, with update_images on batches of 64 (as `shapebias
//       dissect` feeds each batch's runs of equal segmentation size), or with update_image image by
//       image (the per-image API, for comparison); prints "<images/s> <passes>"
//   bench_tally sketch FIXTURE THREADS PASSES THRESHOLDS_OUT
//       quantile_sketch updates, batches of 64 images, PASSES times over the fixture (one sketch);
//       writes the thresholds (float64 [U]); prints "<values/s> <images/s>"
//   bench_tally memory FIXTURE N THREADS [both|tally|sketch]
//       streams N images (batches of 64 re-read from the file, cycling) through a tally and/or a sketch;
//       prints "<VmHWM KiB> <seconds>" (VmHWM, not ru_maxrss: that one keeps the parent's peak
//       across fork and exec)
//
// Fixture (little endian): "SBTALLY1", uint64 N U h w sh sw L C Y S, float32 thr_sparse[U],
// float32 thr_dense[U], int32 primary[L], float32 acts[N, U, h, w], int32 layers[N, Y, sh, sw],
// int32 image_labels[N, S] (0 = none).
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <xtensor/xadapt.hpp>

#include "fixture_file.hpp"
#include "shapebias/stats/quantile.hpp"
#include "shapebias/stats/tally.hpp"

namespace {

using bench::clk;
using bench::seconds_since;
using bench::vm_hwm_kib;
namespace st = shapebias::stats;

struct fixture {
  std::uint64_t n = 0, u = 0, h = 0, w = 0, sh = 0, sw = 0, l = 0, c = 0, y = 0, s = 0;
  std::vector<float> thr_sparse, thr_dense;
  std::vector<std::int32_t> primary;
  std::vector<float> acts;            // the images [first, first + count) only
  std::vector<std::int32_t> layers;   // likewise
  std::vector<std::int32_t> labels;   // likewise
  std::uint64_t first = 0, count = 0;
  bench::fixture_file in;
  std::streamoff data = 0;  // offset of acts

  explicit fixture(const std::string& path) : in(path, "SBTALLY1", "tally") {
    std::vector<std::uint64_t> hdr(10);
    in.get(hdr);
    n = hdr[0], u = hdr[1], h = hdr[2], w = hdr[3], sh = hdr[4], sw = hdr[5], l = hdr[6], c = hdr[7], y = hdr[8], s = hdr[9];
    thr_sparse.resize(u);
    thr_dense.resize(u);
    primary.resize(l);
    in.get(thr_sparse);
    in.get(thr_dense);
    in.get(primary);
    data = in.tell();
  }
  std::size_t map_size() const { return u * h * w; }
  std::size_t seg_size() const { return y * sh * sw; }
  /// Loads images [b, b + k) into acts/layers/labels (replacing what was there).
  void load(std::uint64_t b, std::uint64_t k) {
    first = b;
    count = k;
    acts.resize(k * map_size());
    layers.resize(k * seg_size());
    labels.resize(k * s);
    const auto off = [&](std::uint64_t base, std::uint64_t per, std::uint64_t bytes) {
      return data + static_cast<std::streamoff>(base + b * per * bytes);
    };
    const std::uint64_t acts_bytes = n * map_size() * 4, layers_bytes = n * seg_size() * 4;
    in.seek(off(0, map_size(), 4));
    in.get(acts);
    in.seek(off(acts_bytes, seg_size(), 4));
    in.get(layers);
    in.seek(off(acts_bytes + layers_bytes, s, 4));
    in.get(labels);
  }
  /// The loaded images [j, j + k) (indices relative to `first`) as tally images.
  std::vector<st::tally_image> images(std::size_t j, std::size_t k) const {
    std::vector<st::tally_image> v(k);
    for (std::size_t i = 0; i < k; ++i) {
      auto& im = v[i];
      im.acts = acts.data() + (j + i) * map_size();
      for (std::size_t q = 0; q < y; ++q) im.label_layers.push_back(layers.data() + (j + i) * seg_size() + q * sh * sw);
      im.image_labels.assign(labels.begin() + static_cast<std::ptrdiff_t>((j + i) * s),
                             labels.begin() + static_cast<std::ptrdiff_t>((j + i + 1) * s));
    }
    return v;
  }
};

constexpr std::size_t batch = 64;

void write_counts(const st::iou_tally& t, const std::string& path) {
  std::vector<std::uint64_t> out;
  for (std::size_t j = 0; j < t.labels(); ++j) out.push_back(t.ground_truth(j));
  for (std::size_t k = 0; k < t.units(); ++k)
    for (std::size_t j = 0; j < t.labels(); ++j) out.push_back(t.intersection(k, j));
  for (std::size_t k = 0; k < t.units(); ++k)
    for (std::size_t c = 0; c < t.categories(); ++c) out.push_back(t.activation(k, c));
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(out.data()), static_cast<std::streamsize>(out.size() * 8));
  if (!f) throw std::runtime_error("cannot write " + path);
}

int run_tally(fixture& fx, bool dense, st::union_rule rule, unsigned threads, double budget, std::size_t ncheck,
              const std::string& counts_out, bool per_image) {
  fx.load(0, fx.n);
  const float* thr = dense ? fx.thr_dense.data() : fx.thr_sparse.data();
  {
    st::iou_tally t(fx.u, fx.l, fx.c, fx.primary, rule);
    t.update_images(fx.images(0, std::min<std::size_t>(ncheck, fx.n)), fx.h, fx.w, thr, fx.sh, fx.sw, threads);
    write_counts(t, counts_out);
  }
  std::vector<std::vector<st::tally_image>> batches;
  for (std::size_t j = 0; j < fx.n; j += batch) batches.push_back(fx.images(j, std::min<std::size_t>(batch, fx.n - j)));
  st::iou_tally t(fx.u, fx.l, fx.c, fx.primary, rule);
  std::size_t done = 0, passes = 0;
  const auto t0 = clk::now();
  do {
    for (const auto& b : batches) {
      if (per_image)
        for (const auto& im : b)
          t.update_image(im.acts, fx.h, fx.w, thr, im.label_layers, fx.sh, fx.sw, im.image_labels, threads);
      else
        t.update_images(b, fx.h, fx.w, thr, fx.sh, fx.sw, threads);
      done += b.size();
    }
    ++passes;
  } while (seconds_since(t0) < budget);
  const double secs = seconds_since(t0);
  std::printf("%.2f %zu\n", static_cast<double>(done) / secs, passes);
  return t.images() == done ? 0 : 1;
}

int run_sketch(fixture& fx, unsigned threads, std::size_t passes, const std::string& thr_out) {
  fx.load(0, fx.n);
  st::quantile_sketch q(fx.u);
  std::size_t done = 0;
  const auto t0 = clk::now();
  for (std::size_t p = 0; p < passes; ++p)
    for (std::size_t j = 0; j < fx.n; j += batch) {
      const std::size_t k = std::min<std::size_t>(batch, fx.n - j);
      const std::vector<std::size_t> shape{k, fx.u, fx.h, fx.w};
      q.update(xt::adapt(fx.acts.data() + j * fx.map_size(), k * fx.map_size(), xt::no_ownership(), shape), threads);
      done += k;
    }
  const double secs = seconds_since(t0);
  std::vector<double> thr(fx.u);
  for (std::size_t k = 0; k < fx.u; ++k) thr[k] = q.threshold(k);
  std::ofstream f(thr_out, std::ios::binary);
  f.write(reinterpret_cast<const char*>(thr.data()), static_cast<std::streamsize>(thr.size() * 8));
  std::printf("%.1f %.2f\n", static_cast<double>(done * fx.map_size()) / secs, static_cast<double>(done) / secs);
  return f ? 0 : 1;
}

int run_memory(fixture& fx, std::size_t n, unsigned threads, const std::string& what) {
  const bool tally = what != "sketch", sketch = what != "tally";
  st::iou_tally t(fx.u, fx.l, fx.c, fx.primary);
  st::quantile_sketch q(fx.u);
  std::size_t done = 0, j = 0;
  const auto t0 = clk::now();
  while (done < n) {
    const std::size_t k = std::min({batch, n - done, static_cast<std::size_t>(fx.n) - j});
    fx.load(j, k);  // stream: only this batch is in memory
    if (tally) t.update_images(fx.images(0, k), fx.h, fx.w, fx.thr_sparse.data(), fx.sh, fx.sw, threads);
    const std::vector<std::size_t> shape{k, fx.u, fx.h, fx.w};
    if (sketch) q.update(xt::adapt(fx.acts.data(), k * fx.map_size(), xt::no_ownership(), shape), threads);
    done += k;
    j = (j + k) % fx.n;
  }
  const double secs = seconds_since(t0);
  std::printf("%ld %.3f\n", vm_hwm_kib(), secs);
  return t.images() == (tally ? n : 0) && q.rows() == (sketch ? n : 0) ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) try {
  const std::string mode = argc > 1 ? argv[1] : "";
  if (mode == "tally" && (argc == 9 || (argc == 10 && std::string(argv[9]) == "per-image"))) {
    fixture fx(argv[2]);
    const std::string which = argv[3];
    if (which != "sparse" && which != "dense") throw std::invalid_argument("expected sparse or dense");
    return run_tally(fx, which == "dense", st::parse_union_rule(argv[4]), static_cast<unsigned>(std::stoul(argv[5])),
                     std::stod(argv[6]), std::stoul(argv[7]), argv[8], argc == 10);
  }
  if (mode == "sketch" && argc == 6) {
    fixture fx(argv[2]);
    return run_sketch(fx, static_cast<unsigned>(std::stoul(argv[3])), std::stoul(argv[4]), argv[5]);
  }
  if (mode == "memory" && (argc == 5 || argc == 6)) {
    fixture fx(argv[2]);
    const std::string what = argc == 6 ? argv[5] : "both";
    if (what != "both" && what != "tally" && what != "sketch") throw std::invalid_argument("expected both, tally or sketch");
    return run_memory(fx, std::stoul(argv[3]), static_cast<unsigned>(std::stoul(argv[4])), what);
  }
  std::fprintf(stderr,
               "usage: bench_tally tally FIXTURE sparse|dense lite|original THREADS SECONDS NCHECK COUNTS_OUT [per-image]\n"
               "       bench_tally sketch FIXTURE THREADS PASSES THRESHOLDS_OUT\n"
               "       bench_tally memory FIXTURE N THREADS [both|tally|sketch]\n");
  return 2;
} catch (const std::exception& e) {
  std::fprintf(stderr, "bench_tally: %s\n", e.what());
  return 1;
}

// SPDX-License-Identifier: MIT
// Streaming TV throughput of shapebias::stats::tv_accumulator, against the machine's memory read
// bandwidth measured in the same run. Batches are drawn round-robin from a pool much larger than
// the caches, so every byte comes from memory, as it does when activations stream in.
//   bench_tv THREADS SECONDS B C H W [spectrum]
// Prints one line: "<tv GB/s> <read GB/s> <maps/s>" (GB = 1e9 bytes of float32 activations).
#include <chrono>
#include <optional>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include <xtensor/xadapt.hpp>

#include "fixture_file.hpp"
#include "shapebias/stats/detail.hpp"
#include "shapebias/stats/spectrum.hpp"
#include "shapebias/stats/tv.hpp"

namespace {

using bench::clk;
using bench::seconds_since;

/// Read bandwidth: `threads` threads summing disjoint parts of `pool`, several sweeps.
double read_bandwidth(const std::vector<float>& pool, unsigned threads) {
  double best = 0;
  for (int rep = 0; rep < 5; ++rep) {
    std::vector<double> sums(threads);
    const auto t0 = clk::now();
    shapebias::stats::detail::parallel_for(pool.size(), threads, [&](std::size_t b, std::size_t e) {
      constexpr std::size_t L = 16;
      float acc[L] = {};
      std::size_t j = b;
      for (; j + L <= e; j += L)
        for (std::size_t k = 0; k < L; ++k) acc[k] += pool[j + k];
      double s = 0;
      for (auto a : acc) s += a;
      sums[b * threads / pool.size()] = s;
    });
    const double secs = seconds_since(t0);
    best = std::max(best, static_cast<double>(pool.size() * sizeof(float)) / secs / 1e9);
    if (sums[0] == -1) std::puts("");  // keep the sums alive
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 7) {
    std::fprintf(stderr, "usage: bench_tv THREADS SECONDS B C H W [spectrum]\n");
    return 2;
  }
  const unsigned threads = static_cast<unsigned>(std::stoul(argv[1]));
  const double budget = std::stod(argv[2]);
  const std::size_t B = std::stoul(argv[3]), C = std::stoul(argv[4]), H = std::stoul(argv[5]), W = std::stoul(argv[6]);
  const bool spectrum = argc > 7 && std::string(argv[7]) == "spectrum";
  const std::size_t batch = B * C * H * W;
  const std::size_t nbatches = std::max<std::size_t>(2, (std::size_t{1} << 29) / (batch * sizeof(float)));  // ~512 MiB
  std::vector<float> pool(batch * nbatches);
  std::uint32_t s = 12345;
  for (auto& v : pool) {
    s = s * 1664525u + 1013904223u;
    v = static_cast<float>(s >> 8) / 16777216.0f;
  }
  const double bw = read_bandwidth(pool, threads);

  shapebias::stats::tv_accumulator tv(C);
  std::optional<shapebias::stats::spectrum_accumulator> sp;
  if (spectrum) sp.emplace(C, H, W);
  const std::vector<std::size_t> shape{B, C, H, W};
  std::size_t done = 0;
  const auto t0 = clk::now();
  do {
    const auto x = xt::adapt(pool.data() + (done % nbatches) * batch, batch, xt::no_ownership(), shape);
    if (sp) sp->update(x, threads);
    else tv.update(x, nullptr, threads);
    ++done;
  } while (seconds_since(t0) < budget);
  const double secs = seconds_since(t0);
  const double bytes = static_cast<double>(done * batch * sizeof(float));
  std::printf("%.4f %.4f %.1f\n", bytes / secs / 1e9, bw, static_cast<double>(done * B * C) / secs);
  return tv.moments().count(0) == 12345 ? 1 : 0;  // keep the work observable
}

// SPDX-License-Identifier: MIT
// The baseline for the dump and attack benchmarks: bare LibTorch passes of a TorchScript model over
// the same preprocessed batches the tools saw (read from a store's "input" layer), with nothing
// tapped or written. Prints the seconds spent in the passes.
//   bench_forward MODEL INPUTS.h5 BATCH THREADS [fwd|fwdbwd]
// fwdbwd: forward, mean cross-entropy against the stored labels, and its gradient with respect to
// the input: one PGD step's work.
#include <ATen/Parallel.h>
#include <torch/script.h>
#include <torch/torch.h>

#include <malloc.h>

#include <chrono>
#include <limits>
#include <cstdio>
#include <string>

#include "shapebias/io/store.hpp"

int main(int argc, char** argv) {
  if (argc != 5 && argc != 6) {
    std::fprintf(stderr, "usage: bench_forward MODEL INPUTS.h5 BATCH THREADS [fwd|fwdbwd]\n");
    return 2;
  }
  at::set_num_threads(std::stoi(argv[4]));
  // The same allocator setting as the shapebias tools (tools/torch/plugin.cpp), so that the
  // comparison measures the tools' own overhead, not glibc's page faults.
  mallopt(M_MMAP_THRESHOLD, 1 << 30);
  mallopt(M_TRIM_THRESHOLD, std::numeric_limits<int>::max());
  auto model = torch::jit::load(argv[1]);
  model.eval();
  const bool backward = argc == 6 && std::string(argv[5]) == "fwdbwd";
  shapebias::io::store_reader inputs(argv[2]);
  const auto layer = inputs.header().find("input");
  if (!layer) {
    std::fprintf(stderr, "bench_forward: %s has no 'input' layer\n", argv[2]);
    return 1;
  }
  auto src = inputs.batches(std::stoul(argv[3]), {*layer});
  std::vector<torch::Tensor> batches, labels;  // read first: only the passes are timed
  while (auto b = src.next()) {
    std::vector<int64_t> shape(b->data[0].shape().begin(), b->data[0].shape().end());
    batches.push_back(torch::from_blob(b->data[0].data(), shape).clone());
    labels.push_back(torch::tensor(b->labels, torch::kLong));
  }
  auto pass = [&](const torch::Tensor& x, const torch::Tensor& y) {
    if (!backward) {
      torch::NoGradGuard no_grad;
      return model.forward({x}).toTensor().sum().item<double>();
    }
    auto xg = x.detach().requires_grad_(true);
    const auto loss = torch::nn::functional::cross_entropy(model.forward({xg}).toTensor(), y);
    return torch::autograd::grad({loss}, {xg})[0].sum().item<double>();
  };
  // Warm-up: the graph executor profiles the first runs of each input shape; the tools amortise
  // that over many batches (and attack steps), so the baseline must not pay it either.
  for (int i = 0; i < 3; ++i) pass(batches.front(), labels.front());
  const auto t0 = std::chrono::steady_clock::now();
  double checksum = 0;
  for (std::size_t i = 0; i < batches.size(); ++i) checksum += pass(batches[i], labels[i]);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("%.6f %zu %g\n", secs, batches.size(), checksum);
  return 0;
}

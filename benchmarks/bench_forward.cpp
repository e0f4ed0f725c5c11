// SPDX-License-Identifier: MIT
// The baseline for the dump benchmark: a bare LibTorch forward pass of a TorchScript model over the
// same preprocessed batches `dump` saw (read from a store's "input" layer), with nothing tapped or
// written. Prints the seconds spent in forward passes.
//   bench_forward MODEL INPUTS.h5 BATCH THREADS
#include <ATen/Parallel.h>
#include <torch/script.h>

#include <chrono>
#include <cstdio>
#include <string>

#include "shapebias/io/store.hpp"

int main(int argc, char** argv) {
  if (argc != 5) {
    std::fprintf(stderr, "usage: bench_forward MODEL INPUTS.h5 BATCH THREADS\n");
    return 2;
  }
  at::set_num_threads(std::stoi(argv[4]));
  auto model = torch::jit::load(argv[1]);
  model.eval();
  torch::NoGradGuard no_grad;
  shapebias::io::store_reader inputs(argv[2]);
  const auto layer = inputs.header().find("input");
  if (!layer) {
    std::fprintf(stderr, "bench_forward: %s has no 'input' layer\n", argv[2]);
    return 1;
  }
  auto src = inputs.batches(std::stoul(argv[3]), {*layer});
  std::vector<torch::Tensor> batches;  // read first: only the forward passes are timed
  while (auto b = src.next()) {
    std::vector<int64_t> shape(b->data[0].shape().begin(), b->data[0].shape().end());
    batches.push_back(torch::from_blob(b->data[0].data(), shape).clone());
  }
  model.forward({batches.front().narrow(0, 0, 1)});  // warm-up, as dump's probe
  const auto t0 = std::chrono::steady_clock::now();
  double checksum = 0;
  for (const auto& x : batches) checksum += model.forward({x}).toTensor().sum().item<double>();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("%.6f %zu %g\n", secs, batches.size(), checksum);
  return 0;
}

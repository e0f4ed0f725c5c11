// SPDX-License-Identifier: MIT
// The streaming pipeline shared by the verbs that run a model over a data set (dump, attack):
// a loader thread decodes and preprocesses batch k+1 while the model stage computes batch k and a
// writer thread writes batch k-1. Bounded queues hold at most two batches between stages, so
// memory does not depend on the number of inputs.
#pragma once

#include <torch/torch.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "common/dataset.hpp"
#include "shapebias/io/batch.hpp"

namespace shapebias::tools {

struct loaded {
  torch::Tensor x;  // [B, C, H, W] preprocessed inputs, on the CPU
  std::vector<std::int64_t> ids, labels;
};

struct computed {
  std::vector<torch::Tensor> data;  // one contiguous float32 CPU tensor per output layer, [B, ...]
  std::vector<std::int64_t> ids, labels;
};

/// Batches of preprocessed images from a data set, checked as they are read: every image must
/// preprocess to the first image's size, and every label must be below the model's output width
/// once that is known (set_classes).
class image_batches {
 public:
  /// `subset`: the input ids to use, in order (empty: every input, in order).
  image_batches(const dataset& d, preprocessing p, std::vector<std::uint64_t> subset = {})
      : data_(d), pre_(std::move(p)), subset_(std::move(subset)) {}
  /// The number of inputs: the subset's, or the data set's.
  std::uint64_t size() const { return subset_.empty() ? data_.size() : subset_.size(); }
  const std::vector<std::uint64_t>& subset() const { return subset_; }
  /// Positions [first, first + count) of the inputs (ids, through the subset).
  loaded load(std::uint64_t first, std::size_t count) const;
  /// The given input ids.
  loaded load(const std::vector<std::uint64_t>& ids) const;
  void set_input_shape(std::vector<int64_t> s) { input_shape_ = std::move(s); }
  void set_classes(std::int64_t k) { classes_ = k; }
  std::int64_t classes() const { return classes_; }

 private:
  const dataset& data_;
  preprocessing pre_;
  std::vector<std::uint64_t> subset_;
  std::vector<int64_t> input_shape_;
  std::atomic<std::int64_t> classes_{-1};
};

/// Runs rows [start, n) through load → compute → sink in batches of `batch`, the stages
/// overlapping. Returns the seconds it took. Rethrows the first failure of any stage; after
/// SIGINT/SIGTERM it stops once the batches in flight are written and throws a message that names
/// `output` (a store keeps them for --resume; "" for an output that is not kept).
double run_pipeline(const std::string& verb, const std::string& output, std::uint64_t start, std::uint64_t n,
                    std::size_t batch, bool quiet, const image_batches& images,
                    const std::function<computed(const loaded&)>& compute, io::batch_sink& sink);

/// Checks a layer output against the shape the first input gave; throws naming the layer.
void check_tap(const torch::Tensor& t, const std::string& layer, const std::string& model, std::int64_t rows,
               const std::vector<int64_t>* expected, std::int64_t first_id);

}  // namespace shapebias::tools

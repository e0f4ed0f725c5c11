// SPDX-License-Identifier: MIT
// A TorchScript model with taps: the outputs of any submodule call, nested ones included, returned
// next to the model's own output without changing the model in Python.
#pragma once

#include <torch/script.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/ablation.hpp"

namespace shapebias::tools {

/// One place that can be tapped: a submodule call in the model's forward graph.
struct tap_point {
  enum class kind { input, module, output };
  std::string name;         // module path, e.g. "layer3.5.conv2"; "path#k" when called k>1 times
  std::string module_type;  // the submodule's class, e.g. "Conv2d"
  kind what = kind::module;
};

class tapped_model {
 public:
  /// Loads a TorchScript file onto `device` in eval mode. Throws std::runtime_error naming the file.
  tapped_model(const std::string& path, const std::string& device);

  /// Every tappable name, in call order, plus "input" (the normalised model input) and "logits"
  /// (the model's output; the first element when it returns a tuple) unless a submodule has
  /// that name.
  const std::vector<tap_point>& points() const noexcept { return points_; }

  /// Chooses the taps that forward() returns. Throws std::invalid_argument for an unknown name,
  /// with the closest valid names.
  void select(const std::vector<std::string>& names);

  /// Channel ablations (paper-spec §4.4) built into the graph of the next select(), applied in
  /// order; forward() runs them, logits() does not. select() throws std::invalid_argument for a
  /// layer that is not a submodule call.
  void ablate(std::vector<ablation> a) { ablations_ = std::move(a); }

  /// Runs the model on x (NCHW, on the model's device) and returns the selected taps, in the order
  /// given to select(). No gradients are recorded.
  std::vector<torch::jit::IValue> forward(const torch::Tensor& x);

  /// The model's output for x with autograd enabled (for attacks and training). Throws
  /// std::runtime_error naming the model when the output is not a [B, K] tensor.
  torch::Tensor logits(const torch::Tensor& x);

  /// From now on, logits() runs a frozen copy of the model: parameters become constants, with the
  /// same ops in the same order (bit-identical results), and a forward+backward with respect to the
  /// input takes about 7% less time (ResNet-18). For models whose parameters do not change (attacks).
  /// A model that LibTorch cannot freeze keeps running unfrozen.
  void freeze();

  torch::jit::Module& module() noexcept { return module_; }
  torch::Device device() const noexcept { return device_; }

 private:
  std::string path_;
  torch::jit::Module module_;
  std::optional<torch::jit::Module> frozen_;  // see freeze()
  torch::Device device_;
  std::vector<tap_point> points_;
  std::unique_ptr<torch::jit::GraphFunction> fn_;  // the graph that returns the selected taps
  std::vector<int> selected_;                      // index into points_
  std::vector<ablation> ablations_;
};

}  // namespace shapebias::tools

// SPDX-License-Identifier: MIT
// Adversarial attacks on LibTorch: FGSM and PGD (L∞, L2), untargeted and targeted, with the op
// order of torchattacks 3.5.1 (peers.md §5.1) and Madry's best-iterate and restarts as options.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "common/attack_params.hpp"

namespace shapebias::tools {

/// The model as the attack sees it: [0,1] images in, [B, K] logits out (normalisation inside).
using logits_fn = std::function<torch::Tensor(const torch::Tensor&)>;

struct attack_outcome {
  torch::Tensor adv;         // [B, C, H, W] in [0,1]
  torch::Tensor target;      // [B] int64: the class aimed at (targeted) or the true class
  torch::Tensor clean_pred;  // [B] int64
  torch::Tensor adv_pred;    // [B] int64
  torch::Tensor linf, l2;    // [B] float: ‖adv − x‖
};

/// Attacks a batch. `ids` seed each input's randomness, so an input's adversarial example does
/// not depend on its batch or the batch size. Throws std::runtime_error when the loss has no
/// gradient with respect to the input (a non-differentiable model).
attack_outcome attack(const logits_fn& f, const torch::Tensor& x, const torch::Tensor& y,
                      const std::vector<std::int64_t>& ids, const attack_params& p);

}  // namespace shapebias::tools

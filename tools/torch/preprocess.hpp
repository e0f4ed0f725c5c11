// SPDX-License-Identifier: MIT
// torchvision-style preprocessing of decoded images, on LibTorch.
#pragma once

#include <torch/torch.h>

#include "common/dataset.hpp"

namespace shapebias::tools {

/// image → float32 [C, H, W]: channel conversion, shorter-side resize (bilinear, antialiased,
/// rounded to uint8 as PIL does), centre crop (zero padding when larger, as torchvision), scaling
/// to [0,1], the dataset variant p.transform (seeded by p.transform_seed and the input id), Gaussian noise when p.noise > 0 (seeded by p.noise_seed and the input `id`), and
/// normalisation.
/// `item`: the image file's path (for silhouette masks), or "".
torch::Tensor preprocess(image img, const preprocessing& p, std::int64_t id, const std::string& item = "");

}  // namespace shapebias::tools

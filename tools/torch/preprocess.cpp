// SPDX-License-Identifier: MIT
#include "torch/preprocess.hpp"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>

#include "common/rng.hpp"

namespace shapebias::tools {

std::pair<int, int> resized_size(int h, int w, int size) {
  // torchvision.transforms.functional._compute_resized_output_size (int size, no max_size).
  const bool w_short = w <= h;
  const int s = w_short ? w : h, l = w_short ? h : w;
  const int new_long = static_cast<int>(static_cast<double>(size) * l / s);
  return w_short ? std::pair{new_long, size} : std::pair{size, new_long};
}

torch::Tensor preprocess(image img, const preprocessing& p, std::int64_t id) {
  img = convert_channels(std::move(img), p.channels);
  auto t = torch::from_blob(img.pixels.data(), {img.height, img.width, img.channels}, torch::kUInt8)
               .permute({2, 0, 1})
               .to(torch::kFloat32);
  if (p.resize > 0) {
    const auto [nh, nw] = resized_size(img.height, img.width, p.resize);
    // PIL resamples horizontally, rounds to uint8, then vertically and rounds again; doing the
    // same two passes matches it to the last bit on nearly every pixel (tests/tools).
    namespace F = torch::nn::functional;
    auto pass = [](const torch::Tensor& x, int64_t h, int64_t w) {
      return F::interpolate(x.unsqueeze(0), F::InterpolateFuncOptions()
                                                .size(std::vector<int64_t>{h, w})
                                                .mode(torch::kBilinear)
                                                .align_corners(false)
                                                .antialias(true))
          .squeeze(0)
          .add_(0.5)
          .floor_()  // PIL rounds halves up (fixed point + 1/2, then truncation), not to even
          .clamp_(0, 255);
    };
    if (nw != img.width) t = pass(t, img.height, nw);
    if (nh != img.height) t = pass(t, nh, nw);
  }
  if (p.crop > 0) {
    const int64_t h = t.size(1), w = t.size(2), c = p.crop;
    if (c > h || c > w) {
      // torchvision pads with zeros to the crop size, (c - side) // 2 before and the rest after.
      auto padded = torch::zeros({t.size(0), std::max(h, c), std::max(w, c)});
      const int64_t top = std::max<int64_t>(0, (c - h) / 2), left = std::max<int64_t>(0, (c - w) / 2);
      padded.narrow(1, top, h).narrow(2, left, w).copy_(t);
      t = padded;
    }
    // int(round((side - crop) / 2)) with Python's round-half-to-even.
    const auto top = static_cast<int64_t>(std::nearbyint(static_cast<double>(t.size(1) - c) / 2.0));
    const auto left = static_cast<int64_t>(std::nearbyint(static_cast<double>(t.size(2) - c) / 2.0));
    t = t.narrow(1, top, c).narrow(2, left, c);
  }
  t = t.div(255.0f);
  if (p.noise > 0) {
    // The noise of an image depends on the seed and its id only, never on its batch.
    constexpr std::uint64_t noise_stream = 0x6e6f697365;  // "noise"
    auto gen = at::make_generator<at::CPUGeneratorImpl>(stream_seed(p.noise_seed, id, noise_stream));
    t.add_(torch::randn(t.sizes(), gen).mul_(static_cast<float>(p.noise)));
    if (p.noise_clip) t.clamp_(0, 1);
  }
  const auto C = t.size(0);
  auto mean = torch::tensor(p.mean).view({C, 1, 1});
  auto std = torch::tensor(p.std).view({C, 1, 1});
  return t.sub_(mean).div_(std).contiguous();
}

}  // namespace shapebias::tools

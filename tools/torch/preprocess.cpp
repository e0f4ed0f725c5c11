// SPDX-License-Identifier: MIT
#include "torch/preprocess.hpp"

#include <ATen/CPUGeneratorImpl.h>

#include <opencv2/imgproc.hpp>

#include <cmath>
#include <filesystem>

#include "common/rng.hpp"
#include "shapebias/core/errors.hpp"

namespace shapebias::tools {

namespace {

/// Resize and centre crop of a [C, H, W] float tensor holding 0…255, as torchvision on PIL images
/// (the geometry of preprocessed_view).
torch::Tensor geometry(torch::Tensor t, const preprocessing& p) {
  const auto g = preprocessed_view(static_cast<int>(t.size(1)), static_cast<int>(t.size(2)), p);
  if (p.resize > 0) {
    const int nh = g.resized_height, nw = g.resized_width;
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
    if (nw != t.size(2)) t = pass(t, t.size(1), nw);
    if (nh != t.size(1)) t = pass(t, nh, nw);
  }
  if (p.crop > 0) {
    // Rows [top, top + crop) and columns [left, left + crop) of the resized image; zeros outside it.
    const int64_t h = t.size(1), w = t.size(2), c = p.crop, top = g.top, left = g.left;
    const int64_t y0 = std::max<int64_t>(top, 0), x0 = std::max<int64_t>(left, 0);
    const int64_t y1 = std::min(top + c, h), x1 = std::min(left + c, w);
    if (y0 == top && x0 == left && y1 == top + c && x1 == left + c) {
      t = t.narrow(1, top, c).narrow(2, left, c);
    } else {
      auto padded = torch::zeros({t.size(0), c, c});
      padded.narrow(1, y0 - top, y1 - y0).narrow(2, x0 - left, x1 - x0).copy_(t.narrow(1, y0, y1 - y0).narrow(2, x0, x1 - x0));
      t = padded;
    }
  }
  return t;
}

torch::Tensor to_float(image img) {
  return torch::from_blob(img.pixels.data(), {img.height, img.width, img.channels}, torch::kUInt8)
      .permute({2, 0, 1})
      .to(torch::kFloat32);
}

torch::Tensor luma(const torch::Tensor& t, float r, float g, float b) {
  if (t.size(0) != 3) return t[0].clone();
  return t[0] * r + t[1] * g + t[2] * b;
}

/// A [H, W] float tensor as an OpenCV matrix sharing its memory (contiguous float32).
cv::Mat as_mat(torch::Tensor& t) {
  return cv::Mat(static_cast<int>(t.size(0)), static_cast<int>(t.size(1)), CV_32F, t.data_ptr<float>());
}

/// The mask with its holes filled: background is what a flood fill from outside the image reaches.
torch::Tensor fill_holes(const torch::Tensor& mask /*[H, W] bool*/) {
  const int h = static_cast<int>(mask.size(0)), w = static_cast<int>(mask.size(1));
  cv::Mat padded(h + 2, w + 2, CV_8U, cv::Scalar(0));
  auto m = mask.to(torch::kUInt8).mul(255).contiguous();
  cv::Mat(h, w, CV_8U, m.data_ptr<std::uint8_t>()).copyTo(padded(cv::Rect(1, 1, w, h)));
  cv::Mat outside = padded.clone();
  cv::floodFill(outside, cv::Point(0, 0), cv::Scalar(128));
  auto reached = torch::from_blob(outside.data, {h + 2, w + 2}, torch::kUInt8).narrow(0, 1, h).narrow(1, 1, w);
  return reached.ne(128);
}

torch::Tensor transform(torch::Tensor t /*[C, H, W] in [0,1]*/, const preprocessing& p, std::int64_t id,
                        const std::string& item) {
  using kind = transform_spec::kind;
  const auto& s = p.transform;
  const auto C = t.size(0), H = t.size(1), W = t.size(2);
  switch (s.what) {
    case kind::gray: return luma(t, 0.299f, 0.587f, 0.114f).unsqueeze(0).expand({C, H, W}).contiguous();
    case kind::scramble: {
      const int64_t g = s.grid;
      if (H % g || W % g)
        throw io_error((item.empty() ? "input " + std::to_string(id) : quote_name(item)) + ": --transform scramble:" + std::to_string(g) + " needs an image size divisible by " +
                       std::to_string(g) + ", got " + std::to_string(H) + "x" + std::to_string(W) + " (see --resize, --crop)");
      constexpr std::uint64_t scramble_stream = 0x736372616d626c65;  // "scramble"
      auto gen = at::make_generator<at::CPUGeneratorImpl>(stream_seed(p.transform_seed, id, scramble_stream));
      const auto perm = torch::randperm(g * g, gen, torch::kLong);
      const int64_t ph = H / g, pw = W / g;
      // [C, g, ph, g, pw] → patches [g*g, C, ph, pw]; output patch k is input patch perm[k].
      auto patches = t.view({C, g, ph, g, pw}).permute({1, 3, 0, 2, 4}).reshape({g * g, C, ph, pw});
      return patches.index_select(0, perm).view({g, g, C, ph, pw}).permute({2, 0, 3, 1, 4}).reshape({C, H, W}).contiguous();
    }
    case kind::edges: {
      auto gray = luma(t, 0.2125f, 0.7154f, 0.0721f).contiguous();
      cv::Mat src = as_mat(gray), blurred;
      if (s.sigma > 0) {
        const int r = static_cast<int>(4 * s.sigma + 0.5);  // skimage's truncate = 4
        cv::GaussianBlur(src, blurred, cv::Size(2 * r + 1, 2 * r + 1), s.sigma, s.sigma, cv::BORDER_REPLICATE);
      } else {
        blurred = src;
      }
      // Canny on Sobel derivatives given in fixed point: |∂| ≤ 4 on [0,1] images, × 8000 fits int16.
      constexpr double scale = 8000;
      cv::Mat dx, dy, dx16, dy16, edges;
      cv::Sobel(blurred, dx, CV_32F, 1, 0, 3, 1, 0, cv::BORDER_REPLICATE);
      cv::Sobel(blurred, dy, CV_32F, 0, 1, 3, 1, 0, cv::BORDER_REPLICATE);
      dx.convertTo(dx16, CV_16S, scale);
      dy.convertTo(dy16, CV_16S, scale);
      cv::Canny(dx16, dy16, edges, s.low * scale, s.high * scale, /*L2gradient=*/true);
      auto e = torch::from_blob(edges.data, {H, W}, torch::kUInt8).to(torch::kFloat32).div_(255);
      return e.unsqueeze(0).expand({C, H, W}).contiguous();
    }
    case kind::silhouette: {
      torch::Tensor mask;
      if (s.masks.empty()) {
        mask = luma(t, 0.299f, 0.587f, 0.114f).gt(s.threshold);
      } else {
        if (item.empty()) throw io_error("--transform silhouette:masks= needs a data set of image files (not IDX)");
        auto rel = std::filesystem::path(item).lexically_relative(std::filesystem::path(p.root).parent_path());
        if (std::filesystem::is_directory(p.root)) rel = std::filesystem::path(item).lexically_relative(p.root);
        const auto path = (std::filesystem::path(s.masks) / rel).replace_extension(".png").string();
        auto m = decode_image(path);
        m = convert_channels(std::move(m), 1);
        auto mt = geometry(to_float(std::move(m)).gt(0).to(torch::kFloat32).mul_(255), p)[0];
        if (mt.size(0) != H || mt.size(1) != W)
          throw io_error(quote_name(path) + ": the mask preprocesses to " + c10::str(mt.sizes()) + ", the image to " +
                         std::to_string(H) + "x" + std::to_string(W));
        mask = mt.gt(127.5);
      }
      return fill_holes(mask).to(torch::kFloat32).unsqueeze(0).expand({C, H, W}).contiguous();
    }
    default: return t;
  }
}

}  // namespace

torch::Tensor preprocess(image img, const preprocessing& p, std::int64_t id, const std::string& item) {
  img = convert_channels(std::move(img), p.channels);
  auto t = geometry(to_float(std::move(img)), p).div(255.0f);
  t = transform(std::move(t), p, id, item);
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

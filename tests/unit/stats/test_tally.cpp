// SPDX-License-Identifier: MIT
// Tests for include/shapebias/stats/tally.hpp (upsample_bilinear, iou_tally).
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <stdexcept>
#include <vector>

#include "shapebias/stats/tally.hpp"

using shapebias::stats::iou_tally;
using shapebias::stats::tally_image;
using shapebias::stats::union_rule;
using shapebias::stats::upsample_bilinear;

namespace {

/// The 2-D formula directly, in double: source coordinate (d + 0.5)·n/m − 0.5 clamped to [0, n−1].
std::vector<double> naive_upsample(const std::vector<float>& a, std::size_t h, std::size_t w, std::size_t sh,
                                   std::size_t sw) {
  auto coord = [](std::size_t d, std::size_t n, std::size_t m) {
    double s = (static_cast<double>(d) + 0.5) * static_cast<double>(n) / static_cast<double>(m) - 0.5;
    return std::min(std::max(s, 0.0), static_cast<double>(n - 1));
  };
  std::vector<double> out(sh * sw);
  for (std::size_t y = 0; y < sh; ++y)
    for (std::size_t x = 0; x < sw; ++x) {
      const double sy = coord(y, h, sh), sx = coord(x, w, sw);
      const auto y0 = static_cast<std::size_t>(std::floor(sy)), x0 = static_cast<std::size_t>(std::floor(sx));
      const std::size_t y1 = std::min(y0 + 1, h - 1), x1 = std::min(x0 + 1, w - 1);
      const double ty = sy - static_cast<double>(y0), tx = sx - static_cast<double>(x0);
      auto v = [&](std::size_t i, std::size_t j) { return static_cast<double>(a[i * w + j]); };
      out[y * sw + x] = (1 - ty) * ((1 - tx) * v(y0, x0) + tx * v(y0, x1)) + ty * ((1 - tx) * v(y1, x0) + tx * v(y1, x1));
    }
  return out;
}

std::vector<float> random_map(std::size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

/// Acts of one unit, 2x2, rows [0, 1]: upsampled to 4x4 every row is [0, .25, .75, 1]; T = 0.5
/// makes the mask columns 2 and 3 (|M| = 8).
const std::vector<float> two_by_two = {0.0f, 1.0f, 0.0f, 1.0f};
const float half = 0.5f;

// Labels 1, 2 of category 0; 3 of category 1; 4 (image-level) of category 1.
const std::vector<std::int32_t> prim = {-1, 0, 0, 1, 1};

const std::vector<std::int32_t> seg_a = {1, 1, 2, 2,  //
                                         1, 1, 2, 2,  //
                                         1, 1, 1, 0,  //
                                         3, 3, 1, 0};
const std::vector<std::int32_t> seg_b = {0, 0, 3, 3,  //
                                         0, 0, 0, 0,  //
                                         0, 0, 0, 0,  //
                                         0, 0, 0, 0};

bool same_counts(const iou_tally& a, const iou_tally& b) {
  if (a.units() != b.units() || a.labels() != b.labels() || a.categories() != b.categories() || a.images() != b.images())
    return false;
  for (std::size_t l = 0; l < a.labels(); ++l) {
    if (a.ground_truth(l) != b.ground_truth(l)) return false;
    for (std::size_t k = 0; k < a.units(); ++k)
      if (a.intersection(k, l) != b.intersection(k, l)) return false;
  }
  for (std::size_t k = 0; k < a.units(); ++k)
    for (std::size_t c = 0; c < a.categories(); ++c)
      if (a.activation(k, c) != b.activation(k, c)) return false;
  return true;
}

/// A random problem: U units of h x w, segmentations sh x sw with two layers, L labels, C categories.
struct random_problem {
  std::size_t u = 7, h = 3, w = 4, sh = 7, sw = 9, l = 9, c = 3, n = 5;
  std::vector<std::int32_t> primary;
  std::vector<float> thresholds;
  std::vector<std::vector<float>> acts;
  std::vector<std::vector<std::int32_t>> layers;  // 2 per image
  std::vector<std::vector<std::int32_t>> image_labels;

  explicit random_problem(unsigned seed) {
    std::mt19937 rng(seed);
    primary.assign(l, 0);
    for (std::size_t j = 1; j < l; ++j) primary[j] = static_cast<std::int32_t>(rng() % c);
    thresholds = random_map(u, seed + 1);
    for (auto& t : thresholds) t = 0.3f + 0.3f * t;
    for (std::size_t i = 0; i < n; ++i) {
      acts.push_back(random_map(u * h * w, seed + 10 + static_cast<unsigned>(i)));
      for (int y = 0; y < 2; ++y) {
        std::vector<std::int32_t> s(sh * sw);
        for (auto& v : s) v = static_cast<std::int32_t>(rng() % l);
        layers.push_back(s);
      }
      image_labels.push_back({static_cast<std::int32_t>(rng() % l)});
    }
  }
  std::vector<tally_image> images() const {
    std::vector<tally_image> v;
    for (std::size_t i = 0; i < n; ++i)
      v.push_back({acts[i].data(), {layers[2 * i].data(), layers[2 * i + 1].data()}, image_labels[i]});
    return v;
  }
};

}  // namespace

TEST_CASE("upsample_bilinear: identity size copies the map exactly", "[tally]") {
  const auto a = random_map(5 * 6, 1);
  std::vector<float> out(a.size());
  upsample_bilinear(a.data(), 5, 6, out.data(), 5, 6);
  CHECK(out == a);
  // one axis identical, the other up-sampled: the identical axis is exact
  std::vector<float> wide(5 * 12);
  upsample_bilinear(a.data(), 5, 6, wide.data(), 5, 12);
  const auto ref = naive_upsample(a, 5, 6, 5, 12);
  for (std::size_t j = 0; j < wide.size(); ++j) CHECK(wide[j] == Approx(ref[j]).margin(1e-6));
}

TEST_CASE("upsample_bilinear: 2x2 -> 4x4 by hand, edges clamped", "[tally]") {
  const std::vector<float> a = {1, 2, 3, 4};
  std::vector<float> out(16);
  upsample_bilinear(a.data(), 2, 2, out.data(), 4, 4);
  // source coordinates -0.25 (clamped to 0), 0.25, 0.75, 1.25 (clamped to 1)
  const std::vector<float> expect = {1.0f, 1.25f, 1.75f, 2.0f,   //
                                     1.5f, 1.75f, 2.25f, 2.5f,   //
                                     2.5f, 2.75f, 3.25f, 3.5f,   //
                                     3.0f, 3.25f, 3.75f, 4.0f};
  CHECK(out == expect);
}

TEST_CASE("upsample_bilinear: 1-pixel rows and 1x1 maps replicate the edge", "[tally]") {
  const std::vector<float> one = {7.5f};
  std::vector<float> out(12);
  upsample_bilinear(one.data(), 1, 1, out.data(), 3, 4);
  for (float v : out) CHECK(v == 7.5f);
  const std::vector<float> row = {0.0f, 4.0f};  // 1x2 -> 2x4
  std::vector<float> o2(8);
  upsample_bilinear(row.data(), 1, 2, o2.data(), 2, 4);
  CHECK(o2 == std::vector<float>{0, 1, 3, 4, 0, 1, 3, 4});
}

TEST_CASE("upsample_bilinear agrees with the naive 2-D formula (2x and non-integer ratios)", "[tally]") {
  struct sz {
    std::size_t h, w, sh, sw;
  };
  for (auto s : {sz{4, 4, 8, 8}, sz{3, 5, 6, 10}, sz{3, 4, 7, 9}, sz{7, 7, 112, 112}, sz{2, 3, 13, 5}}) {
    const auto a = random_map(s.h * s.w, static_cast<unsigned>(s.h * 100 + s.sw));
    std::vector<float> out(s.sh * s.sw);
    upsample_bilinear(a.data(), s.h, s.w, out.data(), s.sh, s.sw);
    const auto ref = naive_upsample(a, s.h, s.w, s.sh, s.sw);
    for (std::size_t j = 0; j < out.size(); ++j) CHECK(out[j] == Approx(ref[j]).margin(1e-6));
    // never beyond the range of the input
    CHECK(*std::max_element(out.begin(), out.end()) <= *std::max_element(a.begin(), a.end()));
    CHECK(*std::min_element(out.begin(), out.end()) >= *std::min_element(a.begin(), a.end()));
  }
  // double input
  const std::vector<double> d = {0.0, 2.0, 4.0, 6.0};
  std::vector<float> out(16);
  upsample_bilinear(d.data(), 2, 2, out.data(), 4, 4);
  CHECK(out[5] == 1.5f);  // (0.25, 0.25): .75·.75·0 + .75·.25·2 + .25·.75·4 + .25·.25·6
}

TEST_CASE("upsample_bilinear refuses down-sampling and empty maps", "[tally]") {
  const std::vector<float> a(16, 1.0f);
  std::vector<float> out(16);
  CHECK_THROWS_AS(upsample_bilinear(a.data(), 4, 4, out.data(), 3, 4), std::invalid_argument);
  CHECK_THROWS_AS(upsample_bilinear(a.data(), 4, 4, out.data(), 4, 2), std::invalid_argument);
  CHECK_THROWS_AS(upsample_bilinear(a.data(), 0, 4, out.data(), 4, 4), std::invalid_argument);
}

TEST_CASE("tally: 1 unit, 2x2 activation, 4x4 segmentation by hand", "[tally]") {
  for (auto rule : {union_rule::lite, union_rule::original}) {
    iou_tally t(1, 5, 2, prim, rule);
    t.update_image(two_by_two.data(), 2, 2, &half, {seg_a.data()}, 4, 4, {});
    CHECK(t.images() == 1);
    // G: label 1 on 8 pixels, 2 on 4, 3 on 2, label 0 (2 pixels) ignored
    CHECK(t.ground_truth(0) == 0);
    CHECK(t.ground_truth(1) == 8);
    CHECK(t.ground_truth(2) == 4);
    CHECK(t.ground_truth(3) == 2);
    CHECK(t.ground_truth(4) == 0);
    // M = columns 2, 3: labels 2,2,2,2,1,0,1,0
    CHECK(t.intersection(0, 0) == 0);
    CHECK(t.intersection(0, 1) == 2);
    CHECK(t.intersection(0, 2) == 4);
    CHECK(t.intersection(0, 3) == 0);
    CHECK(t.activation(0, 0) == 8);
    // category 1 (label 3) is in the image but not inside the mask
    CHECK(t.activation(0, 1) == (rule == union_rule::lite ? 0u : 8u));
    CHECK(t.iou(0, 1) == Approx(2.0 / (14.0 + 1e-10)).epsilon(1e-15));
    CHECK(t.iou(0, 2) == Approx(4.0 / (8.0 + 1e-10)).epsilon(1e-15));
    CHECK(t.iou(0, 3) == 0.0);
    const auto b = t.best(0);
    CHECK(b.label == 2);
    CHECK(b.category == 0);
    CHECK(b.iou == t.iou(0, 2));
    CHECK_FALSE(b.dead);
    const auto m = t.iou_matrix();
    CHECK(m(0, 2) == t.iou(0, 2));
    CHECK(m(0, 0) == 0.0);
  }
}

TEST_CASE("tally: image-level labels cover the whole image", "[tally]") {
  iou_tally t(1, 5, 2, prim);
  t.update_image(two_by_two.data(), 2, 2, &half, {seg_a.data()}, 4, 4, {4, 0});  // label 0 ignored
  CHECK(t.ground_truth(4) == 16);
  CHECK(t.ground_truth(0) == 0);
  CHECK(t.intersection(0, 4) == 8);
  CHECK(t.activation(0, 0) == 8);
  CHECK(t.activation(0, 1) == 8);  // image-level label of category 1
  CHECK(t.iou(0, 4) == Approx(8.0 / (8 + 16 - 8 + 1e-10)).epsilon(1e-15));
  CHECK(t.best(0).label == 4);  // 8/(16 + 1e-10) just beats label 2's 4/(8 + 1e-10)
}

TEST_CASE("tally: ties go to the lowest label; a unit that never fires is dead", "[tally]") {
  iou_tally t(2, 5, 2, prim);
  const std::vector<float> acts = {0, 1, 0, 1, /* unit 1 never above */ 0, 0, 0, 0};
  const std::vector<float> thr = {0.5f, 0.5f};
  // M = columns 2, 3; label 2 fills column 2, label 1 column 3: the same counts, the same IoU
  const std::vector<std::int32_t> seg = {0, 0, 2, 1, 0, 0, 2, 1, 0, 0, 2, 1, 0, 0, 2, 1};
  t.update_image(acts.data(), 2, 2, thr.data(), {seg.data()}, 4, 4, {});
  CHECK(t.iou(0, 1) == t.iou(0, 2));
  CHECK(t.iou(0, 1) == Approx(4.0 / (8.0 + 1e-10)).epsilon(1e-15));
  CHECK(t.best(0).label == 1);
  const auto d = t.best(1);
  CHECK(d.dead);
  CHECK(d.iou == 0.0);
  CHECK(d.label == 1);
}

TEST_CASE("tally: lite and original unions differ; lite IoU >= original", "[tally]") {
  iou_tally lite(1, 5, 2, prim, union_rule::lite), orig(1, 5, 2, prim, union_rule::original);
  for (auto* t : {&lite, &orig}) {
    t->update_image(two_by_two.data(), 2, 2, &half, {seg_a.data()}, 4, 4, {});  // label 3 outside M
    t->update_image(two_by_two.data(), 2, 2, &half, {seg_b.data()}, 4, 4, {});  // label 3 inside M
  }
  CHECK(lite.ground_truth(3) == 4);
  CHECK(orig.ground_truth(3) == 4);
  CHECK(lite.intersection(0, 3) == 2);
  CHECK(orig.intersection(0, 3) == 2);
  CHECK(lite.activation(0, 1) == 8);   // only image B has a category-1 label inside the mask
  CHECK(orig.activation(0, 1) == 16);  // both images have one somewhere
  CHECK(lite.activation(0, 0) == 8);   // image B has no category-0 label at all: both rules agree
  CHECK(orig.activation(0, 0) == 8);
  CHECK(lite.iou(0, 3) == Approx(2.0 / (10.0 + 1e-10)).epsilon(1e-15));
  CHECK(orig.iou(0, 3) == Approx(2.0 / (18.0 + 1e-10)).epsilon(1e-15));
  for (std::size_t l = 1; l < 5; ++l) CHECK(lite.iou(0, l) >= orig.iou(0, l));

  random_problem p(5);
  iou_tally rl(p.u, p.l, p.c, p.primary, union_rule::lite), ro(p.u, p.l, p.c, p.primary, union_rule::original);
  rl.update_images(p.images(), p.h, p.w, p.thresholds.data(), p.sh, p.sw);
  ro.update_images(p.images(), p.h, p.w, p.thresholds.data(), p.sh, p.sw);
  for (std::size_t k = 0; k < p.u; ++k)
    for (std::size_t l = 1; l < p.l; ++l) {
      CHECK(rl.intersection(k, l) == ro.intersection(k, l));
      CHECK(rl.iou(k, l) >= ro.iou(k, l));
    }
}

TEST_CASE("tally: max <= T skips the unit; max > T with an empty upsampled mask adds nothing", "[tally]") {
  iou_tally t(1, 5, 2, prim);
  const float at_max = 1.0f;
  t.update_image(two_by_two.data(), 2, 2, &at_max, {seg_a.data()}, 4, 4, {4});
  CHECK(t.ground_truth(1) == 8);  // ground truth still counts
  CHECK(t.ground_truth(4) == 16);
  for (std::size_t l = 0; l < 5; ++l) CHECK(t.intersection(0, l) == 0);
  CHECK(t.activation(0, 0) == 0);
  CHECK(t.activation(0, 1) == 0);
  CHECK(t.best(0).dead);

  // 3x3 with a single central peak, up-sampled 2x: the centre is never sampled exactly, the
  // highest upsampled value is .75·.75 = .5625 < 0.9 < 1 = max.
  const std::vector<float> peak = {0, 0, 0, 0, 1, 0, 0, 0, 0};
  const std::vector<std::int32_t> seg(36, 1);
  const float thr = 0.9f;
  iou_tally e(1, 5, 2, prim);
  e.update_image(peak.data(), 3, 3, &thr, {seg.data()}, 6, 6, {});
  CHECK(e.ground_truth(1) == 36);
  CHECK(e.intersection(0, 1) == 0);
  CHECK(e.activation(0, 0) == 0);
}

TEST_CASE("tally: several label layers count once per layer", "[tally]") {
  iou_tally t(1, 5, 2, prim);
  t.update_image(two_by_two.data(), 2, 2, &half, {seg_a.data(), seg_b.data()}, 4, 4, {});
  CHECK(t.ground_truth(3) == 4);
  CHECK(t.intersection(0, 3) == 2);
  CHECK(t.intersection(0, 2) == 4);
  CHECK(t.activation(0, 1) == 8);  // label 3 inside the mask in layer 2
}

TEST_CASE("tally: merge of two tallies equals one tally over both images", "[tally]") {
  random_problem p(11);
  for (auto rule : {union_rule::lite, union_rule::original}) {
    iou_tally all(p.u, p.l, p.c, p.primary, rule), first(all), second(all);
    const auto ims = p.images();
    all.update_images(ims, p.h, p.w, p.thresholds.data(), p.sh, p.sw);
    for (std::size_t i = 0; i < ims.size(); ++i)
      (i < 2 ? first : second)
          .update_image(ims[i].acts, p.h, p.w, p.thresholds.data(), ims[i].label_layers, p.sh, p.sw, ims[i].image_labels);
    first.merge(second);
    CHECK(same_counts(first, all));
    for (std::size_t k = 0; k < p.u; ++k) CHECK(first.best(k).iou == all.best(k).iou);
    // merging with itself doubles every count
    iou_tally twice = all;
    twice.merge(twice);
    CHECK(twice.images() == 2 * all.images());
    CHECK(twice.intersection(0, 1) == 2 * all.intersection(0, 1));
    CHECK(twice.ground_truth(2) == 2 * all.ground_truth(2));
  }
}

TEST_CASE("tally: results do not depend on the thread count", "[tally]") {
  random_problem p(23);
  iou_tally ref(p.u, p.l, p.c, p.primary);
  ref.update_images(p.images(), p.h, p.w, p.thresholds.data(), p.sh, p.sw, 1);
  std::uint64_t total = 0;
  for (std::size_t k = 0; k < p.u; ++k) total += ref.activation(k, 0) + ref.activation(k, 1) + ref.activation(k, 2);
  CHECK(total > 0);  // the case exercises the mask
  for (unsigned threads : {2u, 3u, 7u, 16u}) {
    iou_tally t(p.u, p.l, p.c, p.primary);
    t.update_images(p.images(), p.h, p.w, p.thresholds.data(), p.sh, p.sw, threads);
    CHECK(same_counts(t, ref));
  }
}

namespace {

/// The tally the slow way, pixel by pixel over upsample_bilinear's mask: [G, I, A] flattened.
std::vector<std::uint64_t> per_pixel_tally(const random_problem& p, union_rule rule) {
  std::vector<std::uint64_t> g(p.l, 0), in(p.u * p.l, 0), a(p.u * p.c, 0);
  std::vector<float> up(p.sh * p.sw);
  for (std::size_t i = 0; i < p.n; ++i) {
    const std::int32_t* lay[2] = {p.layers[2 * i].data(), p.layers[2 * i + 1].data()};
    std::vector<char> anywhere(p.c, 0);
    for (auto* layer : lay)
      for (std::size_t q = 0; q < p.sh * p.sw; ++q)
        if (layer[q]) ++g[static_cast<std::size_t>(layer[q])], anywhere[static_cast<std::size_t>(p.primary[layer[q]])] = 1;
    for (auto s : p.image_labels[i])
      if (s) g[static_cast<std::size_t>(s)] += p.sh * p.sw, anywhere[static_cast<std::size_t>(p.primary[s])] = 1;
    for (std::size_t k = 0; k < p.u; ++k) {
      upsample_bilinear(p.acts[i].data() + k * p.h * p.w, p.h, p.w, up.data(), p.sh, p.sw);
      std::vector<char> cats = rule == union_rule::original ? anywhere : std::vector<char>(p.c, 0);
      std::uint64_t m = 0;
      for (std::size_t q = 0; q < p.sh * p.sw; ++q)
        if (up[q] > p.thresholds[k]) {
          ++m;
          for (auto* layer : lay)
            if (layer[q]) ++in[k * p.l + static_cast<std::size_t>(layer[q])], cats[static_cast<std::size_t>(p.primary[layer[q]])] = 1;
        }
      if (m == 0) continue;
      for (auto s : p.image_labels[i])
        if (s) in[k * p.l + static_cast<std::size_t>(s)] += m, cats[static_cast<std::size_t>(p.primary[s])] = 1;
      for (std::size_t c = 0; c < p.c; ++c)
        if (cats[c]) a[k * p.c + c] += m;
    }
  }
  g.insert(g.end(), in.begin(), in.end());
  g.insert(g.end(), a.begin(), a.end());
  return g;
}

std::vector<std::uint64_t> counts(const iou_tally& t) {
  std::vector<std::uint64_t> v;
  for (std::size_t l = 0; l < t.labels(); ++l) v.push_back(l ? t.ground_truth(l) : 0);
  for (std::size_t k = 0; k < t.units(); ++k)
    for (std::size_t l = 0; l < t.labels(); ++l) v.push_back(l ? t.intersection(k, l) : 0);
  for (std::size_t k = 0; k < t.units(); ++k)
    for (std::size_t c = 0; c < t.categories(); ++c) v.push_back(t.activation(k, c));
  return v;
}

}  // namespace

TEST_CASE("tally equals a per-pixel count over upsample_bilinear's mask (sparse and dense, noise and runs)", "[tally]") {
  for (unsigned seed : {3u, 8u}) {
    random_problem p(seed);
    // Larger maps, non-integer ratios, and segmentations in runs that cross rows (as real ones do)
    // next to the pixel noise of random_problem.
    p.h = 13, p.w = 11, p.sh = 40, p.sw = 37, p.n = 4;
    std::mt19937 rng(seed);
    for (std::size_t i = 0; i < p.n; ++i) {
      p.acts[i] = random_map(p.u * p.h * p.w, seed + 100 + static_cast<unsigned>(i));
      for (int y = 0; y < 2; ++y) {
        auto& s = p.layers[2 * i + static_cast<std::size_t>(y)];
        s.resize(p.sh * p.sw);
        for (std::size_t q = 0; q < s.size();) {  // runs of 1..60 pixels, or noise in layer 1 of image 0
          const std::size_t len = (i == 0 && y == 1) ? 1 : 1 + rng() % 60;
          const auto l = static_cast<std::int32_t>(rng() % p.l);
          for (std::size_t r = 0; r < len && q < s.size(); ++r) s[q++] = l;
        }
      }
    }
    for (float level : {1.5f, 0.0f}) {  // ~ few units pass, most pass
      std::fill(p.thresholds.begin(), p.thresholds.end(), level);
      for (auto rule : {union_rule::lite, union_rule::original}) {
        iou_tally t(p.u, p.l, p.c, p.primary, rule);
        t.update_images(p.images(), p.h, p.w, p.thresholds.data(), p.sh, p.sw, 2);
        const auto ref = per_pixel_tally(p, rule);
        CHECK(counts(t) == ref);
        std::uint64_t inside = 0;
        for (std::size_t k = 0; k < p.u; ++k) inside += t.intersection(k, 1) + t.intersection(k, 2);
        CHECK(inside > 0);  // the case exercises the mask
      }
    }
  }
}

TEST_CASE("tally: a bad label is named at its first pixel, in the first bad image of a batch", "[tally]") {
  random_problem p(4);
  auto& s = p.layers[2 * 3 + 1];  // image 3, layer 1: a run of label 99 from row 1, column 7 into row 2
  for (std::size_t q = 1 * p.sw + 7; q < 2 * p.sw + 3; ++q) s[q] = 99;
  p.layers[2 * 4][0] = -2;  // image 4 is bad too, but later
  for (unsigned threads : {1u, 2u, 5u}) {
    iou_tally t(p.u, p.l, p.c, p.primary);
    CHECK_THROWS_WITH(t.update_images(p.images(), p.h, p.w, p.thresholds.data(), p.sh, p.sw, threads),
                      Catch::Equals("iou_tally: image 3: label layer 1, pixel " + std::to_string(p.sw + 7) +
                                    " has label 99, not in [0, 9)"));
    CHECK(t.images() == 0);
    CHECK(counts(t) == std::vector<std::uint64_t>(counts(t).size(), 0));
  }
}

TEST_CASE("tally: save and load round-trip", "[tally]") {
  random_problem p(31);
  iou_tally t(p.u, p.l, p.c, p.primary, union_rule::original);
  auto ims = p.images();
  t.update_images({ims.begin(), ims.begin() + 3}, p.h, p.w, p.thresholds.data(), p.sh, p.sw);
  auto back = iou_tally::load(t.save());
  CHECK(back.rule() == union_rule::original);
  CHECK(back.primary() == p.primary);
  CHECK(same_counts(back, t));
  // a loaded tally continues like the original
  t.update_images({ims.begin() + 3, ims.end()}, p.h, p.w, p.thresholds.data(), p.sh, p.sw);
  back.update_images({ims.begin() + 3, ims.end()}, p.h, p.w, p.thresholds.data(), p.sh, p.sw);
  CHECK(same_counts(back, t));
  auto s = t.save();
  s.kind = "tv";
  CHECK_THROWS_AS(iou_tally::load(s), std::invalid_argument);
  s = t.save();
  s.arrays["intersection"] = xt::zeros<double>({2});
  CHECK_THROWS_AS(iou_tally::load(s), std::invalid_argument);
}

TEST_CASE("tally: errors", "[tally]") {
  CHECK_THROWS_AS(iou_tally(1, 5, 2, {-1, 0, 0, 1}), std::invalid_argument);        // primary size
  CHECK_THROWS_AS(iou_tally(1, 5, 2, {-1, 0, 0, 2, 1}), std::invalid_argument);     // category >= C
  CHECK_THROWS_AS(iou_tally(1, 1, 2, {-1}), std::invalid_argument);                 // no labels
  iou_tally t(1, 5, 2, prim);
  auto bad = seg_a;
  bad[5] = 5;  // label >= L
  CHECK_THROWS_WITH(t.update_image(two_by_two.data(), 2, 2, &half, {bad.data()}, 4, 4, {}),
                    Catch::Contains("label 5") && Catch::Contains("pixel 5"));
  bad[5] = -1;
  CHECK_THROWS_AS(t.update_image(two_by_two.data(), 2, 2, &half, {bad.data()}, 4, 4, {}), std::invalid_argument);
  CHECK_THROWS_WITH(t.update_image(two_by_two.data(), 2, 2, &half, {seg_a.data()}, 4, 4, {7}),
                    Catch::Contains("image-level label 7"));
  CHECK_THROWS_AS(t.update_image(two_by_two.data(), 2, 2, &half, {seg_a.data()}, 1, 4, {}), std::invalid_argument);
  CHECK_THROWS_AS(t.update_image(two_by_two.data(), 0, 2, &half, {seg_a.data()}, 4, 4, {}), std::invalid_argument);
  CHECK_THROWS_AS(t.update_image(two_by_two.data(), 2, 2, &half, {nullptr}, 4, 4, {}), std::invalid_argument);
  const float nan_t = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_AS(t.update_image(two_by_two.data(), 2, 2, &nan_t, {seg_a.data()}, 4, 4, {}), std::invalid_argument);
  const std::vector<float> nan_acts = {0, nan_t, 0, 1};
  CHECK_THROWS_AS(t.update_image(nan_acts.data(), 2, 2, &half, {seg_a.data()}, 4, 4, {}), std::invalid_argument);
  // a batch with one bad image adds nothing
  CHECK_THROWS_AS(t.update_images({{two_by_two.data(), {seg_a.data()}, {}}, {two_by_two.data(), {seg_a.data()}, {9}}},
                                  2, 2, &half, 4, 4),
                  std::invalid_argument);
  CHECK(t.images() == 0);
  CHECK(t.ground_truth(1) == 0);
  CHECK_THROWS_AS(t.iou(1, 1), std::out_of_range);
  CHECK_THROWS_AS(t.iou(0, 5), std::out_of_range);
  // merge mismatches
  CHECK_THROWS_AS(t.merge(iou_tally(2, 5, 2, prim)), std::invalid_argument);
  CHECK_THROWS_AS(t.merge(iou_tally(1, 5, 3, prim)), std::invalid_argument);
  CHECK_THROWS_AS(t.merge(iou_tally(1, 5, 2, {-1, 0, 1, 1, 1})), std::invalid_argument);
  CHECK_THROWS_WITH(t.merge(iou_tally(1, 5, 2, prim, union_rule::original)), Catch::Contains("union rule"));
}

// SPDX-License-Identifier: MIT
// NetDissect IoU tally (peers.md §5.2, "Step 3 — tally").
//
//   upsample_bilinear  PIL-bilinear / interpolate(align_corners=False) up-sampling of a float map:
//                      source coordinate (d + 0.5)·h/sh − 0.5, clamped to [0, h−1] (edge replication).
//   iou_tally          per image, per unit: ground truth G[label], intersections I[unit, label] and
//                      category-conditioned activation areas A_cat[unit, category] as exact integer
//                      counts; IoU = I / (A_cat[k, primary(label)] + G − I + 1e−10).
//
// Label 0 means unlabelled and is always ignored. Counts are uint64, so results do not depend on the
// thread count (units are independent; each unit's row is written by one thread only).
#pragma once

#include <xtensor/xarray.hpp>
#include <xtensor/xbuilder.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "shapebias/stats/detail.hpp"
#include "shapebias/stats/state.hpp"

namespace shapebias::stats {

namespace detail {

/// Index pair and weight of the upper neighbour for output position d of n_out from n_in values.
struct lerp_tap {
  std::size_t i0, i1;
  double t;  // weight of i1; 1 − t for i0
};

inline std::vector<lerp_tap> lerp_taps(std::size_t n_in, std::size_t n_out) {
  std::vector<lerp_tap> taps(n_out);
  const double scale = static_cast<double>(n_in) / static_cast<double>(n_out);
  for (std::size_t d = 0; d < n_out; ++d) {
    double s = (static_cast<double>(d) + 0.5) * scale - 0.5;
    s = std::min(std::max(s, 0.0), static_cast<double>(n_in - 1));
    const auto i0 = static_cast<std::size_t>(std::floor(s));
    const std::size_t i1 = std::min(i0 + 1, n_in - 1);
    taps[d] = {i0, i1, i1 == i0 ? 0.0 : s - static_cast<double>(i0)};
  }
  return taps;
}

/// The interpolation of both passes of upsample_bilinear, in double: a itself where t = 0. One
/// definition, so the masked tally path (iou_tally) computes bit-identical values.
inline double lerp(double a, double b, double t) { return t == 0.0 ? a : (1.0 - t) * a + t * b; }

/// The constants of masked up-sampling of h × w maps to sh × sw: the taps of both axes and, per
/// source column j, the range of output columns whose taps can read column j.
struct mask_geometry {
  std::size_t h, w, sh, sw;
  std::vector<lerp_tap> tx, ty;
  std::vector<std::size_t> x_first, x_last;  // first output x with tx[x].i1 ≥ j; last with tx[x].i0 ≤ j

  mask_geometry(std::size_t h_, std::size_t w_, std::size_t sh_, std::size_t sw_)
      : h(h_), w(w_), sh(sh_), sw(sw_), tx(lerp_taps(w_, sw_)), ty(lerp_taps(h_, sh_)), x_first(w_), x_last(w_) {
    for (std::size_t j = 0; j < w; ++j) {
      std::size_t a = 0;
      while (a + 1 < sw && tx[a].i1 < j) ++a;
      std::size_t b = sw - 1;
      while (b > 0 && tx[b].i0 > j) --b;
      x_first[j] = a;
      x_last[j] = b;
    }
  }
};

}  // namespace detail

/// Bilinear up-sampling of the row-major h × w map to sh × sw floats in `out`, with pixel-centre
/// alignment and edge clamping. Separable like PIL: a horizontal pass (double arithmetic, rounded
/// to float) then a vertical pass. A size equal to the input's copies that axis exactly.
/// Refuses empty maps and down-sampling (sh < h or sw < w).
template <class T>
void upsample_bilinear(const T* map, std::size_t h, std::size_t w, float* out, std::size_t sh, std::size_t sw) {
  if (h == 0 || w == 0) throw std::invalid_argument("upsample_bilinear: empty map " + detail::shape_string({h, w}));
  if (sh < h || sw < w)
    throw std::invalid_argument("upsample_bilinear: output " + detail::shape_string({sh, sw}) + " is smaller than input " +
                                detail::shape_string({h, w}) + " (up-sampling only)");
  const auto tx = detail::lerp_taps(w, sw), ty = detail::lerp_taps(h, sh);
  std::vector<float> rows(h * sw);
  for (std::size_t i = 0; i < h; ++i)
    for (std::size_t x = 0; x < sw; ++x) {
      const auto& p = tx[x];
      rows[i * sw + x] =
          static_cast<float>(detail::lerp(static_cast<double>(map[i * w + p.i0]), static_cast<double>(map[i * w + p.i1]), p.t));
    }
  for (std::size_t y = 0; y < sh; ++y) {
    const auto& p = ty[y];
    const float *r0 = rows.data() + p.i0 * sw, *r1 = rows.data() + p.i1 * sw;
    for (std::size_t x = 0; x < sw; ++x)
      out[y * sw + x] = static_cast<float>(detail::lerp(static_cast<double>(r0[x]), static_cast<double>(r1[x]), p.t));
  }
}

/// Which images a unit's activation area counts towards a category's union.
///   lite:     the image has a label of primary category c inside the mask (or an image-level one).
///   original: the image has a label of primary category c anywhere (pixel- or image-level).
enum class union_rule { lite, original };

inline std::string to_string(union_rule r) { return r == union_rule::original ? "original" : "lite"; }
inline union_rule parse_union_rule(const std::string& s) {
  if (s == "lite") return union_rule::lite;
  if (s == "original") return union_rule::original;
  throw std::invalid_argument("union rule '" + s + "' is not one of lite, original");
}

/// One image of a tally: activations [U, h, w], segmentation layers of sh × sw labels each, and
/// image-level labels (applied to the whole image).
struct tally_image {
  const float* acts = nullptr;
  std::vector<const std::int32_t*> label_layers;
  std::vector<std::int32_t> image_labels;
};

/// The best label of a unit.
struct tally_best {
  std::int32_t label = 0;     // argmax of IoU over labels ≠ 0; lowest label on ties
  std::int32_t category = 0;  // primary category of that label
  double iou = 0;
  bool dead = true;  // IoU 0 for every label (the label is then label 1, meaningless)
};

class iou_tally {
 public:
  /// units U, labels L (label 0 = unlabelled), categories C, primary[L] (the primary category of
  /// each label, in [0, C); primary[0] is ignored).
  iou_tally(std::size_t units, std::size_t labels, std::size_t categories, std::vector<std::int32_t> primary,
            union_rule rule = union_rule::lite)
      : u_(units), l_(labels), c_(categories), primary_(std::move(primary)), rule_(rule),
        g_(labels, 0), i_(units * labels, 0), a_(units * categories, 0) {
    if (labels < 2) throw std::invalid_argument("iou_tally needs at least 2 labels (label 0 is unlabelled)");
    if (categories == 0) throw std::invalid_argument("iou_tally needs at least 1 category");
    if (primary_.size() != labels)
      throw std::invalid_argument("iou_tally: primary has " + std::to_string(primary_.size()) + " entries for " +
                                  std::to_string(labels) + " labels");
    for (std::size_t l = 1; l < labels; ++l)
      if (primary_[l] < 0 || static_cast<std::size_t>(primary_[l]) >= categories)
        throw std::invalid_argument("iou_tally: primary category of label " + std::to_string(l) + " is " +
                                    std::to_string(primary_[l]) + ", not in [0, " + std::to_string(categories) + ")");
  }

  /// Adds one image: acts [U, h, w] (finite), thresholds [U] (finite), label layers of sh × sw
  /// labels in [0, L), image-level labels in [0, L) (0 ignored). Checks everything before changing
  /// the tally. Units run on up to `threads` threads.
  void update_image(const float* acts, std::size_t h, std::size_t w, const float* thresholds,
                    const std::vector<const std::int32_t*>& label_layers, std::size_t sh, std::size_t sw,
                    const std::vector<std::int32_t>& image_labels, unsigned threads = 1) {
    add_images({tally_image{acts, label_layers, image_labels}}, h, w, thresholds, sh, sw, threads);
  }

  /// Adds a batch of images, all with maps of h × w and segmentations of sh × sw; checks every
  /// image before adding any. Faster per image than update_image at several threads (the threads
  /// start once per batch).
  void update_images(const std::vector<tally_image>& images, std::size_t h, std::size_t w, const float* thresholds,
                     std::size_t sh, std::size_t sw, unsigned threads = 1) {
    add_images(images, h, w, thresholds, sh, sw, threads);
  }

  /// Adds another tally's counts. Refuses different units, labels, categories, primary or rule.
  void merge(const iou_tally& o) {
    if (o.u_ != u_ || o.l_ != l_ || o.c_ != c_)
      throw std::invalid_argument("cannot merge an iou_tally of " + std::to_string(o.u_) + " units, " +
                                  std::to_string(o.l_) + " labels, " + std::to_string(o.c_) + " categories into one of " +
                                  std::to_string(u_) + ", " + std::to_string(l_) + ", " + std::to_string(c_));
    if (o.primary_ != primary_) throw std::invalid_argument("cannot merge iou_tallies with different primary categories");
    if (o.rule_ != rule_)
      throw std::invalid_argument("cannot merge an iou_tally with union rule " + to_string(o.rule_) + " into one with " +
                                  to_string(rule_));
    const std::uint64_t im = o.images_;  // o may be *this: read each value before adding to it
    for (std::size_t j = 0; j < g_.size(); ++j) g_[j] += o.g_[j];
    for (std::size_t j = 0; j < i_.size(); ++j) i_[j] += o.i_[j];
    for (std::size_t j = 0; j < a_.size(); ++j) a_[j] += o.a_[j];
    images_ += im;
  }

  std::size_t units() const noexcept { return u_; }
  std::size_t labels() const noexcept { return l_; }
  std::size_t categories() const noexcept { return c_; }
  union_rule rule() const noexcept { return rule_; }
  const std::vector<std::int32_t>& primary() const noexcept { return primary_; }
  std::uint64_t images() const noexcept { return images_; }

  std::uint64_t ground_truth(std::size_t label) const { return g_.at(check_label(label)); }
  std::uint64_t intersection(std::size_t k, std::size_t label) const { return i_[check_unit(k) * l_ + check_label(label)]; }
  std::uint64_t activation(std::size_t k, std::size_t c) const {
    if (c >= c_) throw std::out_of_range("iou_tally: category " + std::to_string(c) + " >= " + std::to_string(c_));
    return a_[check_unit(k) * c_ + c];
  }

  /// I / (A_cat[k, primary(label)] + G − I + 1e−10).
  double iou(std::size_t k, std::size_t label) const {
    check_unit(k);
    check_label(label);
    const double in = static_cast<double>(i_[k * l_ + label]);
    const double a = static_cast<double>(a_[k * c_ + static_cast<std::size_t>(primary_[label])]);
    return in / (a + static_cast<double>(g_[label]) - in + 1e-10);
  }

  /// The IoU of every unit and label, [U, L] (label 0's column is 0).
  xt::xarray<double> iou_matrix() const {
    xt::xarray<double> m = xt::zeros<double>({u_, l_});
    for (std::size_t k = 0; k < u_; ++k)
      for (std::size_t l = 1; l < l_; ++l) m(k, l) = iou(k, l);
    return m;
  }

  tally_best best(std::size_t k) const {
    check_unit(k);
    tally_best b;
    b.label = 1;
    b.iou = iou(k, 1);
    for (std::size_t l = 2; l < l_; ++l) {
      const double v = iou(k, l);
      if (v > b.iou) {
        b.iou = v;
        b.label = static_cast<std::int32_t>(l);
      }
    }
    b.category = primary_[static_cast<std::size_t>(b.label)];
    b.dead = !(b.iou > 0);
    return b;
  }

  state save() const {
    state s;
    s.kind = "iou_tally";
    s.params = {{"version", 1.0}, {"units", static_cast<double>(u_)}, {"labels", static_cast<double>(l_)},
                {"categories", static_cast<double>(c_)}, {"images", static_cast<double>(images_)}};
    s.text = {{"rule", to_string(rule_)}};
    xt::xarray<double> p = xt::zeros<double>({l_}), g = p, in = xt::zeros<double>({u_, l_}), a = xt::zeros<double>({u_, c_});
    for (std::size_t j = 0; j < l_; ++j) {
      p(j) = primary_[j];
      g(j) = static_cast<double>(g_[j]);
    }
    for (std::size_t j = 0; j < i_.size(); ++j) in.data()[j] = static_cast<double>(i_[j]);
    for (std::size_t j = 0; j < a_.size(); ++j) a.data()[j] = static_cast<double>(a_[j]);
    s.arrays = {{"primary", p}, {"ground_truth", g}, {"intersection", in}, {"activation", a}};
    return s;
  }

  static iou_tally load(const state& s) {
    s.expect_kind("iou_tally");
    if (s.param("version") != 1.0) throw std::invalid_argument("iou_tally state: unknown version (possible corruption)");
    const auto u = static_cast<std::size_t>(s.param("units")), l = static_cast<std::size_t>(s.param("labels")),
               c = static_cast<std::size_t>(s.param("categories"));
    const auto &p = s.array("primary"), &g = s.array("ground_truth"), &in = s.array("intersection"),
               &a = s.array("activation");
    if (p.size() != l || g.size() != l || in.size() != u * l || a.size() != u * c)
      throw std::invalid_argument("iou_tally state: array sizes do not match units, labels and categories");
    std::vector<std::int32_t> prim(l);
    for (std::size_t j = 0; j < l; ++j) prim[j] = static_cast<std::int32_t>(p(j));
    iou_tally t(u, l, c, std::move(prim), parse_union_rule(s.choice("rule")));
    for (std::size_t j = 0; j < l; ++j) t.g_[j] = static_cast<std::uint64_t>(g(j));
    for (std::size_t j = 0; j < t.i_.size(); ++j) t.i_[j] = static_cast<std::uint64_t>(in.data()[j]);
    for (std::size_t j = 0; j < t.a_.size(); ++j) t.a_[j] = static_cast<std::uint64_t>(a.data()[j]);
    t.images_ = static_cast<std::uint64_t>(s.param("images"));
    return t;
  }

 private:
  std::size_t check_unit(std::size_t k) const {
    if (k >= u_) throw std::out_of_range("iou_tally: unit " + std::to_string(k) + " >= " + std::to_string(u_));
    return k;
  }
  std::size_t check_label(std::size_t l) const {
    if (l >= l_) throw std::out_of_range("iou_tally: label " + std::to_string(l) + " >= " + std::to_string(l_));
    return l;
  }

  void check_sizes(std::size_t h, std::size_t w, const float* thresholds, std::size_t sh, std::size_t sw) const {
    if (h == 0 || w == 0) throw std::invalid_argument("iou_tally: empty activation map " + detail::shape_string({h, w}));
    if (sh < h || sw < w)
      throw std::invalid_argument("iou_tally: segmentation " + detail::shape_string({sh, sw}) +
                                  " is smaller than the activation map " + detail::shape_string({h, w}));
    if (!thresholds && u_) throw std::invalid_argument("iou_tally: no thresholds given");
    for (std::size_t k = 0; k < u_; ++k)
      if (!std::isfinite(thresholds[k]))
        throw std::invalid_argument("iou_tally: threshold of unit " + std::to_string(k) + " is not finite");
  }

  /// A label layer as runs of one label ≠ 0 within a row: row y's runs are runs[row[y], row[y + 1]).
  struct label_runs {
    struct run {
      std::uint32_t x0, x1;  // columns [x0, x1)
      std::int32_t label;
    };
    std::vector<std::size_t> row;  // [sh + 1]
    std::vector<run> runs;
  };

  /// What the unit pass needs of one image: which units pass max > t, its label layers as runs,
  /// the categories that count for every mask (image-level ones; for the original rule, every
  /// category present), the image-level labels ≠ 0, and its ground truth as (label, pixels) pairs.
  struct image_info {
    std::vector<char> pass;  // [U]
    std::vector<label_runs> layers;
    std::vector<char> cats;
    std::vector<std::int32_t> scalars;
    std::vector<std::pair<std::int32_t, std::uint64_t>> pixels;
  };

  /// Checks image n (finite activations, labels in [0, L)) and reads what the unit pass needs of it,
  /// in one pass over its activations and one over each label layer. `hist` is [L] zeros, and is
  /// left so.
  image_info scan_image(const tally_image& im, std::size_t h, std::size_t w, const float* thresholds,
                        std::size_t sh, std::size_t sw, std::size_t n, std::vector<std::uint64_t>& hist) const {
    const auto who = [n] { return "iou_tally: image " + std::to_string(n) + ": "; };
    image_info in;
    if (!im.acts && u_) throw std::invalid_argument(who() + "no activations given");
    // Per unit, a branch-free scan (it vectorises, and holds under -ffast-math) of the bit patterns
    // for NaN and ±Inf and of the values for max > t.
    in.pass.resize(u_);
    const std::size_t hw = h * w;
    for (std::size_t k = 0; k < u_; ++k) {
      const float* map = im.acts + k * hw;
      const float t = thresholds[k];
      std::uint32_t bad = 0, any = 0;
      for (std::size_t j = 0; j < hw; ++j) {
        std::uint32_t bits;
        std::memcpy(&bits, map + j, sizeof bits);
        bad |= static_cast<std::uint32_t>((bits & 0x7f800000u) == 0x7f800000u);
        any |= static_cast<std::uint32_t>(map[j] > t);
      }
      if (bad) throw std::invalid_argument(who() + "activation of unit " + std::to_string(k) + " is NaN or Inf");
      in.pass[k] = static_cast<char>(any);
    }
    // Label layers as runs within rows (segmentations come in runs: the unit pass counts a mask's
    // labels run by run, and the ground truth adds a run at a time), found 8 equal labels at a
    // time; each run's label checked.
    std::vector<char> anywhere(c_, 0), scalar(c_, 0);
    in.layers.resize(im.label_layers.size());
    for (std::size_t y = 0; y < im.label_layers.size(); ++y) {
      const std::int32_t* layer = im.label_layers[y];
      if (!layer) throw std::invalid_argument(who() + "label layer " + std::to_string(y) + " is null");
      label_runs& lr = in.layers[y];
      lr.row.resize(sh + 1);
      for (std::size_t r = 0; r < sh; ++r) {
        lr.row[r] = lr.runs.size();
        const std::int32_t* lab = layer + r * sw;
        for (std::size_t start = 0; start < sw;) {
          const std::int32_t cur = lab[start];
          if (cur < 0 || static_cast<std::size_t>(cur) >= l_)
            throw std::invalid_argument(who() + "label layer " + std::to_string(y) + ", pixel " +
                                        std::to_string(r * sw + start) + " has label " + std::to_string(cur) +
                                        ", not in [0, " + std::to_string(l_) + ")");
          std::size_t p = start + 1;
          for (; p + 8 <= sw; p += 8) {
            std::uint32_t d = 0;
            for (std::size_t j = 0; j < 8; ++j) d |= static_cast<std::uint32_t>(lab[p + j] ^ cur);
            if (d) break;
          }
          while (p < sw && lab[p] == cur) ++p;
          hist[static_cast<std::size_t>(cur)] += p - start;
          if (cur != 0)
            lr.runs.push_back({static_cast<std::uint32_t>(start), static_cast<std::uint32_t>(p), cur});
          start = p;
        }
      }
      lr.row[sh] = lr.runs.size();
    }
    for (auto s : im.image_labels)
      if (s < 0 || static_cast<std::size_t>(s) >= l_)
        throw std::invalid_argument(who() + "image-level label " + std::to_string(s) + " is not in [0, " +
                                    std::to_string(l_) + ")");
    hist[0] = 0;
    for (std::size_t l = 1; l < l_; ++l)
      if (hist[l]) {
        in.pixels.emplace_back(static_cast<std::int32_t>(l), hist[l]);
        anywhere[static_cast<std::size_t>(primary_[l])] = 1;
        hist[l] = 0;
      }
    for (auto s : im.image_labels)
      if (s != 0) {
        in.scalars.push_back(s);
        scalar[static_cast<std::size_t>(primary_[static_cast<std::size_t>(s)])] = 1;
        anywhere[static_cast<std::size_t>(primary_[static_cast<std::size_t>(s)])] = 1;
      }
    in.cats = rule_ == union_rule::lite ? std::move(scalar) : std::move(anywhere);
    return in;
  }

  /// Per-thread buffers of the unit pass.
  struct unit_scratch {
    std::vector<float> rows, line;           // horizontal pass rows [h, sw]; one output row [sw]
    std::vector<std::size_t> rlo, rhi;       // horizontal pass row i computed on columns [rlo, rhi)
    std::vector<std::size_t> lo, hi;         // per source row: first/last column > T (lo = w: none)
    std::vector<std::uint64_t> cnt;          // [L]
    std::vector<std::size_t> touched;
    std::vector<char> cats;                  // [C]
  };

  void add_images(const std::vector<tally_image>& images, std::size_t h, std::size_t w, const float* thresholds,
                  std::size_t sh, std::size_t sw, unsigned threads) {
    check_sizes(h, w, thresholds, sh, sw);
    const std::size_t n = sh * sw, count = images.size();
    if (count == 0) return;
    // Checks and ground truth, image by image. Contiguous parts in order, each stopping at its first
    // bad image, rethrown in part order: the error is always the first bad image's, and comes
    // before anything is added.
    std::vector<image_info> info(count);
    detail::parallel_for(count, threads, [&](std::size_t b, std::size_t e) {
      std::vector<std::uint64_t> hist(l_, 0);
      for (std::size_t j = b; j < e; ++j) info[j] = scan_image(images[j], h, w, thresholds, sh, sw, j, hist);
    });
    for (const auto& in : info) {
      for (const auto& [l, c] : in.pixels) g_[static_cast<std::size_t>(l)] += c;
      for (auto s : in.scalars) g_[static_cast<std::size_t>(s)] += n;
    }
    // The units, every image per unit range (each unit's rows are written by one thread only).
    const detail::mask_geometry geo(h, w, sh, sw);
    detail::parallel_for(u_, threads, [&](std::size_t b, std::size_t e) {
      unit_scratch s;
      s.rows.resize(h * sw);
      s.line.resize(sw);
      s.rlo.resize(h);
      s.rhi.resize(h);
      s.lo.resize(h);
      s.hi.resize(h);
      s.cnt.assign(l_, 0);
      s.cats.resize(c_);
      for (std::size_t j = 0; j < count; ++j)
        for (std::size_t k = b; k < e; ++k)
          if (info[j].pass[k])
            add_unit(k, images[j].acts + k * h * w, thresholds[k], info[j], geo, s);
    });
    images_ += count;
  }

  /// One unit of one image. The mask M = upsample_bilinear(map) > t is evaluated only where it can
  /// be non-empty, which is exact: every up-sampled value is a convex combination of at most four
  /// source values (in each pass, (1 − t)·a + t·b in double is ≤ max(a, b) up to an error far below
  /// half a float ulp, and rounds to ≤ max(a, b)), so an output row whose two source rows hold no
  /// value > t, or an output column outside the columns reading a value > t, is ≤ t. Where it is
  /// evaluated, the values are upsample_bilinear's own (the same detail::lerp on the same taps).
  void add_unit(std::size_t k, const float* map, float t, const image_info& in, const detail::mask_geometry& g, unit_scratch& s) {
    const std::size_t h = g.h, w = g.w, sw = g.sw;
    for (std::size_t i = 0; i < h; ++i) {
      const float* src = map + i * w;
      std::uint32_t any = 0;  // branch-free first: most rows of a sparse map hold no value > t
      for (std::size_t j = 0; j < w; ++j) any |= static_cast<std::uint32_t>(src[j] > t);
      std::size_t lo = w, hi = 0;
      if (any) {
        lo = 0;
        while (!(src[lo] > t)) ++lo;
        hi = w - 1;
        while (!(src[hi] > t)) --hi;
      }
      s.lo[i] = lo;
      s.hi[i] = hi;
      s.rlo[i] = s.rhi[i] = 0;
    }
    // The horizontal pass of source row i on columns [x0, x1), extending what is already computed.
    const auto row = [&](std::size_t i, std::size_t x0, std::size_t x1) {
      float* r = s.rows.data() + i * sw;
      const float* src = map + i * w;
      const auto fill = [&](std::size_t a, std::size_t b) {
        for (std::size_t x = a; x < b; ++x) {
          const auto& p = g.tx[x];
          r[x] = static_cast<float>(detail::lerp(static_cast<double>(src[p.i0]), static_cast<double>(src[p.i1]), p.t));
        }
      };
      std::size_t &lo = s.rlo[i], &hi = s.rhi[i];
      if (lo == hi) {
        fill(x0, x1);
        lo = x0;
        hi = x1;
      } else {
        if (x0 < lo) fill(x0, lo), lo = x0;
        if (x1 > hi) fill(hi, x1), hi = x1;
      }
      return static_cast<const float*>(r);
    };
    std::uint64_t m = 0;
    s.touched.clear();
    for (std::size_t y = 0; y < g.sh; ++y) {
      const auto& p = g.ty[y];
      const std::size_t jmin = std::min(s.lo[p.i0], s.lo[p.i1]);
      if (jmin == w) continue;  // both source rows ≤ t
      const std::size_t jmax = std::max(s.hi[p.i0], s.hi[p.i1]);
      const std::size_t x0 = g.x_first[jmin], x1 = g.x_last[jmax] + 1;
      const float *r0 = row(p.i0, x0, x1), *r1 = row(p.i1, x0, x1);
      float* line = s.line.data();
      for (std::size_t x = x0; x < x1; ++x)
        line[x] = static_cast<float>(detail::lerp(static_cast<double>(r0[x]), static_cast<double>(r1[x]), p.t));
      // The mask's runs [a, x) on this row, and the overlap of each with the label runs.
      for (std::size_t x = x0; x < x1;) {
        while (x < x1 && !(line[x] > t)) ++x;
        const std::size_t a = x;
        while (x < x1 && line[x] > t) ++x;
        if (a == x) break;
        m += x - a;
        for (const auto& lr : in.layers)
          for (std::size_t r = lr.row[y]; r < lr.row[y + 1]; ++r) {
            const auto& run = lr.runs[r];
            if (run.x1 <= a) continue;
            if (run.x0 >= x) break;
            auto& c = s.cnt[static_cast<std::size_t>(run.label)];
            if (c == 0) s.touched.push_back(static_cast<std::size_t>(run.label));
            c += std::min<std::size_t>(run.x1, x) - std::max<std::size_t>(run.x0, a);
          }
      }
    }
    if (m == 0) return;
    std::uint64_t* irow = i_.data() + k * l_;
    std::copy(in.cats.begin(), in.cats.end(), s.cats.begin());
    for (auto l : s.touched) {
      irow[l] += s.cnt[l];
      s.cnt[l] = 0;
      s.cats[static_cast<std::size_t>(primary_[l])] = 1;  // inside the mask (subset of "anywhere")
    }
    for (auto sc : in.scalars) irow[static_cast<std::size_t>(sc)] += m;
    std::uint64_t* arow = a_.data() + k * c_;
    for (std::size_t c = 0; c < c_; ++c)
      if (s.cats[c]) arow[c] += m;
  }

  std::size_t u_, l_, c_;
  std::vector<std::int32_t> primary_;
  union_rule rule_;
  std::vector<std::uint64_t> g_, i_, a_;  // G[L], I[U, L], A_cat[U, C]
  std::uint64_t images_ = 0;
};

}  // namespace shapebias::stats

// SPDX-License-Identifier: MIT
// Network dissection on numpy arrays: per-unit quantiles (exact and sketch) and the NetDissect IoU
// tally with its bilinear up-sampling (shapebias/stats/quantile.hpp, tally.hpp).
#include "common.hpp"

#include "shapebias/stats/quantile.hpp"
#include "shapebias/stats/tally.hpp"

namespace shapebias::python {

using namespace pybind11::literals;

namespace {

/// update for the quantile accumulators: float32 batches only (they store floats).
template <class Q>
void bind_quantile_update(py::class_<Q>& cls, const std::string& name) {
  cls.def(
      "update",
      [name](Q& self, py::handle batch, unsigned threads) {
        const auto a = take<float>(batch, name + ".update: batch [B, U, H, W] or [B, U]", {2, 4});
        const auto v = adapt(a);
        py::gil_scoped_release nogil;
        self.update(v, threads);
      },
      "batch"_a, "threads"_a = 1,
      "Adds a batch [B, U, H, W] or [B, U] (float32, C-contiguous; read in place, GIL released): B*H*W values per "
      "unit. NaN or Inf: ValueError naming row and unit, before any change.");
}

}  // namespace

void bind_dissection(py::module_& m) {
  py::class_<stats::exact_quantiles> ex(m, "ExactQuantiles", R"(Every value of every unit, kept (4 bytes per
value: only for data that fits), for exact per-unit quantiles. Mergeable (a.merge(b) appends b's values).)");
  ex.def(py::init<std::size_t>(), "units"_a);
  bind_quantile_update(ex, "ExactQuantiles");
  ex.def_property_readonly("units", &stats::exact_quantiles::units)
      .def_property_readonly("rows", &stats::exact_quantiles::rows)
      .def("count", [](const stats::exact_quantiles& q) {
        return per_unit<std::uint64_t>(q.units(), [&](std::size_t u) { return q.count(u); });
      }, "Per unit, the number of values (uint64 [U]).")
      .def("quantile", [](const stats::exact_quantiles& q, double p) {
        return per_unit<double>(q.units(), [&](std::size_t u) { return q.quantile(u, p); });
      }, "p"_a, "Per unit, numpy's default ('linear') quantile at probability p (float64 [U]).")
      .def("quantile_hazen", [](const stats::exact_quantiles& q, double p) {
        return per_unit<double>(q.units(), [&](std::size_t u) { return q.quantile_hazen(u, p); });
      }, "p"_a, "Per unit, numpy's 'hazen' quantile at probability p (float64 [U]).");
  accumulator_verbs(ex);

  py::class_<stats::quantile_sketch> sk(m, "QuantileSketch", R"(A deterministic, mergeable, bounded-memory
quantile sketch per unit (KLL-style, as NetDissect-Lite's), with NetDissect-Lite's readout and threshold.
Exact (numpy 'hazen') while a unit has at most `resolution` values; beyond, within rank_error_bound().)");
  sk.def(py::init<std::size_t, std::size_t, std::uint64_t>(), "units"_a,
         "resolution"_a = stats::quantile_sketch::default_resolution, "seed"_a = 1);
  bind_quantile_update(sk, "QuantileSketch");
  sk.def_property_readonly("units", &stats::quantile_sketch::units)
      .def_property_readonly("resolution", &stats::quantile_sketch::resolution)
      .def_property_readonly("seed", &stats::quantile_sketch::seed)
      .def_property_readonly("rows", &stats::quantile_sketch::rows)
      .def_property_readonly("max_retained", &stats::quantile_sketch::max_retained)
      .def("count", [](const stats::quantile_sketch& q) {
        return per_unit<std::uint64_t>(q.units(), [&](std::size_t u) { return q.count(u); });
      }, "Per unit, the number of values seen (uint64 [U]).")
      .def("retained", [](const stats::quantile_sketch& q) {
        return per_unit<std::uint64_t>(q.units(), [&](std::size_t u) { return q.retained(u); });
      }, "Per unit, the samples kept now (uint64 [U]; at most max_retained).")
      .def("min", [](const stats::quantile_sketch& q) {
        return per_unit<double>(q.units(), [&](std::size_t u) { return q.min(u); });
      }, "Per unit, the exact minimum (float64 [U]; RuntimeError for a unit without values).")
      .def("max", [](const stats::quantile_sketch& q) {
        return per_unit<double>(q.units(), [&](std::size_t u) { return q.max(u); });
      }, "Per unit, the exact maximum (float64 [U]).")
      .def("rank_error_bound", [](const stats::quantile_sketch& q) {
        return per_unit<double>(q.units(), [&](std::size_t u) { return q.rank_error_bound(u); });
      }, "Per unit, the guaranteed rank error of readout/quantile/threshold as a fraction of count (float64 [U]).")
      .def("quantile", [](const stats::quantile_sketch& q, double p) {
        return per_unit<double>(q.units(), [&](std::size_t u) { return q.quantile(u, p); });
      }, "p"_a, "Per unit, the value at probability p of the readout's distribution (float64 [U]).")
      .def("threshold", [](const stats::quantile_sketch& q, double top) {
        return per_unit<double>(q.units(), [&](std::size_t u) { return q.threshold(u, top); });
      }, "top"_a = 0.005, "Per unit, NetDissect-Lite's threshold: element int(1000*(1-top) - 1) of a 1000-point "
                          "readout (float64 [U]).")
      .def("readout", [](const stats::quantile_sketch& q, std::size_t levels) {
        py::array_t<double> out({static_cast<py::ssize_t>(q.units()), static_cast<py::ssize_t>(levels)});
        for (std::size_t u = 0; u < q.units(); ++u) {
          const auto r = q.readout(u, levels);
          std::copy(r.begin(), r.end(), out.mutable_data() + u * levels);
        }
        return out;
      }, "levels"_a = 1001, "Per unit, the values at probabilities k/(levels-1), k = 0..levels-1 (float64 [U, levels]).");
  accumulator_verbs(sk);

  m.def(
      "upsample_bilinear",
      [](py::handle x, std::pair<std::size_t, std::size_t> size) {
        return with_floats(x, "upsample_bilinear: maps [..., h, w]", {}, [&](const auto& a) {
          if (a.ndim() < 2) throw py::value_error("upsample_bilinear: maps [..., h, w] need at least 2 axes");
          const std::size_t h = extent(a, a.ndim() - 2), w = extent(a, a.ndim() - 1);
          std::vector<py::ssize_t> shape(a.shape(), a.shape() + a.ndim());
          std::size_t maps = 1;
          for (std::size_t k = 0; k + 2 < shape.size(); ++k) maps *= static_cast<std::size_t>(shape[k]);
          shape[shape.size() - 2] = static_cast<py::ssize_t>(size.first);
          shape.back() = static_cast<py::ssize_t>(size.second);
          py::array_t<float> out(shape);
          const auto* in = a.data();
          float* o = out.mutable_data();
          {
            py::gil_scoped_release nogil;
            for (std::size_t k = 0; k < maps; ++k)
              stats::upsample_bilinear(in + k * h * w, h, w, o + k * size.first * size.second, size.first, size.second);
          }
          return out;
        });
      },
      "x"_a, "size"_a,
      R"(Bilinear up-sampling of every map over the last two axes of x (float32 or float64) to size = (sh, sw):
pixel-centre alignment, edge clamping, separable like PIL (interpolate(align_corners=False)). Returns
float32 [..., sh, sw]. Up-sampling only.)");

  py::class_<stats::iou_tally> tally(m, "IoUTally", R"(The NetDissect IoU tally: per unit and label, exact
integer counts of ground truth G, intersections I and category-conditioned activation areas A_cat, and
IoU = I / (A_cat[unit, primary(label)] + G - I + 1e-10). Label 0 is unlabelled. Mergeable, exact.)");
  tally
      .def(py::init([](std::size_t units, std::size_t labels, std::size_t categories, py::handle primary,
                       const std::string& rule) {
             const auto p = take<std::int32_t>(primary, "IoUTally: primary [labels]", {1});
             return stats::iou_tally(units, labels, categories, {p.data(), p.data() + p.size()},
                                     stats::parse_union_rule(rule));
           }),
           "units"_a, "labels"_a, "categories"_a, "primary"_a, "rule"_a = "lite",
           "primary: int32 [labels], the primary category of each label (entry 0 ignored). rule: 'lite' (a category "
           "counts where one of its labels is inside the mask) or 'original' (anywhere in the image).")
      .def(
          "update",
          [](stats::iou_tally& self, py::handle acts, py::handle thresholds, py::handle segmentations,
             py::handle image_labels, unsigned threads) {
            const auto a = take<float>(acts, "IoUTally.update: acts [B, U, h, w]", {4});
            const auto t = take<float>(thresholds, "IoUTally.update: thresholds [U]", {1});
            const auto s = take<std::int32_t>(segmentations, "IoUTally.update: segmentations [B, layers, sh, sw] or "
                                                             "[B, sh, sw]", {3, 4});
            const std::size_t b = extent(a, 0), units = extent(a, 1), h = extent(a, 2), w = extent(a, 3);
            const std::size_t layers = s.ndim() == 4 ? extent(s, 1) : 1, sh = extent(s, s.ndim() - 2),
                              sw = extent(s, s.ndim() - 1);
            if (units != self.units() || extent(t, 0) != self.units())
              throw py::value_error("IoUTally.update: acts have " + std::to_string(units) + " units and thresholds " +
                                    std::to_string(t.shape(0)) + ", the tally " + std::to_string(self.units()));
            if (extent(s, 0) != b)
              throw py::value_error("IoUTally.update: " + std::to_string(s.shape(0)) + " segmentations for " +
                                    std::to_string(b) + " images");
            std::vector<stats::tally_image> images(b);
            for (std::size_t i = 0; i < b; ++i) {
              images[i].acts = a.data() + i * units * h * w;
              for (std::size_t y = 0; y < layers; ++y) images[i].label_layers.push_back(s.data() + (i * layers + y) * sh * sw);
            }
            if (!image_labels.is_none()) {
              const auto l = take<std::int32_t>(image_labels, "IoUTally.update: image_labels [B, M]", {2});
              if (extent(l, 0) != b)
                throw py::value_error("IoUTally.update: " + std::to_string(l.shape(0)) + " rows of image_labels for " +
                                      std::to_string(b) + " images");
              const std::size_t per = extent(l, 1);
              for (std::size_t i = 0; i < b; ++i) images[i].image_labels.assign(l.data() + i * per, l.data() + (i + 1) * per);
            }
            py::gil_scoped_release nogil;
            self.update_images(images, h, w, t.data(), sh, sw, threads);
          },
          "acts"_a, "thresholds"_a, "segmentations"_a, "image_labels"_a = py::none(), "threads"_a = 1,
          R"(Adds B images: acts float32 [B, U, h, w] (activation maps, finite), thresholds float32 [U] (a unit's
mask is upsample_bilinear(map) > threshold), segmentations int32 [B, layers, sh, sw] or [B, sh, sw] (labels
in [0, labels), sh >= h, sw >= w), image_labels int32 [B, M] or None (labels of the whole image, 0 = none).
Read in place with the GIL released; everything is checked before anything is added.)")
      .def_property_readonly("units", &stats::iou_tally::units)
      .def_property_readonly("labels", &stats::iou_tally::labels)
      .def_property_readonly("categories", &stats::iou_tally::categories)
      .def_property_readonly("images", &stats::iou_tally::images)
      .def_property_readonly("rule", [](const stats::iou_tally& t) { return stats::to_string(t.rule()); })
      .def(
          "primary",
          [](py::object self) {
            const auto& p = self.cast<const stats::iou_tally&>().primary();
            return view_of(p.data(), p.size(), self);
          },
          "The primary category of each label (int32 [labels]): a read-only view of the tally's memory.")
      .def("ground_truth", [](const stats::iou_tally& t) {
        return per_unit<std::uint64_t>(t.labels(), [&](std::size_t l) { return t.ground_truth(l); });
      }, "G: per label, the labelled pixels over all images (uint64 [labels]).")
      .def("intersection", [](const stats::iou_tally& t) {
        return per_cell<std::uint64_t>(t.units(), t.labels(), [&](std::size_t k, std::size_t l) { return t.intersection(k, l); });
      }, "I: per unit and label, the pixels inside the unit's mask with that label (uint64 [U, labels]).")
      .def("activation", [](const stats::iou_tally& t) {
        return per_cell<std::uint64_t>(t.units(), t.categories(), [&](std::size_t k, std::size_t c) { return t.activation(k, c); });
      }, "A_cat: per unit and category, the mask pixels of the images that count for the category (uint64 [U, C]).")
      .def("iou", [](const stats::iou_tally& t) { return to_numpy(t.iou_matrix()); },
           "The IoU of every unit and label (float64 [U, labels]; column 0 is 0).")
      .def(
          "best",
          [](const stats::iou_tally& t) {
            std::vector<stats::tally_best> b(t.units());
            for (std::size_t k = 0; k < b.size(); ++k) b[k] = t.best(k);
            return py::dict("label"_a = per_unit<std::int32_t>(b.size(), [&](std::size_t k) { return b[k].label; }),
                            "category"_a = per_unit<std::int32_t>(b.size(), [&](std::size_t k) { return b[k].category; }),
                            "iou"_a = per_unit<double>(b.size(), [&](std::size_t k) { return b[k].iou; }),
                            "dead"_a = per_unit<bool>(b.size(), [&](std::size_t k) { return b[k].dead; }));
          },
          "Per unit, the label of highest IoU (lowest label on ties), its primary category, the IoU, and whether "
          "every IoU is 0: {'label', 'category' (int32 [U]), 'iou' (float64 [U]), 'dead' (bool [U])}.");
  accumulator_verbs(tally);
}

}  // namespace shapebias::python

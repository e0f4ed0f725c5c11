// SPDX-License-Identifier: MIT
// The shape-bias experiments on numpy arrays: softmax, cue-conflict shape bias, top-k accuracy, the
// CL intersection and ImageNet-C CE/mCE (shapebias/stats/shape_bias.hpp, accuracy.hpp, corruption.hpp).
#include "common.hpp"

#include "shapebias/stats/accuracy.hpp"
#include "shapebias/stats/corruption.hpp"
#include "shapebias/stats/shape_bias.hpp"

namespace shapebias::python {

using namespace pybind11::literals;

namespace {

/// Per-row category indices: int64 [rows], each ≥ 0, as the size_t the C++ class takes (same width).
const std::size_t* category_rows(const carray<std::int64_t>& a, std::size_t rows, const std::string& what) {
  if (extent(a, 0) != rows)
    throw py::value_error(what + ": " + std::to_string(a.shape(0)) + " values for " + std::to_string(rows) + " rows");
  for (std::size_t i = 0; i < rows; ++i)
    if (a.data()[i] < 0) throw py::value_error(what + ": category " + std::to_string(a.data()[i]) + " of row " + std::to_string(i) + " is negative");
  static_assert(sizeof(std::size_t) == sizeof(std::int64_t));
  return reinterpret_cast<const std::size_t*>(a.data());  // the unsigned type of the same width may alias it
}

}  // namespace

void bind_shape_bias(py::module_& m) {
  m.def(
      "softmax_rows",
      [](py::handle logits) {
        return with_floats(logits, "softmax_rows: logits [B, classes]", {2}, [](const auto& a) {
          const auto v = adapt(a);
          xt::xarray<double> out;
          {
            py::gil_scoped_release nogil;
            out = stats::softmax_rows(v);
          }
          return to_numpy(std::move(out));
        });
      },
      "logits"_a,
      "Softmax of each row of logits [B, classes] (float32 or float64), in float64, as exp(x - max) / sum (no "
      "overflow for large logits); a row with NaN or +Inf gives NaN.");

  py::class_<stats::shape_bias_accumulator> sb(m, "ShapeBias", R"(Cue-conflict shape bias (Geirhos et al.):
each row of fine-class probabilities is mapped to coarse categories by the mean probability of each
category's member classes; the decision is the argmax (lowest index on ties); rows whose shape and
texture categories are equal are excluded; shape bias = shape / (shape + texture) decisions. Mergeable.)");
  sb.def(py::init([](std::vector<std::string> categories, std::vector<std::vector<std::size_t>> members) {
           return stats::shape_bias_accumulator({std::move(categories), std::move(members)});
         }),
         "categories"_a, "members"_a,
         "categories: the coarse category names; members: per category, its fine-class indices (e.g. Geirhos' 16 "
         "categories over ImageNet's 1000 classes, data/imagenet16_categories.json).")
      .def(
          "update",
          [](stats::shape_bias_accumulator& self, py::handle probs, py::handle shape, py::handle texture) {
            with_floats(probs, "ShapeBias.update: probabilities [B, fine classes]", {2}, [&](const auto& a) {
              const std::size_t b = extent(a, 0);
              const auto s = take<std::int64_t>(shape, "ShapeBias.update: shape [B]", {1});
              const auto t = take<std::int64_t>(texture, "ShapeBias.update: texture [B]", {1});
              const auto* sc = category_rows(s, b, "ShapeBias.update: shape");
              const auto* tc = category_rows(t, b, "ShapeBias.update: texture");
              const auto v = adapt(a);
              py::gil_scoped_release nogil;
              self.update(v, sc, tc);
            });
          },
          "probs"_a, "shape"_a, "texture"_a,
          "Adds B rows of probabilities [B, fine classes] (float32 or float64; softmax already applied: a row outside "
          "[0, 1] or not summing to 1 is a ValueError) with each row's shape and texture category (int64 [B]).")
      .def_property_readonly("categories", [](const stats::shape_bias_accumulator& a) { return a.mapping().categories; })
      .def_property_readonly("fine_classes", &stats::shape_bias_accumulator::fine_classes)
      .def_property_readonly("rows", &stats::shape_bias_accumulator::rows)
      .def_property_readonly("shape_decisions", py::overload_cast<>(&stats::shape_bias_accumulator::shape_decisions, py::const_))
      .def_property_readonly("texture_decisions",
                             py::overload_cast<>(&stats::shape_bias_accumulator::texture_decisions, py::const_))
      .def_property_readonly("neither", py::overload_cast<>(&stats::shape_bias_accumulator::neither, py::const_))
      .def_property_readonly("excluded", py::overload_cast<>(&stats::shape_bias_accumulator::excluded, py::const_))
      .def("shape_bias", py::overload_cast<>(&stats::shape_bias_accumulator::shape_bias, py::const_),
           "shape / (shape + texture) decisions over every row; NaN when both are 0.")
      .def(
          "per_category",
          [](const stats::shape_bias_accumulator& a) {
            const std::size_t n = a.categories();
            return py::dict(
                "shape"_a = per_unit<std::uint64_t>(n, [&](std::size_t c) { return a.shape_decisions(c); }),
                "texture"_a = per_unit<std::uint64_t>(n, [&](std::size_t c) { return a.texture_decisions(c); }),
                "neither"_a = per_unit<std::uint64_t>(n, [&](std::size_t c) { return a.neither(c); }),
                "excluded"_a = per_unit<std::uint64_t>(n, [&](std::size_t c) { return a.excluded(c); }),
                "shape_bias"_a = per_unit<double>(n, [&](std::size_t c) { return a.shape_bias(c); }));
          },
          "The counts and the shape bias over the rows of each shape category: {'shape', 'texture', 'neither', "
          "'excluded' (uint64 [C]), 'shape_bias' (float64 [C])}.");
  accumulator_verbs(sb);

  py::class_<stats::topk_accuracy> acc(m, "TopKAccuracy", R"(Streaming top-1 and top-k accuracy over batches of
scores [B, classes] (logits or probabilities). Ties: a label counts as in the top k when fewer than k scores
of its row are strictly greater. Mergeable.)");
  acc.def(py::init<std::size_t, std::size_t>(), "classes"_a, "k"_a = 5)
      .def(
          "update",
          [](stats::topk_accuracy& self, py::handle scores, py::handle labels, bool correct) -> py::object {
            return with_floats(scores, "TopKAccuracy.update: scores [B, classes]", {2}, [&](const auto& a) -> py::object {
              const std::size_t b = extent(a, 0);
              const auto l = take<std::int64_t>(labels, "TopKAccuracy.update: labels [B]", {1});
              if (extent(l, 0) != b)
                throw py::value_error("TopKAccuracy.update: " + std::to_string(l.shape(0)) + " labels for " +
                                      std::to_string(b) + " rows");
              py::array_t<bool> c1(correct ? static_cast<py::ssize_t>(b) : 0), ck(correct ? static_cast<py::ssize_t>(b) : 0);
              // bool is one byte holding 0 or 1: the flags are written straight into the numpy arrays.
              auto* o1 = correct ? reinterpret_cast<std::uint8_t*>(c1.mutable_data()) : nullptr;
              auto* ok = correct ? reinterpret_cast<std::uint8_t*>(ck.mutable_data()) : nullptr;
              {
                const auto v = adapt(a);
                py::gil_scoped_release nogil;
                self.update(v, l.data(), o1, ok);
              }
              if (!correct) return py::none();
              return py::make_tuple(c1, ck);
            });
          },
          "scores"_a, "labels"_a, "correct"_a = false,
          "Adds scores [B, classes] (float32 or float64) with labels int64 [B] in [0, classes). With correct=True, "
          "returns per row (top-1 correct, top-k correct) as two bool [B] arrays.")
      .def_property_readonly("classes", &stats::topk_accuracy::classes)
      .def_property_readonly("k", &stats::topk_accuracy::k)
      .def_property_readonly("count", &stats::topk_accuracy::count)
      .def_property_readonly("correct1", &stats::topk_accuracy::correct1)
      .def_property_readonly("correctk", &stats::topk_accuracy::correctk)
      .def_property_readonly("top1", &stats::topk_accuracy::top1, "Fraction correct at top 1 (NaN without rows).")
      .def_property_readonly("topk", &stats::topk_accuracy::topk, "Fraction correct at top k (NaN without rows).");
  accumulator_verbs(acc);

  m.def(
      "intersect_correct",
      [](const py::sequence& lists) {
        std::vector<std::vector<std::int64_t>> ids;
        for (std::size_t i = 0; i < lists.size(); ++i) {
          const auto a = take<std::int64_t>(lists[i], "intersect_correct: list " + std::to_string(i) + " [n]", {1});
          ids.emplace_back(a.data(), a.data() + a.size());
        }
        return to_numpy(stats::intersect_correct(ids));
      },
      "ids"_a,
      "The ids present in every array of `ids` (int64 arrays, unsorted, repeats allowed), sorted and unique: the "
      "ImageNet-CL set from each network's correctly classified ids.");

  m.def(
      "mean_corruption_error",
      [](std::map<std::string, std::map<int, double>> model, std::map<std::string, std::map<int, double>> baseline) {
        const auto r = stats::mean_corruption_error({std::move(model)}, {std::move(baseline)});
        return py::dict("ce"_a = r.ce, "mce"_a = r.mce);
      },
      "model"_a, "baseline"_a,
      "ImageNet-C errors from accuracies {corruption: {severity: accuracy in [0, 1]}}: CE_c = sum_s (1 - acc) / "
      "sum_s (1 - baseline acc) per corruption of the model, and their mean: {'ce': {corruption: CE}, 'mce'}.");
}

}  // namespace shapebias::python

// SPDX-License-Identifier: MIT
// The inputs a unit responds to and their diversity on numpy arrays: streaming top-K, unit activity
// (sparsity, dead units), label diversity, embedding distances and k-means facets
// (shapebias/stats/topk.hpp, diversity.hpp).
#include "common.hpp"

#include "shapebias/stats/diversity.hpp"
#include "shapebias/stats/topk.hpp"

namespace shapebias::python {

using namespace pybind11::literals;

namespace {

/// update for the accumulators of per-row unit scores: float32 or float64 batches with optional ids.
template <class C>
void bind_score_update(py::class_<C>& cls, const std::string& name) {
  cls.def(
      "update",
      [name](C& self, py::handle batch, py::handle ids, unsigned threads) {
        with_floats(batch, name + ".update: batch [B, U, H, W] or [B, U]", {2, 4}, [&](const auto& a) {
          const std::int64_t* id = row_ids(ids, extent(a, 0), name + ".update");
          const auto v = adapt(a);
          py::gil_scoped_release nogil;
          self.update(v, id, threads);
        });
      },
      "batch"_a, "ids"_a = py::none(), "threads"_a = 1,
      "Adds a batch [B, U, H, W] or [B, U] (float32 or float64, C-contiguous; read in place, GIL released). ids: "
      "int64 [B], the rows' input ids (None: the running row number). NaN or Inf: ValueError naming row, id and "
      "unit, before any change.");
}

/// The rows of an embedding matrix [n, D] and a call on them, GIL released.
template <class F>
auto on_embeddings(py::handle x, const char* what, F&& f) {
  return with_floats(x, std::string(what) + ": embeddings [n, D]", {2}, [&](const auto& a) {
    const auto v = adapt(a);
    py::gil_scoped_release nogil;
    return f(v);
  });
}

/// Non-negative integers (cluster labels, cluster sizes) from int64 [n]; `what` names the argument.
std::vector<std::size_t> indices(py::handle a, const std::string& what) {
  const auto l = take<std::int64_t>(a, what, {1});
  for (py::ssize_t i = 0; i < l.size(); ++i)
    if (l.data()[i] < 0)
      throw py::value_error(what + ": value " + std::to_string(l.data()[i]) + " at " + std::to_string(i) + " is negative");
  return {l.data(), l.data() + l.size()};
}

template <class V>
py::array_t<std::int64_t> int64_array(const V& v) {
  return per_unit<std::int64_t>(v.size(), [&](std::size_t i) { return v[i]; });
}

py::dict kmeans_dict(const stats::kmeans_result& r) {
  return py::dict("labels"_a = int64_array(r.labels), "sizes"_a = int64_array(r.sizes), "inertia"_a = r.inertia,
                  "iterations"_a = r.iterations, "converged"_a = r.converged);
}

}  // namespace

void bind_diversity(py::module_& m) {
  py::class_<stats::topk_units> tk(m, "TopK", R"(Streaming per-unit top-K rows: each row scores a unit by the
spatial max (rank='max', NetDissect's ranking) or mean of its map; kept are the K best under the order
higher score, then lower input id, then lower (y, x) position of the argmax. Independent of batch order,
batch size, threads and merge order. Memory O(U*K).)");
  tk.def(py::init([](std::size_t units, std::size_t k, const std::string& rank) {
           return stats::topk_units(units, k, stats::parse_topk_rank(rank));
         }),
         "units"_a, "k"_a, "rank"_a = "max");
  bind_score_update(tk, "TopK");
  tk.def_property_readonly("units", &stats::topk_units::units)
      .def_property_readonly("k", &stats::topk_units::k)
      .def_property_readonly("rank", [](const stats::topk_units& t) { return stats::to_string(t.rank()); })
      .def_property_readonly("count", &stats::topk_units::count, "Rows seen.")
      .def_property_readonly("retained_bytes", &stats::topk_units::retained_bytes)
      .def(
          "result",
          [](const stats::topk_units& t) {
            std::vector<std::vector<stats::topk_entry>> r(t.units());
            for (std::size_t u = 0; u < r.size(); ++u) r[u] = t.result(u);
            const std::size_t n = r.empty() ? 0 : r[0].size();  // every unit has seen every row
            return py::dict(
                "score"_a = per_cell<double>(r.size(), n, [&](std::size_t u, std::size_t j) { return r[u][j].score; }),
                "id"_a = per_cell<std::int64_t>(r.size(), n, [&](std::size_t u, std::size_t j) { return r[u][j].id; }),
                "y"_a = per_cell<std::int64_t>(r.size(), n, [&](std::size_t u, std::size_t j) { return r[u][j].y; }),
                "x"_a = per_cell<std::int64_t>(r.size(), n, [&](std::size_t u, std::size_t j) { return r[u][j].x; }));
          },
          "Each unit's kept rows, best first: {'score' (float64), 'id', 'y', 'x' (int64)}, each [U, min(K, count)].");
  accumulator_verbs(tk);

  py::class_<stats::unit_activity> ua(m, "UnitActivity", R"(Per-unit activity: the rows whose spatial max
exceeds the unit's threshold (strictly) and the largest spatial max seen. Sparsity is fraction_above(); a
unit is dead when its max is <= eps. Exact and mergeable; 3 numbers per unit.)");
  ua.def(py::init([](py::handle units, double threshold) {
           if (py::isinstance<py::int_>(units)) return stats::unit_activity(units.cast<std::size_t>(), threshold);
           const auto t = take<double>(units, "UnitActivity: thresholds [U]", {1});
           return stats::unit_activity(std::vector<double>(t.data(), t.data() + t.size()));
         }),
         "units"_a, "threshold"_a = 0.0,
         "units: the number of units U, each with `threshold`; or float64 [U], one threshold per unit (NetDissect's).");
  bind_score_update(ua, "UnitActivity");
  ua.def_property_readonly("units", &stats::unit_activity::units)
      .def_property_readonly("count", &stats::unit_activity::count, "Rows seen.")
      .def("threshold", [](const stats::unit_activity& a) {
        return per_unit<double>(a.units(), [&](std::size_t u) { return a.threshold(u); });
      }, "The thresholds (float64 [U]).")
      .def("above", [](const stats::unit_activity& a) {
        return per_unit<std::uint64_t>(a.units(), [&](std::size_t u) { return a.above(u); });
      }, "Per unit, the rows whose spatial max exceeds the threshold (uint64 [U]).")
      .def("fraction_above", [](const stats::unit_activity& a) {
        return per_unit<double>(a.units(), [&](std::size_t u) { return a.fraction_above(u); });
      }, "Per unit, above / count (float64 [U]; RuntimeError before any row).")
      .def("max", [](const stats::unit_activity& a) {
        return per_unit<double>(a.units(), [&](std::size_t u) { return a.max(u); });
      }, "Per unit, the largest spatial max (float64 [U]; RuntimeError before any row).")
      .def("dead", [](const stats::unit_activity& a, double eps) {
        return per_unit<bool>(a.units(), [&](std::size_t u) { return a.dead(u, eps); });
      }, "eps"_a = 0.0, "Per unit, max <= eps (bool [U]).")
      .def("dead_units", &stats::unit_activity::dead_units, "eps"_a = 0.0, "The number of dead units.");
  accumulator_verbs(ua);

  m.def(
      "label_diversity",
      [](py::handle labels) {
        const auto l = take<std::int64_t>(labels, "label_diversity: labels [n]", {1});
        const auto r = stats::label_diversity(std::vector<std::int64_t>(l.data(), l.data() + l.size()));
        return py::dict("n"_a = r.n, "distinct"_a = r.distinct, "entropy"_a = r.entropy);
      },
      "labels"_a,
      "The labels of a unit's top inputs (int64 [n]): {'n', 'distinct' (different labels), 'entropy' (Shannon, in "
      "nats)}.");
  m.def(
      "embedding_diversity",
      [](py::handle x) {
        const auto r = on_embeddings(x, "embedding_diversity", [](const auto& v) { return stats::embedding_diversity(v); });
        return py::dict("pairs"_a = r.pairs, "mean_cosine"_a = r.mean_cosine, "mean_l2"_a = r.mean_l2);
      },
      "embeddings"_a,
      "Mean pairwise distances of the rows of embeddings [K, D] (float32 or float64): {'pairs' (K(K-1)/2), "
      "'mean_cosine' (mean 1 - cos), 'mean_l2' (mean Euclidean distance)}. An all-zero row is a ValueError.");
  m.def(
      "kmeans",
      [](py::handle x, std::size_t k, std::size_t restarts, std::size_t max_iter, std::uint64_t seed) {
        const stats::kmeans_params p{restarts, max_iter, seed};
        return kmeans_dict(on_embeddings(x, "kmeans", [&](const auto& v) { return stats::kmeans(v, k, p); }));
      },
      "x"_a, "k"_a, "restarts"_a = 10, "max_iter"_a = 300, "seed"_a = 0,
      "k-means of the rows of x [n, D] (k-means++ seeding, Lloyd, the restart of lowest inertia; deterministic for a "
      "seed): {'labels' (int64 [n], numbered by first appearance), 'sizes' (int64 [k]), 'inertia', 'iterations', "
      "'converged'}.");
  m.def(
      "silhouette",
      [](py::handle x, py::handle labels) {
        const auto l = indices(labels, "silhouette: labels [n]");
        return on_embeddings(x, "silhouette", [&](const auto& v) { return stats::silhouette(v, l); });
      },
      "x"_a, "labels"_a,
      "The mean silhouette (Euclidean) of the clustering `labels` (int64 [n], >= 0) of the rows of x [n, D]; NaN "
      "with fewer than 2 clusters.");
  m.def(
      "xmeans_bic",
      [](std::size_t n, std::size_t d, py::handle sizes, double inertia) {
        const auto s = indices(sizes, "xmeans_bic: sizes [k]");
        return stats::xmeans_bic(n, d, s, inertia);
      },
      "n"_a, "d"_a, "sizes"_a, "inertia"_a,
      "The X-means BIC (larger is better) of a partition of n rows of dimension d into clusters of `sizes` (int64, "
      "zeros ignored) with the given inertia: NaN when n <= clusters, +Inf when the inertia is 0.");
  m.def(
      "facets",
      [](py::handle x, std::size_t kmax, const std::string& rule, double min_silhouette, std::size_t restarts,
         std::size_t max_iter, std::uint64_t seed) {
        const stats::facet_params p{kmax, choose(rule, "silhouette", "bic", "facet rule") ? stats::facet_rule::bic
                                                                                          : stats::facet_rule::silhouette,
                                    min_silhouette, {restarts, max_iter, seed}};
        auto r = on_embeddings(x, "facets", [&](const auto& v) { return stats::facets(v, p); });
        py::list runs;
        for (const auto& run : r.runs) runs.append(kmeans_dict(run));
        return py::dict("k"_a = r.k, "k_silhouette"_a = r.k_silhouette, "k_bic"_a = r.k_bic,
                        "silhouette"_a = to_numpy(std::move(r.silhouette)), "bic"_a = to_numpy(std::move(r.bic)),
                        "labels"_a = int64_array(r.labels()),
                        "runs"_a = runs);
      },
      "embeddings"_a, "kmax"_a = 8, "rule"_a = "silhouette", "min_silhouette"_a = 0.25, "restarts"_a = 10,
      "max_iter"_a = 300, "seed"_a = 0,
      R"(Facets of the rows of embeddings [K, D]: k-means for k = 1..min(kmax, K-1), k chosen by the mean
silhouette (k = 1 below min_silhouette) and by X-means BIC. Returns {'k' (by `rule`), 'k_silhouette', 'k_bic',
'silhouette', 'bic' (float64 [kmax'], index k-1; silhouette NaN for k = 1), 'labels' (int64 [K], the chosen
k's clusters), 'runs' (each k's kmeans result)}.)");
}

}  // namespace shapebias::python

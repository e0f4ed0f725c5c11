// SPDX-License-Identifier: MIT
// Total variation and radial spectra (shapebias/stats/tv.hpp, spectrum.hpp) on numpy arrays.
#include "common.hpp"

#include "shapebias/stats/spectrum.hpp"
#include "shapebias/stats/tv.hpp"

namespace shapebias::python {

using namespace pybind11::literals;

namespace {

/// count (a read-only live view of the accumulator's own counts), mean and variance per channel.
template <class C, class M>
void bind_moments(py::class_<C>& cls, M moments, const char* of) {
  cls.def(
         "count",
         [moments](py::object self) {
           const auto& m = moments(self.cast<const C&>());
           return view_of(m.counts().data(), m.channels(), self);
         },
         (std::string("Per channel, the number of ") + of +
          " values (uint64 [C]): a read-only view of the accumulator's memory that follows later updates.")
             .c_str())
      .def(
          "mean",
          [moments](const C& self) {
            const auto& m = moments(self);
            return per_unit<double>(m.channels(), [&](std::size_t c) { return m.mean(c); });
          },
          (std::string("Per channel, the mean ") + of + " (float64 [C]; NaN without values).").c_str())
      .def(
          "variance",
          [moments](const C& self) {
            const auto& m = moments(self);
            return per_unit<double>(m.channels(), [&](std::size_t c) { return m.variance(c); });
          },
          (std::string("Per channel, the sample variance (divisor n - 1) of the ") + of +
           " (float64 [C]; NaN with fewer than 2 values).")
              .c_str());
}

}  // namespace

void bind_smoothness(py::module_& m) {
  m.def(
      "total_variation",
      [](py::handle x, double beta, const std::string& norm, unsigned threads) {
        const stats::tv_params p{beta, stats::parse_tv_norm(norm)};
        return with_floats(x, "total_variation: x [..., H, W]", {}, [&](const auto& a) {
          const auto v = adapt(a);
          xt::xarray<double> out;
          {
            py::gil_scoped_release nogil;
            out = stats::total_variation(v, p, threads);
          }
          return to_numpy(std::move(out));
        });
      },
      "x"_a, "beta"_a = 1.0, "norm"_a = "none", "threads"_a = 1,
      R"(Total variation of every 2-D map over the last two axes of x (float32 or float64, C-contiguous,
at least 2 axes): sum |x[i,j] - x[i+1,j]|^beta + sum |x[i,j] - x[i,j+1]|^beta, divided by H*W for
norm='pixel' or by sum |x| for norm='l1'. Returns float64 of x's leading axes (0-d for one map). The
GIL is released; the result does not depend on threads.)");

  py::class_<stats::tv_accumulator> tv(m, "TVAccumulator", R"(Streaming per-channel total variation over
batches [B, C, H, W]: count, mean and variance of each channel's TV. Memory O(C), mergeable.)");
  tv.def(py::init([](std::size_t channels, double beta, const std::string& norm, const std::string& nonfinite) {
           return stats::tv_accumulator(channels, {beta, stats::parse_tv_norm(norm)},
                                        choose(nonfinite, "error", "skip", "nonfinite policy")
                                            ? stats::nonfinite_policy::skip
                                            : stats::nonfinite_policy::error);
         }),
         "channels"_a, "beta"_a = 1.0, "norm"_a = "none", "nonfinite"_a = "error",
         "nonfinite='error' refuses a map holding NaN or Inf (ValueError naming row, id and channel); 'skip' counts it.")
      .def(
          "update",
          [](stats::tv_accumulator& self, py::handle batch, py::handle ids, unsigned threads) {
            with_floats(batch, "TVAccumulator.update: batch [B, C, H, W]", {4}, [&](const auto& a) {
              const std::int64_t* id = row_ids(ids, extent(a, 0), "TVAccumulator.update");
              const auto v = adapt(a);
              py::gil_scoped_release nogil;
              self.update(v, id, threads);
            });
          },
          "batch"_a, "ids"_a = py::none(), "threads"_a = 1,
          "Adds a batch [B, C, H, W] (float32 or float64, C-contiguous; read in place, GIL released). ids: int64 "
          "[B] naming the rows in errors.")
      .def_property_readonly("channels", &stats::tv_accumulator::channels)
      .def_property_readonly("rows", &stats::tv_accumulator::rows)
      .def_property_readonly("height", &stats::tv_accumulator::height)
      .def_property_readonly("width", &stats::tv_accumulator::width)
      .def_property_readonly("beta", [](const stats::tv_accumulator& a) { return a.params().beta; })
      .def_property_readonly("norm", [](const stats::tv_accumulator& a) { return stats::to_string(a.params().norm); })
      .def("skipped", [](const stats::tv_accumulator& a) {
        return per_unit<std::uint64_t>(a.channels(), [&](std::size_t c) { return a.skipped(c); });
      }, "Per channel, the maps skipped for NaN or Inf (uint64 [C]; nonfinite='skip').");
  bind_moments(tv, [](const stats::tv_accumulator& a) -> const stats::channel_moments& { return a.moments(); }, "TV");
  accumulator_verbs(tv);

  m.def(
      "radial_spectrum",
      [](py::handle x, double cutoff, unsigned threads) {
        return with_floats(x, "radial_spectrum: maps [..., H, W]", {}, [&](const auto& a) {
          if (a.ndim() < 2) throw py::value_error("radial_spectrum: maps [..., H, W] need at least 2 axes");
          const std::size_t h = extent(a, a.ndim() - 2), w = extent(a, a.ndim() - 1);
          const stats::radial_spectrum spec(h, w, cutoff);
          const std::size_t maps = static_cast<std::size_t>(a.size()) / (h * w), bins = spec.bins();
          std::vector<std::size_t> lead(a.shape(), a.shape() + a.ndim() - 2);
          xt::xarray<double> profile = xt::zeros<double>({maps, bins}), high = xt::zeros<double>({maps});
          const auto* data = a.data();
          {
            py::gil_scoped_release nogil;
            stats::detail::parallel_for(maps, threads, [&](std::size_t b, std::size_t e) {
              stats::radial_spectrum::workspace ws(spec);
              for (std::size_t k = b; k < e; ++k) {
                stats::power_sums s;
                spec.add_power(data + k * h * w, s, ws);
                const auto p = spec.profile(s.ring);
                std::copy(p.begin(), p.end(), profile.data() + k * bins);
                high(k) = s.high_fraction();
              }
            });
          }
          high.reshape(lead);
          lead.push_back(bins);
          profile.reshape(lead);
          return py::dict("profile"_a = to_numpy(std::move(profile)), "high_fraction"_a = to_numpy(std::move(high)),
                          "frequency"_a = per_unit<double>(bins, [&](std::size_t b) { return spec.ring_frequency(b); }));
        });
      },
      "x"_a, "cutoff"_a = 0.25, "threads"_a = 1,
      R"(Radially averaged power spectrum of every 2-D map over the last two axes of x (float32 or float64).
Power |DFT|^2 / (H*W) (it sums to sum x^2), ring b = the frequencies with round(r * max(H, W)) = b,
r in cycles per pixel. Returns {'profile': mean power per ring [..., rings], 'high_fraction': power at
r > cutoff over power at r > 0 [...] (0 for a constant map), 'frequency': ring centres [rings]}.)");

  py::class_<stats::spectrum_accumulator> sp(m, "SpectrumAccumulator", R"(Streaming per-channel spectra
over batches [B, C, H, W]: moments of each channel's high-frequency fraction (count/mean/variance) and
each channel's mean radial profile. Maps with NaN or Inf are skipped and counted. Mergeable.)");
  sp.def(py::init<std::size_t, std::size_t, std::size_t, double>(), "channels"_a, "height"_a, "width"_a, "cutoff"_a = 0.25)
      .def(
          "update",
          [](stats::spectrum_accumulator& self, py::handle batch, unsigned threads) {
            with_floats(batch, "SpectrumAccumulator.update: batch [B, C, H, W]", {4}, [&](const auto& a) {
              const auto v = adapt(a);
              py::gil_scoped_release nogil;
              self.update(v, threads);
            });
          },
          "batch"_a, "threads"_a = 1, "Adds a batch [B, C, H, W] (float32 or float64; read in place, GIL released).")
      .def_property_readonly("channels", &stats::spectrum_accumulator::channels)
      .def_property_readonly("rows", &stats::spectrum_accumulator::rows)
      .def_property_readonly("skipped", &stats::spectrum_accumulator::skipped)
      .def_property_readonly("height", [](const stats::spectrum_accumulator& a) { return a.spectrum().height(); })
      .def_property_readonly("width", [](const stats::spectrum_accumulator& a) { return a.spectrum().width(); })
      .def_property_readonly("cutoff", [](const stats::spectrum_accumulator& a) { return a.spectrum().cutoff(); })
      .def("frequency", [](const stats::spectrum_accumulator& a) {
        return per_unit<double>(a.spectrum().bins(), [&](std::size_t b) { return a.spectrum().ring_frequency(b); });
      }, "The ring centres in cycles per pixel (float64 [rings]).")
      .def("profile", [](const stats::spectrum_accumulator& a) {
        const std::size_t bins = a.spectrum().bins();
        xt::xarray<double> p = xt::zeros<double>({a.channels(), bins});
        for (std::size_t c = 0; c < a.channels(); ++c) {
          const auto row = a.profile(c);
          std::copy(row.begin(), row.end(), p.data() + c * bins);
        }
        return to_numpy(std::move(p));
      }, "Each channel's mean radial power profile (float64 [C, rings]).");
  bind_moments(sp, [](const stats::spectrum_accumulator& a) -> const stats::channel_moments& { return a.high_fraction(); },
               "high-frequency fraction");
  accumulator_verbs(sp);
}

}  // namespace shapebias::python

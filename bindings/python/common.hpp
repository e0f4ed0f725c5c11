// SPDX-License-Identifier: MIT
// What every binding file shares: numpy arguments taken as they are (never converted, never
// copied), numpy results that own or view C++ buffers, accumulator states as dicts, and the verbs
// every accumulator has (merge, state, from_state, pickling).
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <xtensor/xadapt.hpp>
#include <xtensor/xarray.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "shapebias/stats/state.hpp"

namespace shapebias::python {

namespace py = pybind11;

template <class T>
using carray = py::array_t<T, py::array::c_style>;

template <class T>
constexpr const char* dtype_name() {
  if constexpr (std::is_same_v<T, float>) return "float32";
  else if constexpr (std::is_same_v<T, double>) return "float64";
  else if constexpr (std::is_same_v<T, std::int32_t>) return "int32";
  else {
    static_assert(std::is_same_v<T, std::int64_t>, "a dtype that the bindings do not take");
    return "int64";
  }
}

/// `obj` as a C-contiguous numpy array of T with one of `ndims` axes (any number when empty),
/// without conversion or copy: the result refers to the caller's memory. `what` names the argument
/// and its axes in messages ("batch [B, C, H, W]"); `expected` the dtype(s) accepted.
/// @throws TypeError for something that is not an ndarray of T, ValueError for another layout or rank.
template <class T>
carray<T> take(py::handle obj, const std::string& what, std::initializer_list<py::ssize_t> ndims = {},
               const char* expected = dtype_name<T>()) {
  if (!py::isinstance<py::array>(obj))
    throw py::type_error(what + ": expected a numpy array of " + expected + ", got " + Py_TYPE(obj.ptr())->tp_name +
                         " (nothing is converted)");
  const auto a = py::reinterpret_borrow<py::array>(obj);
  if (!py::isinstance<py::array_t<T>>(a))
    throw py::type_error(what + ": expected " + expected + ", got " + std::string(py::str(a.dtype())) +
                         " (arrays are never converted: pass x.astype(np." + dtype_name<T>() + "))");
  if (!(a.flags() & py::array::c_style))
    throw py::value_error(what + ": expected a C-contiguous array of " + expected +
                          " (arrays are never copied: pass np.ascontiguousarray(x))");
  if (ndims.size() && std::find(ndims.begin(), ndims.end(), a.ndim()) == ndims.end()) {
    std::string n;
    for (auto d : ndims) n += (n.empty() ? "" : " or ") + std::to_string(d);
    throw py::value_error(what + ": expected " + n + " axes, got " + std::to_string(a.ndim()));
  }
  return py::reinterpret_borrow<carray<T>>(a);
}

/// Calls f(take<T>(obj)) with T = float or double, whichever obj holds: for the C++ templates that
/// take either.
template <class F>
decltype(auto) with_floats(py::handle obj, const std::string& what, std::initializer_list<py::ssize_t> ndims, F&& f) {
  if (py::isinstance<py::array_t<float>>(obj)) return f(take<float>(obj, what, ndims));
  return f(take<double>(obj, what, ndims, "float32 or float64"));
}

/// An xtensor view of a checked array's memory (no copy), for the header templates.
template <class T>
auto adapt(const carray<T>& a) {
  const std::vector<std::size_t> shape(a.shape(), a.shape() + a.ndim());
  return xt::adapt(a.data(), static_cast<std::size_t>(a.size()), xt::no_ownership(), shape);
}

/// The extent of axis k, as a size.
template <class T>
std::size_t extent(const carray<T>& a, py::ssize_t k) {
  return static_cast<std::size_t>(a.shape(k));
}

/// Optional per-row input ids (int64 [rows]), or nullptr for None.
inline const std::int64_t* row_ids(py::handle ids, std::size_t rows, const std::string& what) {
  if (ids.is_none()) return nullptr;
  const auto a = take<std::int64_t>(ids, what + " ids [B]", {1});
  if (extent(a, 0) != rows)
    throw py::value_error(what + ": " + std::to_string(a.shape(0)) + " ids for " + std::to_string(rows) + " rows");
  return a.data();  // the caller's array, alive for the call
}

/// A numpy array that takes over `c` (an xt::xarray or std::vector, moved to the heap): the result
/// owns the C++ buffer, nothing is copied.
template <class C>
py::array to_numpy(C&& c) {
  using V = std::decay_t<C>;
  auto* p = new V(std::forward<C>(c));
  py::capsule owner(p, [](void* q) { delete static_cast<V*>(q); });
  std::vector<py::ssize_t> shape;
  if constexpr (requires { p->shape(); }) shape.assign(p->shape().begin(), p->shape().end());
  else shape.push_back(static_cast<py::ssize_t>(p->size()));
  return py::array_t<typename V::value_type>(shape, p->data(), owner);
}

/// A new numpy array of the n values f(0), …, f(n − 1): for results that the C++ classes give one
/// unit (or label, category) at a time. f runs without the GIL (some queries are long, e.g. exact
/// quantiles), so it must not touch Python objects.
template <class R, class F>
py::array_t<R> per_unit(std::size_t n, F&& f) {
  py::array_t<R> a(static_cast<py::ssize_t>(n));
  R* p = a.mutable_data();
  {
    py::gil_scoped_release nogil;
    for (std::size_t u = 0; u < n; ++u) p[u] = static_cast<R>(f(u));
  }
  return a;
}

/// The same for two indices: a new [rows, cols] array of f(i, j).
template <class R, class F>
py::array_t<R> per_cell(std::size_t rows, std::size_t cols, F&& f) {
  py::array_t<R> a({static_cast<py::ssize_t>(rows), static_cast<py::ssize_t>(cols)});
  R* p = a.mutable_data();
  {
    py::gil_scoped_release nogil;
    for (std::size_t i = 0; i < rows; ++i)
      for (std::size_t j = 0; j < cols; ++j) p[i * cols + j] = static_cast<R>(f(i, j));
  }
  return a;
}

/// A read-only numpy view of n values at p inside the object `owner`, which the view keeps alive:
/// it follows later updates of the owner (zero copy).
template <class T>
py::array view_of(const T* p, std::size_t n, py::handle owner) {
  py::array_t<T> a({static_cast<py::ssize_t>(n)}, p, owner);
  a.attr("setflags")(py::arg("write") = false);
  return a;
}

/// A stats::state as {"kind", "params", "text", "arrays"} (arrays float64, taken over, not copied).
inline py::dict to_dict(stats::state s) {
  py::dict arrays;
  for (auto& [name, a] : s.arrays) arrays[py::str(name)] = to_numpy(std::move(a));
  py::dict d;
  d["kind"] = s.kind;
  d["params"] = s.params;
  d["text"] = s.text;
  d["arrays"] = arrays;
  return d;
}

/// The dict made by to_dict (or one like it) as a stats::state; arrays must be float64.
inline stats::state from_dict(const py::dict& d) {
  for (const char* key : {"kind", "params", "text", "arrays"})
    if (!d.contains(key)) throw py::value_error(std::string("not a shapebias state: no '") + key + "' key");
  stats::state s;
  s.kind = d["kind"].cast<std::string>();
  s.params = d["params"].cast<std::map<std::string, double>>();
  s.text = d["text"].cast<std::map<std::string, std::string>>();
  for (const auto& [name, a] : d["arrays"].cast<py::dict>()) {
    const auto key = name.cast<std::string>();
    s.arrays[key] = adapt(take<double>(a, "state array '" + key + "'"));
  }
  return s;
}

/// merge, state, from_state and pickling (through the state) for a class with merge/save/load.
template <class C>
void accumulator_verbs(py::class_<C>& cls) {
  cls.def("merge", [](C& self, const C& other) { self.merge(other); }, py::arg("other"),
          "Adds another accumulator's data (same parameters, else ValueError): a.merge(b) equals one pass over "
          "both.")
      .def("state", [](const C& self) { return to_dict(self.save()); },
           "The state as a dict {kind, params, text, arrays (float64)}, as written to HDF5 by the tools.")
      .def_static("from_state", [](const py::dict& d) { return C::load(from_dict(d)); }, py::arg("state"),
                  "The accumulator saved by state() (ValueError for another kind or an inconsistent state).")
      .def(py::pickle([](const C& self) { return to_dict(self.save()); },
                      [](const py::dict& d) { return C::load(from_dict(d)); }));
}

/// A choice among names, for string parameters that the headers do not parse themselves.
inline bool choose(const std::string& value, const std::string& a, const std::string& b, const char* what) {
  if (value != a && value != b) throw py::value_error(std::string(what) + " '" + value + "' is not one of " + a + ", " + b);
  return value == b;
}

void bind_smoothness(py::module_& m);
void bind_dissection(py::module_& m);
void bind_diversity(py::module_& m);
void bind_shape_bias(py::module_& m);
void bind_io(py::module_& m);

}  // namespace shapebias::python

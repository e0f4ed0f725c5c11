// SPDX-License-Identifier: MIT
// The extension module shapebias._core: initialisation only (the bind_*.cpp files add the API).
#include "common.hpp"

#include "shapebias/core/errors.hpp"
#include "shapebias/version.hpp"

PYBIND11_MODULE(_core, m) {
  namespace sp = shapebias::python;
  m.doc() = "shapebias metrics on numpy arrays (see docs/python.md); import the package 'shapebias'.";
  m.attr("__version__") = shapebias::version_string;
  pybind11::module_::import("numpy");  // once, so that array checks never import it on a hot path
  pybind11::register_exception<shapebias::io_error>(m, "IOError", PyExc_OSError);
  sp::bind_smoothness(m);
  sp::bind_dissection(m);
  sp::bind_diversity(m);
  sp::bind_shape_bias(m);
  sp::bind_io(m);
}

// SPDX-License-Identifier: MIT
// The saved form of an accumulator: its kind, its parameters and its arrays. Accumulators turn
// themselves into one and back (save / load); io/state.hpp writes it to an HDF5 group, the Python
// bindings pickle it, and `merge` checks two of them for compatibility.
#pragma once

#include <xtensor/xarray.hpp>

#include <map>
#include <stdexcept>
#include <string>

namespace shapebias::stats {

struct state {
  std::string kind;                              // e.g. "tv", "spectrum"
  std::map<std::string, double> params;          // numeric parameters (counts are exact to 2^53)
  std::map<std::string, std::string> text;       // named choices, e.g. "norm": "none"
  std::map<std::string, xt::xarray<double>> arrays;

  double param(const std::string& name) const {
    auto it = params.find(name);
    if (it == params.end()) throw std::invalid_argument(kind + " state: no parameter '" + name + "'");
    return it->second;
  }
  const std::string& choice(const std::string& name) const {
    auto it = text.find(name);
    if (it == text.end()) throw std::invalid_argument(kind + " state: no field '" + name + "'");
    return it->second;
  }
  const xt::xarray<double>& array(const std::string& name) const {
    auto it = arrays.find(name);
    if (it == arrays.end()) throw std::invalid_argument(kind + " state: no array '" + name + "'");
    return it->second;
  }
  void expect_kind(const std::string& k) const {
    if (kind != k) throw std::invalid_argument("state of kind '" + kind + "' where '" + k + "' was expected");
  }
};

}  // namespace shapebias::stats

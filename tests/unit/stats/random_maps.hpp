// SPDX-License-Identifier: MIT
// Seeded random maps for the statistics tests.
#pragma once

#include <xtensor/xarray.hpp>
#include <xtensor/xbuilder.hpp>

#include <random>
#include <vector>

template <class T>
xt::xarray<T> random_maps(const std::vector<std::size_t>& shape, unsigned seed, double lo = -1.0, double hi = 1.0) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<double> u(lo, hi);
  xt::xarray<T> x = xt::zeros<T>(shape);
  for (auto& v : x) v = static_cast<T>(u(gen));
  return x;
}

// SPDX-License-Identifier: MIT
#include <catch2/catch.hpp>

#include <xtensor/xarray.hpp>

#include "shapebias/stats/tv.hpp"

using shapebias::stats::total_variation;

TEST_CASE("TV of a 2x3 map worked by hand", "[tv]") {
  // rows: |1-4|+|2-6|+|3-5| = 3+4+2 = 9; columns: |1-2|+|2-3|+|4-6|+|6-5| = 1+1+2+1 = 5
  xt::xarray<float> x = {{1, 2, 3}, {4, 6, 5}};
  CHECK(total_variation(x)() == 14.0);
}

// SPDX-License-Identifier: MIT
// Tests for include/shapebias/stats/corruption.hpp (mean_corruption_error).
#include <catch2/catch.hpp>

#include <limits>
#include <stdexcept>

#include "shapebias/stats/corruption.hpp"

using shapebias::stats::corruption_table;
using shapebias::stats::mean_corruption_error;

namespace {

// Accuracies are multiples of 1/8, so every error and every sum below is exact in double.
corruption_table baseline() {
  return {{{"gaussian_noise", {{1, 0.5}, {2, 0.375}, {3, 0.25}}}, {"fog", {{1, 0.75}, {2, 0.625}, {3, 0.5}}}}};
}
corruption_table model() {
  return {{{"gaussian_noise", {{1, 0.75}, {2, 0.625}, {3, 0.5}}}, {"fog", {{1, 0.625}, {2, 0.5}, {3, 0.25}}}}};
}

}  // namespace

TEST_CASE("mCE on 2 corruptions x 3 severities worked by hand", "[corruption]") {
  // gaussian_noise: model errors   0.25 + 0.375 + 0.5  = 1.125
  //                 baseline errors 0.5 + 0.625 + 0.75 = 1.875   CE = 1.125 / 1.875 = 0.6
  // fog:            model errors   0.375 + 0.5 + 0.75  = 1.625
  //                 baseline errors 0.25 + 0.375 + 0.5 = 1.125   CE = 1.625 / 1.125 = 13/9
  // mCE = (0.6 + 13/9) / 2 = (27/45 + 65/45) / 2 = 46/45 ≈ 1.0222 (102.2 %)
  const auto r = mean_corruption_error(model(), baseline());
  REQUIRE(r.ce.size() == 2);
  CHECK(r.ce.at("gaussian_noise") == Approx(0.6).epsilon(1e-15));
  CHECK(r.ce.at("fog") == Approx(13.0 / 9.0).epsilon(1e-15));
  CHECK(r.mce == Approx(46.0 / 45.0).epsilon(1e-15));

  SECTION("the baseline against itself scores 1 everywhere") {
    const auto b = mean_corruption_error(baseline(), baseline());
    CHECK(b.ce.at("gaussian_noise") == 1.0);
    CHECK(b.ce.at("fog") == 1.0);
    CHECK(b.mce == 1.0);
  }
  SECTION("corruptions only the baseline has are ignored; the mean is over the model's") {
    auto b = baseline();
    b.accuracy["contrast"] = {{1, 0.5}, {2, 0.25}, {3, 0.125}};
    auto m = model();
    m.accuracy.erase("fog");
    const auto one = mean_corruption_error(m, b);
    REQUIRE(one.ce.size() == 1);
    CHECK(one.ce.count("contrast") == 0);
    CHECK(one.mce == Approx(0.6).epsilon(1e-15));
  }
  SECTION("a perfect model scores 0; accuracies of 0 and 1 are allowed") {
    auto m = model();
    for (auto& [c, by_severity] : m.accuracy)
      for (auto& [s, a] : by_severity) a = 1.0;
    auto b = baseline();
    b.accuracy["fog"][3] = 0.0;  // fog baseline errors 0.25 + 0.375 + 1 = 1.625
    const auto p = mean_corruption_error(m, b);
    CHECK(p.ce.at("fog") == 0.0);
    CHECK(p.mce == 0.0);
    m.accuracy["fog"][1] = 0.0;  // fog model errors 1 + 0 + 0 = 1
    CHECK(mean_corruption_error(m, b).ce.at("fog") == Approx(1.0 / 1.625).epsilon(1e-15));
  }
}

TEST_CASE("mCE errors name the corruption and severity", "[corruption]") {
  SECTION("a severity the model lacks") {
    auto m = model();
    m.accuracy["gaussian_noise"].erase(3);
    CHECK_THROWS_WITH(mean_corruption_error(m, baseline()),
                      Catch::Contains("model has no severity 3") && Catch::Contains("'gaussian_noise'"));
  }
  SECTION("a severity the baseline lacks") {
    auto m = model();
    m.accuracy["fog"][4] = 0.125;
    CHECK_THROWS_WITH(mean_corruption_error(m, baseline()),
                      Catch::Contains("baseline has no severity 4") && Catch::Contains("'fog'"));
    auto b = baseline();
    b.accuracy["fog"].erase(1);
    CHECK_THROWS_WITH(mean_corruption_error(model(), b),
                      Catch::Contains("baseline has no severity 1") && Catch::Contains("'fog'"));
  }
  SECTION("a corruption the baseline lacks") {
    auto m = model();
    m.accuracy["contrast"] = {{1, 0.5}, {2, 0.5}, {3, 0.5}};
    CHECK_THROWS_WITH(mean_corruption_error(m, baseline()),
                      Catch::Contains("baseline has no corruption") && Catch::Contains("'contrast'"));
  }
  SECTION("an accuracy outside [0, 1], in either table") {
    auto m = model();
    m.accuracy["fog"][2] = 1.25;
    CHECK_THROWS_WITH(mean_corruption_error(m, baseline()), Catch::Contains("model accuracy") &&
                                                                Catch::Contains("'fog' severity 2") &&
                                                                Catch::Contains("outside [0, 1]"));
    m.accuracy["fog"][2] = -0.125;
    CHECK_THROWS_AS(mean_corruption_error(m, baseline()), std::invalid_argument);
    m.accuracy["fog"][2] = std::numeric_limits<double>::quiet_NaN();
    CHECK_THROWS_AS(mean_corruption_error(m, baseline()), std::invalid_argument);
    auto b = baseline();
    b.accuracy["gaussian_noise"][1] = 100.0;  // a percentage where a fraction belongs
    CHECK_THROWS_WITH(mean_corruption_error(model(), b),
                      Catch::Contains("baseline accuracy") && Catch::Contains("'gaussian_noise' severity 1"));
  }
  SECTION("a baseline with zero error over a corruption") {
    auto b = baseline();
    b.accuracy["fog"] = {{1, 1.0}, {2, 1.0}, {3, 1.0}};
    CHECK_THROWS_WITH(mean_corruption_error(model(), b), Catch::Contains("'fog'") && Catch::Contains("is 0"));
  }
  SECTION("a model without corruptions") {
    CHECK_THROWS_AS(mean_corruption_error(corruption_table{}, baseline()), std::invalid_argument);
  }
}

// SPDX-License-Identifier: MIT
// Tests for include/shapebias/stats/shape_bias.hpp (coarse_mapping, coarse_scores,
// coarse_decision, softmax_rows, shape_bias_accumulator).
#include <catch2/catch.hpp>

#include <xtensor/xarray.hpp>
#include <xtensor/xbuilder.hpp>
#include <xtensor/xmath.hpp>
#include <xtensor/xview.hpp>

#include <cmath>
#include <cstddef>
#include <limits>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "shapebias/stats/shape_bias.hpp"

using shapebias::stats::coarse_decision;
using shapebias::stats::coarse_mapping;
using shapebias::stats::coarse_scores;
using shapebias::stats::shape_bias_accumulator;
using shapebias::stats::softmax_rows;

namespace {

// Five fine classes; three categories: cat = {0, 1} (two members, so the mean matters),
// dog = {2}, car = {3}. Fine class 4 belongs to no category.
coarse_mapping three() { return {{"cat", "dog", "car"}, {{0, 1}, {2}, {3}}}; }
constexpr std::size_t cat = 0, dog = 1, car = 2;

// Each row sums to 1. Coarse scores (cat = mean of 0 and 1) and decisions:
//   row 0: cat .25, dog .35, car .05 -> dog  (a SUM would give cat .5 -> cat)  shape dog, texture cat: SHAPE
//   row 1: cat .10, dog .10, car .60 -> car                                     shape cat, texture car: TEXTURE
//   row 2: cat .10, dog .70, car .05 -> dog                                     shape cat, texture car: NEITHER
//   row 3: cat .40, dog .10, car .05 -> cat                                     shape car, texture car: EXCLUDED
//   row 4: cat .40, dog .10, car .05 -> cat                                     shape cat, texture dog: SHAPE
//   row 5: cat .20, dog .20, car .20 -> cat  (a three-way tie: lowest index)    shape dog, texture cat: TEXTURE
//   row 6: cat .05, dog .80, car .05 -> dog                                     shape dog, texture car: SHAPE
// Totals: shape 3 (rows 0, 4, 6), texture 2 (rows 1, 5), neither 1, excluded 1: shape bias 3/5.
// Per shape category: cat: shape 1, texture 1, neither 1 -> 1/2; dog: shape 2, texture 1 -> 2/3;
// car: one excluded row, no decisions -> NaN.
const xt::xarray<double> probs = {{0.25, 0.25, 0.35, 0.05, 0.10}, {0.10, 0.10, 0.10, 0.60, 0.10},
                                  {0.10, 0.10, 0.70, 0.05, 0.05}, {0.60, 0.20, 0.10, 0.05, 0.05},
                                  {0.50, 0.30, 0.10, 0.05, 0.05}, {0.20, 0.20, 0.20, 0.20, 0.20},
                                  {0.05, 0.05, 0.80, 0.05, 0.05}};
const std::size_t shape_cat[] = {dog, cat, cat, car, cat, dog, dog};
const std::size_t texture_cat[] = {cat, car, car, car, dog, cat, car};

void check_hand_counts(const shape_bias_accumulator& a) {
  CHECK(a.rows() == 7);
  CHECK(a.shape_decisions() == 3);
  CHECK(a.texture_decisions() == 2);
  CHECK(a.neither() == 1);
  CHECK(a.excluded() == 1);
  CHECK(a.shape_bias() == 3.0 / 5.0);
  CHECK(a.shape_decisions(cat) == 1);
  CHECK(a.texture_decisions(cat) == 1);
  CHECK(a.neither(cat) == 1);
  CHECK(a.excluded(cat) == 0);
  CHECK(a.shape_bias(cat) == 0.5);
  CHECK(a.shape_decisions(dog) == 2);
  CHECK(a.texture_decisions(dog) == 1);
  CHECK(a.neither(dog) == 0);
  CHECK(a.excluded(dog) == 0);
  CHECK(a.shape_bias(dog) == 2.0 / 3.0);
  CHECK(a.shape_decisions(car) == 0);
  CHECK(a.texture_decisions(car) == 0);
  CHECK(a.neither(car) == 0);
  CHECK(a.excluded(car) == 1);
  CHECK(std::isnan(a.shape_bias(car)));
}

void check_same_state(const shape_bias_accumulator& a, const shape_bias_accumulator& b) {
  CHECK(a.mapping() == b.mapping());
  CHECK(a.fine_classes() == b.fine_classes());
  CHECK(a.rows() == b.rows());
  REQUIRE(a.categories() == b.categories());
  for (std::size_t c = 0; c < a.categories(); ++c) {
    CHECK(a.shape_decisions(c) == b.shape_decisions(c));
    CHECK(a.texture_decisions(c) == b.texture_decisions(c));
    CHECK(a.neither(c) == b.neither(c));
    CHECK(a.excluded(c) == b.excluded(c));
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// coarse_mapping, coarse_scores, coarse_decision

TEST_CASE("coarse scores are the MEAN of the members' probabilities", "[shape_bias]") {
  const auto m = three();
  const double* row0 = probs.data();
  const auto s = coarse_scores(row0, 5, m);
  REQUIRE(s.size() == 3);
  CHECK(s[cat] == 0.25);
  CHECK(s[dog] == 0.35);
  CHECK(s[car] == 0.05);
  CHECK(coarse_decision(row0, 5, m) == dog);
  // the premise of row 0: summing instead of averaging would decide cat
  CHECK(row0[0] + row0[1] > row0[2]);
  // float input, and the lowest index winning a three-way tie (row 5)
  const xt::xarray<float> pf = probs;
  CHECK(coarse_decision(pf.data() + 5 * 5, 5, m) == cat);
  CHECK(coarse_decision(pf.data() + 2 * 5, 5, m) == dog);
  CHECK(coarse_decision(probs.data() + 1 * 5, 5, m) == car);
  const auto s5 = coarse_scores(pf.data() + 5 * 5, 5, m);
  CHECK(s5[cat] == s5[dog]);
  CHECK(s5[dog] == s5[car]);
  // a mapping that does not fit the row is refused before reading it
  CHECK_THROWS_AS(coarse_scores(row0, 3, m), std::invalid_argument);
  const double nan_row[] = {0.5, std::numeric_limits<double>::quiet_NaN(), 0.2, 0.2, 0.1};
  CHECK_THROWS_AS(coarse_decision(nan_row, 5, m), std::domain_error);
}

TEST_CASE("coarse_mapping: check names the faulty category and index", "[shape_bias]") {
  CHECK_NOTHROW(three().check(5));
  CHECK_NOTHROW(three().check(4));
  SECTION("an index >= fine classes") {
    CHECK_THROWS_WITH(three().check(3), Catch::Contains("'car'") && Catch::Contains("fine class 3") &&
                                            Catch::Contains("[0, 3)"));
    auto m = three();
    m.members[cat] = {0, 7, 1};
    CHECK_THROWS_WITH(m.check(5), Catch::Contains("'cat'") && Catch::Contains("fine class 7"));
  }
  SECTION("a category with no members") {
    auto m = three();
    m.members[dog].clear();
    CHECK_THROWS_WITH(m.check(5), Catch::Contains("'dog'") && Catch::Contains("no members"));
  }
  SECTION("a duplicate category name") {
    auto m = three();
    m.categories[car] = "cat";
    CHECK_THROWS_WITH(m.check(5), Catch::Contains("'cat'") && Catch::Contains("twice"));
  }
  SECTION("a member listed twice in one category") {
    auto m = three();
    m.members[cat] = {1, 0, 1};
    CHECK_THROWS_WITH(m.check(5), Catch::Contains("'cat'") && Catch::Contains("fine class 1 twice"));
    // in two categories is allowed
    auto shared = three();
    shared.members[dog] = {2, 0};
    CHECK_NOTHROW(shared.check(5));
  }
  SECTION("no categories, lengths that differ, an empty or multi-line name") {
    CHECK_THROWS_AS(coarse_mapping{}.check(5), std::invalid_argument);
    auto m = three();
    m.members.pop_back();
    CHECK_THROWS_AS(m.check(5), std::invalid_argument);
    auto e = three();
    e.categories[dog] = "";
    CHECK_THROWS_AS(e.check(5), std::invalid_argument);
    auto nl = three();
    nl.categories[dog] = "do\ng";
    CHECK_THROWS_AS(nl.check(5), std::invalid_argument);
  }
  SECTION("the accumulator checks the mapping too") {
    auto m = three();
    m.members[dog].clear();
    CHECK_THROWS_AS(shape_bias_accumulator(m), std::invalid_argument);
    shape_bias_accumulator a(three());  // index 3 fits 5 fine classes but not 3
    const xt::xarray<double> narrow = {{0.2, 0.3, 0.5}};
    const std::size_t s[] = {cat}, t[] = {dog};
    CHECK_THROWS_WITH(a.update(narrow, s, t), Catch::Contains("'car'") && Catch::Contains("fine class 3"));
    CHECK(a.rows() == 0);
    CHECK(a.fine_classes() == 0);
  }
}

TEST_CASE("coarse_mapping: find", "[shape_bias]") {
  const auto m = three();
  CHECK(m.find("cat") == std::optional<std::size_t>(0));
  CHECK(m.find("car") == std::optional<std::size_t>(2));
  CHECK_FALSE(m.find("Car").has_value());
  CHECK_FALSE(m.find("").has_value());
}

// ---------------------------------------------------------------------------------------------
// softmax_rows

TEST_CASE("softmax_rows equals a direct computation and is stable for large logits", "[shape_bias]") {
  SECTION("moderate logits against exp(x) / sum exp(x)") {
    std::mt19937 gen(61);
    std::normal_distribution<double> g(0.0, 3.0);
    xt::xarray<float> x = xt::zeros<float>({4, 7});
    for (auto& v : x) v = static_cast<float>(g(gen));
    const auto p = softmax_rows(x);
    REQUIRE(p.dimension() == 2);
    REQUIRE(p.shape()[0] == 4);
    REQUIRE(p.shape()[1] == 7);
    for (std::size_t i = 0; i < 4; ++i) {
      double sum = 0, direct_sum = 0;
      for (std::size_t j = 0; j < 7; ++j) direct_sum += std::exp(static_cast<double>(x(i, j)));
      for (std::size_t j = 0; j < 7; ++j) {
        CHECK(p(i, j) == Approx(std::exp(static_cast<double>(x(i, j))) / direct_sum).epsilon(1e-13));
        sum += p(i, j);
      }
      CHECK(sum == Approx(1.0).epsilon(1e-14));
    }
  }
  SECTION("by hand: logits 0 and ln 3 give 1/4 and 3/4") {
    const xt::xarray<double> x = {{0.0, std::log(3.0)}};
    const auto p = softmax_rows(x);
    CHECK(p(0, 0) == Approx(0.25).epsilon(1e-15));
    CHECK(p(0, 1) == Approx(0.75).epsilon(1e-15));
  }
  SECTION("1000 and 1001, where exp overflows") {
    REQUIRE(std::isinf(std::exp(1000.0)));  // a direct computation would give inf / inf = NaN
    const xt::xarray<double> x = {{1000.0, 1001.0}, {-1000.0, -1001.0}, {1000.0, 1000.0}};
    const auto p = softmax_rows(x);
    const double e = std::exp(1.0);
    CHECK(p(0, 0) == Approx(1 / (1 + e)).epsilon(1e-14));
    CHECK(p(0, 1) == Approx(e / (1 + e)).epsilon(1e-14));
    CHECK(p(1, 0) == Approx(e / (1 + e)).epsilon(1e-14));
    CHECK(p(1, 1) == Approx(1 / (1 + e)).epsilon(1e-14));
    CHECK(p(2, 0) == 0.5);
    CHECK(p(2, 1) == 0.5);
    const xt::xarray<float> xf = {{1000.f, 1001.f, 999.f}};
    const auto pf = softmax_rows(xf);
    CHECK(pf(0, 1) == Approx(e / (1 + e + 1 / e)).epsilon(1e-14));
  }
  SECTION("NaN propagates to the row; -Inf logits give 0; a wrong rank is refused") {
    const double inf = std::numeric_limits<double>::infinity();
    const xt::xarray<double> x = {{1.0, std::numeric_limits<double>::quiet_NaN(), 2.0}, {0.0, -inf, 0.0}};
    const auto p = softmax_rows(x);
    CHECK(std::isnan(p(0, 0)));
    CHECK(std::isnan(p(0, 2)));
    CHECK(p(1, 0) == 0.5);
    CHECK(p(1, 1) == 0.0);
    const xt::xarray<double> flat = {1.0, 2.0};
    CHECK_THROWS_AS(softmax_rows(flat), std::invalid_argument);
  }
}

// ---------------------------------------------------------------------------------------------
// shape_bias_accumulator

TEST_CASE("shape_bias_accumulator: counts and shape bias worked by hand", "[shape_bias]") {
  SECTION("double, one batch") {
    shape_bias_accumulator a(three());
    a.update(probs, shape_cat, texture_cat);
    CHECK(a.fine_classes() == 5);
    check_hand_counts(a);
  }
  SECTION("float, row by row") {
    const xt::xarray<float> pf = probs;
    shape_bias_accumulator a(three());
    for (std::size_t i = 0; i < 7; ++i) a.update(xt::view(pf, xt::range(i, i + 1)), shape_cat + i, texture_cat + i);
    check_hand_counts(a);
  }
  SECTION("from logits through softmax_rows") {
    const xt::xarray<double> logits = xt::log(probs) + 3.0;
    shape_bias_accumulator a(three());
    a.update(softmax_rows(logits), shape_cat, texture_cat);
    check_hand_counts(a);  // row 5's equal logits give equal probabilities: the tie survives
  }
  SECTION("no decisions give NaN") {
    shape_bias_accumulator a(three());
    CHECK(std::isnan(a.shape_bias()));
    a.update(xt::view(probs, xt::range(2, 4)), shape_cat + 2, texture_cat + 2);  // neither and excluded
    CHECK(a.neither() == 1);
    CHECK(a.excluded() == 1);
    CHECK(std::isnan(a.shape_bias()));
  }
}

TEST_CASE("shape_bias_accumulator: merging two parts equals one pass", "[shape_bias]") {
  shape_bias_accumulator one(three()), a(three()), b(three());
  one.update(probs, shape_cat, texture_cat);
  a.update(xt::view(probs, xt::range(0, 3)), shape_cat, texture_cat);
  b.update(xt::view(probs, xt::range(3, 7)), shape_cat + 3, texture_cat + 3);
  a.merge(b);
  check_same_state(a, one);
  check_hand_counts(a);

  SECTION("into an empty accumulator, which takes the fine width") {
    shape_bias_accumulator e(three());
    e.merge(one);
    check_same_state(e, one);
    const xt::xarray<double> six = {{0.1, 0.1, 0.1, 0.1, 0.1, 0.5}};
    const std::size_t s[] = {cat}, t[] = {dog};
    CHECK_THROWS_AS(e.update(six, s, t), std::invalid_argument);
  }
  SECTION("other mappings or fine widths are refused, and change nothing") {
    auto other_members = three();
    other_members.members[cat] = {0, 4};
    auto other_order = three();
    std::swap(other_order.categories[dog], other_order.categories[car]);
    auto extra = three();
    extra.categories.push_back("other");
    extra.members.push_back({4});
    CHECK_THROWS_AS(a.merge(shape_bias_accumulator(other_members)), std::invalid_argument);
    CHECK_THROWS_AS(a.merge(shape_bias_accumulator(other_order)), std::invalid_argument);
    CHECK_THROWS_AS(a.merge(shape_bias_accumulator(extra)), std::invalid_argument);
    shape_bias_accumulator wide(three());
    const xt::xarray<double> six = {{0.1, 0.1, 0.1, 0.1, 0.1, 0.5}};
    const std::size_t s[] = {cat}, t[] = {dog};
    wide.update(six, s, t);
    CHECK_THROWS_AS(a.merge(wide), std::invalid_argument);
    check_same_state(a, one);
  }
}

TEST_CASE("shape_bias_accumulator: save and load round trip", "[shape_bias]") {
  shape_bias_accumulator a(three());
  a.update(xt::view(probs, xt::range(0, 5)), shape_cat, texture_cat);
  const auto s = a.save();
  CHECK(s.kind == "shape_bias");
  CHECK(s.choice("category_names") == "cat\ndog\ncar");
  CHECK(s.array("members") == xt::xarray<double>{0, 1, 2, 3});
  CHECK(s.array("member_count") == xt::xarray<double>{2, 1, 1});
  auto back = shape_bias_accumulator::load(s);
  check_same_state(back, a);
  CHECK(back.mapping().members == three().members);
  // the loaded one goes on exactly as the original
  back.update(xt::view(probs, xt::range(5, 7)), shape_cat + 5, texture_cat + 5);
  check_hand_counts(back);
  const xt::xarray<double> six = {{0.1, 0.1, 0.1, 0.1, 0.1, 0.5}};
  const std::size_t sc[] = {cat}, tc[] = {dog};
  CHECK_THROWS_AS(back.update(six, sc, tc), std::invalid_argument);  // it kept the fine width

  SECTION("an unused accumulator round-trips too") {
    const auto e = shape_bias_accumulator::load(shape_bias_accumulator(three()).save());
    CHECK(e.rows() == 0);
    CHECK(e.fine_classes() == 0);
    CHECK(e.mapping() == three());
  }
  SECTION("another kind, missing fields or inconsistent arrays are refused") {
    auto other = s;
    other.kind = "topk_accuracy";
    CHECK_THROWS_AS(shape_bias_accumulator::load(other), std::invalid_argument);
    auto names = s;
    names.text["category_names"] = "cat\ndog";
    CHECK_THROWS_AS(shape_bias_accumulator::load(names), std::invalid_argument);
    auto counts = s;
    counts.arrays["member_count"] = xt::xarray<double>{2, 1, 2};
    CHECK_THROWS_AS(shape_bias_accumulator::load(counts), std::invalid_argument);
    auto extra = s;
    extra.arrays["members"] = xt::xarray<double>{0, 1, 2, 3, 4};
    CHECK_THROWS_AS(shape_bias_accumulator::load(extra), std::invalid_argument);
    auto out_of_range = s;
    out_of_range.arrays["members"] = xt::xarray<double>{0, 1, 2, 9};
    CHECK_THROWS_AS(shape_bias_accumulator::load(out_of_range), std::invalid_argument);
    auto missing = s;
    missing.arrays.erase("neither");
    CHECK_THROWS_AS(shape_bias_accumulator::load(missing), std::invalid_argument);
    auto short_counts = s;
    short_counts.arrays["shape"] = xt::xarray<double>{1, 1};
    CHECK_THROWS_AS(shape_bias_accumulator::load(short_counts), std::invalid_argument);
  }
}

TEST_CASE("shape_bias_accumulator: errors name the row and change nothing", "[shape_bias]") {
  shape_bias_accumulator a(three());
  a.update(xt::view(probs, xt::range(0, 2)), shape_cat, texture_cat);  // the next batch starts at row 2
  const shape_bias_accumulator before = a;
  xt::xarray<double> batch = xt::view(probs, xt::range(2, 7));

  SECTION("a category index out of range") {
    std::size_t s[] = {cat, dog, 3, cat, dog};
    CHECK_THROWS_WITH(a.update(batch, s, texture_cat + 2), Catch::Contains("row 4") && Catch::Contains("[0, 3)"));
    std::size_t t[] = {cat, dog, car, cat, 7};
    CHECK_THROWS_WITH(a.update(batch, shape_cat + 2, t), Catch::Contains("row 6"));
  }
  SECTION("NaN") {
    batch(1, 4) = std::numeric_limits<double>::quiet_NaN();
    CHECK_THROWS_AS(a.update(batch, shape_cat + 2, texture_cat + 2), std::domain_error);
    CHECK_THROWS_WITH(a.update(batch, shape_cat + 2, texture_cat + 2), Catch::Contains("row 3"));
  }
  SECTION("logits passed by mistake: a negative value, or a sum far from 1") {
    xt::xarray<double> logits = xt::log(batch);
    CHECK_THROWS_WITH(a.update(logits, shape_cat + 2, texture_cat + 2),
                      Catch::Contains("row 2") && Catch::Contains("softmax_rows"));
    xt::xarray<double> halves = batch * 0.5;
    CHECK_THROWS_WITH(a.update(halves, shape_cat + 2, texture_cat + 2),
                      Catch::Contains("row 2") && Catch::Contains("sum to 0.5"));
    batch(4, 0) += 0.005;  // float rounding of a softmax is well within the tolerance
    shape_bias_accumulator c = a;
    CHECK_NOTHROW(c.update(batch, shape_cat + 2, texture_cat + 2));
  }
  SECTION("a wrong rank, a change of fine width, missing category arrays") {
    const xt::xarray<double> flat = {0.5, 0.5, 0.0, 0.0, 0.0};
    CHECK_THROWS_AS(a.update(flat, shape_cat, texture_cat), std::invalid_argument);
    const xt::xarray<double> six = {{0.1, 0.1, 0.1, 0.1, 0.1, 0.5}};
    CHECK_THROWS_WITH(a.update(six, shape_cat, texture_cat), Catch::Contains("6 fine classes") && Catch::Contains("of 5"));
    CHECK_THROWS_AS(a.update(batch, nullptr, texture_cat), std::invalid_argument);
    CHECK_THROWS_AS(a.update(batch, shape_cat, nullptr), std::invalid_argument);
  }
  check_same_state(a, before);
  CHECK(a.rows() == 2);
}

// SPDX-License-Identifier: MIT
// Tests for include/shapebias/stats/accuracy.hpp (topk_accuracy, intersect_correct).
#include <catch2/catch.hpp>

#include <xtensor/xarray.hpp>
#include <xtensor/xbuilder.hpp>
#include <xtensor/xmanipulation.hpp>
#include <xtensor/xview.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "shapebias/stats/accuracy.hpp"

using shapebias::stats::intersect_correct;
using shapebias::stats::topk_accuracy;

namespace {

// Four rows of five class scores, scored at top 1 and top 2 (k = 2):
//   row 0: label 1 holds the maximum 0.7                    -> top-1 yes, top-2 yes
//   row 1: label 0 scores 2, only 3 (class 2) beats it      -> top-1 no,  top-2 yes
//   row 2: label 1 ties class 0 at the maximum 0.3; no score
//          is strictly greater, so it counts (tie rule)     -> top-1 yes, top-2 yes
//   row 3: label 2 scores 1; 5, 4, 3 and 2 beat it         -> top-1 no,  top-2 no
const xt::xarray<double> scores = {{0.1, 0.7, 0.05, 0.1, 0.05},
                                   {2.0, 1.0, 3.0, -1.0, 0.5},
                                   {0.3, 0.3, 0.1, 0.2, 0.1},
                                   {5.0, 4.0, 1.0, 3.0, 2.0}};
const std::int64_t labels[] = {1, 0, 1, 2};
const std::vector<std::uint8_t> expect1 = {1, 0, 1, 0}, expectk = {1, 1, 1, 0};

void check_same_state(const topk_accuracy& a, const topk_accuracy& b) {
  CHECK(a.classes() == b.classes());
  CHECK(a.k() == b.k());
  CHECK(a.count() == b.count());
  CHECK(a.correct1() == b.correct1());
  CHECK(a.correctk() == b.correctk());
}

}  // namespace

TEST_CASE("topk_accuracy on a 4x5 score matrix worked by hand, with a tie", "[accuracy]") {
  SECTION("double scores") {
    topk_accuracy acc(5, 2);
    std::vector<std::uint8_t> f1(4, 9), fk(4, 9);
    acc.update(scores, labels, f1.data(), fk.data());
    CHECK(f1 == expect1);
    CHECK(fk == expectk);
    CHECK(acc.count() == 4);
    CHECK(acc.correct1() == 2);
    CHECK(acc.correctk() == 3);
    CHECK(acc.top1() == 0.5);
    CHECK(acc.topk() == 0.75);
    CHECK(acc.k() == 2);
    CHECK(acc.classes() == 5);
  }
  SECTION("float scores, and only one flag array asked for") {
    const xt::xarray<float> sf = scores;
    topk_accuracy acc(5, 2);
    std::vector<std::uint8_t> fk(4, 9);
    acc.update(sf, labels, nullptr, fk.data());
    CHECK(fk == expectk);
    CHECK(acc.correct1() == 2);
    CHECK(acc.correctk() == 3);
  }
  SECTION("a non-contiguous view (the transpose of the transpose) gives the same") {
    const xt::xarray<double> t = xt::transpose(scores);
    topk_accuracy acc(5, 2);
    std::vector<std::uint8_t> f1(4, 9);
    acc.update(xt::transpose(t), labels, f1.data());
    CHECK(f1 == expect1);
    CHECK(acc.correctk() == 3);
  }
  SECTION("top-k with k = 1 equals top-1; with k = classes every row is correct") {
    topk_accuracy one(5, 1), all(5, 5);
    one.update(scores, labels);
    all.update(scores, labels);
    CHECK(one.correctk() == 2);
    CHECK(one.correct1() == 2);
    CHECK(all.correctk() == 4);
    CHECK(all.topk() == 1.0);
  }
}

TEST_CASE("topk_accuracy: a label tied at the k-th place counts as in the top k", "[accuracy]") {
  // 5 beats both; classes 2 and 3 tie at 4, so one score is strictly greater than either label's:
  // both are in the top 2 (though a sort could keep only one of them there), neither in the top 1.
  const xt::xarray<double> s = {{5.0, 1.0, 4.0, 4.0, 0.0}, {5.0, 1.0, 4.0, 4.0, 0.0}, {5.0, 1.0, 4.0, 4.0, 0.0}};
  const std::int64_t l[] = {3, 2, 1};
  topk_accuracy acc(5, 2);
  std::vector<std::uint8_t> f1(3), fk(3);
  acc.update(s, l, f1.data(), fk.data());
  CHECK(f1 == std::vector<std::uint8_t>{0, 0, 0});
  CHECK(fk == std::vector<std::uint8_t>{1, 1, 0});  // class 1 has three scores above it
}

TEST_CASE("topk_accuracy: no rows give NaN fractions", "[accuracy]") {
  topk_accuracy acc(10);
  CHECK(acc.k() == 5);
  CHECK(acc.count() == 0);
  CHECK(std::isnan(acc.top1()));
  CHECK(std::isnan(acc.topk()));
  acc.update(xt::xarray<double>(xt::zeros<double>({0, 10})), nullptr);  // an empty batch is fine
  CHECK(acc.count() == 0);
  CHECK(std::isnan(acc.top1()));
}

TEST_CASE("topk_accuracy: merging two halves equals one pass", "[accuracy]") {
  std::mt19937 gen(51);
  std::normal_distribution<double> g;
  std::uniform_int_distribution<std::int64_t> label(0, 9);
  xt::xarray<float> s = xt::zeros<float>({50, 10});
  for (auto& v : s) v = static_cast<float>(g(gen));
  std::vector<std::int64_t> l(50);
  for (auto& v : l) v = label(gen);
  topk_accuracy one(10, 3), a(10, 3), b(10, 3);
  std::vector<std::uint8_t> f1(50), fk(50), h1(50), hk(50);
  one.update(s, l.data(), f1.data(), fk.data());
  a.update(xt::view(s, xt::range(0, 21)), l.data(), h1.data(), hk.data());
  b.update(xt::view(s, xt::range(21, 50)), l.data() + 21, h1.data() + 21, hk.data() + 21);
  CHECK(h1 == f1);
  CHECK(hk == fk);
  a.merge(b);
  check_same_state(a, one);
  REQUIRE(one.correct1() > 0);
  REQUIRE(one.correctk() > one.correct1());  // the data exercises both counts
  CHECK(a.top1() == one.top1());
  CHECK(a.topk() == one.topk());

  SECTION("an empty accumulator, either way round") {
    topk_accuracy e(10, 3);
    e.merge(one);
    check_same_state(e, one);
    const topk_accuracy before = one;
    one.merge(topk_accuracy(10, 3));
    check_same_state(one, before);
  }
  SECTION("other classes or k are refused, and change nothing") {
    const topk_accuracy before = a;
    CHECK_THROWS_AS(a.merge(topk_accuracy(11, 3)), std::invalid_argument);
    CHECK_THROWS_AS(a.merge(topk_accuracy(10, 5)), std::invalid_argument);
    check_same_state(a, before);
  }
}

TEST_CASE("topk_accuracy: save and load round trip", "[accuracy]") {
  topk_accuracy acc(5, 2);
  acc.update(scores, labels);
  const auto s = acc.save();
  CHECK(s.kind == "topk_accuracy");
  CHECK(s.param("count") == 4);
  CHECK(s.param("correct1") == 2);
  CHECK(s.param("correctk") == 3);
  auto back = topk_accuracy::load(s);
  check_same_state(back, acc);
  // the loaded one goes on exactly as the original
  acc.update(scores, labels);
  back.update(scores, labels);
  check_same_state(back, acc);
  CHECK(back.correctk() == 6);

  SECTION("another kind, a missing parameter or inconsistent counts are refused") {
    auto other = s;
    other.kind = "tv";
    CHECK_THROWS_AS(topk_accuracy::load(other), std::invalid_argument);
    auto missing = s;
    missing.params.erase("correctk");
    CHECK_THROWS_AS(topk_accuracy::load(missing), std::invalid_argument);
    auto more = s;
    more.params["correct1"] = 4;  // more top-1 than top-k hits
    CHECK_THROWS_AS(topk_accuracy::load(more), std::invalid_argument);
    auto over = s;
    over.params["correctk"] = 5;  // more hits than rows
    CHECK_THROWS_AS(topk_accuracy::load(over), std::invalid_argument);
    auto bad_k = s;
    bad_k.params["k"] = 6;  // k > classes
    CHECK_THROWS_AS(topk_accuracy::load(bad_k), std::invalid_argument);
  }
}

TEST_CASE("topk_accuracy: errors name the row and change nothing", "[accuracy]") {
  topk_accuracy acc(5, 2);
  acc.update(scores, labels);  // 4 rows before: rows of the next batch are 4, 5, ...
  const topk_accuracy before = acc;
  std::vector<std::uint8_t> f1(4, 9), fk(4, 9);

  SECTION("a label outside [0, classes)") {
    for (std::int64_t bad : {std::int64_t{5}, std::int64_t{-1}, std::int64_t{1000}}) {
      const std::int64_t l[] = {1, 0, bad, 2};
      CHECK_THROWS_MATCHES(acc.update(scores, l, f1.data(), fk.data()), std::invalid_argument,
                           Catch::Matchers::Message("top-k accuracy: row 6: label " + std::to_string(bad) +
                                                    " is outside [0, 5)"));
    }
  }
  SECTION("a wrong width or rank") {
    const xt::xarray<double> wide = xt::zeros<double>({4, 6});
    CHECK_THROWS_WITH(acc.update(wide, labels), Catch::Contains("[B, 5]") && Catch::Contains("[4, 6]"));
    const xt::xarray<double> flat = xt::zeros<double>({5});
    CHECK_THROWS_AS(acc.update(flat, labels), std::invalid_argument);
    const xt::xarray<double> cube = xt::zeros<double>({1, 4, 5});
    CHECK_THROWS_AS(acc.update(cube, labels), std::invalid_argument);
  }
  SECTION("no labels") { CHECK_THROWS_AS(acc.update(scores, nullptr), std::invalid_argument); }
  SECTION("NaN in a row, also away from the label") {
    xt::xarray<float> s = scores;
    s(3, 4) = std::numeric_limits<float>::quiet_NaN();
    CHECK_THROWS_AS(acc.update(s, labels, f1.data(), fk.data()), std::domain_error);
    CHECK_THROWS_WITH(acc.update(s, labels), Catch::Contains("row 7") && Catch::Contains("NaN"));
  }
  check_same_state(acc, before);
  CHECK(f1 == std::vector<std::uint8_t>(4, 9));  // no flags written for a refused batch
  CHECK(fk == std::vector<std::uint8_t>(4, 9));
}

TEST_CASE("topk_accuracy: k must be in [1, classes]", "[accuracy]") {
  CHECK_THROWS_AS(topk_accuracy(5, 0), std::invalid_argument);
  CHECK_THROWS_AS(topk_accuracy(5, 6), std::invalid_argument);
  CHECK_THROWS_AS(topk_accuracy(0, 1), std::invalid_argument);
  CHECK_THROWS_AS(topk_accuracy(3), std::invalid_argument);  // the default k = 5 over 3 classes
  CHECK_NOTHROW(topk_accuracy(5, 5));
  CHECK_NOTHROW(topk_accuracy(1, 1));
}

TEST_CASE("intersect_correct: ImageNet-CL from unsorted lists with repeats", "[accuracy]") {
  // common to all three: 1, 3, 9 (3 and 9 repeated within lists); 5, 7, 2 are not in every list
  const std::vector<std::vector<std::int64_t>> lists = {{5, 3, 9, 1, 3}, {9, 1, 7, 3, 3}, {3, 9, 2, 1, 9}};
  CHECK(intersect_correct(lists) == std::vector<std::int64_t>{1, 3, 9});
  CHECK(intersect_correct({lists[2], lists[0], lists[1]}) == std::vector<std::int64_t>{1, 3, 9});
  CHECK(intersect_correct({lists[0], lists[1]}) == std::vector<std::int64_t>{1, 3, 9});
  CHECK(intersect_correct({lists[0], {7, 5, 5}}) == std::vector<std::int64_t>{5});
  CHECK(intersect_correct({{4, -2, 8}, {8, 4, 6}}) == std::vector<std::int64_t>{4, 8});
  SECTION("one list: itself, sorted, without repeats") {
    CHECK(intersect_correct({lists[0]}) == std::vector<std::int64_t>{1, 3, 5, 9});
  }
  SECTION("an empty list anywhere gives an empty result") {
    CHECK(intersect_correct({lists[0], {}, lists[1]}).empty());
    CHECK(intersect_correct({{}, lists[0]}).empty());
  }
  SECTION("disjoint lists give an empty result") { CHECK(intersect_correct({{1, 2}, {3, 4}}).empty()); }
  SECTION("no lists give an empty result") { CHECK(intersect_correct({}).empty()); }
}

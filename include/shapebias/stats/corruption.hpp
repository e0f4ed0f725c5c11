// SPDX-License-Identifier: MIT
// ImageNet-C corruption errors (paper-spec §2.4), from accuracies per corruption and severity:
//
//   CE_c = Σ_s (1 − acc_model(c, s)) / Σ_s (1 − acc_baseline(c, s)),   mCE = mean over c of CE_c
//
// over the model's corruptions, the baseline being the standard AlexNet. Accuracies are fractions
// in [0, 1]; CE and mCE are ratios (the baseline scores 1), customarily reported ×100 as percent.
#pragma once

#include <cmath>
#include <map>
#include <stdexcept>
#include <string>

namespace shapebias::stats {

struct corruption_table {
  std::map<std::string, std::map<int, double>> accuracy;  // corruption → severity → accuracy in [0, 1]
};

struct corruption_errors {
  std::map<std::string, double> ce;  // per corruption of the model
  double mce = 0;
};

/// CE per corruption of `model` and their mean, against `baseline`. Throws std::invalid_argument,
/// naming the corruption (and severity), when: the model has no corruptions; an accuracy of either
/// table is outside [0, 1] (or NaN); the baseline lacks a corruption of the model; the model's
/// severities of a corruption are not exactly the baseline's (one missing on either side); the
/// baseline's error sum over a corruption is 0. Corruptions only the baseline has are ignored.
inline corruption_errors mean_corruption_error(const corruption_table& model, const corruption_table& baseline) {
  auto check_values = [](const corruption_table& t, const char* which) {
    for (const auto& [c, by_severity] : t.accuracy)
      for (const auto& [s, a] : by_severity)
        if (!(a >= 0 && a <= 1))
          throw std::invalid_argument(std::string("mCE: ") + which + " accuracy " + std::to_string(a) + " of '" + c +
                                      "' severity " + std::to_string(s) + " is outside [0, 1]");
  };
  check_values(model, "model");
  check_values(baseline, "baseline");
  if (model.accuracy.empty()) throw std::invalid_argument("mCE: the model has no corruptions");
  corruption_errors r;
  double total = 0;
  for (const auto& [c, mine] : model.accuracy) {
    const auto it = baseline.accuracy.find(c);
    if (it == baseline.accuracy.end()) throw std::invalid_argument("mCE: the baseline has no corruption '" + c + "'");
    const auto& base = it->second;
    for (const auto& [s, a] : mine)
      if (!base.count(s))
        throw std::invalid_argument("mCE: the baseline has no severity " + std::to_string(s) + " of '" + c + "'");
    for (const auto& [s, a] : base)
      if (!mine.count(s))
        throw std::invalid_argument("mCE: the model has no severity " + std::to_string(s) + " of '" + c +
                                    "', which the baseline has");
    double err = 0, base_err = 0;
    for (const auto& [s, a] : mine) err += 1.0 - a;
    for (const auto& [s, a] : base) base_err += 1.0 - a;
    if (!(base_err > 0))
      throw std::invalid_argument("mCE: the baseline's error over the severities of '" + c +
                                  "' is 0 (no severities, or every accuracy is 1), so its CE is undefined");
    r.ce[c] = err / base_err;
    total += r.ce[c];
  }
  r.mce = total / static_cast<double>(r.ce.size());
  return r;
}

}  // namespace shapebias::stats

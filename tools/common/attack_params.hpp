// SPDX-License-Identifier: MIT
// The settings of an adversarial attack: parsed by the light command, run by the LibTorch plugin.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>

#include "common/cli.hpp"

namespace shapebias::tools {

/// Every setting of an attack. Nothing is implicit: to_json() is written into every output.
/// The defaults are torchattacks 3.5.1's PGD (peers.md §5.1).
struct attack_params {
  std::string method = "pgd";  // fgsm | pgd
  std::string norm = "linf";   // linf | l2
  double eps = 8.0 / 255;      // radius, in [0,1] pixel units
  double alpha = 2.0 / 255;    // step size (pgd)
  int steps = 10;              // pgd iterations
  bool random_start = true;    // uniform in the L∞ ball, or torchattacks' L2 start
  bool use_best = false;       // return each input's highest-loss iterate (Madry) instead of the last
  int restarts = 0;            // extra random starts; an input keeps the first that fools the model
  std::string loss = "ce";     // ce (cross-entropy) | margin (on logits: best other logit − true logit)
  bool early_stop = false;     // freeze an input once it is misclassified (or reaches its target)
  std::string target = "none"; // none | random | least-likely | a class index
  std::uint64_t seed = 0;      // with the input id, seeds the random start and random targets

  bool targeted() const { return target != "none"; }

  nlohmann::json to_json() const {
    return {{"method", method}, {"norm", norm}, {"eps", eps}, {"alpha", method == "fgsm" ? eps : alpha},
            {"steps", method == "fgsm" ? 1 : steps}, {"random_start", method == "pgd" && random_start},
            {"use_best", use_best}, {"restarts", restarts}, {"loss", loss}, {"early_stop", early_stop},
            {"target", target}, {"seed", seed},
            {"order", "step, then projection onto the eps-ball, then clamp to [0,1] (torchattacks 3.5.1)"},
            {"loss_reduction", "mean over the batch for the gradient"}};
  }

  /// Throws usage_error for settings that cannot be run.
  void validate() const {
    if (method != "fgsm" && method != "pgd") throw usage_error("--method: expected fgsm or pgd, got '" + method + "'");
    if (norm != "linf" && norm != "l2") throw usage_error("--norm: expected linf or l2, got '" + norm + "'");
    if (method == "fgsm" && norm != "linf") throw usage_error("--method fgsm is an L∞ attack; use --norm linf");
    if (!(eps >= 0)) throw usage_error("--eps must be ≥ 0, got " + std::to_string(eps));
    if (!(alpha > 0)) throw usage_error("--alpha must be > 0, got " + std::to_string(alpha));
    if (steps < 1) throw usage_error("--steps must be ≥ 1");
    if (restarts < 0) throw usage_error("--restarts must be ≥ 0");
    if (restarts > 0 && !random_start) throw usage_error("--restarts needs a random start");
    if (loss != "ce" && loss != "margin") throw usage_error("--loss: expected ce or margin, got '" + loss + "'");
    if (target != "none" && target != "random" && target != "least-likely" &&
        target.find_first_not_of("0123456789") != std::string::npos)
      throw usage_error("--target: expected none, random, least-likely or a class index, got '" + target + "'");
  }
};

}  // namespace shapebias::tools

// SPDX-License-Identifier: MIT
// Channel ablation (paper-spec §4.4): zero chosen channels (axis 1) of one layer's output, or keep
// only them, for every later use of that output in the model's forward pass.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/cli.hpp"
#include "common/dataset.hpp"

namespace shapebias::tools {

struct ablation {
  std::string layer;
  bool keep = false;                   // true: zero every channel but `channels`
  std::vector<std::int64_t> channels;  // sorted, distinct, ≥ 0

  /// "LAYER:zero:3,7,9" or "LAYER:keep:3,7,9".
  std::string to_string() const {
    std::string s = layer + (keep ? ":keep:" : ":zero:");
    for (std::size_t i = 0; i < channels.size(); ++i) s += (i ? "," : "") + std::to_string(channels[i]);
    return s;
  }

  /// Parses "LAYER:zero:CHANNELS" or "LAYER:keep:CHANNELS" (a comma list of channel numbers).
  /// Throws usage_error naming `option`.
  static ablation parse(const std::string& spec, const std::string& option) {
    const auto a = spec.find(':'), b = spec.find(':', a == std::string::npos ? a : a + 1);
    if (a == std::string::npos || b == std::string::npos || a == 0)
      throw usage_error(option + " '" + spec + "': expected LAYER:zero:CHANNELS or LAYER:keep:CHANNELS");
    const std::string mode = spec.substr(a + 1, b - a - 1);
    if (mode != "zero" && mode != "keep")
      throw usage_error(option + " '" + spec + "': mode '" + mode + "' is not zero or keep");
    return with_channels(spec.substr(0, a), mode == "keep", spec.substr(b + 1), option + " '" + spec + "'");
  }

  /// An ablation of `layer` with the channels of a comma list. Throws usage_error naming `who`.
  static ablation with_channels(const std::string& layer, bool keep, const std::string& list, const std::string& who) {
    std::string bad;
    const auto v = number_list(list, bad);
    if (!bad.empty() || v.empty()) throw usage_error(who + ": '" + list + "' is not a list of channel numbers");
    ablation x{layer, keep, {}};
    for (double c : v) {
      if (c < 0 || c != static_cast<double>(static_cast<std::int64_t>(c)))
        throw usage_error(who + ": channel " + bad + std::to_string(c) + " is not a non-negative integer");
      x.channels.push_back(static_cast<std::int64_t>(c));
    }
    x.normalise(who);
    return x;
  }

  /// Sorts the channels; refuses repeats.
  void normalise(const std::string& who) {
    std::sort(channels.begin(), channels.end());
    if (std::adjacent_find(channels.begin(), channels.end()) != channels.end())
      throw usage_error(who + ": a channel is listed twice");
  }
};

}  // namespace shapebias::tools

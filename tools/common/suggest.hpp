// SPDX-License-Identifier: MIT
// "Did you mean" for unknown names: the closest valid names by edit distance.
#pragma once

#include <algorithm>
#include <string>
#include <vector>

namespace shapebias::tools {

inline std::size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diag = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

/// Up to `n` candidates closest to `name`, nearest first (ties keep the candidates' order).
inline std::vector<std::string> closest(const std::string& name, const std::vector<std::string>& candidates,
                                        std::size_t n = 3) {
  std::vector<std::pair<std::size_t, std::size_t>> d;  // (distance, index)
  for (std::size_t i = 0; i < candidates.size(); ++i) d.emplace_back(edit_distance(name, candidates[i]), i);
  std::stable_sort(d.begin(), d.end(), [](auto& x, auto& y) { return x.first < y.first; });
  std::vector<std::string> out;
  for (std::size_t i = 0; i < d.size() && i < n; ++i) out.push_back(candidates[d[i].second]);
  return out;
}

/// "unknown layer 'x' in 'model.pt'; closest: 'a', 'b', 'c'".
inline std::string unknown_name_message(const std::string& what, const std::string& name, const std::string& where,
                                        const std::vector<std::string>& candidates) {
  std::string msg = "unknown " + what + " '" + name + "' in " + where;
  const auto c = closest(name, candidates);
  if (!c.empty()) {
    msg += "; closest:";
    for (std::size_t i = 0; i < c.size(); ++i) msg += (i ? ", '" : " '") + c[i] + "'";
  }
  return msg;
}

}  // namespace shapebias::tools

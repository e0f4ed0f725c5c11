// SPDX-License-Identifier: MIT
// Helpers for the provenance log: UTC time stamps and stamping "finished" into the last record.
#pragma once

#include <chrono>
#include <ctime>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace shapebias::io {

/// The current UTC time as ISO-8601, e.g. "2026-11-25T07:11:33Z".
inline std::string utc_now() {
  const std::time_t t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

/// Returns the log with "finished" set to `when` (default: now) in its last record; a no-op on an
/// empty log or a last record that is not a JSON object.
inline std::vector<std::string> stamp_finished(std::vector<std::string> log, const std::string& when = utc_now()) {
  if (log.empty()) return log;
  auto rec = nlohmann::json::parse(log.back(), nullptr, /*allow_exceptions=*/false);
  if (rec.is_object()) {
    rec["finished"] = when;
    log.back() = rec.dump();
  }
  return log;
}

}  // namespace shapebias::io

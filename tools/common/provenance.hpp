// SPDX-License-Identifier: MIT
// Provenance records (one JSON object per processing step; docs/schema.md) and file hashing.
#pragma once

#include <nlohmann/json.hpp>

#include <span>
#include <string>
#include <vector>

namespace shapebias::tools {

/// The lowercase hex SHA-256 of a file's bytes. Throws io_error naming the file.
std::string sha256_file(const std::string& path);

/// The lowercase hex SHA-256 of a string.
std::string sha256_text(const std::string& text);

/// The command line, shell-quoted so it can be pasted back into a shell.
std::string shell_command(std::span<char* const> args);

/// A new record for this step: id, parent (the last ids of the input logs), program, verb,
/// version, argv, started, host, and the library versions known without LibTorch.
nlohmann::json start_record(const std::string& verb, std::span<char* const> args,
                            const std::vector<std::string>& input_log = {});

/// A provenance log as a JSON array: each record parsed, or kept as a string when it is not JSON.
nlohmann::json parse_log(const std::vector<std::string>& log);

/// The id of the last record of a log, or "" for an empty log.
std::string last_id(const std::vector<std::string>& log);

}  // namespace shapebias::tools

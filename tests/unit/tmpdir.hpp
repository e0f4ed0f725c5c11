// SPDX-License-Identifier: MIT
// A scratch folder per test case, removed afterwards.
#pragma once

#include <filesystem>
#include <random>
#include <string>

struct tmpdir {
  std::filesystem::path path;
  tmpdir() {
    std::random_device rd;
    path = std::filesystem::temp_directory_path() / ("shapebias-test-" + std::to_string(rd()) + std::to_string(rd()));
    std::filesystem::create_directories(path);
  }
  ~tmpdir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  std::string operator/(const std::string& name) const { return (path / name).string(); }
};

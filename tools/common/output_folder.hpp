// SPDX-License-Identifier: MIT
// The result folders of the analysis verbs: written as DIR.partial/ and renamed to DIR only when
// complete, so a folder named DIR is never half written. And the one number format of their CSVs.
#pragma once

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "shapebias/core/errors.hpp"

namespace shapebias::tools {

class output_folder {
 public:
  /// Starts DIR.partial/ (and its `subdirs`, e.g. "stores"), removing a stale one.
  explicit output_folder(std::string dir, std::initializer_list<const char*> subdirs = {}) : dir_(std::move(dir)) {
    std::filesystem::remove_all(partial());
    std::error_code ec;
    std::filesystem::create_directories(partial(), ec);
    for (const char* s : subdirs) std::filesystem::create_directories(partial() + "/" + s, ec);
    if (ec) throw io_error(quote_name(dir_) + ": cannot create the output folder: " + ec.message());
  }
  output_folder(const output_folder&) = delete;
  output_folder& operator=(const output_folder&) = delete;
  /// An unfinished folder is removed.
  ~output_folder() {
    if (!done_) std::filesystem::remove_all(partial());
  }
  /// The path of `name` inside the (partial) folder.
  std::string path(const std::string& name) const { return partial() + "/" + name; }
  std::ofstream open(const std::string& name) const {
    std::ofstream f(path(name));
    if (!f) throw io_error(quote_name(dir_ + "/" + name) + ": cannot write");
    return f;
  }
  /// Replaces DIR with the finished folder.
  void commit() {
    std::filesystem::remove_all(dir_);
    std::filesystem::rename(partial(), dir_);
    done_ = true;
  }

 private:
  std::string partial() const { return dir_ + ".partial"; }
  std::string dir_;
  bool done_ = false;
};

/// A CSV number: ten significant digits; empty for NaN (no value).
inline std::string csv_number(double v) {
  if (std::isnan(v)) return "";
  char b[32];
  std::snprintf(b, sizeof b, "%.10g", v);
  return b;
}

}  // namespace shapebias::tools

// SPDX-License-Identifier: MIT
// The result folders of the analysis verbs: written as DIR.partial/ and renamed to DIR only when
// complete, so a folder named DIR is never half written. And the one number format of their CSVs.
#pragma once

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <string>
#include <system_error>

#include "common/cli.hpp"
#include "shapebias/core/errors.hpp"

namespace shapebias::tools {

class output_folder {
 public:
  /// Starts DIR.partial/ (and its `subdirs`, e.g. "stores"), removing a stale one. DIR may be a
  /// previous output (one with provenance.json), which commit() replaces; any other existing path
  /// is refused, so that no folder of the user's is ever deleted.
  explicit output_folder(const std::string& dir, std::initializer_list<const char*> subdirs = {}) {
    namespace fs = std::filesystem;
    fs::path p = fs::path(dir).lexically_normal();
    if (!p.empty() && !p.has_filename()) p = p.parent_path();  // "out/" → "out"
    const auto name = p.filename().string();
    if (p.empty() || name.empty() || name == "." || name == "..")
      throw usage_error("-o '" + dir + "': name a new folder (or a previous output) for the results");
    dir_ = p.string();
    if (fs::exists(p) && !(fs::is_directory(p) && fs::exists(p / "provenance.json")))
      throw io_error(quote_name(dir) + ": exists and is not a shapebias output folder; remove it or choose another -o");
    std::error_code ec;
    fs::remove_all(partial(), ec);
    fs::create_directories(partial(), ec);
    for (const char* s : subdirs) fs::create_directories(partial() + "/" + s, ec);
    if (ec) throw io_error(quote_name(dir_) + ": cannot create the output folder: " + ec.message());
  }
  output_folder(const output_folder&) = delete;
  output_folder& operator=(const output_folder&) = delete;
  /// An unfinished folder is removed.
  ~output_folder() {
    std::error_code ec;
    if (!done_) std::filesystem::remove_all(partial(), ec);
  }
  /// The path of `name` inside the (partial) folder.
  std::string path(const std::string& name) const { return partial() + "/" + name; }
  /// Writes `text` as the file `name`, checking that every byte reached the disk.
  void write(const std::string& name, const std::string& text) const {
    std::ofstream f(path(name));
    f << text;
    f.close();
    if (!f) throw io_error(quote_name(dir_ + "/" + name) + ": cannot write");
  }
  /// Puts the finished folder in place of DIR; a previous output is removed only afterwards.
  void commit() {
    namespace fs = std::filesystem;
    std::error_code ec;
    const std::string old = dir_ + ".old";
    fs::remove_all(old, ec);
    if (fs::exists(dir_)) fs::rename(dir_, old, ec);
    if (ec) throw io_error(quote_name(dir_) + ": cannot move the previous output aside: " + ec.message());
    fs::rename(partial(), dir_, ec);
    if (ec) throw io_error(quote_name(dir_) + ": cannot rename the results into place: " + ec.message());
    done_ = true;
    fs::remove_all(old, ec);
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

// SPDX-License-Identifier: MIT
// CSV files with a header row, read with libcsv (quoted fields, embedded commas and quotes).
#pragma once

#include <algorithm>
#include <cstddef>
#include <string>
#include <vector>

#include "shapebias/core/errors.hpp"

namespace shapebias::tools {

struct csv_table {
  std::string path;
  std::vector<std::string> header;
  std::vector<std::vector<std::string>> rows;

  /// "'DIR/index.csv' line 7" for data row r (the header is line 1; rows hold no newlines).
  std::string where(std::size_t r) const { return quote_name(path) + " line " + std::to_string(r + 2); }
  /// The index of a column. Throws io_error naming the file when the header lacks it.
  std::size_t column(const std::string& name) const {
    const auto it = std::find(header.begin(), header.end(), name);
    if (it == header.end()) throw io_error(quote_name(path) + ": no column '" + name + "' in the header");
    return static_cast<std::size_t>(it - header.begin());
  }
};

/// Reads a CSV file whose first row is its header. Throws io_error naming the file for one that
/// cannot be read, is not valid CSV, is empty, or has a row with another number of fields.
csv_table read_csv(const std::string& path);

/// A CSV field, quoted when it holds a comma, a quote or a newline.
std::string csv_text(const std::string& s);

}  // namespace shapebias::tools

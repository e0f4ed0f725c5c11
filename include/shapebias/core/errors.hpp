// SPDX-License-Identifier: MIT
// Exception types shared by the library: bad arguments are std::invalid_argument, I/O is io_error.
#pragma once

#include <stdexcept>
#include <string>

namespace shapebias {

/// An input/output failure: a file that cannot be read or written, a corrupt or truncated store or
/// stream. The message names the file (and the object inside it) and says what was wrong.
class io_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Quotes a file name for an error message: 'name', or standard input/output for "-".
inline std::string quote_name(const std::string& path) {
  if (path == "-") return "standard stream";
  return "'" + path + "'";
}

}  // namespace shapebias

// SPDX-License-Identifier: MIT
// What the side-by-side benchmarks share: a timer, the binary fixture files their Python drivers
// write (an 8-byte magic, a uint64 header, then little-endian arrays), and the peak RSS.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace bench {

using clk = std::chrono::steady_clock;

inline double seconds_since(clk::time_point t0) { return std::chrono::duration<double>(clk::now() - t0).count(); }

/// A fixture file: opened and checked against its magic, then read array by array.
class fixture_file {
 public:
  fixture_file(const std::string& path, const char (&magic)[9], const char* what) : in_(path, std::ios::binary) {
    if (!in_) throw std::runtime_error("cannot open " + path);
    char m[8];
    in_.read(m, 8);
    if (!in_ || std::memcmp(m, magic, 8) != 0) throw std::runtime_error(path + " is not a " + what + " fixture");
  }
  /// Fills `v` (sized by the caller) from the current position.
  template <class T>
  void get(std::vector<T>& v) {
    in_.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(v.size() * sizeof(T)));
    if (!in_) throw std::runtime_error("fixture: short read");
  }
  std::streamoff tell() { return in_.tellg(); }
  void seek(std::streamoff pos) { in_.seekg(pos); }

 private:
  std::ifstream in_;
};

/// Peak resident set size of this process in KiB (VmHWM), or -1.
inline long vm_hwm_kib() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::stol(line.substr(6));
  return -1;
}

}  // namespace bench

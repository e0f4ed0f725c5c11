// SPDX-License-Identifier: MIT
// Seed mixing for per-input random streams: splitmix64 (Steele, Lea & Flood 2014).
#pragma once

#include <cstdint>

namespace shapebias::tools {

/// splitmix64's finaliser: a well-spread 64-bit value for each input value.
inline std::uint64_t splitmix64(std::uint64_t z) {
  z += 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

/// A seed for stream `stream` of input `id` under the run seed `seed`.
inline std::uint64_t stream_seed(std::uint64_t seed, std::int64_t id, std::uint64_t stream) {
  return splitmix64(splitmix64(splitmix64(seed) ^ static_cast<std::uint64_t>(id)) ^ stream);
}

}  // namespace shapebias::tools

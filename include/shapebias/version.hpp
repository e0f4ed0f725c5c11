// SPDX-License-Identifier: MIT
// The shapebias version: the one place it is written (CMakeLists.txt reads it from here).
#pragma once

#define SHAPEBIAS_VERSION_MAJOR 0
#define SHAPEBIAS_VERSION_MINOR 1
#define SHAPEBIAS_VERSION_PATCH 0

namespace shapebias {
inline constexpr const char* version_string = "0.1.0";
}  // namespace shapebias

// SPDX-License-Identifier: MIT
// LibTorch runtime set-up shared by the plugin's verbs.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

namespace shapebias::tools {

/// Sets LibTorch's intra-op threads and OpenBLAS's threads to `threads` (total; 0: one per core),
/// and keeps freed tensor memory in the heap for reuse (see plugin.cpp).
void configure_threads(int threads);

/// Checks that a device string names a usable device; throws std::invalid_argument otherwise.
void check_device(const std::string& device);

/// {"libtorch": "1.13.1", "cuda": "none" or the CUDA version}
nlohmann::json torch_versions();

/// Adds what every model-running verb records: device, LibTorch versions, the model file's
/// sha256, and the data set's description.
void add_run_context(nlohmann::json& rec, const std::string& device, const std::string& model,
                     const nlohmann::json& data);

/// The first line of a LibTorch error, without its C++ backtrace.
std::string first_line(const std::exception& e);

}  // namespace shapebias::tools

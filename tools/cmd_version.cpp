// SPDX-License-Identifier: MIT
// `shapebias version`: versions of shapebias and the libraries it was built with.
#include <hdf5.h>
#include <zlib.h>

#include <cstdio>
#include <xtensor/xtensor_config.hpp>

#include "common/plugin.hpp"
#include "common/provenance.hpp"
#include "shapebias/version.hpp"

namespace shapebias::tools {

int run_version(std::span<char*> args) {
  CLI::App app{"Print the versions of shapebias, LibTorch, HDF5, xtensor and zlib", "shapebias version"};
  if (!parse(app, args)) return 0;
  const auto rec = start_record("version", args);
  std::printf("shapebias %s\n", rec["version"].get<std::string>().c_str());
  for (const auto& [k, v] : rec["libraries"].items()) std::printf("%s %s\n", k.c_str(), v.get<std::string>().c_str());
  std::printf("libtorch %s\n", plugin().libtorch_version());
  return 0;
}

}  // namespace shapebias::tools

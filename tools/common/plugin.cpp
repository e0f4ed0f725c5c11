// SPDX-License-Identifier: MIT
#include "common/plugin.hpp"

#include <dlfcn.h>

#include <cstdlib>
#include <filesystem>
#include <stdexcept>
#include <utility>

namespace shapebias::tools {

std::optional<std::pair<void*, std::string>> open_plugin(const std::string& file, const std::string& what, int flags,
                                                         std::string& tried) {
  namespace fs = std::filesystem;
  const fs::path exe_dir = fs::read_symlink("/proc/self/exe").parent_path();
  // The build tree keeps a plugin beside the executable; an install puts it in LIBDIR/shapebias.
  for (const auto& p : {exe_dir / file, exe_dir / SHAPEBIAS_PLUGIN_RELDIR / file}) {
    if (!fs::exists(p)) {
      tried += (tried.empty() ? "" : ", ") + p.string();
      continue;
    }
    void* h = dlopen(p.c_str(), flags);
    if (!h) throw std::runtime_error("cannot load the " + what + ": " + dlerror());
    return std::pair{h, p.string()};
  }
  return std::nullopt;
}

const plugin_api& plugin() {
  static const plugin_api api = [] {
    // LibTorch's OpenMP threads spin (and yield) while they wait for work by default. On a small
    // machine that steals the cores from the loader, the writer and the serial parts of each pass:
    // passive waiting made a 10-step PGD on the Fashion-MNIST CNN 15% faster on 2 cores. libgomp
    // reads this when it loads, with the plugin; a user's own setting wins.
    setenv("OMP_WAIT_POLICY", "passive", 0);
    std::string tried;
    if (const auto opened = open_plugin("libshapebias_torch.so", "LibTorch plugin", RTLD_NOW | RTLD_LOCAL, tried)) {
      const auto& [h, p] = *opened;
      auto sym = [&](const char* name) {
        void* s = dlsym(h, name);
        if (!s) throw std::runtime_error("LibTorch plugin '" + p + "' lacks " + name);
        return s;
      };
      plugin_api a{};
      a.dump = reinterpret_cast<decltype(a.dump)>(sym("shapebias_plugin_dump"));
      a.layers = reinterpret_cast<decltype(a.layers)>(sym("shapebias_plugin_layers"));
      a.attack = reinterpret_cast<decltype(a.attack)>(sym("shapebias_plugin_attack"));
      a.train = reinterpret_cast<decltype(a.train)>(sym("shapebias_plugin_train"));
      a.libtorch_version = reinterpret_cast<decltype(a.libtorch_version)>(sym("shapebias_plugin_libtorch_version"));
      a.weights = reinterpret_cast<decltype(a.weights)>(sym("shapebias_plugin_weights"));
      a.transform = reinterpret_cast<decltype(a.transform)>(sym("shapebias_plugin_transform"));
      return a;
    }
    throw std::runtime_error("cannot find the LibTorch plugin libshapebias_torch.so (tried " + tried + ")");
  }();
  return api;
}

}  // namespace shapebias::tools

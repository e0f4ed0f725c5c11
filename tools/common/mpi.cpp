// SPDX-License-Identifier: MIT
#include "common/mpi.hpp"

#include <dlfcn.h>

#include <exception>
#include <stdexcept>

#include "common/cli.hpp"
#include "common/plugin.hpp"

namespace shapebias::tools {
namespace {

struct mpi_api {
  void (*init)(int& rank, int& size);
  void (*finalize)();
  void (*gather)(const std::string& mine, std::vector<std::string>& all);
  void (*broadcast)(std::string& bytes);
  const char* (*library_version)();
};

const mpi_api& api() {
  static const mpi_api a = [] {
    std::string tried;
    // RTLD_GLOBAL: an MPI library may load components of its own that need its symbols.
    const auto opened = open_plugin("libshapebias_mpi.so", "MPI plugin", RTLD_NOW | RTLD_GLOBAL, tried);
    if (!opened)
      throw usage_error("--mpi: this shapebias was built without MPI (no libshapebias_mpi.so; tried " + tried +
                        "); install libopenmpi-dev and rebuild, or run shards with --shard K/N and 'shapebias merge'");
    auto sym = [&](const char* name) {
      void* s = dlsym(opened->first, name);
      if (!s) throw std::runtime_error("MPI plugin '" + opened->second + "' lacks " + name);
      return s;
    };
    mpi_api x{};
    x.init = reinterpret_cast<decltype(x.init)>(sym("shapebias_mpi_init"));
    x.finalize = reinterpret_cast<decltype(x.finalize)>(sym("shapebias_mpi_finalize"));
    x.gather = reinterpret_cast<decltype(x.gather)>(sym("shapebias_mpi_gather"));
    x.broadcast = reinterpret_cast<decltype(x.broadcast)>(sym("shapebias_mpi_broadcast"));
    x.library_version = reinterpret_cast<decltype(x.library_version)>(sym("shapebias_mpi_library_version"));
    return x;
  }();
  return a;
}

// A rank's contribution starts with one status byte: ok, a run-time failure, or a usage error.
constexpr char ok = '0', failed = '1', misused = '2';

}  // namespace

mpi_session::mpi_session() { api().init(rank_, size_); }

mpi_session::~mpi_session() { api().finalize(); }

std::string mpi_session::library() const { return api().library_version(); }

std::vector<std::string> mpi_session::gather(const std::function<std::string()>& local) {
  std::string mine;
  try {
    mine = ok + local();
  } catch (const usage_error& e) {
    mine = misused + std::string(e.what());
  } catch (const std::exception& e) {
    mine = failed + std::string(e.what());
  }
  std::vector<std::string> all;
  api().gather(mine, all);
  // Rank 0 tells every rank the first failure (status byte + message), or "" when there is none.
  std::string verdict;
  for (std::size_t r = 0; r < all.size() && verdict.empty(); ++r)
    if (all[r][0] != ok)
      verdict = all[r][0] + (r ? "rank " + std::to_string(r) + " of " + std::to_string(size_) + ": " : std::string()) +
                all[r].substr(1);
  api().broadcast(verdict);
  if (!verdict.empty()) {
    if (!root()) throw silent_failure();
    if (verdict[0] == misused) throw usage_error(verdict.substr(1));
    throw std::runtime_error(verdict.substr(1));
  }
  for (auto& a : all) a.erase(0, 1);
  return all;
}

std::string mpi_session::broadcast(const std::function<std::string()>& on_root) {
  std::string bytes;
  std::exception_ptr error;
  if (root()) {
    try {
      bytes = ok + on_root();
    } catch (...) {
      error = std::current_exception();
      bytes = std::string(1, failed);
    }
  }
  api().broadcast(bytes);
  if (error) std::rethrow_exception(error);
  if (bytes[0] != ok) throw silent_failure();
  return bytes.substr(1);
}

}  // namespace shapebias::tools

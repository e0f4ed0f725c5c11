// SPDX-License-Identifier: MIT
// Command-line plumbing shared by every verb: common options, parsing with usage errors mapped to
// exit status 2, and the progress display.
#pragma once

#include <CLI/CLI.hpp>

#include <chrono>
#include <cstdint>
#include <span>
#include <stdexcept>
#include <string>

namespace shapebias::tools {

/// A usage error: main() prints it as one line and exits with status 2.
struct usage_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// A failure reported by another process (rank 0 of an MPI run): main() exits with status 1 and
/// prints nothing, so that a run reports each failure once.
struct silent_failure : std::runtime_error {
  silent_failure() : std::runtime_error("a failure reported by another rank") {}
};

/// Options every model-running verb shares (STYLE.md §4).
struct common_options {
  int threads = 0;  // 0: one per core (see resolved_threads)
  std::string device = "cpu";
  std::size_t batch_size = 64;
  bool quiet = false;
};

enum common_flag : unsigned { opt_threads = 1, opt_device = 2, opt_batch = 4, opt_quiet = 8, opt_all = 15 };

/// Registers the chosen common options in the "Common" group.
void add_common_options(CLI::App& app, common_options& o, unsigned which = opt_all);

/// Parses args (args[0] is the program name). Returns false when help was asked for and printed to
/// stdout (the verb then returns 0); throws usage_error on a parse error.
bool parse(CLI::App& app, std::span<char*> args);

/// Checks --names: one per input (`count`), each a plain word usable in file names and CSV cells.
/// Throws usage_error.
void check_names(const std::vector<std::string>& names, std::size_t count, const char* what);

/// --threads as a count: 0 means one thread per core.
int resolved_threads(int threads);

/// The output of a verb that writes batches: `output`, or "-" when empty and stdout is a pipe.
/// Throws usage_error rather than send binary data to a terminal.
std::string stream_output(std::string output);

/// True when file descriptor fd is a terminal.
bool is_terminal(int fd);

/// "verb: 1200/10000 rows (12%), 340 rows/s" on stderr, redrawn at most 4 times a second, only
/// when stderr is a terminal and not --quiet.
class progress {
 public:
  progress(std::string verb, std::uint64_t total, bool quiet);
  void update(std::uint64_t done);
  void finish();

 private:
  std::string verb_;
  std::uint64_t total_;
  bool on_;
  std::chrono::steady_clock::time_point start_, last_;
  std::uint64_t first_done_ = UINT64_MAX;
};

}  // namespace shapebias::tools

// SPDX-License-Identifier: MIT
#include "common/cli.hpp"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <thread>
#include <iostream>
#include <vector>

namespace shapebias::tools {

void add_common_options(CLI::App& app, common_options& o, unsigned which) {
  if (which & opt_threads)
    app.add_option("-@,--threads", o.threads,
                   "Total threads for LibTorch (intra-op) and OpenBLAS; 0: one per core. Ids, labels and "
                   "row order never depend on it")
        ->check(CLI::Range(0, 1024))->group("Common")->capture_default_str();
  if (which & opt_device)
    app.add_option("--device", o.device, "LibTorch device: cpu, cuda, cuda:N")->group("Common")->capture_default_str();
  if (which & opt_batch)
    app.add_option("--batch-size", o.batch_size, "Inputs per forward pass")
        ->check(CLI::Range(std::size_t{1}, std::size_t{1} << 20))->group("Common")->capture_default_str();
  if (which & opt_quiet) app.add_flag("--quiet", o.quiet, "No progress display on stderr")->group("Common");
}

bool parse(CLI::App& app, std::span<char*> args) {
  try {
    app.parse(static_cast<int>(args.size()), args.data());
    return true;
  } catch (const CLI::CallForHelp&) {
    std::cout << app.help();
    return false;
  } catch (const CLI::CallForAllHelp&) {
    std::cout << app.help("", CLI::AppFormatMode::All);
    return false;
  } catch (const CLI::ParseError& e) {
    throw usage_error(std::string(e.what()) + " (see '" + app.get_name() + " --help')");
  }
}

int resolved_threads(int threads) {
  return threads > 0 ? threads : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
}

bool is_terminal(int fd) { return isatty(fd) == 1; }

std::string stream_output(std::string output) {
  if (output.empty()) {
    if (is_terminal(1)) throw usage_error("no output: give -o FILE.h5, or -o - with stdout on a pipe");
    output = "-";
  }
  if (output == "-" && is_terminal(1)) throw usage_error("refusing to write a binary stream to a terminal");
  return output;
}

progress::progress(std::string verb, std::uint64_t total, bool quiet)
    : verb_(std::move(verb)), total_(total), on_(!quiet && is_terminal(2)),
      start_(std::chrono::steady_clock::now()), last_(start_) {}

void progress::update(std::uint64_t done) {
  if (!on_) return;
  if (first_done_ == UINT64_MAX) first_done_ = done;
  const auto now = std::chrono::steady_clock::now();
  if (done < total_ && now - last_ < std::chrono::milliseconds(250)) return;
  last_ = now;
  const double secs = std::chrono::duration<double>(now - start_).count();
  const double rate = secs > 0 ? static_cast<double>(done - first_done_) / secs : 0.0;
  std::fprintf(stderr, "\r%s: %llu/%llu rows (%.0f%%), %.1f rows/s   ", verb_.c_str(),
               static_cast<unsigned long long>(done), static_cast<unsigned long long>(total_),
               total_ ? 100.0 * static_cast<double>(done) / static_cast<double>(total_) : 100.0, rate);
  std::fflush(stderr);
}

void progress::finish() {
  if (on_) std::fputs("\n", stderr);
}

void check_names(const std::vector<std::string>& names, std::size_t count, const char* what) {
  if (names.size() < count)
    throw usage_error("--names: " + std::to_string(names.size()) + " names for " + std::to_string(count) + " " + what);
  for (const auto& n : names)
    if (n.empty() || n.find_first_of("/\\,\"' \t\n") != std::string::npos || n == "." || n == "..")
      throw usage_error("--names: '" + n + "' is not a plain name (no '/', ',', quotes or spaces)");
}

}  // namespace shapebias::tools

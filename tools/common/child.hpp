// SPDX-License-Identifier: MIT
// Another shapebias verb run as a child process whose standard output is a stream: the way the
// analysis verbs run a model live (`shapebias tv S.pt --data …` reads `shapebias dump S.pt … -o -`),
// exactly as a user would pipe the two.
#pragma once

#include <sys/types.h>

#include <cstdio>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/cli.hpp"
#include "common/plugin.hpp"
#include "shapebias/io/batch.hpp"

namespace shapebias::tools {

/// The arguments of `shapebias dump MODEL DATA -l LAYERS … --quiet -o -` for a data set and its
/// preprocessing (ids, transform and noise included), and channel ablations (--ablate specs).
std::vector<std::string> dump_args(const std::string& model, const data_options& d, const common_options& c,
                                   const std::vector<std::string>& layers, const std::vector<std::string>& ablate = {});

/// True for a TorchScript file (a zip archive); stores and streams have their own magic.
bool is_model(const std::string& path);

/// A temporary file holding `text` (for a child's --ids), removed with the object.
struct temp_file {
  explicit temp_file(const std::string& text);
  ~temp_file();
  temp_file(const temp_file&) = delete;
  temp_file& operator=(const temp_file&) = delete;
  std::string path;
};

/// Runs `fn` on the activations of `input`: a store or stream, or a TorchScript model run live as
/// a child `shapebias dump MODEL d.path -l LAYERS -o -` (d: data set, preprocessing and --ids).
void with_activations(const std::string& input, const data_options& d, const common_options& c,
                      const std::vector<std::string>& layers, const std::function<void(io::batch_source&)>& fn);

/// Runs `program` (empty: this executable) with `args`, its standard output and error appended to
/// the file `log`, and waits for it, calling `tick` (when given) twice a second with the log's last
/// line. Throws std::runtime_error with the last line of the log when it fails.
void run_program(const std::string& program, const std::vector<std::string>& args, const std::string& log,
                 const std::function<void(const std::string&)>& tick = {});

/// A file shipped with shapebias: share/shapebias/`installed` next to the installed executable,
/// else `source_relative` in the source tree. Throws io_error naming both when neither exists.
std::string shipped_file(const std::string& installed, const std::string& source_relative);

class child_stream {
 public:
  /// Starts this executable with `args` (the verb first; "-o -" among them). Throws on failure.
  explicit child_stream(const std::vector<std::string>& args);
  child_stream(const child_stream&) = delete;
  child_stream& operator=(const child_stream&) = delete;
  /// Kills the child if it still runs.
  ~child_stream();

  /// Runs f(source) over the child's stream, then waits for the child. When the child failed, its
  /// own error line is thrown; when f failed while the child was fine (or was only stopped because
  /// f stopped reading), f's error is.
  template <class F>
  void consume(F&& f) {
    try {
      f(*src_);
    } catch (...) {
      wait(/*after_error=*/true);
      throw;
    }
    wait(false);
  }

 private:
  /// Waits for the child. Throws std::runtime_error with the child's error line when it exited
  /// with a failure (or, unless after_error, was killed).
  void wait(bool after_error);

  pid_t pid_ = -1;
  std::FILE* err_ = nullptr;  // the child's stderr: a temporary file, so it never blocks on a pipe
  std::string name_;
  std::unique_ptr<io::batch_source> src_;
};

}  // namespace shapebias::tools

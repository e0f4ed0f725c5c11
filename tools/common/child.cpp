// SPDX-License-Identifier: MIT
#include "common/child.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <chrono>
#include <filesystem>
#include <thread>
#include <fstream>
#include <stdexcept>

#include "common/endpoints.hpp"
#include "shapebias/core/errors.hpp"

namespace shapebias::tools {

std::vector<std::string> dump_args(const std::string& model, const data_options& d, const common_options& c,
                                   const std::vector<std::string>& layers, const std::vector<std::string>& ablate) {
  auto number = [](double v) {
    char b[32];
    std::snprintf(b, sizeof b, "%.17g", v);
    return std::string(b);
  };
  std::string joined;
  for (const auto& l : layers) joined += (joined.empty() ? "" : ",") + l;
  std::vector<std::string> a{"dump", model, d.path, "--format", d.format, "--split", d.split,
                             "--channels", std::to_string(d.channels), "--resize", std::to_string(d.resize),
                             "--crop", std::to_string(d.crop), "--normalize", d.normalize,
                             "--transform", d.transform, "--transform-seed", std::to_string(d.transform_seed),
                             "--quiet", "-o", "-", "-@", std::to_string(c.threads),
                             "--batch-size", std::to_string(c.batch_size), "--device", c.device, "-l", joined};
  if (!d.ids.empty()) a.insert(a.end(), {"--ids", d.ids});
  if (!d.shard.empty()) a.insert(a.end(), {"--shard", d.shard});
  for (const auto& x : ablate) a.insert(a.end(), {"--ablate", x});
  if (d.noise > 0) {
    a.insert(a.end(), {"--noise", number(d.noise), "--noise-seed", std::to_string(d.noise_seed)});
    if (!d.noise_clip) a.push_back("--no-noise-clip");
  }
  return a;
}

bool is_model(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  char m[4] = {};
  return f.read(m, 4) && std::string(m, 4) == std::string("PK\3\4", 4);
}

void with_activations(const std::string& input, const data_options& d, const common_options& c,
                      const std::vector<std::string>& layers, const std::function<void(io::batch_source&)>& fn) {
  if (is_model(input)) {
    child_stream child(dump_args(input, d, c, layers));
    child.consume(fn);
    return;
  }
  auto src = open_source(input, static_cast<std::size_t>(c.batch_size), false, layers, shard::parse(d.shard));
  fn(*src);
}

namespace {
/// The last non-empty line of a text file ("" when there is none).
std::string last_line(const std::string& path) {
  std::ifstream in(path);
  std::string line, last;
  while (std::getline(in, line))
    if (!line.empty() && line.find_first_not_of(" \r") != std::string::npos) last = line.substr(line.rfind('\r') + 1);
  return last;
}
}  // namespace

void run_program(const std::string& program, const std::vector<std::string>& args, const std::string& log,
                 const std::function<void(const std::string&)>& tick) {
  const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) throw io_error(quote_name(log) + ": cannot write: " + std::strerror(errno));
  const std::string exe = program.empty() ? "/proc/self/exe" : program;
  std::vector<char*> argv{const_cast<char*>(program.empty() ? "shapebias" : program.c_str())};
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  const pid_t pid = fork();
  if (pid == 0) {
    dup2(fd, 1);
    dup2(fd, 2);
    execv(exe.c_str(), argv.data());
    std::fprintf(stderr, "cannot run %s: %s\n", exe.c_str(), std::strerror(errno));
    _exit(127);
  }
  close(fd);
  if (pid < 0) throw std::runtime_error(std::string("cannot start a process: ") + std::strerror(errno));
  int status = 0;
  for (;;) {
    const pid_t r = waitpid(pid, &status, tick ? WNOHANG : 0);
    if (r == pid) break;
    if (r < 0 && errno != EINTR) throw std::runtime_error(std::string("waiting for a process: ") + std::strerror(errno));
    if (r == 0) {
      tick(last_line(log));
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
    }
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return;
  const std::string last = last_line(log);
  const std::string who = program.empty() ? "shapebias " + (args.empty() ? std::string() : args[0]) : program;
  throw std::runtime_error(who + " failed" + (last.empty() ? "" : ": " + last) + " (log: " + log + ")");
}

std::string shipped_file(const std::string& installed, const std::string& source_relative) {
  namespace fs = std::filesystem;
  const fs::path exe = fs::read_symlink("/proc/self/exe").parent_path();
  const fs::path a = exe / "../share/shapebias" / installed, b = fs::path(SHAPEBIAS_SOURCE_DIR) / source_relative;
  if (fs::exists(a)) return a.lexically_normal().string();
  if (fs::exists(b)) return b.string();
  throw io_error("cannot find " + installed + " (looked for " + quote_name(a.lexically_normal().string()) + " and " +
                 quote_name(b.string()) + ")");
}

temp_file::temp_file(const std::string& text) {
  const char* dir = std::getenv("TMPDIR");
  std::string tmpl = std::string(dir && *dir ? dir : "/tmp") + "/shapebias-ids-XXXXXX";
  const int fd = mkstemp(tmpl.data());
  if (fd < 0) throw io_error(quote_name(tmpl) + ": cannot create a temporary file: " + std::strerror(errno));
  path = tmpl;
  const bool ok = write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  close(fd);
  if (!ok) throw io_error(quote_name(path) + ": cannot write a temporary file");
}

temp_file::~temp_file() { std::remove(path.c_str()); }

child_stream::child_stream(const std::vector<std::string>& args) {
  for (const auto& a : args) name_ += (name_.empty() ? "shapebias " : " ") + a;
  int out[2];
  if (pipe2(out, O_CLOEXEC) != 0) throw std::runtime_error(std::string("cannot create a pipe: ") + std::strerror(errno));
  err_ = std::tmpfile();
  if (!err_) {
    close(out[0]);
    close(out[1]);
    throw std::runtime_error(std::string("cannot create a temporary file: ") + std::strerror(errno));
  }
  std::vector<char*> argv{const_cast<char*>("shapebias")};
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  pid_ = fork();
  if (pid_ == 0) {
    dup2(out[1], 1);
    dup2(fileno(err_), 2);
    execv("/proc/self/exe", argv.data());
    _exit(127);
  }
  close(out[1]);
  if (pid_ < 0) {
    close(out[0]);
    throw std::runtime_error(std::string("cannot start a process: ") + std::strerror(errno));
  }
  try {
    src_ = open_source("/dev/fd/" + std::to_string(out[0]), 1);
  } catch (...) {
    close(out[0]);
    wait(true);  // the child's own message, when it failed before writing a header
    throw;
  }
  close(out[0]);  // the source opened its own descriptor
}

child_stream::~child_stream() {
  src_.reset();
  if (pid_ > 0) {
    kill(pid_, SIGTERM);
    waitpid(pid_, nullptr, 0);
  }
  if (err_) std::fclose(err_);
}

void child_stream::wait(bool after_error) {
  src_.reset();  // closes our end of the pipe: a child still writing stops
  if (pid_ <= 0) return;
  int status = 0;
  waitpid(pid_, &status, 0);
  pid_ = -1;
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return;
  if (after_error && !WIFEXITED(status)) return;  // stopped because the reader gave up: its error stands
  std::string err;
  std::rewind(err_);
  char buf[4096];
  for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, err_)) > 0;) err.append(buf, n);
  // The child's error line, without its "shapebias dump: " prefix.
  while (!err.empty() && err.back() == '\n') err.pop_back();
  if (auto nl = err.rfind('\n'); nl != std::string::npos) err = err.substr(nl + 1);
  if (auto colon = err.find(": "); err.rfind("shapebias ", 0) == 0 && colon != std::string::npos) err = err.substr(colon + 2);
  if (err.empty()) err = "'" + name_ + "' failed";
  throw std::runtime_error(err);
}

}  // namespace shapebias::tools

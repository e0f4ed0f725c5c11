// SPDX-License-Identifier: MIT
#include "common/endpoints.hpp"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "shapebias/io/endpoints.hpp"
#include "shapebias/io/stream.hpp"

namespace shapebias::tools {
namespace {

using file_ptr = std::unique_ptr<std::FILE, int (*)(std::FILE*)>;

int no_close(std::FILE*) { return 0; }

/// A stream written to stdout, or to "<path>.partial" renamed to <path> by finish().
class stream_sink : public io::batch_sink {
 public:
  stream_sink(const std::string& path, const io::header& hdr) : path_(path), f_(open(path)) {
    try {
      w_.emplace(f_.get(), path, hdr);
    } catch (...) {
      discard();
      throw;
    }
  }
  ~stream_sink() override {
    if (!done_) discard();
  }
  void write(const io::batch_view& b) override { w_->write(b); }
  void finish(const std::vector<std::string>* log = nullptr) override {
    w_->finish(log);
    if (path_ == "-") {
      done_ = true;
      return;
    }
    std::FILE* f = f_.release();
    if (std::fclose(f) != 0) throw io_error(quote_name(path_) + ": write failed: " + std::strerror(errno));
    std::error_code ec;
    std::filesystem::rename(path_ + ".partial", path_, ec);
    if (ec) throw io_error(quote_name(path_) + ": cannot rename into place: " + ec.message());
    done_ = true;
  }

 private:
  static file_ptr open(const std::string& path) {
    if (path == "-") return file_ptr(stdout, no_close);
    std::FILE* f = std::fopen((path + ".partial").c_str(), "wb");
    if (!f) throw io_error(quote_name(path) + ": cannot create: " + std::strerror(errno));
    return file_ptr(f, std::fclose);
  }
  void discard() {
    if (path_ == "-") return;
    f_.reset();
    std::remove((path_ + ".partial").c_str());
  }
  std::string path_;
  file_ptr f_;
  std::optional<io::stream_writer> w_;
  bool done_ = false;
};

}  // namespace

bool is_hdf5_name(const std::string& path) { return io::is_hdf5_name(path); }

std::unique_ptr<io::batch_source> open_source(const std::string& path, std::size_t batch_rows,
                                              bool allow_incomplete, const std::vector<std::string>& layers) {
  return io::open_source(path, batch_rows, allow_incomplete, layers);
}

std::unique_ptr<io::batch_sink> open_sink(const std::string& path, const io::header& hdr,
                                          const io::store_options& opt, bool resume, std::uint64_t* resumed_rows) {
  if (resumed_rows) *resumed_rows = 0;
  if (!is_hdf5_name(path)) {
    if (resume && path != "-" && std::filesystem::exists(path + ".partial") && resumed_rows)
      std::fprintf(stderr, "shapebias: stream outputs cannot be resumed; restarting %s\n", quote_name(path).c_str());
    return std::make_unique<stream_sink>(path, hdr);
  }
  if (resume) {
    try {
      if (auto w = io::store_writer::resume(path, hdr, opt)) {
        if (resumed_rows) *resumed_rows = w->rows();
        return std::make_unique<io::store_writer>(std::move(*w));
      }
    } catch (const io::unreadable_partial& e) {
      std::fprintf(stderr, "shapebias: %s; starting again\n", e.what());
    }
  }
  return std::make_unique<io::store_writer>(path, hdr, opt);
}

}  // namespace shapebias::tools

// SPDX-License-Identifier: MIT
#include "common/endpoints.hpp"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "shapebias/io/stream.hpp"

namespace shapebias::tools {
namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

using file_ptr = std::unique_ptr<std::FILE, int (*)(std::FILE*)>;

int no_close(std::FILE*) { return 0; }

/// A stream read from a file it owns (or from stdin).
class owning_stream_source : public io::batch_source {
 public:
  owning_stream_source(file_ptr f, const std::string& name) : f_(std::move(f)), r_(f_.get(), name) {}
  const io::header& header() const override { return r_.header(); }
  std::string format() const override { return r_.format(); }
  std::optional<io::batch> next() override { return r_.next(); }

 private:
  file_ptr f_;
  io::stream_reader r_;
};

/// A store read in batches, keeping the reader alive.
class store_source : public io::batch_source {
 public:
  store_source(const std::string& path, std::size_t rows, bool allow_incomplete, const std::vector<std::string>& layers)
      : r_(path, allow_incomplete), b_(r_.batches(rows, indices(r_, path, layers))) {}
  const io::header& header() const override { return b_.header(); }
  std::string format() const override { return b_.format(); }
  std::optional<std::uint64_t> known_rows() const override { return b_.known_rows(); }
  std::optional<io::batch> next() override { return b_.next(); }

 private:
  static std::vector<std::size_t> indices(const io::store_reader& r, const std::string& path,
                                          const std::vector<std::string>& layers) {
    std::vector<std::size_t> out;
    for (const auto& name : layers) {
      auto i = r.header().find(name);
      if (!i) throw io_error(quote_name(path) + ": no layer '" + name + "'");
      out.push_back(*i);
    }
    return out;
  }
  io::store_reader r_;
  io::store_reader::batches_source b_;
};

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

bool is_hdf5_name(const std::string& path) { return ends_with(path, ".h5") || ends_with(path, ".hdf5"); }

std::unique_ptr<io::batch_source> open_source(const std::string& path, std::size_t batch_rows,
                                              bool allow_incomplete, const std::vector<std::string>& layers) {
  if (path == "-") return std::make_unique<owning_stream_source>(file_ptr(stdin, no_close), "-");
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) throw io_error(quote_name(path) + ": cannot open: " + std::strerror(errno));
  file_ptr fp(f, std::fclose);
  // A pipe given by name (/dev/stdin, a FIFO, <(…)) cannot be rewound after sniffing, and HDF5
  // cannot read one anyway: it can only be a stream.
  if (std::error_code ec; !std::filesystem::is_regular_file(path, ec))
    return std::make_unique<owning_stream_source>(std::move(fp), path);
  unsigned char magic[8] = {};
  const std::size_t n = std::fread(magic, 1, sizeof magic, f);
  if (n == 8 && std::memcmp(magic, "\x89HDF\r\n\x1a\n", 8) == 0) {
    fp.reset();
    return std::make_unique<store_source>(path, batch_rows, allow_incomplete, layers);
  }
  if (n >= 6 && std::memcmp(magic, "\x93NUMPY", 6) == 0) {
    std::rewind(f);
    return std::make_unique<owning_stream_source>(std::move(fp), path);
  }
  if (is_hdf5_name(path)) {
    fp.reset();
    return std::make_unique<store_source>(path, batch_rows, allow_incomplete, layers);  // reports what is wrong
  }
  throw io_error(quote_name(path) + ": neither a shapebias HDF5 store nor a shapebias stream" +
                 (n == 0 ? " (empty file)" : ""));
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

// SPDX-License-Identifier: MIT
#include "common/endpoints.hpp"

#include <algorithm>
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

/// The rows of a store whose ids are in a shard, read run by run of consecutive rows, so that a
/// shard reads its share of the store only.
class shard_store_source : public io::batch_source {
 public:
  shard_store_source(const std::string& path, std::size_t batch_rows, bool allow_incomplete,
                     const std::vector<std::string>& layers, const shard& sh)
      : r_(path, allow_incomplete), which_(io::detail::layer_indices(r_.header(), layers, path)), batch_(batch_rows) {
    for (auto i : which_) hdr_.layers.push_back(r_.header().layers[i]);
    hdr_.provenance = r_.header().provenance;
    const auto ids = r_.read_batch(0, static_cast<std::size_t>(r_.rows()), {}).ids;
    for (std::size_t r = 0; r < ids.size(); ++r)
      if (sh.contains(ids[r])) rows_.push_back(r);
  }
  const io::header& header() const override { return hdr_; }
  std::string format() const override { return "shapebias-store (rows of one shard)"; }
  std::optional<std::uint64_t> known_rows() const override { return rows_.size(); }
  std::optional<io::batch> next() override {
    if (pos_ == rows_.size()) return std::nullopt;
    const std::size_t n = std::min(batch_, rows_.size() - pos_);
    io::batch b;
    b.first_row = rows_[pos_];
    for (const auto& l : hdr_.layers) {
      std::vector<std::size_t> shape{n};
      shape.insert(shape.end(), l.shape.begin(), l.shape.end());
      b.data.emplace_back(shape);
    }
    for (std::size_t i = pos_, done = 0; i < pos_ + n;) {
      std::size_t j = i + 1;
      while (j < pos_ + n && rows_[j] == rows_[j - 1] + 1) ++j;
      auto run = r_.read_batch(rows_[i], j - i, which_);
      b.ids.insert(b.ids.end(), run.ids.begin(), run.ids.end());
      b.labels.insert(b.labels.end(), run.labels.begin(), run.labels.end());
      for (std::size_t l = 0; l < b.data.size(); ++l)
        std::copy(run.data[l].begin(), run.data[l].end(), b.data[l].begin() + static_cast<std::ptrdiff_t>(done * hdr_.layers[l].row_size()));
      done += j - i;
      i = j;
    }
    pos_ += n;
    return b;
  }

 private:
  io::store_reader r_;
  std::vector<std::size_t> which_, rows_;
  std::size_t batch_, pos_ = 0;
  io::header hdr_;
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

bool is_hdf5_name(const std::string& path) { return io::is_hdf5_name(path); }

std::unique_ptr<io::batch_source> open_source(const std::string& path, std::size_t batch_rows,
                                              bool allow_incomplete, const std::vector<std::string>& layers, const shard& sh) {
  std::error_code ec;
  io::h5::quiet();
  if (!sh.whole() && path != "-" && std::filesystem::is_regular_file(path, ec) && H5Fis_hdf5(path.c_str()) > 0)
    return std::make_unique<shard_store_source>(path, batch_rows, allow_incomplete, layers, sh);
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

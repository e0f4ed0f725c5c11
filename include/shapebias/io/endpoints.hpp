// SPDX-License-Identifier: MIT
// Opening an input by name, whether it is a store or a stream: "-" is standard input, a pipe, FIFO
// or device is a stream, and a regular file is recognised by its first bytes. The tools
// (tools/common/endpoints) and the Python readers (bindings/python) both open inputs here.
#pragma once

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "shapebias/core/errors.hpp"
#include "shapebias/io/store.hpp"
#include "shapebias/io/stream.hpp"

namespace shapebias::io {

/// True for the names that get HDF5 output (*.h5, *.hdf5).
inline bool is_hdf5_name(const std::string& path) {
  for (const std::string suffix : {".h5", ".hdf5"})
    if (path.size() >= suffix.size() && path.compare(path.size() - suffix.size(), suffix.size(), suffix) == 0)
      return true;
  return false;
}

namespace detail {

using file_ptr = std::unique_ptr<std::FILE, int (*)(std::FILE*)>;
inline int no_close(std::FILE*) { return 0; }

/// The positions in `h` of the layers named in `names` (all layers when `names` is empty).
/// @throws io_error naming `path` and the first unknown or repeated layer
inline std::vector<std::size_t> layer_indices(const header& h, const std::vector<std::string>& names,
                                              const std::string& path) {
  std::vector<std::size_t> out;
  for (const auto& name : names) {
    const auto i = h.find(name);
    if (!i) throw io_error(quote_name(path) + ": no layer '" + name + "'");
    if (std::find(out.begin(), out.end(), *i) != out.end())
      throw io_error(quote_name(path) + ": layer '" + name + "' is asked for twice");
    out.push_back(*i);
  }
  if (names.empty())
    for (std::size_t i = 0; i < h.layers.size(); ++i) out.push_back(i);
  return out;
}

/// A stream read from a file it owns (or from stdin), keeping only the chosen layers. The other
/// layers are still read and checked: a stream cannot skip.
class owning_stream_source : public batch_source {
 public:
  owning_stream_source(file_ptr f, const std::string& name, const std::vector<std::string>& layers)
      : f_(std::move(f)), r_(f_.get(), name), which_(layer_indices(r_.header(), layers, name)) {
    for (auto i : which_) h_.layers.push_back(r_.header().layers[i]);
  }
  const io::header& header() const override {
    h_.provenance = r_.header().provenance;  // the reader stamps "finished" at the end
    return h_;
  }
  std::string format() const override { return r_.format(); }
  std::optional<batch> next() override {
    auto b = r_.next();
    if (b && h_.layers != r_.header().layers) {  // a subset, or another order: move, never copy
      std::vector<xt::xarray<float>> kept;
      for (auto i : which_) kept.push_back(std::move(b->data[i]));
      b->data = std::move(kept);
    }
    return b;
  }

 private:
  file_ptr f_;
  stream_reader r_;
  std::vector<std::size_t> which_;
  mutable io::header h_;
};

/// A store read in batches, keeping its reader alive.
class store_source : public batch_source {
 public:
  store_source(const std::string& path, std::size_t rows, bool allow_incomplete, const std::vector<std::string>& layers)
      : r_(path, allow_incomplete), b_(r_.batches(rows, layer_indices(r_.header(), layers, path))) {}
  const io::header& header() const override { return b_.header(); }
  std::string format() const override { return b_.format(); }
  std::optional<std::uint64_t> known_rows() const override { return b_.known_rows(); }
  std::optional<batch> next() override { return b_.next(); }

 private:
  store_reader r_;
  store_reader::batches_source b_;
};

}  // namespace detail

/// Opens a store or a stream for reading, keeping only `layers`, in that order (all, in the
/// input's order, when empty). "-" is standard input; a pipe, FIFO or device (/dev/fd/N) is a
/// stream; a regular file is a store or a stream by its first bytes. `batch_rows` sizes a store's
/// batches (a stream's batches are those it was written with).
/// @throws io_error naming the input when it is missing, unreadable, neither a store nor a stream,
///         or has no layer of one of the names in `layers`
inline std::unique_ptr<batch_source> open_source(const std::string& path, std::size_t batch_rows,
                                                 bool allow_incomplete = false,
                                                 const std::vector<std::string>& layers = {}) {
  using detail::file_ptr;
  if (path == "-") return std::make_unique<detail::owning_stream_source>(file_ptr(stdin, detail::no_close), "-", layers);
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) throw io_error(quote_name(path) + ": cannot open: " + std::strerror(errno));
  file_ptr fp(f, std::fclose);
  // A pipe given by name cannot be rewound after sniffing, and HDF5 cannot read one: a stream.
  if (std::error_code ec; !std::filesystem::is_regular_file(path, ec))
    return std::make_unique<detail::owning_stream_source>(std::move(fp), path, layers);
  unsigned char magic[8] = {};
  const std::size_t n = std::fread(magic, 1, sizeof magic, f);
  if (n >= 6 && std::memcmp(magic, "\x93NUMPY", 6) == 0) {
    std::rewind(f);
    return std::make_unique<detail::owning_stream_source>(std::move(fp), path, layers);
  }
  if ((n == 8 && std::memcmp(magic, "\x89HDF\r\n\x1a\n", 8) == 0) || is_hdf5_name(path)) {
    fp.reset();
    return std::make_unique<detail::store_source>(path, batch_rows, allow_incomplete, layers);  // says what is wrong
  }
  throw io_error(quote_name(path) + ": neither a shapebias HDF5 store nor a shapebias stream" +
                 (n == 0 ? " (empty file)" : ""));
}

}  // namespace shapebias::io

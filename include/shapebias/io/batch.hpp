// SPDX-License-Identifier: MIT
// What moves between the tools: one batch of rows (inputs) with their ids, labels and one float32
// tensor per layer, and the header that describes the layers and how the data were made.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <xtensor/xarray.hpp>

namespace shapebias::io {

/// One layer of a store or stream: its name (a module path such as "layer3.5.conv2") and the shape
/// of one row, e.g. {C, H, W} or {C}. Axis 0 of every batch is the row (input) axis.
struct layer_spec {
  std::string name;
  std::vector<std::size_t> shape;

  std::size_t row_size() const noexcept {
    std::size_t n = 1;
    for (auto d : shape) n *= d;
    return n;
  }
  friend bool operator==(const layer_spec&, const layer_spec&) = default;
};

/// The description shared by stores and streams.
struct header {
  std::vector<layer_spec> layers;
  /// One JSON object per processing step, oldest first; a writer's own step is the last one
  /// (see docs/schema.md, "Provenance").
  std::vector<std::string> provenance;

  /// The index of a layer by name, or nullopt.
  std::optional<std::size_t> find(const std::string& name) const {
    for (std::size_t i = 0; i < layers.size(); ++i)
      if (layers[i].name == name) return i;
    return std::nullopt;
  }
};

/// A non-owning view of one batch, for writers: data[i] points at rows × layers[i].row_size()
/// C-ordered floats.
struct batch_view {
  std::size_t rows = 0;
  const std::int64_t* ids = nullptr;
  const std::int64_t* labels = nullptr;
  std::vector<const float*> data;
};

/// An owning batch, for readers. data[i] has shape {rows, layers[i].shape...}.
struct batch {
  std::uint64_t first_row = 0;
  std::vector<std::int64_t> ids;
  std::vector<std::int64_t> labels;
  std::vector<xt::xarray<float>> data;

  std::size_t rows() const noexcept { return ids.size(); }
  batch_view view() const {
    batch_view v{ids.size(), ids.data(), labels.data(), {}};
    for (const auto& d : data) v.data.push_back(d.data());
    return v;
  }
};

/// Something that yields batches in row order: an HDF5 store or a pipe stream.
class batch_source {
 public:
  virtual ~batch_source() = default;
  virtual const io::header& header() const = 0;
  /// The format's name and version, e.g. "shapebias-store v1".
  virtual std::string format() const = 0;
  /// The number of rows, when known without reading them all (a store; not a stream).
  virtual std::optional<std::uint64_t> known_rows() const { return std::nullopt; }
  /// The next batch, or nullopt at the (verified) end. Throws io_error on truncation or corruption.
  virtual std::optional<batch> next() = 0;
};

/// Something that takes batches in row order: an HDF5 store or a pipe stream.
class batch_sink {
 public:
  virtual ~batch_sink() = default;
  virtual void write(const batch_view& b) = 0;
  /// Ends the output and marks it complete, stamping "finished" (UTC) into the last provenance
  /// record. Nothing written before finish() looks complete. `log`, when given, replaces the
  /// header's provenance log where the format writes it last (a store; a stream's header is
  /// already out) — used when an input's log was completed while it was read.
  virtual void finish(const std::vector<std::string>* log = nullptr) = 0;
};

}  // namespace shapebias::io

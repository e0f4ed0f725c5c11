// SPDX-License-Identifier: MIT
// Opening inputs and outputs by name: "-" is a stream on stdin/stdout, "*.h5" is an HDF5 store,
// any other output path is a stream file; an input file is recognised by its first bytes.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "common/dataset.hpp"
#include "shapebias/io/batch.hpp"
#include "shapebias/io/store.hpp"

namespace shapebias::tools {

/// True for names that get HDF5 output (*.h5, *.hdf5).
bool is_hdf5_name(const std::string& path);

/// An open input: a store read in batches of `batch_rows`, or a stream (io::open_source). Throws
/// io_error naming the input when it is missing, unreadable, or neither a store nor a stream.
/// `layers`, when not empty, limits the batches to those layers, in that order. With a shard, only
/// the rows of a store whose ids are in it are read (1/N of the store); a stream is read whole, and
/// its reader skips the other rows.
std::unique_ptr<io::batch_source> open_source(const std::string& path, std::size_t batch_rows,
                                              bool allow_incomplete = false, const std::vector<std::string>& layers = {},
                                              const shard& sh = {});

/// An open output for `hdr`. With resume and an HDF5 output, a partial store left by a killed run
/// with the same resume key is continued: *resumed_rows tells how many rows it already holds.
std::unique_ptr<io::batch_sink> open_sink(const std::string& path, const io::header& hdr,
                                          const io::store_options& opt, bool resume,
                                          std::uint64_t* resumed_rows = nullptr);

}  // namespace shapebias::tools

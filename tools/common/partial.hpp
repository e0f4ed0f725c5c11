// SPDX-License-Identifier: MIT
// Partial results: what a sharded run (--shard K/N, or one rank of --mpi) writes besides its tables,
// and what `shapebias merge` checks before it combines them. A verb's HDF5 output (tv.h5,
// dissect.h5, diversity.h5, eval.h5) holds its accumulator states and, as the root attribute
// "partial", a JSON record: the verb, which shards of how many it holds, and a key: every
// parameter, model hash, layer and input selection that must be equal in the parts of one run.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/dataset.hpp"
#include "shapebias/io/batch.hpp"
#include "shapebias/io/hdf5.hpp"

namespace shapebias::tools {

struct partial_info {
  std::string verb;
  std::uint64_t count = 1;               // N of --shard K/N
  std::vector<std::uint64_t> shards{0};  // the K held, ascending
  nlohmann::json key = nlohmann::json::object();

  /// The record of a run of `verb` over shard `s` with `key`.
  static partial_info of(const std::string& verb, const shard& s, nlohmann::json key);
  bool whole() const { return shards.size() == count; }
  /// For provenance: null for a whole result, else {"shards", "count", "rule"}.
  nlohmann::json shard_record() const;
  nlohmann::json to_json() const;
  /// Throws io_error naming `file` when `j` is not a partial record.
  static partial_info from_json(const nlohmann::json& j, const std::string& file);
};

/// Checks that `parts` (named `names` in messages) are the shards of one run: one verb, one N,
/// equal keys (the first difference is named) and every shard exactly once (at most once when not
/// `complete`). Throws std::runtime_error with one line. Returns the record of the shards held.
partial_info check_parts(const std::vector<partial_info>& parts, const std::vector<std::string>& names, bool complete = true);

/// The "partial" attribute on the root of an HDF5 file; `name` names the file in messages.
void write_partial(hid_t file, const partial_info& p, const std::string& name);
/// Throws io_error naming the file when it has none (not the output of a mergeable verb).
partial_info read_partial(hid_t file, const std::string& name);

/// The provenance record of a merged result: the first part's record (its command, model and
/// parameters), its shard replaced by the whole, and "merge": the merge step's own record and each
/// part's id, host, command, shard and times.
nlohmann::json merged_record(const std::vector<nlohmann::json>& part_records, nlohmann::json merge_step);

/// What made the activations of an input, for a merge key: the model's sha256, the preprocessing
/// and the ablations of the last step of a provenance log (parse_log) that ran a model; null when
/// none did.
nlohmann::json source_identity(const nlohmann::json& log);

/// Drops the rows of a batch (a store's or a stream's) whose ids are outside shard `sh`.
void keep_shard_rows(io::batch& b, const shard& sh);

/// HDF5 files in memory (the core driver; nothing on disk), the form in which partial results
/// travel between MPI ranks.
io::h5::handle create_memory_file(const std::string& name);
/// The bytes of a file (flushed first).
std::string file_image(hid_t file, const std::string& name);
/// Opens bytes from file_image read-only.
io::h5::handle open_file_image(const std::string& bytes, const std::string& name);
/// An MPI rank's partial result as bytes: an HDF5 file `name` in memory with what `save` writes into
/// it, the partial record `part`, and {"run": rec} as its provenance.
std::string partial_image(const std::string& name, const partial_info& part, const nlohmann::json& rec,
                          const std::function<void(hid_t)>& save);

}  // namespace shapebias::tools

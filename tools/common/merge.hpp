// SPDX-License-Identifier: MIT
// Merging the partial results of a sharded run (--shard K/N) into the result of that run, as
// `shapebias merge` does from files and rank 0 of an MPI run (--mpi) does from the ranks' bytes.
// Each mergeable verb provides merge_<verb>: it combines its accumulators and writes its outputs
// with the same code as an unsharded run.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/mpi.hpp"
#include "common/partial.hpp"
#include "shapebias/io/hdf5.hpp"

namespace shapebias::tools {

/// One part of a merge: an open HDF5 file (on disk, or in memory from a rank), its name for
/// messages, its partial record and its run's provenance record.
struct merge_part {
  io::h5::handle file;
  std::string name;
  partial_info info;
  nlohmann::json run;
};

/// Reads a part's partial record and its run record (the "run" of its "provenance" attribute).
merge_part open_part(io::h5::handle file, const std::string& name);

/// Checks that `parts` are the shards of one run (check_parts) and writes the merged result of
/// their verb to the folder `output`. `step`: the record of this merge.
void merge_parts(const std::vector<merge_part>& parts, const nlohmann::json& step, const std::string& output, bool quiet);

/// merge_parts over the file images the ranks of an MPI run sent (rank order).
void merge_images(const std::vector<std::string>& images, const nlohmann::json& step, const std::string& output, bool quiet);

/// The merge step of an MPI run: the number of ranks and the MPI library.
nlohmann::json mpi_step(const mpi_session& mpi);

/// Merges the stores written by the shards of one dump or attack run into the store `output`:
/// refuses other models, parameters or layers, and shards given twice or missing. Rows are in input
/// id order when each part's are (as a single run over a data set or a sorted --ids list writes
/// them); otherwise the parts follow each other in shard order. The merged store's provenance
/// record says which ("row_order"). `every_shard` false: shards may be missing (eval's stores of a
/// variant, which a shard with an empty CL set does not write; eval's own parts are checked).
void merge_stores(const std::vector<std::string>& inputs, const std::string& output, const nlohmann::json& step, bool quiet,
                  bool every_shard = true);

/// MPI mode of dump and attack (and eval): `run(shard, part)` writes this rank's shard to a part
/// named after `output` ("OUT.rankR-of-P.h5", on a file system every rank sees), then rank 0 merges
/// the parts into `output` (merge_stores, or merge_parts for folders) and removes them.
void run_ranks(const std::string& output, bool folder, bool quiet,
               const std::function<void(const std::string& shard, const std::string& part)>& run);

/// Per verb (in its cmd_<verb>.cpp): combines `parts` (already checked; `whole` is their merged
/// partial record) and writes the verb's outputs to `output`, with `rec` as the run's record.
void merge_tv(const std::vector<merge_part>& parts, const partial_info& whole, nlohmann::json rec, const std::string& output,
              bool quiet);
void merge_dissect(const std::vector<merge_part>& parts, const partial_info& whole, nlohmann::json rec,
                   const std::string& output, bool quiet);
void merge_diversity(const std::vector<merge_part>& parts, const partial_info& whole, nlohmann::json rec,
                     const std::string& output, bool quiet);
void merge_eval(const std::vector<merge_part>& parts, const partial_info& whole, nlohmann::json rec, const std::string& output,
                bool quiet);

}  // namespace shapebias::tools

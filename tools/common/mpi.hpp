// SPDX-License-Identifier: MIT
// MPI mode (--mpi): under mpirun or srun, rank R of P runs as --shard R/P; the ranks' partial results
// travel as bytes to rank 0, which merges them with the code of `shapebias merge` and writes the
// outputs. MPI lives in a plugin (libshapebias_mpi.so, built when CMake finds MPI) loaded only with
// --mpi: the command never links MPI, so it starts as fast and runs where no MPI library is installed.
//
// Failures: every collective also carries whether each rank succeeded, so all ranks leave together.
// Rank 0 reports the first failure in one line; the other ranks exit with status 1 silently.
#pragma once

#include <functional>
#include <string>
#include <vector>

namespace shapebias::tools {

class mpi_session {
 public:
  /// Loads the MPI plugin and initialises MPI. Throws usage_error when this shapebias was built
  /// without MPI.
  mpi_session();
  /// Finalises MPI.
  ~mpi_session();
  mpi_session(const mpi_session&) = delete;
  mpi_session& operator=(const mpi_session&) = delete;

  int rank() const noexcept { return rank_; }
  int size() const noexcept { return size_; }
  bool root() const noexcept { return rank_ == 0; }
  /// This rank's shard, "R/P".
  std::string shard() const { return std::to_string(rank_) + "/" + std::to_string(size_); }
  /// The MPI library's version line.
  std::string library() const;

  /// Runs `local` on every rank and returns every rank's bytes on rank 0, in rank order (nothing
  /// elsewhere). When `local` throws on any rank, rank 0 throws the first failing rank's error
  /// ("rank R of P: …" when R is not 0) and the other ranks throw silent_failure.
  std::vector<std::string> gather(const std::function<std::string()>& local);
  /// Runs `on_root` on rank 0 and returns its bytes on every rank. When it throws, rank 0 rethrows
  /// and the other ranks throw silent_failure.
  std::string broadcast(const std::function<std::string()>& on_root);

 private:
  int rank_ = 0, size_ = 1;
};

/// Runs `run(session)`: with --mpi (`use`), in a session whose rank's shard is put in `shard`;
/// otherwise with a null session.
template <class F>
void with_mpi(bool use, std::string& shard, F&& run) {
  if (!use) return run(static_cast<mpi_session*>(nullptr));
  mpi_session s;
  shard = s.shard();
  run(&s);
}

}  // namespace shapebias::tools

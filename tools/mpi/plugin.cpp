// SPDX-License-Identifier: MIT
// The MPI plugin (libshapebias_mpi.so), the one translation unit that includes <mpi.h>: start-up,
// gathering each rank's bytes at rank 0, and broadcasting rank 0's bytes. common/mpi.cpp loads it
// when a verb runs with --mpi and builds the failure protocol on top of these three collectives.
// The C API only: without these, OpenMPI's and MPICH's mpi.h pull in their deprecated C++ bindings.
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

void check(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char msg[MPI_MAX_ERROR_STRING];
  int n = 0;
  MPI_Error_string(rc, msg, &n);
  throw std::runtime_error(std::string("MPI_") + what + " failed: " + std::string(msg, static_cast<std::size_t>(n)));
}

int comm_rank() {
  int r = 0;
  check(MPI_Comm_rank(MPI_COMM_WORLD, &r), "Comm_rank");
  return r;
}

int comm_size() {
  int s = 0;
  check(MPI_Comm_size(MPI_COMM_WORLD, &s), "Comm_size");
  return s;
}

}  // namespace

extern "C" {

void shapebias_mpi_init(int& rank, int& size) {
  int done = 0;
  MPI_Initialized(&done);
  if (!done) {
    int provided = 0;
    check(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided), "Init_thread");
  }
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  rank = comm_rank();
  size = comm_size();
}

void shapebias_mpi_finalize() {
  int done = 0;
  MPI_Finalized(&done);
  if (!done) MPI_Finalize();
}

/// Every rank's bytes at rank 0, in rank order (`all` is left empty elsewhere). MPI_Gatherv counts
/// bytes in int, so payloads of any size go in rounds of at most INT_MAX / ranks bytes per rank.
void shapebias_mpi_gather(const std::string& mine, std::vector<std::string>& all) {
  const int rank = comm_rank(), size = comm_size();
  std::uint64_t len = mine.size(), longest = 0;
  std::vector<std::uint64_t> lens(static_cast<std::size_t>(size));
  check(MPI_Gather(&len, 1, MPI_UINT64_T, lens.data(), 1, MPI_UINT64_T, 0, MPI_COMM_WORLD), "Gather");
  check(MPI_Allreduce(&len, &longest, 1, MPI_UINT64_T, MPI_MAX, MPI_COMM_WORLD), "Allreduce");
  all.clear();
  if (rank == 0)
    for (auto n : lens) all.emplace_back(n, '\0');
  const std::uint64_t round = static_cast<std::uint64_t>(INT_MAX / size);
  std::vector<int> counts(static_cast<std::size_t>(size)), displs(static_cast<std::size_t>(size));
  std::vector<char> recv;
  for (std::uint64_t off = 0; off < longest; off += round) {
    auto part = [&](std::uint64_t n) { return static_cast<int>(n > off ? std::min(round, n - off) : 0); };
    int total = 0;
    if (rank == 0)
      for (std::size_t r = 0; r < counts.size(); ++r) {
        counts[r] = part(lens[r]);
        displs[r] = total;
        total += counts[r];
      }
    recv.resize(static_cast<std::size_t>(total));
    check(MPI_Gatherv(mine.data() + std::min(off, len), part(len), MPI_BYTE, recv.data(), counts.data(), displs.data(),
                      MPI_BYTE, 0, MPI_COMM_WORLD),
          "Gatherv");
    if (rank == 0)
      for (std::size_t r = 0; r < counts.size(); ++r)
        std::copy_n(recv.data() + displs[r], counts[r], all[r].data() + off);
  }
}

/// Rank 0's `bytes` on every rank.
void shapebias_mpi_broadcast(std::string& bytes) {
  std::uint64_t len = bytes.size();
  check(MPI_Bcast(&len, 1, MPI_UINT64_T, 0, MPI_COMM_WORLD), "Bcast");
  bytes.resize(len);
  for (std::uint64_t off = 0; off < len; off += INT_MAX)
    check(MPI_Bcast(bytes.data() + off, static_cast<int>(std::min<std::uint64_t>(INT_MAX, len - off)), MPI_BYTE, 0,
                    MPI_COMM_WORLD),
          "Bcast");
}

const char* shapebias_mpi_library_version() {
  static char v[MPI_MAX_LIBRARY_VERSION_STRING] = "";
  int n = 0;
  MPI_Get_library_version(v, &n);
  return v;
}

}  // extern "C"

// SPDX-License-Identifier: MIT
// Writes a two-row store with the installed headers and reads it back; streams the rows through the
// TV and spectrum accumulators and keeps their states in the same file.
#include <shapebias/io/state.hpp>
#include <shapebias/io/store.hpp>
#include <shapebias/stats/spectrum.hpp>
#include <shapebias/stats/tv.hpp>
#include <shapebias/version.hpp>

#include <cstdio>

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  namespace io = shapebias::io;
  namespace st = shapebias::stats;
  io::header h{{{"conv", {1, 2, 2}}}, {R"({"verb":"consumer"})"}};
  const float data[8] = {1, 2, 3, 4, 0, 0, 0, 5};
  const std::int64_t ids[2] = {10, 11}, labels[2] = {0, 1};
  io::store_writer w(argv[1], h);
  w.write({2, ids, labels, {data}});
  w.finish();
  st::tv_accumulator tv(1);
  st::spectrum_accumulator sp(1, 2, 2);
  bool ok = false;
  {
    io::store_reader r(argv[1]);
    const auto a = r.read(0, 0, 2);
    tv.update(a);
    sp.update(a);
    // TV by hand: [[1,2],[3,4]] → |1-3|+|2-4|+|1-2|+|3-4| = 6; [[0,0],[0,5]] → 5 + 5 = 10.
    ok = r.rows() == 2 && a(1, 0, 1, 1) == 5.f && tv.moments().mean(0) == 8.0 && sp.rows() == 2;
  }
  {
    io::h5::handle f(H5Fopen(argv[1], H5F_ACC_RDWR, H5P_DEFAULT));
    io::write_state(f.get(), "states/tv", tv.save(), argv[1]);
    ok = ok && st::tv_accumulator::load(io::read_state(f.get(), "states/tv", argv[1])).moments().mean(0) == 8.0;
  }
  std::printf("shapebias %s consumer: %s\n", shapebias::version_string, ok ? "ok" : "MISMATCH");
  return ok ? 0 : 1;
}

// SPDX-License-Identifier: MIT
// Writes a two-row store with the installed headers and reads it back.
#include <shapebias/io/store.hpp>
#include <shapebias/version.hpp>

#include <cstdio>

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  namespace io = shapebias::io;
  io::header h{{{"conv", {2, 1, 1}}}, {R"({"verb":"consumer"})"}};
  const float data[4] = {1, 2, 3, 4};
  const std::int64_t ids[2] = {10, 11}, labels[2] = {0, 1};
  io::store_writer w(argv[1], h);
  w.write({2, ids, labels, {data}});
  w.finish();
  io::store_reader r(argv[1]);
  const auto a = r.read(0, 0, 2);
  const bool ok = r.rows() == 2 && a(1, 1, 0, 0) == 4.f && r.header().layers[0].name == "conv";
  std::printf("shapebias %s consumer: %s\n", shapebias::version_string, ok ? "ok" : "MISMATCH");
  return ok ? 0 : 1;
}

// SPDX-License-Identifier: MIT
// Top-K update throughput of shapebias::stats::topk_units (K = 49, rank max) and unit_activity,
// on a fixture written by benchmarks/topk_benchmark.py (which runs the numpy argpartition side on
// the same data). Every mode streams batches of 64 rows [B, U, H, W] through the accumulators; a
// batch fed to both is scored once (stats::map_scores).
//
//   bench_topk check  FIXTURE THREADS RESULT_OUT
//       one pass over the fixture into topk_units and unit_activity; writes the result (below)
//   bench_topk rate   FIXTURE THREADS SECONDS both|topk
//       passes over the fixture (held in memory) again and again for SECONDS, into both
//       accumulators or into topk_units alone; pass p gives row i the id ids[i] + p·(max id + 1),
//       so ids stay unique; prints "<rows/s> <values/s> <passes>"
//   bench_topk memory FIXTURE N THREADS
//       streams N rows (batches of 64 re-read from the file, cycling; ids made unique as above)
//       into both accumulators; prints "<VmHWM KiB> <seconds> <topk retained bytes>" (VmHWM, not
//       ru_maxrss: that one keeps the parent's peak across fork and exec)
//
// Fixture (little endian): "SBTOPK01", uint64 N U H W, int64 ids[N], float64 thresholds[U],
// float32 acts[N, U, H, W].
// Result (little endian): uint64 U K rows, int64 size[U], float64 score[U, K], int64 id[U, K],
// int64 y[U, K], int64 x[U, K] (each unit best first, zero-padded), uint64 above[U], float64 max[U].
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <xtensor/xadapt.hpp>

#include "fixture_file.hpp"
#include "shapebias/stats/topk.hpp"

namespace {

using bench::clk;
using bench::seconds_since;
using bench::vm_hwm_kib;
namespace st = shapebias::stats;

constexpr std::size_t batch = 64;
constexpr std::size_t top_k = 49;


struct fixture {
  std::uint64_t n = 0, u = 0, h = 0, w = 0;
  std::vector<std::int64_t> ids;
  std::vector<double> thr;
  std::vector<float> acts;  // the loaded rows only
  bench::fixture_file in;
  std::streamoff data = 0;  // offset of acts

  explicit fixture(const std::string& path) : in(path, "SBTOPK01", "top-K") {
    std::vector<std::uint64_t> hdr(4);
    in.get(hdr);
    n = hdr[0], u = hdr[1], h = hdr[2], w = hdr[3];
    if (n == 0 || u == 0 || h == 0 || w == 0) throw std::runtime_error(path + ": bad header");
    ids.resize(n);
    thr.resize(u);
    in.get(ids);
    in.get(thr);
    data = in.tell();
  }
  std::size_t row_size() const { return u * h * w; }
  /// Loads rows [b, b + k) into acts (replacing what was there).
  void load(std::uint64_t b, std::uint64_t k) {
    acts.resize(k * row_size());
    in.seek(data + static_cast<std::streamoff>(b * row_size() * 4));
    in.get(acts);
  }
  /// Loaded rows [j, j + k) as a [k, U, H, W] adaptor (no copy).
  auto rows(std::size_t j, std::size_t k) {
    const std::vector<std::size_t> shape{k, u, h, w};
    return xt::adapt(acts.data() + j * row_size(), k * row_size(), xt::no_ownership(), shape);
  }
  std::int64_t id_span() const { return *std::max_element(ids.begin(), ids.end()) + 1; }
};

template <class T>
void put(std::ofstream& f, const std::vector<T>& v) {
  f.write(reinterpret_cast<const char*>(v.data()), static_cast<std::streamsize>(v.size() * sizeof(T)));
}

void write_result(const st::topk_units& t, const st::unit_activity& a, const std::string& path) {
  const std::size_t nu = t.units(), k = t.k();
  std::vector<std::int64_t> size(nu), id(nu * k), y(nu * k), x(nu * k);
  std::vector<double> score(nu * k), mx(nu);
  std::vector<std::uint64_t> above(nu);
  for (std::size_t u = 0; u < nu; ++u) {
    const auto r = t.result(u);
    size[u] = static_cast<std::int64_t>(r.size());
    for (std::size_t j = 0; j < r.size(); ++j) {
      score[u * k + j] = r[j].score;
      id[u * k + j] = r[j].id;
      y[u * k + j] = static_cast<std::int64_t>(r[j].y);
      x[u * k + j] = static_cast<std::int64_t>(r[j].x);
    }
    above[u] = a.above(u);
    mx[u] = a.max(u);
  }
  std::ofstream f(path, std::ios::binary);
  put(f, std::vector<std::uint64_t>{nu, k, t.count()});
  put(f, size);
  put(f, score);
  put(f, id);
  put(f, y);
  put(f, x);
  put(f, above);
  put(f, mx);
  if (!f) throw std::runtime_error("cannot write " + path);
}

/// One batch into both accumulators, scored once (as tools/cmd_diversity.cpp does).
template <class B>
void feed(st::topk_units& top, st::unit_activity& act, const B& rows, const std::int64_t* ids, unsigned threads) {
  const st::map_scores s(rows, top.rank(), threads);
  top.update(s, ids, threads);
  act.update(s, ids);
}

int run_check(fixture& fx, unsigned threads, const std::string& out) {
  fx.load(0, fx.n);
  st::topk_units top(fx.u, top_k, st::topk_rank::max);
  st::unit_activity act(fx.thr);
  for (std::size_t j = 0; j < fx.n; j += batch) {
    const std::size_t k = std::min<std::size_t>(batch, fx.n - j);
    feed(top, act, fx.rows(j, k), fx.ids.data() + j, threads);
  }
  write_result(top, act, out);
  return top.count() == fx.n && act.count() == fx.n ? 0 : 1;
}

int run_rate(fixture& fx, unsigned threads, double budget, bool activity) {
  fx.load(0, fx.n);
  const std::int64_t span = fx.id_span();
  st::topk_units top(fx.u, top_k, st::topk_rank::max);
  st::unit_activity act(fx.thr);
  std::vector<std::int64_t> ids(batch);
  std::size_t done = 0, passes = 0;
  const auto t0 = clk::now();
  do {
    for (std::size_t j = 0; j < fx.n; j += batch) {
      const std::size_t k = std::min<std::size_t>(batch, fx.n - j);
      for (std::size_t r = 0; r < k; ++r) ids[r] = fx.ids[j + r] + static_cast<std::int64_t>(passes) * span;
      if (activity)
        feed(top, act, fx.rows(j, k), ids.data(), threads);
      else
        top.update(fx.rows(j, k), ids.data(), threads);
      done += k;
    }
    ++passes;
  } while (seconds_since(t0) < budget);
  const double secs = seconds_since(t0);
  std::printf("%.2f %.1f %zu\n", static_cast<double>(done) / secs,
              static_cast<double>(done * fx.row_size()) / secs, passes);
  return top.count() == done && act.count() == (activity ? done : 0) ? 0 : 1;
}

int run_memory(fixture& fx, std::size_t n, unsigned threads) {
  const std::int64_t span = fx.id_span();
  st::topk_units top(fx.u, top_k, st::topk_rank::max);
  st::unit_activity act(fx.thr);
  std::vector<std::int64_t> ids(batch);
  std::size_t done = 0, j = 0, cycle = 0;
  const auto t0 = clk::now();
  while (done < n) {
    const std::size_t k = std::min({batch, n - done, static_cast<std::size_t>(fx.n) - j});
    fx.load(j, k);  // stream: only this batch is in memory
    for (std::size_t r = 0; r < k; ++r) ids[r] = fx.ids[j + r] + static_cast<std::int64_t>(cycle) * span;
    feed(top, act, fx.rows(0, k), ids.data(), threads);
    done += k;
    j += k;
    if (j == fx.n) j = 0, ++cycle;
  }
  const double secs = seconds_since(t0);
  std::printf("%ld %.3f %zu\n", vm_hwm_kib(), secs, top.retained_bytes());
  return top.count() == n && act.count() == n ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) try {
  const std::string mode = argc > 1 ? argv[1] : "";
  if (mode == "check" && argc == 5) {
    fixture fx(argv[2]);
    return run_check(fx, static_cast<unsigned>(std::stoul(argv[3])), argv[4]);
  }
  if (mode == "rate" && argc == 6) {
    fixture fx(argv[2]);
    const std::string what = argv[5];
    if (what != "both" && what != "topk") throw std::invalid_argument("expected both or topk");
    return run_rate(fx, static_cast<unsigned>(std::stoul(argv[3])), std::stod(argv[4]), what == "both");
  }
  if (mode == "memory" && argc == 5) {
    fixture fx(argv[2]);
    return run_memory(fx, std::stoul(argv[3]), static_cast<unsigned>(std::stoul(argv[4])));
  }
  std::fprintf(stderr,
               "usage: bench_topk check  FIXTURE THREADS RESULT_OUT\n"
               "       bench_topk rate   FIXTURE THREADS SECONDS both|topk\n"
               "       bench_topk memory FIXTURE N THREADS\n");
  return 2;
} catch (const std::exception& e) {
  std::fprintf(stderr, "bench_topk: %s\n", e.what());
  return 1;
}

#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Streaming top-K update throughput (benchmarks/bench_topk: shapebias::stats::topk_units with
K = 49 ranked by spatial max, plus unit_activity) against a numpy argpartition reference of the
same streaming computation, side by side on the same data, in the same run (issue 7 part 5); and
the peak memory of the C++ side after N and 4N rows (it must not grow with N).

Two activation shapes, batches of B = 64 rows [B, U, H, W]: ResNet-50 layer4-like [2048, 7, 7] and
conv-like [256, 13, 13]. The fixture per shape: post-ReLU smooth fields quantised to multiples of
1/32 (ties inside a map and between rows), some units capped ReLU6-style (most rows tie at the cap,
so the id decides the whole top-K), some dead units (all zero), shuffled distinct int64 ids, and
per-unit thresholds (the 90th percentile of the spatial max) for unit_activity.

The numpy reference, per batch: spatial max [B, U] -> unit_activity counts (max > T) and running
max -> concatenate with the running top-K (scores, ids) [U, K] -> np.argpartition keeps K per unit;
the partition key is one uint64 per entry (order-preserving float32 bits, then the id), so ties at
the K-th place are broken as in C++ (higher score, then lower id). At the end a full sort with the
same rule (np.lexsort). Final ids and scores per unit, the argmax positions, and the activity
counts and maxima are compared exactly with the C++ result at 1 and 2 threads. numpy runs on one
thread; the C++ side scores each batch once for both accumulators (stats::map_scores, as
`shapebias diversity` does), and the "top-K only" line feeds topk_units alone.

Build first (nothing is built here):
  cmake --build BUILD --target bench_topk
  /usr/bin/python3 benchmarks/topk_benchmark.py --build BUILD [--threads 2] [--seconds 2]

Prints every figure; asserts nothing (except that the programs ran).
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("OMP_WAIT_POLICY", "passive")

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.dirname(HERE)

K, B = 49, 64  # as in bench_topk.cpp
SHAPES = [("ResNet-50 layer4-like", 2048, 7, 7), ("conv-like", 256, 13, 13)]
QUANTUM = 32  # activations are multiples of 1/QUANTUM
BRODEN_IMAGES = 63305


def make_fixture(path, n, u, h, w, seed=0):
    """Writes the fixture (format in benchmarks/bench_topk.cpp); returns acts, ids, thresholds."""
    rng = np.random.default_rng(seed)
    kind = rng.random(u)
    dead, capped = kind < 0.05, (kind >= 0.05) & (kind < 0.20)
    scale = rng.lognormal(0.0, 0.5, u).astype(np.float32)
    cap = (np.round(scale * QUANTUM) / QUANTUM).astype(np.float32)  # reached by most rows
    acts = np.empty((n, u, h, w), np.float32)
    for b in range(0, n, B):
        k = min(B, n - b)
        z = rng.standard_normal((k, u, h + 2, w + 2), dtype=np.float32)
        field = sum(z[:, :, i:i + h, j:j + w] for i in range(3) for j in range(3)) / np.float32(3)
        a = np.maximum(field - np.float32(0.5), 0) * scale[None, :, None, None]
        a = np.round(a * QUANTUM) / np.float32(QUANTUM)
        a[:, capped] = np.minimum(a[:, capped], cap[capped][None, :, None, None])
        a[:, dead] = 0
        acts[b:b + k] = a + np.float32(0)  # no -0.0
    ids = (1000 + 13 * rng.permutation(n)).astype(np.int64)  # distinct, not in row order
    thr = np.quantile(acts.max(axis=(2, 3)), 0.9, axis=0).astype(np.float64)
    with open(path, "wb") as f:
        f.write(b"SBTOPK01")
        np.array([n, u, h, w], "<u8").tofile(f)
        ids.astype("<i8").tofile(f)
        thr.astype("<f8").tofile(f)
        acts.astype("<f4", copy=False).tofile(f)
    return dict(acts=acts, ids=ids, thr=thr, dead=int(dead.sum()), capped=int(capped.sum()))


def order_key(scores, ids):
    """One uint64 per entry, smaller = ranks first: higher score, then lower id (ids in [0, 2^32))."""
    bits = (scores + np.float32(0)).view(np.uint32)  # + 0 turns -0.0 into +0.0
    up = np.where(bits >> 31, ~bits, bits | np.uint32(0x80000000))  # increases with the score
    return ((~up).astype(np.uint64) << np.uint64(32)) | ids.astype(np.uint64)


def numpy_stream(acts, ids, thr, k=K, activity=True):
    """The same streaming computation as bench_topk check, in numpy (activity=False: top-K only)."""
    u = acts.shape[1]
    top_s, top_i = np.empty((u, 0), np.float32), np.empty((u, 0), np.int64)
    above, mx = np.zeros(u, np.int64), np.full(u, -np.inf)
    for b in range(0, len(acts), B):
        m = acts[b:b + B].max(axis=(2, 3))  # [b, U] spatial max
        if activity:
            above += (m > thr).sum(axis=0)
            mx = np.maximum(mx, m.max(axis=0))
        s = np.concatenate([top_s, m.T], axis=1)  # [U, kept + b]
        i = np.concatenate([top_i, np.broadcast_to(ids[b:b + B], (u, len(m)))], axis=1)
        if s.shape[1] > k:
            keep = np.argpartition(order_key(s, i), k - 1, axis=1)[:, :k]
            s, i = np.take_along_axis(s, keep, axis=1), np.take_along_axis(i, keep, axis=1)
        top_s, top_i = s, i
    order = np.lexsort((top_i, -top_s))  # per unit: higher score, then lower id
    return np.take_along_axis(top_s, order, 1), np.take_along_axis(top_i, order, 1), above, mx


def read_result(path):
    with open(path, "rb") as f:
        u, k, rows = (int(v) for v in np.fromfile(f, "<u8", 3))
        size = np.fromfile(f, "<i8", u)
        score = np.fromfile(f, "<f8", u * k).reshape(u, k)
        ident, y, x = (np.fromfile(f, "<i8", u * k).reshape(u, k) for _ in range(3))
        above = np.fromfile(f, "<u8", u).astype(np.int64)
        mx = np.fromfile(f, "<f8", u)
    return dict(k=k, rows=rows, size=size, score=score, id=ident, y=y, x=x, above=above, max=mx)


def compare(fx, got, ref):
    """(top-K equal, positions equal, activity equal) of the C++ result `got` against numpy `ref`."""
    acts, ids = fx["acts"], fx["ids"]
    s, i, above, mx = ref
    n, u, h, w = acts.shape
    k = min(K, n)
    topk = (got["k"] == K and got["rows"] == n and np.all(got["size"] == k) and
            np.array_equal(got["score"][:, :k], s.astype(np.float64)) and np.array_equal(got["id"][:, :k], i))
    by_id = np.argsort(ids)
    rows = by_id[np.clip(np.searchsorted(ids[by_id], got["id"][:, :k]), 0, n - 1)]
    maps = acts[rows, np.arange(u)[:, None]].reshape(u, k, h * w)
    pos = np.array_equal(np.argmax(maps, axis=2), got["y"][:, :k] * w + got["x"][:, :k])  # first maximum
    act = np.array_equal(got["above"], above) and np.array_equal(got["max"], mx.astype(np.float64))
    return topk, pos, act


def run(args):
    return subprocess.run([str(a) for a in args], check=True, capture_output=True, text=True).stdout.split()


def find_bench(build):
    for d in [build] if build else [os.path.join(SOURCE, "build"), "/tmp/build-bench"]:
        exe = os.path.join(d, "benchmarks", "bench_topk")
        if os.path.exists(exe):
            return exe
    sys.exit("bench_topk not found: build it first (cmake --build BUILD --target bench_topk) and pass --build BUILD")


def yes(b):
    return "yes" if b else "no"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", help="build directory holding benchmarks/bench_topk")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=2, help="timing budget per measurement (C++ and numpy)")
    ap.add_argument("--rows", type=int, default=300, help="fixture rows per shape (not a multiple of 64: a short "
                                                           "last batch)")
    ap.add_argument("--memory-n", type=int, default=2000, help="N for the peak-memory runs (N and 4N rows)")
    args = ap.parse_args()
    bench = find_bench(args.build)
    threads = sorted({1, args.threads})

    print(f"Streaming top-K (K = {K}, rank max) + unit_activity, batches of {B} rows; C++ over the fixture "
          f"repeatedly for {args.seconds:g} s per figure, numpy (one thread) likewise")
    with tempfile.TemporaryDirectory() as tmp:
        for name, u, h, w in SHAPES:
            fx_path = os.path.join(tmp, f"fixture_{u}.bin")
            t0 = time.perf_counter()
            fx = make_fixture(fx_path, args.rows, u, h, w, seed=u)
            print()
            print(f"{name} [{args.rows}, {u}, {h}, {w}] float32 ({os.path.getsize(fx_path) / 1e6:.0f} MB, made in "
                  f"{time.perf_counter() - t0:.1f} s; {fx['capped']} capped units, {fx['dead']} dead)")
            acts, ids, thr = fx["acts"], fx["ids"], fx["thr"]
            values = u * h * w
            ranked = -np.sort(-acts.max(axis=(2, 3)), axis=0)
            print(f"  units whose K-th and (K+1)-th spatial maxima tie (the id decides who is kept): "
                  f"{int((ranked[K - 1] == ranked[K]).sum())} of {u}")

            # numpy: whole streaming passes until the budget is spent
            np_rate = {}
            for what in ("both", "topk"):
                passes, t0 = 0, time.perf_counter()
                while True:
                    got = numpy_stream(acts, ids, thr, activity=what == "both")
                    passes += 1
                    if time.perf_counter() - t0 >= args.seconds:
                        break
                np_rate[what] = passes * args.rows / (time.perf_counter() - t0)
                if what == "both":
                    ref = got

            # C++: equality at every thread count, then the rates
            eq = {}
            for t in threads:
                out = os.path.join(tmp, f"result_{u}_{t}.bin")
                run([bench, "check", fx_path, t, out])
                eq[t] = compare(fx, read_result(out), ref)
            cpp = {(t, what): float(run([bench, "rate", fx_path, t, args.seconds, what])[0])
                   for t in threads for what in ("both", "topk")}
            for t in threads:
                for what, title in (("both", "top-K + activity"), ("topk", "top-K only      ")):
                    r = cpp[(t, what)]
                    print(f"  shapebias {t} thread(s), {title}: {r:9.1f} images/s, {r * values / 1e6:7.1f} M "
                          f"values/s  -> {r / np_rate[what]:5.2f}x numpy")
            for what, title in (("both", "top-K + activity"), ("topk", "top-K only      ")):
                r = np_rate[what]
                print(f"  numpy argpartition,  {title}: {r:9.1f} images/s, {r * values / 1e6:7.1f} M values/s")
            for t in threads:
                topk, pos, act = eq[t]
                print(f"  {t} thread(s): top-K equal: {yes(topk)}; argmax positions equal: {yes(pos)}; "
                      f"activity (count above T, max) equal: {yes(act)}")
            print(f"  projected for {BRODEN_IMAGES:,} Broden images: shapebias {args.threads} thread(s) "
                  f"{BRODEN_IMAGES / cpp[(args.threads, 'both')]:.1f} s, numpy {BRODEN_IMAGES / np_rate['both']:.1f} s")

            # Peak memory: N and 4N rows, batches re-read from the file (the input does not grow)
            row = []
            for n in (args.memory_n, 4 * args.memory_n):
                hwm, secs, kept = run([bench, "memory", fx_path, n, args.threads])
                row.append(f"N = {n:5d}: {int(hwm) / 1024:6.1f} MiB ({float(secs):4.1f} s)")
            print(f"  peak memory (VmHWM, {args.threads} threads), top-K + activity: " + ";  ".join(row))
            print(f"    of which top-K state {int(kept) / 2**20:.1f} MiB (U x K x 32 B + slack), batch buffer "
                  f"{B * values * 4 / 2**20:.1f} MiB, batch scores {B * u * 8 / 2**20:.1f} MiB transient")
            del fx, acts, ref, got


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Total variation and streaming top-K through the Python bindings (`import shapebias`), side by side
with pure numpy doing the same work on the same arrays, in the same run: throughput in GB/s of
float32 activations and the ratio; then the cost of one call on a tiny batch.

  TV     numpy: per-map TV from np.diff, summed in float64, then the per-channel mean and variance
         over the batch (what TVAccumulator keeps); bindings: TVAccumulator.update.
  top-K  numpy: spatial max per row and unit, then per unit the running K best of (kept + new) by
         np.partition on a key of score and id (ties broken as in C++: higher score, then lower
         id); bindings: TopK.update. Both results are compared at the end.

Batches come from a pool larger than the caches, as a data loader's would. numpy runs on one thread;
the bindings at 1 and --threads threads.

  PYTHONPATH=build/bindings/python /usr/bin/python3 benchmarks/bindings_benchmark.py [--threads 2] [--seconds 2]

Prints every figure; asserts nothing but the agreement of the two top-K results.
"""
import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.append(os.path.join(os.path.dirname(HERE), "build", "bindings", "python"))  # after PYTHONPATH
import shapebias  # noqa: E402

TV_SHAPES = [("AlexNet conv1", (32, 64, 55, 55)), ("ResNet-50 layer1", (8, 256, 56, 56))]
TOPK_SHAPES = [("ResNet-50 layer4", (64, 2048, 7, 7)), ("conv 13x13", (64, 256, 13, 13))]
K = 49
POOL_BYTES = 384 << 20


def pool_of(shape, seed=0):
    rng = np.random.default_rng(seed)
    n = max(2, POOL_BYTES // (int(np.prod(shape)) * 4))
    return [rng.random(shape, dtype=np.float32) for _ in range(n)]


def rate(pool, seconds, step):
    """GB/s of the pool's arrays fed to step(batch, i) for about `seconds`."""
    step(pool[0], 0)  # warm up
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or done < 2:
        step(pool[done % len(pool)], done)
        done += 1
    return done * pool[0].nbytes / (time.perf_counter() - t0) / 1e9


def numpy_tv_step(x, _):
    tv = np.abs(np.diff(x, axis=2)).sum((2, 3), dtype=np.float64) + np.abs(np.diff(x, axis=3)).sum((2, 3), dtype=np.float64)
    tv.mean(0), tv.var(0, ddof=1)


class NumpyTopK:
    """Per unit the running K best rows by spatial max, by np.argpartition over kept + new on one
    uint64 key per row (order-preserving float32 bits of the score, then the id: ties broken as in
    C++, higher score then lower id; ids below 2^32)."""

    def __init__(self, units, k):
        self.k, self.key = k, np.empty((units, 0), np.uint64)

    def update(self, x, ids):
        s = x.reshape(x.shape[0], x.shape[1], -1).max(2).T + np.float32(0)  # [U, B]; + 0: no -0.0
        bits = s.view(np.uint32)
        up = np.where(bits >> 31, ~bits, bits | np.uint32(0x80000000))  # grows with the score
        key = ((~up).astype(np.uint64) << np.uint64(32)) | ids.astype(np.uint64)
        key = np.concatenate([self.key, key], 1)
        if key.shape[1] > self.k:
            key = np.partition(key, self.k - 1, axis=1)[:, :self.k]
        self.key = key

    def result(self):
        return (np.sort(self.key, axis=1) & np.uint64(0xFFFFFFFF)).astype(np.int64)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=2)
    args = ap.parse_args()
    threads = sorted({1, args.threads})
    print(f"shapebias {shapebias.__version__} from {os.path.dirname(shapebias.__file__)}; numpy {np.__version__}")

    for title, shape in TV_SHAPES:
        pool = pool_of(shape)
        ref = rate(pool, args.seconds, numpy_tv_step)
        line = f"TV    {title} {list(shape)}: numpy {ref:5.2f} GB/s"
        for t in threads:
            acc = shapebias.TVAccumulator(shape[1])
            got = rate(pool, args.seconds, lambda x, _: acc.update(x, threads=t))
            line += f" | bindings, {t} thread(s) {got:5.2f} GB/s = {got / ref:4.1f}x numpy"
        print(line, flush=True)

    for title, shape in TOPK_SHAPES:
        pool = pool_of(shape, seed=1)
        ids = [np.arange(i * shape[0], (i + 1) * shape[0], dtype=np.int64) for i in range(len(pool))]
        ref_acc = NumpyTopK(shape[1], K)
        ref = rate(pool, args.seconds, lambda x, i: ref_acc.update(x, ids[i % len(pool)]))
        line = f"top-K {title} {list(shape)}, K = {K}: numpy {ref:5.2f} GB/s"
        for t in threads:
            acc = shapebias.TopK(shape[1], K)
            got = rate(pool, args.seconds, lambda x, i: acc.update(x, ids=ids[i % len(pool)], threads=t))
            line += f" | bindings, {t} thread(s) {got:5.2f} GB/s = {got / ref:4.1f}x numpy"
        print(line, flush=True)
        # The same answer: one pass of each over the pool.
        a, b = shapebias.TopK(shape[1], K), NumpyTopK(shape[1], K)
        for x, i in zip(pool, ids):
            a.update(x, ids=i)
            b.update(x, i)
        same = np.array_equal(a.result()["id"], b.result())
        print(f"top-K {title}: bindings and numpy keep the same ids in the same order: {same}")
        if not same:
            sys.exit("top-K results differ")

    tiny = np.ones((1, 1, 2, 2), np.float32)
    acc = shapebias.TVAccumulator(1)
    calls, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < args.seconds:
        acc.update(tiny)
        calls += 1
    print(f"one call of TVAccumulator.update on [1, 1, 2, 2]: {(time.perf_counter() - t0) / calls * 1e6:.1f} us")


if __name__ == "__main__":
    main()

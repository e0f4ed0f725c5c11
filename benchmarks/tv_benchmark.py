#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Streaming TV throughput (benchmarks/bench_tv: shapebias::stats::tv_accumulator) in GB/s of float32
activations, on AlexNet conv1- and ResNet-50 layer1-shaped batches, side by side with the machine's
memory read bandwidth (measured by bench_tv in the same run) and a numpy reference (np.diff, the
usual way); then the peak memory of `shapebias tv` on a stream as the number of inputs grows.

  /usr/bin/python3 benchmarks/tv_benchmark.py [--threads 2] [--seconds 3] [--build build]

Prints every figure; asserts nothing.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.dirname(HERE)
FMNIST = "/usr/share/datasets/fashion-mnist"
SHAPES = [("AlexNet conv1", (32, 64, 55, 55)), ("ResNet-50 layer1", (8, 256, 56, 56))]


def numpy_tv_gbps(shape, seconds):
    """The numpy way: per-map TV of a batch from np.diff, over a pool of batches larger than the caches."""
    batch_bytes = int(np.prod(shape)) * 4
    pool = [np.random.default_rng(i).random(shape, dtype=np.float32) for i in range(max(2, (512 << 20) // batch_bytes))]
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        x = pool[done % len(pool)]
        tv = np.abs(np.diff(x, axis=2)).sum((2, 3), dtype=np.float64) + np.abs(np.diff(x, axis=3)).sum((2, 3), dtype=np.float64)
        tv.mean(0)
        done += 1
    return done * batch_bytes / (time.perf_counter() - t0) / 1e9


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=3)
    ap.add_argument("--build", default=os.path.join(SOURCE, "build"))
    args = ap.parse_args()
    subprocess.run(["cmake", "--build", args.build, "--target", "benchmarks"], check=True, capture_output=True)
    bench = os.path.join(args.build, "benchmarks", "bench_tv")
    sb = os.path.join(args.build, "tools", "shapebias")
    for title, shape in SHAPES:
        for threads in sorted({1, args.threads}):
            out = subprocess.run([bench, str(threads), str(args.seconds), *map(str, shape)], check=True,
                                 capture_output=True, text=True).stdout.split()
            tv, bw = float(out[0]), float(out[1])
            print(f"{title} {list(shape)}, {threads} thread(s): shapebias TV {tv:6.2f} GB/s, memory read "
                  f"{bw:6.2f} GB/s -> {tv / bw:.0%} of bandwidth")
        np_gbps = numpy_tv_gbps(shape, args.seconds)
        print(f"{title}: numpy np.diff TV {np_gbps:6.2f} GB/s (1 thread) -> shapebias at {args.threads} threads is "
              f"{tv / np_gbps:.1f}x numpy")
        sp = subprocess.run([bench, str(args.threads), str(args.seconds), *map(str, shape), "spectrum"], check=True,
                            capture_output=True, text=True).stdout.split()
        print(f"{title}: spectra (FFTW, radial profile and high-frequency fraction) {float(sp[0]):6.2f} GB/s, "
              f"{float(sp[2]):,.0f} maps/s")

    # Constant memory: `shapebias tv -` on a stream of N inputs (Fashion-MNIST CNN, 32x28x28 maps).
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, os.path.join(SOURCE, "scripts", "make_models.py"), tmp, "fashion_cnn"],
                       check=True, capture_output=True)
        model = os.path.join(tmp, "fashion_cnn.pt")
        for n in (1000, 4000, 10000):
            dump = subprocess.Popen([sb, "dump", model, FMNIST, "-l", "features.1", "--limit", str(n), "--quiet",
                                     "-o", "-"], stdout=subprocess.PIPE)
            tv = subprocess.run(["/usr/bin/time", "-f", "%M", sb, "tv", "-", "-@", str(args.threads)],
                                stdin=dump.stdout, capture_output=True, text=True, check=True)
            dump.wait()
            rss = int(tv.stderr.strip().splitlines()[-1])
            print(f"shapebias tv on a stream of {n:6d} inputs ({n * 32 * 28 * 28 * 4 / 1e6:6.1f} MB of activations): "
                  f"peak RSS {rss / 1024:.1f} MiB")


if __name__ == "__main__":
    main()

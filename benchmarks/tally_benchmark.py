#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""NetDissect tally and threshold-pass throughput (benchmarks/bench_tally: shapebias::stats::iou_tally
and quantile_sketch) against an independent numpy implementation of NetDissect-Lite's loop
(tests/tools/dissect_reference.py), side by side on the same data, in the same run (issue 6 part 8).

The fixture: AlexNet conv5-shaped activations [N, 256, 13, 13] (post-ReLU smooth fields plus
occasional strong blobs), 112x112 segmentations with 2 label layers (object/part/material-like
regions, colour-like regions) and up to 2 image-level labels (scene, texture), 518 labels in 6
categories. Thresholds per unit are chosen from the fixture so that max > T passes for ~8 % of
(image, unit) pairs ("sparse") or ~50 % ("dense"). Both sides tally the same images; the integer
tallies G, I, A_cat of C++ and numpy are compared exactly.

Build first (nothing is built here):
  cmake --build BUILD --target bench_tally
  /usr/bin/python3 benchmarks/tally_benchmark.py --build BUILD [--threads 2] [--seconds 3]

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
sys.path.insert(0, os.path.join(SOURCE, "tests", "tools"))
import dissect_reference as ref  # noqa: E402

BRODEN_IMAGES = 63305
U, H, W, SH, SW = 256, 13, 13, 112, 112
# (name, number of labels): labels are numbered 1.. in this order; primary category = its block
CATEGORIES = [("object", 200), ("part", 80), ("material", 30), ("color", 11), ("scene", 150), ("texture", 47)]
Y, S = 2, 2  # label layers and image-level label slots per image
PASS_SPARSE, PASS_DENSE = 0.08, 0.50


def label_blocks():
    first, blocks = 1, {}
    for name, k in CATEGORIES:
        blocks[name] = np.arange(first, first + k)
        first += k
    primary = np.zeros(first, np.int32)
    for c, (name, _) in enumerate(CATEGORIES):
        primary[blocks[name]] = c
    return blocks, primary


def make_fixture(path, n, seed=0):
    """Writes the fixture (format in benchmarks/bench_tally.cpp); returns its arrays."""
    rng = np.random.default_rng(seed)
    blocks, primary = label_blocks()
    acts = np.empty((n, U, H, W), np.float32)
    scale = rng.lognormal(0.0, 0.5, U)
    fire_p = rng.uniform(0.04, 0.2, U)  # how often a unit responds strongly
    yy, xx = np.mgrid[0:H, 0:W]
    for b in range(0, n, 64):
        k = min(64, n - b)
        z = rng.standard_normal((k, U, H + 2, W + 2))
        field = sum(z[:, :, i:i + H, j:j + W] for i in range(3) for j in range(3)) / 3  # smooth, unit variance
        fire = rng.random((k, U)) < fire_p
        cy, cx = rng.uniform(0, H - 1, (2, k, U))
        sig = rng.uniform(0.7, 2.5, (k, U))
        amp = rng.gamma(2.0, 1.5, (k, U)) * fire
        blob = amp[..., None, None] * np.exp(-((yy - cy[..., None, None]) ** 2 + (xx - cx[..., None, None]) ** 2)
                                             / (2 * sig[..., None, None] ** 2))
        acts[b:b + k] = (np.maximum(field - 1.0, 0) + blob) * scale[None, :, None, None]
    maxima = acts.max(axis=(2, 3))
    thr_sparse = np.quantile(maxima, 1 - PASS_SPARSE, axis=0).astype(np.float32)
    thr_dense = np.quantile(maxima, 1 - PASS_DENSE, axis=0).astype(np.float32)

    def zipf_pick(labels, size):
        p = 1.0 / np.arange(1, len(labels) + 1)
        return rng.choice(rng.permutation(labels), size=size, p=p / p.sum())

    py, px = np.mgrid[0:SH, 0:SW]
    pix = np.stack([py.ravel(), px.ravel()], 1).astype(np.float32)

    def voronoi(k):
        seeds = rng.uniform(0, SH, (k, 2)).astype(np.float32) * np.float32([1, SW / SH])
        stretch = rng.uniform(0.5, 2.0, 2).astype(np.float32)
        d = (((pix[None] - seeds[:, None]) * stretch) ** 2).sum(-1)
        return d.argmin(0).reshape(SH, SW)

    layers = np.zeros((n, Y, SH, SW), np.int32)
    image_labels = np.zeros((n, S), np.int32)
    stuff = np.concatenate([blocks["object"], blocks["part"], blocks["material"]])
    for i in range(n):
        k = int(rng.integers(3, 10))
        cells = zipf_pick(stuff, k)
        cells[rng.random(k) < 0.2] = 0  # unlabelled regions
        layers[i, 0] = cells[voronoi(k)]
        k = int(rng.integers(4, 13))
        layers[i, 1] = rng.choice(blocks["color"], k)[voronoi(k)]
        if rng.random() < 0.6:
            image_labels[i, 0] = zipf_pick(blocks["scene"], 1)[0]
        if rng.random() < 0.3:
            image_labels[i, 1] = zipf_pick(blocks["texture"], 1)[0]
    with open(path, "wb") as f:
        f.write(b"SBTALLY1")
        np.array([n, U, H, W, SH, SW, len(primary), len(CATEGORIES), Y, S], "<u8").tofile(f)
        for a in (thr_sparse, thr_dense, primary, acts, layers, image_labels):
            np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<"), copy=False).tofile(f)
    return dict(acts=acts, thr={"sparse": thr_sparse, "dense": thr_dense}, primary=primary, layers=layers,
                image_labels=image_labels)


def run(args, **kw):
    return subprocess.run([str(a) for a in args], check=True, capture_output=True, text=True, **kw).stdout.split()


def read_counts(path, L, C):
    c = np.fromfile(path, "<u8").astype(np.int64)
    return c[:L], c[L:L + U * L].reshape(U, L), c[L + U * L:].reshape(U, C)


def find_bench(build):
    for d in [build] if build else [os.path.join(SOURCE, "build"), "/tmp/build-bench"]:
        exe = os.path.join(d, "benchmarks", "bench_tally")
        if os.path.exists(exe):
            return exe
    sys.exit("bench_tally not found: build it first (cmake --build BUILD --target bench_tally) and pass --build BUILD")


def fmt_time(s):
    return f"{s:8.0f} s" if s < 120 else (f"{s / 60:8.1f} min" if s < 7200 else f"{s / 3600:8.2f} h")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", help="build directory holding benchmarks/bench_tally")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=3, help="timing budget per C++ tally measurement")
    ap.add_argument("--images", type=int, default=512, help="fixture images (the C++ side tallies all)")
    ap.add_argument("--numpy-images", type=int, default=200, help="images the numpy side tallies (the first ones)")
    ap.add_argument("--memory-n", type=int, default=1000, help="N for the peak-memory runs (N and 4N)")
    args = ap.parse_args()
    bench = find_bench(args.build)
    nn = min(args.numpy_images, args.images)
    threads = sorted({1, args.threads})
    L, C = len(label_blocks()[1]), len(CATEGORIES)

    with tempfile.TemporaryDirectory() as tmp:
        fx_path = os.path.join(tmp, "fixture.bin")
        t0 = time.perf_counter()
        fx = make_fixture(fx_path, args.images)
        print(f"fixture: {args.images} images, activations [{args.images}, {U}, {H}, {W}] float32, {Y} label layers "
              f"{SH}x{SW} + {S} image-level slots, {L - 1} labels in {C} categories "
              f"({os.path.getsize(fx_path) / 1e6:.0f} MB, made in {time.perf_counter() - t0:.1f} s)")
        maxima = fx["acts"].max(axis=(2, 3))
        images = [(fx["layers"][i], fx["image_labels"][i]) for i in range(nn)]
        rates = {}
        print()
        print(f"Tally (union rule lite): C++ over all {args.images} images repeatedly for {args.seconds:g} s; numpy "
              f"(Lite's per-image/per-unit loop) over the first {nn}, with PIL bilinear (Lite's imresize) and "
              f"with the bit-mirror of upsample_bilinear")
        for mode in ("sparse", "dense"):
            thr = fx["thr"][mode]
            frac_all = float((maxima > thr).mean())
            frac_np = float((maxima[:nn] > thr).mean())
            cpp = {}
            for t in threads:
                counts = os.path.join(tmp, f"counts_{mode}_{t}.bin")
                out = run([bench, "tally", fx_path, mode, "lite", t, args.seconds, nn, counts])
                cpp[t] = float(out[0])
            single = float(run([bench, "tally", fx_path, mode, "lite", args.threads, args.seconds, nn,
                                os.path.join(tmp, "single.bin"), "per-image"])[0])
            cpp_counts = read_counts(counts, L, C)
            np_rate, np_equal = {}, {}
            for name, up in (("PIL", ref.upsample_pil), ("mirror", ref.upsample)):
                t0 = time.perf_counter()
                got = ref.tally(fx["acts"][:nn], thr, images, L, fx["primary"], C, "lite", upsampler=up)
                np_rate[name] = nn / (time.perf_counter() - t0)
                np_equal[name] = all(np.array_equal(a, b) for a, b in zip(got, cpp_counts))
            base = max(np_rate.values())
            rates[mode] = dict(cpp=cpp, numpy=base)
            print(f"  {mode:6s}: max > T passes for {frac_all:.1%} of (image, unit) pairs ({frac_np:.1%} in the "
                  f"numpy subset); mean mask of a passing unit {mask_fraction(fx, mode, nn):.1%} of the image")
            for t in threads:
                print(f"          shapebias {t} thread(s): {cpp[t]:10.1f} images/s  -> {cpp[t] / base:6.1f}x numpy "
                      f"(update_images, batches of 64)")
            print(f"          shapebias {args.threads} thread(s): {single:10.1f} images/s  -> {single / base:6.1f}x numpy "
                  f"(update_image, image by image)")
            for name, r in np_rate.items():
                print(f"          numpy ({name:6s} upsampling): {r:8.1f} images/s; tallies equal: "
                      f"{'yes' if np_equal[name] else 'no'}")
        # The original union rule: equality only.
        counts = os.path.join(tmp, "counts_orig.bin")
        run([bench, "tally", fx_path, "sparse", "original", args.threads, 0, nn, counts])
        got = ref.tally(fx["acts"][:nn], fx["thr"]["sparse"], images, L, fx["primary"], C, "original",
                        upsampler=ref.upsample_pil)
        eq = all(np.array_equal(a, b) for a, b in zip(got, read_counts(counts, L, C)))
        print(f"  union rule original (sparse, {nn} images): tallies equal: {'yes' if eq else 'no'}")

        # Threshold pass: quantile_sketch vs a numpy QuantileVector-style sketch, batches of 64 images,
        # two passes over the fixture into one sketch (so most of the time is spent compacting).
        print()
        passes = 2
        nimg = passes * args.images
        print(f"Threshold pass (sketch of 24*1024 samples per unit, batches of 64 images, {nimg} images = "
              f"{nimg * H * W / 1e6:.2f} M values per unit):")
        sk = {}
        for t in threads:
            out = run([bench, "sketch", fx_path, t, passes, os.path.join(tmp, f"thr_{t}.bin")])
            sk[t] = (float(out[0]), float(out[1]))
        s = ref.NumpySketch(U)
        t0 = time.perf_counter()
        for _ in range(passes):
            for b in range(0, args.images, 64):
                s.update(fx["acts"][b:b + 64])
        secs = time.perf_counter() - t0
        np_sk = (nimg * U * H * W / secs, nimg / secs)
        rates["sketch"] = dict(cpp={t: v[1] for t, v in sk.items()}, numpy=np_sk[1])
        for t in threads:
            print(f"  shapebias {t} thread(s): {sk[t][0] / 1e6:8.1f} M values/s, {sk[t][1]:8.1f} images/s  -> "
                  f"{sk[t][0] / np_sk[0]:5.1f}x numpy")
        print(f"  numpy sketch:          {np_sk[0] / 1e6:8.1f} M values/s, {np_sk[1]:8.1f} images/s")
        pop = np.sort(np.moveaxis(fx["acts"], 1, 0).reshape(U, -1), axis=1)
        level = 994 / 999

        def rank_err(t):
            r = np.array([(np.searchsorted(pop[u], t[u], "left") + np.searchsorted(pop[u], t[u], "right")) / 2
                          for u in range(U)]) / pop.shape[1]
            return np.abs(r - level).max()

        print(f"  threshold rank error vs the exact population, worst unit: shapebias "
              f"{rank_err(np.fromfile(os.path.join(tmp, f'thr_{args.threads}.bin'), '<f8')):.2e}, numpy sketch "
              f"{rank_err(s.threshold()):.2e}")
        del pop

        # Peak memory: tally and sketch streaming N and 4N images (batches of 64 re-read from the file),
        # each alone and together.
        print()
        print(f"Peak memory streaming batches of 64 images from the fixture ({args.threads} threads), VmHWM:")
        for what in ("tally", "sketch", "both"):
            row = []
            for n in (args.memory_n, 4 * args.memory_n):
                hwm, secs = run([bench, "memory", fx_path, n, args.threads, what])
                row.append(f"N = {n:5d}: {int(hwm) / 1024:6.1f} MiB ({float(secs):4.1f} s)")
            print(f"  {'tally + sketch' if what == 'both' else what:14s}: " + ";  ".join(row))

    # Projection to Broden.
    print()
    print(f"Projected time for the {BRODEN_IMAGES:,} Broden images (one 256-unit layer):")
    for what in ("sparse", "dense", "sketch"):
        r = rates[what]
        title = {"sparse": "tally, sparse", "dense": "tally, dense", "sketch": "threshold pass"}[what]
        cpp = ", ".join(f"{t} thread(s) {fmt_time(BRODEN_IMAGES / v)}" for t, v in r["cpp"].items())
        print(f"  {title:15s}: shapebias {cpp}; numpy {fmt_time(BRODEN_IMAGES / r['numpy'])}")


def mask_fraction(fx, mode, nn):
    """Mean |M|/(sh·sw) over passing (image, unit) pairs of the numpy subset (sampled)."""
    thr = fx["thr"][mode]
    idx = np.argwhere(fx["acts"][:nn].max(axis=(2, 3)) > thr)[:400]
    if len(idx) == 0:
        return 0.0
    return float(np.mean([(ref.upsample(fx["acts"][i, k], SH, SW) > thr[k]).mean() for i, k in idx]))


if __name__ == "__main__":
    main()

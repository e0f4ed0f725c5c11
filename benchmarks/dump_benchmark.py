#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Dump throughput on ResNet-50 (random weights, 224x224, the paper's five taps), side by side with
(a) a bare LibTorch forward pass of the same batches, (b) the usual Python way (forward hooks,
.numpy(), h5py append) and (c) Python's own bare forward pass; then peak memory as N doubles.

  /usr/bin/python3 benchmarks/dump_benchmark.py [--images 160] [--batch 16] [--threads 2] [--repeat 3]
                                                [--build build]

Prints every figure; asserts nothing. Needs Debian's python3-torch, -torchvision, -h5py, -pil.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

# Every side runs with the OpenMP wait policy that the shapebias tools default to (passive; see
# tools/common/plugin.cpp), so the comparisons measure code, not the policy. Set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

import h5py
import numpy as np
import torch
import torchvision
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.dirname(HERE)
TAPS = ["conv1", "layer1", "layer2", "layer3", "layer4"]


def sh(*cmd, **kw):
    return subprocess.run([str(c) for c in cmd], check=True, capture_output=True, text=True, **kw)


def make_images(folder, n, size=224, classes=1000):
    """n JPEG images of size×size (smooth gradients plus noise) and a list file of 'path label'."""
    rng = np.random.default_rng(0)
    os.makedirs(folder, exist_ok=True)
    lines = []
    for i in range(n):
        y, x = np.mgrid[0:size, 0:size] * (224 / size)
        img = np.stack([x, y, (x + y) // 2], -1) + rng.normal(0, 30, (size, size, 3))
        path = os.path.join(folder, f"{i:05d}.jpg")
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path, quality=90)
        lines.append(f"{path} {i % classes}\n")
    lst = os.path.join(folder, "list.txt")
    with open(lst, "w") as f:
        f.writelines(lines)
    return lst


def dump(sb, model, lst, out, args, limit=0):
    """Runs `shapebias dump`; returns (loop seconds, peak RSS KiB). The loop time comes from the
    store's provenance; for a stream (out "-", sent to /dev/null) it is the wall time less start-up,
    taken as that of a one-image dump."""
    cmd = ["/usr/bin/time", "-f", "%M %e", sb, "dump", model, lst, "-l", ",".join(TAPS), "--batch-size", args.batch,
           "-@", args.threads, "--limit", limit, "--quiet", "-o", out]
    with open(os.devnull, "w") as null:
        p = subprocess.run([str(c) for c in cmd], check=True, stdout=null, stderr=subprocess.PIPE, text=True)
    rss, wall = p.stderr.strip().splitlines()[-1].split()
    if out == "-":
        return float(wall), int(rss)
    with h5py.File(out) as f:
        rec = json.loads(f["provenance/log"].asstr()[-1])
    return rec["timing"]["seconds"], int(rss)


def python_way(model_path, inputs_h5, out, batch, hooks):
    """Eager torchvision ResNet-50 with the same weights on the same batches; hooks + h5py if asked."""
    m = torchvision.models.resnet50()
    m.load_state_dict(torch.jit.load(model_path).state_dict())
    m.eval()
    with h5py.File(inputs_h5) as f:
        x_all = torch.from_numpy(f["activations/input"][:])
    grabbed = {}
    if hooks:
        mods = dict(m.named_modules())
        for name in TAPS:
            mods[name].register_forward_hook(lambda mod, i, o, name=name: grabbed.__setitem__(name, o.detach().numpy().copy()))
    h5 = h5py.File(out, "w") if hooks else None
    with torch.no_grad():
        m(x_all[:1])  # warm-up
        t = time.perf_counter()
        for s in range(0, len(x_all), batch):
            m(x_all[s:s + batch])
            if hooks:
                for name, a in grabbed.items():
                    if name not in h5:
                        h5.create_dataset(name, shape=(0, *a.shape[1:]), maxshape=(None, *a.shape[1:]),
                                          dtype="f4", chunks=(1, *a.shape[1:]))
                    d = h5[name]
                    d.resize(d.shape[0] + len(a), axis=0)
                    d[-len(a):] = a
        secs = time.perf_counter() - t
    if h5:
        h5.close()
    return secs


def setup(ap):
    """Common options; builds the benchmark targets. Returns (args, shapebias, bench_forward)."""
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--build", default=os.path.join(SOURCE, "build"))
    args = ap.parse_args()
    sh("cmake", "--build", args.build, "--target", "benchmarks")
    torch.set_num_threads(args.threads)
    return args, os.path.join(args.build, "tools", "shapebias"), os.path.join(args.build, "benchmarks", "bench_forward")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=160)  # 10 batches: the executor's warm-up amortised
    ap.add_argument("--batch", type=int, default=16)
    args, sb, fwd = setup(ap)
    n = args.images
    with tempfile.TemporaryDirectory() as tmp:
        sh(sys.executable, os.path.join(SOURCE, "scripts", "make_models.py"), tmp, "resnet50")
        model = os.path.join(tmp, "resnet50.pt")
        lst = make_images(os.path.join(tmp, "img"), n)
        inputs = os.path.join(tmp, "inputs.h5")
        sh(sb, "dump", model, lst, "-l", "input", "--quiet", "-o", inputs)
        startup = min(dump(sb, model, lst, "-", args, limit=1)[0] for _ in range(3))
        runs = {k: [] for k in ["bare", "stream", "store", "py_bare", "py_hooks"]}
        for _ in range(args.repeat):  # interleaved, so drifts in machine speed hit every variant alike
            runs["bare"].append(float(sh(fwd, model, inputs, args.batch, args.threads).stdout.split()[0]))
            runs["stream"].append(dump(sb, model, lst, "-", args)[0] - startup)
            runs["store"].append(dump(sb, model, lst, os.path.join(tmp, "d.h5"), args)[0])
            runs["py_bare"].append(python_way(model, inputs, None, args.batch, hooks=False))
            runs["py_hooks"].append(python_way(model, inputs, os.path.join(tmp, "py.h5"), args.batch, hooks=True))
        t = {k: float(np.median(v)) for k, v in runs.items()}
        # Peak memory at M and 2M inputs, M large enough for the pipeline to reach its steady state
        # (up to two batches queued between each pair of stages).
        m = max(n, 128)
        big = make_images(os.path.join(tmp, "big"), 2 * m)
        rss_n = dump(sb, model, big, os.path.join(tmp, "m1.h5"), args, limit=m)[1]
        rss_2n = dump(sb, model, big, os.path.join(tmp, "m2.h5"), args, limit=2 * m)[1]

    per_img_mb = sum({"conv1": 64 * 112 * 112, "layer1": 256 * 56 * 56, "layer2": 512 * 28 * 28,
                      "layer3": 1024 * 14 * 14, "layer4": 2048 * 7 * 7}.values()) * 4 / 2**20
    print(f"ResNet-50, random weights, {n} JPEG images 224x224, batch {args.batch}, {args.threads} threads, "
          f"taps {','.join(TAPS)} ({per_img_mb:.1f} MiB of activations per image)")
    print(f"  medians of {args.repeat} interleaved runs")
    print(f"  bare LibTorch forward (C++)           {n / t['bare']:7.2f} img/s")
    print(f"  shapebias dump -> stream, /dev/null   {n / t['stream']:7.2f} img/s  "
          f"overhead {100 * (t['stream'] / t['bare'] - 1):+.1f}% (taps, decoding, framing; start-up {startup:.2f} s removed)")
    print(f"  shapebias dump -> HDF5 store          {n / t['store']:7.2f} img/s  "
          f"overhead {100 * (t['store'] / t['bare'] - 1):+.1f}% (the same, plus writing {per_img_mb * n:.0f} MiB)")
    print(f"  Python bare forward (eager)           {n / t['py_bare']:7.2f} img/s")
    print(f"  Python hooks + .numpy() + h5py        {n / t['py_hooks']:7.2f} img/s  "
          f"overhead {100 * (t['py_hooks'] / t['py_bare'] - 1):+.1f}% over its own bare forward (inputs pre-decoded)")
    print(f"  dump -> HDF5 vs Python hooks -> HDF5: {t['py_hooks'] / t['store']:.2f}x the throughput")
    print(f"  peak RSS of dump: N={m}: {rss_n / 1024:.0f} MiB, N={2 * m}: {rss_2n / 1024:.0f} MiB "
          f"(ratio {rss_2n / rss_n:.2f})")


if __name__ == "__main__":
    main()

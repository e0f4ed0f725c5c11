#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""How far `dump` activations move with batch size and thread count: each model is dumped at batch 1
on 1 thread and at batch 32 on 2 threads; ids, labels and order must be identical, and the float
differences are LibTorch's own (kernels choose other blockings for other shapes and threads).

  /usr/bin/python3 benchmarks/determinism.py [--build build]
"""
import argparse
import os
import subprocess
import sys
import tempfile

import h5py
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.dirname(HERE)
FMNIST = "/usr/share/datasets/fashion-mnist"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(SOURCE, "build"))
    args = ap.parse_args()
    sb = os.path.join(args.build, "tools", "shapebias")
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, os.path.join(SOURCE, "scripts", "make_models.py"), tmp, "fashion_cnn",
                        "resnet50"], check=True, capture_output=True)
        sys.path.insert(0, HERE)
        from dump_benchmark import make_images
        lst = make_images(os.path.join(tmp, "img"), 32)
        cases = [("fashion_cnn", FMNIST, ["--limit", "256"], "features.0,features.3,features.6,logits"),
                 ("resnet50", lst, [], "conv1,layer1,layer2,layer3,layer4,logits")]
        for name, data, extra, taps in cases:
            outs = []
            for bs, th in [(1, 1), (32, 2)]:
                out = os.path.join(tmp, f"{name}-{bs}-{th}.h5")
                subprocess.run([sb, "dump", os.path.join(tmp, f"{name}.pt"), data, *extra, "-l", taps, "--quiet",
                                "--batch-size", str(bs), "-@", str(th), "-o", out], check=True)
                outs.append(out)
            with h5py.File(outs[0]) as a, h5py.File(outs[1]) as b:
                for k in ["index/input_id", "index/label"]:
                    assert (a[k][:] == b[k][:]).all(), k
                for t in taps.split(","):
                    x, y = a[f"activations/{t}"][:], b[f"activations/{t}"][:]
                    d = np.abs(x - y)
                    print(f"{name:12s} {t:11s} max |diff| {d.max():.2e}  max |diff| / max |x| "
                          f"{d.max() / np.abs(x).max():.2e}  identical values {100 * (d == 0).mean():5.1f}%")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Start-up time of calls that do no model work (`--help`, `dump --help`, `view` of a small store),
against `version`, which loads the LibTorch plugin. Median of 20 runs each; prints, asserts nothing.

  /usr/bin/python3 benchmarks/startup.py [--build build]
"""
import argparse
import os
import statistics
import subprocess
import tempfile
import time

SOURCE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(SOURCE, "build"))
    sb = os.path.join(ap.parse_args().build, "tools", "shapebias")
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["/usr/bin/python3", os.path.join(SOURCE, "scripts", "make_models.py"), tmp], check=True,
                       capture_output=True)
        small = os.path.join(tmp, "small.h5")
        subprocess.run([sb, "dump", os.path.join(tmp, "fashion_cnn.pt"), "/usr/share/datasets/fashion-mnist",
                        "-l", "features.6,logits", "--limit", "100", "--quiet", "-o", small], check=True)
        for args in (["--help"], ["dump", "--help"], ["view", small], ["view", "--json", small], ["version"]):
            times = []
            for _ in range(20):
                t = time.perf_counter()
                subprocess.run([sb, *args], check=True, stdout=subprocess.DEVNULL)
                times.append(time.perf_counter() - t)
            print(f"shapebias {' '.join(a if a != small else 'small.h5' for a in args):24s} "
                  f"median {1000 * statistics.median(times):6.1f} ms   max {1000 * max(times):6.1f} ms")


if __name__ == "__main__":
    main()

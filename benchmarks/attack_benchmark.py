#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""PGD throughput of `shapebias attack` side by side with the same PGD in Python PyTorch
(tests/tools/attack_reference.py, torchattacks' op order), and against the limit: steps × a bare
LibTorch forward+backward pass of the same batches (benchmarks/bench_forward fwdbwd). Two models:
the Fashion-MNIST CNN (batch 256, 10 steps) and a ResNet-18 with 10 classes at 64×64 (batch 64, at
each of --resnet-steps).

An attack that reports the adversarial predictions needs one forward pass more than its steps (the
clean logits come with the first step's): the best it can reach of the limit is
steps × fwdbwd / (steps × fwdbwd + fwd), printed as the ceiling, with fwd measured in the same run.

  /usr/bin/python3 benchmarks/attack_benchmark.py [--threads 2] [--repeat 3] [--train-limit 10000]
                                                  [--train-epochs 2] [--resnet-steps 5,10] [--build build]

Prints every figure; asserts nothing. Also times the training of a standard and a PGD-trained
built-in Fashion-MNIST CNN (--train-limit images, --train-epochs epochs; --train-limit 0 skips it).
"""
import argparse
import json
import os
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

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.dirname(HERE)
FMNIST = "/usr/share/datasets/fashion-mnist"
sys.path.insert(0, os.path.join(SOURCE, "tests", "tools"))
sys.path.insert(0, os.path.join(SOURCE, "scripts"))
sys.path.insert(0, HERE)
from attack_reference import attack as reference  # noqa: E402
from dump_benchmark import make_images, setup, sh  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--train-limit", type=int, default=10000)
    ap.add_argument("--train-epochs", type=int, default=2)
    ap.add_argument("--resnet-steps", default="5,10", help="PGD step counts of the ResNet-18 case, comma-separated")
    args, sb, fwd = setup(ap)
    with tempfile.TemporaryDirectory() as tmp:
        sh(sys.executable, os.path.join(SOURCE, "scripts", "make_models.py"), tmp, "fashion_cnn", "resnet18_10")
        lst = make_images(os.path.join(tmp, "img64"), 512, size=64, classes=10)
        from make_models import FashionCNN
        resnet = torchvision.models.resnet18(num_classes=10)
        cases = [("Fashion-MNIST CNN, 1x28x28", "fashion_cnn", FMNIST, 4096, 256, 10, FashionCNN())]
        cases += [("ResNet-18 (10 classes), 3x64x64", "resnet18_10", lst, 512, 64, int(k), resnet)
                  for k in args.resnet_steps.split(",")]
        for title, name, data, n, batch, steps, eager in cases:
            model = os.path.join(tmp, f"{name}.pt")
            eager.load_state_dict(torch.jit.load(model).state_dict())
            eager.eval()
            inputs = os.path.join(tmp, f"{name}-in.h5")
            sh(sb, "dump", model, data, "-l", "input", "--limit", n, "--quiet", "-o", inputs)
            with h5py.File(inputs) as f:
                x_all = torch.from_numpy(f["activations/input"][:])
                y_all = torch.from_numpy(f["index/label"][:].astype(np.int64))
            attack_args = ["--no-random-start", "--steps", steps, "--eps", "0.03", "--alpha", "0.01"]
            t = {"ours": [], "python": [], "limit": [], "fwd": []}
            for _ in range(args.repeat):
                out = os.path.join(tmp, "adv.h5")
                sh(sb, "attack", model, data, "--limit", n, "--batch-size", batch, "-@", args.threads, "--quiet",
                   *attack_args, "-o", out)
                with h5py.File(out) as f:
                    t["ours"].append(json.loads(f["provenance/log"].asstr()[-1])["timing"]["seconds"])
                t0 = time.perf_counter()
                for s in range(0, n, batch):
                    reference(eager, x_all[s:s + batch], y_all[s:s + batch], 0.0, 1.0, eps=0.03, alpha=0.01, steps=steps)
                t["python"].append(time.perf_counter() - t0)
                one = float(sh(fwd, model, inputs, batch, args.threads, "fwdbwd").stdout.split()[0])
                t["limit"].append(steps * one)
                t["fwd"].append(float(sh(fwd, model, inputs, batch, args.threads, "fwd").stdout.split()[0]))
            m = {k: float(np.median(v)) for k, v in t.items()}
            print(f"{title}: PGD L-inf {steps} steps, {n} images, batch {batch}, {args.threads} threads "
                  f"(medians of {args.repeat})")
            print(f"  shapebias attack   {n / m['ours']:8.1f} img/s   (whole pipeline: decode, clean and final "
                  f"predictions, checks, HDF5)")
            print(f"  Python PyTorch     {n / m['python']:8.1f} img/s   -> shapebias is {m['python'] / m['ours']:.2f}x Python")
            ceiling = m["limit"] / (m["limit"] + m["fwd"])
            print(f"  limit: {steps} x bare fwd+bwd {n / m['limit']:8.1f} img/s   -> shapebias reaches "
                  f"{m['limit'] / m['ours']:.2f} of it (target >= 0.95: {'met' if m['limit'] / m['ours'] >= 0.95 else 'NOT met'})")
            print(f"  ceiling with the final forward pass (bare fwd {n / m['fwd']:.1f} img/s): {ceiling:.2f} of the limit; "
                  f"shapebias reaches {(m['limit'] + m['fwd']) / m['ours']:.2f} of steps x fwd+bwd + 1 fwd")

        for adv in ["none", "pgd"] if args.train_limit else []:
            out = os.path.join(tmp, f"train-{adv}")
            t0 = time.perf_counter()
            sh(sb, "train", FMNIST, "--split", "train", "--arch", "fashion-cnn", "--limit", args.train_limit,
               "--epochs", args.train_epochs, "--adversarial", adv, "--eps", "0.1", "--alpha", "0.025", "--steps", "7",
               "-@", args.threads, "--quiet", "-o", out)
            secs = time.perf_counter() - t0
            with open(os.path.join(out, "log.csv")) as f:
                last = f.read().strip().splitlines()[-1].split(",")
            print(f"train fashion-cnn (width 32), {args.train_limit} images x {args.train_epochs} epochs, "
                  f"adversarial={adv} (PGD L-inf eps 0.1, 7 steps): {secs:.0f} s; held-out clean "
                  f"{100 * float(last[4]):.1f}%, PGD {100 * float(last[5]):.1f}%")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Scripts models to TorchScript with seeded random weights, for tests, benchmarks and the demo.

  fashion_cnn  a small CNN for 1x28x28 Fashion-MNIST input (10 classes)
  alexnet, googlenet, resnet50   torchvision architectures with random weights (no download)
  resnet18_10  torchvision ResNet-18 with 10 classes (for 64x64 attack benchmarks)

Usage: make_models.py OUT_DIR [NAME ...]   (default: fashion_cnn)
Needs Debian's python3-torch and python3-torchvision; run with /usr/bin/python3.
"""
import os
import sys

import torch
from torch import nn


class FashionCNN(nn.Module):
    """Three conv stages and a linear classifier; taps: features.0/3/6 (convs), classifier.2."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(inplace=True))
        self.classifier = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, classes))

    def forward(self, x):
        return self.classifier(self.features(x))


def build(name: str) -> nn.Module:
    import torchvision.models as tvm
    if name == "fashion_cnn":
        return FashionCNN()
    if name == "alexnet":
        return tvm.alexnet(weights=None)
    if name == "googlenet":
        return tvm.googlenet(weights=None, aux_logits=False, init_weights=True)
    if name == "resnet50":
        return tvm.resnet50(weights=None)
    if name == "resnet18_10":
        return tvm.resnet18(weights=None, num_classes=10)
    raise SystemExit(f"make_models.py: unknown model '{name}'")


def main() -> None:
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    for name in sys.argv[2:] or ["fashion_cnn"]:
        torch.manual_seed(0)
        model = build(name).eval()
        path = os.path.join(out, f"{name}.pt")
        torch.jit.script(model).save(path + ".tmp")
        os.replace(path + ".tmp", path)
        print(path)


if __name__ == "__main__":
    main()

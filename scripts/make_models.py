#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Scripts models to TorchScript, with seeded random weights (tests, benchmarks, the demo) or with
trained weights (torchvision state dicts, MadryLab robustness checkpoints: docs/imagenet.md).

  fashion_cnn  a small CNN for 1x28x28 Fashion-MNIST input (10 classes)
  alexnet, googlenet, resnet50   torchvision architectures, random weights (no download) or --weights
  resnet18_10  torchvision ResNet-18 with 10 classes (for 64x64 attack benchmarks)

Usage: make_models.py OUT_DIR [NAME ...]   (default: fashion_cnn; writes OUT_DIR/NAME.pt)
       make_models.py OUT_DIR NAME ... [--weights FILE ...] [--normalize-inside] [--seed N] [--as STEM ...]

--weights FILE ...  one per NAME: a torchvision state dict (e.g. torch.hub's alexnet-owt-7be5be79.pth;
                a DataParallel 'module.' prefix is dropped), or a robustness-library checkpoint
                ({'model': ...} with 'module.model.*' and 'module.normalizer.new_mean/new_std'). A
                robustness model keeps its input normalisation inside, as the library's wrapper does:
                clamp to [0,1], then (x - new_mean) / new_std. GoogLeNet's auxiliary heads are dropped
                (unused at inference); with torchvision weights it gets transform_input=True, as
                torchvision's googlenet(weights=...) does.
--normalize-inside  add ImageNet mean/std normalisation in front (no clamp, as torchvision's
                Normalize), to models without one: they then take [0,1] images, like a robustness
                model. The added module is 'normalizer'; every other layer keeps its torchvision path
                (features.1, layer4, inception4b).
--seed N        seed of the random weights (default 0)
--as STEM ...   one per NAME: write OUT_DIR/STEM.pt (default NAME)
Needs Debian's python3-torch and python3-torchvision; run with /usr/bin/python3.
"""
import argparse
import os

import torch
from torch import nn
import torchvision.models as tvm

PROG = "make_models.py"
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


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


class InputNormalize(nn.Module):
    """(x - new_mean) / new_std, after clamping to [0,1] when `clamp` (the robustness library's
    InputNormalize, with its buffer names and [3, 1, 1] shapes)."""
    clamp: bool

    def __init__(self, mean, std, clamp: bool):
        super().__init__()
        self.register_buffer("new_mean", torch.as_tensor(mean, dtype=torch.float32).reshape(3, 1, 1))
        self.register_buffer("new_std", torch.as_tensor(std, dtype=torch.float32).reshape(3, 1, 1))
        self.clamp = clamp

    def forward(self, x):
        if self.clamp:
            x = torch.clamp(x, 0, 1)
        return (x - self.new_mean) / self.new_std


# The torchvision classes with the normaliser called first; their own modules keep their paths.
class NormalizedAlexNet(tvm.AlexNet):
    def forward(self, x):
        x = self.avgpool(self.features(self.normalizer(x)))
        return self.classifier(torch.flatten(x, 1))


class NormalizedResNet(tvm.ResNet):
    def forward(self, x):
        return self._forward_impl(self.normalizer(x))


class NormalizedGoogLeNet(tvm.GoogLeNet):
    def forward(self, x):
        return self._forward(self._transform_input(self.normalizer(x)))[0]


NORMALIZED = {tvm.AlexNet: NormalizedAlexNet, tvm.ResNet: NormalizedResNet, tvm.GoogLeNet: NormalizedGoogLeNet}


def build(name: str, transform_input: bool = False) -> nn.Module:
    if name == "fashion_cnn":
        return FashionCNN()
    if name == "alexnet":
        return tvm.alexnet(weights=None)
    if name == "googlenet":
        return tvm.googlenet(weights=None, aux_logits=False, init_weights=True, transform_input=transform_input)
    if name == "resnet50":
        return tvm.resnet50(weights=None)
    if name == "resnet18_10":
        return tvm.resnet18(weights=None, num_classes=10)
    raise SystemExit(f"{PROG}: unknown model '{name}'")


def read_weights(path: str):
    """(state dict, (mean, std) of a robustness checkpoint's normaliser or None)."""
    try:
        obj = torch.load(path, map_location="cpu")
    except Exception as e:  # torch.load raises many types for a file that is not a checkpoint
        raise SystemExit(f"{PROG}: {path}: cannot read the weights: {e}")
    if isinstance(obj, dict) and isinstance(obj.get("model", obj.get("state_dict")), dict):
        obj = obj.get("model", obj.get("state_dict"))
    if not isinstance(obj, dict) or not all(torch.is_tensor(v) for v in obj.values()):
        raise SystemExit(f"{PROG}: {path}: not a state dict or robustness checkpoint")
    sd = {k[len("module."):] if k.startswith("module.") else k: v for k, v in obj.items()}
    if not any(k.startswith("model.") for k in sd):
        return sd, None
    if "normalizer.new_mean" not in sd or "normalizer.new_std" not in sd:
        raise SystemExit(f"{PROG}: {path}: a robustness checkpoint without normalizer.new_mean/new_std")
    norm = (sd["normalizer.new_mean"], sd["normalizer.new_std"])
    return {k[len("model."):]: v for k, v in sd.items() if k.startswith("model.")}, norm


def assemble(name: str, sd, norm, normalize_inside: bool, seed: int = 0, source: str = "the weights") -> nn.Module:
    """The model NAME in eval mode: random weights from `seed`, or the state dict `sd`; with a
    normaliser in front when `norm` (a robustness checkpoint's mean and std) or `normalize_inside`."""
    torch.manual_seed(seed)
    # torchvision's GoogLeNet weights expect transform_input (googlenet(weights=...) sets it).
    model = build(name, transform_input=name == "googlenet" and sd is not None and norm is None)
    if sd is not None:
        sd = {k: v for k, v in sd.items() if not k.startswith(("aux1.", "aux2."))}
        missing, unexpected = model.load_state_dict(sd, strict=False)
        if missing or unexpected:
            raise SystemExit(f"{PROG}: {source}: not {name} weights (missing {missing[:3]}, unexpected {unexpected[:3]})")
    if norm is not None or normalize_inside:
        if type(model) not in NORMALIZED:
            raise SystemExit(f"{PROG}: {name}: normalisation inside is for alexnet, googlenet and resnet50")
        with_normalizer(model, *(norm or (IMAGENET_MEAN, IMAGENET_STD)), clamp=norm is not None)
    return model.eval()


def with_normalizer(model: nn.Module, mean, std, clamp: bool) -> nn.Module:
    """A torchvision AlexNet, GoogLeNet or ResNet that calls an InputNormalize 'normalizer' first."""
    model.__class__ = NORMALIZED[type(model)]
    model.add_module("normalizer", InputNormalize(mean, std, clamp))
    return model


def main() -> None:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out")
    p.add_argument("names", nargs="*", default=["fashion_cnn"])
    p.add_argument("--weights", nargs="+")
    p.add_argument("--normalize-inside", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--as", dest="stems", nargs="+")
    a = p.parse_args()
    for opt, values in (("--weights", a.weights), ("--as", a.stems)):
        if values and len(values) != len(a.names):
            p.error(f"{opt} takes one value per model NAME ({len(a.names)}), got {len(values)}")
    os.makedirs(a.out, exist_ok=True)
    for i, name in enumerate(a.names):
        weights = a.weights[i] if a.weights else None
        sd, norm = read_weights(weights) if weights else (None, None)
        model = assemble(name, sd, norm, a.normalize_inside, a.seed, weights)
        path = os.path.join(a.out, f"{a.stems[i] if a.stems else name}.pt")
        torch.jit.script(model).save(path + ".tmp")
        os.replace(path + ".tmp", path)
        print(path)


if __name__ == "__main__":
    main()

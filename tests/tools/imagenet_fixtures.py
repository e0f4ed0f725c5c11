#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Tiny stand-ins for the inputs of the paper's ImageNet study (docs/imagenet.md), in the real
on-disk formats, so that the documented commands run end to end on this machine.

OUT/imagenet/val/<wnid>/ILSVRC2012_val_<n>.JPEG   ImageNet val as an image folder: 1000 class folders
                                                  (stand-in WNIDs n00000000 … n00000999, in class
                                                  index order), images in a few of them
OUT/imagenet/masks/<wnid>/<stem>.png              silhouette masks of the val images (nonzero = object)
OUT/stylized-imagenet/val/<wnid>/<name>.JPEG      Stylized-ImageNet: the val images' names, restyled
OUT/imagenet-c/<corruption>/<severity>/<wnid>/…   ImageNet-C: 224×224 corrupted val images in 3 sets
                                                  (2 corruptions), each with all 1000 class folders
OUT/cue-conflict/<shape>/<shape><n>-<texture><m>.png   Geirhos' stimuli: 224×224 PNG, 16 categories
OUT/broden1_224/                                  a Broden-format probe set, 6 images at 224
                                                  (scripts/make_probe.py)
OUT/checkpoints/<net>.pth                         S: a torchvision state dict (GoogLeNet's with aux heads)
OUT/checkpoints/<net>_robust.ckpt                 R: a robustness-library checkpoint ({'model': ...},
                                                  'module.normalizer.*', 'module.model.*',
                                                  'module.attacker.*'; GoogLeNet-R with aux heads)
OUT/manifest.json                                 labels, and which images each model gets right

Weights are random (S seed 0, R seed 1, per network) except the last linear layer, which is
fitted to the val images' penultimate features: a model's row of label y gives the logit 10 on the
image i it should get right and 0 on the other val images (least squares, minimum norm), and the
labels of the images it should get wrong have a row of zeros and bias −20 (other classes: tiny
random rows, bias −10). So S gets images CORRECT_S right, R gets CORRECT_R right, and their
ImageNet-CL is known in advance. The generator checks that PyTorch (torchvision preprocessing, the
models as scripts/make_models.py builds them) predicts exactly that, with a relative margin of at
least 5%, which a one-level difference in resizing cannot overturn.

Usage: imagenet_fixtures.py OUT   (run with /usr/bin/python3: torch, torchvision, numpy, PIL)
"""
import json
import os
import subprocess
import sys

import numpy as np
import torch
import torchvision.models as tvm
import torchvision.transforms as T
from PIL import Image, ImageDraw

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
sys.path.insert(0, os.path.join(SOURCE, "scripts"))
import make_models  # noqa: E402

NETS = ("alexnet", "googlenet", "resnet50")
CLASSES = 1000
WNIDS = [f"n{i:08d}" for i in range(CLASSES)]
SIZES = [(320, 240), (240, 300), (288, 288), (256, 341), (300, 256), (352, 264), (260, 260), (240, 320)]
LABELS = [3, 17, 152, 283, 404, 511, 817, 998]  # ascending: the folder order is the data set order
CORRECT_S = [0, 1, 2, 3, 4, 5]  # the images (data set ids) S gets right
CORRECT_R = [0, 1, 2, 3, 4, 6]  # and R: ImageNet-CL = ids 0..4
CORRUPTIONS = {"gaussian_noise": {1: 0.08, 2: 0.12}, "contrast": {1: 0.4}}
CUE = [("airplane", "bicycle"), ("bear", "elephant"), ("cat", "clock"), ("dog", "truck"),
       ("bottle", "knife"), ("car", "oven"), ("chair", "bird"), ("cat", "cat")]  # the last: excluded


def scene(rng, w, h):
    """A smooth colour field, a filled ellipse (the object) and a few bars; returns (RGB, mask)."""
    y, x = np.mgrid[0:h, 0:w] / max(w, h)
    c = rng.uniform(0, 255, (3, 3))
    img = c[0] + c[1] * x[..., None] + c[2] * y[..., None] * 0.5
    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    for _ in range(3):
        x0, y0 = rng.uniform(0, w), rng.uniform(0, h)
        draw.line((x0, y0, x0 + rng.uniform(-w, w) / 2, y0 + rng.uniform(-h, h) / 2),
                  fill=tuple(int(v) for v in rng.integers(0, 256, 3)), width=int(rng.integers(4, 16)))
    mask = Image.new("L", (w, h), 0)
    box = (w * rng.uniform(0.15, 0.35), h * rng.uniform(0.15, 0.35), w * rng.uniform(0.65, 0.85), h * rng.uniform(0.65, 0.85))
    ImageDraw.Draw(mask).ellipse(box, fill=255)
    pil.paste(tuple(int(v) for v in rng.integers(0, 256, 3)), mask=mask)
    noisy = np.asarray(pil, np.float32) + rng.normal(0, 6, (h, w, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)), mask


def stripes(rng, w, h):
    y, x = np.mgrid[0:h, 0:w]
    a, p = rng.uniform(0, np.pi), rng.uniform(6, 20)
    on = np.mod((x * np.cos(a) + y * np.sin(a)) / p, 1.0) < 0.5
    c0, c1 = rng.integers(0, 256, (2, 3))
    return np.where(on[..., None], c1, c0).astype(np.float32)


def center_224(img):
    return T.CenterCrop(224)(T.Resize(256)(img))


def write_images(out, rng):
    """The val folder, masks, Stylized-ImageNet, ImageNet-C and cue-conflict stimuli; the val images."""
    val, masks = os.path.join(out, "imagenet", "val"), os.path.join(out, "imagenet", "masks")
    stylized = os.path.join(out, "stylized-imagenet", "val")
    for wnid in WNIDS:
        os.makedirs(os.path.join(val, wnid))
    images = []
    for i, ((w, h), label) in enumerate(zip(SIZES, LABELS)):
        img, mask = scene(rng, w, h)
        name = f"ILSVRC2012_val_{i + 1:08d}"
        rel = os.path.join(WNIDS[label], name)
        img.save(os.path.join(val, rel + ".JPEG"), quality=90)
        for folder in (masks, stylized):
            os.makedirs(os.path.join(folder, WNIDS[label]), exist_ok=True)
        mask.save(os.path.join(masks, rel + ".png"))
        styled = 0.45 * np.asarray(img, np.float32) + 0.55 * stripes(rng, w, h)
        Image.fromarray(styled.astype(np.uint8)).save(os.path.join(stylized, rel + ".JPEG"), quality=90)
        images.append((rel, Image.open(os.path.join(val, rel + ".JPEG")).convert("RGB")))
    for corruption, severities in CORRUPTIONS.items():
        for sev, level in severities.items():
            root = os.path.join(out, "imagenet-c", corruption, str(sev))
            for wnid in WNIDS:
                os.makedirs(os.path.join(root, wnid))
            for rel, img in images:
                x = np.asarray(center_224(img), np.float32) / 255
                if corruption == "gaussian_noise":
                    x = x + rng.normal(0, level, x.shape)
                else:
                    x = (x - x.mean()) * level + x.mean()
                Image.fromarray(np.clip(x * 255 + 0.5, 0, 255).astype(np.uint8)).save(
                    os.path.join(root, rel + ".JPEG"), quality=85)
    counts = {}
    for shape, texture in CUE:
        counts[shape] = counts.get(shape, 0) + 1
        os.makedirs(os.path.join(out, "cue-conflict", shape), exist_ok=True)
        img, mask = scene(rng, 224, 224)
        x = np.where(np.asarray(mask)[..., None] > 0, stripes(rng, 224, 224), 255.0)
        Image.fromarray(x.astype(np.uint8)).save(
            os.path.join(out, "cue-conflict", shape, f"{shape}{counts[shape]}-{texture}{counts[shape] + 1}.png"))
    return images


def trunk(net, seed):
    """Random torchvision weights, GoogLeNet with its auxiliary heads (as checkpoints hold them)."""
    torch.manual_seed(seed)
    if net == "googlenet":
        return tvm.googlenet(weights=None, aux_logits=True, init_weights=True)
    return make_models.build(net)


def head_name(net):
    return "classifier.6" if net == "alexnet" else "fc"


def features(model, net, x):
    """The input of the last linear layer for a batch of [0,1] images."""
    got = []
    layer = model.classifier[6] if net == "alexnet" else model.fc
    hook = layer.register_forward_hook(lambda m, i, o: got.append(i[0].detach()))
    with torch.no_grad():
        model(x)
    hook.remove()
    return got[0].double()


def interpolating_head(f, correct):
    """Weights [1000, d] and bias [1000] with logits exactly `scale` for each `correct` image's
    label on that image and 0 for the other images (the minimum-norm solution on their centred
    features); the other images' label rows are zero with bias −2·scale; every other class a tiny
    random row with bias −scale."""
    scale = 10.0
    mu, sigma = f.mean(0), f.std()
    a = torch.cat([(f - mu) / sigma, torch.ones(len(f), 1, dtype=f.dtype)], 1)
    sol = torch.linalg.pinv(a) @ (scale * torch.eye(len(f), dtype=f.dtype))   # [d + 1, images]
    g = torch.Generator().manual_seed(2)
    w = torch.randn(CLASSES, f.shape[1], generator=g, dtype=torch.float64) * 1e-3 / f.norm(dim=1).mean()
    b = torch.full((CLASSES,), -scale, dtype=torch.float64)
    for i, label in enumerate(LABELS):
        if i in correct:
            w[label] = sol[:-1, i] / sigma
            b[label] = sol[-1, i] - w[label] @ mu
        else:
            w[label], b[label] = 0, -2 * scale
    return w.float(), b.float()


def robustness_checkpoint(sd):
    """A robustness-library checkpoint: DataParallel(AttackerModel) keys, ImageNet normaliser."""
    mean = torch.tensor(make_models.IMAGENET_MEAN).reshape(3, 1, 1)
    std = torch.tensor(make_models.IMAGENET_STD).reshape(3, 1, 1)
    model = {"module.normalizer.new_mean": mean, "module.normalizer.new_std": std,
             "module.attacker.normalize.new_mean": mean, "module.attacker.normalize.new_std": std}
    for k, v in sd.items():
        model["module.model." + k] = v
        model["module.attacker.model." + k] = v
    return {"model": model, "optimizer": {"state": {}, "param_groups": []}, "schedule": None, "epoch": 90}


def make_checkpoints(out, images):
    ckpt = os.path.join(out, "checkpoints")
    os.makedirs(ckpt)
    x = torch.stack([T.ToTensor()(center_224(img)) for _, img in images])
    label = torch.tensor(LABELS)
    expect = {}
    for net in NETS:
        for who, seed, correct in (("S", 0, CORRECT_S), ("R", 1, CORRECT_R)):
            model = trunk(net, seed).eval()
            sd = model.state_dict()
            # The model as scripts/make_models.py scripts it from this checkpoint: S with
            # --normalize-inside (and GoogLeNet's transform_input, for torchvision weights), R with
            # the robustness normaliser, which clamps.
            if net == "googlenet" and who == "S":
                model.transform_input = True
            make_models.with_normalizer(model, make_models.IMAGENET_MEAN, make_models.IMAGENET_STD, clamp=who == "R")
            f = features(model, net, x)
            w, b = interpolating_head(f, correct)
            sd[head_name(net) + ".weight"], sd[head_name(net) + ".bias"] = w, b
            logits = f.float() @ w.T + b
            right = (logits.argmax(1) == label).tolist()
            own = logits[torch.arange(len(LABELS)), label]
            other = logits.scatter(1, label[:, None], float("-inf")).max(1).values
            margin = (own - other).abs() / own.abs().clamp(min=1)   # how far from flipping right/wrong
            if [i for i, r in enumerate(right) if r] != correct or margin.min() < 0.05:
                raise SystemExit(f"imagenet_fixtures.py: {net} {who}: correct {right}, margins {margin.tolist()}")
            expect[f"{net}_{who}"] = right
            if who == "S":
                torch.save(sd, os.path.join(ckpt, f"{net}.pth"))
            else:
                torch.save(robustness_checkpoint(sd), os.path.join(ckpt, f"{net}_robust.ckpt"))
    return expect


def main():
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(8)
    images = write_images(out, rng)
    subprocess.run([sys.executable, os.path.join(SOURCE, "scripts", "make_probe.py"), "--out",
                    os.path.join(out, "broden1_224"), "--count", "6", "--image-size", "224"], check=True)
    expect = make_checkpoints(out, images)
    manifest = {"wnids": "n00000000 … n00000999 (class index order)", "images": [rel for rel, _ in images],
                "labels": LABELS, "correct_top1": expect, "imagenet_c": {c: sorted(s) for c, s in CORRUPTIONS.items()},
                "cue_conflict": [f"{s}-{t}" for s, t in CUE]}
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)


if __name__ == "__main__":
    main()

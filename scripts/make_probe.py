#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Writes a small, seeded probe set in the on-disk format of Broden (NetDissect's broden1_224), so
that a NetDissect-Lite-style reader, and `shapebias dissect`, read it as they read real Broden.

Categories, in this order (Broden's order has color first too):
  color    pixel-level, two label layers: every pixel labelled with its palette colour (11 Broden
           colour names) and with its intensity band (dark, medium, light: the luma of the
           noiseless image, Y = 0.299 R + 0.587 G + 0.114 B, in [0, 100), [100, 170), [170, 255])
  object   pixel-level: the silhouette of a Fashion-MNIST test item (10 class names)
  texture  image-level: banded, chequered, dotted, striped, zigzagged (DTD names), as a label number
           in the index.csv cell, like Broden's DTD images

About half the images are object images: a Fashion-MNIST test item (test split, a seeded order)
upscaled bilinearly to the whole image and tinted with one palette colour over a uniform background
of another. With v in [0, 1] the upscaled intensity, the noiseless image is
background·(1 − a) + tint·a with a = clip((v − 0.1) / 0.2, 0, 1). The object mask is where the tint
has any weight, v > OBJECT_THRESHOLD = 0.1 (intensity above 25.5 of 255); the colour label is the
tint where a ≥ 0.5 (v ≥ COLOR_THRESHOLD = 0.2) and the background elsewhere, i.e. the nearer of the
two palette colours of the blend.
The other images are texture images: the whole image filled with a two-colour procedural texture of
seeded frequency, angle and phase; the colour label is the colour of the pattern at the pixel.
Labels are computed at image resolution from the generator's own (noiseless) maps and sampled to the
segmentation size by nearest neighbour at pixel centres; the JPEG gets mild Gaussian noise.
Only labels that occur are listed, numbered densely (categories in order, labels of a category
contiguous: colours alphabetically then the bands dark, medium, light; objects in Fashion-MNIST
class order; textures alphabetically).

Output (written into OUT.partial and renamed to OUT at the end):
  OUT/index.csv, category.csv, label.csv, c_color.csv, c_object.csv, c_texture.csv
  OUT/images/probe/probe_NNNNNN.jpg (JPEG quality 95), probe_NNNNNN_color.png,
      probe_NNNNNN_intensity.png (the colour category's second layer), probe_NNNNNN_object.png
  OUT/provenance.json
Segmentation PNGs are 8-bit RGB with label = R + 256·G, B = 0, 0 = unlabelled.

Usage: make_probe.py --out DIR [--count 200] [--image-size 224] [--seg-size 112] [--seed 1]
                     [--fashion-mnist /usr/share/datasets/fashion-mnist] [--val-fraction 0.0]
Run with /usr/bin/python3 (numpy, Pillow).
"""
import argparse
import csv
import gzip
import hashlib
import json
import os
import shlex
import shutil
import sys

import numpy as np
from PIL import Image

VERSION = "2"
PROG = "make_probe.py"
CATEGORIES = ("color", "object", "texture")

# Broden colour names, alphabetical, with the sRGB value drawn for each.
PALETTE = (
    ("black", (0, 0, 0)), ("blue", (40, 70, 220)), ("brown", (130, 80, 40)),
    ("green", (40, 160, 60)), ("grey", (128, 128, 128)), ("orange", (250, 140, 0)),
    ("pink", (250, 150, 190)), ("purple", (130, 50, 160)), ("red", (220, 30, 30)),
    ("white", (255, 255, 255)), ("yellow", (250, 220, 40)),
)
# Intensity bands (colour labels of a second colour layer): name, lowest luma; up to the next band's.
BANDS = (("dark", 0.0), ("medium", 100.0), ("light", 170.0))
LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R BT.601, as PIL's convert("L")
# Fashion-MNIST classes in label order (T-shirt/top -> t-shirt, ankle boot -> ankle-boot).
CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
           "ankle-boot")
TEXTURES = ("banded", "chequered", "dotted", "striped", "zigzagged")
SYNONYMS = {"grey": "gray", "t-shirt": "top;tee shirt", "ankle-boot": "boot",
            "chequered": "checkered", "zigzagged": "zigzag"}

OBJECT_THRESHOLD = 0.1   # object mask: upscaled intensity v > 0.1 (of 1.0), where the tint weight a > 0
COLOR_THRESHOLD = 0.2    # tint colour label where v >= 0.2, i.e. tint weight a >= 0.5
BLEND_WIDTH = 2 * (COLOR_THRESHOLD - OBJECT_THRESHOLD)  # a = clip((v - 0.1) / 0.2, 0, 1)
NOISE_SIGMA = 4.0        # Gaussian noise added to the JPEG's pixels (the labels stay noiseless)
JPEG_QUALITY = 95        # with 4:4:4 chroma (no subsampling), so colours stay put at small sizes


class Failure(Exception):
    """A run-time failure: one line on stderr, exit status 1."""


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, like the shapebias tools
        sys.stderr.write(f"{PROG}: {message} (see --help)\n")
        sys.exit(2)


def parse_args(argv):
    p = Parser(prog=PROG, description=__doc__.split("\n\n")[0],
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output folder (must not exist or be empty)")
    p.add_argument("--count", type=int, default=200, help="number of images (default 200)")
    p.add_argument("--image-size", type=int, default=224, help="image height = width (default 224)")
    p.add_argument("--seg-size", type=int, default=None,
                   help="segmentation height = width, at most the image size (default: half the "
                        "image size, 112 at 224)")
    p.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    p.add_argument("--fashion-mnist", default="/usr/share/datasets/fashion-mnist",
                   help="folder with t10k-images-idx3-ubyte[.gz] and t10k-labels-idx1-ubyte[.gz]")
    p.add_argument("--val-fraction", type=float, default=0.0,
                   help="fraction of images (seeded choice) with split 'val' (default 0.0)")
    a = p.parse_args(argv)
    if a.seg_size is None:
        a.seg_size = max(1, a.image_size // 2)
    if a.count < 1:
        p.error(f"--count must be at least 1, got {a.count}")
    if a.image_size < 4:
        p.error(f"--image-size must be at least 4, got {a.image_size}")
    if not 1 <= a.seg_size <= a.image_size:
        p.error(f"--seg-size must be between 1 and the image size {a.image_size}, got {a.seg_size}")
    if not 0.0 <= a.val_fraction <= 1.0:
        p.error(f"--val-fraction must be in [0, 1], got {a.val_fraction}")
    if a.seed < 0:
        p.error(f"--seed must be non-negative, got {a.seed}")
    return a


# ----------------------------------------------------------------------------- Fashion-MNIST

def read_idx(folder, stem, ndim):
    """Reads an IDX file (gzipped or not); returns (array, path, sha256)."""
    for name in (stem + ".gz", stem):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            break
    else:
        raise Failure(f"Fashion-MNIST file {os.path.join(folder, stem)}[.gz] not found")
    try:
        with open(path, "rb") as f:
            raw = f.read()
        sha = hashlib.sha256(raw).hexdigest()
        data = gzip.decompress(raw) if path.endswith(".gz") else raw
    except (OSError, EOFError) as e:
        raise Failure(f"cannot read {path}: {e}")
    magic = int.from_bytes(data[:4], "big") if len(data) >= 4 else 0
    if magic != 0x0800 + ndim:
        raise Failure(f"{path}: not an IDX file of {ndim} dimension(s) of uint8 (magic {magic:#x})")
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    off = 4 + 4 * ndim
    if len(data) != off + int(np.prod(dims)):
        raise Failure(f"{path}: size does not match its header {dims}")
    return np.frombuffer(data, np.uint8, offset=off).reshape(dims), path, sha


# ----------------------------------------------------------------------------- textures

def rotated(n, angle):
    """Pixel-centre coordinates of an n×n image, rotated by angle: (u, v), in pixels."""
    c = np.arange(n, dtype=np.float32) + 0.5
    y, x = c[:, None], c[None, :]
    ca, sa = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    return x * ca + y * sa, -x * sa + y * ca


def texture_pattern(kind, n, rng):
    """A boolean n×n two-colour pattern of the given kind, with seeded frequency, angle, phase."""
    angle = rng.uniform(0, np.pi)
    u, v = rotated(n, angle)
    # Periods as a number of cycles per image width, at least 4 px per cycle.
    def period(lo, hi):
        hi = max(lo, min(hi, n / 4.0))
        return n / rng.uniform(lo, hi)
    if kind == "banded":       # 1.5 to 3 wide bands per image
        p = period(1.5, 3.0)
        return np.mod(u / p + rng.uniform(), 1.0) < 0.5
    if kind == "striped":      # 5 to 14 stripes per image, duty 0.3 to 0.7
        p = period(5.0, 14.0)
        return np.mod(u / p + rng.uniform(), 1.0) < rng.uniform(0.3, 0.7)
    if kind == "chequered":    # 3 to 8 squares per image
        p = period(3.0, 8.0)
        return (np.floor(u / p + rng.uniform()) + np.floor(v / p + rng.uniform())) % 2 == 0
    if kind == "dotted":       # a lattice of 4 to 10 dots per image, radius 0.2 to 0.35 of the pitch
        p = period(4.0, 10.0)
        fu = np.mod(u / p + rng.uniform(), 1.0) - 0.5
        fv = np.mod(v / p + rng.uniform(), 1.0) - 0.5
        return fu * fu + fv * fv < rng.uniform(0.2, 0.35) ** 2
    if kind == "zigzagged":    # stripes displaced by a triangle wave along them
        p = period(4.0, 9.0)
        q = p * rng.uniform(1.0, 2.5)           # zigzag wavelength along the stripes
        amp = p * rng.uniform(0.5, 1.2)          # zigzag amplitude across them
        tri = np.abs(np.mod(v / q + rng.uniform(), 1.0) - 0.5) * 2.0
        return np.mod((u + amp * tri) / p + rng.uniform(), 1.0) < 0.5
    raise AssertionError(kind)


# ----------------------------------------------------------------------------- generation

def upscale(item, n):
    """A 28×28 uint8 item, bilinearly upscaled to n×n, as float32 in [0, 1]."""
    big = Image.fromarray(item).resize((n, n), Image.BILINEAR)
    return np.asarray(big, dtype=np.float32) / 255.0


def plan(args, fm_labels):
    """Decides every image's kind, colours, source item and split (all from the seed)."""
    rng = np.random.default_rng([args.seed, 0])
    n = args.count
    kinds = np.array(["object"] * ((n + 1) // 2) + ["texture"] * (n // 2))
    rng.shuffle(kinds)
    order = rng.permutation(len(fm_labels))            # Fashion-MNIST test items, seeded order
    tex_order = []
    while len(tex_order) < n:                            # every texture once per round
        tex_order.extend(rng.permutation(len(TEXTURES)).tolist())
    n_val = int(round(n * args.val_fraction))
    val = np.zeros(n, bool)
    val[rng.choice(n, n_val, replace=False)] = True
    images, next_item, next_tex = [], 0, 0
    for i in range(n):
        c0, c1 = rng.choice(len(PALETTE), 2, replace=False).tolist()
        im = {"kind": str(kinds[i]), "colors": (c0, c1), "split": "val" if val[i] else "train"}
        if im["kind"] == "object":
            im["item"] = int(order[next_item % len(order)])
            next_item += 1
        else:
            im["texture"] = tex_order[next_tex]
            next_tex += 1
        images.append(im)
    return images


def render(im, n, rng, fm_images, fm_labels):
    """The image (uint8 n×n×3, with noise) and its noiseless label maps at image resolution:
    colour as a palette index, intensity band as a band index, object as a class index or -1."""
    pal = np.array([rgb for _, rgb in PALETTE], np.float32)
    c0, c1 = im["colors"]
    if im["kind"] == "object":
        v = upscale(fm_images[im["item"]], n)
        a = np.clip((v - OBJECT_THRESHOLD) / BLEND_WIDTH, 0.0, 1.0)[..., None]
        rgb = pal[c0] * (1.0 - a) + pal[c1] * a
        color = np.where(v >= COLOR_THRESHOLD, c1, c0).astype(np.int16)
        obj = np.where(v > OBJECT_THRESHOLD, int(fm_labels[im["item"]]), -1).astype(np.int16)
    else:
        pat = texture_pattern(TEXTURES[im["texture"]], n, rng)
        rgb = np.where(pat[..., None], pal[c1], pal[c0])
        color = np.where(pat, c1, c0).astype(np.int16)
        obj = None
    band = (np.digitize(rgb @ LUMA, [b[1] for b in BANDS[1:]]) + len(PALETTE)).astype(np.int16)
    rgb = rgb + rng.standard_normal(rgb.shape, dtype=np.float32) * np.float32(NOISE_SIGMA)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8), color, band, obj


def encode_png(path, labels):
    """Writes a label map (int) as 8-bit RGB: R = label % 256, G = label // 256, B = 0."""
    rgb = np.zeros(labels.shape + (3,), np.uint8)
    rgb[..., 0] = labels & 0xFF
    rgb[..., 1] = (labels >> 8) & 0xFF
    Image.fromarray(rgb, "RGB").save(path, optimize=False)


def fmt_cov(x):
    """Coverage with a decimal point and no exponent (NetDissect-Lite reads ^\\d+\\.\\d*$)."""
    s = f"{x:.6f}".rstrip("0")
    return s + "0" if s.endswith(".") else s


def write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)


def generate(args, out):
    fm_images, img_path, img_sha = read_idx(args.fashion_mnist, "t10k-images-idx3-ubyte", 3)
    fm_labels, lab_path, lab_sha = read_idx(args.fashion_mnist, "t10k-labels-idx1-ubyte", 1)
    if fm_images.shape[1:] != (28, 28) or len(fm_images) != len(fm_labels) or len(fm_labels) == 0:
        raise Failure(f"{img_path}: expected N×28×28 images matching {lab_path}, got {fm_images.shape}")
    if fm_labels.max() >= len(CLASSES):
        raise Failure(f"{lab_path}: label {fm_labels.max()} is not a Fashion-MNIST class (0..9)")

    n, s = args.image_size, args.seg_size
    # Nearest neighbour at pixel centres: segmentation pixel j samples image pixel floor((j+.5)·n/s).
    near = np.minimum(n - 1, ((np.arange(s) + 0.5) * n / s).astype(np.int64))
    images = plan(args, fm_labels)
    os.makedirs(os.path.join(out, "images", "probe"))

    # Pass 1: draw every image (JPEG written now); keep its small local label maps.
    maps = []
    for i, im in enumerate(images):
        rng = np.random.default_rng([args.seed, 1, i])
        rgb, color, band, obj = render(im, n, rng, fm_images, fm_labels)
        im["name"] = f"probe/probe_{i + 1:06d}"
        Image.fromarray(rgb, "RGB").save(os.path.join(out, "images", im["name"] + ".jpg"),
                                         quality=JPEG_QUALITY, subsampling=0)
        color = color[np.ix_(near, near)]
        band = band[np.ix_(near, near)]
        obj = None if obj is None else obj[np.ix_(near, near)]
        if obj is not None and not (obj >= 0).any():
            obj = None  # the silhouette vanished at segmentation size: no object layer
        maps.append((color, band, obj))

    # Which labels occur; dense global numbering in category order.
    used = {
        "color": sorted({int(c) for color, band, _ in maps for m in (color, band) for c in np.unique(m)}),
        "object": sorted({int(c) for _, _, obj in maps if obj is not None for c in np.unique(obj) if c >= 0}),
        "texture": sorted({im["texture"] for im in images if im["kind"] == "texture"}),
    }
    names = {"color": [p[0] for p in PALETTE] + [b[0] for b in BANDS], "object": list(CLASSES),
             "texture": list(TEXTURES)}
    number = {}   # (category, local index) -> global number
    labels = []   # [number, name, category]
    for cat in CATEGORIES:
        for local in used[cat]:
            number[cat, local] = len(labels) + 1
            labels.append((len(labels) + 1, names[cat][local], cat))
    lut = {cat: np.zeros(len(names[cat]) + 1, np.int64) for cat in ("color", "object")}
    for (cat, local), num in number.items():
        if cat in lut:
            lut[cat][local] = num   # index -1 (unlabelled) stays 0

    # Pass 2: segmentation PNGs with global numbers; tallies; index rows.
    freq = np.zeros(len(labels) + 1, np.int64)
    pixels = np.zeros(len(labels) + 1, np.int64)   # pixel-level: labelled pixels
    whole = np.zeros(len(labels) + 1, np.int64)    # image-level: images
    cat_freq = dict.fromkeys(CATEGORIES, 0)
    index_rows = []
    for im, (color, band, obj) in zip(images, maps):
        cells = dict.fromkeys(CATEGORIES, "")
        for cat, layer, local in (("color", "color", color), ("color", "intensity", band), ("object", "object", obj)):
            if local is None:
                continue
            seg = lut[cat][local]
            png = im["name"] + f"_{layer}.png"
            encode_png(os.path.join(out, "images", png), seg)
            cat_freq[cat] += not cells[cat]
            cells[cat] += (";" if cells[cat] else "") + png
            counts = np.bincount(seg.ravel(), minlength=len(labels) + 1)
            counts[0] = 0
            pixels += counts
            freq += counts > 0
        if im["kind"] == "texture":
            num = number["texture", im["texture"]]
            cells["texture"] = str(num)
            whole[num] += 1
            freq[num] += 1
            cat_freq["texture"] += 1
        index_rows.append([im["name"] + ".jpg", im["split"], n, n, s, s] + [cells[c] for c in CATEGORIES])
    coverage = pixels / float(s * s) + whole

    write_csv(os.path.join(out, "index.csv"), ["image", "split", "ih", "iw", "sh", "sw", *CATEGORIES],
              index_rows)
    cat_rows = []
    for cat in CATEGORIES:
        nums = [num for num, _, c in labels if c == cat]
        cat_rows.append([cat, min(nums, default=0), max(nums, default=0), len(nums), cat_freq[cat]])
    write_csv(os.path.join(out, "category.csv"), ["name", "first", "last", "count", "frequency"], cat_rows)
    write_csv(os.path.join(out, "label.csv"), ["number", "name", "category", "frequency", "coverage", "syns"],
              [[num, name, f"{cat}({freq[num]})", freq[num], fmt_cov(coverage[num]), SYNONYMS.get(name, "")]
               for num, name, cat in labels])
    for cat in CATEGORIES:
        rows = [[0, 0, "-", 0, "0.0"]]
        for num, name, c in labels:
            if c == cat:
                rows.append([len(rows), num, name, freq[num], fmt_cov(coverage[num])])
        write_csv(os.path.join(out, f"c_{cat}.csv"), ["code", "number", "name", "frequency", "coverage"], rows)

    kinds = [im["kind"] for im in images]
    provenance = {
        "generator": "scripts/make_probe.py",
        "version": VERSION,
        "command": " ".join(shlex.quote(a) for a in [sys.argv[0] or PROG] + args.argv),
        "seed": args.seed,
        "count": args.count,
        "object_images": kinds.count("object"),
        "texture_images": kinds.count("texture"),
        "val_images": sum(im["split"] == "val" for im in images),
        "image_size": [n, n],
        "seg_size": [s, s],
        "categories": list(CATEGORIES),
        "labels": len(labels),
        "object_threshold": OBJECT_THRESHOLD,
        "color_threshold": COLOR_THRESHOLD,
        "noise_sigma": NOISE_SIGMA,
        "jpeg_quality": JPEG_QUALITY,
        "palette": {name: list(rgb) for name, rgb in PALETTE},
        "intensity_bands": {"luma": LUMA.tolist(), "lowest": {name: lo for name, lo in BANDS}},
        "fashion_mnist": {
            "path": os.path.abspath(args.fashion_mnist),
            "files": {os.path.basename(img_path): img_sha, os.path.basename(lab_path): lab_sha},
            "split": "test",
            "items": [im["item"] for im in images if im["kind"] == "object"],
        },
    }
    with open(os.path.join(out, "provenance.json"), "w") as f:
        json.dump(provenance, f, indent=2)
        f.write("\n")
    return len(labels)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    args.argv = argv
    out = os.path.normpath(args.out)
    partial = out + ".partial"
    try:
        if os.path.exists(out) and not (os.path.isdir(out) and not os.listdir(out)):
            raise Failure(f"--out {args.out} exists and is not an empty folder; refusing to overwrite it")
        try:
            if os.path.isdir(partial) and not os.path.islink(partial):
                shutil.rmtree(partial)      # left over by a killed run
            elif os.path.lexists(partial):
                os.remove(partial)
            os.makedirs(partial)
            generate(args, partial)
            if os.path.isdir(out) and not os.listdir(out):
                os.rmdir(out)
            os.rename(partial, out)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
    except OSError as e:
        sys.stderr.write(f"{PROG}: cannot write {e.filename or out}: {e.strerror or e}\n")
        return 1
    except Failure as e:
        sys.stderr.write(f"{PROG}: {e}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

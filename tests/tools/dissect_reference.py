# SPDX-License-Identifier: MIT
"""An independent numpy reference for NetDissect-Lite's dissection, written from peers.md §5.2 (and
its §8 addendum), not copied from any project:

  read_probe     a Broden-format probe directory (index.csv, category.csv, label.csv, c_<cat>.csv,
                 images/*.png), primary categories as Lite computes them, rows without data dropped
  thresholds     the four exact-regime tie variants of Lite's readout at level 994/999
  upsample       pixel-centre bilinear with edge clamping, float32, with exactly the operation order
                 of shapebias::stats::upsample_bilinear (include/shapebias/stats/tally.hpp), so bit-equal
  upsample_pil   the same resize through PIL (Lite's imresize(mode='F')), the independent cross-check
  tally          G[L], I[U, L], A_cat[U, C] as exact integers, structured like Lite's loop (per image,
                 per unit, skip when max <= T, upsample, mask, np.bincount), "lite" or "original" union
  iou, best      dataset-level IoU and the best label per unit (lowest label on ties; dead if IoU 0)
  NumpySketch    a QuantileVector-style sketch (24·1024 samples per unit, vectorised over units) for
                 benchmarks/tally_benchmark.py

The tally is also the Python baseline of benchmarks/tally_benchmark.py, so it stays the plain
per-image/per-unit loop (with per-size constants such as the upsampling taps cached).

CLI:  dissect_reference.py probe DIR [--categories object,color]     summary of a probe
      dissect_reference.py dissect DIR ACTS.npy [--rule lite] [--top 0.005]
          ACTS.npy: float [N, U, h, w], one row per kept probe row; prints each unit's best label
"""
import argparse
import csv
import functools
import os
import sys
from dataclasses import dataclass, field

import numpy as np

LEVEL = 994 / 999  # Lite's readout element int(1000·(1 − 0.005) − 1) of a 1000-point readout


# ----------------------------------------------------------------------------------------------
# Probe (Broden format)

@dataclass
class Probe:
    labels: list            # label names, index = global label number; 0 is '-'
    categories: list        # selected category names, in category.csv order
    primary: np.ndarray     # int [L]: primary category (index into categories) of every label
    images: list            # per kept row: (layers [list of int32 sh×sw], image_labels [list of int], (sh, sw))
    rows: np.ndarray        # int: the kept rows' indices into index.csv
    files: list = field(default_factory=list)  # per kept row: the 'image' column


def _split_cell(cell):
    """A category cell: ';'-separated items; all-digit items are label numbers, others file names."""
    items = [s for s in (cell or "").split(";") if s != ""]
    return [int(s) if s.isdigit() else s for s in items]


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def decode_segmentation(path):
    """A Broden segmentation PNG: label number R + 256·G per pixel, int32 [sh, sw]."""
    from PIL import Image
    with Image.open(path) as im:
        rgb = np.asarray(im.convert("RGB"))
    return rgb[..., 0].astype(np.int32) + 256 * rgb[..., 1].astype(np.int32)


def read_probe(directory, categories=None):
    """Reads a Broden-format directory. `categories`: names to select (None: all of category.csv).
    Images whose cells are empty in every selected category are dropped (Lite's index_has_any_data)."""
    cat_rows = _read_csv(os.path.join(directory, "category.csv"))
    names = [r["name"] for r in cat_rows]
    if categories is not None:
        wanted = set(categories)
        unknown = wanted - set(names)
        if unknown:
            raise ValueError(f"categories not in category.csv: {sorted(unknown)}")
        names = [n for n in names if n in wanted]

    label_rows = _read_csv(os.path.join(directory, "label.csv"))
    n_labels = max([int(r["number"]) for r in label_rows] + [0]) + 1
    labels = [""] * n_labels
    labels[0] = "-"
    for r in label_rows:
        labels[int(r["number"])] = r["name"]

    # Per category: the coverage of each global label's code there (0 when the label has no code).
    coverage = np.zeros((len(names), n_labels))
    has_code = np.zeros((len(names), n_labels), dtype=bool)
    for ic, cat in enumerate(names):
        for r in _read_csv(os.path.join(directory, f"c_{cat}.csv")):
            number, code = int(r["number"]), int(r["code"])
            if code != 0 and number < n_labels:
                has_code[ic, number] = True
                coverage[ic, number] = float(r["coverage"])
    primary = np.zeros(n_labels, dtype=np.int64)
    for i in range(n_labels):
        # max over (coverage or 0, ic): on equal coverage the later category wins
        primary[i] = max((coverage[ic, i] if has_code[ic, i] else 0.0, ic) for ic in range(len(names)))[1]

    images, rows, files = [], [], []
    for n, r in enumerate(_read_csv(os.path.join(directory, "index.csv"))):
        cells = {cat: _split_cell(r.get(cat)) for cat in names}
        if not any(cells.values()):
            continue
        sh, sw = int(r["sh"]), int(r["sw"])
        layers, image_labels = [], []
        for cat in names:
            for item in cells[cat]:
                if isinstance(item, int):
                    image_labels.append(item)
                else:
                    seg = decode_segmentation(os.path.join(directory, "images", item))
                    if seg.shape != (sh, sw):
                        raise ValueError(f"{item}: segmentation {seg.shape} is not sh×sw = {(sh, sw)} of index.csv")
                    layers.append(seg)
        images.append((layers, image_labels, (sh, sw)))
        rows.append(n)
        files.append(r["image"])
    return Probe(labels, names, primary, images, np.array(rows, dtype=np.int64), files)


# ----------------------------------------------------------------------------------------------
# Thresholds

def thresholds(acts_per_unit, top=0.005):
    """The four exact-regime variants of Lite's threshold (peers.md §5.2): readout element
    int(1000·(1 − top) − 1) of a 1000-point readout, i.e. probability k/999, where sorted value i sits at
      'hazen'         (i + 0.5)/n         (min entry first, max entry last; = numpy 'hazen')
      'linear'        i/(n − 1)           (the opposite; = numpy 'linear', the default)
      'both_first'    (i + 0.5)/(n − 0.5) (what a stable sort gives)
      'both_last'     i/(n − 0.5)
    with the minimum at 0 and the maximum at 1 and linear interpolation in between (np.interp).
    acts_per_unit: [U, n] (each unit's population) or [N, U, h, w] (every value of every image).
    Returns {variant: float64 [U]}."""
    a = np.asarray(acts_per_unit)
    if a.ndim == 4:
        a = np.moveaxis(a, 1, 0).reshape(a.shape[1], -1)
    elif a.ndim != 2:
        raise ValueError(f"thresholds expects [U, n] or [N, U, h, w], got shape {a.shape}")
    k = int(1000 * (1 - top) - 1)
    if not 0 <= k <= 999:
        raise ValueError("top gives no readout element")
    p = k / 999
    v = np.sort(a.astype(np.float64), axis=1)
    n = v.shape[1]
    if n < 2:
        raise ValueError("thresholds need at least 2 values per unit")
    i = np.arange(n, dtype=np.float64)
    lo, hi = v[:, :1], v[:, -1:]
    variants = {  # knot positions and values: data at their positions, plus the min/max entries
        "hazen": (np.concatenate([[0.0], (i + 0.5) / n, [1.0]]), np.concatenate([lo, v, hi], axis=1)),
        "linear": (i / (n - 1), v),
        "both_first": (np.concatenate([[0.0], (i + 0.5) / (n - 0.5)]), np.concatenate([lo, v], axis=1)),
        "both_last": (np.concatenate([i / (n - 0.5), [1.0]]), np.concatenate([v, hi], axis=1)),
    }
    out = {}
    for name, (xp, fp) in variants.items():
        out[name] = np.array([np.interp(p, xp, row) for row in fp])
    return out


# ----------------------------------------------------------------------------------------------
# Upsampling

@functools.lru_cache(maxsize=64)
def _taps(n_in, n_out):
    """Lower/upper source index and upper weight per output position, as detail::lerp_taps:
    s = (d + 0.5)·(n_in/n_out) − 0.5 in double, clamped to [0, n_in − 1]."""
    scale = n_in / n_out
    s = (np.arange(n_out, dtype=np.float64) + 0.5) * scale - 0.5
    s = np.minimum(np.maximum(s, 0.0), float(n_in - 1))
    i0 = np.floor(s).astype(np.intp)
    i1 = np.minimum(i0 + 1, n_in - 1)
    t = np.where(i1 == i0, 0.0, s - i0)
    return i0, i1, t, 1.0 - t, t == 0.0


def upsample(m, sh, sw):
    """Bilinear up-sampling of the h×w map to float32 sh×sw, pixel-centre aligned, edges clamped, with
    the operation order of upsample_bilinear in tally.hpp: a horizontal pass ((1 − t)·a + t·b in double,
    rounded to float32; a itself where t = 0), then a vertical pass the same way on those floats."""
    m = np.asarray(m)
    h, w = m.shape
    if h == 0 or w == 0:
        raise ValueError(f"upsample: empty map {m.shape}")
    if sh < h or sw < w:
        raise ValueError(f"upsample: output {(sh, sw)} is smaller than input {(h, w)} (up-sampling only)")
    x0, x1, tx, ux, zx = _taps(w, sw)
    y0, y1, ty, uy, zy = _taps(h, sh)
    d = m.astype(np.float64)
    a, b = d[:, x0], d[:, x1]
    rows = np.where(zx, a, ux * a + tx * b).astype(np.float32)
    r = rows.astype(np.float64)
    a, b = r[y0], r[y1]
    return np.where(zy[:, None], a, uy[:, None] * a + ty[:, None] * b).astype(np.float32)


def upsample_pil(m, sh, sw):
    """The same resize through PIL's bilinear filter on a float ('F') image: Lite's imresize(mode='F')."""
    from PIL import Image
    im = Image.fromarray(np.ascontiguousarray(m, dtype=np.float32), mode="F")
    return np.asarray(im.resize((sw, sh), Image.BILINEAR), dtype=np.float32)


# ----------------------------------------------------------------------------------------------
# Tally

def _image_parts(image):
    """(layers [Y, sh, sw] int array or None, image-level labels, (sh, sw)) of one image entry."""
    layers, image_labels = image[0], image[1]
    layers = None if layers is None or len(layers) == 0 else np.asarray(layers, dtype=np.intp)
    if layers is not None:
        if layers.ndim == 2:
            layers = layers[None]
        size = layers.shape[1:]
    elif len(image) > 2:
        size = tuple(image[2])
    else:
        raise ValueError("an image without label layers needs its segmentation size (layers, labels, (sh, sw))")
    return layers, [int(s) for s in image_labels], (int(size[0]), int(size[1]))


def tally(acts, thresholds, images, n_labels, primary, n_categories, rule="lite", upsampler=upsample):
    """NetDissect-Lite's tally (peers.md §5.2 step 3) over images i of acts [N, U, h, w] with
    images[i] = (label layers, image-level labels[, (sh, sw)]). Label 0 is ignored everywhere.
    Returns int64 G [L], I [U, L], A [U, C].

      G[l]     pixels of l over all layers; sh·sw per image-level occurrence
      I[k, l]  pixels of the mask M_k = upsample(A[i, k]) > T_k carrying l (once per layer);
               |M_k| for an image-level l
      A[k, c]  |M_k| summed over images where c counts: 'lite': a label of primary category c
               occurs inside M_k, or the image has an image-level label of category c;
               'original': a label of category c occurs anywhere in the image."""
    if rule not in ("lite", "original"):
        raise ValueError(f"union rule {rule!r} is not one of lite, original")
    acts = np.asarray(acts)
    n, units = acts.shape[:2]
    thr = np.asarray(thresholds, dtype=np.float32)
    primary = np.asarray(primary, dtype=np.intp)
    onehot = np.zeros((n_labels, n_categories), dtype=np.int64)  # label × primary category
    onehot[np.arange(1, n_labels), primary[1:]] = 1
    G = np.zeros(n_labels, dtype=np.int64)
    I = np.zeros((units, n_labels), dtype=np.int64)
    A = np.zeros((units, n_categories), dtype=np.int64)
    for i in range(n):
        layers, scalars, (sh, sw) = _image_parts(images[i])
        scalars = [s for s in scalars if s != 0]
        if layers is not None:
            g = np.bincount(layers.ravel(), minlength=n_labels)
            g[0] = 0
            G += g
        for s in scalars:
            G[s] += sh * sw
        cat_image = np.zeros(n_categories, dtype=bool)
        for s in scalars:
            cat_image[primary[s]] = True
        if rule == "original":
            cat_image |= (g @ onehot > 0) if layers is not None else False
        for k in range(units):
            fmap = acts[i, k]
            t = thr[k]
            if fmap.max() <= t:
                continue  # exact: bilinear never exceeds the maximum
            mask = upsampler(fmap, sh, sw) > t
            m = int(np.count_nonzero(mask))
            if m == 0:
                continue
            cats = cat_image.copy()
            if layers is not None:
                inside = np.bincount(layers[:, mask].ravel(), minlength=n_labels)
                inside[0] = 0
                I[k] += inside
                cats |= inside @ onehot > 0
            for s in scalars:
                I[k, s] += m
            A[k] += m * cats
    return G, I, A


def iou(G, I, A, primary):
    """I / (A[k, primary(l)] + G − I + 1e−10), float64 [U, L]; label 0's column is 0."""
    G, I, A = (np.asarray(x, dtype=np.float64) for x in (G, I, A))
    primary = np.asarray(primary, dtype=np.intp)
    out = I / (A[:, primary] + G[None, :] - I + 1e-10)
    out[:, 0] = 0.0
    return out


def best(iou_matrix):
    """Per unit: (label, IoU, dead), the argmax over labels >= 1 (lowest label on ties); dead when 0."""
    m = np.asarray(iou_matrix)[:, 1:]
    lab = np.argmax(m, axis=1)
    val = m[np.arange(len(m)), lab]
    return lab + 1, val, ~(val > 0)


# ----------------------------------------------------------------------------------------------
# A QuantileVector-style sketch (the threshold pass of Lite), vectorised over units

class NumpySketch:
    """Per unit at most `resolution` retained samples, kept as levels (level h: weight 2^h). All units
    receive the same number of values, so their levels fill in lockstep and one array [U, capacity]
    holds a level for every unit. Values enter level 0; whenever the retained count reaches the
    resolution, the lowest level at or above its capacity (top ⌈r/3⌉, ×2/3 per level down, at least
    2; failing that, the lowest level holding >= 2) is sorted and every other sample from a random
    offset (NumPy RandomState(seed), one bit per compaction for all units) moves up a level; an odd
    last (largest) sample stays. Exact running min and max per unit."""

    def __init__(self, units, resolution=24 * 1024, seed=1):
        self.units, self.r = units, resolution
        self.rng = np.random.RandomState(seed)
        self.levels = [np.empty((units, resolution + 1), dtype=np.float32)]
        self.fill = [0]
        self.n = 0
        self.lo = np.full(units, np.inf, dtype=np.float32)
        self.hi = np.full(units, -np.inf, dtype=np.float32)

    def update(self, batch):
        """batch [B, U, H, W] or [B, U]: per unit, values in row order then spatial order."""
        b = np.asarray(batch, dtype=np.float32)
        v = np.moveaxis(b, 1, 0).reshape(self.units, -1)  # [U, B·H·W]
        self.lo = np.minimum(self.lo, v.min(axis=1))
        self.hi = np.maximum(self.hi, v.max(axis=1))
        j, total = 0, v.shape[1]
        while j < total:
            room = self.r - sum(self.fill)
            if room <= 0:
                self._compress()
                continue
            take = min(room, total - j)
            f = self.fill[0]
            self.levels[0][:, f:f + take] = v[:, j:j + take]
            self.fill[0] += take
            j += take
            self.n += take

    def _capacities(self):
        depth = len(self.levels)
        cap, c = [0] * depth, max(2, (self.r + 2) // 3)
        for d in range(depth):
            cap[depth - 1 - d] = c
            c = max(2, c * 2 // 3)
        return cap

    def _compress(self):
        cap = self._capacities()
        h = next((k for k, f in enumerate(self.fill) if f >= cap[k] and f >= 2), None)
        if h is None:
            h = next(k for k, f in enumerate(self.fill) if f >= 2)
        if h + 1 == len(self.levels):
            self.levels.append(np.empty((self.units, self.r + 1), dtype=np.float32))
            self.fill.append(0)
        f = self.fill[h]
        data = np.sort(self.levels[h][:, :f], axis=1)
        pairs = f // 2
        off = int(self.rng.randint(2))
        up = data[:, off:2 * pairs:2]
        g = self.fill[h + 1]
        self.levels[h + 1][:, g:g + pairs] = up
        self.fill[h + 1] += pairs
        if f % 2:
            self.levels[h][:, 0] = data[:, -1]
        self.fill[h] = f % 2

    def threshold(self, top=0.005):
        """Lite's readout at element int(1000·(1 − top) − 1) of 1000 points: samples at (cumulative
        weight before + half their weight)/n, min at 0, max at 1, linear interpolation."""
        p = int(1000 * (1 - top) - 1) / 999
        vals = np.concatenate([self.levels[h][:, :f] for h, f in enumerate(self.fill)], axis=1)
        wts = np.concatenate([np.full(f, 2.0 ** h) for h, f in enumerate(self.fill)])
        out = np.empty(self.units)
        for u in range(self.units):
            o = np.argsort(vals[u], kind="stable")
            w = wts[o]
            pos = (np.cumsum(w) - w / 2) / self.n
            out[u] = np.interp(p, np.concatenate([[0.0], pos, [1.0]]),
                               np.concatenate([[self.lo[u]], vals[u][o].astype(np.float64), [self.hi[u]]]))
        return out


# ----------------------------------------------------------------------------------------------
# CLI

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("probe")
    p.add_argument("dir")
    p.add_argument("--categories")
    d = sub.add_parser("dissect")
    d.add_argument("dir")
    d.add_argument("acts")
    d.add_argument("--categories")
    d.add_argument("--rule", default="lite", choices=["lite", "original"])
    d.add_argument("--top", type=float, default=0.005)
    d.add_argument("--variant", default="hazen", choices=["hazen", "linear", "both_first", "both_last"])
    args = ap.parse_args(argv)
    probe = read_probe(args.dir, args.categories.split(",") if args.categories else None)
    if args.cmd == "probe":
        print(f"{len(probe.images)} images kept of index.csv rows; {len(probe.labels)} labels; "
              f"categories {probe.categories}")
        for ic, c in enumerate(probe.categories):
            print(f"  {c}: {int((probe.primary[1:] == ic).sum())} labels with this primary category")
        return 0
    acts = np.load(args.acts)
    if len(acts) != len(probe.images):
        raise SystemExit(f"{args.acts} has {len(acts)} rows; the probe keeps {len(probe.images)} images")
    thr = thresholds(acts, args.top)[args.variant].astype(np.float32)
    G, I, A = tally(acts, thr, probe.images, len(probe.labels), probe.primary, len(probe.categories), args.rule)
    lab, val, dead = best(iou(G, I, A, probe.primary))
    for k in range(len(lab)):
        what = "dead" if dead[k] else f"{probe.labels[lab[k]]} ({probe.categories[probe.primary[lab[k]]]})"
        print(f"unit {k + 1}: {what} IoU {val[k]:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

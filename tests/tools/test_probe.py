# SPDX-License-Identifier: MIT
"""scripts/make_probe.py writes a probe set in Broden's on-disk format (docs/dissection.md). Checked
with a small reader written here from the format description alone (csv + PIL): files, label ranges,
category/label/c_* consistency, frequencies and coverages recomputed from the segmentations and the
index, determinism, and the refusal to overwrite. Needs no shapebias binary."""
import csv
import hashlib
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import FMNIST, SOURCE, one_error_line

SCRIPT = os.path.join(SOURCE, "scripts", "make_probe.py")
TINY = ["--count", "24", "--image-size", "32", "--seg-size", "16"]
CATEGORIES = ["color", "object", "texture"]


def make(out, *args):
    return subprocess.run([sys.executable, SCRIPT, "--out", str(out), "--fashion-mnist", FMNIST, *args],
                          capture_output=True, timeout=120)


def read_csv(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], [dict(zip(rows[0], r)) for r in rows[1:]]


def read_seg(path):
    """A segmentation PNG as int labels R + 256·G; asserts 8-bit RGB with B = 0."""
    im = Image.open(path)
    assert im.mode == "RGB", path
    a = np.asarray(im).astype(np.int64)
    assert (a[..., 2] == 0).all(), path
    return a[..., 0] + 256 * a[..., 1]


class Probe:
    """Everything in a probe folder, read independently of the generator."""

    def __init__(self, d):
        self.dir = d
        self.index_header, self.index = read_csv(d / "index.csv")
        self.category_header, self.category = read_csv(d / "category.csv")
        self.label_header, self.label = read_csv(d / "label.csv")
        self.codes = {c["name"]: read_csv(d / f"c_{c['name']}.csv") for c in self.category}

    def items(self, row, cat):
        return [s for s in row[cat].split(";") if s]

    def tally(self):
        """(label, category) -> [images, coverage], recomputed from index.csv and the PNGs."""
        t = {}
        for row in self.index:
            sh, sw = int(row["sh"]), int(row["sw"])
            for c in CATEGORIES:
                seen = {}
                for it in self.items(row, c):
                    if it.isdigit():
                        seen[int(it)] = seen.get(int(it), 0) + 1.0
                    else:
                        seg = read_seg(self.dir / "images" / it)
                        counts = np.bincount(seg.ravel())
                        for lab in np.nonzero(counts)[0]:
                            if lab:
                                seen[int(lab)] = seen.get(int(lab), 0) + counts[lab] / (sh * sw)
                for lab, cov in seen.items():
                    e = t.setdefault((lab, c), [0, 0.0])
                    e[0] += 1
                    e[1] += cov
        return t


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    out = tmp_path_factory.mktemp("probe") / "p"
    r = make(out, *TINY, "--val-fraction", "0.25")
    assert r.returncode == 0, r.stderr.decode()
    assert r.stderr == b""
    assert not os.path.exists(str(out) + ".partial")
    return Probe(out)


def test_headers_and_files(probe):
    assert probe.index_header == ["image", "split", "ih", "iw", "sh", "sw", *CATEGORIES]
    assert probe.category_header == ["name", "first", "last", "count", "frequency"]
    assert probe.label_header == ["number", "name", "category", "frequency", "coverage", "syns"]
    assert [c["name"] for c in probe.category] == CATEGORIES
    assert len(probe.index) == 24
    assert sum(r["split"] == "val" for r in probe.index) == 6
    assert {r["split"] for r in probe.index} <= {"train", "val"}
    for row in probe.index:
        assert (row["ih"], row["iw"], row["sh"], row["sw"]) == ("32", "32", "16", "16")
        assert re.fullmatch(r"probe/probe_\d{6}\.jpg", row["image"])
        with Image.open(probe.dir / "images" / row["image"]) as im:
            assert im.format == "JPEG" and im.mode == "RGB" and im.size == (32, 32)
        for c in CATEGORIES:
            for it in probe.items(row, c):
                if not it.isdigit():
                    assert it.endswith(f"_{c}.png") or (c == "color" and it.endswith("_intensity.png"))
                    with Image.open(probe.dir / "images" / it) as im:
                        assert im.format == "PNG" and im.size == (16, 16)
    prov = json.loads((probe.dir / "provenance.json").read_text())
    assert prov["seed"] == 1 and prov["count"] == 24
    assert prov["image_size"] == [32, 32] and prov["seg_size"] == [16, 16]
    assert "--count 24" in prov["command"]


def test_image_kinds(probe):
    """Every image has two colour layers (palette colour, intensity band); an image is an object
    image (object layer, no texture) or a texture image (one image-level texture number, no object
    layer); about half of each."""
    objects = textures = 0
    for row in probe.index:
        color = probe.items(row, "color")
        assert len(color) == 2 and color[0].endswith("_color.png") and color[1].endswith("_intensity.png")
        obj, tex = probe.items(row, "object"), probe.items(row, "texture")
        assert not (obj and tex)
        if tex:
            assert len(tex) == 1 and tex[0].isdigit()
            textures += 1
        else:
            assert len(obj) <= 1
            objects += 1
    assert objects == textures == 12


def test_labels_in_category_range(probe):
    cat = {c["name"]: (int(c["first"]), int(c["last"])) for c in probe.category}
    for row in probe.index:
        for c in CATEGORIES:
            lo, hi = cat[c]
            for it in probe.items(row, c):
                if it.isdigit():
                    assert lo <= int(it) <= hi
                else:
                    labs = np.unique(read_seg(probe.dir / "images" / it))
                    labs = labs[labs != 0]
                    assert len(labs) and labs.min() >= lo and labs.max() <= hi, (it, labs, c)
    # Every pixel of both colour layers has a colour label.
    for row in probe.index:
        for it in probe.items(row, "color"):
            assert (read_seg(probe.dir / "images" / it) > 0).all()


def test_category_matches_label(probe):
    numbers = [int(l["number"]) for l in probe.label]
    assert numbers == list(range(1, len(numbers) + 1))
    expect_first = 1
    for c in probe.category:
        mine = [int(l["number"]) for l in probe.label if l["category"].split("(")[0] == c["name"]]
        assert mine, c
        assert int(c["first"]) == min(mine) == expect_first
        assert int(c["last"]) == max(mine)
        assert int(c["count"]) == len(mine) == int(c["last"]) - int(c["first"]) + 1
        expect_first = int(c["last"]) + 1
    assert expect_first == len(numbers) + 1
    # category.csv frequency: images with any label of the category.
    for c in probe.category:
        n = sum(bool(probe.items(row, c["name"])) for row in probe.index)
        assert int(c["frequency"]) == n
    assert len({l["name"] for l in probe.label}) == len(probe.label)


def test_label_names(probe):
    known = {
        "color": {"black", "blue", "brown", "green", "grey", "orange", "pink", "purple", "red",
                  "white", "yellow", "dark", "medium", "light"},
        "object": {"t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker",
                   "bag", "ankle-boot"},
        "texture": {"banded", "chequered", "dotted", "striped", "zigzagged"},
    }
    for l in probe.label:
        c = l["category"].split("(")[0]
        assert l["name"] in known[c], l


def test_frequency_and_coverage_recomputed(probe):
    t = probe.tally()
    assert {lab for lab, _ in t} == {int(l["number"]) for l in probe.label}  # every label occurs
    for l in probe.label:
        num = int(l["number"])
        m = re.fullmatch(r"([^(;]+)\((\d+)\)", l["category"])
        assert m, l["category"]
        images, cov = t[num, m.group(1)]
        assert int(m.group(2)) == images == int(l["frequency"]) >= 1
        assert abs(float(l["coverage"]) - cov) < 2e-6, (l, cov)
        # NetDissect-Lite's decode_label_dict needs these exact forms.
        assert re.fullmatch(r"\d+\.\d*", l["coverage"]), l["coverage"]
        if m.group(1) == "texture":
            assert float(l["coverage"]) == images


def test_category_code_files(probe):
    labels = {int(l["number"]): l for l in probe.label}
    for c in probe.category:
        header, rows = probe.codes[c["name"]]
        assert header == ["code", "number", "name", "frequency", "coverage"]
        assert rows[0] == {"code": "0", "number": "0", "name": "-", "frequency": "0", "coverage": "0.0"}
        assert [int(r["code"]) for r in rows] == list(range(len(rows)))
        nums = [int(r["number"]) for r in rows[1:]]
        assert nums == list(range(int(c["first"]), int(c["last"]) + 1))  # dense, in global order
        for r in rows[1:]:
            l = labels[int(r["number"])]
            assert (r["name"], r["frequency"], r["coverage"]) == (l["name"], l["frequency"], l["coverage"])
            assert re.fullmatch(r"\d+\.\d*", r["coverage"])


def test_color_labels_match_pixels(probe):
    """Pixels with the same colour label look alike across images; different colours differ."""
    per_label = {}
    for row in probe.index:
        img = np.asarray(Image.open(probe.dir / "images" / row["image"]).convert("RGB")).astype(float)
        seg = read_seg(probe.dir / "images" / probe.items(row, "color")[0])
        # Image pixel under each segmentation pixel centre (32 → 16: every other pixel, offset 1).
        sub = img[1::2, 1::2]
        for lab in np.unique(seg):
            per_label.setdefault(lab, []).append(np.median(sub[seg == lab], axis=0))
    means = {}
    for lab, meds in per_label.items():
        meds = np.array(meds)
        means[lab] = meds.mean(0)
        assert np.abs(meds - means[lab]).max() < 20, (lab, meds)
    labs = sorted(means)
    for i in labs:
        for j in labs:
            if i < j:
                assert np.abs(means[i] - means[j]).max() > 50, (i, j)


LUMA = np.array([0.299, 0.587, 0.114])
BANDS = {"dark": (0, 100), "medium": (100, 170), "light": (170, 256)}


def test_intensity_bands(probe):
    """The second colour layer labels each pixel with the band of its luma: the palette layer's
    labels are after them in the order palette colours, dark, medium, light; on the JPEG (noise σ 4
    per channel, about 2.7 in luma) nearly every pixel lies within its band, and each band is used."""
    names = {int(l["number"]): l["name"] for l in probe.label}
    color = sorted(n for n, l in names.items() if l in BANDS or l in
                   {"black", "blue", "brown", "green", "grey", "orange", "pink", "purple", "red", "white", "yellow"})
    assert [names[n] for n in color[-3:]] == ["dark", "medium", "light"]  # bands after the colours
    inside = total = 0
    seen = set()
    palette_band = {}  # texture images: a palette colour always falls in one band
    for row in probe.index:
        img = np.asarray(Image.open(probe.dir / "images" / row["image"]).convert("RGB")).astype(float)
        luma = (img[1::2, 1::2] @ LUMA)  # the image pixel under each segmentation pixel centre
        pal, band = (read_seg(probe.dir / "images" / it) for it in probe.items(row, "color"))
        for lab in np.unique(band):
            lo, hi = BANDS[names[lab]]
            y = luma[band == lab]
            inside += int(((y >= lo - 12) & (y < hi + 12)).sum())
            total += y.size
            seen.add(names[lab])
        if probe.items(row, "texture"):
            for c in np.unique(pal):
                palette_band.setdefault(names[c], set()).update(names[b] for b in np.unique(band[pal == c]))
    assert inside / total > 0.99, inside / total
    assert seen == set(BANDS)
    assert all(len(b) == 1 for b in palette_band.values()), palette_band
    assert palette_band.get("black", {"dark"}) == {"dark"} and palette_band.get("white", {"light"}) == {"light"}


def snapshot(d):
    out = {}
    for root, _, files in os.walk(d):
        for f in files:
            p = os.path.join(root, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, d)] = hashlib.sha256(fh.read()).hexdigest()
    return out


def test_deterministic(tmp_path, probe):
    r = make(tmp_path / "again", *TINY, "--val-fraction", "0.25")
    assert r.returncode == 0, r.stderr.decode()
    a, b = snapshot(probe.dir), snapshot(tmp_path / "again")
    a.pop("provenance.json"), b.pop("provenance.json")   # records the command, which names --out
    assert a == b
    r = make(tmp_path / "other", *TINY, "--val-fraction", "0.25", "--seed", "2")
    assert r.returncode == 0, r.stderr.decode()
    c = snapshot(tmp_path / "other")
    assert c["label.csv"] != a["label.csv"] or c["index.csv"] != a["index.csv"]
    pngs = [k for k in a if k.endswith(".png")]
    assert sum(a[k] != c.get(k) for k in pngs) > len(pngs) // 2


def test_default_sizes(tmp_path):
    r = make(tmp_path / "d", "--count", "4")
    assert r.returncode == 0, r.stderr.decode()
    _, index = read_csv(tmp_path / "d" / "index.csv")
    assert [(x["ih"], x["iw"], x["sh"], x["sw"]) for x in index] == [("224", "224", "112", "112")] * 4
    for it in index[0]["color"].split(";"):
        assert read_seg(tmp_path / "d" / "images" / it).shape == (112, 112)


def test_empty_out_is_used(tmp_path):
    (tmp_path / "e").mkdir()
    r = make(tmp_path / "e", "--count", "2", "--image-size", "16", "--seg-size", "8")
    assert r.returncode == 0, r.stderr.decode()
    assert (tmp_path / "e" / "index.csv").exists()
    assert not (tmp_path / "e.partial").exists()


def test_refuses_nonempty_out(tmp_path, probe):
    before = snapshot(probe.dir)
    r = make(probe.dir, *TINY, "--seed", "3")
    assert r.returncode == 1
    one_error_line(r, str(probe.dir), "not an empty folder")
    assert r.stdout == b""
    assert snapshot(probe.dir) == before
    assert not os.path.exists(str(probe.dir) + ".partial")
    f = tmp_path / "file"
    f.write_text("x")
    r = make(f, *TINY)
    assert r.returncode == 1
    one_error_line(r, str(f))
    assert f.read_text() == "x"


def test_bad_usage_and_missing_data(tmp_path):
    r = make(tmp_path / "u", "--image-size", "32", "--seg-size", "64")
    assert r.returncode == 2
    one_error_line(r, "--seg-size")
    r = subprocess.run([sys.executable, SCRIPT, "--out", str(tmp_path / "m"), "--fashion-mnist",
                        str(tmp_path / "none"), *TINY], capture_output=True, timeout=60)
    assert r.returncode == 1
    one_error_line(r, "t10k-images-idx3-ubyte")
    assert not os.path.exists(tmp_path / "m") and not os.path.exists(tmp_path / "m.partial")

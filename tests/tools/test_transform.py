# SPDX-License-Identifier: MIT
"""Dataset variants (paper-spec §2.2): `--transform` (gray, scramble:G, edges, silhouette) and
`--noise` as `dump -l input` sees them, and `shapebias transform`, which writes them as PNG folders.
Every variant is checked against an exact, hand-checkable expectation or an independent numpy/PIL
computation on the untransformed images."""
import gzip
import json
import os

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from conftest import FMNIST, one_error_line


class MeanLogits(torch.nn.Module):
    """Accepts any [B, C, H, W] input; 10 logits from the mean. Only there to let `dump -l input` run."""

    def forward(self, x):
        return x.mean(dim=(1, 2, 3)).unsqueeze(1) * torch.arange(10, dtype=torch.float32)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("tmodel") / "mean.pt"
    torch.jit.script(MeanLogits()).save(str(path))
    return path


def fmnist_raw(n):
    """The first n Fashion-MNIST test images (uint8 [n, 28, 28]) and labels, decoded with numpy."""
    with gzip.open(os.path.join(FMNIST, "t10k-images-idx3-ubyte.gz")) as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(os.path.join(FMNIST, "t10k-labels-idx1-ubyte.gz")) as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8)
    return x[:n], y[:n].astype(np.int64)


def dumped(sb, model, data, out, *extra):
    """The preprocessed (transformed) [0,1] images of `dump -l input`, their ids and labels."""
    p = sb("dump", model, data, "-l", "input", "--quiet", "-o", out, *extra)
    assert p.returncode == 0, p.stderr
    with h5py.File(out) as f:
        return f["activations/input"][:], f["index/input_id"][:], f["index/label"][:]


def patches(x, g):
    """[C, H, W] → [g*g, C, H/g, W/g], patches in row-major grid order."""
    c, h, w = x.shape
    return x.reshape(c, g, h // g, g, w // g).transpose(1, 3, 0, 2, 4).reshape(g * g, c, h // g, w // g)


def candidates(out, inp, g):
    """For each output patch k, the set of input patches equal to it; asserts that the output's
    patches are the input's patches in some order (as multisets, so repeated blank patches count)."""
    po, pi = patches(out, g), patches(inp, g)
    assert sorted(p.tobytes() for p in po) == sorted(p.tobytes() for p in pi)
    return [{j for j in range(g * g) if np.array_equal(po[k], pi[j])} for k in range(g * g)]


def write_png(path, a):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.asarray(a, dtype=np.uint8)).save(path)


# ---- scramble -------------------------------------------------------------------------------------

def test_scramble_permutes_patches_per_input_id(sb, model, tmp_path):
    raw, labels = fmnist_raw(200)
    clean, ids, lab = dumped(sb, model, FMNIST, tmp_path / "c.h5", "--limit", 200)
    assert list(ids) == list(range(200)) and np.array_equal(lab, labels)
    # The untransformed input is the IDX bytes / 255 (float32), the reference for what follows.
    assert np.array_equal(clean[:, 0], raw.astype(np.float32) / np.float32(255))
    s2, _, _ = dumped(sb, model, FMNIST, tmp_path / "s2.h5", "--limit", 200, "--transform", "scramble:2")
    s4, _, _ = dumped(sb, model, FMNIST, tmp_path / "s4.h5", "--limit", 20, "--transform", "scramble:4")
    for g, s in ((2, s2), (4, s4)):
        cands = [candidates(s[i], clean[i], g) for i in range(len(s))]
        # Not one permutation for all inputs: no assignment of input patches to output positions
        # is consistent with every image (some output position has no common source).
        common = [set.intersection(*(c[k] for c in cands)) for k in range(g * g)]
        assert any(not c for c in common), f"scramble:{g} applied the same permutation to every input"
        unchanged = sum(np.array_equal(s[i], clean[i]) for i in range(len(s)))
        assert unchanged <= len(s) // 5, f"scramble:{g} left {unchanged} of {len(s)} images unchanged"
    # Uniform over positions: where input patch 0 (top left) goes, over the 200 images whose
    # permutation is determined (distinct patches). Each of 4 positions expects n/4 (sd ≈ √(3n)/4).
    where = [next(k for k, c in enumerate(candidates(s2[i], clean[i], 2)) if c == {0})
             for i in range(200) if all(len(c) == 1 for c in candidates(s2[i], clean[i], 2))]
    n = len(where)
    assert n >= 150
    counts = np.bincount(where, minlength=4)
    assert np.all(np.abs(counts - n / 4) < 4 * np.sqrt(3 * n) / 4), counts
    # Deterministic per input id: any batch size, and an id selected alone, give the same image.
    b1, _, _ = dumped(sb, model, FMNIST, tmp_path / "b1.h5", "--limit", 20, "--transform", "scramble:2",
                      "--batch-size", 1)
    b7, _, _ = dumped(sb, model, FMNIST, tmp_path / "b7.h5", "--limit", 20, "--transform", "scramble:2",
                      "--batch-size", 7)
    assert np.array_equal(b1, s2[:20]) and np.array_equal(b7, s2[:20])
    idf = tmp_path / "ids.txt"
    idf.write_text("13\n")
    alone, alone_ids, _ = dumped(sb, model, FMNIST, tmp_path / "a.h5", "--ids", idf, "--transform", "scramble:2")
    assert list(alone_ids) == [13] and np.array_equal(alone[0], s2[13])
    # Another --transform-seed: other permutations, still of the same patches.
    other, _, _ = dumped(sb, model, FMNIST, tmp_path / "o.h5", "--limit", 20, "--transform", "scramble:2",
                         "--transform-seed", 1)
    assert not np.array_equal(other, s2[:20])
    assert sum(not np.array_equal(other[i], s2[i]) for i in range(20)) >= 10
    for i in range(20):
        candidates(other[i], clean[i], 2)


# ---- noise ----------------------------------------------------------------------------------------

def test_noise_statistics_and_order(sb, model, tmp_path):
    sigma, n_img = 0.2, 20
    clean, _, _ = dumped(sb, model, FMNIST, tmp_path / "c.h5", "--limit", n_img)
    raw, _, _ = dumped(sb, model, FMNIST, tmp_path / "r.h5", "--limit", n_img, "--noise", sigma, "--no-noise-clip")
    d = (raw - clean).astype(np.float64).reshape(n_img, -1)
    n = d.size
    # Mean 0 (sd σ/√n), sd σ (sd of the sample sd ≈ σ/√(2n)): 5 standard errors.
    assert abs(d.mean()) < 5 * sigma / np.sqrt(n)
    assert abs(d.std() - sigma) < 5 * sigma / np.sqrt(2 * n)
    per_image = d.std(1)
    assert np.all(np.abs(per_image - sigma) < 5 * sigma / np.sqrt(2 * d.shape[1])), per_image
    # Gaussian: P(|z| < 1) = 0.6827, binomial sd √(p(1−p)/n).
    inside = (np.abs(d) < sigma).mean()
    assert abs(inside - 0.6827) < 5 * np.sqrt(0.6827 * 0.3173 / n)
    # Independent across ids: pairwise correlations of the 784-pixel noise fields ≈ N(0, 1/784).
    r = np.corrcoef(d)
    off = r[~np.eye(n_img, dtype=bool)]
    assert np.abs(off).max() < 5 / np.sqrt(d.shape[1]), np.abs(off).max()
    # The noise depends on the id only, and comes after the transform: scramble then noise adds
    # exactly the same field; clipping (the default) is clip(clean + noise, 0, 1).
    sc, _, _ = dumped(sb, model, FMNIST, tmp_path / "s.h5", "--limit", n_img, "--transform", "scramble:2")
    scn, _, _ = dumped(sb, model, FMNIST, tmp_path / "sn.h5", "--limit", n_img, "--transform", "scramble:2",
                       "--noise", sigma, "--no-noise-clip")
    np.testing.assert_allclose(scn - sc, raw - clean, atol=1e-6)
    clipped, _, _ = dumped(sb, model, FMNIST, tmp_path / "k.h5", "--limit", n_img, "--noise", sigma)
    np.testing.assert_allclose(clipped, np.clip(raw, 0, 1), atol=1e-6)


# ---- gray -----------------------------------------------------------------------------------------

def test_gray_is_601_luma_replicated(sb, model, image_folder, tmp_path):
    geo = ("--resize", 32, "--crop", 32)
    rgb, ids, _ = dumped(sb, model, image_folder, tmp_path / "rgb.h5", *geo)
    gray, ids2, _ = dumped(sb, model, image_folder, tmp_path / "gray.h5", *geo, "--transform", "gray")
    assert rgb.shape == gray.shape == (15, 3, 32, 32) and list(ids) == list(ids2)
    assert not np.allclose(rgb[:, 0], rgb[:, 2], atol=0.05)  # the fixture really is colourful
    expect = 0.299 * rgb[:, 0].astype(np.float64) + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2]
    for c in range(3):
        np.testing.assert_allclose(gray[:, c], expect, atol=2e-6)
    assert np.array_equal(gray[:, 0], gray[:, 1]) and np.array_equal(gray[:, 0], gray[:, 2])
    # PIL's "L" (the same weights in 16-bit fixed point, rounded to 8 bits) is within half a level.
    u8 = np.rint(rgb * 255).astype(np.uint8).transpose(0, 2, 3, 1)
    pil = np.stack([np.asarray(Image.fromarray(a).convert("L"), np.float64) / 255 for a in u8])
    assert np.abs(gray[:, 0] - pil).max() <= 0.5 / 255 + 1e-6


# ---- edges ----------------------------------------------------------------------------------------

def test_edges_of_a_step_and_of_a_flat_image(sb, model, tmp_path):
    root = tmp_path / "steps"
    step = np.zeros((32, 32), np.uint8)
    step[:, 16:] = 255                                    # columns 0-15 black, 16-31 white
    write_png(root / "a" / "h_step.png", step.T)          # the same step between rows 15 and 16
    write_png(root / "a" / "v_step.png", np.stack([step] * 3, -1))  # RGB
    write_png(root / "b" / "flat.png", np.full((32, 32), 128, np.uint8))
    # Why exactly column 15: after the Gaussian (sigma 0.4, symmetric kernel w0, w1, w2) the row is
    # b15 = w1+w2 and b16 = w0+w1+w2, b14 = w2, b17 = w0+2w1+w2; Sobel's dx at c is 4(b[c+1]−b[c−1]),
    # so |dx| is 4(w0+w1) at both 15 and 16 (the step sits between them) and ≈ 4·w1 ≈ 0.16 < the
    # low threshold 0.35 at 14 and 17. Non-maximum suppression (OpenCV) keeps a pixel along a
    # horizontal gradient when m > m[left] and m >= m[right]: column 15 passes (tie on its right),
    # column 16 fails (tie on its left). Without the blur (sigma 0) |dx| = 4 at 15 and 16: the same.
    for spec in ("edges", "edges:0,0.35,0.9"):
        e, ids, labels = dumped(sb, model, root, tmp_path / f"{spec[:6]}.h5", "--transform", spec)
        assert list(labels) == [0, 0, 1]
        expect = np.zeros((32, 32), np.float32)
        expect[:, 15] = 1
        for c in range(3):
            np.testing.assert_array_equal(e[0, c], expect.T, err_msg=f"{spec}: horizontal step")
            np.testing.assert_array_equal(e[1, c], expect, err_msg=f"{spec}: vertical step")
            np.testing.assert_array_equal(e[2, c], np.zeros((32, 32)), err_msg=f"{spec}: a flat image has no edges")
    # A high threshold above the step's gradient (4(w0+w1) ≈ 3.84) removes it.
    e, _, _ = dumped(sb, model, root, tmp_path / "hi.h5", "--transform", "edges:0.4,3.9,3.95")
    assert not e.any()


# ---- silhouette -----------------------------------------------------------------------------------

def ring(value=200, background=0, gap=False):
    a = np.full((32, 32), background, np.uint8)
    a[8:24, 8:24] = value
    a[12:20, 12:20] = background  # the hole
    if gap:
        a[14:18, 20:24] = background  # a gap in the right wall joins the hole to the outside
    return a


def test_silhouette_threshold_fills_holes(sb, model, tmp_path):
    root = tmp_path / "rings"
    # Background 10/255 ≈ 0.039 is below the default threshold 0.05; the ring 200/255 above it.
    write_png(root / "a" / "closed.png", ring(200, 10))
    write_png(root / "a" / "open.png", ring(200, 10, gap=True))
    s, _, _ = dumped(sb, model, root, tmp_path / "s.h5", "--transform", "silhouette")
    filled = np.zeros((32, 32), np.float32)
    filled[8:24, 8:24] = 1
    for c in range(3):
        np.testing.assert_array_equal(s[0, c], filled)  # the hole is filled
        # A hole open to the outside is background: only the ring's own pixels remain.
        np.testing.assert_array_equal(s[1, c], (ring(200, 10, gap=True) == 200).astype(np.float32))
    # Above the ring's brightness (0.784) nothing is object; below the background's (0.039) all is.
    s, _, _ = dumped(sb, model, root, tmp_path / "t.h5", "--transform", "silhouette:0.8")
    assert not s.any()
    s, _, _ = dumped(sb, model, root, tmp_path / "u.h5", "--transform", "silhouette:0.03")
    assert s.min() == 1


def test_silhouette_from_mask_files(sb, model, tmp_path):
    root, masks = tmp_path / "imgs", tmp_path / "masks"
    os.makedirs(root / "a")
    # The image is a uniform grey (its own threshold silhouette would be everything); the mask is a
    # ring of small non-zero values (object = mask > 0), saved as .png beside a .jpg image.
    Image.fromarray(np.full((32, 32, 3), 100, np.uint8)).save(root / "a" / "x.jpg")
    write_png(masks / "a" / "x.png", ring(3, 0))
    s, _, _ = dumped(sb, model, root, tmp_path / "m.h5", "--transform", f"silhouette:masks={masks}")
    filled = np.zeros((32, 32), np.float32)
    filled[8:24, 8:24] = 1
    for c in range(3):
        np.testing.assert_array_equal(s[0, c], filled)
    # A second image without a mask: exit 1, naming the mask file it looked for.
    Image.fromarray(np.full((32, 32, 3), 50, np.uint8)).save(root / "a" / "y.jpg")
    p = sb("dump", model, root, "-l", "input", "--quiet", "-o", tmp_path / "n.h5",
           "--transform", f"silhouette:masks={masks}")
    assert p.returncode == 1
    one_error_line(p, str(masks / "a" / "y.png"))
    assert not os.path.exists(tmp_path / "n.h5")
    p = sb("transform", root, "--transform", f"silhouette:masks={masks}", "-o", tmp_path / "out", "--quiet")
    assert p.returncode == 1
    one_error_line(p, str(masks / "a" / "y.png"))
    assert not os.path.exists(tmp_path / "out") and not os.path.exists(tmp_path / "out.partial")
    # IDX inputs have no file names to find masks by.
    p = sb("transform", FMNIST, "--limit", 2, "--transform", f"silhouette:masks={masks}", "-o", tmp_path / "o2")
    assert p.returncode == 1
    one_error_line(p, "silhouette:masks=", "IDX")


# ---- shapebias transform ----------------------------------------------------------------------------

def test_transform_writes_png_folder(sb, model, tmp_path):
    raw, labels = fmnist_raw(20)
    order = [7, 3, 11, 0, 19, 5]
    idf = tmp_path / "ids.txt"
    idf.write_text(" ".join(map(str, order)) + "\n")
    opts = ("--ids", idf, "--transform", "scramble:2", "--noise", "0.1", "--noise-seed", 4)
    out = tmp_path / "out"
    p = sb("transform", FMNIST, *opts, "-o", out, "--batch-size", 4)
    assert p.returncode == 0, p.stderr
    x, ids, lab = dumped(sb, model, FMNIST, tmp_path / "x.h5", *opts)
    assert list(ids) == order and list(lab) == [labels[i] for i in order]
    names = [f"{labels[i]}/{i:08d}.png" for i in order]
    assert (out / "list.txt").read_text() == "".join(f"{n} {labels[i]}\n" for n, i in zip(names, order))
    files = sorted(os.path.relpath(os.path.join(d, f), out) for d, _, fs in os.walk(out) for f in fs)
    assert files == sorted(names + ["list.txt", "provenance.json"])
    for r, name in enumerate(names):
        img = Image.open(out / name)
        assert img.mode == "L" and img.size == (28, 28)
        # [0,1] → 8 bits rounded half up, as float32 (the noise makes every value non-trivial).
        expect = np.clip(np.floor(x[r, 0] * np.float32(255) + np.float32(0.5)), 0, 255).astype(np.uint8)
        np.testing.assert_array_equal(np.asarray(img), expect, err_msg=name)
    prov = json.load(open(out / "provenance.json"))
    assert prov["verb"] == "transform" and prov["params"]["rows"] == len(order)
    pre = prov["params"]["preprocessing"]
    assert pre["transform"]["spec"]["kind"] == "scramble" and pre["transform"]["spec"]["grid"] == 2
    assert pre["transform"]["seed"] == 212
    assert pre["noise"]["sigma"] == 0.1 and pre["noise"]["seed"] == 4
    # --limit takes the first N inputs; gray leaves a 1-channel image as it is (PNG = the IDX bytes).
    p = sb("transform", FMNIST, "--limit", 3, "--transform", "gray", "-o", tmp_path / "lim")
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "lim" / "list.txt").read_text() == "".join(
        f"{labels[i]}/{i:08d}.png {labels[i]}\n" for i in range(3))
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "lim" / f"{labels[1]}/00000001.png")), raw[1])


def test_transform_rgb_matches_dump(sb, model, image_folder, tmp_path):
    opts = ("--resize", 16, "--crop", 16, "--transform", "gray", "--limit", 7)
    p = sb("transform", image_folder, *opts, "-o", tmp_path / "g", "--quiet")
    assert p.returncode == 0, p.stderr
    x, ids, lab = dumped(sb, model, image_folder, tmp_path / "g.h5", *opts)
    lines = (tmp_path / "g" / "list.txt").read_text().splitlines()
    assert lines == [f"{l}/{i:08d}.png {l}" for i, l in zip(ids, lab)] and list(lab) == [0] * 5 + [1] * 2
    for r, line in enumerate(lines):
        img = Image.open(tmp_path / "g" / line.split()[0])
        assert img.mode == "RGB"
        expect = np.clip(np.floor(x[r] * np.float32(255) + np.float32(0.5)), 0, 255).astype(np.uint8)
        np.testing.assert_array_equal(np.asarray(img), expect.transpose(1, 2, 0))


def test_transform_errors(sb, model, image_folder, tmp_path):
    out = tmp_path / "out"

    def gone():
        return not os.path.exists(out) and not os.path.exists(str(out) + ".partial")

    # Normalisation has no place in images written in [0,1].
    p = sb("transform", FMNIST, "--transform", "gray", "--normalize", "0.5/0.5", "-o", out)
    assert p.returncode == 2
    one_error_line(p, "--normalize")
    assert gone()
    # A grid that does not divide the image: exit 1, naming the input and the size.
    p = sb("transform", FMNIST, "--transform", "scramble:3", "-o", out)
    assert p.returncode == 1
    one_error_line(p, "input 0", "scramble:3", "28x28")
    assert gone()
    p = sb("dump", model, FMNIST, "--limit", 2, "-l", "input", "--transform", "scramble:3", "-o", tmp_path / "d.h5")
    assert p.returncode == 1
    one_error_line(p, "input 0", "28x28")
    # A failure after some PNGs were written (the second image has another size) leaves nothing.
    p = sb("transform", image_folder, "--transform", "gray", "--batch-size", 1, "-o", out)
    assert p.returncode == 1
    one_error_line(p, "img1.jpg", "[3, 80, 64]", "[3, 37, 50]")
    assert gone()
    # Usage errors exit 2, before any work.
    for spec, frag in [("blur", "'blur'"), ("scramble:0", "grid"), ("scramble:2.5", "grid"),
                       ("edges:1,2", "expected 3"), ("edges:0.4,0.9,0.35", "low <= high"),
                       ("silhouette:1.5", "threshold"), ("silhouette:masks=", "masks= needs a folder")]:
        p = sb("transform", FMNIST, "--transform", spec, "-o", out)
        assert p.returncode == 2, (spec, p.stderr)
        one_error_line(p, "--transform", frag)
        assert gone()
    p = sb("transform", FMNIST, "-o", out)
    assert p.returncode == 2
    one_error_line(p, "nothing to do")
    assert gone()

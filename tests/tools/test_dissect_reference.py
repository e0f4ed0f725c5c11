# SPDX-License-Identifier: MIT
"""Self-test of tests/tools/dissect_reference.py (the numpy NetDissect-Lite reference) on small
hand-worked cases. Needs no compiled binary."""
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dissect_reference as ref  # noqa: E402

# Labels 1, 2 of category 0; 3 of category 1; 4 (image-level) of category 1.
PRIM = np.array([0, 0, 0, 1, 1])
# One unit, 2x2 rows [0, 1]: upsampled to 4x4 every row is [0, .25, .75, 1]; T = 0.5 keeps columns
# 2 and 3 (|M| = 8).
TWO = np.array([[[[0, 1], [0, 1]]]], dtype=np.float32)
HALF = np.array([0.5], dtype=np.float32)
SEG_A = np.array([[1, 1, 2, 2],
                  [1, 1, 2, 2],
                  [1, 1, 1, 0],
                  [3, 3, 1, 0]], dtype=np.int32)
SEG_B = np.array([[0, 0, 3, 3],
                  [0, 0, 0, 0],
                  [0, 0, 0, 0],
                  [0, 0, 0, 0]], dtype=np.int32)


def naive_upsample(a, sh, sw):
    """The 2-D pixel-centre formula in double, directly."""
    h, w = a.shape

    def coord(d, n, m):
        return min(max((d + 0.5) * n / m - 0.5, 0.0), n - 1.0)

    out = np.empty((sh, sw))
    for y in range(sh):
        for x in range(sw):
            sy, sx = coord(y, h, sh), coord(x, w, sw)
            y0, x0 = int(np.floor(sy)), int(np.floor(sx))
            y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
            ty, tx = sy - y0, sx - x0
            v = lambda i, j: float(a[i, j])
            out[y, x] = (1 - ty) * ((1 - tx) * v(y0, x0) + tx * v(y0, x1)) + ty * ((1 - tx) * v(y1, x0) + tx * v(y1, x1))
    return out


def test_upsample_2x2_by_hand():
    a = np.array([[1, 2], [3, 4]], dtype=np.float32)
    # source coordinates -0.25 (clamped to 0), 0.25, 0.75, 1.25 (clamped to 1)
    expect = np.array([[1.0, 1.25, 1.75, 2.0],
                       [1.5, 1.75, 2.25, 2.5],
                       [2.5, 2.75, 3.25, 3.5],
                       [3.0, 3.25, 3.75, 4.0]], dtype=np.float32)
    out = ref.upsample(a, 4, 4)
    assert out.dtype == np.float32
    assert np.array_equal(out, expect)
    assert np.array_equal(ref.upsample(TWO[0, 0], 4, 4), np.tile(np.float32([0, .25, .75, 1]), (4, 1)))


def test_upsample_edges_identity_and_refusals():
    assert np.all(ref.upsample(np.float32([[7.5]]), 3, 4) == 7.5)
    assert np.array_equal(ref.upsample(np.float32([[0, 4]]), 2, 4), np.float32([[0, 1, 3, 4], [0, 1, 3, 4]]))
    a = np.random.default_rng(1).normal(size=(5, 6)).astype(np.float32)
    assert np.array_equal(ref.upsample(a, 5, 6), a)
    with pytest.raises(ValueError):
        ref.upsample(a, 4, 6)
    with pytest.raises(ValueError):
        ref.upsample(np.zeros((0, 3), np.float32), 4, 4)


@pytest.mark.parametrize("h,w,sh,sw", [(4, 4, 8, 8), (3, 5, 6, 10), (3, 4, 7, 9), (13, 13, 112, 112), (2, 3, 13, 5)])
def test_upsample_matches_naive_formula_and_pil(h, w, sh, sw):
    a = np.random.default_rng(h * 100 + sw).normal(size=(h, w)).astype(np.float32)
    out = ref.upsample(a, sh, sw)
    assert np.abs(out - naive_upsample(a, sh, sw)).max() < 1e-6
    assert out.max() <= a.max() and out.min() >= a.min()
    assert np.abs(out - ref.upsample_pil(a, sh, sw)).max() < 1e-5


def test_upsample_vs_pil_on_random_maps():
    rng = np.random.default_rng(3)
    for _ in range(50):
        h, w = rng.integers(1, 14, 2)
        sh, sw = int(rng.integers(h, 120)), int(rng.integers(w, 120))
        a = np.maximum(rng.normal(size=(h, w)), -0.2).astype(np.float32) * 3
        assert np.abs(ref.upsample(a, sh, sw) - ref.upsample_pil(a, sh, sw)).max() < 1e-5


@pytest.mark.parametrize("rule", ["lite", "original"])
def test_tally_one_unit_one_image_by_hand(rule):
    G, I, A = ref.tally(TWO, HALF, [([SEG_A], [])], 5, PRIM, 2, rule)
    # G: label 1 on 8 pixels, 2 on 4, 3 on 2; label 0 (2 pixels) ignored
    assert G.tolist() == [0, 8, 4, 2, 0]
    # M = columns 2, 3: labels 2, 2, 2, 2, 1, 0, 1, 0
    assert I.tolist() == [[0, 2, 4, 0, 0]]
    # category 1 (label 3) is in the image but not inside the mask
    assert A.tolist() == [[8, 0 if rule == "lite" else 8]]
    m = ref.iou(G, I, A, PRIM)
    assert m[0, 0] == 0
    assert m[0, 1] == pytest.approx(2 / (14 + 1e-10), rel=1e-15)
    assert m[0, 2] == pytest.approx(4 / (8 + 1e-10), rel=1e-15)
    assert m[0, 3] == 0
    lab, val, dead = ref.best(m)
    assert lab.tolist() == [2] and val[0] == m[0, 2] and not dead[0]


def test_tally_image_level_labels_cover_the_image():
    G, I, A = ref.tally(TWO, HALF, [([SEG_A], [4, 0])], 5, PRIM, 2)  # label 0 ignored
    assert G[4] == 16 and G[0] == 0
    assert I[0, 4] == 8
    assert A.tolist() == [[8, 8]]
    assert ref.best(ref.iou(G, I, A, PRIM))[0].tolist() == [4]  # 8/(16 + 1e-10) beats 4/(8 + 1e-10)
    # an image with only an image-level label needs its size
    G2, I2, A2 = ref.tally(TWO, HALF, [([], [4], (4, 4))], 5, PRIM, 2)
    assert G2.tolist() == [0, 0, 0, 0, 16] and I2.tolist() == [[0, 0, 0, 0, 8]] and A2.tolist() == [[0, 8]]


def test_tally_two_images_lite_vs_original_and_layers():
    images = [([SEG_A], []), ([SEG_B], [])]
    acts = np.concatenate([TWO, TWO])
    lite = ref.tally(acts, HALF, images, 5, PRIM, 2, "lite")
    orig = ref.tally(acts, HALF, images, 5, PRIM, 2, "original")
    assert lite[0][3] == 4 and orig[0][3] == 4
    assert lite[1][0, 3] == 2 and orig[1][0, 3] == 2
    assert lite[2].tolist() == [[8, 8]]    # only image B has a category-1 label inside the mask
    assert orig[2].tolist() == [[8, 16]]   # both images have one somewhere
    assert np.all(ref.iou(*lite, PRIM) >= ref.iou(*orig, PRIM))
    # two layers in one image: each layer counts
    G, I, A = ref.tally(TWO, HALF, [([SEG_A, SEG_B], [])], 5, PRIM, 2)
    assert G[3] == 4 and I[0, 3] == 2 and I[0, 2] == 4 and A.tolist() == [[8, 8]]


def test_tally_skip_empty_mask_ties_and_dead():
    # max <= T: nothing for the unit, ground truth still counts
    G, I, A = ref.tally(TWO, np.float32([1.0]), [([SEG_A], [4])], 5, PRIM, 2)
    assert G[1] == 8 and G[4] == 16 and not I.any() and not A.any()
    assert ref.best(ref.iou(G, I, A, PRIM))[2].tolist() == [True]
    # a single central peak up-sampled 2x: highest value .5625 < 0.9 < 1 = max, an empty mask
    peak = np.zeros((1, 1, 3, 3), np.float32)
    peak[0, 0, 1, 1] = 1
    G, I, A = ref.tally(peak, np.float32([0.9]), [([np.ones((6, 6), np.int32)], [])], 5, PRIM, 2)
    assert G[1] == 36 and not I.any() and not A.any()
    # equal IoU for labels 1 and 2: the lowest label wins; unit 1 never fires
    acts = np.array([[[[0, 1], [0, 1]], [[0, 0], [0, 0]]]], np.float32)
    seg = np.tile(np.int32([0, 0, 2, 1]), (4, 1))
    G, I, A = ref.tally(acts, np.float32([0.5, 0.5]), [([seg], [])], 5, PRIM, 2)
    m = ref.iou(G, I, A, PRIM)
    assert m[0, 1] == m[0, 2]
    lab, val, dead = ref.best(m)
    assert lab.tolist() == [1, 1] and dead.tolist() == [False, True] and val[1] == 0


def test_thresholds_four_variants():
    rng = np.random.default_rng(5)
    v = rng.normal(size=(3, 5000))
    t = ref.thresholds(v)
    p = 994 / 999
    assert np.allclose(t["linear"], np.quantile(v, p, axis=1), rtol=0, atol=1e-12)
    assert np.allclose(t["hazen"], np.quantile(v, p, axis=1, method="hazen"), rtol=0, atol=1e-12)
    s = np.sort(v, axis=1)
    for name, x in t.items():  # all within one order statistic of each other
        lo = np.floor(p * 4999 - 1).astype(int)
        assert np.all(x >= s[:, lo]) and np.all(x <= s[:, lo + 3]), name
    # by hand, n = 4 values 0, 1, 2, 3 at p = 994/999
    h = ref.thresholds(np.array([[3.0, 0.0, 2.0, 1.0]]))
    assert h["linear"][0] == pytest.approx(3 * p)                             # i/(n-1)
    assert h["hazen"][0] == pytest.approx(3.0)                                # beyond 3.5/4: the max
    assert h["both_first"][0] == pytest.approx(2 + (p - 2.5 / 3.5) * 3.5)     # (i+.5)/(n-.5)
    assert h["both_last"][0] == pytest.approx(3.0)                            # beyond 3/3.5: the max
    # [N, U, h, w] input: every value of a unit
    a = rng.normal(size=(4, 2, 3, 3))
    assert np.allclose(ref.thresholds(a)["linear"], np.quantile(np.moveaxis(a, 1, 0).reshape(2, -1), p, axis=1))


def test_sketch_exact_while_small_and_close_when_compacting():
    rng = np.random.default_rng(9)
    x = rng.normal(size=(40, 3, 5, 5)).astype(np.float32)  # 1000 values per unit
    s = ref.NumpySketch(3, resolution=2048)
    s.update(x[:20])
    s.update(x[20:])
    assert np.allclose(s.threshold(), ref.thresholds(x)["hazen"], rtol=0, atol=1e-6)
    big = rng.normal(size=(400, 3, 10, 10)).astype(np.float32)  # 40,000 values per unit
    s = ref.NumpySketch(3, resolution=1024)
    for b in range(0, 400, 64):
        s.update(big[b:b + 64])
    assert sum(s.fill) <= 1024
    sorted_ = np.sort(np.moveaxis(big, 1, 0).reshape(3, -1), axis=1)
    for u, t in enumerate(s.threshold()):
        rank = np.searchsorted(sorted_[u], t) / sorted_.shape[1]
        assert abs(rank - 994 / 999) < 0.01


def _png(path, labels):
    from PIL import Image
    rgb = np.zeros(labels.shape + (3,), np.uint8)
    rgb[..., 0] = labels % 256
    rgb[..., 1] = labels // 256
    Image.fromarray(rgb).save(path)


def test_read_probe(tmp_path):
    d = tmp_path
    os.makedirs(d / "images")
    (d / "category.csv").write_text("name,first,last,count,frequency\n"
                                    "object,1,300,3,2\ncolor,1,2,2,2\nscene,3,3,1,1\n")
    (d / "label.csv").write_text("number,name,category,frequency,coverage,syns\n"
                                 "1,red,color(2),2,0.5,\n2,blue,color(1),1,0.2,\n3,street,scene(1),1,1.0,\n"
                                 "300,wall,object(1),1,0.3,\n")
    # label 1 has coverage 0.5 in object and in color: the tie goes to the later category (color)
    (d / "c_object.csv").write_text("code,number,name,frequency,coverage\n1,1,red,1,0.5\n2,300,wall,1,0.3\n")
    (d / "c_color.csv").write_text("code,number,name,frequency,coverage\n1,1,red,2,0.5\n2,2,blue,1,0.2\n")
    (d / "c_scene.csv").write_text("code,number,name,frequency,coverage\n1,3,street,1,1.0\n")
    obj = np.array([[0, 300, 300], [1, 1, 0]], np.int32)
    _png(d / "images" / "a_object.png", obj)
    _png(d / "images" / "a_color.png", np.array([[1, 1, 2], [2, 2, 2]], np.int32))
    (d / "index.csv").write_text("image,split,ih,iw,sh,sw,object,color,scene\n"
                                 "a.jpg,train,4,6,2,3,a_object.png,a_color.png,3\n"
                                 "b.jpg,train,4,6,2,3,,,\n"
                                 "c.jpg,train,4,6,2,3,,,3;3\n")
    p = ref.read_probe(str(d))
    assert p.categories == ["object", "color", "scene"]
    assert len(p.labels) == 301 and p.labels[0] == "-" and p.labels[300] == "wall" and p.labels[1] == "red"
    assert p.primary[1] == 1 and p.primary[2] == 1 and p.primary[3] == 2 and p.primary[300] == 0
    assert p.primary[0] == 2 and p.primary[5] == 2  # no code anywhere: (0, last category)
    assert p.rows.tolist() == [0, 2] and p.files == ["a.jpg", "c.jpg"]
    layers, image_labels, size = p.images[0]
    assert size == (2, 3) and image_labels == [3] and len(layers) == 2
    assert np.array_equal(layers[0], obj) and layers[0].dtype == np.int32
    assert p.images[1][0] == [] and p.images[1][1] == [3, 3]
    # selecting categories: primaries over the selection only; rows with no selected data dropped
    q = ref.read_probe(str(d), ["object"])
    assert q.categories == ["object"] and q.rows.tolist() == [0] and q.primary[1] == 0
    assert len(q.images[0][0]) == 1
    # the reference runs end to end on it
    acts = np.random.default_rng(0).random((2, 4, 1, 1)).astype(np.float32)
    G, I, A = ref.tally(acts, np.full(4, 0.5, np.float32), p.images, len(p.labels), p.primary, 3)
    assert G[300] == 2 and G[1] == 4 and G[3] == 3 * 6


def test_cli(tmp_path, capsys):
    test_read_probe(tmp_path)
    np.save(tmp_path / "acts.npy", np.random.default_rng(0).random((2, 4, 1, 1)).astype(np.float32))
    assert ref.main(["probe", str(tmp_path)]) == 0
    assert "2 images kept" in capsys.readouterr().out
    assert ref.main(["dissect", str(tmp_path), str(tmp_path / "acts.npy")]) == 0
    out = capsys.readouterr().out
    assert out.count("unit ") == 4

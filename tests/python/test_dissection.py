# SPDX-License-Identifier: MIT
"""Network dissection through the bindings against numpy (docs/dissection.md): exact quantiles
(np.quantile), the quantile sketch (exact regime, rank-error bound, NetDissect's threshold), bilinear
up-sampling (a numpy formulation and torch's interpolate), and the IoU tally (a per-image numpy
loop over the definition, both union rules), with merge, state and pickle."""
import pickle

import numpy as np
import pytest
import shapebias

from conftest import refuses


def numpy_upsample(x, sh, sw):
    """Separable bilinear up-sampling in float64: source (d + 0.5) * n / m - 0.5, clamped."""
    def taps(n, m):
        s = np.clip((np.arange(m) + 0.5) * n / m - 0.5, 0, n - 1)
        i0 = np.floor(s).astype(int)
        i1 = np.minimum(i0 + 1, n - 1)
        return i0, i1, s - i0
    x = np.asarray(x, dtype=np.float64)
    y0, y1, ty = taps(x.shape[-2], sh)
    x0, x1, tx = taps(x.shape[-1], sw)
    rows = x[..., x0] * (1 - tx) + x[..., x1] * tx
    return rows[..., y0, :] * (1 - ty)[:, None] + rows[..., y1, :] * ty[:, None]


def test_exact_quantiles_against_numpy(rng):
    x = rng.standard_normal((20, 3, 4, 5)).astype(np.float32)
    q = shapebias.ExactQuantiles(3)
    q.update(x[:7])
    q.update(x[7:], threads=2)
    values = x.transpose(1, 0, 2, 3).reshape(3, -1).astype(np.float64)
    assert q.rows == 20 and q.units == 3
    np.testing.assert_array_equal(q.count(), [400, 400, 400])
    for p in [0.0, 0.005, 0.3, 0.5, 0.995, 1.0]:
        np.testing.assert_allclose(q.quantile(p), np.quantile(values, p, axis=1), rtol=1e-12)
        np.testing.assert_allclose(q.quantile_hazen(p), np.quantile(values, p, axis=1, method="hazen"), rtol=1e-12)
    flat = shapebias.ExactQuantiles(3)
    flat.update(np.ascontiguousarray(x[:, :, 0, 0]))  # [B, U]: one value per row
    np.testing.assert_allclose(flat.quantile(0.5), np.median(x[:, :, 0, 0], axis=0), rtol=1e-7)
    other = shapebias.ExactQuantiles(3)
    other.update(x[:7])
    rest = shapebias.ExactQuantiles(3)
    rest.update(x[7:])
    other.merge(rest)
    np.testing.assert_array_equal(other.quantile(0.37), q.quantile(0.37))
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(q)).quantile(0.9), q.quantile(0.9))
    refuses(RuntimeError, shapebias.ExactQuantiles(2).quantile, 0.5, match="no values")
    refuses(ValueError, q.quantile, 1.5, match="[0, 1]")


def test_sketch_is_exact_below_its_resolution(rng):
    x = rng.standard_normal((50, 2, 3, 3)).astype(np.float32)  # 450 values per unit
    s = shapebias.QuantileSketch(2, resolution=1000)
    s.update(x)
    values = x.transpose(1, 0, 2, 3).reshape(2, -1).astype(np.float64)
    levels = np.linspace(0, 1, 1001)
    np.testing.assert_allclose(s.readout(), np.quantile(values, levels, axis=1, method="hazen").T, rtol=1e-12)
    # NetDissect-Lite's threshold: element int(1000 * (1 - top) - 1) of a 1000-point readout.
    for top in [0.005, 0.2]:
        k = int(1000 * (1 - top) - 1)
        np.testing.assert_allclose(s.threshold(top=top), np.quantile(values, k / 999, axis=1, method="hazen"), rtol=1e-12)
    np.testing.assert_array_equal(s.min(), values.min(1))
    np.testing.assert_array_equal(s.max(), values.max(1))
    np.testing.assert_array_equal(s.count(), [450, 450])
    np.testing.assert_array_equal(s.retained(), [450, 450])
    np.testing.assert_allclose(s.rank_error_bound(), [0.5 / 450] * 2)


def test_sketch_rank_error_within_its_bound(rng):
    x = rng.pareto(1.1, (400, 2, 10, 10)).astype(np.float32)  # 40,000 heavy-tailed values per unit
    a, b = shapebias.QuantileSketch(2, resolution=512, seed=3), shapebias.QuantileSketch(2, resolution=512, seed=3)
    a.update(x[:150])
    b.update(x[150:])
    a.merge(b)
    assert (a.retained() <= a.max_retained).all() and a.max_retained == 512 and (a.count() == 40000).all()
    values = np.sort(x.transpose(1, 0, 2, 3).reshape(2, -1), axis=1)
    levels = np.linspace(0, 1, 101)
    for u in range(2):
        v = a.readout(levels=101)[u].astype(np.float32)
        n = values.shape[1]
        bound = a.rank_error_bound()[u] * n
        below = np.searchsorted(values[u], v, side="left")
        at_most = np.searchsorted(values[u], v, side="right")
        assert (below - bound <= levels * n + 1e-9).all() and (levels * n <= at_most + bound + 1e-9).all()


def test_sketch_state_continues_bit_identically(rng):
    x = rng.standard_normal((60, 3, 4, 4)).astype(np.float32)
    s = shapebias.QuantileSketch(3, resolution=64, seed=9)
    s.update(x[:30])
    copies = [pickle.loads(pickle.dumps(s)), shapebias.QuantileSketch.from_state(s.state())]
    assert copies[0].seed == 9 and copies[0].resolution == 64 and s.state()["kind"] == "quantile_sketch"
    s.update(x[30:])
    for c in copies:
        c.update(x[30:])
        np.testing.assert_array_equal(c.readout(), s.readout())
    refuses(ValueError, s.merge, shapebias.QuantileSketch(3, resolution=32), match="cannot merge")


def test_quantiles_refuse(rng):
    q = shapebias.QuantileSketch(2)
    refuses(TypeError, q.update, np.zeros((3, 2, 4, 4)), match=["float32", "float64"])  # float64 into float32
    refuses(ValueError, q.update, np.zeros((3, 2, 4), np.float32), match="2 or 4 axes")
    refuses(ValueError, q.update, np.zeros((3, 5), np.float32), match="[B, 2, H, W] or [B, 2]")
    bad = np.zeros((3, 2), np.float32)
    bad[1, 1] = np.inf
    refuses(ValueError, q.update, bad, match=["row 1", "unit 1", "Inf"])
    refuses(RuntimeError, q.min, match="no values")
    refuses(TypeError, shapebias.ExactQuantiles(2).update, np.zeros((3, 2), np.int64), match="got int64")


@pytest.mark.parametrize("h,w,sh,sw", [(5, 7, 13, 20), (3, 3, 3, 9), (1, 4, 6, 4), (8, 8, 224, 224)])
def test_upsample_bilinear_against_numpy_and_torch(rng, h, w, sh, sw):
    x = rng.standard_normal((2, 3, h, w)).astype(np.float32)
    got = shapebias.upsample_bilinear(x, (sh, sw))
    assert got.dtype == np.float32 and got.shape == (2, 3, sh, sw)
    np.testing.assert_allclose(got, numpy_upsample(x, sh, sw), rtol=1e-6, atol=1e-6)
    torch = pytest.importorskip("torch")
    ref = torch.nn.functional.interpolate(torch.from_numpy(x.astype(np.float64)), size=(sh, sw), mode="bilinear",
                                          align_corners=False).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6)
    if (sh, sw) == (h, w):
        np.testing.assert_array_equal(got, x)


def test_upsample_refuses(rng):
    refuses(ValueError, shapebias.upsample_bilinear, np.zeros((4, 4), np.float32), (3, 8), match="up-sampling only")
    refuses(TypeError, shapebias.upsample_bilinear, np.zeros((4, 4), np.int32), (8, 8), match="got int32")
    refuses(ValueError, shapebias.upsample_bilinear, np.zeros(4, np.float32), (8, 8), match="at least 2 axes")


def numpy_tally(acts, thresholds, segs, image_labels, labels, categories, primary, rule):
    """G, I, A_cat by the definitions of docs/dissection.md, one image at a time."""
    b, units = acts.shape[:2]
    sh, sw = segs.shape[-2:]
    mask = shapebias.upsample_bilinear(acts, (sh, sw)) > thresholds[None, :, None, None]  # checked above
    G = np.zeros(labels, np.uint64)
    I = np.zeros((units, labels), np.uint64)
    A = np.zeros((units, categories), np.uint64)
    for i in range(b):
        scalars = [s for s in (image_labels[i] if image_labels is not None else []) if s != 0]
        G += np.bincount(segs[i].ravel(), minlength=labels).astype(np.uint64) * (np.arange(labels) != 0)
        for s in scalars:
            G[s] += sh * sw
        anywhere = {primary[l] for l in np.unique(segs[i]) if l != 0} | {primary[s] for s in scalars}
        for u in range(units):
            m = mask[i, u]
            area = int(m.sum())
            if area == 0:
                continue
            inside = segs[i][:, m]  # [layers, area]
            counts = np.bincount(inside.ravel(), minlength=labels)
            counts[0] = 0
            I[u] += counts.astype(np.uint64)
            for s in scalars:
                I[u, s] += area
            cats = ({primary[s] for s in scalars} | {primary[l] for l in np.nonzero(counts)[0]}) if rule == "lite" else anywhere
            for c in cats:
                A[u, c] += area
    iou = np.zeros((units, labels))
    for l in range(1, labels):
        iou[:, l] = I[:, l] / (A[:, primary[l]].astype(float) + float(G[l]) - I[:, l] + 1e-10)
    return G, I, A, iou


@pytest.fixture
def probe(rng):
    b, units, labels, categories = 9, 5, 8, 3
    primary = np.array([0, 0, 0, 1, 1, 2, 2, 2], np.int32)
    acts = rng.standard_normal((b, units, 5, 6)).astype(np.float32)
    acts[:, 4] = -5  # a unit that never fires: dead
    # Two label layers of blocky segmentations (labels come in runs), some pixels unlabelled.
    segs = np.kron(rng.integers(0, labels, (b, 2, 4, 5)), np.ones((4, 4), int)).astype(np.int32)[..., :15, :19]
    image_labels = rng.integers(0, labels, (b, 2)).astype(np.int32)
    image_labels[::2] = 0  # half the images have none
    thresholds = np.quantile(acts, 0.8, axis=(0, 2, 3)).astype(np.float32)
    return dict(acts=acts, thresholds=thresholds, segs=np.ascontiguousarray(segs), image_labels=image_labels,
                labels=labels, categories=categories, primary=primary)


@pytest.mark.parametrize("rule", ["lite", "original"])
def test_tally_against_numpy(probe, rule):
    p = probe
    t = shapebias.IoUTally(5, p["labels"], p["categories"], p["primary"], rule=rule)
    t.update(p["acts"], p["thresholds"], p["segs"], p["image_labels"], threads=2)
    G, I, A, iou = numpy_tally(p["acts"], p["thresholds"], p["segs"], p["image_labels"], p["labels"],
                               p["categories"], p["primary"], rule)
    assert t.images == 9 and t.rule == rule and (t.units, t.labels, t.categories) == (5, 8, 3)
    np.testing.assert_array_equal(t.ground_truth(), G)
    np.testing.assert_array_equal(t.intersection(), I)
    np.testing.assert_array_equal(t.activation(), A)
    np.testing.assert_allclose(t.iou(), iou, rtol=1e-15)
    best = t.best()
    masked = iou[:, 1:]
    np.testing.assert_array_equal(best["label"], masked.argmax(1) + 1)  # argmax takes the lowest on ties
    np.testing.assert_array_equal(best["iou"], masked.max(1))
    np.testing.assert_array_equal(best["category"], p["primary"][best["label"]])
    np.testing.assert_array_equal(best["dead"], masked.max(1) <= 0)
    assert best["dead"][4] and not best["dead"][:4].any()


def test_tally_split_merge_state(probe):
    p = probe
    whole, first, second = (shapebias.IoUTally(5, 8, 3, p["primary"]) for _ in range(3))
    whole.update(p["acts"], p["thresholds"], p["segs"], p["image_labels"])
    first.update(p["acts"][:4], p["thresholds"], p["segs"][:4], p["image_labels"][:4])
    second.update(p["acts"][4:], p["thresholds"], p["segs"][4:], p["image_labels"][4:])
    first.merge(second)
    for t in [first, shapebias.IoUTally.from_state(whole.state()), pickle.loads(pickle.dumps(whole))]:
        np.testing.assert_array_equal(t.intersection(), whole.intersection())
        np.testing.assert_array_equal(t.activation(), whole.activation())
        np.testing.assert_array_equal(t.ground_truth(), whole.ground_truth())
        assert t.images == 9
    # One label layer given as [B, sh, sw], and no image labels.
    one = shapebias.IoUTally(5, 8, 3, p["primary"])
    one.update(p["acts"], p["thresholds"], np.ascontiguousarray(p["segs"][:, 0]))
    G, I, A, _ = numpy_tally(p["acts"], p["thresholds"], p["segs"][:, :1], None, 8, 3, p["primary"], "lite")
    np.testing.assert_array_equal(one.intersection(), I)
    np.testing.assert_array_equal(one.activation(), A)
    refuses(ValueError, whole.merge, shapebias.IoUTally(5, 8, 3, p["primary"], rule="original"), match="union rule")


def test_tally_refuses(probe):
    p = probe
    t = shapebias.IoUTally(5, 8, 3, p["primary"])
    acts, thr, segs = p["acts"], p["thresholds"], p["segs"]
    bad = segs.copy()
    bad[2, 1, 3, 4] = 8
    refuses(ValueError, t.update, acts, thr, bad, match=["image 2", "label layer 1", "pixel 61", "label 8"])
    nan = acts.copy()
    nan[3, 2, 0, 0] = np.nan
    refuses(ValueError, t.update, nan, thr, segs, match=["image 3", "unit 2", "NaN"])
    assert t.images == 0 and t.ground_truth().sum() == 0  # nothing was added
    refuses(TypeError, t.update, acts.astype(np.float64), thr, segs, match="got float64")
    refuses(TypeError, t.update, acts, thr, segs.astype(np.int64), match=["int32", "got int64"])
    refuses(ValueError, t.update, acts, thr[:4], segs, match="thresholds 4")
    refuses(ValueError, t.update, acts, thr, segs[:3], match="3 segmentations for 9 images")
    refuses(ValueError, t.update, acts, thr, np.ascontiguousarray(segs[..., :4, :4]), match="smaller than the activation")
    refuses(ValueError, shapebias.IoUTally, 5, 8, 3, p["primary"][:7], match="7 entries for 8 labels")
    refuses(ValueError, shapebias.IoUTally, 5, 8, 2, p["primary"], match="not in [0, 2)")


def test_tally_primary_is_a_view(probe):
    t = shapebias.IoUTally(5, 8, 3, probe["primary"])
    assert np.shares_memory(t.primary(), t.primary()) and not np.shares_memory(t.primary(), probe["primary"])
    np.testing.assert_array_equal(t.primary(), probe["primary"])

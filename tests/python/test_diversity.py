# SPDX-License-Identifier: MIT
"""Top-K, unit activity and the diversity measures through the bindings, against numpy
(docs/diversity.md): a full sort with the same tie rule, spatial maxima, label entropy, pairwise
distances, silhouettes, the X-means BIC and k-means on separated blobs; split, merge, state, pickle."""
import pickle

import numpy as np
import pytest
import shapebias

from conftest import refuses


def numpy_topk(x, ids, k, rank="max"):
    """Per unit: the K best rows by score, then lower id; with the first argmax position."""
    b, u = x.shape[:2]
    w = x.shape[3] if x.ndim == 4 else 1
    flat = x.reshape(b, u, -1).astype(np.float64)
    score = flat.max(2) if rank == "max" else flat.sum(2) / flat.shape[2]
    pos = flat.argmax(2)
    out = {key: [] for key in ("score", "id", "y", "x")}
    for unit in range(u):
        order = np.lexsort((ids, -score[:, unit]))[:k]
        out["score"].append(score[order, unit])
        out["id"].append(ids[order])
        out["y"].append(pos[order, unit] // w)
        out["x"].append(pos[order, unit] % w)
    return {key: np.array(v) for key, v in out.items()}


@pytest.mark.parametrize("rank", ["max", "mean"])
def test_topk_against_numpy(rng, rank):
    # Integers: many ties between rows, and exact means.
    x = rng.integers(-20, 20, (70, 6, 4, 5)).astype(np.float32)
    ids = rng.permutation(1000)[:70].astype(np.int64)
    t = shapebias.TopK(6, 9, rank=rank)
    for lo, hi in [(0, 13), (13, 14), (14, 70)]:
        t.update(x[lo:hi], ids=ids[lo:hi], threads=2)
    ref = numpy_topk(x, ids, 9, rank)
    got = t.result()
    for key in ref:
        np.testing.assert_array_equal(got[key], ref[key], err_msg=key)
    assert got["id"].dtype == np.int64 and got["score"].dtype == np.float64
    assert t.count == 70 and t.k == 9 and t.rank == rank and t.units == 6 and t.retained_bytes > 0


def test_topk_split_merge_state(rng):
    x = rng.standard_normal((40, 3, 6, 6))
    ids = np.arange(40, dtype=np.int64) * 7
    whole = shapebias.TopK(3, 5)
    whole.update(x, ids=ids)
    a, b = shapebias.TopK(3, 5), shapebias.TopK(3, 5)
    b.update(x[25:], ids=ids[25:])  # other order, other split
    a.update(x[:25], ids=ids[:25])
    b.merge(a)
    for t in [b, shapebias.TopK.from_state(whole.state()), pickle.loads(pickle.dumps(whole))]:
        for key, v in whole.result().items():
            np.testing.assert_array_equal(t.result()[key], v)
    # Without ids, rows are numbered as they come; [B, U] batches have position 0.
    flat = shapebias.TopK(2, 3)
    flat.update(np.array([[1.0, 5.0], [3.0, 4.0], [2.0, 6.0], [0.0, 9.0]]))
    np.testing.assert_array_equal(flat.result()["id"], [[1, 2, 0], [3, 2, 0]])
    np.testing.assert_array_equal(flat.result()["y"], np.zeros((2, 3)))
    few = shapebias.TopK(2, 10)
    few.update(np.ones((3, 2), np.float32))
    assert few.result()["id"].shape == (2, 3)  # min(K, rows seen)
    refuses(ValueError, whole.merge, shapebias.TopK(3, 6), match="cannot merge")


def test_topk_refuses(rng):
    t = shapebias.TopK(3, 2)
    x = rng.standard_normal((4, 3, 2, 2)).astype(np.float32)
    x[2, 1, 1, 0] = -np.inf
    refuses(ValueError, t.update, x, ids=np.array([5, 6, 7, 8]), match=["row 2", "input id 7", "unit 1", "Inf"])
    assert t.count == 0
    refuses(TypeError, t.update, x, ids=np.array([5, 6, 7, 8], np.int32), match="got int32")
    refuses(ValueError, t.update, np.zeros((4, 2), np.float32), match="[B, 3, H, W] or [B, 3]")
    refuses(ValueError, t.update, np.zeros((4, 3), np.float32), ids=np.array([2 ** 60, 0, 1, 2]), match="2^53")
    refuses(ValueError, shapebias.TopK, 3, 0, match="at least 1")
    refuses(ValueError, shapebias.TopK, 3, 2, rank="median", match="'median'")


def test_unit_activity_against_numpy(rng):
    x = rng.standard_normal((50, 4, 3, 3))
    x[:, 3] = -1.0  # never fires: dead
    peak = x.max((2, 3))
    one = shapebias.UnitActivity(4, threshold=0.5)
    one.update(x[:20])
    rest = shapebias.UnitActivity(4, threshold=0.5)
    rest.update(x[20:])
    one.merge(rest)
    assert one.count == 50 and one.units == 4
    np.testing.assert_array_equal(one.threshold(), [0.5] * 4)
    np.testing.assert_array_equal(one.above(), (peak > 0.5).sum(0))
    np.testing.assert_allclose(one.fraction_above(), (peak > 0.5).mean(0), rtol=1e-15)
    np.testing.assert_array_equal(one.max(), peak.max(0))
    np.testing.assert_array_equal(one.dead(), [False, False, False, True])
    assert one.dead_units() == 1 and one.dead_units(eps=10.0) == 4
    per = np.array([0.0, 1.0, 2.0, -2.0])
    each = shapebias.UnitActivity(per)
    each.update(x.astype(np.float32))
    np.testing.assert_array_equal(each.above(), (peak.astype(np.float32) > per).sum(0))
    copy = pickle.loads(pickle.dumps(each))
    np.testing.assert_array_equal(copy.above(), each.above())
    np.testing.assert_array_equal(shapebias.UnitActivity.from_state(each.state()).max(), each.max())
    refuses(ValueError, each.merge, one, match="other thresholds")
    refuses(RuntimeError, shapebias.UnitActivity(2).max, match="no rows")
    refuses(TypeError, shapebias.UnitActivity, per.astype(np.float32), match="got float32")
    refuses(ValueError, shapebias.UnitActivity, np.array([0.0, np.nan]), match="unit 1")


def test_label_and_embedding_diversity_against_numpy(rng):
    labels = np.array([3, 1, 3, 3, 7, 1], np.int64)
    _, counts = np.unique(labels, return_counts=True)
    p = counts / counts.sum()
    got = shapebias.label_diversity(labels)
    assert got["n"] == 6 and got["distinct"] == 3
    assert got["entropy"] == pytest.approx(-(p * np.log(p)).sum(), abs=1e-15)
    assert shapebias.label_diversity(np.full(4, 2, np.int64))["entropy"] == 0
    refuses(ValueError, shapebias.label_diversity, np.zeros(0, np.int64), match="no labels")

    e = rng.standard_normal((9, 16))
    for x in [e, e.astype(np.float32)]:
        f = x.astype(np.float64)
        pairs = [(a, b) for a in range(9) for b in range(a + 1, 9)]
        cos = [1 - f[a] @ f[b] / np.linalg.norm(f[a]) / np.linalg.norm(f[b]) for a, b in pairs]
        l2 = [np.linalg.norm(f[a] - f[b]) for a, b in pairs]
        got = shapebias.embedding_diversity(x)
        assert got["pairs"] == 36
        assert got["mean_cosine"] == pytest.approx(np.mean(cos), rel=1e-10)
        assert got["mean_l2"] == pytest.approx(np.mean(l2), rel=1e-10)
    zero = e.copy()
    zero[4] = 0
    refuses(ValueError, shapebias.embedding_diversity, zero, match=["row 4", "all zero"])
    refuses(ValueError, shapebias.embedding_diversity, e[:1].copy(), match="at least 2")


def numpy_silhouette(x, labels):
    d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    s = np.zeros(len(x))
    for i in range(len(x)):
        mine = labels == labels[i]
        if mine.sum() == 1:
            continue
        a = d[i, mine].sum() / (mine.sum() - 1)
        b = min(d[i, labels == c].mean() for c in np.unique(labels) if c != labels[i])
        s[i] = (b - a) / max(a, b)
    return s.mean()


def numpy_bic(n, d, sizes, inertia):
    sizes = np.asarray([m for m in sizes if m])
    k = len(sizes)
    var = inertia / (d * (n - k))
    loglik = (sizes * np.log(sizes / n)).sum() - n * d / 2 * np.log(2 * np.pi * var) - d * (n - k) / 2
    return loglik - k * (d + 1) / 2 * np.log(n)


def blobs(rng, centres, per, d, spread=0.1):
    truth = np.repeat(np.arange(centres), per)
    rng.shuffle(truth)
    centre = rng.standard_normal((centres, d)) * 5
    return centre[truth] + spread * rng.standard_normal((len(truth), d)), truth


def first_appearance(labels):
    order = {}
    return np.array([order.setdefault(l, len(order)) for l in labels])


def test_kmeans_silhouette_bic_against_numpy(rng):
    x, truth = blobs(rng, 3, 12, 5)
    r = shapebias.kmeans(x, 3, seed=4)
    np.testing.assert_array_equal(r["labels"], first_appearance(truth))  # separated blobs are found exactly
    np.testing.assert_array_equal(r["sizes"], [12, 12, 12])
    means = np.stack([x[r["labels"] == c].mean(0) for c in range(3)])
    assert r["inertia"] == pytest.approx(((x - means[r["labels"]]) ** 2).sum(), rel=1e-9)
    assert r["converged"] and r["iterations"] >= 1
    again = shapebias.kmeans(x.astype(np.float32), 3, seed=4)
    np.testing.assert_array_equal(again["labels"], r["labels"])
    assert shapebias.silhouette(x, r["labels"]) == pytest.approx(numpy_silhouette(x, r["labels"]), rel=1e-9)
    noise = rng.integers(0, 4, len(x)).astype(np.int64)
    assert shapebias.silhouette(x, noise) == pytest.approx(numpy_silhouette(x, noise), rel=1e-9)
    assert np.isnan(shapebias.silhouette(x, np.zeros(len(x), np.int64)))
    assert shapebias.xmeans_bic(36, 5, r["sizes"], r["inertia"]) == pytest.approx(
        numpy_bic(36, 5, r["sizes"], r["inertia"]), rel=1e-12)
    assert np.isnan(shapebias.xmeans_bic(3, 5, np.array([1, 1, 1]), 1.0))
    refuses(ValueError, shapebias.kmeans, x, 40, match="k = 40")
    refuses(ValueError, shapebias.silhouette, x, np.zeros(5, np.int64), match="5 labels for 36 rows")
    refuses(ValueError, shapebias.silhouette, x, -np.ones(36, np.int64), match="negative")


def test_facets_find_the_blobs(rng):
    x, truth = blobs(rng, 3, 10, 16)
    f = shapebias.facets(x, kmax=6, seed=1)
    assert f["k"] == f["k_silhouette"] == 3 and f["k_bic"] == 3
    np.testing.assert_array_equal(f["labels"], first_appearance(truth))
    assert len(f["runs"]) == 6 and f["silhouette"].shape == (6,) and np.isnan(f["silhouette"][0])
    for k, run in enumerate(f["runs"], start=1):
        assert f["bic"][k - 1] == pytest.approx(numpy_bic(30, 16, run["sizes"], run["inertia"]), rel=1e-12)
        if k > 1:
            assert f["silhouette"][k - 1] == pytest.approx(numpy_silhouette(x, run["labels"]), rel=1e-9)
    one_blob = shapebias.facets(rng.standard_normal((40, 16)), kmax=5)
    assert one_blob["k_silhouette"] == 1  # no substantial structure
    assert shapebias.facets(x, kmax=6, rule="bic")["k"] == 3
    refuses(ValueError, shapebias.facets, x, rule="gap", match="'gap'")

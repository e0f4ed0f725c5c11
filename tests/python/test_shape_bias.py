# SPDX-License-Identifier: MIT
"""The shape-bias experiments through the bindings, against numpy (docs/shape-bias.md): softmax,
Geirhos' cue-conflict procedure, top-k accuracy with ties, the CL intersection and CE/mCE."""
import json
import os
import pickle

import numpy as np
import pytest
import shapebias

from conftest import SOURCE, refuses


def numpy_softmax(x):
    e = np.exp(x - x.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_softmax_rows_against_numpy(rng):
    x = rng.standard_normal((6, 10)) * 30
    x[0] += 1000  # no overflow
    np.testing.assert_allclose(shapebias.softmax_rows(x), numpy_softmax(x), rtol=1e-13)
    np.testing.assert_allclose(shapebias.softmax_rows(x.astype(np.float32)), numpy_softmax(x.astype(np.float32).astype(float)),
                               rtol=1e-13)
    x[2, 3] = np.nan
    assert np.isnan(shapebias.softmax_rows(x)[2]).all() and np.isfinite(shapebias.softmax_rows(x)[3]).all()
    refuses(ValueError, shapebias.softmax_rows, x[0].copy(), match="2 axes")


@pytest.fixture
def geirhos():
    with open(os.path.join(SOURCE, "data", "imagenet16_categories.json")) as f:
        j = json.load(f)
    return j["categories"], [j["imagenet_indices"][c] for c in j["categories"]]


def numpy_shape_bias(probs, shape, texture, members):
    coarse = np.stack([probs[:, m].mean(1) for m in members], 1)
    decision = coarse.argmax(1)
    keep = shape != texture
    s = (decision == shape) & keep
    t = (decision == texture) & keep
    return decision, s, t, keep & ~s & ~t


def test_shape_bias_against_numpy(rng, geirhos):
    names, members = geirhos
    probs = numpy_softmax(rng.standard_normal((300, 1000)) * 3)
    shape = rng.integers(0, 16, 300)
    texture = rng.integers(0, 16, 300)
    # Make the decisions informative: push half the rows towards their shape category, a quarter to texture.
    for i in range(300):
        target = shape[i] if i % 2 else texture[i] if i % 4 == 0 else None
        if target is not None:
            probs[i, members[target]] += 0.5
    probs /= probs.sum(1, keepdims=True)
    acc = shapebias.ShapeBias(names, members)
    acc.update(probs[:100], shape[:100], texture[:100])
    rest = shapebias.ShapeBias(names, members)
    rest.update(probs[100:].astype(np.float32), shape[100:], texture[100:])
    acc.merge(rest)
    _, s, t, neither = numpy_shape_bias(probs, shape, texture, members)
    assert acc.rows == 300 and acc.fine_classes == 1000 and acc.categories == names
    assert (acc.shape_decisions, acc.texture_decisions, acc.neither, acc.excluded) == (
        s.sum(), t.sum(), neither.sum(), (shape == texture).sum())
    assert acc.shape_bias() == pytest.approx(s.sum() / (s.sum() + t.sum()), abs=1e-15)
    per = acc.per_category()
    np.testing.assert_array_equal(per["shape"], np.bincount(shape[s], minlength=16))
    np.testing.assert_array_equal(per["texture"], np.bincount(shape[t], minlength=16))
    np.testing.assert_array_equal(per["excluded"], np.bincount(shape[shape == texture], minlength=16))
    with np.errstate(invalid="ignore"):
        ratio = per["shape"] / (per["shape"] + per["texture"])
    np.testing.assert_array_equal(np.isnan(per["shape_bias"]), np.isnan(ratio))
    np.testing.assert_allclose(per["shape_bias"][~np.isnan(ratio)], ratio[~np.isnan(ratio)], rtol=1e-15)
    for copy in [pickle.loads(pickle.dumps(acc)), shapebias.ShapeBias.from_state(acc.state())]:
        assert copy.shape_bias() == acc.shape_bias() and copy.categories == names


def test_shape_bias_worked_by_hand():
    acc = shapebias.ShapeBias(["a", "b", "c"], [[0, 1], [2], [3]])
    probs = np.array([[0.3, 0.3, 0.2, 0.2],   # a: 0.3, b: 0.2, c: 0.2 -> a
                      [0.1, 0.1, 0.5, 0.3],   # b
                      [0.0, 0.2, 0.1, 0.7],   # c
                      [0.25, 0.25, 0.25, 0.25]])  # a 0.25 = b = c: the lowest index, a
    acc.update(probs, np.array([0, 1, 0, 2]), np.array([1, 2, 1, 2]))
    # row 0: shape a decided a; row 1: shape b decided b; row 2: neither; row 3: excluded (shape == texture)
    assert (acc.shape_decisions, acc.texture_decisions, acc.neither, acc.excluded) == (2, 0, 1, 1)
    assert acc.shape_bias() == 1.0


def test_shape_bias_refuses(geirhos):
    names, members = geirhos
    acc = shapebias.ShapeBias(names, members)
    p = np.full((2, 1000), 1e-3)
    refuses(ValueError, acc.update, p * 5, np.array([0, 1]), np.array([1, 2]), match=["row 0", "sum to 5", "softmax"])
    refuses(ValueError, acc.update, p, np.array([0, 16]), np.array([1, 2]), match=["row 1", "shape category 16"])
    refuses(ValueError, acc.update, p, np.array([0, -1]), np.array([1, 2]), match=["category -1", "row 1", "negative"])
    refuses(ValueError, acc.update, p, np.array([0]), np.array([1, 2]), match="1 values for 2 rows")
    refuses(TypeError, acc.update, p, np.array([0, 1], np.int32), np.array([1, 2]), match="got int32")
    assert acc.rows == 0
    refuses(ValueError, shapebias.ShapeBias, ["a", "a"], [[0], [1]], match="'a' appears twice")
    refuses(ValueError, acc.merge, shapebias.ShapeBias(["x"], [[0]]), match="cannot merge")


def numpy_topk_correct(scores, labels, k):
    mine = scores[np.arange(len(labels)), labels]
    greater = (scores > mine[:, None]).sum(1)
    return greater < 1, greater < k


def test_topk_accuracy_against_numpy(rng):
    scores = rng.integers(0, 6, (200, 10)).astype(np.float64)  # small integers: many ties
    labels = rng.integers(0, 10, 200).astype(np.int64)
    acc = shapebias.TopKAccuracy(10, k=3)
    c1, ck = acc.update(scores[:120], labels[:120], correct=True)
    assert acc.update(scores[120:].astype(np.float32), labels[120:]) is None
    r1, rk = numpy_topk_correct(scores, labels, 3)
    np.testing.assert_array_equal(c1, r1[:120])
    np.testing.assert_array_equal(ck, rk[:120])
    assert c1.dtype == np.bool_
    assert (acc.count, acc.correct1, acc.correctk) == (200, r1.sum(), rk.sum())
    assert acc.top1 == r1.mean() and acc.topk == rk.mean() and (acc.classes, acc.k) == (10, 3)
    copy = pickle.loads(pickle.dumps(acc))
    copy.merge(acc)
    assert copy.count == 400 and copy.topk == acc.topk
    assert np.isnan(shapebias.TopKAccuracy(10).top1)
    refuses(ValueError, acc.update, scores[:2], np.array([0, 10]), match=["row 201", "label 10"])
    refuses(ValueError, shapebias.TopKAccuracy, 3, k=4, match="k = 4")
    refuses(ValueError, acc.merge, shapebias.TopKAccuracy(10, k=5), match="cannot merge")


def test_intersect_correct_and_mce():
    a = np.array([5, 3, 3, 9, 1], np.int64)
    b = np.array([9, 1, 2, 5, 5], np.int64)
    c = np.array([1, 5, 7, 9], np.int64)
    np.testing.assert_array_equal(shapebias.intersect_correct([a, b, c]), np.intersect1d(np.intersect1d(a, b), c))
    assert shapebias.intersect_correct([]).size == 0
    refuses(TypeError, shapebias.intersect_correct, [a, b.astype(np.int32)], match=["list 1", "got int32"])

    model = {"noise": {1: 0.5, 2: 0.25}, "blur": {1: 0.75, 2: 0.75}}
    base = {"noise": {1: 0.25, 2: 0.25}, "blur": {1: 0.5, 2: 0.5}, "fog": {1: 0.1}}
    r = shapebias.mean_corruption_error(model, base)
    ce = {"noise": (0.5 + 0.75) / (0.75 + 0.75), "blur": (0.25 + 0.25) / (0.5 + 0.5)}
    assert r["ce"] == pytest.approx(ce, rel=1e-15) and r["mce"] == pytest.approx(np.mean(list(ce.values())), rel=1e-15)
    refuses(ValueError, shapebias.mean_corruption_error, {"snow": {1: 0.5}}, base, match="no corruption 'snow'")

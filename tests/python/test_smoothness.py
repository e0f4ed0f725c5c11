# SPDX-License-Identifier: MIT
"""Total variation and radial spectra through the bindings, against plain numpy formulations of
docs/smoothness.md: functions, streaming accumulators, merge, state and pickle, non-finite maps."""
import pickle

import numpy as np
import pytest
import shapebias

from conftest import refuses

F32_RTOL = 2e-6   # float32 differences summed in float lanes of <= 1024 values, then in double
F64_RTOL = 1e-12  # the same sums in double, in another order


def numpy_tv(x, beta=1.0, norm="none"):
    x = np.asarray(x, dtype=np.float64)
    tv = (np.abs(np.diff(x, axis=-2)) ** beta).sum((-2, -1)) + (np.abs(np.diff(x, axis=-1)) ** beta).sum((-2, -1))
    if norm == "pixel":
        return tv / (x.shape[-2] * x.shape[-1])
    if norm == "l1":
        mass = np.abs(x).sum((-2, -1))
        return np.divide(tv, mass, out=np.zeros_like(tv), where=mass > 0)
    return tv


def numpy_spectrum(x, cutoff=0.25):
    """Per map: mean power per ring round(r * max(H, W)), and power at r > cutoff over power at r > 0."""
    x = np.asarray(x, dtype=np.float64)
    h, w = x.shape[-2:]
    n = max(h, w)
    ky, kx = np.arange(h), np.arange(w)
    fy = np.where(ky <= h // 2, ky, ky - h) / h
    fx = np.where(kx <= w // 2, kx, kx - w) / w
    r = np.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)
    ring = np.floor(r * n + 0.5).astype(int)
    bins = int(np.floor(np.sqrt(0.5) * n + 0.5)) + 1
    power = np.abs(np.fft.fft2(x)) ** 2 / (h * w)
    flat = power.reshape(-1, h * w)
    sums = np.stack([np.bincount(ring.ravel(), weights=p, minlength=bins) for p in flat])
    counts = np.bincount(ring.ravel(), minlength=bins)
    profile = np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0)
    dc = np.zeros((h, w), bool)
    dc[0, 0] = True
    ac = flat[:, ~dc.ravel()].sum(1)
    high = flat[:, (r > cutoff).ravel()].sum(1)
    constant = (x.reshape(-1, h * w) == x.reshape(-1, h * w)[:, :1]).all(1)
    frac = np.where(constant, 0.0, high / np.where(ac > 0, ac, 1))
    return profile.reshape(x.shape[:-2] + (bins,)), frac.reshape(x.shape[:-2])


def test_tv_worked_by_hand():
    x = np.array([[0, 1], [3, 5]], dtype=np.float64)
    tv = shapebias.total_variation(x)
    assert tv.shape == () and tv == 7 + 3  # |0-3| + |1-5| down, |0-1| + |3-5| across
    assert shapebias.total_variation(x, beta=2.0) == 9 + 16 + 1 + 4
    assert shapebias.total_variation(x, norm="pixel") == 10 / 4
    assert shapebias.total_variation(x, norm="l1") == 10 / 9


@pytest.mark.parametrize("dtype,rtol", [(np.float32, F32_RTOL), (np.float64, F64_RTOL)])
@pytest.mark.parametrize("beta", [1.0, 2.0, 0.5])
@pytest.mark.parametrize("norm", ["none", "pixel", "l1"])
def test_total_variation_against_numpy(rng, dtype, rtol, beta, norm):
    for shape in [(3, 4, 37, 29), (5, 1, 9), (2, 6, 1)]:
        x = rng.standard_normal(shape).astype(dtype)
        got = shapebias.total_variation(x, beta=beta, norm=norm)
        assert got.dtype == np.float64 and got.shape == shape[:-2]
        np.testing.assert_allclose(got, numpy_tv(x, beta, norm), rtol=rtol)


def test_tv_properties(rng):
    x = rng.standard_normal((4, 3, 16, 16))
    assert (shapebias.total_variation(np.full((2, 5, 5), 3.5)) == 0).all()                    # constant maps
    for beta in [1.0, 2.0]:
        np.testing.assert_allclose(shapebias.total_variation(2.5 * x, beta=beta),
                                   2.5 ** beta * shapebias.total_variation(x, beta=beta), rtol=F64_RTOL)
    np.testing.assert_array_equal(shapebias.total_variation(x, threads=3), shapebias.total_variation(x))
    refuses(ValueError, shapebias.total_variation, x, beta=0.0, match="beta")
    refuses(ValueError, shapebias.total_variation, x, norm="l2", match="'l2'")


def test_tv_accumulator_against_numpy(rng):
    batches = [rng.standard_normal((b, 5, 12, 10)).astype(np.float32) for b in (7, 1, 12)]
    acc = shapebias.TVAccumulator(5, beta=1.0, norm="pixel")
    for i, b in enumerate(batches):
        acc.update(b, ids=np.arange(i * 100, i * 100 + len(b), dtype=np.int64))
    ref = numpy_tv(np.concatenate(batches), norm="pixel")
    assert acc.rows == 20 and (acc.height, acc.width, acc.channels) == (12, 10, 5)
    assert acc.norm == "pixel" and acc.beta == 1.0
    np.testing.assert_array_equal(acc.count(), np.full(5, 20))
    np.testing.assert_allclose(acc.mean(), ref.mean(0), rtol=F32_RTOL)
    np.testing.assert_allclose(acc.variance(), ref.var(0, ddof=1), rtol=1e-5)
    np.testing.assert_array_equal(acc.skipped(), np.zeros(5))
    empty = shapebias.TVAccumulator(2)
    assert np.isnan(empty.mean()).all() and np.isnan(empty.variance()).all()


def test_tv_accumulator_merge_state_pickle(rng):
    x = rng.standard_normal((30, 4, 8, 8))
    whole, a, b = (shapebias.TVAccumulator(4, beta=2.0) for _ in range(3))
    whole.update(x)
    a.update(x[:11])
    b.update(x[11:])
    a.merge(b)
    np.testing.assert_array_equal(a.count(), whole.count())
    np.testing.assert_allclose(a.mean(), whole.mean(), rtol=1e-13)
    np.testing.assert_allclose(a.variance(), whole.variance(), rtol=1e-12)
    s = whole.state()
    assert s["kind"] == "tv" and s["text"] == {"norm": "none", "nonfinite": "error"} and s["params"]["beta"] == 2.0
    assert all(v.dtype == np.float64 for v in s["arrays"].values())
    for copy in [shapebias.TVAccumulator.from_state(s), pickle.loads(pickle.dumps(whole))]:
        np.testing.assert_array_equal(copy.mean(), whole.mean())
        np.testing.assert_array_equal(copy.variance(), whole.variance())
        copy.update(x[:3])  # and it keeps working: the same as the original after the same update
    whole.update(x[:3])
    np.testing.assert_array_equal(copy.mean(), whole.mean())
    refuses(ValueError, a.merge, shapebias.TVAccumulator(3), match="cannot merge")
    refuses(ValueError, a.merge, shapebias.TVAccumulator(4, beta=1.0), match="cannot merge")
    refuses(ValueError, shapebias.TVAccumulator.from_state, {"kind": "spectrum", "params": {}, "text": {}, "arrays": {}},
            match="'spectrum'")
    refuses(ValueError, shapebias.TVAccumulator.from_state, {"kind": "tv"}, match="no 'params'")


def test_tv_accumulator_nonfinite(rng):
    x = rng.standard_normal((4, 3, 5, 5)).astype(np.float32)
    x[2, 1, 3, 3] = np.nan
    acc = shapebias.TVAccumulator(3)
    refuses(ValueError, acc.update, x, ids=np.array([10, 11, 12, 13]), match=["row 2", "input id 12", "channel 1"])
    assert acc.rows == 0 and acc.height == 0  # nothing added
    skip = shapebias.TVAccumulator(3, nonfinite="skip")
    skip.update(x)
    np.testing.assert_array_equal(skip.skipped(), [0, 1, 0])
    np.testing.assert_array_equal(skip.count(), [4, 3, 4])
    refuses(ValueError, shapebias.TVAccumulator, 3, nonfinite="zero", match="'zero'")
    refuses(ValueError, acc.update, np.ascontiguousarray(x[:, :2]), match="[B, 3, H, W]")
    refuses(ValueError, acc.update, x, ids=np.arange(3), match="3 ids for 4 rows")


def test_count_is_a_live_read_only_view(rng):
    acc = shapebias.TVAccumulator(3)
    view = acc.count()
    assert np.shares_memory(view, acc.count()) and not view.flags.writeable
    acc.update(rng.standard_normal((5, 3, 4, 4)))
    np.testing.assert_array_equal(view, [5, 5, 5])  # follows the update
    del acc
    assert view.sum() == 15  # the view keeps the accumulator alive
    with pytest.raises(ValueError):
        view[0] = 1


@pytest.mark.parametrize("shape", [(2, 3, 8, 10), (4, 7, 7), (16, 16)])
def test_radial_spectrum_against_numpy(rng, shape):
    x = rng.standard_normal(shape)
    x[(0,) * (len(shape) - 2)] = 2.0  # one constant map: all power at r = 0, fraction 0
    got = shapebias.radial_spectrum(x, cutoff=0.3)
    profile, frac = numpy_spectrum(x, cutoff=0.3)
    n = max(shape[-2:])
    np.testing.assert_allclose(got["frequency"], np.arange(profile.shape[-1]) / n)
    np.testing.assert_allclose(got["profile"], profile, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(got["high_fraction"], frac, rtol=1e-9, atol=1e-14)
    assert got["high_fraction"][(0,) * (len(shape) - 2)] == 0
    # float32 maps: the same spectrum, to float32 rounding of the input.
    np.testing.assert_allclose(np.asarray(shapebias.radial_spectrum(x.astype(np.float32))["profile"]),
                               profile, rtol=1e-5, atol=1e-6)
    refuses(ValueError, shapebias.radial_spectrum, x, cutoff=0.9, match="cutoff")


def test_spectrum_accumulator_against_numpy(rng):
    x = rng.standard_normal((9, 2, 6, 8)).astype(np.float32)
    x[4, 1, 0, 0] = np.inf
    acc = shapebias.SpectrumAccumulator(2, 6, 8, cutoff=0.25)
    acc.update(x[:5], threads=2)
    half = shapebias.SpectrumAccumulator(2, 6, 8)
    half.update(x[5:])
    acc.merge(half)
    with np.errstate(invalid="ignore"):
        profile, frac = numpy_spectrum(x)  # NaN for the map with Inf, which the accumulator skips
    ok = np.isfinite(x).all((2, 3))
    assert acc.rows == 9 and acc.skipped == 1 and (acc.height, acc.width, acc.cutoff) == (6, 8, 0.25)
    np.testing.assert_array_equal(acc.count(), ok.sum(0))
    for c in range(2):
        np.testing.assert_allclose(acc.profile()[c], profile[ok[:, c], c].mean(0), rtol=1e-6)
        np.testing.assert_allclose(acc.mean()[c], frac[ok[:, c], c].mean(), rtol=1e-6)
        np.testing.assert_allclose(acc.variance()[c], frac[ok[:, c], c].var(ddof=1), rtol=1e-5)
    np.testing.assert_allclose(acc.frequency(), np.arange(acc.profile().shape[1]) / 8)
    copy = pickle.loads(pickle.dumps(acc))
    np.testing.assert_array_equal(copy.profile(), acc.profile())
    np.testing.assert_array_equal(shapebias.SpectrumAccumulator.from_state(acc.state()).mean(), acc.mean())
    refuses(ValueError, acc.update, np.ascontiguousarray(x[:, :, :5]), match="[B, 2, 6, 8]")
    refuses(ValueError, acc.merge, shapebias.SpectrumAccumulator(2, 6, 8, cutoff=0.3), match="cannot merge")

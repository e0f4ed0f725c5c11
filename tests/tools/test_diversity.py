# SPDX-License-Identifier: MIT
"""`shapebias diversity` (issue 7): top-K inputs per unit and their diversity, checked against numpy
on stores written with h5py (full sort with the same tie rule, label counts and entropy, pairwise
distances in the embedding, sparsity and dead units), a live model against its own store, image
grids, and the error paths."""
import csv
import os

import h5py
import numpy as np
import pytest

from conftest import FMNIST, one_error_line, write_store


def read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def run_ok(sb, *args):
    p = sb("diversity", *args)
    assert p.returncode == 0, p.stderr.decode()
    return p


def numpy_top(acts, ids, k):
    """Per unit the K best rows by spatial max: higher score, then lower id."""
    score = acts.reshape(acts.shape[0], acts.shape[1], -1).max(axis=2)
    out = []
    for u in range(acts.shape[1]):
        order = sorted(range(len(ids)), key=lambda r: (-score[r, u], ids[r]))
        out.append([(ids[r], score[r, u]) for r in order[:k]])
    return out


@pytest.fixture
def stores(tmp_path):
    rng = np.random.default_rng(5)
    n, units = 120, 6
    ids = rng.permutation(1000)[:n]
    labels = rng.integers(0, 10, n)
    acts = np.round(rng.standard_normal((n, units, 4, 4)), 1).astype(np.float32)  # rounded: many ties
    acts[:, 0] = -1.0                        # unit 0 never exceeds 0: dead at eps 0, sparsity 0
    acts[: n // 4, 1] = np.abs(acts[: n // 4, 1]) + 0.5
    acts[n // 4:, 1] = -np.abs(acts[n // 4:, 1])  # unit 1 responds to a quarter of the inputs
    emb = rng.standard_normal((n, 8)).astype(np.float32)
    write_store(tmp_path / "S.h5", {"conv": acts, "emb": emb}, ids=ids, labels=labels)
    return tmp_path / "S.h5", acts, emb, ids, labels


def test_store_against_numpy(sb, stores, tmp_path):
    path, acts, emb, ids, labels = stores
    k = 10
    out = tmp_path / "out"
    run_ok(sb, path, "-l", "conv", "-k", k, "--embedding", "emb", "-o", out)
    units = read(out / "units.csv")
    assert {u["status"] for u in units} == {"paper metric unconfirmed"}
    top = numpy_top(acts, ids, k)
    lab = dict(zip(ids, labels))
    row = {int(i): r for r, i in enumerate(ids)}
    with h5py.File(out / "diversity.h5") as f:
        got_ids = f["S/conv/topk/id"][:].astype(np.int64)
        got_scores = f["S/conv/topk/score"][:]
    for u, t in enumerate(top):
        assert list(got_ids[u]) == [i for i, _ in t]
        np.testing.assert_array_equal(got_scores[u], [s for _, s in t])
        ls = [lab[i] for i, _ in t]
        _, counts = np.unique(ls, return_counts=True)
        p = counts / counts.sum()
        assert int(units[u]["distinct_labels"]) == len(counts)
        assert float(units[u]["label_entropy"]) == pytest.approx(-(p * np.log(p)).sum(), abs=1e-9)
        e = emb[[row[i] for i, _ in t]].astype(np.float64)
        cos, l2 = [], []
        for a in range(k):
            for b in range(a + 1, k):
                cos.append(1 - e[a] @ e[b] / np.linalg.norm(e[a]) / np.linalg.norm(e[b]))
                l2.append(np.linalg.norm(e[a] - e[b]))
        assert float(units[u]["mean_cosine_distance"]) == pytest.approx(np.mean(cos), rel=1e-8)
        assert float(units[u]["mean_l2_distance"]) == pytest.approx(np.mean(l2), rel=1e-8)
        assert 1 <= int(units[u]["facets"]) <= 8
    # Sparsity and dead units.
    assert units[0]["dead"] == "1" and float(units[0]["fraction_above"]) == 0
    assert float(units[1]["fraction_above"]) == pytest.approx(0.25)
    assert all(u["dead"] == "0" for u in units[1:])
    layer = read(out / "layers.csv")[0]
    assert layer["dead"] == "1" and int(layer["inputs"]) == len(ids)


def test_facets_of_separated_clusters(sb, tmp_path):
    """Unit 0's top inputs come from three well-separated embedding clusters; unit 1's from one."""
    rng = np.random.default_rng(2)
    n = 60
    acts = np.zeros((n, 2, 1, 1), np.float32)
    acts[:30, 0, 0, 0] = 10 + np.arange(30)       # rows 0..29 are unit 0's top-30
    acts[30:, 1, 0, 0] = 10 + np.arange(30)       # rows 30..59 unit 1's
    emb = rng.standard_normal((n, 16)).astype(np.float32) * 0.05
    centres = np.eye(16)[:3] * 10
    emb[:30] += centres[np.arange(30) % 3]
    emb[30:] += np.eye(16)[5] * 10
    write_store(tmp_path / "S.h5", {"conv": acts, "emb": emb})
    for rule, want in [("silhouette", [3, 1]), ("bic", [3, 1])]:
        out = tmp_path / rule
        run_ok(sb, tmp_path / "S.h5", "-l", "conv", "-k", 30, "--embedding", "emb", "--facet-rule", rule, "-o", out)
        assert [int(u["facets"]) for u in read(out / "units.csv")] == want


def test_live_model_equals_its_store(sb, models, tmp_path):
    ids = tmp_path / "ids.txt"
    ids.write_text("\n".join(map(str, range(0, 600, 2))) + "\n")
    m = models / "fashion_cnn.pt"
    common = ["--normalize", "0.286/0.353"]
    p = sb("dump", m, FMNIST, *common, "--ids", ids, "-l", "features.2,classifier.1", "-o", tmp_path / "S.h5")
    assert p.returncode == 0, p.stderr.decode()
    run_ok(sb, m, "--data", FMNIST, *common, "--ids", ids, "-l", "features.2", "--embedding", "classifier.1", "--grids", "2",
           "-o", tmp_path / "live")
    run_ok(sb, tmp_path / "S.h5", "-l", "features.2", "--embedding", "classifier.1", "-o", tmp_path / "stored")
    a, b = read(tmp_path / "live" / "units.csv"), read(tmp_path / "stored" / "units.csv")
    assert a == b and len(a) == 32
    from PIL import Image
    g = Image.open(tmp_path / "live" / "grids" / "S_features.2_unit1.png")
    assert g.size == (7 * 15 + 1, 7 * 15 + 1)  # 7 x 7 crops of 14 px (half of 28) and 1 px gaps


def test_netdissect_thresholds_for_sparsity(sb, stores, tmp_path):
    path, acts, _, _, _ = stores
    d = tmp_path / "dissect"
    os.makedirs(d)
    th = np.linspace(-2, 2, acts.shape[1])
    with h5py.File(d / "dissect.h5", "w") as f:  # the documented dissect.h5 layout
        g = f.create_group("S/conv/result")
        g.attrs["kind"] = "dissection"
        g.attrs["state_format_version"] = 1
        g.create_dataset("threshold", data=th)
    out = tmp_path / "out"
    run_ok(sb, path, "-l", "conv", "-k", 5, "--thresholds", d, "-o", out)
    mx = acts.reshape(acts.shape[0], acts.shape[1], -1).max(axis=2).astype(np.float64)  # compared in double
    for u, row in enumerate(read(out / "units.csv")):
        assert float(row["threshold"]) == pytest.approx(th[u])
        assert float(row["fraction_above"]) == pytest.approx((mx[:, u] > th[u]).mean())


def test_k_larger_than_the_data_set(sb, stores, tmp_path):
    path = stores[0]
    p = sb("diversity", path, "-l", "conv", "-k", 500, "-o", tmp_path / "o")
    assert p.returncode == 1
    one_error_line(p, "K = 500 but only 120 inputs")
    assert not os.path.exists(tmp_path / "o") and not os.path.exists(tmp_path / "o.partial")


def test_embedding_layer_with_no_inputs(sb, stores, tmp_path):
    write_store(tmp_path / "E.h5", {"emb": np.ones((3, 4), np.float32)}, ids=[5000, 5001, 5002])
    p = sb("diversity", stores[0], "-l", "conv", "-k", 5, "--embedding", "emb", "--embedding-source", tmp_path / "E.h5",
           "-o", tmp_path / "o")
    assert p.returncode == 1
    one_error_line(p, "embedding layer 'emb' has no inputs")


def test_nan_activation(sb, tmp_path):
    a = np.ones((10, 2, 3, 3), np.float32)
    a[4, 1, 2, 0] = np.nan
    write_store(tmp_path / "S.h5", {"conv": a})
    p = sb("diversity", tmp_path / "S.h5", "-k", 3, "-o", tmp_path / "o")
    assert p.returncode == 1
    one_error_line(p, "layer 'conv'", "NaN")


@pytest.mark.parametrize("args,frag", [
    (["--grids", "2"], "--grids needs --data"),
    (["--rank", "median"], "--rank"),
    (["-k", "0"], "--top-k"),
])
def test_usage_errors(sb, stores, tmp_path, args, frag):
    p = sb("diversity", stores[0], "-l", "conv", *args, "-o", tmp_path / "o")
    assert p.returncode == 2
    one_error_line(p, frag)

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


@pytest.mark.parametrize("k,batch", [(10, 256), (3, 7)])  # (3, 7): the labels kept for the top-K are pruned often
def test_store_against_numpy(sb, stores, tmp_path, k, batch):
    path, acts, emb, ids, labels = stores
    out = tmp_path / "out"
    run_ok(sb, path, "-l", "conv", "-k", k, "--embedding", "emb", "--batch-size", batch, "-o", out)
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
    layers = read(out / "layers.csv")
    assert len(layers) == 1 and layers[0]["dead"] == "1"
    check_layer_row(layers[0], units, len(ids))


def column(units, name):
    """A units.csv column as floats (NaN for an empty cell)."""
    return np.array([float(u[name]) if u[name] != "" else np.nan for u in units])


def layer_means(units):
    """The per-layer aggregates of layers.csv, computed with numpy from units.csv rows."""
    return {
        "units": len(units),
        "dead": int(column(units, "dead").sum()),
        "mean_distinct_labels": np.mean(column(units, "distinct_labels")),
        "median_distinct_labels": np.median(column(units, "distinct_labels")),
        "mean_label_entropy": np.mean(column(units, "label_entropy")),
        "mean_cosine_distance": np.nanmean(column(units, "mean_cosine_distance")),
        "median_cosine_distance": np.nanmedian(column(units, "mean_cosine_distance")),
        "mean_l2_distance": np.nanmean(column(units, "mean_l2_distance")),
        "mean_facets": np.nanmean(column(units, "facets")),
        "mean_fraction_above": np.mean(column(units, "fraction_above")),
    }


def check_layer_row(row, units, inputs):
    """Every aggregate column of a layers.csv row against numpy over that layer's units.csv rows."""
    assert row["status"] == "paper metric unconfirmed" and int(row["inputs"]) == inputs
    for col, want in layer_means(units).items():
        assert float(row[col]) == pytest.approx(want, rel=1e-9, abs=1e-12), col


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


def test_two_networks_and_differences(sb, models, tmp_path):
    """Two different models (the fashion CNN with two weight seeds) on the same inputs, both measured
    in one reference embedding (S's classifier.1): per-unit measures, layers.csv and differences.csv
    (R − S of the layer means) against numpy on the dumped activations."""
    import subprocess
    import sys
    from conftest import SOURCE
    subprocess.run([sys.executable, os.path.join(SOURCE, "scripts", "make_models.py"), str(tmp_path), "fashion_cnn", "--seed",
                    "1", "--as", "other_cnn"], check=True, capture_output=True)
    ids = tmp_path / "ids.txt"
    ids.write_text("\n".join(map(str, range(0, 400, 2))) + "\n")
    acts, emb = {}, None
    for net, m in [("S", models / "fashion_cnn.pt"), ("R", tmp_path / "other_cnn.pt")]:
        p = sb("dump", m, FMNIST, "--normalize", "0.286/0.353", "--ids", ids, "-l", "features.2,classifier.1",
               "-o", tmp_path / f"{net}.h5")
        assert p.returncode == 0, p.stderr.decode()
        with h5py.File(tmp_path / f"{net}.h5") as f:
            acts[net] = f["activations/features.2"][:]
            if net == "S":
                emb, got_ids, labels = f["activations/classifier.1"][:], f["index/input_id"][:], f["index/label"][:]
    assert not np.array_equal(acts["S"], acts["R"])
    k = 12
    out = tmp_path / "out"
    run_ok(sb, tmp_path / "S.h5", tmp_path / "R.h5", "-l", "features.2", "-k", k, "--embedding", "classifier.1",
           "--embedding-source", tmp_path / "S.h5", "-o", out)
    units = read(out / "units.csv")
    row = {int(i): r for r, i in enumerate(got_ids)}
    lab = dict(zip(got_ids.tolist(), labels.tolist()))
    for net in "SR":
        mine = [u for u in units if u["network"] == net]
        assert len(mine) == 32
        for u, t in enumerate(numpy_top(acts[net], got_ids, k)):
            _, counts = np.unique([lab[i] for i, _ in t], return_counts=True)
            p = counts / counts.sum()
            assert int(mine[u]["distinct_labels"]) == len(counts)
            assert float(mine[u]["label_entropy"]) == pytest.approx(-(p * np.log(p)).sum(), abs=1e-9)
            e = emb[[row[i] for i, _ in t]].astype(np.float64)
            n = np.linalg.norm(e, axis=1)
            iu = np.triu_indices(k, 1)
            if np.all(n > 0):
                cos = 1 - (e @ e.T / np.outer(n, n))[iu]
                assert float(mine[u]["mean_cosine_distance"]) == pytest.approx(np.clip(cos, 0, 2).mean(), rel=1e-8, abs=1e-12)
            l2 = np.linalg.norm(e[:, None] - e[None], axis=2)[iu]
            assert float(mine[u]["mean_l2_distance"]) == pytest.approx(l2.mean(), rel=1e-8)
            mx = acts[net][:, u].reshape(len(got_ids), -1).max(axis=1)
            assert float(mine[u]["fraction_above"]) == pytest.approx((mx > 0).mean(), abs=1e-12)
            assert mine[u]["dead"] == str(int(mx.max() <= 0))
    layers = {r["network"]: r for r in read(out / "layers.csv")}
    means = {}
    for net in "SR":
        mine = [u for u in units if u["network"] == net]
        check_layer_row(layers[net], mine, len(got_ids))
        means[net] = layer_means(mine)
    diffs = read(out / "differences.csv")
    assert [d["measure"] for d in diffs] == ["mean_distinct_labels", "mean_label_entropy", "mean_cosine_distance",
                                             "mean_l2_distance", "mean_facets", "mean_fraction_above", "dead"]
    for d in diffs:
        assert d["layer"] == "features.2" and d["status"] == "paper metric unconfirmed"
        s_, r_ = means["S"][d["measure"]], means["R"][d["measure"]]
        assert float(d["S"]) == pytest.approx(s_, rel=1e-9) and float(d["R"]) == pytest.approx(r_, rel=1e-9)
        assert float(d["R_minus_S"]) == pytest.approx(r_ - s_, rel=1e-8, abs=1e-9)
    assert any(float(d["R_minus_S"]) != 0 for d in diffs)
    # One network: no differences.
    run_ok(sb, tmp_path / "S.h5", "-l", "features.2", "-k", k, "-o", tmp_path / "one")
    assert not os.path.exists(tmp_path / "one" / "differences.csv")


def test_stream_input(sb, models, tmp_path):
    """`shapebias dump … -o - | shapebias diversity -` gives what the same activations in a store give."""
    import subprocess
    ids = tmp_path / "ids.txt"
    ids.write_text("\n".join(map(str, range(150))) + "\n")
    dump = [sb.exe, "dump", str(models / "fashion_cnn.pt"), FMNIST, "--normalize", "0.286/0.353", "--ids", str(ids),
            "-l", "features.2,classifier.1", "--quiet"]
    assert subprocess.run(dump + ["-o", str(tmp_path / "S.h5")], capture_output=True).returncode == 0
    common = ["-l", "features.2", "-k", "7", "--embedding", "classifier.1", "--embedding-source", str(tmp_path / "S.h5")]
    piped = subprocess.run(" ".join([*map(shlex_quote, dump), "-o", "-", "|", shlex_quote(sb.exe), "diversity", "-",
                                     *map(shlex_quote, common), "-o", shlex_quote(str(tmp_path / "piped"))]),
                           shell=True, capture_output=True)
    assert piped.returncode == 0, piped.stderr.decode()
    run_ok(sb, tmp_path / "S.h5", *common, "-o", tmp_path / "stored")
    for f in ["units.csv", "layers.csv"]:
        assert (tmp_path / "piped" / f).read_text() == (tmp_path / "stored" / f).read_text()
    with h5py.File(tmp_path / "piped" / "diversity.h5") as a, h5py.File(tmp_path / "stored" / "diversity.h5") as b:
        np.testing.assert_array_equal(a["S/features.2/topk/id"][:], b["S/features.2/topk/id"][:])
    # A stream as its own embedding source would be read twice.
    p = sb("diversity", "-", "-l", "features.2", "--embedding", "classifier.1", "-o", tmp_path / "o", input=b"")
    assert p.returncode == 2
    one_error_line(p, "--embedding-source")


def shlex_quote(s):
    import shlex
    return shlex.quote(str(s))


def test_rank_by_mean(sb, tmp_path):
    """--rank mean: the K best rows by spatial mean (higher, then lower id), on integer maps whose
    means are exact and often tied."""
    rng = np.random.default_rng(8)
    n = 90
    ids = rng.permutation(500)[:n]
    acts = rng.integers(-3, 4, (n, 5, 3, 3)).astype(np.float32)
    write_store(tmp_path / "S.h5", {"conv": acts}, ids=ids)
    k = 9
    run_ok(sb, tmp_path / "S.h5", "-k", k, "--rank", "mean", "-o", tmp_path / "mean")
    run_ok(sb, tmp_path / "S.h5", "-k", k, "-o", tmp_path / "max")
    score = acts.reshape(n, 5, -1).astype(np.float64).mean(axis=2)
    with h5py.File(tmp_path / "mean" / "diversity.h5") as f, h5py.File(tmp_path / "max" / "diversity.h5") as g:
        got, by_max = f["S/conv/topk/id"][:].astype(np.int64), g["S/conv/topk/id"][:].astype(np.int64)
        np.testing.assert_allclose(f["S/conv/topk/score"][:], [sorted(score[:, u])[::-1][:k] for u in range(5)], rtol=1e-15)
    for u in range(5):
        order = sorted(range(n), key=lambda r: (-score[r, u], ids[r]))
        assert list(got[u]) == [ids[r] for r in order[:k]]
    assert not np.array_equal(got, by_max)
    assert read(tmp_path / "mean" / "units.csv")[0]["k"] == str(k)
    import json
    assert json.load(open(tmp_path / "mean" / "provenance.json"))["run"]["params"]["rank"] == "mean"


def test_dead_eps(sb, tmp_path):
    """A unit is dead when its largest spatial max is <= --dead-eps."""
    a = np.zeros((20, 3, 2, 2), np.float32)
    a[5, 1, 1, 0] = 0.25  # unit 1's largest value (exact in float32)
    a[:, 2] = 1.0         # unit 2 is alive at any eps below 1
    a[:, 0] = -0.5        # unit 0 never exceeds 0
    write_store(tmp_path / "S.h5", {"conv": a})
    for eps, dead in [("0", [1, 0, 0]), ("0.2", [1, 0, 0]), ("0.25", [1, 1, 0]), ("0.5", [1, 1, 0]), ("-0.6", [0, 0, 0])]:
        out = tmp_path / f"e{eps}"
        run_ok(sb, tmp_path / "S.h5", "-k", 3, "--dead-eps", eps, "-o", out)
        units = read(out / "units.csv")
        assert [int(u["dead"]) for u in units] == dead, eps
        assert [float(u["max"]) for u in units] == [-0.5, 0.25, 1.0]
        assert int(read(out / "layers.csv")[0]["dead"]) == sum(dead)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_embedding(sb, stores, tmp_path, bad):
    """A NaN or Inf in the embedding of a top-K input is one error naming the source, the layer and
    the input id."""
    path, acts, emb, ids, labels = stores
    top = numpy_top(acts, ids, 5)
    victim = top[2][0][0]  # unit 2's best input
    e = emb.copy()
    e[list(ids).index(victim), 3] = bad
    write_store(tmp_path / "E.h5", {"emb": e}, ids=ids, labels=labels)
    p = sb("diversity", path, "-l", "conv", "-k", 5, "--embedding", "emb", "--embedding-source", tmp_path / "E.h5",
           "-o", tmp_path / "o")
    assert p.returncode == 1
    one_error_line(p, "E.h5", "embedding layer 'emb'", "NaN" if np.isnan(bad) else "Inf", f"input id {victim}", "channel 3")
    assert not os.path.exists(tmp_path / "o") and not os.path.exists(tmp_path / "o.partial")


def test_all_zero_embedding_gives_l2_only(sb, stores, tmp_path):
    """An all-zero embedding row has no cosine: that unit's cosine is empty, its L2 is still given."""
    path, acts, emb, ids, labels = stores
    top = numpy_top(acts, ids, 5)
    victim = top[3][0][0]
    e = emb.copy()
    e[list(ids).index(victim)] = 0
    write_store(tmp_path / "E.h5", {"emb": e}, ids=ids, labels=labels)
    run_ok(sb, path, "-l", "conv", "-k", 5, "--embedding", "emb", "--embedding-source", tmp_path / "E.h5", "-o", tmp_path / "o")
    units = read(tmp_path / "o" / "units.csv")
    row = {int(i): r for r, i in enumerate(ids)}
    for u, t in enumerate(top):
        x = e[[row[i] for i, _ in t]].astype(np.float64)
        l2 = np.linalg.norm(x[:, None] - x[None], axis=2)[np.triu_indices(5, 1)].mean()
        assert float(units[u]["mean_l2_distance"]) == pytest.approx(l2, rel=1e-8)
        assert (units[u]["mean_cosine_distance"] == "") == (victim in [i for i, _ in t])


# (width, height) of each image and where its bright spot is (row, column), inside every centre crop below.
SPOTS = [((120, 40), (14, 66)), ((40, 90), (52, 12)), ((64, 64), (20, 44)), ((30, 50), (30, 8))]


@pytest.fixture(scope="module")
def spot_folder(tmp_path_factory):
    """An ImageFolder of black images of several sizes and aspect ratios, each with one bright
    pyramid (peak 255 at a known pixel, 25 levels less per ring, radius 5)."""
    from PIL import Image
    root = tmp_path_factory.mktemp("spots")
    os.makedirs(root / "a")
    for i, ((w, h), (py, px)) in enumerate(SPOTS):
        y, x = np.mgrid[0:h, 0:w]
        ring = np.maximum(np.abs(y - py), np.abs(x - px))
        img = np.where(ring <= 5, 255 - 25 * ring, 0).astype(np.uint8)
        Image.fromarray(np.stack([img] * 3, -1)).save(root / "a" / f"img{i}.png")
    return root


def expected_view(h, w, resize, crop):
    """torchvision's Resize(resize) + CenterCrop(crop) on an h x w image: the resized size and the
    crop's corner in it (negative where it pads)."""
    nh, nw = (int(resize * h / w), resize) if w <= h else (resize, int(resize * w / h))
    corner = [-((crop - s) // 2) if crop > s else int(round((s - crop) / 2)) for s in (nh, nw)]  # round: half to even
    return nh, nw, corner[0], corner[1]


@pytest.mark.parametrize("resize,crop", [(32, 24), (24, 28)])  # crop inside the resized image, and padding it
@pytest.mark.parametrize("how", ["store", "live"])
def test_grid_cells_follow_resize_and_crop(sb, models, spot_folder, tmp_path, resize, crop, how):
    """The map of activations made with --resize/--crop covers the centre crop of the resized image:
    a grid cell is centred on the argmax mapped back through both (checked on the `input` tap, whose
    argmax is the bright spot), and the default cell is half the crop in image pixels."""
    from PIL import Image
    m, pre = models / "resnet50.pt", ["--resize", resize, "--crop", crop]
    if how == "store":
        p = sb("dump", m, spot_folder, "-l", "input", *pre, "-o", tmp_path / "S.h5")
        assert p.returncode == 0, p.stderr.decode()
        run_ok(sb, tmp_path / "S.h5", "--data", spot_folder, "-l", "input", "-k", 4, "--grids", 1, "-o", tmp_path / "o")
    else:
        run_ok(sb, m, "--data", spot_folder, *pre, "-l", "input", "-k", 4, "--grids", 1, "-o", tmp_path / "o")
    with h5py.File(tmp_path / "o" / "diversity.h5") as f:
        ids, ys, xs = (f[f"S/input/topk/{a}"][0].astype(int) for a in ("id", "y", "x"))
    grid = np.asarray(Image.open(tmp_path / "o" / "grids" / "S_input_unit0.png").convert("RGB"))
    images = [np.asarray(Image.open(spot_folder / "a" / f"img{i}.png").convert("RGB")) for i in range(len(SPOTS))]
    (w, h), _ = SPOTS[ids[0]]
    nh, nw, _, _ = expected_view(h, w, resize, crop)
    c = int(max(crop * h / nh, crop * w / nw) / 2)  # half the crop, in pixels of the first image
    assert grid.shape == (2 * (c + 1) + 1, 2 * (c + 1) + 1, 3)
    for j, (i, y, x) in enumerate(zip(ids, ys, xs)):
        (w, h), (py, px) = SPOTS[i]
        nh, nw, top, left = expected_view(h, w, resize, crop)
        cy, cx = (y + 0.5 + top) * h / nh, (x + 0.5 + left) * w / nw  # the map is crop x crop: one cell per pixel
        y0, x0 = (int(np.copysign(np.floor(abs(v - c / 2) + 0.5), v - c / 2)) for v in (cy, cx))  # C's lround
        want = np.full((c, c, 3), 255, np.uint8)
        for a in range(c):
            for b in range(c):
                if 0 <= y0 + a < h and 0 <= x0 + b < w:
                    want[a, b] = images[i][y0 + a, x0 + b]
        gy, gx = (j // 2) * (c + 1) + 1, (j % 2) * (c + 1) + 1
        np.testing.assert_array_equal(grid[gy:gy + c, gx:gx + c], want, err_msg=f"cell {j} (image {i})")
        # The spot's peak is at the cell's centre, up to the argmax's cell size in image pixels.
        assert abs(py - y0 - c / 2) <= h / nh + 1 and abs(px - x0 - c / 2) <= w / nw + 1, (i, py - y0, px - x0, c)

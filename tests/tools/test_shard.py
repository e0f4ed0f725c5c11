# SPDX-License-Identifier: MIT
"""Scale-out (issue 10): --shard K/N selects the inputs whose id mod N is K, after --ids and --limit;
`shapebias merge` of the shards of a run equals the unsharded run for every statistic (dump and
attack stores, tv, dissect, diversity, eval); `mpirun -n 2 shapebias VERB --mpi` equals one process;
merges of parts that are not the shards of one run are refused, each with one line."""
import csv
import io
import json
import os
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest
from PIL import Image

import dissect_reference as ref
from conftest import FMNIST, SOURCE, one_error_line, write_store

N_IMAGES = 150


def rows(path):
    return list(csv.DictReader(io.StringIO(open(path).read())))


def same_table(a, b, rtol=1e-8):
    """Two CSV tables with the same cells: text equal, numbers equal to `rtol` (the CSVs keep ten
    significant digits, so sums in another order may differ in the last one)."""
    ra, rb = rows(a), rows(b)
    assert len(ra) == len(rb) and ra, (a, b)
    for x, y in zip(ra, rb):
        assert x.keys() == y.keys()
        for k in x:
            if x[k] == y[k]:
                continue
            assert x[k] and y[k], (k, x, y)
            np.testing.assert_allclose(float(y[k]), float(x[k]), rtol=rtol, atol=1e-12, err_msg=f"{a} {k}")


def ok(proc):
    assert proc.returncode == 0, proc.stderr.decode()
    return proc


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    """S and R: the Fashion-MNIST CNN with two seeds; AlexNet for dissection."""
    d = tmp_path_factory.mktemp("nets")
    make = [sys.executable, os.path.join(SOURCE, "scripts", "make_models.py"), str(d)]
    subprocess.run(make + ["fashion_cnn", "alexnet"], check=True, capture_output=True)
    subprocess.run(make + ["fashion_cnn", "--seed", "1", "--as", "fashion_r"], check=True, capture_output=True)
    return {"S": d / "fashion_cnn.pt", "R": d / "fashion_r.pt", "alexnet": d / "alexnet.pt"}


@pytest.fixture(scope="module")
def stores(sb, nets, tmp_path_factory):
    """Clean and noisy activations of S and R on the first N_IMAGES test images."""
    d = tmp_path_factory.mktemp("stores")
    for net in ("S", "R"):
        for name, extra in (("clean", []), ("noisy", ["--noise", "0.1", "--noise-seed", "3"])):
            ok(sb("dump", nets[net], FMNIST, "-l", "features.1,features.4,classifier.1", "--limit", N_IMAGES, "--quiet",
                  "-o", d / f"{net}-{name}.h5", *extra))
    return d


@pytest.fixture(scope="module")
def probe(sb, nets, tmp_path_factory):
    """A Broden-format probe set, and AlexNet's activations on it."""
    d = tmp_path_factory.mktemp("probe")
    subprocess.run([sys.executable, os.path.join(SOURCE, "scripts", "make_probe.py"), "--out", str(d / "probe"), "--count", "30",
                    "--image-size", "64", "--seg-size", "32", "--seed", "5"], check=True, capture_output=True)
    ok(sb("dump", nets["alexnet"], d / "probe", "--normalize", "netdissect", "-l", "features.1,features.4", "--quiet",
          "-o", d / "alexnet.h5"))
    return d


def store_ids(path):
    with h5py.File(path, "r") as f:
        return f["index/input_id"][:]


def last_record(path):
    with h5py.File(path, "r") as f:
        return json.loads(f["provenance/log"][-1])


def run_shards(sb, n, out, *args, suffix=""):
    """Runs shards 0 … n-1 of `args` into out.0 … out.(n-1) (+ suffix); returns their paths."""
    parts = [f"{out}.{k}{suffix}" for k in range(n)]
    for k, p in enumerate(parts):
        ok(sb(*args, "--shard", f"{k}/{n}", "-o", p, "--quiet"))
    return parts


# ---- the selection -------------------------------------------------------------------------------

def test_shards_cover_every_selected_id_once(sb, nets, tmp_path):
    """An unordered --ids list cut by --limit: shard K holds the ids ≡ K mod 3, in the list's order,
    whatever its batch size and thread count; together the shards hold the selection once."""
    ids = np.random.default_rng(4).permutation(500)[:90]
    (tmp_path / "ids.txt").write_text("\n".join(map(str, ids)) + "\n")
    selected = ids[:70]
    got = []
    for k, (batch, threads) in enumerate([(5, 1), (16, 2), (64, 1)]):
        out = tmp_path / f"s{k}.h5"
        ok(sb("dump", nets["S"], FMNIST, "-l", "features.1", "--ids", tmp_path / "ids.txt", "--limit", 70, "--shard", f"{k}/3",
              "--batch-size", batch, "-@", threads, "--quiet", "-o", out))
        mine = store_ids(out)
        assert list(mine) == [i for i in selected if i % 3 == k]
        assert last_record(out)["params"]["shard"] == {"index": k, "count": 3, "rule": "input id mod count = index"}
        got += list(mine)
    assert sorted(got) == sorted(selected) and len(set(got)) == len(got)
    # The same shard at another batch size and thread count: the same rows, bit for bit (convolutions).
    ok(sb("dump", nets["S"], FMNIST, "-l", "features.1", "--ids", tmp_path / "ids.txt", "--limit", 70, "--shard", "1/3",
          "--batch-size", 3, "-@", 1, "--quiet", "-o", tmp_path / "again.h5"))
    with h5py.File(tmp_path / "s1.h5") as a, h5py.File(tmp_path / "again.h5") as b:
        assert np.array_equal(a["index/input_id"][:], b["index/input_id"][:])
        assert np.array_equal(a["activations/features.1"][:], b["activations/features.1"][:])


def test_shard_usage_errors(sb, nets, stores, tmp_path):
    for bad in ["3/3", "1/0", "-1/2", "x", "1/2/3"]:
        p = sb("dump", nets["S"], FMNIST, "-l", "logits", "--shard", bad, "-o", tmp_path / "x.h5")
        assert p.returncode == 2
        one_error_line(p, "--shard", "K/N")
    p = sb("dump", nets["S"], FMNIST, "-l", "logits", "--limit", 2, "--shard", "2/3", "-o", tmp_path / "x.h5")
    assert p.returncode == 1
    one_error_line(p, "shard 2/3 holds none of the selected inputs")
    assert not (tmp_path / "x.h5").exists()
    p = sb("tv", stores / "S-clean.h5", "--shard", "0/2", "--mpi", "-o", tmp_path / "t")
    assert p.returncode == 2
    one_error_line(p, "--mpi", "--shard")
    p = sb("tv", "--weights", nets["S"], "--shard", "0/2")
    assert p.returncode == 2
    one_error_line(p, "--weights takes models only")


# ---- merge equals one run ------------------------------------------------------------------------

def test_dump_merge_equals_one_run(sb, nets, stores, tmp_path):
    parts = run_shards(sb, 3, tmp_path / "d", "dump", nets["S"], FMNIST, "-l", "features.1,logits", "--limit", N_IMAGES,
                       suffix=".h5")
    whole = tmp_path / "whole.h5"
    ok(sb("dump", nets["S"], FMNIST, "-l", "features.1,logits", "--limit", N_IMAGES, "--quiet", "-o", whole))
    merged = tmp_path / "merged.h5"
    ok(sb("merge", merged, parts[2], parts[0], parts[1], "--quiet"))
    with h5py.File(whole) as a, h5py.File(merged) as b:
        assert np.array_equal(a["index/input_id"][:], b["index/input_id"][:])
        assert np.array_equal(a["index/label"][:], b["index/label"][:])
        assert np.array_equal(a["activations/features.1"][:], b["activations/features.1"][:])
        # The linear layer's rounding depends on the batch's rows (BLAS blocking): equal to float32 rounding.
        np.testing.assert_allclose(b["activations/logits"][:], a["activations/logits"][:], rtol=1e-5, atol=1e-6)
        assert b.attrs["complete"] == 1
    rec = last_record(merged)
    assert rec["verb"] == "dump" and rec["params"]["rows"] == N_IMAGES and rec["params"]["shard"] is None
    assert rec["params"]["row_order"].startswith("input id")
    assert [p["shard"]["index"] for p in rec["merge"]["parts"]] == [0, 1, 2]
    assert rec["merge"]["step"]["verb"] == "merge"


def test_dump_merge_of_an_unordered_id_list_concatenates(sb, nets, tmp_path):
    (tmp_path / "ids.txt").write_text("7 2 9 4 1 8\n")
    parts = []
    for k in range(2):
        parts.append(tmp_path / f"p{k}.h5")
        ok(sb("dump", nets["S"], FMNIST, "-l", "logits", "--ids", tmp_path / "ids.txt", "--shard", f"{k}/2", "--quiet",
              "-o", parts[-1]))
    ok(sb("merge", tmp_path / "m.h5", parts[1], parts[0], "--quiet"))
    assert list(store_ids(tmp_path / "m.h5")) == [2, 4, 8, 7, 9, 1]  # shard 0's rows, then shard 1's
    assert last_record(tmp_path / "m.h5")["params"]["row_order"] == "the parts in shard order"


def test_attack_merge_equals_one_run(sb, nets, tmp_path):
    args = ["attack", nets["S"], FMNIST, "--limit", 24, "--eps", "0.03", "--alpha", "0.01", "--steps", 3, "--seed", 5]
    ok(sb(*args, "--quiet", "-o", tmp_path / "whole.h5"))
    parts = []
    for k in range(2):
        parts.append(tmp_path / f"a{k}.h5")
        ok(sb(*args, "--shard", f"{k}/2", "--quiet", "-o", parts[-1]))
    ok(sb("merge", tmp_path / "m.h5", *parts, "--quiet"))
    with h5py.File(tmp_path / "whole.h5") as a, h5py.File(tmp_path / "m.h5") as b:
        assert np.array_equal(a["index/input_id"][:], b["index/input_id"][:])
        for layer in ["clean_pred", "adv_pred"]:
            assert np.array_equal(a["activations/" + layer][:], b["activations/" + layer][:])
        np.testing.assert_allclose(b["activations/adversarial"][:], a["activations/adversarial"][:], atol=1e-5)
        np.testing.assert_allclose(b["activations/perturbation_linf"][:], a["activations/perturbation_linf"][:], atol=1e-5)
    s, m = last_record(tmp_path / "whole.h5")["summary"], last_record(tmp_path / "m.h5")["summary"]
    assert m["clean_accuracy"] == pytest.approx(s["clean_accuracy"], abs=1e-12)
    assert m["robust_accuracy"] == pytest.approx(s["robust_accuracy"], abs=1e-12)
    assert m["linf_max"] == pytest.approx(s["linf_max"], rel=1e-5)
    assert m["l2_mean"] == pytest.approx(s["l2_mean"], rel=1e-5)


def test_tv_merge_equals_one_run(sb, stores, tmp_path):
    args = ["tv", stores / "S-clean.h5", stores / "R-clean.h5", "--noisy", stores / "S-noisy.h5", stores / "R-noisy.h5",
            "-l", "features.1,features.4"]
    ok(sb(*args, "-o", tmp_path / "whole", "--quiet"))
    parts = run_shards(sb, 3, tmp_path / "tv", *args)
    ok(sb("merge", tmp_path / "m", *parts[::-1], "--quiet"))
    for f in ["layers.csv", "channels.csv", "flagged.csv", "spectra.csv"]:
        same_table(tmp_path / "whole" / f, tmp_path / "m" / f)
    assert len(rows(tmp_path / "m" / "flagged.csv")) > 0  # the outlier rule is exercised
    with h5py.File(tmp_path / "m" / "tv.h5") as f:
        assert f["S/features.4/tv_clean"].attrs["rows"] == N_IMAGES
        assert json.loads(f.attrs["partial"])["shards"] == [0, 1, 2]
    run = json.load(open(tmp_path / "m" / "provenance.json"))["run"]
    assert run["params"]["images"] == N_IMAGES and run["params"]["shard"] is None
    assert len(run["merge"]["parts"]) == 3
    # A shard's own tables are those of its inputs.
    assert int(rows(tmp_path / "tv.1" / "layers.csv")[0]["images"]) == len(range(1, N_IMAGES, 3))


def test_tv_live_merge_equals_one_run(sb, nets, tmp_path):
    (tmp_path / "ids.txt").write_text("\n".join(map(str, range(0, 180, 3))) + "\n")  # odd and even ids
    args = ["tv", nets["S"], "--data", FMNIST, "--ids", tmp_path / "ids.txt", "--noise", "0.1", "-l", "features.4"]
    ok(sb(*args, "-o", tmp_path / "whole", "--quiet"))
    parts = run_shards(sb, 2, tmp_path / "tv", *args)
    ok(sb("merge", tmp_path / "m", *parts, "--quiet"))
    for f in ["layers.csv", "channels.csv", "spectra.csv"]:
        same_table(tmp_path / "whole" / f, tmp_path / "m" / f)


def test_dissect_exact_merge_equals_one_run(sb, probe, tmp_path):
    """Exact thresholds: the threshold passes merge to the run's thresholds, the tallies to its tallies."""
    args = ["dissect", probe / "alexnet.h5", "--probe", probe / "probe", "--quantile", "exact"]
    ok(sb(*args, "-o", tmp_path / "whole", "--quiet"))
    firsts = run_shards(sb, 3, tmp_path / "t", *args)
    assert not (tmp_path / "t.0" / "units.csv").exists()  # a threshold pass writes no tables
    ok(sb("merge", tmp_path / "thresholds", *firsts, "--quiet"))
    seconds = run_shards(sb, 3, tmp_path / "c", *args, "--thresholds", tmp_path / "thresholds")
    ok(sb("merge", tmp_path / "m", *seconds, "--quiet"))
    for f in ["units.csv", "layers.csv", "concepts.csv", "concept_units.csv"]:
        assert open(tmp_path / "whole" / f).read() == open(tmp_path / "m" / f).read(), f
    with h5py.File(tmp_path / "whole" / "dissect.h5") as a, h5py.File(tmp_path / "m" / "dissect.h5") as b:
        for layer in ["features.1", "features.4"]:
            g = f"S/{layer}"
            assert np.array_equal(a[g + "/result/threshold"][:], b[g + "/result/threshold"][:])
            for t in ["ground_truth", "intersection", "activation"]:
                assert np.array_equal(a[f"{g}/tally/{t}"][:], b[f"{g}/tally/{t}"][:])
            assert np.array_equal(a[g + "/result/iou"][:], b[g + "/result/iou"][:])
    # The merged threshold pass holds the run's thresholds too (diversity --thresholds reads them).
    with h5py.File(tmp_path / "whole" / "dissect.h5") as a, h5py.File(tmp_path / "thresholds" / "dissect.h5") as b:
        assert np.array_equal(a["S/features.4/result/threshold"][:], b["S/features.4/result/threshold"][:])


def test_dissect_sketch_merge_within_its_bound(sb, probe, tmp_path):
    """Sketch thresholds: merged sketches give thresholds whose rank among every value is within the
    recorded rank-error bound of the level; the tallies at those thresholds equal one run's at them."""
    args = ["dissect", probe / "alexnet.h5", "--probe", probe / "probe", "-l", "features.4", "--resolution", 64]
    firsts = run_shards(sb, 2, tmp_path / "t", *args)
    ok(sb("merge", tmp_path / "thresholds", *firsts, "--quiet"))
    seconds = run_shards(sb, 2, tmp_path / "c", *args, "--thresholds", tmp_path / "thresholds")
    ok(sb("merge", tmp_path / "m", *seconds, "--quiet"))
    ok(sb(*args, "--thresholds", tmp_path / "thresholds", "-o", tmp_path / "at", "--quiet"))
    for f in ["units.csv", "layers.csv", "concepts.csv"]:
        assert open(tmp_path / "at" / f).read() == open(tmp_path / "m" / f).read(), f
    with h5py.File(probe / "alexnet.h5") as f:
        ids, acts = f["index/input_id"][:], f["activations/features.4"][:]
    labelled = set(ref.read_probe(str(probe / "probe")).rows)  # the images dissect reads
    acts = acts[[i for i, x in enumerate(ids) if int(x) in labelled]]
    bound = json.load(open(tmp_path / "m" / "provenance.json"))["run"]["params"]["rank_error_bound"]["S"]["features.4"]
    assert 0 < bound < 1
    with h5py.File(tmp_path / "m" / "dissect.h5") as f:
        t = f["S/features.4/result/threshold"][:]
    level = 994 / 999
    values = acts.transpose(1, 0, 2, 3).reshape(acts.shape[1], -1).astype(np.float64)
    below = (values < t[:, None].astype(np.float64)).mean(1)
    at_most = (values <= t[:, None].astype(np.float64)).mean(1)
    # The threshold's rank interval [below, at_most] comes within the bound of the level.
    gap = np.maximum(0, np.maximum(below - level, level - at_most))
    assert np.all(gap <= bound + 1e-12), (gap.max(), bound)


def test_diversity_merge_equals_one_run(sb, stores, tmp_path):
    args = ["diversity", stores / "S-clean.h5", stores / "R-clean.h5", "-l", "features.1,features.4", "-k", 7,
            "--embedding", "classifier.1", "--embedding-source", stores / "S-clean.h5", "--threshold", "0.1"]
    ok(sb(*args, "-o", tmp_path / "whole", "--quiet"))
    parts = run_shards(sb, 3, tmp_path / "v", *args)
    ok(sb("merge", tmp_path / "m", *parts, "--quiet"))
    for f in ["units.csv", "layers.csv", "differences.csv"]:
        assert open(tmp_path / "whole" / f).read() == open(tmp_path / "m" / f).read(), f
    with h5py.File(tmp_path / "whole" / "diversity.h5") as a, h5py.File(tmp_path / "m" / "diversity.h5") as b:
        for g in ["S/features.4/topk", "R/features.1/topk", "S/features.4/activity"]:
            for k in a[g]:
                assert np.array_equal(a[g][k][:], b[g][k][:]), (g, k)


@pytest.fixture(scope="module")
def eval_data(tmp_path_factory):
    """Cue-conflict stimuli named <shape><n>-<texture><m>.png with a two-category mapping of the ten
    Fashion-MNIST classes, an ImageNet-C-style tree (one corruption, two severities) and a baseline."""
    d = tmp_path_factory.mktemp("evaldata")
    rng = np.random.default_rng(2)
    (d / "map.json").write_text(json.dumps({"categories": ["top", "shoe"], "indices": {"top": [0, 2, 3, 4, 6],
                                                                                    "shoe": [5, 7, 9]}}))
    os.makedirs(d / "stimuli")
    for i in range(12):
        a, b = ("top", "shoe") if i % 2 else ("shoe", "top")
        Image.fromarray(rng.integers(0, 255, (28, 28), dtype=np.uint8)).save(d / "stimuli" / f"{a}{i}-{b}{i}.png")
    for sev in (1, 2):
        for c in ("c0", "c1"):
            os.makedirs(d / "imc" / "blur" / str(sev) / c)
            for i in range(3):
                Image.fromarray(rng.integers(0, 255, (28, 28), dtype=np.uint8)).save(d / "imc" / "blur" / str(sev) / c / f"{i}.png")
    (d / "baseline.csv").write_text("corruption,severity,accuracy\nblur,1,0.5\nblur,2,0.4\n")
    return d


def test_eval_merge_equals_one_run(sb, nets, eval_data, tmp_path):
    (tmp_path / "ids.txt").write_text("\n".join(map(str, range(200))) + "\n")
    # S twice, so that the CL set (the inputs both get right) is not empty for random weights.
    args = ["eval", nets["S"], nets["S"], FMNIST, "--ids", tmp_path / "ids.txt", "--channels", 1, "-k", 3,
            "--variant", "noisy=noise:0.2",
            "--variant", "scrambled=scramble:2", "--cue-conflict", eval_data / "stimuli", "--mapping", eval_data / "map.json",
            "--imagenet-c", eval_data / "imc", "--baseline", eval_data / "baseline.csv"]
    whole = ok(sb(*args, "-o", tmp_path / "whole", "--quiet"))
    parts = run_shards(sb, 2, tmp_path / "e", *args)
    merged = ok(sb("merge", tmp_path / "m", *parts, "--quiet"))
    assert merged.stdout == whole.stdout  # the accuracy table
    for f in ["accuracy.csv", "cl_ids.txt", "shape_bias.csv", "cue_conflict_decisions.csv", "imagenet_c_accuracy.csv",
              "imagenet_c_ce.csv", "cue-conflict.txt"]:
        assert open(tmp_path / "whole" / f).read() == open(tmp_path / "m" / f).read(), f
    table = rows(tmp_path / "m" / "accuracy.csv")
    assert [r["variant"] for r in table] == ["clean (all inputs)", "clean", "noisy", "scrambled"]
    assert int(table[1]["inputs"]) > 0
    for name in sorted(os.listdir(tmp_path / "whole" / "stores")):
        with h5py.File(tmp_path / "whole" / "stores" / name) as a, h5py.File(tmp_path / "m" / "stores" / name) as b:
            assert np.array_equal(a["index/input_id"][:], b["index/input_id"][:]), name
            assert np.array_equal(a["activations/correct_top1"][:], b["activations/correct_top1"][:]), name
            np.testing.assert_allclose(b["activations/logits"][:], a["activations/logits"][:], rtol=1e-5, atol=1e-6)
    assert sorted(os.listdir(tmp_path / "whole" / "stores")) == sorted(os.listdir(tmp_path / "m" / "stores"))
    a = json.load(open(tmp_path / "whole" / "accuracy.json"))["provenance"]
    b = json.load(open(tmp_path / "m" / "accuracy.json"))["provenance"]
    assert a["shape_bias"] == b["shape_bias"] and a["mce"] == b["mce"]


# ---- MPI -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mpirun(sb):
    exe = shutil.which("mpirun")
    if not exe or not os.path.exists(os.path.join(os.path.dirname(sb.exe), "libshapebias_mpi.so")):
        pytest.skip("no mpirun, or shapebias built without MPI")
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMPI_MCA_rmaps_base_oversubscribe="1")

    def run(n, *args):
        return subprocess.run([exe, "-n", str(n), sb.exe, *map(str, args)], capture_output=True, env=env, timeout=600)
    return run


def test_mpi_two_ranks_equal_one_process(sb, mpirun, nets, stores, probe, tmp_path):
    # tv: states travel as file images to rank 0.
    tv = ["tv", stores / "S-clean.h5", "--noisy", stores / "S-noisy.h5", "-l", "features.4"]
    ok(sb(*tv, "-o", tmp_path / "tv", "--quiet"))
    ok(mpirun(2, *tv, "--mpi", "-@", 1, "-o", tmp_path / "tv-mpi", "--quiet"))
    for f in ["layers.csv", "channels.csv", "flagged.csv", "spectra.csv"]:
        same_table(tmp_path / "tv" / f, tmp_path / "tv-mpi" / f)
    run = json.load(open(tmp_path / "tv-mpi" / "provenance.json"))["run"]
    assert run["merge"]["step"]["ranks"] == 2 and "Open MPI" in run["merge"]["step"]["library"]
    # dissect, live: rank 0 merges the quantiles and broadcasts the thresholds between the two passes.
    dis = ["dissect", nets["alexnet"], "--probe", probe / "probe", "-l", "features.4", "--quantile", "exact"]
    ok(sb(*dis, "-o", tmp_path / "dis", "--quiet"))
    ok(mpirun(2, *dis, "--mpi", "-@", 1, "-o", tmp_path / "dis-mpi", "--quiet"))
    for f in ["units.csv", "layers.csv", "concepts.csv"]:
        assert open(tmp_path / "dis" / f).read() == open(tmp_path / "dis-mpi" / f).read(), f
    # diversity
    div = ["diversity", stores / "S-clean.h5", "-l", "features.4", "-k", 5, "--embedding", "classifier.1"]
    ok(sb(*div, "-o", tmp_path / "div", "--quiet"))
    ok(mpirun(2, *div, "--mpi", "-@", 1, "-o", tmp_path / "div-mpi", "--quiet"))
    assert open(tmp_path / "div" / "units.csv").read() == open(tmp_path / "div-mpi" / "units.csv").read()
    # dump: each rank writes a part store, rank 0 merges them and removes the parts.
    dump = ["dump", nets["S"], FMNIST, "-l", "features.1", "--limit", 40]
    ok(sb(*dump, "-o", tmp_path / "d.h5", "--quiet"))
    ok(mpirun(2, *dump, "--mpi", "-@", 1, "-o", tmp_path / "d-mpi.h5", "--quiet"))
    with h5py.File(tmp_path / "d.h5") as a, h5py.File(tmp_path / "d-mpi.h5") as b:
        assert np.array_equal(a["index/input_id"][:], b["index/input_id"][:])
        assert np.array_equal(a["activations/features.1"][:], b["activations/features.1"][:])
    assert sorted(os.listdir(tmp_path)) == ["d-mpi.h5", "d.h5", "dis", "dis-mpi", "div", "div-mpi", "tv", "tv-mpi"]


def test_mpi_failure_is_one_line(sb, mpirun, stores, tmp_path):
    p = mpirun(2, "tv", stores / "S-clean.h5", tmp_path / "missing.h5", "--mpi", "-o", tmp_path / "out")
    assert p.returncode != 0
    ours = [l for l in p.stderr.decode().splitlines() if l.startswith("shapebias")]
    assert len(ours) == 1 and "missing.h5" in ours[0], p.stderr.decode()
    assert not (tmp_path / "out").exists()


def test_mpi_needs_a_store_output_and_the_plugin(sb, nets, stores, tmp_path):
    p = sb("dump", nets["S"], FMNIST, "-l", "logits", "--mpi", "-o", tmp_path / "x.stream")
    assert p.returncode == 2
    one_error_line(p, "--mpi", "FILE.h5")
    alone = tmp_path / "bin" / "shapebias"  # the command without its plugins beside it
    os.makedirs(alone.parent)
    shutil.copy(sb.exe, alone)
    p = subprocess.run([alone, "tv", stores / "S-clean.h5", "--mpi", "-o", tmp_path / "t"], capture_output=True)
    assert p.returncode == 2
    one_error_line(p, "--mpi", "built without MPI")


# ---- refusals ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def parts(sb, nets, stores, tmp_path_factory):
    """Shard outputs to combine wrongly."""
    d = tmp_path_factory.mktemp("parts")
    tv = ["tv", stores / "S-clean.h5", "-l", "features.4", "--quiet"]
    for name, args in {"tv0": ["--shard", "0/2"], "tv1": ["--shard", "1/2"], "tv1-beta": ["--shard", "1/2", "--beta", 2],
                       "tv0of3": ["--shard", "0/3"]}.items():
        ok(sb(*tv, *args, "-o", d / name))
    ok(sb("tv", stores / "R-clean.h5", "-l", "features.4", "--shard", "1/2", "--quiet", "-o", d / "tv1-R"))
    ok(sb("tv", stores / "S-clean.h5", "-l", "features.1", "--shard", "1/2", "--quiet", "-o", d / "tv1-layer"))
    ok(sb("diversity", stores / "S-clean.h5", "-l", "features.4", "-k", 3, "--shard", "1/2", "--quiet", "-o", d / "div1"))
    for k, net in ((0, "S"), (1, "R")):
        ok(sb("dump", nets[net], FMNIST, "-l", "logits", "--limit", 10, "--shard", f"{k}/2", "--quiet", "-o", d / f"d{k}{net}.h5"))
    ok(sb("dump", nets["S"], FMNIST, "-l", "logits", "--limit", 10, "--shard", "1/2", "--quiet", "-o", d / "d1S.h5"))
    write_store(d / "fixture.h5", {"logits": np.zeros((2, 10), np.float32)})
    ok(sb("tv", "--weights", nets["S"], "-o", d / "weights", "--quiet"))
    return d


@pytest.mark.parametrize("inputs,status,fragments", [
    (["tv0", "tv1-beta"], 1, ["differ in /params/beta (2.0 vs 1.0)", "not shards of one run"]),
    (["tv0", "tv1-R"], 1, ["differ in /sources/0/model_sha256"]),
    (["tv0", "tv1-layer"], 1, ["differ in /params/layers"]),
    (["tv0", "tv0"], 1, ["shard 0/2 is in both"]),
    (["tv0"], 1, ["missing shard(s) 1/2"]),
    (["tv0", "tv0of3"], 1, ["holds shards of 3", "of 2"]),
    (["tv0", "div1"], 1, ["is a diversity result", "a tv result"]),
    (["tv0", "weights"], 1, ["not an output folder of tv, dissect, diversity or eval"]),
    (["tv0", "nothing"], 1, ["no such file or folder"]),
    (["tv0", "d0S.h5"], 2, ["either output folders", "or stores"]),
    (["d0S.h5", "d1R.h5"], 1, ["differ in /source/model_sha256"]),
    (["d0S.h5"], 1, ["missing shard(s) 1/2"]),
    (["d0S.h5", "fixture.h5"], 1, ["not a store written by dump, attack or eval", "fixture"]),
])
def test_merge_refuses_parts_of_other_runs(sb, parts, tmp_path, inputs, status, fragments):
    out = tmp_path / ("out.h5" if inputs[0].endswith(".h5") else "out")
    p = sb("merge", out, *[parts / i for i in inputs])
    assert p.returncode == status
    one_error_line(p, *fragments)
    assert not out.exists()


def test_merge_of_stores_needs_a_store_name(sb, parts, tmp_path):
    p = sb("merge", tmp_path / "out", parts / "d0S.h5", parts / "d1S.h5")
    assert p.returncode == 2
    one_error_line(p, "FILE.h5")


def test_dissect_thresholds_must_be_merged_and_of_the_run(sb, probe, tmp_path):
    args = ["dissect", probe / "alexnet.h5", "--probe", probe / "probe", "-l", "features.4", "--quiet"]
    firsts = run_shards(sb, 2, tmp_path / "t", *args)
    p = sb(*args, "--thresholds", firsts[0], "-o", tmp_path / "x")
    assert p.returncode == 1
    one_error_line(p, "--thresholds needs the thresholds of every shard")
    ok(sb("merge", tmp_path / "thr", *firsts, "--quiet"))
    p = sb(*args, "--union", "original", "--thresholds", tmp_path / "thr", "-o", tmp_path / "x")
    assert p.returncode == 1
    one_error_line(p, "thresholds of another run", "/params/union")
    # A threshold pass and a tally pass are not shards of one run.
    seconds = run_shards(sb, 2, tmp_path / "c", *args, "--thresholds", tmp_path / "thr")
    p = sb("merge", tmp_path / "m", firsts[0], seconds[1])
    assert p.returncode == 1
    one_error_line(p, "differ in /phase")
    assert not (tmp_path / "x").exists() and not (tmp_path / "m").exists()

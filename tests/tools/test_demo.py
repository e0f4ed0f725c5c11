# SPDX-License-Identifier: MIT
"""`shapebias demo` end to end at tiny sizes: every step ran as the command demo.json records, and
every output it promises exists and is complete (stores marked complete, tables with the rows the
sizes imply, provenance beside each); a failing step stops the demo with one line naming it."""
import csv
import json
import os

import h5py
import numpy as np

from conftest import FMNIST, one_error_line

STEPS = ["train-S", "train-R", "eval", "tv-filters", "tv", "probe", "dissect", "diversity",
         *[f"attack-{m}-{e}" for e in ("0.05", "0.1", "0.2") for m in ("S", "R")], "report"]


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def complete_store(path):
    with h5py.File(path) as f:
        assert f.attrs["format"] == "shapebias-store" and f.attrs["complete"] == 1, path
        return len(f["index/input_id"])


def test_demo_json_records_every_step(demo_results):
    d = json.load(open(demo_results / "demo.json"))
    assert d["verb"] == "demo" and "finished" in d
    p = d["params"]
    assert p["preset"] == "tiny" and p["data"] == FMNIST
    assert [s["step"] for s in p["steps"]] == STEPS
    for s in p["steps"]:
        assert "skipped" not in s, s  # a fresh folder: nothing reused
        assert s["seconds"] > 0 and os.path.getsize(demo_results / s["log"]) >= 0
        first = s["command"].split()[0]
        assert first == "shapebias" or first.endswith("python3"), s["command"]


def test_every_output_is_complete(demo_results):
    z = json.load(open(demo_results / "demo.json"))["params"]["sizes"]
    for folder in ["eval", "tv-filters", "tv", "probe", "dissect", "diversity", "attack"]:
        text = json.dumps(json.load(open(demo_results / folder / "provenance.json")))
        assert '"argv"' in text or '"command"' in text, folder  # the command that made it
        assert not os.path.exists(f"{demo_results / folder}.partial")
    for net in "SR":
        log = rows(demo_results / "models" / net / "log.csv")
        assert len(log) == z["epochs"]
        assert os.path.getsize(demo_results / "models" / net / "model.pt") > 0

    acc = rows(demo_results / "eval" / "accuracy.csv")
    assert [r["variant"] for r in acc] == ["clean (all inputs)", "clean", "noise", "scrambled_2x2", "scrambled_4x4",
                                           "edges", "silhouettes"]
    assert int(acc[0]["inputs"]) == z["eval_images"]
    cl = np.loadtxt(demo_results / "eval" / "cl_ids.txt", dtype=np.int64, ndmin=1)
    assert all(int(r["inputs"]) == len(cl) for r in acc[1:])
    assert acc[1]["top1_S"] == acc[1]["top1_R"] == "1"  # every CL image is right for both, by construction
    for r in acc:
        assert all(0 <= float(r[k]) <= 1 for k in r if k.startswith("top"))
    assert complete_store(demo_results / "eval" / "stores" / "noise-R.h5") == len(cl)

    tv = rows(demo_results / "tv" / "layers.csv")
    assert {(r["network"], r["layer"]) for r in tv} == {(n, l) for n in "SR" for l in ("relu1", "relu2", "relu3")}
    assert all(int(r["images"]) == z["tv_images"] for r in tv)
    assert len(rows(demo_results / "tv" / "channels.csv")) == 2 * sum(int(r["channels"]) for r in tv if r["network"] == "S")
    filters = rows(demo_results / "tv-filters" / "filters.csv")
    assert [r["layer"] for r in filters] == ["conv1", "conv2", "conv3", "network"]
    assert int(filters[-1]["channels"]) == sum(int(r["channels"]) for r in filters[:-1])
    per_filter = rows(demo_results / "tv-filters" / "filter_units.csv")
    assert len(per_filter) == 2 * int(filters[-1]["channels"])

    n_probe = len(rows(demo_results / "probe" / "index.csv"))
    assert n_probe == z["probe_images"]
    units = rows(demo_results / "dissect" / "units.csv")
    assert {(r["network"], r["layer"]) for r in units} == {(n, l) for n in "SR" for l in ("relu1", "relu2", "relu3")}

    div = rows(demo_results / "diversity" / "layers.csv")
    assert {(r["network"], r["layer"]) for r in div} == {(n, l) for n in "SR" for l in ("relu2", "relu3")}
    assert all(int(r["inputs"]) == z["diversity_images"] for r in div)
    assert any(f.endswith(".png") for f in os.listdir(demo_results / "diversity" / "grids"))

    rob = rows(demo_results / "attack" / "robustness.csv")
    assert [(r["model"], r["eps"]) for r in rob] == [(m, e) for e in ("0.05", "0.1", "0.2") for m in "SR"]
    for r in rob:
        f = demo_results / "attack" / f"pgd-{r['model']}-eps{r['eps']}.h5"
        assert complete_store(f) == int(r["images"]) == z["attack_images"]
        with h5py.File(f) as h:
            d = h["activations/perturbation_linf"][:]
            assert d.max() <= float(r["eps"]) * (1 + 1e-6) + 1e-6
            assert np.isclose(d.mean(), float(r["mean_linf"]), rtol=1e-6)
            acc = np.mean(h["activations/adv_pred"][:] == h["index/label"][:])
            assert np.isclose(acc, float(r["robust_accuracy"]))
        assert float(r["robust_accuracy"]) <= float(r["clean_accuracy"]) + 0.02

    assert os.path.getsize(demo_results / "report" / "index.html") > 0


def test_a_failing_step_stops_the_demo(sb, tmp_path):
    r = sb("demo", "--preset", "tiny", "--data", tmp_path / "nowhere", "--quiet", "-o", tmp_path / "out")
    assert r.returncode == 1
    one_error_line(r, "train", "log:")
    assert not os.path.exists(tmp_path / "out" / "demo.json")  # train is the first step


def test_usage_errors(sb, tmp_path):
    (tmp_path / "file").write_text("x")
    assert sb("demo", "--preset", "huge").returncode == 2
    r = sb("demo", "-o", tmp_path / "file")
    assert r.returncode == 2
    one_error_line(r, "not a folder")

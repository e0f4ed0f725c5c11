# SPDX-License-Identifier: MIT
"""Concept ablation (issue 6 part 5, paper-spec §4.4): `dump --ablate` zeroes channels of a layer in
the graph, checked against the same model run by PyTorch with the channels zeroed by hand; `eval
--ablate` resolves concepts from a dissection's units.csv and re-evaluates through the eval path."""
import csv
import os

import h5py
import numpy as np
import pytest
import torch

from conftest import FMNIST, one_error_line

NORM = "0.286/0.353"


def dump(sb, models, out, *extra, layers="input,features.1,logits", limit=16):
    p = sb("dump", models / "fashion_cnn.pt", FMNIST, "--limit", str(limit), "--normalize", NORM, "-l", layers, "-o", out, *extra)
    assert p.returncode == 0, p.stderr.decode()
    with h5py.File(out) as f:
        return {k: f["activations/" + k][:] for k in f["activations"]}


def torch_logits(models, x, channels, keep=False):
    """The fashion CNN's forward in PyTorch with features.1's channels zeroed (or all others)."""
    m = torch.jit.load(str(models / "fashion_cnn.pt")).eval()
    feats = list(m.features.children())
    with torch.no_grad():
        h = torch.from_numpy(x)
        for i, layer in enumerate(feats):
            h = layer(h)
            if i == 1:
                mask = torch.zeros(h.shape[1]) if keep else torch.ones(h.shape[1])
                mask[list(channels)] = 1.0 if keep else 0.0
                h = h * mask[None, :, None, None]
        return m.classifier(h).numpy()


@pytest.mark.parametrize("keep", [False, True])
def test_dump_ablation_matches_pytorch(sb, models, tmp_path, keep):
    plain = dump(sb, models, tmp_path / "plain.h5")
    chans = [0, 5, 31]
    abl = dump(sb, models, tmp_path / "abl.h5", "--ablate", f"features.1:{'keep' if keep else 'zero'}:31,0,5")
    sel = np.zeros(32, bool)
    sel[chans] = True
    zeroed = ~sel if keep else sel
    # The tapped layer shows the ablation; the other channels are untouched.
    assert np.all(abl["features.1"][:, zeroed] == 0)
    np.testing.assert_array_equal(abl["features.1"][:, ~zeroed], plain["features.1"][:, ~zeroed])
    np.testing.assert_array_equal(abl["input"], plain["input"])
    ref = torch_logits(models, plain["input"], chans, keep)
    np.testing.assert_allclose(abl["logits"], ref, rtol=1e-5, atol=1e-6)
    assert np.abs(abl["logits"] - plain["logits"]).max() > 1e-4  # it changed something
    with h5py.File(tmp_path / "abl.h5") as f:
        assert "features.1" in f["provenance/log"][-1].decode()


def test_keeping_every_channel_changes_nothing(sb, models, tmp_path):
    plain = dump(sb, models, tmp_path / "plain.h5", layers="logits")
    every = ",".join(map(str, range(32)))
    kept = dump(sb, models, tmp_path / "kept.h5", "--ablate", f"features.0:keep:{every}", layers="logits")
    np.testing.assert_array_equal(kept["logits"], plain["logits"])


def write_units(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["network", "layer", "unit", "threshold", "label", "category", "iou", "dead"])
        w.writerows(rows)


@pytest.fixture
def dissection(tmp_path):
    d = tmp_path / "dissect"
    os.makedirs(d)
    rows = []
    for net in ["S", "R"]:
        for u in range(32):
            label = "striped" if (u % 7 == 0) == (net == "S") and u % 3 == 0 else "red"
            rows.append([net, "features.1", u, 0.5, label, "texture" if label == "striped" else "color", 0.05, 0])
    rows.append(["S", "features.1", 32, 0.5, "", "", 0, 1])  # a dead unit is never selected
    write_units(d / "units.csv", rows)
    striped = {net: [r[2] for r in rows if r[0] == net and r[4] == "striped" and r[7] == 0] for net in "SR"}
    return d, striped


def read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_eval_ablates_concept_channels(sb, models, dissection, tmp_path):
    d, striped = dissection
    ids = tmp_path / "ids.txt"
    ids.write_text("\n".join(map(str, range(300))) + "\n")
    out = tmp_path / "ev"
    m = models / "fashion_cnn.pt"
    p = sb("eval", m, m, FMNIST, "--normalize", NORM, "--ids", ids, "--ablate", "features.1:zero:concept=striped",
           "--dissection", d, "-o", out)
    assert p.returncode == 0, p.stderr.decode()
    abl = {r["model"]: r for r in read(out / "ablation.csv")}
    for net in "SR":
        assert [int(c) for c in abl[net]["channels"].split(",")] == sorted(striped[net])
        assert int(abl[net]["count"]) == len(striped[net])
    # The eval path's CL logits equal a dump with the same channels zeroed, on the CL ids.
    cl = tmp_path / "cl.txt"
    cl.write_text((out / "cl_ids.txt").read_text())
    for net in "SR":
        ref = dump(sb, models, tmp_path / f"ref-{net}.h5", "--ablate", f"features.1:zero:{abl[net]['channels']}", "--ids", cl,
                   layers="logits", limit=0)
        with h5py.File(out / "stores" / f"clean-{net}.h5") as f:
            np.testing.assert_array_equal(f["activations/logits"][:], ref["logits"])
    acc = {r["variant"]: r for r in read(out / "accuracy.csv")}
    assert "accuracy drop" in p.stderr.decode()
    assert float(acc["clean"]["top1_S"]) <= 1.0


def test_eval_random_channels(sb, models, dissection, tmp_path):
    d, striped = dissection
    m = models / "fashion_cnn.pt"
    ids = tmp_path / "ids.txt"
    ids.write_text("\n".join(map(str, range(100))) + "\n")
    chans = []
    for k, seed in enumerate(["0", "0", "1"]):
        out = tmp_path / f"ev{k}"
        p = sb("eval", m, FMNIST, "--names", "S", "--normalize", NORM, "--ids", ids, "--ablate",
               "features.1:random:concept=striped", "--ablate-seed", seed, "--dissection", d, "-o", out)
        assert p.returncode == 0, p.stderr.decode()
        row = read(out / "ablation.csv")[0]
        chans.append([int(c) for c in row["channels"].split(",")])
    assert len(chans[0]) == len(striped["S"]) and len(set(chans[0])) == len(chans[0])
    assert all(0 <= c < 33 for c in chans[0])
    assert chans[0] == chans[1] and chans[0] != chans[2]


@pytest.mark.parametrize("spec,extra,code,frags", [
    ("features.1:zero:99", [], 1, ["--ablate features.1:zero:99", "out of bounds"]),
    ("featurs.1:zero:1", [], 1, ["unknown layer to ablate 'featurs.1'", "features.1"]),
    ("features.1:zap:1", [], 2, ["mode 'zap'"]),
    ("features.1:zero:1,1", [], 2, ["listed twice"]),
    ("features.1:zero:concept=striped", [], 2, ["--dissection"]),
    ("features.1:zero:concept=dotted", ["DISSECT"], 1, ["labelled 'dotted'"]),
    ("features.1:random:40", ["DISSECT"], 2, ["40 channels asked", "has 33"]),
])
def test_ablation_errors(sb, models, dissection, tmp_path, spec, extra, code, frags):
    d, _ = dissection
    extra = ["--dissection", str(d)] if extra else []
    ids = tmp_path / "ids.txt"
    ids.write_text("\n".join(map(str, range(300))) + "\n")  # a non-empty CL set
    p = sb("eval", models / "fashion_cnn.pt", FMNIST, "--names", "S", "--normalize", NORM, "--ids", ids, "--ablate", spec,
           *extra, "-o", tmp_path / "ev", "--quiet")
    assert p.returncode == code
    one_error_line(p, *frags)
    assert not os.path.exists(tmp_path / "ev")

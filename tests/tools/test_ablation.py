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
    """A units.csv for features.1 (32 channels) of S and R; S's unit 14 is labelled striped but dead."""
    d = tmp_path / "dissect"
    os.makedirs(d)
    rows = []
    for net in ["S", "R"]:
        for u in range(32):
            label = "striped" if (u % 7 == 0) == (net == "S") and u % 3 == 0 else "red"
            rows.append([net, "features.1", u, 0.5, label, "texture" if label == "striped" else "color", 0.05, 0])
    rows[14] = ["S", "features.1", 14, 0.5, "striped", "texture", 0, 1]  # a dead unit is never selected
    write_units(d / "units.csv", rows)
    striped = {net: [r[2] for r in rows if r[0] == net and r[4] == "striped" and r[7] == 0] for net in "SR"}
    assert striped["S"] == [0, 21] and len(striped["R"]) == 9
    return d, striped


def read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def cl_top1(sb, models, tmp_path, out, channels, keep=False):
    """Top-1 on the CL set of eval output `out` of the fashion CNN with features.1's `channels`
    zeroed (or kept), computed here: the CL inputs dumped unablated, then PyTorch."""
    cl = tmp_path / "cl.txt"
    cl.write_text((out / "cl_ids.txt").read_text())
    p = sb("dump", models / "fashion_cnn.pt", FMNIST, "--normalize", NORM, "--ids", cl, "-l", "input", "-o", tmp_path / "cl.h5")
    assert p.returncode == 0, p.stderr.decode()
    with h5py.File(tmp_path / "cl.h5") as f:
        x, labels = f["activations/input"][:], f["index/label"][:]
    os.remove(tmp_path / "cl.h5")
    return float((torch_logits(models, x, channels, keep).argmax(1) == labels).mean()), len(labels)


def eval_ablated(sb, models, tmp_path, name, spec, *extra, ids=300, names=("S", "R")):
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("\n".join(map(str, range(ids))) + "\n")
    out = tmp_path / name
    m = models / "fashion_cnn.pt"
    p = sb("eval", *[m] * len(names), FMNIST, "--names", ",".join(names), "--normalize", NORM, "--ids", ids_file,
           "--ablate", spec, *extra, "-o", out)
    assert p.returncode == 0, p.stderr.decode()
    return out, p, {r["model"]: r for r in read(out / "ablation.csv")}, {r["variant"]: r for r in read(out / "accuracy.csv")}


def test_eval_ablates_concept_channels(sb, models, dissection, tmp_path):
    d, striped = dissection
    out, p, abl, acc = eval_ablated(sb, models, tmp_path, "ev", "features.1:zero:concept=striped", "--dissection", d)
    for net in "SR":
        assert [int(c) for c in abl[net]["channels"].split(",")] == striped[net]
        assert int(abl[net]["count"]) == len(striped[net]) and abl[net]["mode"] == "zero"
    # The eval path's CL logits equal a dump with the same channels zeroed, on the CL ids.
    cl = tmp_path / "cl.txt"
    cl.write_text((out / "cl_ids.txt").read_text())
    for net in "SR":
        ref = dump(sb, models, tmp_path / f"ref-{net}.h5", "--ablate", f"features.1:zero:{abl[net]['channels']}", "--ids", cl,
                   layers="logits", limit=0)
        with h5py.File(out / "stores" / f"clean-{net}.h5") as f:
            np.testing.assert_array_equal(f["activations/logits"][:], ref["logits"])
    # The ablated CL accuracy equals PyTorch's on the same inputs with the channels zeroed by hand.
    for net in "SR":
        top1, n = cl_top1(sb, models, tmp_path, out, striped[net])
        assert n == int(acc["clean"]["inputs"]) > 0
        assert float(acc["clean"][f"top1_{net}"]) == pytest.approx(top1, abs=1e-12)
    assert min(float(acc["clean"][f"top1_{net}"]) for net in "SR") < 1  # unablated, every CL input is right
    assert "accuracy drop" in p.stderr.decode()


def test_eval_keep_concept(sb, models, dissection, tmp_path):
    d, striped = dissection
    out, _, abl, acc = eval_ablated(sb, models, tmp_path, "ev", "features.1:keep:concept=striped", "--dissection", d)
    for net in "SR":
        assert abl[net]["mode"] == "keep" and [int(c) for c in abl[net]["channels"].split(",")] == striped[net]
        top1, _ = cl_top1(sb, models, tmp_path, out, striped[net], keep=True)
        assert float(acc["clean"][f"top1_{net}"]) == pytest.approx(top1, abs=1e-12)


def test_eval_zeroing_every_channel_gives_one_answer(sb, models, tmp_path):
    """With every channel of features.1 zeroed the network sees a constant: one logit row for every
    input (up to rounding), so CL top-1 is the share of CL inputs of that row's class."""
    every = ",".join(map(str, range(32)))
    out, _, _, acc = eval_ablated(sb, models, tmp_path, "ev", f"features.1:zero:{every}", names=("S",))
    with h5py.File(out / "stores" / "clean-S.h5") as f:
        logits, labels = f["activations/logits"][:], f["index/label"][:]
    np.testing.assert_allclose(logits, np.broadcast_to(logits[0], logits.shape), rtol=0, atol=1e-6)  # batch rounding only
    assert np.all(logits.argmax(1) == logits[0].argmax())
    assert float(acc["clean"]["top1_S"]) == pytest.approx(float((labels == logits[0].argmax()).mean()), abs=1e-12)
    assert int(acc["clean"]["inputs"]) == len(labels) > 0


def test_eval_random_channels(sb, models, dissection, tmp_path):
    """random:concept=NAME draws as many channels as NAME has, none of them NAME's, seeded per
    model; random:N needs no dissection."""
    d, striped = dissection
    chans = []
    for k, seed in enumerate(["0", "0", "1", "2", "3"]):
        _, _, abl, _ = eval_ablated(sb, models, tmp_path, f"ev{k}", "features.1:random:concept=striped", "--ablate-seed", seed,
                                    "--dissection", d, ids=100)
        chans.append({net: [int(c) for c in abl[net]["channels"].split(",")] for net in "SR"})
    for c in chans:
        for net in "SR":
            assert len(c[net]) == len(striped[net]) == len(set(c[net]))
            assert all(0 <= x < 32 for x in c[net]) and not set(c[net]) & set(striped[net])
    assert chans[0] == chans[1] and chans[0] != chans[2]
    assert chans[0]["S"] != chans[0]["R"] or chans[2]["S"] != chans[2]["R"]  # seeded per model
    _, _, abl, _ = eval_ablated(sb, models, tmp_path, "n", "features.1:random:5", ids=100, names=("S",))
    got = [int(c) for c in abl["S"]["channels"].split(",")]
    assert len(got) == len(set(got)) == 5 and all(0 <= x < 32 for x in got)


def test_units_csv_of_another_model(sb, models, tmp_path):
    """A units.csv with a unit the model's layer does not have (33 units for 32 channels) is refused
    before anything runs, naming the file, the unit and the layer's channel count."""
    d = tmp_path / "dissect"
    os.makedirs(d)
    write_units(d / "units.csv", [["S", "features.1", u, 0.5, "red", "color", 0.05, 0] for u in range(33)])
    for spec in ["features.1:zero:concept=red", "features.1:random:concept=red"]:
        p = sb("eval", models / "fashion_cnn.pt", FMNIST, "--names", "S", "--normalize", NORM, "--ablate", spec,
               "--dissection", d, "-o", tmp_path / "ev", "--quiet")
        assert p.returncode == 1
        one_error_line(p, "units.csv", "line 34", "unit 32", "layer 'features.1'", "has 32 channels")
        assert not os.path.exists(tmp_path / "ev")


def test_dissect_then_eval(sb, models, tmp_path):
    """End to end: dissect the fashion CNN live on a generated probe set, then eval with the
    channels of its most frequent concept zeroed: the resolved channels are the units.csv units
    with that label, and the CL accuracy equals PyTorch's with those channels zeroed."""
    import subprocess
    import sys
    from conftest import SOURCE
    probe = tmp_path / "probe"
    subprocess.run([sys.executable, os.path.join(SOURCE, "scripts", "make_probe.py"), "--out", str(probe), "--count", "24",
                    "--image-size", "56", "--seg-size", "28"], check=True, capture_output=True)
    m = models / "fashion_cnn.pt"
    p = sb("dissect", m, "--probe", probe, "--names", "S", "-l", "features.1", "--channels", "1", "--resize", "28",
           "--normalize", NORM, "--quantile", "exact", "--quiet", "-o", tmp_path / "dissect")
    assert p.returncode == 0, p.stderr.decode()
    units = read(tmp_path / "dissect" / "units.csv")
    assert len(units) == 32
    labels = [u["label"] for u in units if u["dead"] == "0"]
    concept = max(sorted(set(labels)), key=labels.count)
    want = [int(u["unit"]) for u in units if u["dead"] == "0" and u["label"] == concept]
    out, _, abl, acc = eval_ablated(sb, models, tmp_path, "ev", f"features.1:zero:concept={concept}", "--dissection",
                                    tmp_path / "dissect", names=("S",))
    assert [int(c) for c in abl["S"]["channels"].split(",")] == want
    top1, _ = cl_top1(sb, models, tmp_path, out, want)
    assert float(acc["clean"]["top1_S"]) == pytest.approx(top1, abs=1e-12)


@pytest.mark.parametrize("spec,extra,code,frags", [
    ("features.1:zero:99", [], 1, ["--ablate 'features.1:zero:99'", "channel 99 is out of range", "has 32 channels"]),
    ("featurs.1:zero:1", [], 1, ["unknown layer 'featurs.1'", "features.1"]),
    ("features.1:zap:1", [], 2, ["mode 'zap'"]),
    ("features.1:zero:1,1", [], 2, ["listed twice"]),
    ("features.1:zero:concept=striped", [], 2, ["--dissection"]),
    ("features.1:zero:concept=dotted", ["DISSECT"], 1, ["labelled 'dotted'"]),
    ("features.1:random:40", [], 2, ["40 channels asked", "has 32 channels"]),
    ("features.1:random:concept=red", ["DISSECT"], 2, ["29 channels asked", "has 32 channels, 3 of them not labelled 'red'"]),
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

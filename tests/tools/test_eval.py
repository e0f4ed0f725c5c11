# SPDX-License-Identifier: MIT
"""`shapebias eval` (paper-spec §2): accuracy on a data set and its variants on the ImageNet-CL set,
cue-conflict shape bias and ImageNet-C corruption errors. Models are tiny TorchScript modules made
here (a nearest-class-mean classifier, and a lookup of logits by image brightness), so every number
is recomputed independently in numpy, and the constructed cases are also checked by hand."""
import csv
import gzip
import io
import json
import os
import shutil

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from conftest import FMNIST, SOURCE, one_error_line


def read_csv(path):
    return list(csv.DictReader(io.StringIO(open(path).read())))


def cl_ids(path):
    return [int(l) for l in open(path).read().splitlines() if l and not l.startswith("#")]


def topk_correct(logits, labels, k):
    """Label in the top k: fewer than k scores strictly greater than the label's (ties count as right)."""
    logits = np.asarray(logits, np.float64)
    mine = logits[np.arange(len(labels)), labels]
    return (logits > mine[:, None]).sum(1) < k


def label_margin(logits, labels):
    """The smallest |logit[label] − logit[j]| over j ≠ label: how far each row is from a tie."""
    logits = np.asarray(logits, np.float64)
    d = np.abs(logits - logits[np.arange(len(labels)), labels][:, None])
    d[np.arange(len(labels)), labels] = np.inf
    return d.min()


class Linear(torch.nn.Module):
    def __init__(self, w, b):
        super().__init__()
        self.fc = torch.nn.Linear(w.shape[1], w.shape[0])
        with torch.no_grad():
            self.fc.weight.copy_(torch.from_numpy(np.asarray(w, np.float32)))
            self.fc.bias.copy_(torch.from_numpy(np.asarray(b, np.float32)))

    def forward(self, x):
        return self.fc(x.flatten(1))


class Lookup(torch.nn.Module):
    """Logits looked up by the image's mean brightness (0…255): a model whose answer for each
    constructed image is chosen by the test."""

    def __init__(self, table):
        super().__init__()
        self.register_buffer("table", table)

    def forward(self, x):
        v = torch.round(x.mean(dim=(1, 2, 3)) * 255).long().clamp(0, 255)
        return self.table[v]


def lookup_model(path, rows, k, seed):
    """Saves a Lookup whose table is seeded noise with `rows` {brightness: logits} written over
    brightness ± 3 (JPEG may move a flat image's level by a step); returns the float32 table."""
    table = np.random.default_rng(seed).normal(size=(256, k)).astype(np.float32)
    for v, row in rows.items():
        table[max(0, v - 3):v + 4] = row
    torch.jit.script(Lookup(torch.from_numpy(table))).save(str(path))
    return table


def predicting(pred, k=10, seed=0):
    """A logits row whose top-1 is `pred` (the rest small and distinct)."""
    row = np.random.default_rng(seed).normal(0, 0.1, k).astype(np.float32)
    row[pred] = 5
    return row


def flat(path, value, size=16):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.full((size, size, 3), value, np.uint8)).save(path, quality=95)


def brightness(path):
    """The key the Lookup model sees, decoded with PIL: round(mean of the RGB image)."""
    return int(np.rint(np.asarray(Image.open(path).convert("RGB"), np.float64).mean()))


def eval_error(proc, *must_contain):
    """A failed eval: its error is one line, the last on stderr; before it may stand eval's status
    line ('eval: clean top-1 …; CL set …', printed once the clean pass is done; see
    test_quiet_failed_eval_prints_only_the_error)."""
    lines = [l for l in proc.stderr.decode().splitlines() if l.strip()]
    assert lines and all(l.startswith("eval: ") for l in lines[:-1]), lines
    line = lines[-1]
    assert line.startswith("shapebias eval: "), line
    for frag in must_contain:
        assert frag in line, f"{frag!r} not in {line!r}"
    return line


def gone(out):
    return not os.path.exists(out) and not os.path.exists(str(out) + ".partial")


# ---- Fashion-MNIST: accuracy, CL set, variants, stores ---------------------------------------------------

@pytest.fixture(scope="module")
def fm(sb, tmp_path_factory):
    """Two nearest-class-mean classifiers that disagree on some inputs, evaluated on 200 ids."""
    d = tmp_path_factory.mktemp("fm")
    with gzip.open(os.path.join(FMNIST, "t10k-images-idx3-ubyte.gz")) as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 784).astype(np.float32) / np.float32(255)
    with gzip.open(os.path.join(FMNIST, "t10k-labels-idx1-ubyte.gz")) as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8).astype(np.int64)
    mu = np.stack([x[y == c].mean(0) for c in range(10)]).astype(np.float64)
    # A: Euclidean distance to the class means; B: cosine similarity to them (scaled ×10).
    wa, ba = mu.astype(np.float32), (-0.5 * (mu ** 2).sum(1)).astype(np.float32)
    wb, bb = (10 * mu / np.linalg.norm(mu, axis=1, keepdims=True)).astype(np.float32), np.zeros(10, np.float32)
    torch.jit.script(Linear(wa, ba)).save(str(d / "A.pt"))
    torch.jit.script(Linear(wb, bb)).save(str(d / "B.pt"))
    ids = np.random.default_rng(5).choice(10000, 200, replace=False)  # not sorted: the file's order counts
    (d / "ids.txt").write_text("# 200 test ids\n" + "\n".join(map(str, ids)) + "\n")
    out = d / "out"
    p = sb("eval", d / "A.pt", d / "B.pt", FMNIST, "--ids", d / "ids.txt", "--names", "A,B",
           "--variant", "noise=noise:0.1", "--variant", "scr=scramble:2", "-o", out)
    assert p.returncode == 0, p.stderr

    def logits(xs, m):
        w, b = (wa, ba) if m == "A" else (wb, bb)
        return xs.reshape(len(xs), -1).astype(np.float64) @ w.T.astype(np.float64) + b

    return dict(dir=d, out=out, proc=p, x=x, y=y, ids=ids, logits=logits)


def test_clean_accuracy_and_cl_set(fm):
    ids, y, out = fm["ids"], fm["y"][fm["ids"]], fm["out"]
    rows = read_csv(out / "accuracy.csv")
    assert list(rows[0]) == ["variant", "inputs", "top1_A", "top1_B", "top5_A", "top5_B"]
    correct = {}
    for m in "AB":
        lg = fm["logits"](fm["x"][ids], m)
        assert label_margin(lg, y) > 1e-3  # no near-tie that float32 could flip
        correct[m] = topk_correct(lg, y, 1)
        r = rows[0]
        assert r["variant"] == "clean (all inputs)" and r["inputs"] == "200"
        assert float(r[f"top1_{m}"]) == pytest.approx(correct[m].mean(), abs=1e-9)
        assert float(r[f"top5_{m}"]) == pytest.approx(topk_correct(lg, y, 5).mean(), abs=1e-9)
    # The models really disagree both ways, so CL is smaller than either correct set.
    assert (correct["A"] & ~correct["B"]).any() and (correct["B"] & ~correct["A"]).any()
    expect_cl = sorted(int(i) for i in ids[correct["A"] & correct["B"]])
    assert cl_ids(out / "cl_ids.txt") == expect_cl and len(expect_cl) > 50
    clean_cl = rows[1]
    assert clean_cl["variant"] == "clean" and int(clean_cl["inputs"]) == len(expect_cl)
    assert all(float(clean_cl[c]) == 1.0 for c in ("top1_A", "top1_B", "top5_A", "top5_B"))
    assert fm["proc"].stdout.decode() == open(out / "accuracy.csv").read()
    assert f"CL set {len(expect_cl)} of 200 inputs" in fm["proc"].stderr.decode()
    table = json.load(open(out / "accuracy.json"))["table"]
    assert [t["variant"] for t in table] == [r["variant"] for r in rows]
    assert table[0]["top1"]["B"] == pytest.approx(correct["B"].mean())
    prov = json.load(open(out / "provenance.json"))
    assert prov["verb"] == "eval" and prov["params"]["cl_inputs"] == len(expect_cl)
    assert [m["name"] for m in prov["params"]["models"]] == ["A", "B"]


@pytest.mark.parametrize("variant,opts", [("noise", ["--noise", "0.1"]), ("scr", ["--transform", "scramble:2"])])
def test_variants_on_cl_match_numpy(sb, fm, variant, opts, tmp_path):
    out = fm["out"]
    cl = cl_ids(out / "cl_ids.txt")
    # The variant's inputs, as dump makes them (eval's noise seed is the default, 0).
    p = sb("dump", fm["dir"] / "A.pt", FMNIST, "-l", "input", "--ids", out / "cl_ids.txt", "--quiet",
           "-o", tmp_path / "v.h5", *opts)
    assert p.returncode == 0, p.stderr
    with h5py.File(tmp_path / "v.h5") as f:
        xv, got_ids = f["activations/input"][:], f["index/input_id"][:]
    assert list(got_ids) == cl
    y = fm["y"][cl]
    row = next(r for r in read_csv(out / "accuracy.csv") if r["variant"] == variant)
    assert int(row["inputs"]) == len(cl)
    top1 = {}
    for m in "AB":
        lg = fm["logits"](xv, m)
        assert label_margin(lg, y) > 1e-4
        top1[m] = topk_correct(lg, y, 1)
        assert float(row[f"top1_{m}"]) == pytest.approx(top1[m].mean(), abs=1e-9)
        assert float(row[f"top5_{m}"]) == pytest.approx(topk_correct(lg, y, 5).mean(), abs=1e-9)
        with h5py.File(out / "stores" / f"{variant}-{m}.h5") as f:
            assert list(f["index/input_id"][:]) == cl and list(f["index/label"][:]) == list(y)
            np.testing.assert_allclose(f["activations/logits"][:], lg, rtol=1e-5, atol=1e-4)
            assert np.array_equal(f["activations/correct_top1"][:].astype(bool), top1[m])
            assert np.array_equal(f["activations/correct_topk"][:].astype(bool), topk_correct(lg, y, 5))
    assert top1["A"].mean() < 1  # the variant does change something


def test_per_image_all_inputs_store(fm):
    """The clean pass over all --ids inputs keeps its own store, all-<name>.h5, in the file's order
    (the clean pass on the CL set is clean-<name>.h5)."""
    ids, y = fm["ids"], fm["y"][fm["ids"]]
    for m in "AB":
        lg = fm["logits"](fm["x"][ids], m)
        with h5py.File(fm["out"] / "stores" / f"all-{m}.h5") as f:
            assert list(f["index/input_id"][:]) == list(ids)
            assert set(f["activations"]) == {"logits", "correct_top1", "correct_topk"}
            assert list(f["index/label"][:]) == list(y)
            np.testing.assert_allclose(f["activations/logits"][:], lg, rtol=1e-5, atol=1e-4)
            assert np.array_equal(f["activations/correct_top1"][:].astype(bool), topk_correct(lg, y, 1))
            assert np.array_equal(f["activations/correct_topk"][:].astype(bool), topk_correct(lg, y, 5))
            log = [json.loads(r) for r in f["provenance/log"][:]]
            assert log[-1]["verb"] == "eval" and log[-1]["summary"]["rows"] == 200


def test_per_image_store_named_clean(fm):
    """stores/clean-<name>.h5, the clean pass on the CL set: logits and correctness against numpy."""
    cl = cl_ids(fm["out"] / "cl_ids.txt")
    for m in "AB":
        with h5py.File(fm["out"] / "stores" / f"clean-{m}.h5") as f:
            assert set(f["activations"]) == {"logits", "correct_top1", "correct_topk"}
            got = [int(i) for i in f["index/input_id"][:]]
            assert got == cl
            lg, y = fm["logits"](fm["x"][got], m), fm["y"][got]
            assert list(f["index/label"][:]) == list(y)
            np.testing.assert_allclose(f["activations/logits"][:], lg, rtol=1e-5, atol=1e-4)
            assert np.array_equal(f["activations/correct_top1"][:].astype(bool), topk_correct(lg, y, 1))
            assert np.array_equal(f["activations/correct_topk"][:].astype(bool), topk_correct(lg, y, 5))
            log = [json.loads(r) for r in f["provenance/log"][:]]
            assert log[-1]["verb"] == "eval" and log[-1]["summary"]["rows"] == len(got)


# ---- constructed CL set and an external variant folder ------------------------------------------------

CLEAN_LEVELS = [20, 50, 80, 110, 140, 170]    # ant/img0-2.jpg, bee/img0-2.jpg: ids 0-5, labels 0,0,0,1,1,1
STYLE_LEVELS = [35, 65, 95, 125, 155, 185]    # the variant's counterparts (.png)
PRED = {  # model → (predictions on the clean images, predictions on the variant's images)
    "A": ([0, 0, 1, 1, 0, 1], [0, 1, 0, 0, 1, 1]),   # clean right on 0,1,3,5
    "B": ([0, 1, 0, 1, 1, 1], [1, 1, 0, 1, 1, 0]),   # clean right on 0,2,3,4,5
}


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    d = tmp_path_factory.mktemp("small")
    names = [f"{c}/img{i}" for c in ("ant", "bee") for i in range(3)]
    for n, lc, ls in zip(names, CLEAN_LEVELS, STYLE_LEVELS):
        flat(d / "clean" / f"{n}.jpg", lc)
        flat(d / "sty" / f"{n}.png", ls)
    tables = {}
    for s, (m, (pc, ps)) in enumerate(PRED.items()):
        rows = {}
        for n, lc, ls, a, b in zip(names, CLEAN_LEVELS, STYLE_LEVELS, pc, ps):
            rows[brightness(d / "clean" / f"{n}.jpg")] = predicting(a, seed=lc + s)
            rows[ls] = predicting(b, seed=ls + s)
        tables[m] = lookup_model(d / f"{m}.pt", rows, 10, seed=s)
    return dict(dir=d, names=names, tables=tables, labels=np.array([0, 0, 0, 1, 1, 1]))


def test_cl_and_external_variant_on_a_constructed_case(sb, small, tmp_path):
    d, out = small["dir"], tmp_path / "out"
    p = sb("eval", d / "A.pt", d / "B.pt", d / "clean", "--names", "A,B", "--variant", "sty=folder:" + str(d / "sty"),
           "-o", out)
    assert p.returncode == 0, p.stderr
    # By hand: A is right on 0,1,3,5 and B on 0,2,3,4,5, so CL = 0,3,5.
    assert cl_ids(out / "cl_ids.txt") == [0, 3, 5]
    rows = {r["variant"]: r for r in read_csv(out / "accuracy.csv")}
    assert list(rows) == ["clean (all inputs)", "clean", "sty"]
    assert float(rows["clean (all inputs)"]["top1_A"]) == pytest.approx(4 / 6)
    assert float(rows["clean (all inputs)"]["top1_B"]) == pytest.approx(5 / 6)
    # On the variant, CL ids only: A right on 0 and 5 (not 3); B right on 3 only. (A is also right
    # on the non-CL id 2 and 4 there, which must not count.)
    assert rows["sty"]["inputs"] == "3"
    assert float(rows["sty"]["top1_A"]) == pytest.approx(2 / 3)
    assert float(rows["sty"]["top1_B"]) == pytest.approx(1 / 3)
    # The same from the models' tables and the decoded files, in numpy.
    labels = small["labels"]
    for m in "AB":
        t = small["tables"][m]
        clean_lg = np.stack([t[brightness(d / "clean" / f"{n}.jpg")] for n in small["names"]])
        sty_lg = np.stack([t[brightness(d / "sty" / f"{n}.png")] for n in small["names"]])
        assert list(np.flatnonzero(topk_correct(clean_lg, labels, 1))) == ([0, 1, 3, 5] if m == "A" else [0, 2, 3, 4, 5])
        for name, lg, sel in (("clean (all inputs)", clean_lg, slice(None)), ("sty", sty_lg, [0, 3, 5])):
            assert float(rows[name][f"top1_{m}"]) == pytest.approx(topk_correct(lg[sel], labels[sel], 1).mean())
            assert float(rows[name][f"top5_{m}"]) == pytest.approx(topk_correct(lg[sel], labels[sel], 5).mean())
        with h5py.File(out / "stores" / f"sty-{m}.h5") as f:
            assert list(f["index/input_id"][:]) == [0, 3, 5] and list(f["index/label"][:]) == [0, 1, 1]
            np.testing.assert_array_equal(f["activations/logits"][:], sty_lg[[0, 3, 5]])


def test_external_variant_with_missing_or_extra_files_is_refused(sb, small, tmp_path):
    d = small["dir"]
    miss, extra = tmp_path / "miss", tmp_path / "extra"
    shutil.copytree(d / "sty", miss)
    shutil.copytree(d / "sty", extra)
    os.remove(miss / "bee" / "img1.png")
    flat(extra / "bee" / "img9.png", 10)
    for folder, frags in ((miss, ["variant 'sty'", "clean input 4", "bee/img1"]),
                          (extra, ["variant 'sty'", "1 file(s)", "no clean input"])):
        out = tmp_path / "out"
        p = sb("eval", d / "A.pt", d / "clean", "--variant", f"sty=folder:{folder}", "-o", out)
        assert p.returncode == 1, p.stderr
        eval_error(p, str(folder), *frags)
        assert gone(out)


# ---- cue-conflict shape bias ----------------------------------------------------------------------

MAPPING = {"categories": ["airplane", "bear", "cat", "dog"],
           "indices": {"airplane": [404], "bear": [294, 295, 296, 297], "cat": [281], "dog": [152, 153]}}
STIMULI = ["airplane1-bear2", "airplane2-cat1", "bear1-bear3", "bear2-dog1", "cat1-dog2", "cat2-bear1",
           "dog1-airplane1", "dog2-cat3", "dog3-dog1"]
# Per model and stimulus: {category: boost of its members' logits}, and the decision meant by it.
BOOSTS = {
    "S": [({"airplane": 6}, "shape"), ({"cat": 6}, "texture"), ({"bear": 6}, "excluded"),
          ({"airplane": 6}, "neither"), ({"cat": 6}, "shape"),
          # Mean, not sum, of member probabilities: bear's 4 members at +4 sum to more than cat's
          # one at +4.5, but their mean is less, so the decision is cat (shape).
          ({"bear": 4, "cat": 4.5}, "shape"),
          ({"airplane": 6}, "texture"), ({"dog": 6}, "shape"), ({"dog": 6}, "excluded")],
    "R": [({"airplane": 6}, "shape"), ({"airplane": 6}, "shape"), ({"cat": 6}, "excluded"),
          ({"dog": 6}, "texture"), ({"dog": 6}, "texture"), ({"bear": 4, "cat": 3}, "texture"),
          ({"dog": 6}, "shape"), ({"bear": 6}, "neither"), ({"airplane": 6}, "excluded")],
}


def category(name, k):
    import re
    return re.match(r"^([a-z]+)\d+-([a-z]+)\d+$", name).group(k)


@pytest.fixture(scope="module")
def cue(tmp_path_factory):
    d = tmp_path_factory.mktemp("cue")
    for i, s in enumerate(STIMULI):
        flat(d / "stimuli" / f"{s}.png", 30 + 20 * i, size=8)
    flat(d / "clean" / "a" / "x.png", 5, size=8)
    flat(d / "clean" / "b" / "y.png", 250, size=8)
    (d / "map.json").write_text(json.dumps(MAPPING))
    tables = {}
    for s, (m, spec) in enumerate(BOOSTS.items()):
        rows = {}
        for i, (boost, _) in enumerate(spec):
            row = np.random.default_rng(100 * s + i).normal(size=1000).astype(np.float32)
            for c, b in boost.items():
                row[MAPPING["indices"][c]] += b
            rows[30 + 20 * i] = row
        tables[m] = lookup_model(d / f"{m}.pt", rows, 1000, seed=s + 10)
    return dict(dir=d, tables=tables)


def geirhos(table, mapping, indices_key):
    """Geirhos' procedure in numpy: softmax, mean member probability per category, argmax,
    shape/texture/neither/excluded per shape category. Returns {category: counts} and the all row."""
    cats = mapping["categories"]
    counts = {c: dict(shape=0, texture=0, neither=0, excluded=0) for c in cats}
    decisions = []
    for i, s in enumerate(STIMULI):
        z = table[30 + 20 * i].astype(np.float64)
        p = np.exp(z - z.max())
        p /= p.sum()
        scores = [p[mapping[indices_key][c]].mean() for c in cats]
        dec = cats[int(np.argmax(scores))]
        sh, tx = category(s, 1), category(s, 2)
        kind = "excluded" if sh == tx else "shape" if dec == sh else "texture" if dec == tx else "neither"
        counts[sh][kind] += 1
        decisions.append(kind)
    total = {k: sum(c[k] for c in counts.values()) for k in ("shape", "texture", "neither", "excluded")}
    return counts, total, decisions


def check_shape_bias_rows(rows, model, counts, total):
    def sb_value(c):
        n = c["shape"] + c["texture"]
        return "" if n == 0 else c["shape"] / n

    mine = [r for r in rows if r["model"] == model]
    assert [r["category"] for r in mine] == ["all"] + list(counts)
    for r in mine:
        c = total if r["category"] == "all" else counts[r["category"]]
        got = (int(r["shape_decisions"]), int(r["texture_decisions"]), int(r["neither"]), int(r["excluded"]))
        assert got == (c["shape"], c["texture"], c["neither"], c["excluded"]), (model, r)
        expect = sb_value(c)
        if expect == "":
            assert r["shape_bias"] == ""
        else:
            assert float(r["shape_bias"]) == pytest.approx(expect, abs=1e-9)


def test_cue_conflict_shape_bias_matches_numpy(sb, cue, tmp_path):
    d, out = cue["dir"], tmp_path / "out"
    p = sb("eval", d / "S.pt", d / "R.pt", d / "clean", "--cue-conflict", d / "stimuli", "--mapping", d / "map.json",
           "-o", out)
    assert p.returncode == 0, p.stderr
    rows = read_csv(out / "shape_bias.csv")
    prov = json.load(open(out / "provenance.json"))
    for m in ("S", "R"):
        counts, total, decisions = geirhos(cue["tables"][m], MAPPING, "indices")
        assert decisions == [k for _, k in BOOSTS[m]]  # the constructed case is what it claims
        check_shape_bias_rows(rows, m, counts, total)
        assert prov["shape_bias"][m] == pytest.approx(total["shape"] / (total["shape"] + total["texture"]))
    # By hand, S: shape on 0,4,5,7; texture on 1,6; neither on 3; 2 and 8 excluded.
    assert next(r for r in rows if r["model"] == "S" and r["category"] == "all")["shape_bias"] == "0.6666666667"
    assert prov["params"]["mapping"]["path"] == str(d / "map.json")
    # No per-image store (the stimuli have no fine label); each stimulus's decision is listed instead.
    assert not os.path.exists(out / "stores" / "cue-conflict-S.h5")
    dec = [r for r in csv.DictReader(open(out / "cue_conflict_decisions.csv")) if r["model"] == "S"]
    assert [r["stimulus"] for r in dec] == [s + ".png" for s in STIMULI]
    for r, (_, kind) in zip(dec, BOOSTS["S"]):
        stem = r["stimulus"][:-4]
        assert (r["shape"], r["texture"]) == (category(stem, 1), category(stem, 2))
        if kind == "shape":
            assert r["decision"] == r["shape"]
        elif kind == "texture":
            assert r["decision"] == r["texture"]
        elif kind == "neither":
            assert r["decision"] not in (r["shape"], r["texture"])


def test_cue_conflict_default_mapping(sb, cue, tmp_path):
    d, out = cue["dir"], tmp_path / "out"
    p = sb("eval", d / "S.pt", d / "clean", "--cue-conflict", d / "stimuli", "-o", out)
    assert p.returncode == 0, p.stderr
    default = json.load(open(os.path.join(SOURCE, "data", "imagenet16_categories.json")))
    assert len(default["categories"]) == 16
    counts, total, _ = geirhos(cue["tables"]["S"], default, "imagenet_indices")
    check_shape_bias_rows(read_csv(out / "shape_bias.csv"), "S", counts, total)
    path = json.load(open(out / "provenance.json"))["params"]["mapping"]["path"]
    assert path.endswith("imagenet16_categories.json") and os.path.exists(path)


def test_cue_conflict_errors(sb, cue, tmp_path):
    d = cue["dir"]
    out = tmp_path / "out"
    bad = dict(MAPPING, indices=dict(MAPPING["indices"], cat=[281, 1000]))
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    p = sb("eval", d / "S.pt", d / "clean", "--cue-conflict", d / "stimuli", "--mapping", tmp_path / "bad.json",
           "-o", out)
    assert p.returncode == 1
    eval_error(p, "bad.json", "'cat'", "1000")
    assert gone(out)
    stim = tmp_path / "stim"
    shutil.copytree(d / "stimuli", stim)
    flat(stim / "zebra1-cat2.png", 30, size=8)
    p = sb("eval", d / "S.pt", d / "clean", "--cue-conflict", stim, "--mapping", d / "map.json", "-o", out)
    assert p.returncode == 1
    eval_error(p, "zebra1-cat2.png", "'zebra'", "not in the mapping")
    assert gone(out)


# ---- ImageNet-C -------------------------------------------------------------------------------------

# Correct images of 4 (ant/0, ant/1, bee/0, bee/1) per corruption and severity.
C_CORRECT = {"fog": {1: 4, 2: 3, 3: 1}, "gaussian_noise": {1: 3, 2: 2, 3: 0}}
BASELINE = {"fog": {1: 0.6, 2: 0.5, 3: 0.4}, "gaussian_noise": {1: 0.5, 2: 0.4, 3: 0.2}}


@pytest.fixture(scope="module")
def corr(tmp_path_factory):
    d = tmp_path_factory.mktemp("imc")
    level = {0: 40, 1: 80}  # brightness → predicted class
    table = lookup_model(d / "S.pt", {40: predicting(0), 80: predicting(1)}, 10, seed=3)
    for c, by_s in C_CORRECT.items():
        for s, k in by_s.items():
            for j, (cls, y) in enumerate((("ant", 0), ("ant", 0), ("bee", 1), ("bee", 1))):
                pred = y if j < k else 1 - y
                flat(d / "c" / c / str(s) / cls / f"{j}.png", level[pred], size=8)
    flat(d / "clean" / "ant" / "0.png", 80, size=8)  # wrong: the CL set is empty
    lines = ["corruption,severity,accuracy", "# made-up AlexNet numbers"]
    lines += [f"{c},{s},{a}" for c, by_s in BASELINE.items() for s, a in by_s.items()]
    lines += ["contrast,1,0.3"]  # a corruption only the baseline has: ignored
    (d / "base.csv").write_text("\n".join(lines) + "\n")
    return dict(dir=d, table=table)


def test_imagenet_c_accuracy_and_ce(sb, corr, tmp_path):
    d, out = corr["dir"], tmp_path / "out"
    p = sb("eval", d / "S.pt", d / "clean", "--imagenet-c", d / "c", "--baseline", d / "base.csv", "-o", out)
    assert p.returncode == 0, p.stderr
    # The per-set accuracies, from the model's table and the files (label = sorted class index).
    acc = {}
    for c in sorted(C_CORRECT):
        for s in (1, 2, 3):
            right = [int(np.argmax(corr["table"][brightness(d / "c" / c / str(s) / cls / f"{j}.png")])) == y
                     for j, (cls, y) in enumerate((("ant", 0), ("ant", 0), ("bee", 1), ("bee", 1)))]
            acc[c, s] = np.mean(right)
            assert acc[c, s] == C_CORRECT[c][s] / 4
    rows = read_csv(out / "imagenet_c_accuracy.csv")
    assert [(r["model"], r["corruption"], int(r["severity"]), int(r["inputs"])) for r in rows] == \
        [("S", c, s, 4) for c, s in acc]
    for r in rows:
        assert float(r["top1"]) == pytest.approx(acc[r["corruption"], int(r["severity"])], abs=1e-12)
    ce = {c: sum(1 - acc[c, s] for s in (1, 2, 3)) / sum(1 - BASELINE[c][s] for s in (1, 2, 3)) for c in C_CORRECT}
    # By hand: fog (0 + .25 + .75) / (.4 + .5 + .6) = 2/3; gaussian_noise 1.75 / 1.9.
    assert ce["fog"] == pytest.approx(2 / 3) and ce["gaussian_noise"] == pytest.approx(1.75 / 1.9)
    got = {r["corruption"]: float(r["ce"]) for r in read_csv(out / "imagenet_c_ce.csv") if r["model"] == "S"}
    assert set(got) == {"fog", "gaussian_noise", "mCE"}
    for c in C_CORRECT:
        assert got[c] == pytest.approx(ce[c], rel=1e-9)
    assert got["mCE"] == pytest.approx(np.mean(list(ce.values())), rel=1e-9)
    assert json.load(open(out / "provenance.json"))["mce"]["S"] == pytest.approx(got["mCE"])
    # The CL set is empty (the one clean image is misclassified): only the all-inputs row.
    assert [r["variant"] for r in read_csv(out / "accuracy.csv")] == ["clean (all inputs)"]
    assert cl_ids(out / "cl_ids.txt") == []


def test_imagenet_c_missing_severity_is_refused(sb, corr, tmp_path):
    d, out = corr["dir"], tmp_path / "out"
    shutil.copytree(d / "c", tmp_path / "c")
    shutil.rmtree(tmp_path / "c" / "gaussian_noise" / "3")
    p = sb("eval", d / "S.pt", d / "clean", "--imagenet-c", tmp_path / "c", "--baseline", d / "base.csv", "-o", out)
    assert p.returncode == 1
    eval_error(p, "'gaussian_noise'", "severity 3")
    assert gone(out)


def test_imagenet_c_sets_with_other_classes_are_refused(sb, corr, tmp_path):
    """Labels are class folder positions, so a set missing a class folder would shift them."""
    d, out = corr["dir"], tmp_path / "out"
    shutil.copytree(d / "c", tmp_path / "c")
    sev = tmp_path / "c" / "fog" / "2"
    shutil.rmtree(sev / sorted(os.listdir(sev))[0])
    p = sb("eval", d / "S.pt", d / "clean", "--imagenet-c", tmp_path / "c", "--baseline", d / "base.csv", "-o", out)
    assert p.returncode == 1
    eval_error(p, "fog/2", "class folders differ")
    assert gone(out)


def test_quiet_failed_eval_prints_only_the_error(sb, cue, tmp_path):
    d = cue["dir"]
    stim = tmp_path / "stim"
    os.makedirs(stim)
    flat(stim / "zebra1-cat2.png", 30, size=8)
    p = sb("eval", d / "S.pt", d / "clean", "--cue-conflict", stim, "--mapping", d / "map.json", "--quiet",
           "-o", tmp_path / "out")
    assert p.returncode == 1
    one_error_line(p, "zebra1-cat2.png", "'zebra'")


# ---- usage errors ---------------------------------------------------------------------------------

@pytest.mark.parametrize("args,frags", [
    (["--imagenet-c", "somewhere"], ["--imagenet-c needs --baseline"]),
    (["--variant", "x=blur"], ["--variant 'x=blur'", "not one of"]),
    (["--variant", "x=scramble:0"], ["scramble:0"]),
    (["--variant", "x=noise:-1"], ["--variant 'x=noise:-1'", "positive"]),
    (["--variant", "x=noise:abc"], ["--variant 'x=noise:abc'"]),
    (["--variant", "nospec"], ["--variant 'nospec'", "NAME=SPEC"]),
    (["--variant", "=gray"], ["--variant '=gray'", "NAME=SPEC"]),
    (["--variant", "a=gray", "--variant", "a=edges"], ["--variant 'a=edges'", "'a' is taken"]),
    (["--variant", "clean=gray"], ["'clean' is taken"]),
])
def test_usage_errors(sb, small, tmp_path, args, frags):
    d = small["dir"]
    p = sb("eval", d / "A.pt", d / "clean", *args, "-o", tmp_path / "out")
    assert p.returncode == 2, p.stderr
    one_error_line(p, *frags)
    assert gone(tmp_path / "out")

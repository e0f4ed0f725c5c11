# SPDX-License-Identifier: MIT
"""`shapebias train`: learning, resuming, robustness of PGD training, the saved model, and errors."""
import csv
import json

import h5py
import numpy as np
import pytest
import torch

from conftest import FMNIST, one_error_line
from test_attack import script

SMALL = ["--split", "train", "--arch", "fashion-cnn:8", "--limit", "3000", "--eval-limit", "400", "--steps", "3",
         "--lr", "0.05", "--batch-size", "100", "--quiet"]


def train(sb, out, *args):
    p = sb("train", FMNIST, *SMALL, "-o", out, *args)
    assert p.returncode == 0, p.stderr.decode()
    with open(out / "log.csv") as f:
        return list(csv.DictReader(f))


def params(path):
    return {k: v.detach().clone() for k, v in torch.jit.load(str(path)).named_parameters()}


def test_loss_goes_down_and_outputs_are_complete(sb, tmp_path):
    rows = train(sb, tmp_path / "s", "--epochs", "3")
    losses = [float(r["loss"]) for r in rows]
    assert losses[2] < losses[1] < losses[0]
    assert float(rows[-1]["clean_accuracy"]) > 0.5  # ten classes: chance is 0.1
    with h5py.File(tmp_path / "s" / "train.h5") as f:
        assert f.attrs["complete"] == 1
        np.testing.assert_allclose(f["activations/loss"][:], losses, rtol=1e-6)
        rec = json.loads(f["provenance/log"].asstr()[-1])
        assert rec["params"]["epochs"] == 3 and rec["params"]["attack"]["eps"] == pytest.approx(0.1)
        assert rec["model"]["arch"] == "fashion-cnn:8" and len(rec["output_model"]["sha256"]) == 64
    # The saved model is plain TorchScript: Python loads it, and shapebias taps its stages.
    m = torch.jit.load(str(tmp_path / "s" / "model.pt"))
    assert m(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    p = sb("layers", tmp_path / "s" / "model.pt", "--input-size", "1,28,28")
    assert b"conv2\tConv2d\t16x14x14" in p.stdout and b"fc\tLinear\t10" in p.stdout


def test_resume_continues_where_it_stopped(sb, tmp_path):
    whole = train(sb, tmp_path / "whole", "--epochs", "2")
    first = train(sb, tmp_path / "parts", "--epochs", "2", "--stop-after", "1")
    assert len(first) == 1 and not (tmp_path / "parts" / "model.pt").exists()
    rest = train(sb, tmp_path / "parts", "--epochs", "2", "--resume")
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]
    assert strip(rest) == strip(whole)
    a, b = params(tmp_path / "whole" / "model.pt"), params(tmp_path / "parts" / "model.pt")
    for k in a:
        assert torch.equal(a[k], b[k]), k
    p = sb("train", FMNIST, *SMALL, "--epochs", "3", "--resume", "-o", tmp_path / "parts")
    assert p.returncode == 1
    one_error_line(p, "checkpoint.json", "other settings")


def test_pgd_training_makes_a_more_robust_model(sb, tmp_path):
    s = train(sb, tmp_path / "s", "--epochs", "2")
    r = train(sb, tmp_path / "r", "--epochs", "2", "--adversarial", "pgd")
    assert float(r[-1]["robust_accuracy"]) > float(s[-1]["robust_accuracy"]) + 0.1


def test_train_errors(sb, models, tmp_path, image_folder):
    out = tmp_path / "o"
    p = sb("train", FMNIST, "--arch", "fashion-cnn", "--eps", "-1", "-o", out)
    assert p.returncode == 2
    one_error_line(p, "--eps must be ≥ 0")
    p = sb("train", FMNIST, "-o", out)
    assert p.returncode == 2
    one_error_line(p, "--model FILE.pt or --arch")
    p = sb("train", FMNIST, "--arch", "vgg99", "-o", out)
    assert p.returncode == 2
    one_error_line(p, "unknown architecture 'vgg99'")
    maps = script(tmp_path, "maps", "self.c(x)")
    p = sb("train", FMNIST, "--model", maps, "--limit", "10", "-o", out)
    assert p.returncode == 1
    one_error_line(p, "maps.pt", "must return [B, K] logits")
    lst = tmp_path / "l.txt"
    lst.write_text("".join(f"{f} {i * 6}\n" for i, f in enumerate(sorted((image_folder / 'ant').glob('*.png')))))
    p = sb("train", lst, "--model", models / "fashion_cnn.pt", "--channels", "1", "--resize", "28", "--crop", "28",
           "--batch-size", "1", "-o", out)
    assert p.returncode == 1
    one_error_line(p, "label 12", "out of range [0, 10)")
    flat = script(tmp_path, "argmax", "torch.nn.functional.one_hot(self.c(x).flatten(1).argmax(1), 10).float()")
    p = sb("train", FMNIST, "--model", flat, "--limit", "10", "--adversarial", "pgd", "-o", out)
    assert p.returncode == 1
    one_error_line(p, "does not depend differentiably")

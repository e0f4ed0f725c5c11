# SPDX-License-Identifier: MIT
"""`shapebias attack` against an independent PyTorch reference, its invariants, seeding, and errors."""
import json

import h5py
import numpy as np
import pytest
import torch

from attack_reference import attack as reference
from conftest import FMNIST, one_error_line
from test_dump import fmnist_images

N = 64
MEAN, STD = 0.286, 0.353


def run(sb, models, out, *args, model="fashion_cnn.pt", limit=N):
    p = sb("attack", models / model, FMNIST, "--limit", limit, "--normalize", f"{MEAN}/{STD}", "-o", out, *args)
    assert p.returncode == 0, p.stderr.decode()
    return h5py.File(out)


CASES = {
    "fgsm": (["--method", "fgsm", "--eps", "0.05"], dict(method="fgsm", eps=0.05)),
    "pgd-linf": (["--no-random-start", "--steps", "5", "--eps", "0.05", "--alpha", "0.01"],
                 dict(eps=0.05, alpha=0.01, steps=5)),
    "pgd-l2": (["--no-random-start", "--norm", "l2", "--steps", "5", "--eps", "1.0", "--alpha", "0.3"],
               dict(norm="l2", eps=1.0, alpha=0.3, steps=5)),
    "pgd-best": (["--no-random-start", "--steps", "4", "--eps", "0.05", "--alpha", "0.02", "--best"],
                 dict(eps=0.05, alpha=0.02, steps=4, use_best=True)),
    "pgd-margin": (["--no-random-start", "--steps", "3", "--loss", "margin"], dict(steps=3, loss="margin")),
    "pgd-targeted": (["--no-random-start", "--steps", "3", "--target", "3"], dict(steps=3, target=3)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_the_pytorch_reference(sb, models, tmp_path, case):
    args, kw = CASES[case]
    from test_dump import eager_fashion_cnn
    m = eager_fashion_cnn(models / "fashion_cnn.pt")
    x, y = fmnist_images(N)
    y = torch.from_numpy(y.astype(np.int64))
    if "target" in kw:
        kw["target"] = torch.full_like(y, kw["target"])
    ref = reference(m, x, y, MEAN, STD, **kw).numpy()
    with run(sb, models, tmp_path / "a.h5", *args, "--batch-size", str(N)) as f:
        got = f["activations/adversarial"][:]
    # Same ops in the same order on the same float32 CPU kernels: bit-identical.
    np.testing.assert_array_equal(got, ref)


def test_invariants(sb, models, tmp_path):
    x, _ = fmnist_images(N)
    for norm, eps in [("linf", 0.03), ("l2", 0.8)]:
        with run(sb, models, tmp_path / f"{norm}.h5", "--norm", norm, "--eps", eps, "--alpha", eps / 4, "--steps", "6") as f:
            adv = f["activations/adversarial"][:]
            d = (adv - x.numpy()).reshape(N, -1)
            assert adv.min() >= 0 and adv.max() <= 1
            norms = np.abs(d).max(1) if norm == "linf" else np.linalg.norm(d, axis=1)
            assert norms.max() <= eps * (1 + 1e-5) + 1e-6
            np.testing.assert_allclose(f["activations/perturbation_linf"][:], np.abs(d).max(1), rtol=1e-6, atol=1e-7)
            np.testing.assert_allclose(f["activations/perturbation_l2"][:], np.linalg.norm(d, axis=1), rtol=1e-5)
            rec = json.loads(f["provenance/log"].asstr()[-1])
            assert rec["params"]["attack"]["eps"] == pytest.approx(eps)
            assert rec["params"]["attack"]["random_start"] is True  # the defaults are written out
            assert rec["params"]["attack"]["steps"] == 6 and rec["params"]["attack"]["loss"] == "ce"
            clean = (f["activations/clean_pred"][:] == f["index/label"][:]).mean()
            assert rec["summary"]["clean_accuracy"] == pytest.approx(clean)


def test_fgsm_is_one_pgd_step_without_random_start(sb, models, tmp_path):
    with run(sb, models, tmp_path / "f.h5", "--method", "fgsm", "--eps", "0.05") as f, \
         run(sb, models, tmp_path / "p.h5", "--no-random-start", "--steps", "1", "--eps", "0.05", "--alpha", "0.05") as g:
        # PGD projects by clamping the difference and adding it back: at most one float32 ulp apart.
        np.testing.assert_allclose(f["activations/adversarial"][:], g["activations/adversarial"][:], rtol=0, atol=1.2e-7)


def test_best_iterate_has_at_least_the_last_iterate_loss(sb, models, tmp_path):
    from test_dump import eager_fashion_cnn
    m = eager_fashion_cnn(models / "fashion_cnn.pt")
    _, y = fmnist_images(N)
    y = torch.from_numpy(y.astype(np.int64))
    args = ["--steps", "6", "--eps", "0.1", "--alpha", "0.05", "--seed", "5"]
    with run(sb, models, tmp_path / "b.h5", *args, "--best") as f, run(sb, models, tmp_path / "l.h5", *args) as g:
        with torch.no_grad():
            lb = torch.nn.functional.cross_entropy(m((torch.from_numpy(f["activations/adversarial"][:]) - MEAN) / STD), y, reduction="none")
            ll = torch.nn.functional.cross_entropy(m((torch.from_numpy(g["activations/adversarial"][:]) - MEAN) / STD), y, reduction="none")
    assert (lb >= ll - 1e-5).all()
    assert (lb > ll + 1e-4).any()  # the best iterate is not always the last one


def test_an_input_gets_the_same_example_in_any_batch(sb, models, tmp_path):
    args = ["--steps", "3", "--restarts", "1", "--target", "random", "--seed", "11"]
    with run(sb, models, tmp_path / "a.h5", *args, "--batch-size", "1", limit=40) as f, \
         run(sb, models, tmp_path / "b.h5", *args, "--batch-size", "32", limit=40) as g:
        np.testing.assert_array_equal(f["activations/target"][:], g["activations/target"][:])
        # Random starts are identical; gradients may differ in the last bits across batch shapes.
        np.testing.assert_allclose(f["activations/adversarial"][:], g["activations/adversarial"][:], atol=1e-6)
    with run(sb, models, tmp_path / "c.h5", *args[:-1], "12", limit=40) as h, h5py.File(tmp_path / "a.h5") as f:
        assert not np.array_equal(h["activations/adversarial"][:], f["activations/adversarial"][:])


def test_activations_of_adversarial_images(sb, models, tmp_path):
    from test_dump import eager_fashion_cnn
    m = eager_fashion_cnn(models / "fashion_cnn.pt")
    with run(sb, models, tmp_path / "a.h5", "-l", "features.3,logits", "--steps", "2") as f:
        adv = torch.from_numpy(f["activations/adversarial"][:])
        with torch.no_grad():
            logits = m((adv - MEAN) / STD)
        np.testing.assert_allclose(f["activations/logits"][:], logits.numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(f["activations/adv_pred"][:], logits.argmax(1).numpy())


def script(tmp_path, name, body):
    """A one-conv TorchScript model whose forward is `body` (x: the input, c: the conv)."""
    src = tmp_path / f"{name}.py"
    src.write_text(
        "import torch, sys\n"
        "class M(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.c = torch.nn.Conv2d(1, 10, 28)\n"
        "    def forward(self, x):\n"
        f"        return {body}\n"
        "torch.jit.script(M()).save(sys.argv[1])\n")
    import subprocess, sys
    subprocess.run([sys.executable, str(src), str(tmp_path / f"{name}.pt")], check=True)
    return tmp_path / f"{name}.pt"


def test_attack_errors(sb, models, tmp_path, image_folder):
    out = tmp_path / "x.h5"
    p = sb("attack", models / "fashion_cnn.pt", FMNIST, "--eps", "-0.1", "-o", out)
    assert p.returncode == 2
    one_error_line(p, "--eps must be ≥ 0")
    p = sb("attack", models / "fashion_cnn.pt", FMNIST, "--target", "10", "--limit", "4", "-o", out)
    assert p.returncode == 2
    one_error_line(p, "--target 10", "10 outputs")
    lst = tmp_path / "l.txt"
    lst.write_text(f"{next((image_folder / 'ant').glob('*.png'))} 1000\n")
    p = sb("attack", models / "resnet50.pt", lst, "--resize", "32", "--crop", "32", "-o", out)
    assert p.returncode == 1
    one_error_line(p, "label 1000", "out of range")
    not_logits = script(tmp_path, "maps", "self.c(x)")  # [B, 10, 1, 1], not [B, K]
    p = sb("attack", not_logits, FMNIST, "--limit", "4", "-o", out)
    assert p.returncode == 1
    one_error_line(p, "maps.pt", "must return [B, K] logits")
    flat = script(tmp_path, "argmax", "torch.nn.functional.one_hot(self.c(x).flatten(1).argmax(1), 10).float()")
    p = sb("attack", flat, FMNIST, "--limit", "4", "-o", out)
    assert p.returncode == 1
    one_error_line(p, "argmax.pt", "does not depend differentiably on its input")
    assert not out.exists()


def test_attack_streams_through_a_pipe(sb, models, tmp_path):
    import subprocess
    a = subprocess.Popen([sb.exe, "attack", str(models / "fashion_cnn.pt"), FMNIST, "--limit", "50", "--steps", "2",
                          "-o", "-"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    v = subprocess.run([sb.exe, "view", "-", "-o", str(tmp_path / "a.h5")], stdin=a.stdout, capture_output=True)
    a.stdout.close()
    assert a.wait() == 0 and v.returncode == 0, v.stderr
    assert b"robust accuracy" in a.stderr.read()
    with h5py.File(tmp_path / "a.h5") as f:
        assert f["activations/adversarial"].shape == (50, 1, 28, 28)

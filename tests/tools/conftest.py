# SPDX-License-Identifier: MIT
"""Fixtures for the command-line tests: the binary, scripted models, generated image sets."""
import os
import subprocess
import sys

import numpy as np
import pytest

SOURCE = os.environ.get("SHAPEBIAS_SOURCE", os.path.join(os.path.dirname(__file__), "..", ".."))
FMNIST = "/usr/share/datasets/fashion-mnist"
sys.path.insert(0, os.path.join(SOURCE, "scripts"))


@pytest.fixture(scope="session")
def sb():
    """Runs `shapebias ARGS...`; returns the CompletedProcess (stdout as bytes)."""
    exe = os.environ.get("SHAPEBIAS") or os.path.join(SOURCE, "build", "tools", "shapebias")

    def run(*args, input=None, timeout=600):
        return subprocess.run([exe, *map(str, args)], input=input, capture_output=True, timeout=timeout)

    run.exe = exe
    return run


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    """TorchScript files made by scripts/make_models.py (seeded random weights)."""
    out = tmp_path_factory.mktemp("models")
    subprocess.run([sys.executable, os.path.join(SOURCE, "scripts", "make_models.py"), str(out),
                    "fashion_cnn", "alexnet", "googlenet", "resnet50"], check=True, capture_output=True)
    return out


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory):
    """An ImageFolder tree of PNG and JPEG images of mixed sizes and modes, made with PIL."""
    from PIL import Image
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(7)
    sizes = [(50, 37), (64, 80), (33, 33), (90, 41), (40, 120)]
    for c, cls in enumerate(["ant", "bee", "cat"]):
        os.makedirs(root / cls)
        for i, (w, h) in enumerate(sizes):
            # Smooth content plus noise, so resizing has real work to do.
            y, x = np.mgrid[0:h, 0:w]
            base = np.stack([x * 255 / w, y * 255 / h, (x + y) * 127 / (w + h) + 60 * c], -1)
            img = np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)
            pil = Image.fromarray(img)
            if i == 2:
                pil = pil.convert("L")  # grayscale files are read as RGB, as ImageFolder does
            ext = "png" if i % 2 == 0 else "jpg"
            pil.save(root / cls / f"img{i}.{ext}", quality=92)
    return root


def one_error_line(proc, *must_contain):
    """The process failed with exactly one stderr line that contains every given fragment."""
    err = proc.stderr.decode()
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1, f"expected one error line, got: {err!r}"
    for frag in must_contain:
        assert frag in lines[0], f"{frag!r} not in {lines[0]!r}"
    return lines[0]


def write_store(path, layers, ids=None, labels=None, record=None):
    """Writes a complete shapebias store (docs/schema.md) from numpy arrays {name: [N, ...]}, as
    fixtures for the analysis verbs: made with h5py from the documented layout alone."""
    import json
    import h5py
    n = len(next(iter(layers.values())))
    ids = np.arange(n, dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64)
    labels = np.zeros(n, dtype=np.int64) if labels is None else np.asarray(labels, dtype=np.int64)
    with h5py.File(path, "w") as f:
        for name, a in layers.items():
            d = f.create_dataset(f"activations/{name}", data=np.asarray(a, dtype=np.float32),
                                 maxshape=(None,) + a.shape[1:], chunks=(1,) + a.shape[1:])
            d.attrs["layer"] = name
            d.attrs["unit_axis"] = 1
        for k, v in (("input_id", ids), ("label", labels)):
            f.create_dataset(f"index/{k}", data=v, maxshape=(None,), chunks=(max(1, n),))
        log = [json.dumps(record or {"verb": "fixture", "argv": "tests/tools/conftest.py write_store"})]
        f.create_dataset("provenance/log", data=log, dtype=h5py.string_dtype())
        f.attrs["format"] = "shapebias-store"
        f.attrs["format_version"] = 1
        f.attrs["layers"] = json.dumps(list(layers))
        f.attrs["resume_key"] = ""
        f.attrs["complete"] = 1


@pytest.fixture(scope="session")
def demo_results(sb, tmp_path_factory):
    """The results folder of one tiny end-to-end `shapebias demo` (report included), shared by the
    demo and report tests: the whole study on Fashion-MNIST at smoke-test sizes."""
    out = tmp_path_factory.mktemp("demo") / "results"
    r = sb("demo", "--preset", "tiny", "-@", "2", "-o", out, timeout=1200)
    assert r.returncode == 0, r.stderr.decode()
    return out

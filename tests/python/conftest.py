# SPDX-License-Identifier: MIT
"""Fixtures for the Python module's tests: the module (from PYTHONPATH: <build>/bindings/python), the
shapebias command and a small scripted model for the cases that read its stores and streams."""
import os
import subprocess
import sys

import numpy as np
import pytest

SOURCE = os.environ.get("SHAPEBIAS_SOURCE", os.path.join(os.path.dirname(__file__), "..", ".."))
FMNIST = "/usr/share/datasets/fashion-mnist"


@pytest.fixture(scope="session")
def exe():
    """The shapebias command; the case is skipped when it is not built (a build without LibTorch)."""
    path = os.environ.get("SHAPEBIAS")
    if not path or not os.path.exists(path):
        pytest.skip("the shapebias command is not built here (SHAPEBIAS unset)")
    return path


@pytest.fixture(scope="session")
def fashion_cnn(tmp_path_factory):
    """A TorchScript Fashion-MNIST CNN with seeded random weights (scripts/make_models.py)."""
    out = tmp_path_factory.mktemp("models")
    subprocess.run([sys.executable, os.path.join(SOURCE, "scripts", "make_models.py"), str(out), "fashion_cnn"],
                   check=True, capture_output=True)
    return out / "fashion_cnn.pt"


def dump_args(exe, model, *extra, limit=100, layers="features.3,logits"):
    return [exe, "dump", str(model), FMNIST, "-l", layers, "--limit", str(limit), "--batch-size", "32", "--quiet",
            *map(str, extra)]


@pytest.fixture(scope="session")
def store(exe, fashion_cnn, tmp_path_factory):
    """A store written by `shapebias dump`: 100 Fashion-MNIST images, layers features.3 and logits."""
    path = tmp_path_factory.mktemp("store") / "a.h5"
    subprocess.run(dump_args(exe, fashion_cnn, "-o", path), check=True, capture_output=True)
    return path


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def refuses(exc, fn, *args, match=None, **kwargs):
    """fn(*args) raises exc whose message contains every fragment of `match`."""
    with pytest.raises(exc) as e:
        fn(*args, **kwargs)
    for fragment in [match] if isinstance(match, str) else match or []:
        assert fragment in str(e.value), f"{fragment!r} not in {str(e.value)!r}"
    return e.value

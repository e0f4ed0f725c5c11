# SPDX-License-Identifier: MIT
"""Stores and streams written by `shapebias dump`, read through shapebias.open (compared with h5py
reading the same store), accumulator states written by `shapebias tv` (read_state), the error paths,
and the package installed by `cmake --install`."""
import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
import shapebias

from conftest import dump_args, refuses


def h5py_contents(path):
    with h5py.File(path) as f:
        return ({name: f["activations"][name][:] for name in f["activations"]}, f["index/input_id"][:],
                f["index/label"][:], [r.decode() if isinstance(r, bytes) else r for r in f["provenance/log"][:]])


def read_all(reader):
    batches = list(reader)
    data = {name: np.concatenate([b[name] for b in batches]) for name in reader.layers}
    return batches, data, np.concatenate([b.ids for b in batches]), np.concatenate([b.labels for b in batches])


def test_store_reads_as_h5py_does(store):
    acts, ids, labels, log = h5py_contents(store)
    with shapebias.open(store, batch_size=30) as r:
        assert r.format == "shapebias-store v1" and r.rows == 100
        assert r.layers == {"features.3": acts["features.3"].shape[1:], "logits": (10,)}
        assert r.provenance == log and json.loads(r.provenance[-1])["verb"] == "dump"
        batches, data, got_ids, got_labels = read_all(r)
    assert [b.first_row for b in batches] == [0, 30, 60, 90] and [b.rows for b in batches] == [30, 30, 30, 10]
    for name in acts:
        np.testing.assert_array_equal(data[name], acts[name])
        assert batches[0][name].dtype == np.float32
    np.testing.assert_array_equal(got_ids, ids)
    np.testing.assert_array_equal(got_labels, labels)
    b = batches[0]
    assert b.ids.dtype == np.int64 and list(b.data) == ["features.3", "logits"] and "30 rows" in repr(b)
    # The arrays own the buffers the reader filled: no copy, no view of one another.
    for a in [b.ids, b.labels, b["logits"]]:
        assert type(a.base).__name__ == "PyCapsule" and not a.flags.owndata
    assert not np.shares_memory(b["logits"], batches[1]["logits"])
    with pytest.raises(KeyError, match="no layer 'conv'"):
        b["conv"]


def test_layers_are_chosen_and_ordered(store):
    acts, *_ = h5py_contents(store)
    r = shapebias.open(store, layers=["logits", "features.3"], batch_size=64)
    assert list(r.layers) == ["logits", "features.3"]
    first = next(r)
    assert list(first.data) == ["logits", "features.3"] and first.rows == 64
    np.testing.assert_array_equal(first["features.3"], acts["features.3"][:64])
    r.close()
    refuses(ValueError, next, r, match="closed")
    refuses(shapebias.IOError, shapebias.open, store, layers=["nope"], match=["a.h5", "no layer 'nope'"])
    refuses(shapebias.IOError, shapebias.open, store, layers=["logits", "logits"], match="asked for twice")
    refuses(ValueError, shapebias.open, store, batch_size=0, match="batch size")


def test_stream_from_a_pipe(exe, fashion_cnn, store):
    acts, ids, labels, _ = h5py_contents(store)
    p = subprocess.Popen(dump_args(exe, fashion_cnn, "-o", "-"), stdout=subprocess.PIPE)
    with shapebias.open(p.stdout, layers=["features.3"]) as r:
        assert r.format == "shapebias-stream v1" and r.rows is None and list(r.layers) == ["features.3"]
        batches, data, got_ids, got_labels = read_all(r)
        assert "finished" in json.loads(r.provenance[-1])  # stamped from the end record
    assert p.wait() == 0
    assert [b.rows for b in batches] == [32, 32, 32, 4]  # the batches it was written with
    np.testing.assert_array_equal(data["features.3"], acts["features.3"])
    np.testing.assert_array_equal(got_ids, ids)
    np.testing.assert_array_equal(got_labels, labels)


def test_stream_file_and_standard_input(exe, fashion_cnn, tmp_path):
    path = tmp_path / "a.sbs"
    subprocess.run(dump_args(exe, fashion_cnn, "-o", path, limit=40), check=True, capture_output=True)
    with shapebias.open(str(path)) as r:
        assert r.format == "shapebias-stream v1" and sum(b.rows for b in r) == 40
    code = "import shapebias; print(sum(b.rows for b in shapebias.open('-')))"
    with open(path, "rb") as f:
        out = subprocess.run([sys.executable, "-c", code], stdin=f, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "40"


def test_damaged_inputs_are_errors(exe, fashion_cnn, tmp_path):
    data = subprocess.run(dump_args(exe, fashion_cnn, "-o", "-", limit=40), check=True, capture_output=True).stdout
    cut = tmp_path / "cut.sbs"
    cut.write_bytes(data[: len(data) - 100])
    r = shapebias.open(cut)
    with pytest.raises(shapebias.IOError, match="truncated stream"):
        for _ in r:  # never a shorter result
            pass
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 1
    (tmp_path / "bad.sbs").write_bytes(bytes(flipped))
    with pytest.raises(OSError, match="corrupt stream"):
        list(shapebias.open(tmp_path / "bad.sbs"))
    (tmp_path / "junk").write_bytes(b"not a store")
    refuses(shapebias.IOError, shapebias.open, tmp_path / "junk", match="neither a shapebias HDF5 store nor a shapebias stream")
    refuses(shapebias.IOError, shapebias.open, tmp_path / "missing.h5", match=["missing.h5", "cannot open"])
    refuses(TypeError, shapebias.open, 42)


def test_state_written_by_shapebias_tv(exe, store, tmp_path):
    out = tmp_path / "tv"
    p = subprocess.run([exe, "tv", str(store), "-l", "features.3", "-o", str(out)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    with h5py.File(out / "tv.h5") as f:
        groups = []
        f.visit(lambda name: groups.append(name) if name.endswith("features.3/tv_clean") else None)
    assert len(groups) == 1
    state = shapebias.read_state(str(out / "tv.h5"), groups[0])
    assert state["kind"] == "tv"
    theirs = shapebias.TVAccumulator.from_state(state)
    ours = shapebias.TVAccumulator(theirs.channels)
    for b in shapebias.open(store, layers=["features.3"]):
        ours.update(b["features.3"], ids=b.ids)
    np.testing.assert_array_equal(theirs.count(), ours.count())
    np.testing.assert_allclose(theirs.mean(), ours.mean(), rtol=1e-12)
    np.testing.assert_allclose(theirs.variance(), ours.variance(), rtol=1e-9)
    refuses(shapebias.IOError, shapebias.read_state, str(out / "tv.h5"), "nope", match="no state 'nope'")


def test_installed_package(tmp_path):
    build, where = os.environ.get("SHAPEBIAS_BUILD"), os.environ.get("SHAPEBIAS_PYTHON_INSTALL_DIR")
    if not build or not where:
        pytest.skip("no install rules in this build (SHAPEBIAS_INSTALL=OFF)")
    prefix = tmp_path / "prefix"
    subprocess.run(["cmake", "--install", build, "--prefix", str(prefix), "--component", "python"], check=True,
                   capture_output=True)
    code = ("import numpy as np, shapebias; print(shapebias.__file__); "
            "print(shapebias.total_variation(np.array([[0., 1.], [3., 5.]])))")
    env = dict(os.environ, PYTHONPATH=str(prefix / where))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    installed, tv = out.stdout.split()
    assert installed == str(prefix / where / "shapebias" / "__init__.py") and float(tv) == 10.0

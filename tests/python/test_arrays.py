# SPDX-License-Identifier: MIT
"""How arrays cross the binding (docs/python.md, "Conventions"): a wrong dtype is a TypeError and a
wrong layout a ValueError at every entry point, never a conversion; inputs are read in place (peak
memory does not grow by a copy); results own the C++ buffers or view them; long calls release the
GIL."""
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import shapebias

from conftest import refuses

F32 = np.zeros((4, 3, 5, 5), np.float32)
ROWS = np.zeros((4, 3), np.float32)
IDS = np.arange(4, dtype=np.int64)
PRIMARY = np.zeros(4, np.int32)
SEGS = np.zeros((4, 10, 10), np.int32)
THR = np.zeros(3, np.float32)
PROBS = np.full((4, 2), 0.5)

# (what is called, a call with one argument of a wrong dtype, the dtype named in the message)
WRONG_DTYPE = [
    ("total_variation", lambda: shapebias.total_variation(F32.astype(np.int32)), "int32"),
    ("total_variation float16", lambda: shapebias.total_variation(F32.astype(np.float16)), "float16"),
    ("total_variation list", lambda: shapebias.total_variation([[0.0, 1.0], [2.0, 3.0]]), "list"),
    ("TVAccumulator.update", lambda: shapebias.TVAccumulator(3).update(F32.astype(np.complex64)), "complex64"),
    ("TVAccumulator.update ids", lambda: shapebias.TVAccumulator(3).update(F32, ids=IDS.astype(np.int32)), "int32"),
    ("radial_spectrum", lambda: shapebias.radial_spectrum(F32.astype(np.int64)), "int64"),
    ("SpectrumAccumulator.update", lambda: shapebias.SpectrumAccumulator(3, 5, 5).update(F32.astype(bool)), "bool"),
    ("ExactQuantiles.update", lambda: shapebias.ExactQuantiles(3).update(F32.astype(np.float64)), "float64"),
    ("QuantileSketch.update", lambda: shapebias.QuantileSketch(3).update(F32.astype(np.float64)), "float64"),
    ("upsample_bilinear", lambda: shapebias.upsample_bilinear(SEGS, (20, 20)), "int32"),
    ("IoUTally primary", lambda: shapebias.IoUTally(3, 4, 1, PRIMARY.astype(np.int64)), "int64"),
    ("IoUTally.update acts", lambda: shapebias.IoUTally(3, 4, 1, PRIMARY).update(F32.astype(np.float64), THR, SEGS),
     "float64"),
    ("IoUTally.update thresholds",
     lambda: shapebias.IoUTally(3, 4, 1, PRIMARY).update(F32, THR.astype(np.float64), SEGS), "float64"),
    ("IoUTally.update segmentations",
     lambda: shapebias.IoUTally(3, 4, 1, PRIMARY).update(F32, THR, SEGS.astype(np.uint8)), "uint8"),
    ("IoUTally.update image_labels",
     lambda: shapebias.IoUTally(3, 4, 1, PRIMARY).update(F32, THR, SEGS, np.zeros((4, 1), np.int64)), "int64"),
    ("TopK.update", lambda: shapebias.TopK(3, 2).update(F32.astype(np.int16)), "int16"),
    ("TopK.update ids", lambda: shapebias.TopK(3, 2).update(F32, ids=IDS.astype(np.float64)), "float64"),
    ("UnitActivity.update", lambda: shapebias.UnitActivity(3).update(ROWS.astype(np.uint32)), "uint32"),
    ("label_diversity", lambda: shapebias.label_diversity(IDS.astype(np.int32)), "int32"),
    ("embedding_diversity", lambda: shapebias.embedding_diversity(ROWS.astype(np.int64)), "int64"),
    ("kmeans", lambda: shapebias.kmeans(ROWS.astype(np.float16), 2), "float16"),
    ("silhouette labels", lambda: shapebias.silhouette(ROWS, IDS.astype(np.uint64)), "uint64"),
    ("facets", lambda: shapebias.facets(ROWS.astype(np.int8)), "int8"),
    ("softmax_rows", lambda: shapebias.softmax_rows(PROBS.astype(np.longdouble)), "float128"),
    ("ShapeBias.update", lambda: shapebias.ShapeBias(["a", "b"], [[0], [1]]).update(
        PROBS, IDS.astype(np.uint64) % 2, IDS % 2), "uint64"),
    ("TopKAccuracy.update", lambda: shapebias.TopKAccuracy(2, 1).update(PROBS, IDS.astype(np.int32) % 2), "int32"),
    ("from_state", lambda: shapebias.TopK.from_state(
        {**shapebias.TopK(3, 2).state(), "arrays": {k: v.astype(np.float32)
                                                   for k, v in shapebias.TopK(3, 2).state()["arrays"].items()}}),
     "float32"),
]


@pytest.mark.parametrize("call,dtype", [(c, d) for _, c, d in WRONG_DTYPE], ids=[n for n, _, _ in WRONG_DTYPE])
def test_a_wrong_dtype_is_a_type_error(call, dtype):
    e = refuses(TypeError, call, match=dtype)
    assert "never converted" in str(e) or "nothing is converted" in str(e)


def test_a_wrong_layout_is_a_value_error():
    fortran = np.asfortranarray(np.zeros((6, 7)))
    refuses(ValueError, shapebias.total_variation, fortran, match=["C-contiguous", "np.ascontiguousarray"])
    refuses(ValueError, shapebias.TVAccumulator(3).update, np.zeros((4, 6, 5, 5))[:, ::2], match="C-contiguous")
    refuses(ValueError, shapebias.TopK(3, 2).update, F32[..., 0], match="C-contiguous")
    refuses(ValueError, shapebias.TVAccumulator(3).update, ROWS, match="expected 4 axes, got 2")
    refuses(ValueError, shapebias.embedding_diversity, F32, match="expected 2 axes, got 4")


def test_read_only_inputs_are_read_in_place():
    x = np.random.default_rng(0).standard_normal((3, 2, 6, 6)).astype(np.float32)
    x.setflags(write=False)
    acc = shapebias.TVAccumulator(2)
    acc.update(x)
    np.testing.assert_array_equal(shapebias.total_variation(x), shapebias.total_variation(x.copy()))


def test_results_own_or_view_the_cpp_buffers():
    acc = shapebias.TVAccumulator(3)
    acc.update(np.ones((2, 3, 4, 4)))
    tv = shapebias.total_variation(F32)
    state = acc.state()
    # Results computed into C++ buffers are handed over, not copied: numpy does not own their data.
    for a in [tv, state["arrays"]["mean"], shapebias.softmax_rows(PROBS), shapebias.intersect_correct([IDS])]:
        assert not a.flags.owndata and type(a.base).__name__ == "PyCapsule"
    # Views of the accumulator's own memory: the same buffer at every call, never writable.
    assert np.shares_memory(acc.count(), acc.count()) and not acc.count().flags.writeable
    spec = shapebias.SpectrumAccumulator(3, 5, 5)
    assert np.shares_memory(spec.count(), spec.count())
    # Fresh results are fresh arrays.
    assert not np.shares_memory(acc.mean(), acc.mean())


PEAK = """
import resource, sys
import numpy as np
import shapebias
x = np.ones((128, 64, 64, 64), np.float32)          # 128 MiB, touched
peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss >> 10  # MiB
before = peak()
{call}
during = peak() - before
y = x.copy()                                        # the growth a copy would show
print(during, peak() - before)
"""


@pytest.mark.parametrize("call", [
    "shapebias.TVAccumulator(64).update(x, threads=2)",
    "shapebias.total_variation(x)",
    "shapebias.TopK(64, 10).update(x, ids=np.arange(128))",
    "shapebias.UnitActivity(64).update(x)",
    "shapebias.SpectrumAccumulator(64, 64, 64).update(x)",
])
def test_inputs_are_not_copied(call):
    out = subprocess.run([sys.executable, "-c", PEAK.format(call=call)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    during, with_copy = map(int, out.stdout.split())
    assert with_copy >= 100  # the measurement sees a copy...
    assert during < 24, f"peak memory grew by {during} MiB during {call}"  # ...and there was none


@pytest.mark.parametrize("work", [
    lambda x: shapebias.TVAccumulator(64).update(x),
    lambda x: shapebias.TopK(64, 5).update(x),
    lambda x: shapebias.total_variation(x),
])
def test_long_calls_release_the_gil(work):
    x = np.ones((128, 64, 64, 64), np.float32)  # 128 MiB: a long call
    work(x[:2])  # warm up
    started, times = threading.Event(), {}

    def worker():
        started.set()
        times["start"] = time.perf_counter()
        work(x)
        times["end"] = time.perf_counter()

    t = threading.Thread(target=worker)
    t.start()
    started.wait()
    first = time.perf_counter()  # the main thread runs again: during the call if it released the GIL
    t.join()
    assert first - times["start"] < (times["end"] - times["start"]) / 2

# SPDX-License-Identifier: MIT
"""Command-line behaviour: help and usage, streams and `view`, the docs' snippets, and bad input."""
import os
import re
import subprocess
import sys

import h5py
import numpy as np
import pytest

from conftest import FMNIST, SOURCE, one_error_line


def verbs(sb):
    out = sb("--help").stdout.decode()
    return re.findall(r"^  (\w+)\s", out.split("Commands:")[1], re.M)


def test_every_verb_answers_help(sb):
    vs = verbs(sb)
    assert {"dump", "layers", "view", "version", "help"} <= set(vs)
    for v in vs:
        if v == "help":
            continue
        a, b = sb("help", v), sb(v, "--help")
        assert a.returncode == 0 and b.returncode == 0, v
        assert a.stdout == b.stdout and b"Usage" in a.stdout


def test_no_arguments_prints_usage(sb):
    p = sb()
    assert p.returncode == 0 and b"Usage: shapebias COMMAND" in p.stdout


@pytest.mark.parametrize("args,fragment", [
    (["frobnicate"], "unknown command 'frobnicate'"),
    (["dump", "--no-such-option"], "shapebias dump:"),
    (["dump", "m.pt"], "shapebias dump:"),
    (["layers", "m.pt", "--input-size", "3,224"], "shapebias layers:"),
    (["view", "--batch-size", "0"], "shapebias view:"),
    (["dump", "m.pt", FMNIST, "-l", "x", "--normalize", "bogus", "-o", "x.h5"], "--normalize"),
])
def test_usage_errors_exit_2_with_one_line(sb, args, fragment):
    p = sb(*args)
    assert p.returncode == 2
    one_error_line(p, fragment)


def test_version_names_the_libraries(sb):
    p = sb("version")
    assert p.returncode == 0
    out = p.stdout.decode()
    for lib in ["shapebias ", "hdf5 1.10", "xtensor 0.24", "libtorch 1.13"]:
        assert lib in out


def dump(sb, models, out, *extra, limit=120, layers="features.3,logits"):
    p = sb("dump", models / "fashion_cnn.pt", FMNIST, "-l", layers, "--limit", limit, "-o", out, *extra)
    assert p.returncode == 0, p.stderr.decode()
    return out


def same_store(a, b):
    with h5py.File(a) as f, h5py.File(b) as g:
        assert list(f["activations"]) == list(g["activations"])
        for k in ["index/input_id", "index/label"] + [f"activations/{n}" for n in f["activations"]]:
            np.testing.assert_array_equal(f[k][:], g[k][:])


def test_stream_through_a_pipe_equals_the_store(sb, models, tmp_path):
    h5 = dump(sb, models, tmp_path / "a.h5")
    d = subprocess.Popen([sb.exe, "dump", str(models / "fashion_cnn.pt"), FMNIST, "-l", "features.3,logits",
                          "--limit", "120", "-o", "-"], stdout=subprocess.PIPE)
    v = subprocess.run([sb.exe, "view", "-", "-o", str(tmp_path / "b.h5")], stdin=d.stdout, capture_output=True)
    d.stdout.close()
    assert d.wait() == 0 and v.returncode == 0, v.stderr.decode()
    same_store(h5, tmp_path / "b.h5")
    # and back: store -> stream file -> store
    assert sb("view", h5, "-o", tmp_path / "c.sbs").returncode == 0
    assert sb("view", tmp_path / "c.sbs", "-o", tmp_path / "c.h5").returncode == 0
    same_store(h5, tmp_path / "c.h5")
    with h5py.File(tmp_path / "c.h5") as f:
        verbs_ = [r for r in f["provenance/log"].asstr()[:]]
        assert [__import__("json").loads(r)["verb"] for r in verbs_] == ["dump", "view", "view"]


def test_view_summary(sb, models, tmp_path):
    h5 = dump(sb, models, tmp_path / "a.h5")
    out = sb("view", h5).stdout.decode()
    assert "rows: 120" in out and "features.3\tfloat32 [120, 64, 14, 14]" in out and "logits\tfloat32 [120, 10]" in out
    assert "dump" in out and "shapebias dump " in out
    js = __import__("json").loads(sb("view", "--json", h5).stdout)
    assert js["rows"] == 120 and js["layers"][0]["shape"] == [64, 14, 14]


def run_snippet(doc, *args):
    text = open(os.path.join(SOURCE, "docs", doc)).read()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True)


def test_docs_h5py_snippet_reads_a_dump(sb, models, tmp_path):
    h5 = dump(sb, models, tmp_path / "a.h5")
    p = run_snippet("schema.md", h5)
    assert p.returncode == 0, p.stderr
    assert "features.3 (120, 64, 14, 14)" in p.stdout and "rows 120" in p.stdout


def test_docs_numpy_loop_reads_a_stream(sb, models, tmp_path):
    s = dump(sb, models, tmp_path / "a.sbs", "--batch-size", "50")
    p = run_snippet("stream.md", s)
    assert p.returncode == 0, p.stderr
    assert "120 rows of ['features.3', 'logits']" in p.stdout


def test_truncated_or_corrupt_stream_is_an_error(sb, models, tmp_path):
    data = dump(sb, models, tmp_path / "a.sbs").read_bytes()
    for cut in [len(data) - 1, len(data) // 2, 300]:
        p = sb("view", "-", input=data[:cut])
        assert p.returncode == 1
        one_error_line(p, "shapebias view:", "truncated")
    p = sb("view", "-", input=data + b"\0")
    one_error_line(p, "bytes after the end record")
    bad = bytearray(data)
    bad[len(data) // 2] ^= 1
    p = sb("view", "-", input=bytes(bad))
    assert p.returncode == 1
    one_error_line(p, "corrupt stream")
    # a conversion of a broken stream leaves no output that looks complete
    p = sb("view", "-", "-o", tmp_path / "x.h5", input=data[: len(data) // 2])
    assert p.returncode == 1 and not (tmp_path / "x.h5").exists()


def make_list(tmp_path, image_folder, label):
    src = next((image_folder / "ant").glob("*.png"))
    lst = tmp_path / "list.txt"
    lst.write_text(f"{src} 0\n{src} {label}\n")
    return lst


def bad_inputs(tmp_path, models, image_folder):
    """(name, args, fragments in the one error line, output that must not exist)."""
    out = tmp_path / "out.h5"
    fm = models / "fashion_cnn.pt"
    not_ours = tmp_path / "other.h5"
    with h5py.File(not_ours, "w") as f:
        f["x"] = np.arange(3)
    full = tmp_path / "full.h5"
    subprocess.run([os.environ.get("SHAPEBIAS", ""), "dump", str(fm), FMNIST, "-l", "logits", "--limit", "50",
                    "-o", str(full)], check=True)
    cut = tmp_path / "cut.h5"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    bad_img = tmp_path / "badimg"
    (bad_img / "a").mkdir(parents=True)
    (bad_img / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    return [
        ("missing model", ["dump", tmp_path / "nope.pt", FMNIST, "-l", "logits", "-o", out], ["nope.pt"]),
        ("unreadable model", ["dump", not_ours, FMNIST, "-l", "logits", "-o", out], ["other.h5", "cannot load"]),
        ("missing data", ["dump", fm, tmp_path / "nodata", "-l", "logits", "-o", out], ["nodata", "no such file"]),
        ("missing store", ["view", tmp_path / "none.h5"], ["none.h5"]),
        ("HDF5 not ours", ["view", not_ours], ["other.h5", "not a shapebias store"]),
        ("truncated HDF5", ["view", cut], ["cut.h5"]),
        ("unknown layer", ["dump", fm, FMNIST, "-l", "features.33", "-o", out],
         ["unknown layer 'features.33'", "closest: 'features.3'"]),
        ("image does not decode", ["dump", models / "resnet50.pt", bad_img, "-l", "logits", "--resize", "32", "-o", out],
         ["broken.png", "does not decode"]),
        ("label out of range", ["dump", models / "resnet50.pt", make_list(tmp_path, image_folder, 1000), "-l",
                                "logits", "--resize", "32", "--crop", "32", "-o", out],
         ["label 1000", "out of range [0, 1000)"]),
        ("input size rejected", ["dump", fm, FMNIST, "--channels", "3", "-l", "logits", "-o", out],
         ["rejects input of shape [1, 3, 28, 28]"]),
    ]


def test_bad_input_gives_one_clear_line(sb, models, image_folder, tmp_path):
    for name, args, fragments in bad_inputs(tmp_path, models, image_folder):
        p = sb(*args)
        assert p.returncode == 1, (name, p.stderr)
        line = one_error_line(p, *fragments)
        assert line.startswith("shapebias "), (name, line)
        assert not (tmp_path / "out.h5").exists(), name


def test_progress_only_on_a_terminal(sb, models, tmp_path):
    import pty
    args = [sb.exe, "dump", str(models / "fashion_cnn.pt"), FMNIST, "-l", "logits", "--limit", "300"]
    master, slave = pty.openpty()
    p = subprocess.run(args + ["-o", str(tmp_path / "a.h5")], stderr=slave, stdout=subprocess.DEVNULL)
    os.close(slave)
    shown = os.read(master, 65536).decode()
    os.close(master)
    assert p.returncode == 0 and "dump: 300/300 rows (100%)" in shown and "rows/s" in shown
    quiet = subprocess.run(args + ["-o", str(tmp_path / "b.h5")], capture_output=True)
    assert quiet.returncode == 0 and quiet.stderr == b""  # not a terminal: no progress


def test_unavailable_device_is_refused(sb, models, tmp_path):
    p = sb("dump", models / "fashion_cnn.pt", FMNIST, "-l", "logits", "--device", "cuda", "-o", tmp_path / "a.h5")
    assert p.returncode == 1
    one_error_line(p, "--device cuda", "not available")
    p = sb("dump", models / "fashion_cnn.pt", FMNIST, "-l", "logits", "--device", "tpu9", "-o", tmp_path / "a.h5")
    assert p.returncode == 2
    one_error_line(p, "not a device name")


def test_a_failing_writer_ends_the_run_with_one_error(sb, models):
    with open("/dev/full", "wb") as full:  # every write fails with ENOSPC
        p = subprocess.run([sb.exe, "dump", str(models / "fashion_cnn.pt"), FMNIST, "-l", "features.0",
                            "--batch-size", "16", "-o", "-"], stdout=full, stderr=subprocess.PIPE, timeout=120)
    assert p.returncode == 1
    one_error_line(p, "write failed", "No space left")


def test_images_of_other_sizes_are_refused_across_batches(sb, models, image_folder, tmp_path):
    p = sb("dump", models / "resnet50.pt", image_folder, "-l", "logits", "--batch-size", "1", "-o", tmp_path / "a.h5")
    assert p.returncode == 1
    one_error_line(p, "img1.jpg", "the first image to [3, 37, 50]", "--resize and --crop")
    assert not (tmp_path / "a.h5").exists()


def test_a_stream_given_by_pipe_name(sb, models, tmp_path):
    data = dump(sb, models, tmp_path / "a.sbs").read_bytes()
    p = subprocess.run([sb.exe, "view", "/dev/stdin"], input=data, capture_output=True)
    assert p.returncode == 0, p.stderr
    assert b"rows: 120" in p.stdout


def test_png_modes_decode_as_pil_convert_rgb(sb, models, tmp_path):
    from PIL import Image
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (9, 11, 3), dtype=np.uint8)
    root = tmp_path / "png" / "c"
    root.mkdir(parents=True)
    imgs = {
        "a_rgba.png": Image.fromarray(np.dstack([rgb, rng.integers(0, 256, (9, 11), dtype=np.uint8)]), "RGBA"),
        "b_la.png": Image.fromarray(rgb[..., 0]).convert("LA"),
        "c_palette.png": Image.fromarray(rgb).convert("P"),
        "d_bilevel.png": Image.fromarray(rgb[..., 1]).convert("1"),
        "e_grey.png": Image.fromarray(rgb[..., 2]),
    }
    pal = Image.fromarray(rgb).convert("P")
    pal.info["transparency"] = 3
    imgs["f_palette_trns.png"] = pal
    for name, im in imgs.items():
        im.save(root / name)
    out = tmp_path / "png.h5"
    p = sb("dump", models / "resnet50.pt", tmp_path / "png", "-l", "input", "-o", out)
    assert p.returncode == 0, p.stderr.decode()
    with h5py.File(out) as f:
        got = np.rint(f["activations/input"][:] * 255).astype(np.uint8).transpose(0, 2, 3, 1)
    for i, name in enumerate(sorted(imgs)):
        ref = np.asarray(Image.open(root / name).convert("RGB"))
        np.testing.assert_array_equal(got[i], ref, err_msg=name)

# SPDX-License-Identifier: MIT
"""`shapebias tv` and the noise/id options it relies on: every number against an independent numpy
computation (np.diff for TV, a full complex FFT for spectra), and the documented error paths."""
import csv
import io
import json
import os

import h5py
import numpy as np
import pytest
import torch

from conftest import FMNIST, one_error_line, write_store


def read_csv(path_or_text):
    text = open(path_or_text).read() if os.path.exists(str(path_or_text)) else path_or_text
    lines = [l for l in text.splitlines() if not l.startswith("#")]
    return list(csv.DictReader(io.StringIO("\n".join(lines))))


def tv_np(x, beta=1.0):
    """TV over the last two axes, from np.diff: an independent formulation of paper-spec §3.1."""
    x = x.astype(np.float64)
    return (np.abs(np.diff(x, axis=-2)) ** beta).sum((-2, -1)) + (np.abs(np.diff(x, axis=-1)) ** beta).sum((-2, -1))


def hf_np(maps, cutoff=0.25, pad=None):
    """Fraction of non-DC power above `cutoff` cycles/pixel, from a full complex FFT; maps [..., H, W]
    summed over all leading axes (one spectrum for all of them)."""
    h, w = maps.shape[-2:]
    if pad:
        h, w = max(h, pad), max(w, pad)
    p = np.abs(np.fft.fft2(maps.astype(np.float64), s=(h, w))) ** 2
    p = p.reshape(-1, h, w).sum(0)
    fy, fx = np.fft.fftfreq(h)[:, None], np.fft.fftfreq(w)[None, :]
    r = np.sqrt(fy ** 2 + fx ** 2)
    ac = p[r > 0].sum()
    return p[r > cutoff].sum() / ac if ac > 0 else 0.0


@pytest.fixture(scope="module")
def dumps(sb, models, tmp_path_factory):
    """Clean and noisy activations of the Fashion-MNIST CNN for 120 test images."""
    d = tmp_path_factory.mktemp("tv")
    model = models / "fashion_cnn.pt"
    for name, extra in (("clean", []), ("noisy", ["--noise", "0.1", "--noise-seed", "3"])):
        p = sb("dump", model, FMNIST, "-l", "features.1,features.4", "--limit", 120, "--quiet",
               "-o", d / f"{name}.h5", *extra)
        assert p.returncode == 0, p.stderr
    return d


def test_filter_tv_matches_numpy(sb, models, tmp_path):
    model = models / "alexnet.pt"
    p = sb("tv", "--weights", model, "-o", tmp_path / "f")
    assert p.returncode == 0, p.stderr
    rows = read_csv(tmp_path / "f" / "filters.csv")
    state = torch.jit.load(str(model)).state_dict()
    convs = [(k[:-7], v.numpy()) for k, v in state.items() if v.dim() == 4]
    assert [r["layer"] for r in rows[:-1]] == [k for k, _ in convs]
    total = weighted = weighted_hf = 0.0
    for r, (name, w) in zip(rows, convs):
        per_filter = tv_np(w).sum(1)  # TV of each [in, k, k] filter: summed over input channels
        assert float(r["mean_tv_S"]) == pytest.approx(per_filter.mean(), rel=1e-6)
        assert float(r["sd_tv_S"]) == pytest.approx(per_filter.std(ddof=1), rel=1e-5)
        assert int(r["channels"]) == w.shape[0] and r["kernel"] == f"{w.shape[2]}x{w.shape[3]}"
        hf = np.mean([hf_np(f, pad=32) for f in w])
        assert float(r["hf_fraction_S"]) == pytest.approx(hf, rel=1e-6)
        total += w.shape[0]
        weighted += per_filter.mean() * w.shape[0]
        weighted_hf += hf * w.shape[0]
    # The network row: Σ Mean_TV · Channels / Σ Channels (paper-spec §3.2).
    assert rows[-1]["layer"] == "network"
    assert float(rows[-1]["mean_tv_S"]) == pytest.approx(weighted / total, rel=1e-6)
    assert float(rows[-1]["hf_fraction_S"]) == pytest.approx(weighted_hf / total, rel=1e-6)
    units = read_csv(tmp_path / "f" / "filter_units.csv")
    first = [u for u in units if u["layer"] == convs[0][0]]
    assert len(first) == convs[0][1].shape[0]
    assert float(first[5]["tv"]) == pytest.approx(tv_np(convs[0][1][5]).sum(), rel=1e-6)
    prov = json.load(open(tmp_path / "f" / "provenance.json"))["run"]
    assert prov["verb"] == "tv" and prov["models"][0]["sha256"] and prov["params"]["norm"] == "none"


@pytest.mark.parametrize("opts,beta,reduce,norm", [
    (["--beta", "2"], 2.0, "sum", None),
    (["--input-channels", "mean"], 1.0, "mean", None),
    (["--norm", "pixel"], 1.0, "sum", "pixel"),
    (["--norm", "l1"], 1.0, "sum", "l1"),
])
def test_filter_tv_options(sb, models, opts, beta, reduce, norm):
    model = models / "fashion_cnn.pt"
    p = sb("tv", "--weights", model, "--no-spectrum", *opts)
    assert p.returncode == 0, p.stderr
    rows = read_csv(p.stdout.decode())
    w = torch.jit.load(str(model)).state_dict()["features.3.weight"].numpy().astype(np.float64)
    t = tv_np(w, beta)
    if norm == "pixel":
        t = t / (w.shape[2] * w.shape[3])
    elif norm == "l1":
        t = t / np.abs(w).sum((2, 3))
    per_filter = t.mean(1) if reduce == "mean" else t.sum(1)
    row = next(r for r in rows if r["layer"] == "features.3")
    assert float(row["mean_tv_S"]) == pytest.approx(per_filter.mean(), rel=1e-6)
    assert "hf_fraction_S" not in row


def test_filter_tv_1x1_and_side_by_side(sb, models):
    g = models / "googlenet.pt"
    default = read_csv(sb("tv", "--weights", g, "--no-spectrum").stdout.decode())
    with1 = read_csv(sb("tv", "--weights", g, g, "--names", "S,R", "--include-1x1", "--no-spectrum").stdout.decode())
    assert all(r["kernel"] != "1x1" for r in default)
    ones = [r for r in with1 if r["kernel"] == "1x1"]
    assert ones and all(float(r["mean_tv_S"]) == 0 and float(r["mean_tv_R"]) == 0 for r in ones)
    # Including layers of TV 0 lowers the channel-weighted network mean.
    assert float(with1[-1]["mean_tv_S"]) < float(default[-1]["mean_tv_S"])
    assert with1[-1]["mean_tv_S"] == with1[-1]["mean_tv_R"]


def test_activation_tv_matches_numpy(sb, dumps, tmp_path):
    out = tmp_path / "a"
    p = sb("tv", dumps / "clean.h5", "--noisy", dumps / "noisy.h5", "-o", out)
    assert p.returncode == 0, p.stderr
    layers, chans = read_csv(out / "layers.csv"), read_csv(out / "channels.csv")
    flagged = read_csv(out / "flagged.csv")
    with h5py.File(dumps / "clean.h5") as fc, h5py.File(dumps / "noisy.h5") as fn:
        for layer in ("features.1", "features.4"):
            c, n = fc["activations"][layer][:], fn["activations"][layer][:]
            assert not np.array_equal(c, n)
            tc, tn = tv_np(c), tv_np(n)  # [images, channels]
            rows = [r for r in chans if r["layer"] == layer]
            got_c = np.array([float(r["tv_clean"]) for r in rows])
            got_n = np.array([float(r["tv_noisy"]) for r in rows])
            np.testing.assert_allclose(got_c, tc.mean(0), rtol=1e-6)
            np.testing.assert_allclose(got_n, tn.mean(0), rtol=1e-6)
            np.testing.assert_allclose([float(r["tv_clean_sd"]) for r in rows], tc.std(0, ddof=1), rtol=1e-5)
            # The outlier rule: τ = 0.2 × mean over channels of S's TV_clean.
            tau = 0.2 * tc.mean(0).mean()
            lrow = next(r for r in layers if r["layer"] == layer)
            assert float(lrow["tau"]) == pytest.approx(tau, rel=1e-6)
            expect = np.abs(tc.mean(0) - tn.mean(0)) >= tau
            assert [r["flagged"] == "1" for r in rows] == list(expect)
            assert int(lrow["flagged"]) == expect.sum() > 0
            listed = [r for r in flagged if r["layer"] == layer]
            assert sorted(int(r["channel"]) for r in listed) == list(np.flatnonzero(expect))
            diffs = [float(r["abs_difference"]) for r in listed]
            assert diffs == sorted(diffs, reverse=True)
            # Spectra: per-map high-frequency fraction, averaged over images.
            for ch in (0, 7):
                hf = np.mean([hf_np(c[i, ch]) for i in range(len(c))])
                assert float(rows[ch]["hf_clean"]) == pytest.approx(hf, rel=1e-6, abs=1e-9)
    spectra = read_csv(out / "spectra.csv")
    prof = [float(r["power"]) for r in spectra
            if r["layer"] == "features.4" and r["channel"] == "3" and r["condition"] == "clean"]
    with h5py.File(dumps / "clean.h5") as f:
        m = f["activations/features.4"][:, 3].astype(np.float64)
    h, w = m.shape[1:]
    p = (np.abs(np.fft.fft2(m)) ** 2 / (h * w)).mean(0)
    r = np.sqrt(np.fft.fftfreq(h)[:, None] ** 2 + np.fft.fftfreq(w)[None, :] ** 2)
    ring = np.rint(r * max(h, w)).astype(int)
    expect = [p[ring == b].mean() for b in range(ring.max() + 1)]
    np.testing.assert_allclose(prof, expect, rtol=1e-6, atol=1e-12)
    with h5py.File(out / "tv.h5") as f:
        g = f["S/features.1/tv_clean"]
        assert g.attrs["kind"] == "tv" and g.attrs["rows"] == 120
        np.testing.assert_allclose(g["mean"][:], tv_np(h5py.File(dumps / "clean.h5")["activations/features.1"][:]).mean(0),
                                   rtol=1e-6)
        prov = json.loads(f.attrs["provenance"])
    assert prov["run"]["params"]["tau"] == 0.2
    assert [i["condition"] for i in prov["inputs"]] == ["clean", "noisy"]
    assert prov["inputs"][1]["provenance"][-1]["params"]["preprocessing"]["noise"]["sigma"] == 0.1


def test_outlier_rule_on_a_constructed_case(sb, tmp_path):
    rng = np.random.default_rng(0)
    clean = rng.random((6, 4, 8, 8)).astype(np.float32)
    noisy = clean.copy()
    noisy[:, 2] += np.indices((8, 8)).sum(0) % 2 * 5.0  # a checkerboard: TV up by 5 × 112 per map
    noisy[:, 3, 0, 0] += 0.01                            # a change far below τ
    write_store(tmp_path / "c.h5", {"x": clean})
    write_store(tmp_path / "n.h5", {"x": noisy})
    p = sb("tv", tmp_path / "c.h5", "--noisy", tmp_path / "n.h5", "-o", tmp_path / "o")
    assert p.returncode == 0, p.stderr
    flagged = read_csv(tmp_path / "o" / "flagged.csv")
    assert [(r["network"], r["channel"]) for r in flagged] == [("S", "2")]
    assert float(flagged[0]["abs_difference"]) == pytest.approx(tv_np(noisy[:, 2]).mean() - tv_np(clean[:, 2]).mean(),
                                                                rel=1e-6)
    # τ large enough flags nothing; τ = 0 flags every channel that changed at all.
    big = read_csv(sb("tv", tmp_path / "c.h5", "--noisy", tmp_path / "n.h5", "--tau", "1000").stdout.decode())
    zero = read_csv(sb("tv", tmp_path / "c.h5", "--noisy", tmp_path / "n.h5", "--tau", "0").stdout.decode())
    assert big[0]["flagged"] == "0" and zero[0]["flagged"] == "4"  # |diff| ≥ 0 holds for all channels


def test_live_pipe_and_store_agree(sb, models, dumps, tmp_path):
    ids = tmp_path / "ids.txt"
    ids.write_text("".join(f"{i}\n" for i in range(120)))
    live = sb("tv", models / "fashion_cnn.pt", models / "fashion_cnn.pt", "--data", FMNIST, "--noise", "0.1",
              "--noise-seed", "3", "-l", "features.1,features.4", "--ids", ids, "--batch-size", 17, "-o", tmp_path / "l")
    assert live.returncode == 0, live.stderr
    stored = sb("tv", dumps / "clean.h5", dumps / "clean.h5", "--noisy", dumps / "noisy.h5", dumps / "noisy.h5",
                "-o", tmp_path / "s")
    assert stored.returncode == 0, stored.stderr
    a, b = read_csv(tmp_path / "l" / "channels.csv"), read_csv(tmp_path / "s" / "channels.csv")
    assert len(a) == len(b) == 2 * (32 + 64)
    for x, y in zip(a, b):
        for k in ("tv_clean", "tv_noisy", "hf_clean", "hf_noisy"):
            assert float(x[k]) == pytest.approx(float(y[k]), rel=1e-5), (x, y)
    # The pipe: dump -o - | tv -
    dump = sb("dump", models / "fashion_cnn.pt", FMNIST, "-l", "features.4", "--limit", 120, "--quiet", "-o", "-")
    piped = sb("tv", "-", input=dump.stdout)
    assert piped.returncode == 0, piped.stderr
    row = read_csv(piped.stdout.decode())[0]
    layer = next(r for r in read_csv(tmp_path / "s" / "layers.csv") if r["layer"] == "features.4")
    assert float(row["tv_clean"]) == pytest.approx(float(layer["tv_clean"]), rel=1e-6)
    assert row["tv_noisy"] == "" and row["flagged"] == ""


def test_output_folder_is_never_a_users_folder(sb, dumps, tmp_path):
    """-o writes DIR.partial and renames it; a trailing slash is fine; a previous output is replaced;
    '.' or an existing folder that is not an output is refused before any work."""
    clean = dumps / "clean.h5"
    out = tmp_path / "res"
    for _ in range(2):  # the second run replaces the first
        p = sb("tv", clean, "-l", "features.4", "-o", f"{out}/")
        assert p.returncode == 0, p.stderr
        assert sorted(os.listdir(out))[:2] == ["channels.csv", "layers.csv"]
    assert sorted(os.listdir(tmp_path)) == ["res"]
    mine = tmp_path / "mine"
    os.makedirs(mine)
    (mine / "notes.txt").write_text("keep me")
    p = sb("tv", clean, "-l", "features.4", "-o", mine)
    assert p.returncode == 1
    one_error_line(p, "mine", "not a shapebias output folder")
    assert (mine / "notes.txt").read_text() == "keep me"
    p = sb("tv", clean, "-l", "features.4", "-o", ".")
    assert p.returncode == 2
    one_error_line(p, "-o '.'")


def test_ids_select_a_subset(sb, dumps, tmp_path):
    ids = tmp_path / "ids.txt"
    ids.write_text("# the super-intersection\n3 5\n8\n")
    p = sb("tv", dumps / "clean.h5", "--ids", ids, "-l", "features.4")
    assert p.returncode == 0, p.stderr
    row = read_csv(p.stdout.decode())[0]
    with h5py.File(dumps / "clean.h5") as f:
        x = f["activations/features.4"][[3, 5, 8]]
    assert int(row["images"]) == 3
    assert float(row["tv_clean"]) == pytest.approx(tv_np(x).mean(), rel=1e-6)


def test_noise_is_seeded_per_input(sb, models, tmp_path):
    model = models / "fashion_cnn.pt"

    def images(*extra):
        out = tmp_path / f"i{len(os.listdir(tmp_path))}.h5"
        p = sb("dump", model, FMNIST, "-l", "input", "--limit", 20, "--quiet", "-o", out, *extra)
        assert p.returncode == 0, p.stderr
        with h5py.File(out) as f:
            return f["activations/input"][:], f["index/input_id"][:]

    clean, _ = images()
    a, _ = images("--noise", "0.2", "--batch-size", 1)
    b, _ = images("--noise", "0.2", "--batch-size", 7)
    assert np.array_equal(a, b) and not np.array_equal(a, clean)
    assert a.min() >= 0 and a.max() <= 1
    ids = tmp_path / "ids.txt"
    ids.write_text("13\n2\n")
    sub, sub_ids = images("--noise", "0.2", "--ids", ids)
    assert list(sub_ids) == [13, 2] and np.array_equal(sub, a[[13, 2]])
    other, _ = images("--noise", "0.2", "--noise-seed", 1)
    assert not np.array_equal(other, a)
    raw, _ = images("--noise", "0.2", "--no-noise-clip")
    d = raw - clean
    assert raw.min() < 0 and abs(d.std() - 0.2) < 0.01 and abs(d.mean()) < 0.01


def test_errors(sb, models, dumps, tmp_path):
    rng = np.random.default_rng(1)
    write_store(tmp_path / "a.h5", {"x": rng.random((4, 3, 5, 5))})
    write_store(tmp_path / "b.h5", {"x": rng.random((4, 3, 6, 5))})
    write_store(tmp_path / "c.h5", {"x": rng.random((5, 3, 5, 5))})
    write_store(tmp_path / "v.h5", {"x": rng.random((4, 7))})
    one_error_line(sb("tv", tmp_path / "a.h5", tmp_path / "b.h5"), "mismatched shapes", "'x'", "[3, 5, 5]", "[3, 6, 5]")
    one_error_line(sb("tv", tmp_path / "a.h5", tmp_path / "c.h5"), "c.h5", "other inputs")
    one_error_line(sb("tv", tmp_path / "v.h5"), "v.h5", "no layer with [C, H, W] maps")
    one_error_line(sb("tv", tmp_path / "v.h5", "-l", "x"), "v.h5", "'x'", "[C, H, W]")
    one_error_line(sb("tv", tmp_path / "a.h5", "-l", "nope"), "a.h5", "no layer 'nope'")
    # Empty inputs: a store with no rows, and an id list that selects none of the rows.
    write_store(tmp_path / "e.h5", {"x": np.zeros((0, 3, 5, 5))})
    one_error_line(sb("tv", tmp_path / "e.h5"), "e.h5", "no inputs")
    ids = tmp_path / "ids.txt"
    ids.write_text("99\n")
    one_error_line(sb("tv", tmp_path / "a.h5", "--ids", ids), "a.h5", "no inputs with the ids of --ids")
    # NaN / Inf: one line naming input, layer, row and channel; --nonfinite skip counts them.
    bad = rng.random((4, 3, 5, 5)).astype(np.float32)
    bad[2, 1, 3, 3] = np.nan
    bad[3, 0, 0, 0] = np.inf
    write_store(tmp_path / "nan.h5", {"x": bad}, ids=[10, 11, 12, 13])
    p = sb("tv", tmp_path / "nan.h5", "-o", tmp_path / "o")
    assert p.returncode == 1
    one_error_line(p, "nan.h5", "layer 'x'", "row 2", "input id 12", "channel 1", "NaN or Inf")
    assert not os.path.exists(tmp_path / "o") and not os.path.exists(tmp_path / "o.partial")
    p = sb("tv", tmp_path / "nan.h5", "--nonfinite", "skip")
    assert p.returncode == 0, p.stderr
    row = read_csv(p.stdout.decode())[0]
    assert row["skipped_clean"] == "2"
    good = bad.copy()
    expect = np.array([tv_np(good[np.isfinite(good[:, c]).all((1, 2)), c]).mean() for c in range(3)]).mean()
    assert float(row["tv_clean"]) == pytest.approx(expect, rel=1e-6)
    # Usage errors exit 2.
    for args, frag in [(["--noisy", tmp_path / "a.h5", tmp_path / "a.h5"], "--noisy"),
                       (["--beta", "0"], "--beta"),
                       (["--norm", "l2"], "--norm"),
                       (["--data", FMNIST], "--data is for models")]:
        p = sb("tv", tmp_path / "a.h5", *args)
        assert p.returncode == 2, (args, p.stderr)
        one_error_line(p, frag)
    p = sb("tv", tmp_path / "a.h5", "--noise", "0.1")
    assert p.returncode == 2
    one_error_line(p, "preprocessing options", "--data")
    p = sb("tv", tmp_path / "a.h5", "--names", "a/b")
    assert p.returncode == 2
    one_error_line(p, "--names", "'a/b'")
    p = sb("tv", tmp_path / "a.h5", tmp_path / "a.h5", "--names", "A")
    assert p.returncode == 2
    one_error_line(p, "--names", "1 names for 2 inputs")
    p = sb("tv", models / "fashion_cnn.pt", "-l", "features.1")
    assert p.returncode == 2
    one_error_line(p, "--data")
    p = sb("tv", models / "fashion_cnn.pt", "--data", FMNIST, "-l", "nope", "--limit-typo")
    assert p.returncode == 2
    # A live run whose dump fails reports the dump's reason, once.
    p = sb("tv", models / "fashion_cnn.pt", "--data", FMNIST, "-l", "nope")
    assert p.returncode == 1
    one_error_line(p, "nope")
    p = sb("tv", "--weights", models / "fashion_cnn.pt", models / "alexnet.pt")
    assert p.returncode == 1
    one_error_line(p, "mismatched models")

# SPDX-License-Identifier: MIT
"""`shapebias layers` and `shapebias dump` against PyTorch, torchvision and h5py references."""
import hashlib
import json
import os
import signal
import subprocess
import time

import h5py
import numpy as np
import pytest
import torch

from conftest import FMNIST, one_error_line

# Float tolerance for activations computed by LibTorch in C++ against PyTorch eager in Python: the
# same kernels, but TorchScript's executor may fuse or reorder, so allow float32 rounding noise.
ACT_ATOL = 1e-4
ACT_RTOL = 1e-4

# paper-spec.md §6, feature-map shapes at 224 input: (model, tap, C×H×W).
PAPER_SHAPES = [
    ("alexnet", "features.0", "64x55x55"), ("alexnet", "features.3", "192x27x27"),
    ("alexnet", "features.6", "384x13x13"), ("alexnet", "features.8", "256x13x13"),
    ("alexnet", "features.10", "256x13x13"),
    ("googlenet", "conv1", "64x112x112"), ("googlenet", "conv2", "64x56x56"), ("googlenet", "conv3", "192x56x56"),
    ("googlenet", "inception3a", "256x28x28"), ("googlenet", "inception3b", "480x28x28"),
    ("googlenet", "inception4a", "512x14x14"), ("googlenet", "inception4b", "512x14x14"),
    ("googlenet", "inception4c", "512x14x14"), ("googlenet", "inception4d", "528x14x14"),
    ("googlenet", "inception4e", "832x14x14"), ("googlenet", "inception5a", "832x7x7"),
    ("googlenet", "inception5b", "1024x7x7"),
    ("resnet50", "conv1", "64x112x112"), ("resnet50", "layer1", "256x56x56"), ("resnet50", "layer2", "512x28x28"),
    ("resnet50", "layer3", "1024x14x14"), ("resnet50", "layer4", "2048x7x7"),
]


def layers_table(sb, model, size):
    p = sb("layers", model, "--input-size", size)
    assert p.returncode == 0, p.stderr.decode()
    rows = [l.split("\t") for l in p.stdout.decode().splitlines() if not l.startswith("#")]
    return {r[0]: (r[1], r[2]) for r in rows}


@pytest.mark.parametrize("arch", ["alexnet", "googlenet", "resnet50"])
def test_layers_match_paper_shapes(sb, models, arch):
    table = layers_table(sb, models / f"{arch}.pt", "3,224,224")
    for a, tap, shape in PAPER_SHAPES:
        if a == arch:
            assert table[tap][1] == shape, (tap, table[tap])
    assert table["logits"][1] == "1000"
    assert table["input"][1] == "3x224x224"


def test_layers_lists_nested_modules_and_repeated_calls(sb, models):
    table = layers_table(sb, models / "resnet50.pt", "3,64,64")
    assert table["layer3.5.conv2"] == ("Conv2d", "256x4x4")
    # Bottleneck calls its one ReLU module three times: each call is its own tap.
    assert {k for k in table if k.startswith("layer1.0.relu")} == {"layer1.0.relu#1", "layer1.0.relu#2", "layer1.0.relu#3"}
    p = sb("dump", models / "resnet50.pt", FMNIST, "--limit", "1", "--channels", "3", "-l", "layer1.0.relu", "-o", "x.h5")
    assert p.returncode == 1
    one_error_line(p, "layer1.0.relu", "called 3 times", "layer1.0.relu#1")


def eager_fashion_cnn(path):
    """The Python FashionCNN with the TorchScript file's weights: an independent forward pass."""
    from make_models import FashionCNN
    m = FashionCNN()
    m.load_state_dict(torch.jit.load(str(path)).state_dict())
    return m.eval()


def hooked(model, names):
    """Forward hooks that copy each named module's output before later in-place ops change it."""
    out = {}
    mods = dict(model.named_modules())
    for n in names:
        mods[n].register_forward_hook(lambda m, i, o, n=n: out.__setitem__(n, o.detach().clone()))
    return out


def fmnist_images(n):
    import gzip
    with gzip.open(os.path.join(FMNIST, "t10k-images-idx3-ubyte.gz")) as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)[:n]
    with gzip.open(os.path.join(FMNIST, "t10k-labels-idx1-ubyte.gz")) as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8)[:n]
    return torch.from_numpy(x.astype(np.float32) / 255), y


def test_dump_matches_pytorch_eager(sb, models, tmp_path):
    taps = ["features.0", "features.4", "classifier.1", "logits"]
    out = tmp_path / "a.h5"
    p = sb("dump", models / "fashion_cnn.pt", FMNIST, "-l", ",".join(taps), "--limit", "200", "-o", out)
    assert p.returncode == 0, p.stderr.decode()
    x, y = fmnist_images(200)
    m = eager_fashion_cnn(models / "fashion_cnn.pt")
    ref = hooked(m, taps[:-1])
    with torch.no_grad():
        ref["logits"] = m(x)
    with h5py.File(out) as f:
        assert f.attrs["complete"] == 1
        np.testing.assert_array_equal(f["index/input_id"][:], np.arange(200))
        np.testing.assert_array_equal(f["index/label"][:], y)
        for t in taps:
            np.testing.assert_allclose(f[f"activations/{t}"][:], ref[t].numpy(), rtol=ACT_RTOL, atol=ACT_ATOL)
        # features.0 is the convolution's output, taken before ReLU(inplace=True) overwrote it.
        assert f["activations/features.0"][:].min() < 0


def test_nested_taps_survive_in_place_ops(sb, models, image_folder, tmp_path):
    """ResNet's `out += identity` and inplace ReLUs mutate block outputs; taps must not see that."""
    import torchvision
    taps = ["layer1.0.bn3", "layer1.0.relu#2", "layer1.0", "layer3.5.conv2", "logits"]
    out = tmp_path / "r.h5"
    p = sb("dump", models / "resnet50.pt", image_folder, "--resize", "40", "--crop", "32", "--normalize", "imagenet",
           "-l", ",".join(["input"] + taps), "--batch-size", "4", "-o", out)
    assert p.returncode == 0, p.stderr.decode()
    m = torchvision.models.resnet50()
    m.load_state_dict(torch.jit.load(str(models / "resnet50.pt")).state_dict())
    m.eval()
    ref, relu_calls = {}, []
    mods = dict(m.named_modules())
    mods["layer1.0.relu"].register_forward_hook(lambda mod, i, o: relu_calls.append(o.detach().clone()))
    for n in ["layer1.0.bn3", "layer1.0", "layer3.5.conv2"]:
        mods[n].register_forward_hook(lambda mod, i, o, n=n: ref.__setitem__(n, o.detach().clone()))
    with h5py.File(out) as f:
        with torch.no_grad():
            ref["logits"] = m(torch.from_numpy(f["activations/input"][:]))
        ref["layer1.0.relu#2"] = relu_calls[1]
        for t in taps:
            np.testing.assert_allclose(f[f"activations/{t}"][:], ref[t].numpy(), rtol=ACT_RTOL, atol=ACT_ATOL, err_msg=t)
        assert f["activations/layer1.0.bn3"][:].min() < 0  # taken before `+= identity` and the last ReLU


def test_preprocessing_matches_torchvision(sb, models, image_folder, tmp_path):
    """Resize(shorter) + CenterCrop + ToTensor + Normalize, as torchvision does on PIL images."""
    import torchvision
    import torchvision.transforms as T
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    for resize, crop in [(32, 28), (64, 56), (20, 24)]:  # down, down, and a crop larger than the image
        out = tmp_path / f"p{resize}.h5"
        p = sb("dump", models / "resnet50.pt", image_folder, "-l", "input", "--resize", resize, "--crop", crop,
               "--normalize", "imagenet", "-o", out)
        assert p.returncode == 0, p.stderr.decode()
        ds = torchvision.datasets.ImageFolder(str(image_folder), transform=T.Compose(
            [T.Resize(resize), T.CenterCrop(crop), T.ToTensor(), T.Normalize(mean, std)]))
        ref = torch.stack([ds[i][0] for i in range(len(ds))]).numpy()
        with h5py.File(out) as f:
            got = f["activations/input"][:]
            assert list(f["index/label"][:]) == ds.targets
        levels = np.abs(got - ref) * np.array(std)[None, :, None, None] * 255
        # PIL resamples in fixed point; ours is float with PIL's pass order and rounding. Measured
        # here: at most 1 level apart, on at most 1.5% of values (docs/preprocessing.md).
        assert levels.max() < 1.01
        assert (levels > 0.5).mean() < 0.03


def test_batch_size_and_threads_do_not_change_results(sb, models, tmp_path):
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    common = [models / "fashion_cnn.pt", FMNIST, "-l", "features.0,features.6,logits", "--limit", "300"]
    assert sb("dump", *common, "-@", "1", "--batch-size", "1", "-o", a).returncode == 0
    assert sb("dump", *common, "-@", "2", "--batch-size", "64", "-o", b).returncode == 0
    with h5py.File(a) as fa, h5py.File(b) as fb:
        for k in ["index/input_id", "index/label"]:
            np.testing.assert_array_equal(fa[k][:], fb[k][:])
        for k in ["features.0", "features.6", "logits"]:
            np.testing.assert_allclose(fa[f"activations/{k}"][:], fb[f"activations/{k}"][:], rtol=1e-5, atol=1e-5)


def test_provenance_is_recorded(sb, models, tmp_path):
    out = tmp_path / "p.h5"
    assert sb("dump", models / "fashion_cnn.pt", FMNIST, "-l", "logits", "--limit", "10", "--normalize",
              "0.286/0.353", "-o", out).returncode == 0
    with h5py.File(out) as f:
        log = [json.loads(s) for s in f["provenance/log"].asstr()[:]]
        rec = log[-1]
        assert rec["verb"] == "dump" and rec["argv"].startswith("shapebias dump ")
        assert rec["model"]["sha256"] == hashlib.sha256((models / "fashion_cnn.pt").read_bytes()).hexdigest()
        assert rec["params"]["preprocessing"]["mean"] == pytest.approx([0.286])
        assert rec["params"]["preprocessing"]["normalize"] == "0.286/0.353"
        assert rec["libraries"]["libtorch"].startswith("1.13")
        assert rec["started"] <= rec["finished"]
        assert rec["inputs"][0]["files"][0]["sha256"] == hashlib.sha256(
            open(os.path.join(FMNIST, "t10k-images-idx3-ubyte.gz"), "rb").read()).hexdigest()
        assert "seeds" in rec
        assert f.attrs["provenance.model"] == json.dumps(rec["model"], separators=(",", ":"))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_killed_dump_leaves_no_complete_file_and_resumes(sb, models, tmp_path, sig):
    out = tmp_path / "k.h5"
    args = ["dump", models / "fashion_cnn.pt", FMNIST, "-l", "features.0,logits", "--batch-size", "50", "-o", out]
    proc = subprocess.Popen([sb.exe, *map(str, args)], stderr=subprocess.PIPE)
    partial = tmp_path / "k.h5.partial"
    deadline = time.time() + 60
    while time.time() < deadline and (not partial.exists() or partial.stat().st_size < 20_000_000):
        time.sleep(0.02)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert not out.exists()  # nothing looks complete
    if sig == signal.SIGTERM:
        assert "rerun with --resume" in err.decode()
        with h5py.File(partial) as f:
            assert f.attrs["complete"] == 0
    p = sb(*args, "--resume")
    assert p.returncode == 0, p.stderr.decode()
    ref = tmp_path / "ref.h5"
    assert sb("dump", models / "fashion_cnn.pt", FMNIST, "-l", "features.0,logits", "--batch-size", "50",
              "-o", ref).returncode == 0
    with h5py.File(out) as f, h5py.File(ref) as g:
        assert f.attrs["complete"] == 1
        for k in ["index/input_id", "index/label", "activations/features.0", "activations/logits"]:
            np.testing.assert_array_equal(f[k][:], g[k][:])


def test_resume_refuses_other_settings(sb, models, tmp_path):
    out = tmp_path / "o.h5"
    args = ["dump", models / "fashion_cnn.pt", FMNIST, "--limit", "20", "-o", out]
    proc = subprocess.Popen([sb.exe, *map(str, args), "-l", "logits"])
    proc.wait()
    os.rename(out, str(out) + ".partial")  # pretend it was left by a killed run
    p = sb(*args, "-l", "features.0", "--resume")
    assert p.returncode == 1
    one_error_line(p, "o.h5.partial", "other settings")

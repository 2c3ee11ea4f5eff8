"""Data with a shape: digits, the MNIST reader, image runs end to end, devices."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import torch
from conftest import run

import zoo
from zoo import backends
from zoo.data import DATA_ROOT_ENV


def test_digits_split_is_fixed_stratified_and_in_range():
    ds = zoo.get_dataset("digits")
    im = ds.images
    assert ds.shape == (1, 8, 8) and ds.dim == 64
    assert im.train.shape == (1497, 1, 8, 8) and im.test.shape == (300, 1, 8, 8)
    assert im.train.min() == -1.0 and im.train.max() == 1.0
    np.testing.assert_array_equal(np.unique(im.train * 8 + 8), np.arange(17))  # 17 levels
    counts = np.bincount(im.test_labels, minlength=10)
    assert counts.min() >= 29 and counts.max() <= 31  # stratified: 30 of each class
    # training draws come from the train split only, held-out draws from the test split only
    rng = np.random.default_rng(0)
    tr = {a.tobytes() for a in im.train}
    assert all(x.tobytes() in tr for x in ds.sample(rng, 50))
    te = {a.tobytes() for a in im.test}
    assert all(x.tobytes() in te for x in ds.sample_heldout(rng, 50))
    np.testing.assert_array_equal(zoo.get_dataset("digits").images.test, im.test)


def _idx(path, arr: np.ndarray) -> None:
    """Write an IDX file (MNIST's format): magic, dims (big-endian uint32), uint8 data."""
    arr = np.asarray(arr, np.uint8)
    with open(path, "wb") as f:
        f.write(struct.pack(">HBB", 0, 8, arr.ndim))
        f.write(struct.pack(f">{arr.ndim}I", *arr.shape))
        f.write(arr.tobytes())


def test_mnist_reader_reads_local_idx_files(tmp_path, monkeypatch):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    tr, te = rng.integers(0, 256, (12, 28, 28)), rng.integers(0, 256, (5, 28, 28))
    tr[0, 0, 0], tr[0, 0, 1] = 0, 255
    _idx(raw / "train-images-idx3-ubyte", tr)
    _idx(raw / "train-labels-idx1-ubyte", np.arange(12) % 10)
    _idx(raw / "t10k-images-idx3-ubyte", te)
    _idx(raw / "t10k-labels-idx1-ubyte", np.arange(5))
    monkeypatch.setenv(DATA_ROOT_ENV, str(tmp_path))
    ds = zoo.get_dataset("mnist")
    assert ds.shape == (1, 28, 28) and ds.dim == 784
    assert ds.images.train.shape == (12, 1, 28, 28) and ds.images.test.shape == (5, 1, 28, 28)
    np.testing.assert_allclose(ds.images.train[:, 0], tr / 127.5 - 1)
    assert ds.images.train[0, 0, 0, 0] == -1.0 and ds.images.train[0, 0, 0, 1] == 1.0
    np.testing.assert_array_equal(ds.images.test_labels, np.arange(5))


def test_mnist_without_files_says_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_ROOT_ENV, str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="no MNIST files under"):
        zoo.get_dataset("mnist")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_device_cuda_without_cuda_is_one_line(capsys, tmp_path):
    code, _, err = run(["train", "--arch", "free-mlp", "--device", "cuda", "--out",
                        str(tmp_path / "r")], capsys)
    assert code == 2 and "no CUDA device" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("arch", ["free-unet", pytest.param("energysq-dit", marks=pytest.mark.slow)])
def test_image_run_end_to_end_and_across_backends(arch, capsys, tmp_path):
    """A short digits run: train (torch), a PNG grid of samples, the checkpoint gives the same
    scores in JAX, and check/eval run on the 64-dimensional field."""
    out = tmp_path / "run"
    small = zoo.get_info(arch, "torch").small
    opts = [a for k, v in small.items() for a in ("--opt", f"{k}={v}")]
    code, stdout, err = run(["train", "--arch", arch, "--data", "digits", "--steps", "30",
                             "--batch", "32", "--quiet", "--out", str(out), *opts], capsys)
    assert code == 0, err
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["shape"] == [1, 8, 8] and cfg["device"] == "cpu"
    assert cfg["options"] == {**{k: None for k in ("mults", "attn", "patch")
                                 if k in cfg["options"]}, **cfg["options"]}  # all recorded
    assert set(small) <= set(cfg["options"])
    code, stdout, err = run(["sample", str(out), "--n", "16", "--solver", "sde", "--steps",
                             "20"], capsys)
    assert code == 0, err
    z = np.load(out / "samples-sde-euler.npz")
    assert z["samples"].shape == (16, 1, 8, 8) and np.all(np.isfinite(z["samples"]))
    png = (out / "samples-sde-euler.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    ft, _ = zoo.load(out, backend="torch", dtype="float64")
    fj, _ = zoo.load(out, backend="jax", dtype="float64")
    x = np.random.default_rng(0).standard_normal((4, 1, 8, 8))
    t = np.array([0.01, 0.1, 1.0, 4.0])
    st, sj = backends.get("torch").score(ft, x, t), backends.get("jax").score(fj, x, t)
    assert np.max(np.abs(st - sj)) < 1e-9 * np.max(np.abs(st))
    from zoo.diagnostics import check_run

    r = check_run(out, n_points=8, n_loops=2, nodes=8, times=[0.1, 1.0], plot=False)
    assert r["settings"]["jacobian"] == "exact" and np.isfinite(r["summary"]["nasym_mean"])
    assert all(np.isfinite(row["loops"]["polygon"]["normalised"]["median"]) for row in r["per_t"])
    # the NLL of dequantised digits: Hutchinson on an image backbone, and the discrete-data bound
    # in bits/dim is the continuous NLL per pixel plus log2(1 / bin width) = 3 bits (17 levels)
    from zoo.sampling import nll_run

    r = nll_run(out, n=4, rtol=1e-3, atol=1e-3)
    assert r["estimator"] == "hutchinson" and r["dequantisation"]["levels"] == 17
    assert r["bits_per_dim"] == pytest.approx(r["nll_nats"] / (64 * np.log(2)) + 3.0, rel=1e-12)

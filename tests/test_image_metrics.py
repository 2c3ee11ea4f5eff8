"""The offline image metrics: the shipped digits classifier (hash, accuracy, refusal of a changed
file), the Fréchet distance against closed forms, the class histogram and memorisation."""

from __future__ import annotations

import hashlib
import json
import math
import platform
import shutil

import numpy as np
import pytest
import scipy.linalg
import torch
from conftest import cli

import zoo
from zoo import image_metrics as IM
from zoo.classifier import (
    Classifier,
    ClassifierConfig,
    TrainConfig,
    accuracy,
    load_classifier,
    paths,
    save_classifier,
    train_classifier,
)
from zoo.data import get_dataset
from zoo.registry import ZooError


@pytest.fixture(scope="module")
def digits():
    return get_dataset("digits").images


@pytest.fixture
def tampered(tmp_path):
    """A copy of the shipped weights and record with one byte of the weights flipped."""
    weights, record = paths("digits")
    dst = tmp_path / weights.name
    shutil.copy(weights, dst)
    shutil.copy(record, tmp_path / record.name)
    blob = bytearray(dst.read_bytes())
    blob[len(blob) // 2] ^= 0x01  # a low bit of some float32 weight: still a valid file
    dst.write_bytes(bytes(blob))
    return dst


def test_shipped_classifier_has_its_hash_and_stated_accuracy(digits):
    weights, rec_path = paths("digits")
    record = json.loads(rec_path.read_text())
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == record["sha256"]
    model, rec = load_classifier("digits")
    assert rec["sha256"] == record["sha256"]
    assert next(model.parameters()).dtype == torch.float64 and not model.training
    acc = accuracy(model, digits.test, digits.test_labels)  # recomputed, not read
    assert acc == pytest.approx(record["test_accuracy"], abs=1e-12)
    assert acc >= 0.98 and record["n_test"] == len(digits.test) == 300
    assert record["architecture"]["features"] == IM.features(digits.test[:4]).shape[1]


def test_tampered_weights_are_refused(tampered):
    with pytest.raises(ZooError, match="sha256"):
        load_classifier("digits", tampered)
    code, out, err = cli(["classifier", "check", "--weights", str(tampered)])
    assert code == 2, out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "sha256" in lines[0] and "does not match" in lines[0], err
    assert "Traceback" not in err
    with pytest.raises(ZooError, match="not 'mnist'"):  # a record for another dataset
        load_classifier("mnist", paths("digits")[0])


def test_check_passes_on_the_shipped_classifier():
    code, out, err = cli(["classifier", "check"])
    assert code == 0, err
    assert "matches its record" in out and "295/300" in out


@pytest.mark.parametrize("args", [["classifier", "check", "--data", "gmm8"],
                                  ["classifier", "check", "--weights", "/nonexistent/w.safetensors"],
                                  ["classifier", "train", "--data", "cifar"]])
def test_bad_classifier_input_is_one_line_exit_2(args):
    code, out, err = cli(args)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


def test_the_network_takes_mnist_sized_images_too():
    """One architecture for 8x8 and 28x28 (no MNIST files are read here)."""
    net = Classifier(ClassifierConfig(shape=(1, 28, 28)))
    x = torch.zeros(3, 1, 28, 28)
    assert net.features(x).shape == (3, 32) and net(x).shape == (3, 10)


def test_training_is_deterministic_and_leaves_torch_settings_alone(tmp_path):
    """Two one-epoch trainings give the same bytes (the full training is the slow test below)."""
    threads = torch.get_num_threads()
    state = torch.random.get_rng_state()
    sums = []
    for k in range(2):
        model, record = train_classifier("digits", TrainConfig(epochs=1), evaluate=False)
        sums.append(save_classifier(model, record, tmp_path / str(k))["sha256"])
    assert sums[0] == sums[1]
    assert torch.get_num_threads() == threads and not torch.are_deterministic_algorithms_enabled()
    assert torch.equal(torch.random.get_rng_state(), state)
    assert load_classifier("digits", paths("digits", tmp_path / "0")[0])[1]["sha256"] == sums[0]


@pytest.mark.slow
def test_retraining_reproduces_the_shipped_file(tmp_path):
    """`zoo classifier train` gives the shipped sha256 with the torch and machine that made it
    (its record names them); elsewhere, two retrainings give one sha256 between them."""
    shipped = json.loads(paths("digits")[1].read_text())
    same = (shipped["versions"]["torch"], shipped["machine"]) == (torch.__version__, platform.machine())
    records = []
    for k in range(1 if same else 2):
        code, out, err = cli(["classifier", "train", "--out", str(tmp_path / str(k))])
        assert code == 0, err
        records.append(json.loads(paths("digits", tmp_path / str(k))[1].read_text()))
    want = shipped["sha256"] if same else records[1]["sha256"]
    assert records[0]["sha256"] == want
    assert records[0]["test_accuracy"] >= 0.98


def _gaussian_sets(f: int = 6, n: int = 400, m: int = 300):
    g = np.random.default_rng(0)
    a, b = g.standard_normal((f, f)), g.standard_normal((f, f))
    x = g.standard_normal((n, f)) @ a + 1.0
    y = g.standard_normal((m, f)) @ b - 0.5
    return x, y


def test_fd_of_a_set_against_itself_is_zero(digits):
    x, _ = _gaussian_sets()
    fd = IM.frechet(x, x, IM.IdentityFeatures(x.shape[1]))
    assert abs(fd) < 1e-12 * np.trace(np.cov(x.T))
    f = IM.features(digits.test)
    assert abs(IM.frechet_distance(digits.test, digits.test)) < 1e-12 * np.trace(np.cov(f.T))


def test_fd_matches_the_closed_form():
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^{1/2}) of the sample moments, scipy's sqrtm."""
    x, y = _gaussian_sets()
    s1, s2 = np.cov(x.T), np.cov(y.T)
    want = (np.sum((x.mean(0) - y.mean(0)) ** 2)
            + np.trace(s1 + s2 - 2 * scipy.linalg.sqrtm(s1 @ s2).real))
    got = IM.frechet(x, y, IM.IdentityFeatures(x.shape[1]))
    assert got == pytest.approx(want, rel=1e-10)
    assert got == pytest.approx(IM.frechet(y, x, IM.IdentityFeatures(x.shape[1])), rel=1e-10)


def test_fd_of_images_equals_fd_of_their_features(digits):
    """frechet_distance (the classifier inside FID) = image_metrics' FD (features computed once)."""
    fake, real = digits.train[:200], digits.test
    fd = IM.frechet_distance(fake, real)
    assert fd == pytest.approx(IM.frechet(IM.features(fake), IM.features(real),
                                          IM.IdentityFeatures(32)), rel=1e-10)
    assert fd > 1.0  # different images: a distance well above float64 noise


def test_class_histogram(digits):
    p = IM.class_distribution()
    counts = IM.class_counts(digits.test)
    assert IM.class_kl(counts, p) < 2e-3  # 5 of 300 misclassified; the split is stratified
    assert IM.class_kl(np.bincount(digits.test_labels), p) < 1e-3
    one = digits.test[digits.test_labels == 3]
    m = IM.image_metrics(one, digits.test, digits.train)
    assert m["class_kl"] > 2.0 and m["class_entropy"] < 0.3  # one class: KL log 10 = 2.30, H 0
    # a missing class keeps KL finite: KL(q || p) with q_k = 0 adds nothing
    assert IM.class_kl(np.array([0, *[1] * 9]), np.full(10, 0.1)) == pytest.approx(math.log(10 / 9))


def test_memorisation(digits):
    copies = IM.memorisation(digits.train[:300], digits.test, digits.train)
    assert copies == {"memorised": 1.0, "nn_train_dist": 0.0}
    held = IM.memorisation(digits.test, digits.test, digits.train)
    q, m = IM.MEMO_QUANTILE, len(digits.test)
    assert q <= held["memorised"] < q + 2 / m  # the quantile, up to ties at tau
    # flattened input gives the same numbers; slightly noised copies are still copies
    g = np.random.default_rng(0)
    noisy = digits.train[:300].reshape(300, -1) + 0.03 * g.standard_normal((300, 64))
    assert IM.memorisation(noisy, digits.test, digits.train)["memorised"] == 1.0


def test_off_range_counts_runaway_samples(digits):
    """3 of 100 images with one pixel sent far away: off-range 0.03, and FD shoots up."""
    x = digits.test[:100].copy()
    base = IM.image_metrics(x, digits.test, digits.train)
    assert base["off_range"] == 0.0
    x[[5, 50, 70], 0, 3, 4] = [2.5, -40.0, 400.0]
    x[9, 0, 0, 0] = 1.9  # off the data's range, but not by a half-range: not counted
    m = IM.image_metrics(x, digits.test, digits.train)
    assert m["off_range"] == pytest.approx(0.03) and IM.off_range(x.reshape(100, -1)) == 0.03
    assert m["fd"] > 10 * base["fd"]


def test_image_metrics_and_floor_have_every_metric(digits):
    floor = IM.image_noise_floor(digits.test, digits.train[:600], n=100, repeats=3)
    assert list(floor) == list(IM.IMAGE_METRICS)
    assert all(np.isfinite(v).all() and (v[1] > 0 or k == "off_range") for k, v in floor.items())
    assert floor["fd"][0] > 0 and floor["memorised"][0] < 0.2
    assert floor["off_range"] == (0.0, 0.0)  # real digits lie in [-1, 1]
    m = IM.image_metrics(digits.test, digits.test, digits.train)
    assert m["fd"] == pytest.approx(0.0, abs=1e-8) and m["feat_coverage"] == 1.0
    bad = digits.test.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        IM.image_metrics(bad, digits.test, digits.train)


def test_evaluate_measures_image_sets_with_the_classifier(tmp_path, monkeypatch):
    """`zoo eval`'s metrics on digits: the classifier's metrics against the whole test split,
    floors from training draws; copies of training images are caught as memorised, and real
    unseen digits sit on the floor. digits-gmm gets the log-density too, but no memorisation."""
    from zoo import evaluate as E

    monkeypatch.setenv("ZOO_CACHE_DIR", str(tmp_path))
    ds = get_dataset("digits")
    rng = np.random.default_rng(0)
    copies = ds.images.train[rng.integers(0, len(ds.images.train), 200)].reshape(200, -1)
    r = E.evaluate_samples(copies, "digits", repeats=3)
    m = r["metrics"]
    assert set(m) == set(IM.IMAGE_METRICS) and r["n_ref"] == len(ds.images.test)
    assert m["memorised"]["value"] == 1.0 and m["nn_train_dist"]["value"] == 0.0
    assert abs(m["memorised"]["floor_mean"] - IM.MEMO_QUANTILE) < 0.05
    # a model that puts every sample on one digit: class KL log(10)-ish, FD far above its floor
    ones = ds.images.train[ds.images.train_labels == 1][:150].reshape(150, -1)
    m1 = E.evaluate_samples(ones, "digits", repeats=3)["metrics"]
    assert m1["class_kl"]["value"] > 1.5 and m1["fd"]["value"] > 10 * m1["fd"]["floor_mean"]
    g = get_dataset("digits-gmm")
    sch = zoo.make_schedule("ou")  # samplers stop at t_min: compare rho_{t_min} draws
    a, sg = float(sch.alpha(sch.t_min)), float(sch.sigma(sch.t_min))
    x = a * g.sample(rng, 200).reshape(200, -1) + sg * rng.standard_normal((200, 64))
    mg = E.evaluate_samples(x, "digits-gmm", repeats=3)["metrics"]
    assert "memorised" not in mg and "trimmed_log_density" in mg and "fd" in mg
    k = "trimmed_log_density"
    assert abs(mg[k]["value"] - mg[k]["floor_mean"]) < 4 * mg[k]["floor_std"], mg[k]
    # FD of 200 points in 32 features scatters widely (real-vs-real 16 +- 6 over 20 draws)
    assert mg["fd"]["value"] < 3 * mg["fd"]["floor_mean"], mg["fd"]

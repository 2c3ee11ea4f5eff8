"""Latent diffusion: the autoencoder (both backends, deterministic, sha256-pinned), latent-digits,
latent runs that refuse another autoencoder, decoded samples measured in pixel space.

Every test but the shipped-file one uses a tiny autoencoder trained for a few steps into a
temporary $ZOO_AUTOENCODER_DIR, never results/autoencoders.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run

import zoo
from zoo import autoencoder as AE
from zoo.data import AUTOENCODER_ENV, autoencoder_dir

pytestmark = pytest.mark.usefixtures("torch_one_thread")

TINY = AE.AutoencoderConfig(latent=8, channels=4)
TINY_TRAIN = AE.TrainConfig(epochs=1, batch=256)  # 6 steps
SMALL = {"width": 32, "depth": 2}  # the latent fields' MLP
SHIPPED = Path(__file__).resolve().parents[1] / "results" / "autoencoders" / "digits"


def _tiny(seed: int = 0) -> tuple[torch.nn.Module, dict]:
    return AE.train_autoencoder("digits", TINY, AE.TrainConfig(epochs=1, batch=256, seed=seed))


def _save_tiny(root: Path, seed: int = 0) -> dict:
    model, record = _tiny(seed)
    return AE.save_autoencoder(model, record, root / "digits", grid=False)


@pytest.fixture(scope="module")
def ae_root(tmp_path_factory):
    """A tiny digits autoencoder in a temporary $ZOO_AUTOENCODER_DIR for the whole module."""
    root = tmp_path_factory.mktemp("autoencoders")
    record = _save_tiny(root)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(AUTOENCODER_ENV, str(root))
        yield root, record


def _latent_run(tmp_path: Path, arch: str = "free-mlp", backend: str = "torch") -> Path:
    from zoo.train import TrainConfig, train

    cfg = TrainConfig(arch=arch, backend=backend, data="latent-digits", steps=5, batch=32,
                      log_every=5, options=dict(SMALL))
    return train(cfg, out=tmp_path / f"{arch}-{backend}", show_progress=False)


def _jax_apply(model, method: str, x):
    """jax.vmap(model.METHOD)(x) under one jit (eager ops would each compile on their own)."""
    import equinox as eqx
    import jax

    return eqx.filter_jit(lambda m, a: jax.vmap(getattr(m, method))(a))(model, x)


@pytest.fixture(scope="module")
def jax_tiny():
    """The Equinox autoencoder of TINY's architecture with zero parameters (load_params sets
    them), built from its abstract shapes: an eager random initialisation compiles op by op."""
    import equinox as eqx
    import jax

    from fields.jax.autoencoder import Autoencoder as JaxAE

    abstract = eqx.filter_eval_shape(JaxAE, TINY.shape, TINY.latent, TINY.channels,
                                     key=jax.random.PRNGKey(0))
    return jax.tree_util.tree_map(
        lambda a: np.zeros(a.shape, a.dtype) if isinstance(a, jax.ShapeDtypeStruct) else a,
        abstract)


def test_autoencoder_parity_torch_jax_float64(ae_root, jax_tiny):
    """The same weights encode and decode to the same numbers in torch and JAX, float64."""
    from zoo.backends import jax_backend, torch_backend

    root, _ = ae_root
    tm, _ = AE.load_autoencoder(root / "digits")
    rng = np.random.default_rng(3)  # off the trained weights: every parameter matters
    params = {k: v + 0.1 * rng.standard_normal(v.shape)
              for k, v in sorted(torch_backend.named_params(tm).items())}
    tm = torch_backend.load_params(copy.deepcopy(tm), params, "float64")
    assert sorted(jax_backend.named_params(jax_tiny)) == sorted(params)
    jm = jax_backend.load_params(jax_tiny, params, "float64")
    x = zoo.get_dataset("digits").images.test[:32]
    z = rng.standard_normal((32, TINY.latent))
    with torch.no_grad():
        mt, vt = tm.encode(torch.as_tensor(x))
        dt = tm.decode(torch.as_tensor(z)).numpy()
    mj, vj = _jax_apply(jm, "encode", x)
    dj = np.asarray(_jax_apply(jm, "decode", z))
    assert dt.shape == (32, 1, 8, 8) and np.all(np.abs(dt) <= 1)
    for a, b in ((mt.numpy(), mj), (vt.numpy(), vj), (dt, dj)):
        np.testing.assert_allclose(a, np.asarray(b), rtol=0, atol=1e-10)
    assert np.abs(dt).max() > 0.1 and np.abs(mt.numpy()).max() > 0.1  # not zeros compared


def test_saved_weights_load_into_jax(ae_root, jax_tiny):
    """weights.safetensors as written loads into the Equinox autoencoder and reconstructs as
    the float64 torch model does."""
    from safetensors.numpy import load_file

    from zoo.backends import jax_backend

    root, _ = ae_root
    model, _ = AE.load_autoencoder(root / "digits")
    jm = jax_backend.load_params(jax_tiny, load_file(root / "digits" / "weights.safetensors"),
                                 "float64")
    x = zoo.get_dataset("digits").images.test[:16]
    with torch.no_grad():
        want = model(torch.as_tensor(x)).numpy()
    got = _jax_apply(jm, "__call__", x)
    np.testing.assert_allclose(np.asarray(got), want, rtol=0, atol=1e-10)


def test_training_is_deterministic_and_recorded(ae_root):
    root, record = ae_root
    again = AE.save_autoencoder(*_tiny(), root / "again", grid=False)
    assert again["sha256"] == record["sha256"]
    other = AE.save_autoencoder(*_tiny(seed=1), root / "other", grid=False)
    assert other["sha256"] != record["sha256"]
    rec = json.loads((root / "digits" / "config.json").read_text())
    blob = (root / "digits" / "weights.safetensors").read_bytes()
    assert rec["sha256"] == hashlib.sha256(blob).hexdigest()
    assert rec["latent"] == 8 and rec["architecture"]["channels"] == 4
    assert rec["training"]["epochs"] == 1 and rec["versions"]["torch"] == torch.__version__
    assert 0 < rec["test_mse"] < 1 and 0 < rec["train_mse"] < 1
    s = rec["latent_scaling"]
    assert len(s["shift"]) == 8 and s["scale"] > 0


def test_latent_digits_dataset(ae_root):
    root, record = ae_root
    ds = zoo.get_dataset("latent-digits")
    assert ds.shape == (8,) and ds.dim == 8 and ds.images is None
    assert ds.autoencoder == {"path": str(root / "digits"), "sha256": record["sha256"]}
    lat = ds.latent
    assert lat.train.shape == (1497, 8) and lat.test.shape == (300, 8) and lat.pixel == "digits"
    # the recorded scaling: train latents have mean 0 and mean variance 1
    np.testing.assert_allclose(lat.train.mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(lat.train.var(), 1, rtol=1e-12)
    rng = np.random.default_rng(0)
    tr, te = {a.tobytes() for a in lat.train}, {a.tobytes() for a in lat.test}
    assert all(z.tobytes() in tr for z in ds.sample(rng, 20))
    assert all(z.tobytes() in te for z in ds.sample_heldout(rng, 20))
    # the decoder inverts the scaling: decode(latents of x) = D(m(x)), the reconstruction
    model, rec = AE.load_autoencoder(root / "digits")
    x = zoo.get_dataset("digits").images.test[:10]
    with torch.no_grad():
        want = model(torch.as_tensor(x)).numpy()
    img = lat.decode(lat.test[:10])
    assert img.shape == (10, 1, 8, 8) and img.dtype == np.float64
    np.testing.assert_allclose(img, want, rtol=0, atol=1e-12)


def test_missing_autoencoder_says_how_to_make_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(AUTOENCODER_ENV, str(tmp_path / "none"))
    with pytest.raises(ValueError, match="zoo autoencoder train") as e:
        zoo.get_dataset("latent-digits")
    assert "\n" not in str(e.value)
    code, _, err = run(["train", "--arch", "free-mlp", "--data", "latent-digits", "--out",
                        str(tmp_path / "r"), "--quiet"], capsys)
    assert code == 2 and "zoo autoencoder train" in err and len(err.strip().splitlines()) == 1


def test_autoencoder_check_command(ae_root, capsys, tmp_path):
    root, record = ae_root
    code, out, _ = run(["autoencoder", "check"], capsys)
    assert code == 0 and record["sha256"] in out
    bad = tmp_path / "digits"
    bad.mkdir()
    (bad / "config.json").write_text((root / "digits" / "config.json").read_text())
    blob = bytearray((root / "digits" / "weights.safetensors").read_bytes())
    blob[-1] ^= 1
    (bad / "weights.safetensors").write_bytes(bytes(blob))
    code, _, err = run(["autoencoder", "check", "--dir", str(bad)], capsys)
    assert code == 2 and "sha256" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("arch", ["free-mlp", "energysq-mlp"])
def test_latent_field_trains_samples_and_decodes(arch, ae_root, tmp_path):
    from zoo.sampling import sample_run

    root, record = ae_root
    run_dir = _latent_run(tmp_path, arch)
    cfg = json.loads((run_dir / "config.json").read_text())
    assert cfg["autoencoder"] == {"path": str(root / "digits"), "sha256": record["sha256"]}
    assert cfg["shape"] == [8] and cfg["status"] == "complete"
    path = sample_run(run_dir, n=16, solver="ode", method="euler", steps=8)
    z = np.load(path)["samples"]
    assert z.shape == (16, 8) and np.all(np.isfinite(z))  # the npz keeps the latents
    assert (run_dir / "samples-ode-euler.png").stat().st_size > 0  # the decoded grid
    x = zoo.get_dataset("latent-digits").latent.decode(z)
    assert x.shape == (16, 1, 8, 8) and np.all(np.isfinite(x)) and np.all(np.abs(x) <= 1)


def test_evaluate_samples_on_latents_measures_pixels(ae_root):
    from zoo.evaluate import evaluate_samples

    ds = zoo.get_dataset("latent-digits")
    z = ds.sample_heldout(np.random.default_rng(0), 40)
    ev = evaluate_samples(z, "latent-digits", repeats=2)
    px = evaluate_samples(np.zeros((40, 64)), "digits", repeats=2)
    assert ev["data"] == "latent-digits" and ev["pixel_data"] == "digits"
    assert ev["autoencoder"] == ds.autoencoder and ev["latent_dim"] == 8
    assert set(ev["metrics"]) == set(px["metrics"]) >= {"fd", "class_kl", "memorised",
                                                         "feat_precision"}
    for k, m in ev["metrics"].items():  # the floors are the digits' own
        assert (m["floor_mean"], m["floor_std"]) == (px["metrics"][k]["floor_mean"],
                                                    px["metrics"][k]["floor_std"])
        assert np.isfinite(m["value"])
    assert ev["n_ref"] == 300
    # the decoded samples are what was measured: the same images evaluated as digits agree
    from zoo.api import make_schedule

    sch = make_schedule("ou")
    x = ds.latent.decode(z).reshape(40, -1)
    x = (float(sch.alpha(sch.t_min)) * x + float(sch.sigma(sch.t_min))
         * np.random.default_rng([6, 0]).standard_normal(x.shape))
    direct = evaluate_samples(x, "digits", repeats=2)
    assert {k: m["value"] for k, m in direct["metrics"].items()} == \
        {k: m["value"] for k, m in ev["metrics"].items()}
    bad = z.copy()
    bad[3, 0] = np.nan
    nf = evaluate_samples(bad, "latent-digits", repeats=2)
    assert nf["n_nonfinite"] == 1 and all(v is None for v in nf["metrics"].values())


def test_check_field_runs_in_latent_space(ae_root, tmp_path):
    from zoo.diagnostics import check_field

    run_dir = _latent_run(tmp_path)
    field, cfg = zoo.load(run_dir)
    out = check_field(field, "torch", data="latent-digits", schedule=zoo.make_schedule("ou"),
                      times=[0.1, 1.0], n_points=16, n_loops=4, nodes=8, K=3)
    assert out["settings"]["data"] == "latent-digits" and out["settings"]["jacobian"] == "exact"
    assert 0 < out["summary"]["nasym_mean"] < 2  # a free field: asymmetric, finite


def test_latent_run_refuses_another_autoencoder(tmp_path, monkeypatch, capsys):
    """Every stage that loads a latent run refuses, in one line with exit 2, an autoencoder
    whose sha256 is not the one the run was trained with."""
    root = tmp_path / "ae"
    first = _save_tiny(root)
    monkeypatch.setenv(AUTOENCODER_ENV, str(root))
    run_dir = _latent_run(tmp_path)
    code, _, _ = run(["sample", str(run_dir), "--n", "4", "--method", "euler", "--steps", "2"],
                     capsys)
    assert code == 0
    second = _save_tiny(root, seed=1)  # a retrained autoencoder in the same place
    assert second["sha256"] != first["sha256"]
    for args in (["sample", str(run_dir), "--n", "4"], ["eval", str(run_dir), "--n", "4"],
                 ["check", str(run_dir)], ["nll", str(run_dir), "--n", "4"],
                 ["train", "--arch", "free-mlp", "--data", "latent-digits", "--steps", "5",
                  "--batch", "32", "--log-every", "5", "--width", "32", "--depth", "2",
                  "--out", str(run_dir), "--quiet"]):
        code, _, err = run(args, capsys)
        assert code == 2, args
        assert len(err.strip().splitlines()) == 1, err
        assert first["sha256"][:12] in err and second["sha256"][:12] in err, err
    assert autoencoder_dir("digits") == root / "digits"


def test_shipped_autoencoder_loads_and_matches_its_sha256():
    rec = json.loads((SHIPPED / "config.json").read_text())
    blob = (SHIPPED / "weights.safetensors").read_bytes()
    assert hashlib.sha256(blob).hexdigest() == rec["sha256"]
    model, record = AE.load_autoencoder(SHIPPED)
    assert record["data"] == "digits" and record["latent"] == 16
    assert record["test_mse"] < 0.05 and "reconstruction_fd" in record
    x = zoo.get_dataset("digits").images.test[:8]
    assert AE.reconstruction_mse(model, x) < 0.1

"""The command line: one line and exit 2 on bad input, nothing written; runs load in both backends."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import run

import zoo
from zoo import backends
from zoo.cli import main

HERE = Path(__file__).parent


BAD = [
    ["train", "--arch", "nope-mlp"],
    ["train", "--arch", "fre-mlp"],
    ["train", "--arch", "free-mlp", "--backend", "tensorflow"],
    ["train", "--arch", "free-mlp", "--data", "spiral"],
    ["train", "--arch", "free-mlp", "--steps", "0"],
    ["train", "--arch", "free-mlp", "--batch", "-3"],
    ["train", "--arch", "free-mlp", "--lr", "nan"],
    ["train", "--arch", "free-mlp", "--lr", "inf"],
    ["train", "--arch", "free-mlp", "--lr", "-1e-3"],
    ["train", "--arch", "free-mlp", "--T", "0"],
    ["train", "--arch", "free-mlp", "--t-min", "9"],
    ["train", "--arch", "exact"],
    ["train", "--arch", "free-mlp", "--plugin", "no.such.module"],
    ["train", "--arch", "free-mlp", "--plugin", "missing_file.py"],
    ["train"],
    ["nonsense"],
    ["bench", "train", "--backends", "mxnet"],
    ["sweep", "--suite", "quick", "--only", "rings/*"],  # a slice with no run of the suite
    # fields, options and data with a shape
    ["train", "--arch", "free-unet"],  # an image field on 2-D points
    ["train", "--arch", "energy-dit", "--data", "gmm-d"],
    ["train", "--arch", "free-mlp", "--opt", "nope=1"],
    ["train", "--arch", "free-mlp", "--opt", "width"],
    ["train", "--arch", "free-mlp", "--opt", "width=-4"],
    ["train", "--arch", "free-mlp", "--K", "3"],  # only rotational heads take K
    ["train", "--arch", "free-unet", "--data", "digits", "--opt", "channels=0"],
    ["train", "--arch", "free-unet", "--data", "digits", "--opt", "mults=1,x"],
    ["train", "--arch", "free-unet", "--data", "digits", "--opt", "groups=5"],
    ["train", "--arch", "free-dit", "--data", "digits", "--opt", "patch=3"],
    ["train", "--arch", "free-dit", "--data", "digits", "--opt", "heads=5"],
    ["train", "--arch", "free-unet", "--data", "mnist", "--data-root", "/nonexistent/zoo-data"],
]


@pytest.mark.parametrize("args", BAD, ids=lambda a: " ".join(a))
def test_bad_input_is_one_line_exit_2_nothing_written(args, capsys, tmp_path):
    out = tmp_path / "run"
    code, stdout, err = run(args + ["--out", str(out)] if args[0] == "train" else args, capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "error" in lines[0], err
    assert "Traceback" not in err
    assert not out.exists()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "tiny"
    with pytest.raises(SystemExit) as e:
        main(["train", "--arch", "free-mlp", "--backend", "jax", "--steps", "30", "--width", "16",
              "--batch", "32", "--out", str(out), "--quiet"])
    assert e.value.code == 0
    return out


BAD_ON_A_RUN = [("sample", a) for a in (
    ["--method", "rk45"],
    ["--solver", "sde", "--method", "dopri5"],
    ["--n", "0"],
    ["--n", "-5"],
    ["--rtol", "0"],
    ["--atol", "nan"],
    ["--steps", "0"],
    ["--engine", "jaxx"],
    ["--solver", "langevin"],
)] + [("eval", a) for a in (
    ["--solver", "ode:rk45"],
    ["--solver", "ode,sde:dopri5"],
    ["--solver", "langevin"],
    ["--solver", ","],
    ["--n", "0"],
    ["--repeats", "1"],
)]


@pytest.mark.parametrize("cmd,extra", BAD_ON_A_RUN, ids=lambda a: a if isinstance(a, str)
                         else " ".join(a))
def test_bad_input_on_a_run_writes_nothing(cmd, extra, tiny_run, capsys):
    before = sorted(p.name for p in tiny_run.iterdir())
    code, _, err = run([cmd, str(tiny_run), *extra], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert sorted(p.name for p in tiny_run.iterdir()) == before


@pytest.mark.parametrize("cmd", ["sample", "nll", "eval", "check"])
def test_commands_refuse_a_directory_that_is_not_a_run(cmd, tmp_path, capsys):
    code, _, err = run([cmd, str(tmp_path)], capsys)
    assert code == 2 and "not a run directory" in err
    code, _, err = run([cmd, str(tmp_path / "missing")], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1


def test_sample_and_nll_write_their_files(tiny_run, capsys):
    code, out, _ = run(["sample", str(tiny_run), "--n", "300", "--solver", "sde", "--steps", "50"],
                       capsys)
    assert code == 0
    npz = tiny_run / "samples-sde-euler.npz"
    assert out.strip().splitlines()[-1] == str(npz)
    with np.load(npz, allow_pickle=False) as z:
        assert z["samples"].shape == (300, 2) and int(z["nfe"]) >= 50
        assert json.loads(str(z["settings"]))["seed"] == 0
    assert (tiny_run / "samples-sde-euler.png").stat().st_size > 1000
    code, out, _ = run(["sample", str(tiny_run), "--n", "100", "--engine", "diffrax",
                        "--method", "midpoint", "--steps", "20"], capsys)
    assert code == 0 and (tiny_run / "samples-ode-midpoint.npz").exists()
    code, out, _ = run(["nll", str(tiny_run), "--n", "50"], capsys)
    assert code == 0 and "exact density" in out
    r = json.loads((tiny_run / "nll.json").read_text())
    assert np.isfinite(r["nll_nats"]) and r["estimator"] == "exact"
    assert r["escaped"] == 0 and r["max_nfe"] == 2000 and "diverged" not in r
    # a budget the solve cannot meet: nll.json records where it stopped, with no NLL
    code, out, _ = run(["nll", str(tiny_run), "--n", "10", "--max-nfe", "5"], capsys)
    assert code == 0 and "NLL not measured" in out
    r = json.loads((tiny_run / "nll.json").read_text())
    assert r["nll_nats"] is None and r["nfe"] == 5 and 0 < r["diverged"]["t_reached"] < 5


def test_eval_writes_eval_json(tiny_run, capsys):
    code, out, _ = run(["eval", str(tiny_run), "--n", "200", "--solver", "sde:euler",
                        "--repeats", "2"], capsys)
    assert code == 0 and out.strip().splitlines()[-1] == str(tiny_run / "eval.json")
    r = json.loads((tiny_run / "eval.json").read_text())
    assert list(r["solvers"]) == ["sde-euler"] and r["settings"]["repeats"] == 2
    m = r["solvers"]["sde-euler"]["metrics"]["w2"]
    assert m["value"] > 0 and m["floor_mean"] > 0 and m["floor_std"] >= 0
    code, out, _ = run(["eval", str(tiny_run), "--n", "200", "--solver", "sde", "--repeats", "2",
                        "--json"], capsys)  # the same draw: its samples file is reused
    assert code == 0 and json.loads(out)["solvers"]["sde-euler"]["reused"]


def test_list_json(capsys):
    code, out, _ = run(["list", "--json"], capsys)
    assert code == 0
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["energy-mlp"]["conservative"] and not rows["free-mlp"]["conservative"]
    assert rows["free-mlp"]["backends"] == ["torch", "jax"]


def test_train_writes_a_run_that_loads_in_both_backends(capsys, tmp_path):
    out = tmp_path / "run"
    code, stdout, _ = run(["train", "--arch", "energy-mlp", "--backend", "jax", "--steps", "30",
                           "--width", "32", "--batch", "64", "--out", str(out), "--quiet",
                           "--dtype", "float64"], capsys)
    assert code == 0
    assert stdout.strip().splitlines()[-1] == str(out)
    assert {p.name for p in out.iterdir()} >= {"config.json", "weights.safetensors",
                                               "ema.safetensors", "metrics.jsonl"}
    logs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert logs[-1]["step"] == 30 and np.isfinite(logs[-1]["loss"])
    fj, cfg = zoo.load(out, backend="jax")
    ft, _ = zoo.load(out, backend="torch")
    x = np.random.default_rng(0).standard_normal((8, 2))
    t = np.linspace(0.01, 4, 8)
    sj, st = backends.get("jax").score(fj, x, t), backends.get("torch").score(ft, x, t)
    np.testing.assert_allclose(st, sj, rtol=1e-10, atol=1e-12)
    # a file altered after the run is refused, with one line naming it
    w = out / "ema.safetensors"
    w.write_bytes(w.read_bytes()[:-8])
    with pytest.raises(zoo.ZooError, match="ema.safetensors: sha256"):
        zoo.load(out, backend="torch")


def test_plugin_field_trains_through_the_cli(tmp_path):
    """A field registered in a module outside the package trains via `zoo train --plugin`."""
    out = tmp_path / "run"
    zoo_bin = Path(sys.executable).parent / "zoo"
    cmd = [str(zoo_bin), "train", "--plugin", str(HERE / "plugins" / "gaussian_field.py"),
           "--arch", "test-gaussian", "--steps", "200", "--lr", "0.05", "--out", str(out),
           "--quiet"]
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "CI": "1"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == str(out)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["arch"] == "test-gaussian" and cfg["final_loss"] < cfg["first_loss"]


def test_zoo_keeps_xla_programs_in_its_cache(tmp_path):
    """`zoo` points JAX's persistent compilation cache at $ZOO_CACHE_DIR/jax before JAX starts, so
    a later run (a sweep's next seed, a resume) reuses the compiled training step."""
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    env.update(ZOO_CACHE_DIR=str(tmp_path / "cache"), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    zoo_bin = Path(sys.executable).parent / "zoo"
    cmd = [str(zoo_bin), "train", "--arch", "free-mlp", "--backend", "jax", "--steps", "2",
           "--width", "8", "--out", str(tmp_path / "run"), "--quiet"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    cached = [p.name for p in (tmp_path / "cache" / "jax").iterdir()]
    assert any(n.startswith("jit_step-") for n in cached), cached

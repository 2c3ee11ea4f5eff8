"""Learning curves: `zoo train --eval-at` keeps EMA snapshots, `zoo curve` scores them.

A snapshot at step k must be exactly the EMA weights a k-step run of the same seed ends with
(the batches come from one generator in order), and a curve's points must score like `zoo eval`
scores the same ODE samples.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import run

from zoo import checkpoint
from zoo.curves import curve_run
from zoo.train import TrainConfig, train

KW = dict(arch="free-mlp", backend="jax", data="gmm8", batch=64, options={"width": 16, "depth": 2},
          checkpoint_every=40)


@pytest.fixture(scope="module")
def curved(tmp_path_factory):
    d = tmp_path_factory.mktemp("curve") / "run"
    train(TrainConfig(steps=120, eval_at=[30, 80], **KW), out=d, show_progress=False)
    return d


def test_snapshot_is_the_ema_of_a_shorter_run(curved, tmp_path):
    cfg = checkpoint.read_config(curved)
    assert sorted(cfg["snapshots"]) == ["ema-00000030.safetensors", "ema-00000080.safetensors"]
    from safetensors.numpy import load_file

    snap = load_file(curved / "snapshots" / "ema-00000080.safetensors")
    short = train(TrainConfig(steps=80, **KW), out=tmp_path / "short", show_progress=False)
    ref = checkpoint.read_weights(short, "ema")
    assert snap.keys() == ref.keys()
    for k in ref:
        np.testing.assert_array_equal(snap[k], ref[k])


def test_resumed_run_keeps_and_rewrites_snapshots(curved, tmp_path, monkeypatch):
    """Stopped at step 90 (after its checkpoint at 80), the run continues and ends with the same
    snapshots and weights as the run that never stopped."""
    import zoo.train as T

    d = tmp_path / "resumed"
    cfg = TrainConfig(steps=120, eval_at=[30, 80], **KW)
    draw, calls = T.draw_batch, [0]

    def stopping(*a):
        calls[0] += 1
        if calls[0] == 90:
            raise KeyboardInterrupt
        return draw(*a)

    monkeypatch.setattr(T, "draw_batch", stopping)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, out=d, show_progress=False)
    monkeypatch.setattr(T, "draw_batch", draw)
    assert checkpoint.read_config(d)["checkpoint"]["step"] == 80
    train(cfg, out=d, show_progress=False)
    a, b = checkpoint.read_config(d), checkpoint.read_config(curved)
    assert a["snapshots"] == b["snapshots"]  # the same sha256 of every snapshot
    assert a["sha256"] == b["sha256"]


def test_curve_points_score_like_eval(curved):
    from zoo.api import load, make_schedule
    from zoo.evaluate import evaluate_samples
    from zoo.sampling import sample_field

    r = curve_run(curved, n=200, seed=1, repeats=2)
    assert [p["step"] for p in r["points"]] == [30, 80, 120]
    assert json.loads((curved / "curve.json").read_text()) == json.loads(json.dumps(r))
    field, cfg = load(curved)
    sch = make_schedule(cfg["schedule"], cfg["t_min"], cfg["T"])
    s = sample_field(field, "jax", sch, (2,), n=200, seed=1, solver="ode", dtype="float32")
    ev = evaluate_samples(s["samples"], "gmm8", schedule=sch, seed=1, repeats=2)
    last = r["points"][-1]["metrics"]
    for k in ("mean_log_density", "mmd_rbf", "w2"):
        assert last[k]["value"] == pytest.approx(ev["metrics"][k]["value"], rel=1e-9)
    # early weights are further from the data than the final ones on this closed form
    assert r["points"][0]["metrics"]["mean_log_density"]["value"] < last["mean_log_density"]["value"]


def test_bad_eval_at_and_curve_without_snapshots(tmp_path, capsys):
    d = tmp_path / "bad"
    for bad in ("0", "50", "10,x"):
        code, _, err = run(["train", "--arch", "free-mlp", "--backend", "jax", "--steps", "50",
                            "--eval-at", bad, "--out", str(d), "--quiet"], capsys)
        assert code == 2 and "eval-at" in err.replace("_", "-") and len(err.strip().splitlines()) == 1
        assert not d.exists()
    train(TrainConfig(steps=20, **KW), out=d, show_progress=False)
    code, _, err = run(["curve", str(d), "--quiet"], capsys)
    assert code == 2 and "no snapshots" in err

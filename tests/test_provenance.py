"""A verdict you can trust: samples files record what made them and are reused only for the very
same draw, ``zoo train --force`` leaves nothing made from the old weights, writes are atomic even
when they fail, and a run whose sweep was killed reads "killed", not "running"."""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import cli

from zoo import checkpoint
from zoo.evaluate import eval_run
from zoo.registry import ZooError
from zoo.sweep.stages import KILLED_REASON, run_status

HERE = Path(__file__).parent
UNSTABLE = str(HERE / "plugins" / "unstable_fields.py")
TINY = ["--arch", "free-mlp", "--data", "gmm8", "--width", "16", "--batch", "64", "--quiet"]


def ema_sha(run: Path) -> str:
    return json.loads((run / "config.json").read_text())["sha256"]["ema.safetensors"]


def samples_of(path: Path) -> tuple[np.ndarray, dict]:
    with np.load(path, allow_pickle=False) as z:
        return z["samples"], json.loads(str(z["settings"]))


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("prov") / "run"
    code, _, err = cli(["train", *TINY, "--steps", "60", "--out", str(run)])
    assert code == 0, err
    return run


@pytest.fixture
def run(trained, tmp_path) -> Path:
    """A private copy of the trained run."""
    dst = tmp_path / "run"
    shutil.copytree(trained, dst)
    return dst


# ---- task: --force retrains from scratch and eval draws from the new weights ----------------

def test_force_retrain_removes_everything_downstream_and_eval_resamples(tmp_path):
    run = tmp_path / "run"
    code, _, err = cli(["train", *TINY, "--steps", "60", "--out", str(run)])
    assert code == 0, err
    assert cli(["nll", str(run), "--n", "50"])[0] == 0
    code, out, err = cli(["eval", str(run), "--n", "200", "--repeats", "2", "--json"])
    assert code == 0, err
    first = json.loads(out)
    assert all(not e["reused"] and e["resampled_reason"] == "no samples file"
               for e in first["solvers"].values())
    assert first["nll"]["weights_sha256"] == first["weights_sha256"] == ema_sha(run)
    old_sha = ema_sha(run)
    old_x = {p.name: samples_of(p)[0] for p in run.glob("samples-*.npz")}
    assert set(old_x) == {"samples-ode-dopri5.npz", "samples-sde-euler.npz"}
    for p in run.glob("samples-*.npz"):
        assert samples_of(p)[1]["weights_sha256"] == old_sha
    # what the other stages make from the weights (check, a learning curve, its snapshots)
    for name in ("check.json", "check-field.png", "curve.json"):
        (run / name).write_text("{}")
    (run / "snapshots").mkdir()
    (run / "snapshots" / "ema-00000010.safetensors").write_bytes(b"old")

    code, _, err = cli(["train", *TINY, "--steps", "60", "--lr", "3e-3", "--force",
                        "--out", str(run)])
    assert code == 0, err
    assert ema_sha(run) != old_sha
    left = sorted(p.name for p in run.iterdir())
    for name in ("eval.json", "nll.json", "check.json", "check-field.png", "curve.json",
                 "snapshots"):
        assert name not in left, left
    assert not [n for n in left if n.startswith("samples-")], left

    code, out, err = cli(["eval", str(run), "--n", "200", "--repeats", "2", "--json"])
    assert code == 0, err
    second = json.loads(out)
    assert second["weights_sha256"] == ema_sha(run) and "nll" not in second
    for label, entry in second["solvers"].items():
        assert not entry["reused"], label
        path = run / entry["samples_file"]
        x, settings = samples_of(path)
        assert settings["weights_sha256"] == ema_sha(run) == entry["sample_settings"][
            "weights_sha256"]
        assert x.shape == old_x[path.name].shape and not np.array_equal(x, old_x[path.name])
        # the evaluation is of the new samples, not the old ones
        assert entry["metrics"] != first["solvers"][label]["metrics"]


# ---- task: a samples file is reused only for the very same draw ------------------------------

def rewrite_settings(path: Path, **change) -> None:
    """Rewrite a samples file with ``change`` applied to its settings (None deletes a key)."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    settings = json.loads(str(arrays["settings"]))
    for k, v in change.items():
        settings.pop(k) if v is None else settings.__setitem__(k, v)
    buf = io.BytesIO()
    np.savez(buf, **{**arrays, "settings": json.dumps(settings)})
    path.write_bytes(buf.getvalue())


def test_eval_reuses_a_samples_file_only_for_the_same_draw(run):
    ode = (("ode", None),)
    path = run / "samples-ode-dopri5.npz"
    r = eval_run(run, n=100, repeats=2, solvers=ode)["solvers"]["ode-dopri5"]
    assert not r["reused"] and r["resampled_reason"] == "no samples file"
    s = r["sample_settings"]
    assert (s["weights"], s["weights_sha256"]) == ("ema.safetensors", ema_sha(run))
    assert {k: s[k] for k in ("n", "seed", "solver", "method", "steps", "rtol", "atol", "engine",
                              "rho", "denoise", "ema")} == {
        "n": 100, "seed": 0, "solver": "ode", "method": "dopri5", "steps": None, "rtol": 1e-5,
        "atol": 1e-5, "engine": "torch", "rho": 2.0, "denoise": False, "ema": True}

    def again(**kw) -> dict:
        return eval_run(run, **{"n": 100, "repeats": 2, "solvers": ode, **kw}
                        )["solvers"]["ode-dopri5"]

    assert again()["reused"]
    r = again(n=120)  # another n
    assert not r["reused"] and "n 100 there, 120 requested" in r["resampled_reason"]
    assert r["n"] == 120 and samples_of(path)[0].shape == (120, 2)
    r = again(n=120, seed=3)  # another seed
    assert not r["reused"] and "seed 0 there, 3 requested" in r["resampled_reason"]
    assert again(n=120, seed=3)["reused"]

    rewrite_settings(path, weights_sha256="0" * 64)  # drawn from other weights
    r = again(n=120, seed=3)
    assert not r["reused"] and "other weights" in r["resampled_reason"]
    assert samples_of(path)[1]["weights_sha256"] == ema_sha(run)
    rewrite_settings(path, weights_sha256=None, weights=None)  # a file from before provenance
    r = again(n=120, seed=3)
    assert not r["reused"] and "no provenance" in r["resampled_reason"]
    path.write_bytes(b"not an npz")  # an unreadable file is drawn again, not an error
    r = again(n=120, seed=3)
    assert not r["reused"] and "unreadable" in r["resampled_reason"]

    # `zoo sample` with other settings (raw weights, another tolerance, an SDE of 50 steps) does
    # not stand for eval's draw
    assert cli(["sample", str(run), "--n", "120", "--seed", "3", "--raw"])[0] == 0
    r = again(n=120, seed=3)
    assert not r["reused"] and "weights" in r["resampled_reason"]
    assert cli(["sample", str(run), "--n", "120", "--seed", "3", "--rtol", "1e-3"])[0] == 0
    r = again(n=120, seed=3)
    assert not r["reused"] and "rtol 0.001 there, 1e-05 requested" in r["resampled_reason"]
    assert cli(["sample", str(run), "--n", "120", "--solver", "sde", "--steps", "50"])[0] == 0
    r = eval_run(run, n=120, repeats=2, solvers=(("sde", None),))["solvers"]["sde-euler"]
    assert not r["reused"] and "steps 50 there, 500 requested" in r["resampled_reason"]


def test_eval_refuses_altered_weights_even_with_a_matching_samples_file(run):
    eval_run(run, n=100, repeats=2, solvers=(("ode", None),))
    blob = bytearray((run / "ema.safetensors").read_bytes())
    blob[-3] ^= 0x10
    (run / "ema.safetensors").write_bytes(bytes(blob))
    with pytest.raises(ZooError, match="ema.safetensors: sha256"):
        eval_run(run, n=100, repeats=2, solvers=(("ode", None),))


def test_eval_leaves_out_an_nll_of_other_weights(run):
    (run / "nll.json").write_text(json.dumps({"nll_nats": 3.0, "se": 0.1,
                                              "weights_sha256": "f" * 64}))
    r = eval_run(run, n=100, repeats=2, solvers=(("ode", None),))
    assert "nll" not in r and "other weights" in r["nll_skipped"]


# ---- task: remove_downstream, and who calls it -----------------------------------------------

def test_remove_downstream_removes_exactly_what_is_made_from_the_weights(tmp_path):
    run = tmp_path / "run"
    keep = ["config.json", "weights.safetensors", "ema.safetensors", "metrics.jsonl",
            "ckpt-00000005.safetensors", "sweep.json", ".lock", ".sweep.lock", "notes.txt"]
    made = ["eval.json", "nll.json", "check.json", "check-field.png", "curve.json",
            "samples-ode-dopri5.npz", "samples-ode-dopri5.png", "samples-sde-euler.npz"]
    run.mkdir()
    for name in keep + made:
        (run / name).write_text("x")
    (run / "snapshots").mkdir()
    (run / "snapshots" / "ema-00000002.safetensors").write_text("x")
    assert checkpoint.remove_downstream(run, snapshots=False) == sorted(made)
    assert (run / "snapshots" / "ema-00000002.safetensors").is_file()
    assert checkpoint.remove_downstream(run) == ["snapshots"]
    assert sorted(p.name for p in run.iterdir()) == sorted(keep)
    assert checkpoint.remove_downstream(tmp_path / "none") == []
    assert not (tmp_path / "none").exists()


def test_resume_keeps_snapshots_force_removes_them(tmp_path):
    """An unfinished run continues with the snapshots up to its checkpoint; --force starts over
    without anything of the old attempt."""
    out = tmp_path / "run"
    args = ["train", "--plugin", UNSTABLE, "--arch", "test-nan-after", "--steps", "30",
            "--checkpoint-every", "3", "--eval-at", "2,5", "--batch", "8", "--quiet",
            "--out", str(out)]
    code, _, err = cli(args)  # NaN at step 7: failed, checkpoint at step 6, snapshots 2 and 5
    assert code == 2 and "non-finite" in err
    snaps = sorted((out / "snapshots").iterdir())
    assert [p.name for p in snaps] == ["ema-00000002.safetensors", "ema-00000005.safetensors"]
    for p in snaps:  # a mark that a rewrite (even of equal bytes) would lose
        os.utime(p, ns=(10**18, 10**18))

    def marked() -> list[bool]:
        return [p.stat().st_mtime_ns == 10**18 for p in sorted((out / "snapshots").iterdir())]

    code, _, err = cli(args)  # resumed from step 6 (and fails again): snapshots untouched
    assert code == 2 and "non-finite" in err
    assert marked() == [True, True]
    (out / "eval.json").write_text("{}")
    (out / "samples-ode-dopri5.npz").write_text("x")
    code, _, err = cli([*args, "--force"])
    assert code == 2 and "non-finite" in err
    assert not (out / "eval.json").exists() and not (out / "samples-ode-dopri5.npz").exists()
    assert marked() == [False, False]  # removed with the rest, then written anew


# ---- task: atomic writes leave nothing behind when they fail, and fsync the directory --------

@pytest.mark.parametrize("fails", ["write", "fsync", "replace"])
def test_a_failed_atomic_write_leaves_the_old_file_and_no_tmp(fails, tmp_path, monkeypatch):
    target = tmp_path / "config.json"
    target.write_text("old")

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    if fails == "write":
        data = object()  # f.write raises TypeError after the temporary file is created
    else:
        data = b"new"
        monkeypatch.setattr(os, fails, boom)
    with pytest.raises(TypeError if fails == "write" else OSError):
        checkpoint.atomic_write(target, data)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]
    assert target.read_text() == "old"


def test_atomic_write_fsyncs_the_file_and_then_its_directory(tmp_path, monkeypatch):
    kinds = []
    real = os.fsync

    def spy(fd):
        kinds.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    checkpoint.write_json(tmp_path / "a.json", {"a": 1})
    assert kinds == ["file", "dir"]
    assert json.loads((tmp_path / "a.json").read_text()) == {"a": 1}


# ---- task: a run whose sweep was killed reads "killed" ---------------------------------------

def hold_lock(run: Path) -> subprocess.Popen:
    """A second process holding ``run/.sweep.lock`` until killed."""
    p = subprocess.Popen(
        [sys.executable, "-c", "import time; from zoo.checkpoint import run_lock\n"
         f"with run_lock({str(run)!r}, '.sweep.lock'):\n print('held', flush=True); "
         "time.sleep(120)"], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_is_locked_sees_a_live_holder_only(tmp_path):
    run = tmp_path / "run"
    assert not checkpoint.is_locked(run) and not run.exists()  # creates nothing
    holder = hold_lock(run)
    try:
        assert checkpoint.is_locked(run)
        assert checkpoint.is_locked(run, ".sweep.lock")
        assert not checkpoint.is_locked(run, ".lock")
        # the probe does not disturb the holder: the lock is still taken afterwards
        with pytest.raises(checkpoint.RunBusy, match=f"pid {holder.pid}"):
            with checkpoint.run_lock(run, ".sweep.lock"):
                pass
        assert checkpoint.is_locked(run)
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    assert not checkpoint.is_locked(run)  # the kernel dropped the dead holder's lock
    with checkpoint.run_lock(run, ".sweep.lock"):  # and a new holder is seen
        assert checkpoint.is_locked(run)
    assert not checkpoint.is_locked(run)


def test_run_status_tells_a_killed_sweep_from_a_live_one(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    assert run_status(run) is None
    record = {"status": "running", "pid": 1, "stages": {"train": 1.0}}
    checkpoint.write_json(run / "sweep.json", record)
    holder = hold_lock(run)
    try:
        assert run_status(run) == record  # a live sweep works on it
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    st = run_status(run)
    assert st["status"] == "killed" and st["reason"] == KILLED_REASON
    assert st["stages"] == record["stages"]
    assert json.loads((run / "sweep.json").read_text()) == record  # shown, not rewritten
    for final in ("complete", "failed"):
        checkpoint.write_json(run / "sweep.json", {**record, "status": final})
        assert run_status(run)["status"] == final

"""Reliability of training and of run directories (issue 8): determinism, crash-safe checkpoints
and resume, the non-finite guard, verified checkpoints, the per-run lock, and a property-based
test that the CLI never crashes or leaves a half-written run on any argument list."""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zoo import checkpoint
from zoo.registry import ZooError
from zoo.train import TrainConfig, train

HERE = Path(__file__).parent
UNSTABLE = str(HERE / "plugins" / "unstable_fields.py")
ZOO = str(Path(sys.executable).parent / "zoo")
ENV = {**os.environ, "CI": "1"}


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "error" in lines[0] and "Traceback" not in err, err
    return lines[0]


def tensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(path))


def assert_bitwise(a: Path, b: Path) -> None:
    for name in ("weights.safetensors", "ema.safetensors"):
        ta, tb = tensors(a / name), tensors(b / name)
        assert ta.keys() == tb.keys()
        for k in ta:
            assert ta[k].tobytes() == tb[k].tobytes(), (name, k)


def losses(run: Path) -> list[tuple[int, float]]:
    """(step, loss) of metrics.jsonl (steps/s is a timing, not a result)."""
    return [(r["step"], r["loss"]) for r in map(json.loads, (run / "metrics.jsonl").open())]


TINY = ["--width", "8", "--batch", "16", "--quiet"]


# ---- crash safety: SIGKILL at a random step, resume, bitwise the uninterrupted run ----------

@pytest.fixture
def one_torch_thread():
    """One torch thread here and in subprocesses (OMP_NUM_THREADS=1): bitwise equality needs the
    same thread count on both sides, and at width 8 a second thread only adds contention."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield {**ENV, "OMP_NUM_THREADS": "1"}
    torch.set_num_threads(n)


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_killed_run_resumes_to_bitwise_the_uninterrupted_run(backend, tmp_path, one_torch_thread):
    steps = 320
    # --log-every 7 against --checkpoint-every 4: most resumes start inside a logging window
    args = ["train", "--arch", "free-mlp", "--backend", backend, "--steps", str(steps),
            "--checkpoint-every", "4", "--log-every", "7", "--width", "8", "--batch", "8",
            "--quiet"]
    killed = tmp_path / "killed"
    target = random.randrange(8, 80)  # kill once a checkpoint at or past this step exists
    proc = subprocess.Popen([ZOO, *args, "--out", str(killed)], env=one_torch_thread,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        at = 0
        while proc.poll() is None and at < target:
            with contextlib.suppress(FileNotFoundError, ValueError, ZooError):
                at = checkpoint.read_config(killed).get("checkpoint", {}).get("step", 0)
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
        err = proc.stderr.read().decode()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL, f"finished before the kill (target {target}) {err}"
    cfg = json.loads((killed / "config.json").read_text())
    assert cfg["status"] == "running" and 0 < cfg["checkpoint"]["step"] < steps

    # the same command again continues the run (in this process: quicker than a new one)
    code, out, err = cli([*args, "--out", str(killed)])
    assert code == 0, err
    assert "continued from step" in out
    done = json.loads((killed / "config.json").read_text())
    assert done["status"] == "complete" and done["resumed_at"][-1] >= cfg["checkpoint"]["step"]
    assert not list(killed.glob("ckpt-*")) and "checkpoint" not in done

    ref = tmp_path / "ref"
    assert cli([*args, "--out", str(ref)])[0] == 0
    assert_bitwise(killed, ref)
    assert losses(killed) == losses(ref)  # metrics.jsonl cut back to the checkpoint and redone
    assert done["first_loss"] == json.loads((ref / "config.json").read_text())["first_loss"]


def test_complete_run_is_not_retrained_force_retrains_identically(tmp_path):
    out = tmp_path / "run"
    args = ["train", "--arch", "energy-mlp", "--steps", "12", "--checkpoint-every", "5",
            *TINY, "--out", str(out)]
    assert cli(args)[0] == 0
    sha = json.loads((out / "config.json").read_text())["sha256"]
    mtime = (out / "weights.safetensors").stat().st_mtime_ns

    code, stdout, _ = cli(args)  # the same command on a complete run: nothing trained
    assert code == 0 and "already complete" in stdout
    assert (out / "weights.safetensors").stat().st_mtime_ns == mtime

    code, stdout, _ = cli([*args, "--force"])  # retrained: determinism gives the same bytes
    assert code == 0 and "already complete" not in stdout
    assert (out / "weights.safetensors").stat().st_mtime_ns != mtime
    assert json.loads((out / "config.json").read_text())["sha256"] == sha

    code, _, err = cli([*args[:-2], "--lr", "0.01", "--out", str(out)])  # another run
    assert code == 2 and "holds a different run (lr" in one_error_line(err)
    code, _, err = cli([*args[:-2], "--out", str(tmp_path / "none"), "--resume"])
    assert code == 2 and "no run to resume" in one_error_line(err)
    assert not (tmp_path / "none").exists()
    (out / "ema.safetensors").write_bytes(b"")  # "complete" with an altered file is refused
    code, _, err = cli(args)
    assert code == 2 and "ema.safetensors: sha256" in one_error_line(err)


# ---- the non-finite guard ------------------------------------------------------------------

def test_nan_loss_stops_the_run_failed_keeping_the_last_good_checkpoint(tmp_path):
    out = tmp_path / "run"
    args = ["train", "--plugin", UNSTABLE, "--arch", "test-nan-after", "--steps", "30",
            "--checkpoint-every", "3", "--log-every", "2", "--batch", "8", "--quiet",
            "--out", str(out)]
    code, _, err = cli(args)
    line = one_error_line(err)
    assert code == 2 and "non-finite loss at step 7" in line and "ckpt-00000006" in line
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["status"] == "failed" and "non-finite loss at step 7" in cfg["reason"]
    assert cfg["checkpoint"] == {"file": "ckpt-00000006.safetensors", "step": 6}
    arrays, meta = checkpoint.read_checkpoint(out)  # whole, checksummed and finite
    assert meta["loop"]["step"] == 6 and all(np.all(np.isfinite(a)) for a in arrays.values())
    assert [s for s, _ in losses(out)] == [2, 4, 6]
    assert not (out / "weights.safetensors").exists()

    # a checkpoint altered on disk is refused on resume, naming it
    ck = out / "ckpt-00000006.safetensors"
    blob = bytearray(ck.read_bytes())
    blob[-3] ^= 0x10
    ck.write_bytes(bytes(blob))
    code, _, err = cli(args)
    assert code == 2 and "ckpt-00000006.safetensors: sha256" in one_error_line(err)

    # a checkpoint of another shape than the run's config (here: width 5 against 4) is refused
    other = tmp_path / "other"
    other.mkdir()
    ck.write_bytes(bytes(blob[:-3] + bytearray([blob[-3] ^ 0x10]) + blob[-2:]))  # restored
    cfg5 = {**cfg, "options": {"width": 5}}
    shutil.copy(ck, other / ck.name)
    checkpoint.write_json(other / "config.json", cfg5)
    c = TrainConfig(arch="test-nan-after", steps=30, checkpoint_every=3, log_every=2, batch=8,
                    options={"width": 5}, plugins=[UNSTABLE])
    with pytest.raises(ZooError, match=r"ckpt-00000006.safetensors: does not fit test-nan-after"):
        train(c, out=other, show_progress=False)


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_nan_gradient_with_a_finite_loss_is_caught(backend, tmp_path):
    out = tmp_path / "run"
    code, _, err = cli(["train", "--plugin", UNSTABLE, "--arch", "test-nan-grad", "--backend",
                        backend, "--steps", "5", "--batch", "8", "--quiet", "--out", str(out)])
    assert code == 2 and "non-finite gradient norm at step 1" in one_error_line(err)
    assert json.loads((out / "config.json").read_text())["status"] == "failed"


@pytest.mark.parametrize("arch,why", [("test-bad-shape", "shape [4, 1]"),
                                      ("test-bad-dtype", "dtype float64"),
                                      ("test-nan-probe", "not finite")])
def test_broken_plugin_field_is_refused_before_anything_is_written(arch, why, tmp_path):
    out = tmp_path / "run"
    code, _, err = cli(["train", "--plugin", UNSTABLE, "--arch", arch, "--steps", "3",
                        "--quiet", "--out", str(out)])
    assert code == 2 and why in one_error_line(err)
    assert not out.exists()


# ---- verified weights: `zoo sample` refuses altered, missing or mismatched files -----------

@pytest.fixture(scope="module")
def done_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("rel") / "run"
    code, _, err = cli(["train", "--arch", "free-mlp", "--steps", "4", *TINY, "--out", str(out)])
    assert code == 0, err
    return out


def _truncate(run):
    (run / "ema.safetensors").write_bytes((run / "ema.safetensors").read_bytes()[:-20])


def _flip(run):
    b = bytearray((run / "ema.safetensors").read_bytes())
    b[len(b) // 2] ^= 0x01
    (run / "ema.safetensors").write_bytes(bytes(b))


def _missing(run):
    (run / "ema.safetensors").unlink()


def _config(run, **change):
    cfg = json.loads((run / "config.json").read_text())
    cfg.update(change)
    (run / "config.json").write_text(json.dumps(cfg))


ALTER = {
    "truncated": (_truncate, "ema.safetensors: sha256 does not match"),
    "bit-flipped": (_flip, "ema.safetensors: sha256 does not match"),
    "missing": (_missing, "ema.safetensors: missing"),
    "other-architecture": (lambda r: _config(r, arch="energy-mlp"),
                           "ema.safetensors: weights do not fit energy-mlp"),
    "other-width": (lambda r: _config(r, options={"width": 16, "depth": 3, "act": "silu"}),
                    "ema.safetensors: weights do not fit free-mlp"),
}


@pytest.mark.parametrize("case", ALTER)
def test_sample_refuses_a_bad_weight_file_naming_it(case, done_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(done_run, run)
    alter, why = ALTER[case]
    alter(run)
    code, _, err = cli(["sample", str(run), "--n", "4"])
    assert code == 2 and why in one_error_line(err)
    assert str(run / "ema.safetensors") in err


def test_no_code_path_unpickles():
    """The package never calls the unpickling loaders (weights and optimiser state are
    safetensors + JSON)."""
    root = HERE.parent
    for py in [*root.glob("zoo/**/*.py"), *root.glob("fields/**/*.py"),
               *root.glob("solvers/**/*.py")]:
        text = py.read_text()
        for bad in ("torch.load(", "pickle.load", "allow_pickle=True", "torch.save("):
            assert bad not in text, (py, bad)


# ---- the per-run lock ----------------------------------------------------------------------

def test_run_lock_refuses_a_second_process(tmp_path):
    run = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from zoo.checkpoint import run_lock\n"
         f"with run_lock({str(run)!r}):\n print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True, env=ENV)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ZooError, match=rf"in use by another process \(pid {holder.pid}\)"):
            with checkpoint.run_lock(run):
                pass
        code, _, err = cli(["train", "--arch", "free-mlp", "--steps", "2", *TINY,
                            "--out", str(run)])
        assert code == 2 and f"(pid {holder.pid})" in one_error_line(err)
        assert not (run / "config.json").exists()
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    with checkpoint.run_lock(run):  # the kernel released the dead holder's lock
        assert (run / ".lock").read_text().strip() == str(os.getpid())


# ---- property: any argument list -> exit 0 or 2, no traceback, no half-written run ---------

RUN_OPTIONS = {  # option -> values, for sample, nll and check (click refuses the foreign ones)
    "--n": ["5", "0", "x"], "--seed": ["1", "-1"], "--steps": ["2", "0"],
    "--solver": ["sde", "ode", "langevin"], "--method": ["euler", "rk45"], "--rtol": ["nan"],
    "--engine": ["diffrax", "torch"], "--estimator": ["hutchinson", "exact"],
    "--n-points": ["4", "0"], "--times": ["0.5", "x", "-1"], "--probes": ["2"],
    "--raw": [], "--json": [], "--bogus": [],
}
# option -> (plausible values, implausible values); hypothesis leans to the first entries.
# JAX is only a refused backend here: its compiles (seconds each) would dominate the test, and
# the JAX trainer has its own tests above.
TRAIN_OPTIONS = {
    "--arch": (["free-mlp", "energy-mlp", "qc-mlp", "helmholtz-mlp"], ["exact", "nope", ""]),
    "--seed": (["0", "3"], ["-2"]),
    "--backend": (["torch"], ["tensorflow"]),
    "--data": (["gmm8", "moons", "gmm-d3"], ["spiral", "gmm-d0"]),
    "--lr": (["1e-3", "0.1"], ["nan", "-1", "abc", "1e30"]),
    "--dtype": (["float32", "float64"], ["float16"]),
    "--t-min": (["1e-3", "0.01"], ["0", "9", "inf"]),
    "--schedule": (["ou", "vp-linear"], ["cosine"]),
    "--checkpoint-every": (["1", "2"], ["0"]),
    "--log-every": (["1", "2"], ["0"]),
    "--K": (["2"], ["0"]),
    "--qc-lambda": (["1"], ["nan"]),
    "--plugin": ([UNSTABLE], ["no.such.module", "missing.py"]),
}


# cheap settings first (a later random token may still override them: click keeps the last)
CHEAP = {"sample": ["--n", "5", "--solver", "sde", "--steps", "2"],
         "nll": ["--n", "4", "--rtol", "1e-2", "--atol", "1e-2"],
         "check": ["--n-points", "4", "--n-loops", "2", "--nodes", "2", "--times", "0.5"]}


@st.composite
def argv(draw, run_dir: str, out: str):
    cmd = draw(st.sampled_from(["train", "train", "train", "sample", "nll", "check", "list"]))
    if cmd == "list":
        return ["list", *draw(st.lists(st.sampled_from(["*-mlp", "--json", "x", "--bogus"]),
                                       max_size=2))]
    if cmd != "train":
        target = draw(st.sampled_from([run_dir, run_dir, out, "/nonexistent/run"]))
        args = [cmd, target, *CHEAP[cmd]]
        for opt in draw(st.lists(st.sampled_from(sorted(RUN_OPTIONS)), max_size=2)):
            args += [opt, draw(st.sampled_from(RUN_OPTIONS[opt]))] if RUN_OPTIONS[opt] else [opt]
        return args
    def value(opt):  # mostly plausible, so that many examples train (and resume, complete)
        good, bad = TRAIN_OPTIONS[opt]
        return draw(st.sampled_from(bad if draw(st.integers(0, 5)) == 5 else good))

    args = ["train", "--arch", value("--arch"), "--steps", draw(st.sampled_from("123")),
            "--width", "8", "--batch", "8", "--quiet", "--out", out]
    for opt in draw(st.lists(st.sampled_from(list(TRAIN_OPTIONS)), max_size=3, unique=True)):
        args += [opt, value(opt)]
    if draw(st.integers(0, 3)) == 3:
        args.append(draw(st.sampled_from(["--resume", "--force", "--bogus", "stray", "--steps"])))
    return draw(st.permutations(args)) if draw(st.integers(0, 6)) == 6 else args


@pytest.fixture(scope="module")
def prop_dirs(tmp_path_factory, done_run):
    return tmp_path_factory.mktemp("prop"), done_run


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_cli_never_crashes_nor_half_writes_a_run(data, prop_dirs, monkeypatch):
    root, run = prop_dirs
    monkeypatch.chdir(root)  # default run directories (results/runs/...) land here
    out = root / f"out-{data.draw(st.integers(0, 5), label='out')}"  # reused: resume, complete
    args = data.draw(argv(str(run), str(out)), label="argv")
    code, _, err = cli(args)
    assert code in (0, 2), (args, code, err)
    assert "Traceback" not in err
    if code == 2:
        one_error_line(err)
    for d in [out, *root.glob("results/runs/*/*")]:  # every run directory: absent or whole
        if d.exists():
            cfg = json.loads((d / "config.json").read_text())
            assert cfg["status"] in ("complete", "failed"), (args, cfg["status"])

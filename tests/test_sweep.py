"""`zoo sweep` and `zoo leaderboard` end to end on a tiny suite, resume, failures, corrupt runs,
concurrent sweeps, and the aggregation over seeds against known inputs."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run

from zoo.cli import main
from zoo.leaderboard import collect

HERE = Path(__file__).parent
PLUGIN = str(HERE / "plugins" / "sweep_nan_field.py")

TINY = """
[tiny]
fields = ["free-mlp", "energy-mlp", "nan-sweep"]
datasets = ["gmm8"]
seeds = 1
backends = ["torch", "jax"]
[tiny.train]
steps = 150
batch = 128
[tiny.options.mlp]
width = 16
depth = 2
[tiny.eval]
n = 200
repeats = 2
[tiny.nll]
n = 50
[tiny.check]
n_points = 16
n_loops = 4
"""


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """One tiny sweep: free-mlp and energy-mlp in both backends, and a NaN plugin (torch only)."""
    root = tmp_path_factory.mktemp("sweep")
    suite = root / "suites.toml"
    suite.write_text(TINY)
    args = ["sweep", "--suite", "tiny", "--suite-file", str(suite), "--runs", str(root / "runs"),
            "--plugin", PLUGIN, "--jobs", "2", "--quiet"]
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 0
    return root, args


def test_sweep_runs_every_stage_and_records_failures(swept, capsys):
    root, _ = swept
    runs = root / "runs" / "tiny" / "gmm8"
    assert sorted(p.name for p in runs.iterdir()) == [
        "energy-mlp-jax-s0", "energy-mlp-torch-s0", "free-mlp-jax-s0", "free-mlp-torch-s0",
        "nan-sweep-torch-s0"]
    for name in ("free-mlp-torch-s0", "energy-mlp-jax-s0"):
        st = json.loads((runs / name / "sweep.json").read_text())
        assert st["status"] == "complete" and set(st["stages"]) == {"train", "nll", "eval", "check", "curve"}
        for f in ("eval.json", "check.json", "nll.json", "ema.safetensors",
                  "samples-ode-dopri5.npz", "samples-sde-euler.npz"):
            assert (runs / name / f).is_file(), f
    bad = json.loads((runs / "nan-sweep-torch-s0" / "sweep.json").read_text())
    assert bad["status"] == "failed" and bad["reason"].startswith("train:")
    assert "nan" in bad["reason"].lower() or "finite" in bad["reason"].lower(), bad["reason"]


def test_sweep_again_skips_finished_runs(swept, capsys):
    root, args = swept
    before = (root / "runs/tiny/gmm8/free-mlp-torch-s0/eval.json").stat().st_mtime_ns
    code, out, _ = run(args, capsys)
    assert code == 0
    assert "0 run(s) done, 4 skipped" in out and "1 failed" in out  # the failed run is retried
    assert (root / "runs/tiny/gmm8/free-mlp-torch-s0/eval.json").stat().st_mtime_ns == before


def test_a_resumed_run_keeps_the_times_of_the_stages_it_had_finished(swept, tmp_path, capsys):
    """A run stopped during its check stage redoes only that; its record keeps the seconds the
    first attempt spent on train, nll and eval instead of calling them "reused"."""
    import shutil

    root, args = swept
    copy = tmp_path / "runs"
    shutil.copytree(root / "runs", copy)
    run_dir = copy / "tiny/gmm8/free-mlp-jax-s0"
    first = json.loads((run_dir / "sweep.json").read_text())
    stopped = {**first, "status": "running",
               "stages": {k: v for k, v in first["stages"].items() if k in ("train", "nll", "eval")}}
    (run_dir / "sweep.json").write_text(json.dumps(stopped))
    (run_dir / "check.json").unlink()
    again = [a if a != str(root / "runs") else str(copy) for a in args]
    code, out, err = run(again + ["--only", "gmm8/free-mlp-jax-s0"], capsys)
    assert code == 0 and "1 run(s) done" in out, out + err
    st = json.loads((run_dir / "sweep.json").read_text())
    assert st["status"] == "complete" and (run_dir / "check.json").is_file()
    for stage in ("train", "nll", "eval"):
        assert isinstance(first["stages"][stage], float), first["stages"]
        assert st["stages"][stage] == first["stages"][stage], stage
    assert isinstance(st["stages"]["check"], float) and st["stages"]["check"] > 0


def test_leaderboard_tables_rows_columns_and_failures(swept, capsys):
    root, _ = swept
    out = root / "board"
    code, stdout, err = run(["leaderboard", "--runs", str(root / "runs"), "--out", str(out),
                             "--bench", "none", "--quiet"], capsys)
    assert code == 0, err
    md = (out / "LEADERBOARD.md").read_text()
    assert "## gmm8" in md and "## Summary" in md
    # the tiny suite is not built in: the runs found are counted
    assert "tiny: **4 of 5 runs found complete** (1 failed, the suite's size" in md
    table = [ln for ln in md.split("## gmm8")[1].splitlines() if ln.startswith("| ")]
    head = [c.strip() for c in table[0].strip("|").split("|")]
    for col in ("field", "kind", "seeds", "trim log ρ ODE", "NLL", "log ρ ODE", "MMD ODE",
                "precision", "W2 ODE", "W2 SDE", "NAsym", "circ", "score err", "Stein r²",
                "NFE ODE", "gap (trim log ρ ODE)"):
        assert col in head, col
    assert head[3:5] == ["trim log ρ ODE", "NLL"]  # the verdict metrics first
    assert "ms/step" not in head and "×free" not in head  # no bench record: no costs
    rows = {c[0]: c for c in ([x.strip() for x in ln.strip("|").split("|")]
                              for ln in table[1:]) if c[1] in ("free", "conservative")}
    # one row per field: the torch run of seed 0 is the JAX run's twin, not another seed
    assert set(rows) == {"energy-mlp", "free-mlp", "nan-sweep"}
    assert rows["free-mlp"][2] == "1 jax + torch s0"
    assert rows["nan-sweep"][2] == "none complete"
    assert "nan-sweep [torch] seed 0: failed — train:" in md
    # same weights and batches in both backends: log rho of torch and jax agree closely
    gap = rows["free-mlp"][head.index("gap (trim log ρ ODE)")]
    logp = float(rows["free-mlp"][head.index("trim log ρ ODE")].strip("*"))
    assert gap.endswith("(s0)") and abs(float(gap.split()[0])) < 0.02 + 1e-4 * abs(logp), gap
    assert "energy-mlp vs free-mlp" in md  # the paired comparison (one seed)
    with open(out / "leaderboard.csv") as f:
        csv_rows = list(csv.DictReader(f))
    assert len(csv_rows) == 3 and math.isfinite(float(csv_rows[0]["w2_ode_mean"]))
    for fig in ("conservativity-gmm8.png", "samples-gmm8.png", "quality-vs-conservativity.png"):
        assert (out / "figures" / fig).stat().st_size > 5000, fig
    # the JSON alone reproduces the table exactly (figures aside)
    code, _, _ = run(["leaderboard", "--runs", str(root / "runs"), "--out", str(out),
                      "--quiet", "--no-figures", "--bench", "none"], capsys)
    md2 = (out / "LEADERBOARD.md").read_text()
    assert [ln for ln in md2.split("## gmm8")[1].splitlines() if ln.startswith("| ")] == table


def test_corrupt_run_is_reported_and_skipped(swept, tmp_path, capsys):
    import shutil

    root, _ = swept
    copy = tmp_path / "runs"
    shutil.copytree(root / "runs", copy)
    ev = copy / "tiny/gmm8/free-mlp-jax-s0/eval.json"
    ev.write_text(ev.read_text()[:100])  # truncated mid-file
    code, _, err = run(["leaderboard", "--runs", str(copy), "--out", str(tmp_path / "b"),
                        "--quiet", "--no-figures", "--bench", "none"], capsys)
    assert code == 0 and "free-mlp-jax-s0: unreadable" in err
    md = (tmp_path / "b" / "LEADERBOARD.md").read_text()
    assert "## Skipped run directories" in md
    assert "| free-mlp | free | 1 torch |" in md  # the torch run alone is left


def test_bad_sweep_and_leaderboard_input(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('[x]\nfields = ["free-mlp"]\ndatasets = ["spiral"]\n')
    for args in (["sweep", "--suite", "nope"], ["sweep", "--suite-file", str(tmp_path / "no.toml")],
                 ["sweep", "--suite", "x", "--suite-file", str(bad)],
                 ["sweep", "--backends", "mxnet"], ["sweep", "--jobs", "0"],
                 ["leaderboard", "--runs", str(tmp_path / "missing")],
                 ["leaderboard", "--runs", str(tmp_path)]):
        code, _, err = run(args + ["--runs" if args[0] == "sweep" else "--out",
                                   str(tmp_path / "r")], capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1, (args, err)
    assert not (tmp_path / "r").exists()


def _sweep_cmd(tmp_path, runs, steps=20):
    suite = tmp_path / "s.toml"
    suite.write_text(TINY.replace('"free-mlp", "energy-mlp", "nan-sweep"', '"free-mlp"')
                     .replace("steps = 150", f"steps = {steps}").replace("n = 200", "n = 64"))
    return [sys.executable, "-m", "zoo.cli", "sweep", "--suite", "tiny", "--suite-file",
            str(suite), "--runs", str(runs), "--jobs", "1", "--quiet"]


@pytest.mark.slow  # whole tiny sweeps in subprocesses: ~25-55 s each
def test_two_concurrent_sweeps_never_run_one_run_twice(tmp_path):
    """Both sweeps list every run; each run is trained by exactly one of them (the other finds
    it busy or already complete), and every JSON file is whole afterwards."""
    cmd = _sweep_cmd(tmp_path, tmp_path / "runs")
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    done = sum(int(o.split(" run(s) done")[0].split()[-1]) for o, _ in outs)
    assert done == 2, outs  # two runs (torch, jax), each done once
    for f in (tmp_path / "runs").rglob("*.json"):
        json.loads(f.read_text())
    for d in (tmp_path / "runs/tiny/gmm8").iterdir():
        assert json.loads((d / "sweep.json").read_text())["status"] == "complete"


@pytest.mark.slow  # whole tiny sweeps in subprocesses: ~25-55 s each
def test_killed_sweep_restarts_cleanly(tmp_path):
    """SIGKILL a sweep (and its workers) while it trains; the same command then finishes every
    run, and the result equals an uninterrupted sweep's, weights bit for bit."""
    import os
    import signal
    import time

    killed = _sweep_cmd(tmp_path, tmp_path / "a", steps=400)
    p = subprocess.Popen(killed, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    run = tmp_path / "a/tiny/gmm8/free-mlp-torch-s0"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (run / "metrics.jsonl").is_file():
        time.sleep(0.02)
    while time.monotonic() < deadline and not (run / "metrics.jsonl").read_text():
        time.sleep(0.02)  # the first logged step: training is under way
    os.kill(p.pid, signal.SIGKILL)  # the sweep only: its worker must die with it
    p.wait()
    assert json.loads((run / "sweep.json").read_text())["status"] == "running"
    again = subprocess.run(killed, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "0 failed" in again.stdout, again.stdout + again.stderr
    ref = subprocess.run(_sweep_cmd(tmp_path, tmp_path / "b", steps=400), capture_output=True,
                         text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr
    for run in ("free-mlp-torch-s0", "free-mlp-jax-s0"):
        a, b = (json.loads((tmp_path / r / "tiny/gmm8" / run / "config.json").read_text())
                for r in "ab")
        assert a["status"] == "complete" and a["sha256"] == b["sha256"], run
        assert json.loads((tmp_path / "a/tiny/gmm8" / run / "sweep.json").read_text())[
            "status"] == "complete"


def test_collect_refuses_a_missing_directory(tmp_path):
    from zoo.registry import ZooError

    with pytest.raises(ZooError):
        collect(tmp_path / "nope")


def test_a_worker_loads_all_its_code_when_it_starts():
    """Lazily imported modules would be read mid-sweep from an edited tree (new beside old)."""
    from zoo.sweep.executors import preload_code

    names = set(preload_code())
    assert {"solvers.torch_engine", "solvers.diffrax_engine", "zoo.sampling", "zoo.curves",
            "zoo.diagnostics", "zoo.evaluate", "fields.jax.heads", "fields.torch.heads",
            "zoo.cli.suite"} <= names
    # a __main__ module is a program: a worker that imported `zoo.cli.__main__` ran the sweep
    # again with the driver's argv, whose pool spawned a worker that did the same (it happened)
    assert not any(n.endswith(".__main__") for n in names)


def test_importing_the_cli_main_module_runs_nothing():
    import importlib

    importlib.import_module("zoo.cli.__main__")  # without its guard: main() -> SystemExit


def test_a_busy_machine_gets_a_hint_before_threads_oversubscribe_it():
    from zoo.sweep.executors import oversubscription_hint

    # a second sweep of --jobs 1 beside a running one on 2 cores: 2 threads on a load of 2
    hint = oversubscription_hint(jobs=1, threads=2, load=2.0, cores=2)
    assert hint and "--cpus-per-run" in hint and "load 2.0 on 2 cores" in hint
    assert oversubscription_hint(jobs=1, threads=2, load=0.1, cores=2) is None  # idle machine
    assert oversubscription_hint(jobs=2, threads=1, load=3.0, cores=2) is None  # one thread
    assert oversubscription_hint(jobs=2, threads=4, load=0.0, cores=16) is None

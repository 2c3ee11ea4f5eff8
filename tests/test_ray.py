"""`zoo sweep --engine ray`: the same runs and leaderboard as the local pool, a killed worker retried
to bitwise the same weights, a worker lost for good recorded as failed, and bad input refused
(one line, exit 2, nothing written). One local Ray instance (2 CPUs, no GPU) for the module;
nothing here reaches another host."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from conftest import run  # noqa: E402

from zoo.leaderboard import write_leaderboard  # noqa: E402

SUITES = """
[tiny]
fields = ["free-mlp"]
datasets = ["gmm8"]
seeds = 1
backends = ["torch", "jax"]
[tiny.train]
steps = 30
[tiny.options.mlp]
width = 16
depth = 1
[tiny.eval]
n = 200
repeats = 2
[tiny.nll]
n = 50
[tiny.check]
n_points = 16
n_loops = 2

# long enough for a training checkpoint (every 500 steps) with ~500 steps still to go after it
[long]
fields = ["free-mlp"]
datasets = ["gmm8"]
seeds = 1
backends = ["torch"]
[long.train]
steps = 1000
[long.options.mlp]
width = 16
depth = 1
[long.eval]
n = 64
repeats = 2
[long.nll]
n = 20
[long.check]
n_points = 8
n_loops = 2
"""

TIMING = ("ms/step", "×free")  # leaderboard columns that are timings, never reproducible


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for the whole module: 2 CPUs, no GPU (so GPU requests are refused the same
    way on every machine), no dashboard. A sweep in this process joins it instead of starting
    its own, and leaves it running."""
    from zoo.sweep.executors import _worker_niceness

    # "local": a new instance, never one found on the machine (RAY_ADDRESS, the last cluster);
    # its workers at this process's priority, as a sweep's own local Ray has them (at Ray's
    # default nice 15 they wait behind the other pytest-xdist worker)
    with _worker_niceness(None):
        ray.init(address="local", num_cpus=2, num_gpus=0, include_dashboard=False,
                 log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(autouse=True)
def no_ray_address(monkeypatch):
    """A sweep without --address joins $RAY_ADDRESS: these tests must not reach one."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)


@pytest.fixture(scope="module")
def suite_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("suites") / "suites.toml"
    path.write_text(SUITES)
    return str(path)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again on leaving: nothing listens there


def _without_timings(board: Path) -> tuple[list[str], list[dict]]:
    """LEADERBOARD.md's table lines and leaderboard.csv's rows, timing columns removed."""
    lines = []
    for ln in (board / "LEADERBOARD.md").read_text().splitlines():
        if ln.startswith("| field "):
            drop = [i for i, c in enumerate(ln.strip("|").split("|")) if c.strip() in TIMING]
        if ln.startswith("|"):
            cells = ln.strip("|").split("|")
            lines.append("|".join(c for i, c in enumerate(cells) if i not in drop))
        else:
            lines.append(ln)
    rows = [{k: v for k, v in r.items() if not k.startswith(("ms_step", "ratio_free"))}
            for r in csv.DictReader(io.StringIO((board / "leaderboard.csv").read_text()))]
    return lines, rows


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_local_ray_workers_run_at_the_drivers_priority(local_ray, monkeypatch):
    """Ray starts workers at nice 15 unless told otherwise; a sweep's own local Ray tells it 0
    (relative: the driver's priority), keeps a user's RAY_worker_niceness, and leaves a cluster
    joined by address alone."""
    from zoo.sweep.executors import _worker_niceness

    niceness = ray.remote(lambda: os.nice(0))  # pickled by value: the worker needs no tests/
    assert ray.get(niceness.remote()) == os.nice(0)
    monkeypatch.delenv("RAY_worker_niceness", raising=False)
    with _worker_niceness(None):
        assert os.environ["RAY_worker_niceness"] == "0"
    assert "RAY_worker_niceness" not in os.environ
    with _worker_niceness("10.0.0.1:6379"):
        assert "RAY_worker_niceness" not in os.environ
    monkeypatch.setenv("RAY_worker_niceness", "7")
    with _worker_niceness(None):
        assert os.environ["RAY_worker_niceness"] == "7"
    assert os.environ["RAY_worker_niceness"] == "7"


def test_ray_gives_the_local_engines_runs_and_leaderboard(local_ray, suite_file, tmp_path, capsys):
    common = ["sweep", "--suite", "tiny", "--suite-file", suite_file, "--cpus-per-run", "1",
              "--quiet"]
    code, out, err = run(common + ["--runs", str(tmp_path / "local"), "--jobs", "2"], capsys)
    assert code == 0 and "2 run(s) done" in out, out + err
    code, out, err = run(common + ["--runs", str(tmp_path / "ray"), "--engine", "ray"], capsys)
    assert code == 0 and "2 run(s) done" in out and "0 failed" in out, out + err
    # same layout, and no marker of the driver left behind
    assert _files(tmp_path / "local") == _files(tmp_path / "ray")
    boards = []
    for engine in ("local", "ray"):
        write_leaderboard(tmp_path / engine, tmp_path / f"board-{engine}", figures=False)
        boards.append(_without_timings(tmp_path / f"board-{engine}"))
    # one row: the torch run of seed 0 is the JAX run's twin (one training), its gap column the
    # difference of the two
    assert sum(ln.startswith(" free-mlp |") for ln in boards[0][0]) == 1  # cells re-joined
    assert len(boards[0][1]) == 1 and boards[0][1][0]["gap_seeds"] == "0"
    assert boards[0] == boards[1]
    for run_dir in ("free-mlp-torch-s0", "free-mlp-jax-s0"):
        a, b = (json.loads((tmp_path / e / "tiny/gmm8" / run_dir / "config.json").read_text())
                for e in ("local", "ray"))
        assert a["sha256"] == b["sha256"], run_dir  # weights bit for bit
    # run again: everything is complete, nothing is redone
    code, out, _ = run(common + ["--runs", str(tmp_path / "ray"), "--engine", "ray"], capsys)
    assert code == 0 and "0 run(s) done, 2 skipped" in out


@pytest.mark.slow  # 29 s; resuming to bitwise the same weights is tests/test_reliability.py's
def test_killed_worker_is_retried_and_resumes_to_the_same_weights(local_ray, suite_file, tmp_path):
    """SIGKILL the Ray worker of a run just after its first training checkpoint: Ray runs the
    task again, training continues from that checkpoint, and the weights and every logged loss
    equal those of an uninterrupted run (done alongside, on the other CPU)."""
    from zoo.sweep import sweep

    results, errors = {}, []

    def go(key):
        try:
            results[key] = sweep("long", suite_file=suite_file, root=tmp_path / key,
                                 engine="ray", retries=1, show_progress=False)
        except BaseException as e:  # noqa: BLE001 - reported by the assertion below
            errors.append(e)

    threads = [threading.Thread(target=go, args=(k,)) for k in ("ref", "killed")]
    for t in threads:
        t.start()
    run_dir = tmp_path / "killed/long/gmm8/free-mlp-torch-s0"

    def checkpointed() -> bool:  # config.json names a checkpoint (written after its file)
        try:
            return "checkpoint" in json.loads((run_dir / "config.json").read_text())
        except (OSError, ValueError):
            return False

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not checkpointed():
        time.sleep(0.005)
    pid = json.loads((run_dir / "sweep.json").read_text())["pid"]  # the Ray worker's
    assert pid != os.getpid()
    os.kill(pid, signal.SIGKILL)
    for t in threads:
        t.join(timeout=240)
    assert not errors, errors
    assert [r["status"] for r in results["killed"]] == ["complete"], results
    ref, got = (json.loads((tmp_path / k / "long/gmm8/free-mlp-torch-s0/config.json").read_text())
                for k in ("ref", "killed"))
    assert got["resumed_at"] == [500] and "resumed_at" not in ref  # it did continue, from there
    assert got["sha256"]["ema.safetensors"] == ref["sha256"]["ema.safetensors"]
    assert got["sha256"] == ref["sha256"]

    def losses(k):
        path = tmp_path / k / "long/gmm8/free-mlp-torch-s0/metrics.jsonl"
        return [(r["step"], r["loss"]) for r in map(json.loads, path.read_text().splitlines())]

    assert losses("killed") == losses("ref")
    assert json.loads((run_dir / "sweep.json").read_text())["status"] == "complete"


def test_worker_lost_after_the_last_retry_is_recorded_as_failed(local_ray, suite_file, tmp_path):
    from zoo import checkpoint
    from zoo.sweep import RayExecutor, _SweepProgress, resolve

    (job,) = resolve("long", suite_file=suite_file, root=tmp_path)
    run_dir = Path(job.run_dir)
    run_dir.mkdir(parents=True)  # as a run whose worker died in training leaves it
    checkpoint.write_json(run_dir / "sweep.json", {"spec": job.spec, "status": "running"})

    def dies(job):  # a worker that dies on every attempt, like one killed by the OOM killer
        os._exit(9)

    executor = RayExecutor(root=tmp_path, address=None, cpus=1, gpus=None, retries=1,
                           max_in_flight=None, plugins=(), device="cpu")
    with executor, _SweepProgress("long", 1, 0, False) as bar:
        (r,) = executor.map(dies, [job], bar)
    assert r["status"] == "failed" and r["reason"].startswith("worker died (2 attempt(s))"), r
    assert bar.counts["failed"] == 1  # the summary counts it
    st = json.loads((run_dir / "sweep.json").read_text())
    assert st["status"] == "failed" and st["reason"] == r["reason"]
    assert not list(tmp_path.glob(".sweep-driver-*"))


def test_ray_workers_get_the_local_pools_limits(local_ray, suite_file, tmp_path, monkeypatch):
    """Threads (OpenMP, torch, XLA), no GPU for a cpu run, and the driver's working directory."""
    from zoo.sweep import RayExecutor, _SweepProgress, resolve

    monkeypatch.chdir(tmp_path)

    def seen(job):
        import torch

        env = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "CUDA_VISIBLE_DEVICES",
                                                "JAX_PLATFORMS", "XLA_FLAGS")}
        return {"label": job.label, "status": "complete", "reason": None, "wall_s": 0.0,
                "env": env, "threads": torch.get_num_threads(), "cwd": os.getcwd()}

    jobs = resolve("tiny", suite_file=suite_file, root=tmp_path / "runs")
    with RayExecutor(root=tmp_path / "runs", address=None, cpus=1, gpus=None, retries=0,
                     max_in_flight=1, plugins=(), device="cpu") as executor, \
            _SweepProgress("tiny", 2, 0, False) as bar:
        results = executor.map(seen, jobs, bar)
    assert sorted(r["label"] for r in results) == sorted(j.label for j in jobs)
    for r in results:
        assert r["threads"] == 1 and r["cwd"] == str(tmp_path), r
        assert r["env"]["OMP_NUM_THREADS"] == "1" and r["env"]["CUDA_VISIBLE_DEVICES"] == ""
        assert r["env"]["JAX_PLATFORMS"] == "cpu"
        assert "intra_op_parallelism_threads=1" in r["env"]["XLA_FLAGS"]
    assert bar.counts["complete"] == 2


def test_a_node_that_does_not_see_the_runs_directory_writes_nothing(tmp_path, suite_file):
    """Results are written by the workers into --runs, so it must be shared by every node: a
    task that does not find the driver's marker there fails at once and creates nothing."""
    from zoo.sweep import resolve
    from zoo.sweep.executors import _ray_task

    (job,) = resolve("long", suite_file=suite_file, root=tmp_path / "runs")
    r = _ray_task(lambda j: pytest.fail("ran"), job, 1, (), os.getcwd(), str(tmp_path / "runs"),
                  ".sweep-driver-0", wait_s=0.0)
    assert r["status"] == "failed" and "does not see the runs directory" in r["reason"]
    assert not (tmp_path / "runs").exists()


def test_device_is_carried_by_every_job(tmp_path, suite_file):
    from zoo.sweep import resolve, worker_env

    assert {j.device for j in resolve("tiny", suite_file=suite_file, root=tmp_path,
                                      device="cuda")} == {"cuda"}
    env = worker_env(3, hide_gpus=True)
    assert env["OMP_NUM_THREADS"] == "3" and env["CUDA_VISIBLE_DEVICES"] == ""
    assert "intra_op_parallelism_threads=3" in env["XLA_FLAGS"]
    gpu = worker_env(1, hide_gpus=False)
    assert "CUDA_VISIBLE_DEVICES" not in gpu  # Ray sets it to the run's own GPU(s)
    assert gpu["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"


BAD = {
    "unknown engine": ["--engine", "spark"],
    "unreachable address": ["--engine", "ray", "--address", "127.0.0.1:{port}"],
    "malformed address": ["--engine", "ray", "--address", "nowhere"],
    "negative cpus": ["--engine", "ray", "--cpus-per-run", "-1"],
    "zero cpus": ["--engine", "ray", "--cpus-per-run", "0"],
    "negative gpus": ["--engine", "ray", "--gpus-per-run", "-1"],
    "negative retries": ["--engine", "ray", "--retries", "-1"],
    "unknown device": ["--engine", "ray", "--device", "tpu"],
    "more cpus than any node": ["--engine", "ray", "--cpus-per-run", "64"],
    "cuda on a cluster without GPUs": ["--engine", "ray", "--device", "cuda"],
    "cuda without a GPU per run": ["--engine", "ray", "--device", "cuda", "--gpus-per-run", "0"],
    "GPUs for cpu runs": ["--engine", "ray", "--gpus-per-run", "1"],
    "address without ray": ["--address", "auto"],
    "GPUs without ray": ["--gpus-per-run", "1", "--device", "auto"],
    "retries without ray": ["--retries", "1"],
    "ray not installed": ["--engine", "ray"],
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_exit_2_nothing_written(case, local_ray, suite_file, tmp_path,
                                                      capsys, monkeypatch):
    if case == "ray not installed":
        monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    runs = tmp_path / "runs"
    args = [a.format(port=_closed_port()) for a in BAD[case]]
    capsys.readouterr()
    code, out, err = run(["sweep", "--suite", "tiny", "--suite-file", suite_file, "--runs",
                          str(runs), "--quiet", *args], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "error" in lines[0], (case, err)
    assert "Traceback" not in err
    assert not runs.exists()

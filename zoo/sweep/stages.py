"""One run of a sweep: train -> nll -> eval (samples ODE and SDE) -> check, and its sweep.json.

A job's state is ``sweep.json`` in its run directory: ``complete`` (skipped when the sweep is run
again with the same settings), ``failed`` with the stage and reason, or ``running`` (shown as
``killed`` by ``run_status`` when no process holds the run's lock any more). A stage whose
output file exists is not redone, so a killed run loses at most the stage in flight (and training
continues from its last checkpoint); a run whose recorded settings differ from the suite's is
started afresh. A per-run lock (``.sweep.lock``) keeps two sweeps on one results directory from
working on the same run at once. Everything here runs in a worker (a process of the local pool or a
Ray task); nothing here knows which.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

from zoo.checkpoint import DOWNSTREAM
from zoo.registry import ZooError
from zoo.sweep.suites import Job


def read_status(run_dir: str | Path) -> dict | None:
    """sweep.json of a run directory, or None if absent or unreadable."""
    try:
        return json.loads((Path(run_dir) / "sweep.json").read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None


KILLED_REASON = "the sweep working on it stopped (no process holds its lock)"


def run_status(run_dir: str | Path) -> dict | None:
    """sweep.json of a run as it should be shown: like ``read_status``, except that a run it calls
    ``running`` while no process holds the run's ``.sweep.lock`` is ``killed`` (with
    ``KILLED_REASON``). A live sweep holds that lock for as long as it works on the run and writes
    its last record before letting go; the kernel drops the lock of a killed worker, so nobody
    will finish such a run until a sweep is started again."""
    from zoo import checkpoint

    st = read_status(run_dir)
    if not (isinstance(st, dict) and st.get("status") == "running"):
        return st
    if checkpoint.is_locked(run_dir, ".sweep.lock"):
        return st
    st = read_status(run_dir)  # the sweep may have finished (and let go) since the first read
    if isinstance(st, dict) and st.get("status") == "running":
        st = {**st, "status": "killed", "reason": KILLED_REASON}
    return st


def is_complete(job: Job) -> bool:
    st = read_status(job.run_dir)
    return bool(st and st.get("status") == "complete" and st.get("spec") == job.spec)


def _commit() -> str:
    """The git commit of the code (with -dirty if tracked files differ), or "unknown"."""
    here = Path(__file__).resolve().parents[2]  # the repository: zoo/sweep/stages.py -> .
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, text=True,
                             capture_output=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "-uno"], cwd=here, text=True,
                               capture_output=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (sha + ("-dirty" if dirty else "")) if sha else "unknown"


# files made by the stages after training: stale once the weights change (with samples-* and
# snapshots/: zoo.checkpoint.remove_downstream deletes them all)
_DOWNSTREAM = DOWNSTREAM


def run_job(job: Job, commit: str = "unknown") -> dict:
    """Do every missing stage of one run; returns {"label", "status", "reason", "wall_s"}.

    status: complete, failed (reason = stage: error), or busy (another sweep holds the run).
    Never raises for a failing run: the failure is the result, written to sweep.json.
    """
    from zoo import checkpoint

    run_dir = Path(job.run_dir)
    try:
        with checkpoint.run_lock(run_dir, ".sweep.lock"):
            if is_complete(job):  # another sweep finished it between our listing and our lock
                return {"label": job.label, "status": "skipped", "reason": None, "wall_s": 0.0}
            return _run_stages(job, run_dir, commit)
    except checkpoint.RunBusy as e:
        return {"label": job.label, "status": "busy", "reason": str(e), "wall_s": 0.0}


def record_lost(job: Job, reason: str) -> dict:
    """The result of a run whose worker died for good (killed, out of memory, retries spent).

    Its sweep.json still says ``running`` (the worker had no chance to say otherwise): mark it
    ``failed`` with ``reason``, so the leaderboard lists why, unless another sweep holds the run
    now or the run never started. The next sweep retries it like any failed run, and training
    continues from the run's last checkpoint.
    """
    from zoo import checkpoint

    old = read_status(job.run_dir)
    if old is not None and old.get("status") == "running" and old.get("spec") == job.spec:
        try:
            with checkpoint.run_lock(job.run_dir, ".sweep.lock"):
                checkpoint.write_json(Path(job.run_dir) / "sweep.json",
                                      {**old, "status": "failed", "reason": reason[:500]})
        except checkpoint.RunBusy:
            pass  # another sweep has taken it over: its record wins
    return {"label": job.label, "status": "failed", "reason": reason, "wall_s": 0.0}


def _run_stages(job: Job, run_dir: Path, commit: str) -> dict:
    from zoo import checkpoint

    t0 = time.perf_counter()
    stage = "setup"
    record: dict = {}
    try:
        old = read_status(run_dir)
        # seconds an earlier attempt at this run spent on the stages it finished: a resumed run
        # keeps them, so its record shows what the run cost ("reused" only for outputs that no
        # sweep timed, e.g. a run trained by hand; a stage cut short counts this attempt's part)
        earlier = {}
        if old is not None and old.get("spec") != job.spec:
            # the suite changed since this run was made: nothing of it can be reused
            for p in run_dir.iterdir():
                if p.name not in (".sweep.lock", ".lock"):
                    shutil.rmtree(p) if p.is_dir() else p.unlink()
        elif old is not None and isinstance(old.get("stages"), dict):
            earlier = {k: v for k, v in old["stages"].items() if isinstance(v, (int, float))}
        record = {"suite": job.suite, "arch": job.arch, "backend": job.backend, "data": job.data,
                  "seed": job.seed, "spec": job.spec, "commit": commit, "status": "running",
                  "pid": os.getpid(), "stages": {}}
        checkpoint.write_json(run_dir / "sweep.json", record)
        for stage in _STAGE_FN:
            s0 = time.perf_counter()
            done = _STAGE_FN[stage](job, run_dir)
            record["stages"][stage] = (earlier.get(stage, "reused") if done
                                       else round(time.perf_counter() - s0, 2))
            checkpoint.write_json(run_dir / "sweep.json", record)
        record["status"] = "complete"
    except checkpoint.RunBusy:
        raise  # someone trains this run by hand: not a failure of the run
    except Exception as e:  # the run failed; the sweep goes on
        msg = " ".join(str(e).split())
        record.update(status="failed", reason=f"{stage}: {type(e).__name__}: {msg}"[:500])
    finally:
        record["wall_s"] = round(time.perf_counter() - t0, 2)
        if record:
            checkpoint.write_json(run_dir / "sweep.json", record)
    return {"label": job.label, "status": record["status"], "reason": record.get("reason"),
            "wall_s": record["wall_s"]}


def _train_stage(job: Job, run_dir: Path) -> bool:
    from zoo import checkpoint
    from zoo.train import TrainConfig, train

    t = job.spec["train"]
    device = job.device
    if device == "auto":
        device = "cuda" if job.backend == "torch" and _cuda() else "cpu"
    if job.backend != "torch":
        device = "cpu"  # JAX runs on its default device
    cfg = TrainConfig(arch=job.arch, backend=job.backend, data=job.data, seed=job.seed,
                      steps=t["steps"], batch=t["batch"], lr=float(t["lr"]),
                      t_sampling=t["t_sampling"], options=dict(t.get("options", {})),
                      device=device, eval_at=list(t.get("eval_at", [])))
    cfg.validate()  # fills in every option's default, as config.json records them
    try:
        have = checkpoint.read_config(run_dir)
    except ZooError:
        have = None
    complete = bool(have and have.get("status") == "complete")
    if complete and all(have.get(k) == v for k, v in (
            ("steps", cfg.steps), ("batch", cfg.batch), ("lr", cfg.lr),
            ("t_sampling", cfg.t_sampling), ("options", cfg.options),
            ("eval_at", cfg.eval_at))):
        try:
            checkpoint.read_weights(run_dir, "ema")
            return True
        except ZooError:
            pass  # weights missing or altered: train again
    # nothing made from other weights may stay; an unfinished run keeps the snapshots up to its
    # checkpoint (train rewrites the rest)
    checkpoint.remove_downstream(run_dir, snapshots=complete)
    # an unfinished run continues from its last checkpoint; a complete one that cannot be used
    # (other settings, altered weights) is trained again from the start
    train(cfg, out=run_dir, show_progress=False, force=complete)
    return False


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _nll_stage(job: Job, run_dir: Path) -> bool:
    from zoo.sampling import nll_run

    if (run_dir / "nll.json").is_file():
        return True
    nll_run(run_dir, n=job.spec["nll"]["n"], seed=job.seed)
    return False


def _eval_stage(job: Job, run_dir: Path) -> bool:
    from zoo.evaluate import eval_run

    if (run_dir / "eval.json").is_file():
        return True
    e = job.spec["eval"]
    eval_run(run_dir, n=e["n"], seed=job.seed, repeats=e["repeats"])
    return False


def _check_stage(job: Job, run_dir: Path) -> bool:
    from zoo.diagnostics import check_run

    if (run_dir / "check.json").is_file():
        return True
    c = job.spec["check"]
    check_run(run_dir, n_points=c["n_points"], n_loops=c["n_loops"], seed=job.seed)
    return False


def _curve_stage(job: Job, run_dir: Path) -> bool:
    from zoo.curves import curve_run

    if not job.spec["train"].get("eval_at") or (run_dir / "curve.json").is_file():
        return True
    c = job.spec["curve"]
    curve_run(run_dir, n=c["n"], seed=job.seed, repeats=job.spec["eval"]["repeats"])
    return False


_STAGE_FN = {"train": _train_stage, "nll": _nll_stage, "eval": _eval_stage,
             "check": _check_stage, "curve": _curve_stage}

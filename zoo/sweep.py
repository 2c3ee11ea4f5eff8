"""`zoo sweep`: train, sample, evaluate and check every (field x backend x dataset x seed) of a suite.

A suite is data: a dict (``SUITES`` below, or a table of a TOML file given with ``--suite-file``)
naming the fields (fnmatch patterns over the registry), datasets, seeds, backends and the settings
of each stage. Every run of a suite gets the same settings, so the leaderboard compares like with
like; a run lands in ``<root>/<suite>/<data>/<arch>-<backend>-s<seed>/``.

One run is one job, done by a worker process (``spawn``, one thread each by default, so jobs do not
fight over the cores): train -> nll -> eval (samples ODE and SDE) -> check. A job's state is
``sweep.json`` in its run directory: ``complete`` (skipped when the sweep is run again with the
same settings), ``failed`` with the stage and reason, or ``running``. A stage whose output file
exists is not redone, so a killed sweep loses at most the stages in flight; a run whose recorded
settings differ from the suite's is started afresh. A per-run lock (``.sweep.lock``) keeps two
sweeps on one results directory from working on the same run at once.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import time
import tomllib
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

from zoo.registry import BACKENDS, ZooError

RUNS_ROOT = Path("results/runs")

# Stage settings shared by the built-in suites; a suite overrides what it names.
_STAGES = {
    # power t-sampling (more small t, where the score is sharp): on gmm8 it brings free-mlp's
    # ODE samples from W2 0.37 to 0.27 against a noise floor of 0.24 (1500 steps, width 128)
    "train": {"steps": 3000, "batch": 512, "lr": 1e-3, "width": 128, "depth": 3,
              "t_sampling": "power"},
    "nll": {"n": 500},
    "eval": {"n": 2000, "repeats": 3},
    "check": {"n_points": 128, "n_loops": 16},
}

SUITES: dict[str, dict] = {
    "quick": {
        "description": "every MLP field, both backends, gmm8 and checkerboard, 1 seed "
                       "(about 10 minutes on 2 cores)",
        "fields": ["*-mlp"], "datasets": ["gmm8", "checkerboard"], "seeds": 1,
        "backends": ["torch", "jax"],
        "train": {"steps": 1500}, "eval": {"n": 1000}, "nll": {"n": 300},
    },
    "standard": {
        "description": "every MLP field on all 2-D datasets and gmm-d (d = 16), 3 seeds",
        "fields": ["*-mlp"],
        "datasets": ["gmm8", "checkerboard", "moons", "swissroll", "rings", "gmm-d"],
        "seeds": 3, "backends": ["torch", "jax"],
    },
}

SUITE_KEYS = {"description", "fields", "datasets", "seeds", "backends", *_STAGES}


@dataclass(frozen=True)
class Job:
    """One run of a suite: where it lives and every setting it is made with."""

    suite: str
    arch: str
    backend: str
    data: str
    seed: int
    run_dir: str
    spec: dict  # the stage settings (train, nll, eval, check): recorded in sweep.json

    @property
    def label(self) -> str:
        return f"{self.data}/{self.arch}-{self.backend}-s{self.seed}"


def load_suites(suite_file: str | Path | None = None) -> dict[str, dict]:
    """The built-in suites, plus (overriding by name) the tables of a TOML file.

    A TOML suite looks like ``[tiny]`` with ``fields = ["free-mlp"]``, ``datasets = ["gmm8"]``,
    ``seeds = 1`` and optional sub-tables ``[tiny.train]`` (steps, batch, lr, width, depth,
    t_sampling),
    ``[tiny.eval]`` (n, repeats), ``[tiny.nll]`` (n), ``[tiny.check]`` (n_points, n_loops).
    """
    suites = {k: dict(v) for k, v in SUITES.items()}
    if suite_file is not None:
        path = Path(suite_file)
        try:
            extra = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ZooError(f"suite file not found: {path}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ZooError(f"{path}: not a valid TOML file ({e})") from None
        for name, spec in extra.items():
            if not isinstance(spec, dict):
                raise ZooError(f"{path}: [{name}] must be a table")
            suites[name] = spec
    return suites


def resolve(name: str, *, suite_file=None, seeds: int | None = None,
            backends: list[str] | None = None, root: str | Path = RUNS_ROOT,
            plugins: tuple[str, ...] = ()) -> list[Job]:
    """The jobs of suite ``name`` (seeds/backends override the suite's); ZooError on a bad suite."""
    import zoo

    for p in plugins:
        zoo.load_plugin(p)
    suites = load_suites(suite_file)
    if name not in suites:
        raise ZooError(f"unknown suite {name!r}; choose from {', '.join(sorted(suites))}")
    s = suites[name]
    bad = sorted(set(s) - SUITE_KEYS)
    if bad:
        raise ZooError(f"suite {name!r}: unknown key(s) {', '.join(bad)}")
    for key in ("fields", "datasets"):
        if not (isinstance(s.get(key), list) and s[key] and all(isinstance(v, str) for v in s[key])):
            raise ZooError(f"suite {name!r}: {key} must be a non-empty list of names")
    n_seeds = s.get("seeds", 1) if seeds is None else seeds
    if not (isinstance(n_seeds, int) and n_seeds >= 1):
        raise ZooError(f"suite {name!r}: seeds must be a positive integer, got {n_seeds!r}")
    bks = list(backends or s.get("backends", list(BACKENDS)))
    if not bks or any(b not in BACKENDS for b in bks):
        raise ZooError(f"backends must be among {', '.join(BACKENDS)}, got {bks}")
    for d in s["datasets"]:
        try:
            zoo.get_dataset(d)
        except ValueError as e:
            raise ZooError(f"suite {name!r}: {e}") from None
    spec = {}
    for stage, defaults in _STAGES.items():
        given = s.get(stage, {})
        if not isinstance(given, dict):
            raise ZooError(f"suite {name!r}: [{stage}] must be a table")
        unknown = sorted(set(given) - set(defaults))
        if unknown:
            raise ZooError(f"suite {name!r}: unknown {stage} setting(s) {', '.join(unknown)}")
        spec[stage] = {**defaults, **given}
        for k, v in spec[stage].items():
            if k == "t_sampling":
                if v not in ("uniform", "power"):
                    raise ZooError(f"suite {name!r}: train.t_sampling must be uniform or power")
                continue
            ok = (v > 0 and math.isfinite(v)) if isinstance(v, float) else (
                isinstance(v, int) and v > 0)
            if not ok:
                raise ZooError(f"suite {name!r}: {stage}.{k} must be a positive number, got {v!r}")
    if spec["eval"]["repeats"] < 2:
        raise ZooError(f"suite {name!r}: eval.repeats must be >= 2 (a floor needs a spread)")
    archs = []
    for pattern in s["fields"]:
        hits = [n for n in zoo.list_fields(pattern) if any(
            i.trainable for i in zoo.entries(n) if i.name == n)]
        if not hits:
            raise ZooError(f"suite {name!r}: no trainable field matches {pattern!r}")
        archs += [h for h in hits if h not in archs]
    jobs = []
    for data in s["datasets"]:
        for arch in archs:
            for backend in bks:
                if backend not in zoo.registry.backends_of(arch):
                    continue
                for seed in range(n_seeds):
                    run_dir = Path(root) / name / data / f"{arch}-{backend}-s{seed}"
                    jobs.append(Job(name, arch, backend, data, seed, str(run_dir), spec))
    if not jobs:
        raise ZooError(f"suite {name!r} has no runs for backends {bks}")
    return jobs


def read_status(run_dir: str | Path) -> dict | None:
    """sweep.json of a run directory, or None if absent or unreadable."""
    try:
        return json.loads((Path(run_dir) / "sweep.json").read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def is_complete(job: Job) -> bool:
    st = read_status(job.run_dir)
    return bool(st and st.get("status") == "complete" and st.get("spec") == job.spec)


def _commit() -> str:
    """The git commit of the code (with -dirty if tracked files differ), or "unknown"."""
    here = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, text=True,
                             capture_output=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "-uno"], cwd=here, text=True,
                               capture_output=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (sha + ("-dirty" if dirty else "")) if sha else "unknown"


# files made by the stages after training: stale once the weights change
_DOWNSTREAM = ("nll.json", "eval.json", "check.json", "check-field.png")


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


def _run_stages(job: Job, run_dir: Path, commit: str) -> dict:
    from zoo import checkpoint

    t0 = time.perf_counter()
    stage = "setup"
    record: dict = {}
    try:
        old = read_status(run_dir)
        if old is not None and old.get("spec") != job.spec:
            # the suite changed since this run was made: nothing of it can be reused
            for p in run_dir.iterdir():
                if p.name not in (".sweep.lock", ".lock"):
                    shutil.rmtree(p) if p.is_dir() else p.unlink()
        record = {"suite": job.suite, "arch": job.arch, "backend": job.backend, "data": job.data,
                  "seed": job.seed, "spec": job.spec, "commit": commit, "status": "running",
                  "pid": os.getpid(), "stages": {}}
        checkpoint.write_json(run_dir / "sweep.json", record)
        for stage in ("train", "nll", "eval", "check"):
            s0 = time.perf_counter()
            done = _STAGE_FN[stage](job, run_dir)
            record["stages"][stage] = "reused" if done else round(time.perf_counter() - s0, 2)
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
    cfg = TrainConfig(arch=job.arch, backend=job.backend, data=job.data, seed=job.seed,
                      steps=t["steps"], batch=t["batch"], lr=float(t["lr"]),
                      t_sampling=t["t_sampling"],
                      options={"width": t["width"], "depth": t["depth"], "act": "silu"})
    try:
        have = checkpoint.read_config(run_dir)
    except ZooError:
        have = None
    complete = bool(have and have.get("status") == "complete")
    if complete and all(have.get(k) == v for k, v in (
            ("steps", cfg.steps), ("batch", cfg.batch), ("lr", cfg.lr),
            ("t_sampling", cfg.t_sampling), ("options", cfg.options))):
        try:
            checkpoint.read_weights(run_dir, "ema")
            return True
        except ZooError:
            pass  # weights missing or altered: train again
    for name in _DOWNSTREAM:
        (run_dir / name).unlink(missing_ok=True)
    for p in run_dir.glob("samples-*"):
        p.unlink()
    # an unfinished run continues from its last checkpoint; a complete one that cannot be used
    # (other settings, altered weights) is trained again from the start
    train(cfg, out=run_dir, show_progress=False, force=complete)
    return False


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


_STAGE_FN = {"train": _train_stage, "nll": _nll_stage, "eval": _eval_stage,
             "check": _check_stage}


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this worker when the sweep process dies (however it dies), so a
    killed sweep leaves no orphan writing into run directories; elsewhere, nothing to do."""
    import ctypes
    import signal

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _worker_init(threads: int, plugins: tuple[str, ...], cwd: str) -> None:
    """Limit each worker's threads before torch or JAX starts (jobs run side by side)."""
    os.chdir(cwd)
    _die_with_parent()
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen="
                               f"{'true' if threads > 1 else 'false'} "
                               f"intra_op_parallelism_threads={threads}").strip()
    import torch

    torch.set_num_threads(threads)
    import zoo

    for p in plugins:
        zoo.load_plugin(p)


def sweep(name: str, *, suite_file=None, seeds: int | None = None,
          backends: list[str] | None = None, jobs: int | None = None,
          root: str | Path = RUNS_ROOT, plugins: tuple[str, ...] = (),
          show_progress: bool = True) -> list[dict]:
    """Run every job of a suite not yet complete, ``jobs`` at a time; returns one result per job.

    Finished runs (sweep.json complete, same settings) are skipped. Results: {"label", "status"
    (complete, skipped, failed, busy), "reason", "wall_s"}.
    """
    todo_all = resolve(name, suite_file=suite_file, seeds=seeds, backends=backends, root=root,
                       plugins=plugins)
    n_jobs = jobs or os.cpu_count() or 1
    if n_jobs < 1:
        raise ZooError(f"jobs must be positive, got {n_jobs}")
    results = [{"label": j.label, "status": "skipped", "reason": None, "wall_s": 0.0}
               for j in todo_all if is_complete(j)]
    todo = [j for j in todo_all if not is_complete(j)]
    threads = max(1, (os.cpu_count() or 1) // n_jobs)
    commit = _commit()
    plugin_paths = tuple(str(Path(p).resolve()) if p.endswith(".py") else p for p in plugins)
    with _SweepProgress(name, len(todo_all), len(results), show_progress) as bar:
        if todo:
            ctx = get_context("spawn")  # JAX and torch do not survive fork
            with ProcessPoolExecutor(max_workers=min(n_jobs, len(todo)), mp_context=ctx,
                                     initializer=_worker_init,
                                     initargs=(threads, plugin_paths, os.getcwd())) as pool:
                pending = {pool.submit(run_job, j, commit): j for j in todo}
                while pending:
                    done, _ = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
                    for f in done:
                        job = pending.pop(f)
                        try:
                            r = f.result()
                        except Exception as e:  # a worker that died (killed, out of memory)
                            r = {"label": job.label, "status": "failed",
                                 "reason": f"worker died: {type(e).__name__}: {e}", "wall_s": 0.0}
                        results.append(r)
                        bar.done(r)
                    bar.running(sum(f.running() for f in pending))
    return results


class _SweepProgress:
    """Overall progress: done / running / failed and an ETA (rich), or nothing."""

    def __init__(self, name: str, total: int, skipped: int, show: bool) -> None:
        self.name, self.total, self.show = name, total, show
        self.counts = {"complete": 0, "skipped": skipped, "failed": 0, "busy": 0, "running": 0}

    def _info(self) -> str:
        c = self.counts
        return (f"done {c['complete'] + c['skipped']} (skipped {c['skipped']})  running "
                f"{c['running']}  failed {c['failed']}" + (f"  busy {c['busy']}" if c["busy"] else ""))

    def __enter__(self):
        if self.show:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(TextColumn(f"sweep {self.name}"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                                TextColumn("ETA"), TimeRemainingColumn())
            self.bar.__enter__()
            self.task = self.bar.add_task("", total=self.total, info=self._info())
            self.bar.update(self.task, completed=self.counts["skipped"])
        return self

    def done(self, r: dict) -> None:
        self.counts[r["status"]] = self.counts.get(r["status"], 0) + 1
        if self.show:
            if r["status"] in ("failed", "busy"):
                self.bar.console.print(f"[red]{r['status']}[/red] {r['label']}: {r['reason']}")
            self.bar.update(self.task, advance=1, info=self._info())

    def running(self, k: int) -> None:
        self.counts["running"] = k
        if self.show:
            self.bar.update(self.task, info=self._info())

    def __exit__(self, *exc):
        if self.show:
            self.bar.__exit__(*exc)
        return False

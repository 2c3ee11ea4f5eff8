"""``sweep()``: every run of a suite not yet complete, on the engine asked for, with a progress bar."""

from __future__ import annotations

import functools
from pathlib import Path

from zoo.sweep.executors import make_executor
from zoo.sweep.stages import _commit, is_complete, run_job
from zoo.sweep.suites import RUNS_ROOT, resolve, select


def sweep(name: str, *, suite_file=None, seeds: int | None = None,
          backends: list[str] | None = None, jobs: int | None = None,
          root: str | Path = RUNS_ROOT, plugins: tuple[str, ...] = (),
          show_progress: bool = True, engine: str = "local", address: str | None = None,
          cpus_per_run: float | None = None, gpus_per_run: float | None = None,
          retries: int | None = None, device: str = "cpu",
          only: tuple[str, ...] = ()) -> list[dict]:
    """Run every job of a suite not yet complete; returns one result per job.

    ``only``: fnmatch patterns over the runs' labels (``DATA/ARCH-BACKEND-sSEED``): run just
    those, in the patterns' order (``suites.select``).

    Finished runs (sweep.json complete, same settings) are skipped. Results: {"label", "status"
    (complete, skipped, failed, busy), "reason", "wall_s"}. engine "local": ``jobs`` processes
    on this machine; "ray": one Ray task per run (``executors.RayExecutor``; ``address`` joins a
    cluster). Every check, and the connection to Ray, happens before anything is written: a bad
    setting is a ZooError with nothing on disk.
    """
    # absolute before anything is shipped: a worker's working directory (a spawned process, a
    # Ray worker on another node) is not the driver's
    root = Path(root).absolute()
    plugin_paths = tuple(str(Path(p).resolve()) if p.endswith(".py") else p for p in plugins)
    todo_all = select(resolve(name, suite_file=suite_file, seeds=seeds, backends=backends,
                              root=root, plugins=plugins, device=device), only)
    with make_executor(engine, root=root, jobs=jobs, address=address, cpus_per_run=cpus_per_run,
                       gpus_per_run=gpus_per_run, retries=retries, plugins=plugin_paths,
                       device=device) as executor:
        results = [{"label": j.label, "status": "skipped", "reason": None, "wall_s": 0.0}
                   for j in todo_all if is_complete(j)]
        todo = [j for j in todo_all if not is_complete(j)]
        with _SweepProgress(name, len(todo_all), len(results), show_progress) as bar:
            if todo:
                results += executor.map(functools.partial(run_job, commit=_commit()), todo, bar)
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

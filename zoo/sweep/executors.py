"""Where the runs of a sweep are done: a local process pool, or Ray tasks, behind one interface.

``executor.map(fn, jobs, progress)`` calls ``fn(job)`` for every job somewhere else (a spawned
process here, a Ray worker on any node of a cluster) and returns one result dict per job, telling
``progress`` as runs finish. ``fn`` is ``stages.run_job`` with the commit bound: the stages, the
per-run lock, resume and the failure records are the same whatever the engine; only where the
process runs differs. A job whose worker dies (killed, out of memory) becomes a failed result,
and its sweep.json is marked failed with the reason (``stages.record_lost``).

Workers get the same limits from both engines (``worker_env``, ``_prepare_worker``): a fixed
number of threads for torch, OpenMP and XLA (runs side by side must not fight over the cores,
and the thread count is part of what makes weights bitwise reproducible), the driver's plugins
and working directory, and no GPU unless the run has one.

Ray (``RayExecutor``): every run is one task with ``num_cpus``/``num_gpus`` resources, retried
``retries`` times when its worker dies (a retried run continues from its last training
checkpoint: the stages resume whatever a run directory holds). Results are written by the workers
straight into the runs directory, so that directory must be one path that every node sees (a
shared filesystem): the driver drops a marker file into it, and a task on a node that does not
see the marker fails at once with that reason instead of writing its run somewhere nobody reads.
"""

from __future__ import annotations

import contextlib
import math
import os
import secrets
import socket
import sys
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path
from typing import Protocol

from zoo.registry import ZooError
from zoo.sweep.stages import record_lost
from zoo.sweep.suites import DEVICES, Job

ENGINES = ("local", "ray")
RAY_RETRIES = 2  # default tries after the first when a Ray worker dies


class Progress(Protocol):
    """What an executor tells as it goes (``runner._SweepProgress``)."""

    def done(self, result: dict) -> None: ...

    def running(self, k: int) -> None: ...


def worker_env(threads: int, hide_gpus: bool) -> dict[str, str]:
    """Environment variables a worker needs before torch or JAX starts.

    threads: OpenMP's and XLA's CPU thread pools. hide_gpus: neither torch nor JAX sees a GPU
    (a cpu run on a GPU node must not take GPU memory nor land on a GPU by default).
    """
    xla = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen="
           f"{'true' if threads > 1 else 'false'} intra_op_parallelism_threads={threads}").strip()
    env = {"OMP_NUM_THREADS": str(threads), "XLA_FLAGS": xla}
    if hide_gpus:
        env.update(CUDA_VISIBLE_DEVICES="", JAX_PLATFORMS="cpu")
    else:  # JAX would take 75 % of a GPU's memory up front: runs sharing a GPU would not fit
        env.update(XLA_PYTHON_CLIENT_PREALLOCATE="false")
    return env


def preload_code() -> list[str]:
    """Import every module of fields, solvers and zoo now; returns their names.

    A worker lives for the whole sweep, and modules imported lazily inside functions would
    otherwise be read from the tree as it is when first needed: a source edit during a sweep
    then gives a worker new modules beside old ones (it happened: a new solver returning three
    values under an old caller expecting two failed a run after 4000 s of training). Loaded up
    front, a worker runs the code of the moment it started. Optional extras (Ray) are skipped,
    and so are ``__main__`` modules: importing one runs its program.
    """
    import importlib
    import pkgutil

    names = []
    for pkg in ("fields", "solvers", "zoo"):
        for info in pkgutil.walk_packages(importlib.import_module(pkg).__path__, pkg + "."):
            if info.name.rpartition(".")[2] == "__main__":
                continue  # a program (`python -m zoo.cli`), not a library: importing runs it
            try:
                importlib.import_module(info.name)
            except ImportError:
                continue
            names.append(info.name)
    return names


def _prepare_worker(threads: int, plugins: tuple[str, ...], cwd: str) -> None:
    """Threads, working directory, plugins and code of a worker (idempotent: Ray reuses
    workers)."""
    if os.path.isdir(cwd):  # a node of a cluster may not have the driver's directory
        os.chdir(cwd)
    import torch

    torch.set_num_threads(threads)
    import zoo

    preload_code()
    for p in plugins:
        zoo.load_plugin(p)


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this worker when the sweep process dies (however it dies), so a
    killed sweep leaves no orphan writing into run directories; elsewhere, nothing to do."""
    import ctypes
    import signal

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _worker_init(env: dict[str, str], threads: int, plugins: tuple[str, ...], cwd: str) -> None:
    """Initializer of a local pool worker: limits first, before torch or JAX is imported."""
    _die_with_parent()
    os.environ.update(env)
    _prepare_worker(threads, plugins, cwd)


def _one_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {' '.join(str(e).split())}"[:400]


class Executor:
    """Runs jobs somewhere; a context manager (``close`` gives back what it holds)."""

    name = "executor"

    def map(self, fn: Callable[[Job], dict], jobs: list[Job], progress: Progress) -> list[dict]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def oversubscription_hint(jobs: int, threads: int, load: float, cores: int) -> str | None:
    """One line when ``jobs`` workers of ``threads`` threads on a machine already running
    ``load`` (its 1-minute load average) would ask for more threads than ``cores``, else None.

    Oversubscribed thread pools spin: two sweeps of --jobs 1 side by side on 2 cores ran 2
    threads each, and a torch DiT step took 4.5 s instead of 0.13 s.
    """
    if threads <= 1 or load + jobs * threads <= cores + 0.5:
        return None
    return (f"zoo sweep: this machine is busy (load {load:.1f} on {cores} cores) and each of "
            f"{jobs} run(s) will take {threads} threads; another sweep beside this one? Then "
            f"give each --cpus-per-run so that their threads fit the cores (oversubscribed "
            f"thread pools can run 10-30x slower).")


class LocalExecutor(Executor):
    """A pool of ``jobs`` spawned processes on this machine, ``threads`` threads each."""

    name = "local"

    def __init__(self, jobs: int, threads: int, plugins: tuple[str, ...], device: str) -> None:
        self.jobs, self.threads, self.plugins, self.device = jobs, threads, plugins, device

    def map(self, fn, jobs, progress):
        results = []
        hint = oversubscription_hint(min(self.jobs, len(jobs)), int(self.threads),
                                     os.getloadavg()[0], os.cpu_count() or 1)
        if hint:
            print(hint, file=sys.stderr)
        env = worker_env(self.threads, hide_gpus=self.device == "cpu")
        ctx = get_context("spawn")  # JAX and torch do not survive fork
        with ProcessPoolExecutor(max_workers=min(self.jobs, len(jobs)), mp_context=ctx,
                                 initializer=_worker_init,
                                 initargs=(env, self.threads, self.plugins, os.getcwd())) as pool:
            pending = {pool.submit(fn, j): j for j in jobs}
            while pending:
                done, _ = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
                for f in done:
                    job = pending.pop(f)
                    try:
                        r = f.result()
                    except Exception as e:  # a worker that died (killed, out of memory)
                        r = record_lost(job, f"worker died: {_one_line(e)}")
                    results.append(r)
                    progress.done(r)
                progress.running(sum(f.running() for f in pending))
        return results


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ZooError("--engine ray needs Ray: pip install -e '.[ray]' in the zoo's clone "
                       "(or pip install 'ray[client]>=2.9')") from None
    return ray


def _check_reachable(address: str) -> None:
    """ZooError unless something listens at HOST:PORT (or ray://HOST:PORT); "auto" is left to Ray.

    A TCP connect first, because ray.init retries an unreachable address for a long while
    before it gives up, and says so in many lines.
    """
    if address == "auto":
        return
    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if not (sep and host and port.isdigit()):
        raise ZooError(f"--address {address!r}: expected auto, HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as e:
        raise ZooError(f"cannot reach a Ray cluster at {address}: "
                       f"{e.strerror or type(e).__name__}") from None


_MARKER = ".sweep-driver-{}"


def _sees(path: Path, wait_s: float) -> bool:
    """Whether ``path`` exists, asking again for ``wait_s`` seconds (a shared filesystem may
    show a file created on another node a moment late)."""
    deadline = time.monotonic() + wait_s
    while not path.is_file():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.5)
    return True


def _ray_task(fn: Callable[[Job], dict], job: Job, threads: int, plugins: tuple[str, ...],
              cwd: str, root: str, marker: str, wait_s: float = 10.0) -> dict:
    """One run as a Ray task: check the runs directory is the driver's, set up, run."""
    if not _sees(Path(root) / marker, wait_s):
        # this node does not see the driver's runs directory: writing the run here would put it
        # where neither the driver nor the leaderboard looks
        return {"label": job.label, "status": "failed", "wall_s": 0.0,
                "reason": f"setup: node {socket.gethostname()} does not see the runs directory "
                          f"{root} (--runs must be on a filesystem shared by every node)"}
    _prepare_worker(threads, plugins, cwd)
    return fn(job)


@contextlib.contextmanager
def _worker_niceness(address: str | None):
    """While a local Ray starts: its workers at the driver's priority, not Ray's default nice 15.

    The runs are the work the user asked for; at nice 15 any other process on the machine
    (a local sweep, a build) takes their CPU first (measured: a run's imports 3-4x slower beside
    two busy nice-10 sweeps). A value the user set in RAY_worker_niceness is kept; a cluster
    joined by address keeps its own setting.
    """
    if address is not None or "RAY_worker_niceness" in os.environ:
        yield
        return
    os.environ["RAY_worker_niceness"] = "0"
    try:
        yield
    finally:
        os.environ.pop("RAY_worker_niceness", None)


class RayExecutor(Executor):
    """Every job one Ray task (``cpus``/``gpus`` each, ``retries`` tries more if its worker dies).

    address None starts a local Ray instance (stopped again by ``close``) unless RAY_ADDRESS
    names a cluster; "auto", "HOST:PORT" or "ray://HOST:PORT" joins a running cluster. A process
    that is already connected (``ray.init`` called by a notebook, or the tests) keeps its
    connection. At most ``max_in_flight`` tasks are submitted at once (None: all, Ray queues them).
    """

    name = "ray"

    def __init__(self, *, root: Path, address: str | None, cpus: float, gpus: float | None,
                 retries: int, max_in_flight: int | None, plugins: tuple[str, ...],
                 device: str) -> None:
        ray = _import_ray()
        # RAY_ADDRESS is an explicit choice (`ray job submit` sets it for the driver); Ray's own
        # fallback, the last cluster started on this machine (/tmp/ray/ray_current_cluster), is
        # not: it may be stale or someone else's, so without an address we start our own
        address = address or os.environ.get("RAY_ADDRESS") or None
        if address is not None:
            _check_reachable(address)
        self.owns = not ray.is_initialized()
        if self.owns:
            import logging

            try:
                with _worker_niceness(address):
                    ray.init(address=address or "local", include_dashboard=False,
                             logging_level=logging.WARNING)
            except Exception as e:  # ConnectionError, RuntimeError, missing ray[client], ...
                where = f"join the Ray cluster at {address}" if address else "start a local Ray"
                raise ZooError(f"cannot {where}: {_one_line(e)}") from None
        try:
            if gpus is None:  # cuda: one each; auto: one each if the cluster has GPUs at all
                gpus = 1.0 if device == "cuda" or (
                    device == "auto" and ray.cluster_resources().get("GPU", 0) > 0) else 0.0
            if device == "cuda" and gpus <= 0:
                raise ZooError("--device cuda with --engine ray needs --gpus-per-run above 0")
            self._check_fits(ray, cpus, gpus)
        except BaseException:
            self.close()
            raise
        self.ray, self.root, self.cpus, self.gpus = ray, root, cpus, gpus
        self.retries, self.max_in_flight, self.plugins = retries, max_in_flight, plugins
        self.threads = max(1, int(cpus))

    @staticmethod
    def _check_fits(ray, cpus: float, gpus: float) -> None:
        """ZooError if no node could ever hold one run: Ray would wait for it forever."""
        nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
        if not any(n.get("CPU", 0) >= cpus and n.get("GPU", 0) >= gpus for n in nodes):
            most = max(((n.get("CPU", 0), n.get("GPU", 0)) for n in nodes), default=(0, 0))
            raise ZooError(f"no node of the Ray cluster can hold a run of {cpus:g} CPU(s) and "
                           f"{gpus:g} GPU(s) (the largest has {most[0]:g} and {most[1]:g})")

    def _capacity(self) -> int:
        """How many runs the cluster can hold at once now (for the progress bar's "running")."""
        res = self.ray.cluster_resources()
        cap = res.get("CPU", 0) / self.cpus
        if self.gpus > 0:
            cap = min(cap, res.get("GPU", 0) / self.gpus)
        return max(1, math.floor(cap))

    def map(self, fn, jobs, progress):
        ray = self.ray
        # A GPU run: Ray sets CUDA_VISIBLE_DEVICES to the GPU(s) it was given, so it sees only
        # those. max_retries covers a worker that died; an exception raised by a run is a bug,
        # not a lost worker, and trying it again would only repeat it (retry_exceptions=False).
        env = worker_env(self.threads, hide_gpus=self.gpus <= 0)
        task = ray.remote(_ray_task).options(
            num_cpus=self.cpus, num_gpus=self.gpus, max_retries=self.retries,
            retry_exceptions=False, runtime_env={"env_vars": env})
        self.root.mkdir(parents=True, exist_ok=True)
        marker = _MARKER.format(secrets.token_hex(8))
        (self.root / marker).touch()
        queue, in_flight, results = list(jobs), {}, []
        limit = self.max_in_flight or len(jobs)
        try:
            while queue or in_flight:
                while queue and len(in_flight) < limit:
                    job = queue.pop(0)
                    ref = task.remote(fn, job, self.threads, self.plugins, os.getcwd(),
                                      str(self.root), marker)
                    in_flight[ref] = job
                ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=1.0)
                for ref in ready:
                    job = in_flight.pop(ref)
                    try:
                        r = ray.get(ref)
                    except ray.exceptions.RayTaskError as e:  # the task raised
                        r = record_lost(job, f"worker error: {_one_line(e.cause or e)}")
                    except ray.exceptions.RayError as e:  # the worker or its node died, for good
                        r = record_lost(job, f"worker died ({1 + self.retries} attempt(s)): "
                                             f"{_one_line(e)}")
                    results.append(r)
                    progress.done(r)
                progress.running(min(len(in_flight), self._capacity()))
        finally:
            for ref in in_flight:  # interrupted: runs of this sweep must not go on without it
                ray.cancel(ref, force=True)
            (self.root / marker).unlink(missing_ok=True)
        return results

    def close(self) -> None:
        if self.owns:
            import ray

            ray.shutdown()
            self.owns = False


def make_executor(engine: str, *, root: Path, jobs: int | None = None,
                  address: str | None = None, cpus_per_run: float | None = None,
                  gpus_per_run: float | None = None, retries: int | None = None,
                  plugins: tuple[str, ...] = (), device: str = "cpu") -> Executor:
    """The executor of ``engine``, checked and connected; ZooError (nothing written) otherwise.

    local: ``jobs`` processes (default one per core), ``cpus_per_run`` threads each (default:
    the cores shared out among the jobs); address, gpus_per_run and retries are Ray's only.
    ray: see ``RayExecutor``; ``jobs`` caps the runs in flight; cpus_per_run defaults to 1.
    """
    if engine not in ENGINES:
        raise ZooError(f"unknown engine {engine!r}; choose from {', '.join(ENGINES)}")
    if device not in DEVICES:
        raise ZooError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    if jobs is not None and not (isinstance(jobs, int) and jobs >= 1):
        raise ZooError(f"jobs must be positive, got {jobs}")
    if cpus_per_run is not None and not (math.isfinite(cpus_per_run) and cpus_per_run > 0):
        raise ZooError(f"--cpus-per-run must be a positive number, got {cpus_per_run}")
    if gpus_per_run is not None and not (math.isfinite(gpus_per_run) and gpus_per_run >= 0):
        raise ZooError(f"--gpus-per-run must be a number >= 0, got {gpus_per_run}")
    if retries is not None and not (isinstance(retries, int) and retries >= 0):
        raise ZooError(f"--retries must be an integer >= 0, got {retries}")
    if device == "cpu" and gpus_per_run:
        raise ZooError(f"--gpus-per-run {gpus_per_run:g} with --device cpu: the runs would hold "
                       "GPUs they never use")
    if engine == "local":
        for flag, value in (("--address", address), ("--gpus-per-run", gpus_per_run),
                            ("--retries", retries)):
            if value is not None:
                raise ZooError(f"{flag} needs --engine ray")
        if device == "cuda":
            import torch

            if not torch.cuda.is_available():
                raise ZooError("--device cuda: no CUDA GPU is visible on this machine")
        n_jobs = jobs or os.cpu_count() or 1
        threads = (max(1, int(cpus_per_run)) if cpus_per_run
                   else max(1, (os.cpu_count() or 1) // n_jobs))
        return LocalExecutor(n_jobs, threads, plugins, device)
    return RayExecutor(root=root, address=address, cpus=cpus_per_run or 1.0, gpus=gpus_per_run,
                       retries=RAY_RETRIES if retries is None else retries, max_in_flight=jobs,
                       plugins=plugins, device=device)

"""`zoo sweep`: train, sample, evaluate and check every (field x backend x dataset x seed) of a suite.

A suite is data (``suites``): the fields (fnmatch patterns over the registry), datasets, seeds,
backends and the settings of each stage, the same for every run, so the leaderboard compares like
with like; a run lands in ``<root>/<suite>/<data>/<arch>-<backend>-s<seed>/``.

One run is one job (``stages``): train -> nll -> eval (samples ODE and SDE) -> check, recorded in
the run's ``sweep.json`` (complete, failed with stage and reason, or running), resumable stage by
stage, and locked (``.sweep.lock``) so two sweeps never work on one run at once.

Jobs are done by an executor (``executors``): a local pool of spawned processes (one thread each
by default, so jobs do not fight over the cores), or Ray tasks on a laptop or a cluster, with the
CPUs and GPUs each run asks for and retries when a worker dies. ``runner.sweep`` ties them up.
"""

from zoo.sweep.executors import (
    ENGINES,
    Executor,
    LocalExecutor,
    RayExecutor,
    make_executor,
    worker_env,
)
from zoo.sweep.runner import _SweepProgress, sweep
from zoo.sweep.stages import (
    _DOWNSTREAM,
    _STAGE_FN,
    _commit,
    _train_stage,
    is_complete,
    read_status,
    record_lost,
    run_job,
)
from zoo.sweep.suites import (
    DEVICES,
    RUNS_ROOT,
    SUITE_KEYS,
    SUITES,
    Job,
    load_suites,
    resolve,
    select,
)

__all__ = [
    "DEVICES", "ENGINES", "RUNS_ROOT", "SUITES", "SUITE_KEYS", "Executor", "Job", "LocalExecutor",
    "RayExecutor", "_DOWNSTREAM", "_STAGE_FN", "_SweepProgress", "_commit", "_train_stage",
    "is_complete", "load_suites", "make_executor", "read_status", "record_lost", "resolve",
    "run_job", "select", "sweep", "worker_env",
]

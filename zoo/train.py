"""The one training protocol every field goes through, in either backend.

Denoising score matching  E_{t ~ U[t_min, T], x_0, eps} ||sigma_t s(alpha_t x_0 + sigma_t eps, t) + eps||^2
(plus the field's own penalty, if its registry entry names one: qc) with Adam and an EMA of the
weights. Initial weights, data batches, times and noise all come from
one numpy generator seeded by ``seed``, so a torch run and a JAX run see the same numbers.

Reliability (``train``): a run directory is locked while it trains (``checkpoint.run_lock``);
every ``checkpoint_every`` steps the whole training state (weights, EMA, Adam moments and counts,
the generator's state, the loss accumulator) goes to one sha256-recorded safetensors file, so a run
killed at any point continues from there to bitwise the same weights; the first non-finite loss or
gradient norm stops the run, which is marked failed and keeps its last good checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from zoo import backends, checkpoint
from zoo.api import create, make_schedule
from zoo.data import Dataset, check_run_autoencoder, get_dataset
from zoo.registry import BACKENDS, ZooError, get_info, resolve_options

RUNS_ROOT = Path("results/runs")
# backbones whose torch runs compile under compile="auto": there torch.compile makes a step
# 1.3x (free-mlp) to 2.0x (helmholtz-mlp, stein-mlp) faster (width 128, batch 512;
# results/bench/train-mlp-compile.json) for 2-30 s of compiling. The images suite's UNet
# (16 channels, batch 64) gains 1.22-1.27x per step (energy, helmholtz, qc, stein: medians of
# per-round eager / compiled ratios), which puts torch level with JAX, but compiling a head takes
# 6-13 minutes (on a loaded 2-core host), about what 6000 steps (the suite's UNet runs) save: off
# there, `--compile on` for longer runs. And only runs of COMPILE_MIN_STEPS or more: the time
# saved pays for the compiling about twice over.
COMPILE_AUTO = ("mlp",)
COMPILE_MIN_STEPS = 5000


@dataclass
class TrainConfig:
    arch: str  # registry name, e.g. "free-mlp"
    backend: str = "torch"  # "torch" or "jax"
    data: str = "gmm8"  # dataset name (zoo.data)
    steps: int = 2000  # optimiser steps
    seed: int = 0  # seeds the one numpy generator: weights, batches, t, eps
    batch: int = 512
    lr: float = 1e-3  # Adam, betas (0.9, 0.999), eps 1e-8 in both backends
    ema: float = 0.999  # EMA decay of the weights
    dtype: str = "float32"  # or "float64": the whole run in double precision
    schedule: str = "ou"  # "ou" (beta = 2, the seed paper's OU) or "vp-linear"
    t_min: float = 1e-3  # times are drawn from U[t_min, T]
    T: float = 5.0  # alpha_T = e^-5 under "ou": x_T is N(0, I) to within 0.7 %
    t_sampling: str = "uniform"  # "uniform": t ~ U[t_min, T]; "power": t = (a + u (b - a))^rho,
    # a = t_min^(1/rho), b = T^(1/rho), u ~ U[0, 1]: more small t, where the score is hard
    t_rho: float = 2.0
    log_every: int = 50  # steps per metrics.jsonl line
    checkpoint_every: int = 500  # steps per crash-safe checkpoint (where a killed run resumes);
    # one of the default free-mlp (2.2 MB of state, fsync included) takes 15-30 ms, one or two
    # steps' time, so 500 costs well under 1 % and loses at most 500 steps to a crash
    options: dict = field(default_factory=dict)  # factory options (`zoo list`, the field's
    # backbone table): width, depth, ... for mlp; channels, mults, ... for unet; every option is
    # filled in with its default by validate(), so config.json names all of them
    device: str = "cpu"  # torch fields: "cpu" or "cuda" (JAX uses its default device)
    compile: str = "auto"  # torch fields: "on" takes each step's loss and gradients from one
    # torch.compile'd graph (the same numbers as eager to rounding), "off" runs eager autograd,
    # "auto" compiles MLP runs of 5000 steps or more (1.3-2.0x faster per step; COMPILE_AUTO)
    eval_at: list = field(default_factory=list)  # steps (< steps) whose EMA weights are kept in
    # snapshots/ema-<step>.safetensors, for a learning curve (`zoo curve`); the final EMA weights
    # are the curve's last point
    plugins: list = field(default_factory=list)  # modules that register the field (re-imported by load)
    penalty: dict = field(default_factory=dict)  # overrides of the field's training penalty, e.g. lambda

    def penalty_spec(self) -> dict | None:
        """The field's training penalty (registry defaults updated by ``penalty``), or None."""
        info = get_info(self.arch, self.backend)
        if info.penalty is None:
            if self.penalty:
                raise ZooError(f"field {self.arch!r} has no training penalty to set")
            return None
        spec = {**info.penalty, **self.penalty}
        if spec.get("kind") == "qc":
            lam, probes = spec.get("lambda"), spec.get("probes")
            if not (isinstance(lam, int | float) and math.isfinite(lam) and lam >= 0):
                raise ZooError(f"qc lambda must be a finite number >= 0, got {lam!r}")
            if not (isinstance(probes, int) and probes > 0):
                raise ZooError(f"qc probes must be a positive integer, got {probes!r}")
        return spec

    def validate(self) -> Dataset:
        """Check every setting (ZooError on the first bad one); returns the dataset."""
        if self.backend not in BACKENDS:
            raise ZooError(f"unknown backend {self.backend!r}; choose from {', '.join(BACKENDS)}")
        info = get_info(self.arch, self.backend)
        if not info.trainable:
            raise ZooError(f"field {self.arch!r} has no parameters to train")
        try:
            ds = get_dataset(self.data)
        except ValueError as e:
            raise ZooError(str(e)) from None
        for name in ("steps", "batch", "log_every", "checkpoint_every"):
            v = getattr(self, name)
            if not isinstance(v, int) or v <= 0:
                raise ZooError(f"{name} must be a positive integer, got {v!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ZooError(f"seed must be a non-negative integer, got {self.seed!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ZooError(f"lr must be a positive finite number, got {self.lr}")
        if not (0 <= self.ema < 1):
            raise ZooError(f"ema must be in [0, 1), got {self.ema}")
        if self.dtype not in ("float32", "float64"):
            raise ZooError(f"dtype must be float32 or float64, got {self.dtype!r}")
        if not (math.isfinite(self.t_min) and math.isfinite(self.T)):
            raise ZooError("t_min and T must be finite")
        if self.t_sampling not in ("uniform", "power"):
            raise ZooError(f"t_sampling must be uniform or power, got {self.t_sampling!r}")
        if not (math.isfinite(self.t_rho) and self.t_rho >= 1):
            raise ZooError(f"t_rho must be a finite number >= 1, got {self.t_rho}")
        make_schedule(self.schedule, self.t_min, self.T)
        self.penalty_spec()
        if not (isinstance(self.eval_at, list | tuple)
                and all(isinstance(v, int) and 0 < v < self.steps for v in self.eval_at)):
            raise ZooError(f"eval_at must be steps between 1 and steps - 1 = {self.steps - 1}, "
                           f"got {self.eval_at!r}")
        self.eval_at = sorted(set(self.eval_at))
        if self.compile not in ("auto", "on", "off"):
            raise ZooError(f"compile must be auto, on or off, got {self.compile!r}")
        if self.device not in ("cpu", "cuda"):
            raise ZooError(f"device must be cpu or cuda, got {self.device!r}")
        if self.device == "cuda":
            if self.backend != "torch":
                raise ZooError("--device cuda applies to torch fields; JAX runs on its default "
                               "device (a GPU when jax's CUDA plugin is installed)")
            import torch

            if not torch.cuda.is_available():
                raise ZooError("--device cuda: torch sees no CUDA device here")
        if info.options is not None:  # built-in fields: every option checked, defaults filled in
            self.options = resolve_options(info.options, self.options)
        return ds

    def run_name(self) -> str:
        return f"{self.arch}-{self.backend}-s{self.seed}"

    def compiled(self) -> bool:
        """Whether a torch run takes its steps from torch.compile (``compile``)."""
        if self.backend != "torch" or self.compile == "off":
            return False
        return self.compile == "on" or (
            get_info(self.arch, self.backend).backbone in COMPILE_AUTO
            and self.steps >= COMPILE_MIN_STEPS)


def draw_batch(rng: np.random.Generator, ds: Dataset, cfg: TrainConfig) -> dict[str, np.ndarray]:
    """x0 [B, *shape], t [B], eps [B, *shape] (and Rademacher probes [P, B, *shape] for a qc
    penalty), float64, drawn in this order from ``rng``."""
    x0 = ds.sample(rng, cfg.batch)
    u = rng.uniform(size=cfg.batch)
    if cfg.t_sampling == "uniform":
        t = cfg.t_min + u * (cfg.T - cfg.t_min)
    else:
        a, b = cfg.t_min ** (1 / cfg.t_rho), cfg.T ** (1 / cfg.t_rho)
        t = (a + u * (b - a)) ** cfg.t_rho
    batch = {"x0": x0, "t": t, "eps": rng.standard_normal(x0.shape)}
    pen = cfg.penalty_spec()
    if pen and pen["kind"] == "qc":
        batch["probes"] = 2.0 * rng.integers(0, 2, size=(pen["probes"], *x0.shape)) - 1.0
    return batch


def make_trainer(cfg: TrainConfig):
    """(trainer, dataset, generator): the field built with its initial weights from the generator."""
    ds = cfg.validate()
    rng = np.random.default_rng(cfg.seed)
    schedule = make_schedule(cfg.schedule, cfg.t_min, cfg.T)
    fld = create(cfg.arch, cfg.backend, shape=ds.shape, schedule=schedule, init=rng,
                 dtype=cfg.dtype, **cfg.options)
    kw = {"device": cfg.device, "compile": cfg.compiled()} if cfg.backend == "torch" else {}
    trainer = backends.get(cfg.backend).Trainer(fld, schedule, penalty=cfg.penalty_spec(),
                                                lr=cfg.lr, ema=cfg.ema, **kw)
    return trainer, ds, rng


def probe(cfg: TrainConfig, ds: Dataset | None = None, n: int = 4) -> None:
    """Build the field and evaluate its score on ``n`` data points at times spread over
    [t_min, T]; ZooError (one line) unless the score is finite, of x's shape [n, *shape] and of
    the run's dtype. Catches a broken plugin field before anything is written."""
    ds = ds or cfg.validate()
    name = cfg.arch
    try:
        fld = create(name, cfg.backend, shape=ds.shape, init=np.random.default_rng(cfg.seed),
                     schedule=make_schedule(cfg.schedule, cfg.t_min, cfg.T), dtype=cfg.dtype,
                     **cfg.options)
        x = ds.sample(np.random.default_rng(0), n).astype(cfg.dtype)
        t = np.linspace(cfg.t_min, cfg.T, n).astype(cfg.dtype)
        s = np.asarray(backends.get(cfg.backend).score(fld, x, t))
    except ZooError:
        raise
    except Exception as e:  # a plugin's own error, whatever it is: one line, not a traceback
        raise ZooError(f"field {name!r} fails on a probe batch of {n}: {type(e).__name__}: "
                       f"{_one_line(e)}") from None
    if s.shape != x.shape:
        raise ZooError(f"field {name!r}: score has shape {list(s.shape)} for x of shape "
                       f"{list(x.shape)} (must be equal)")
    if s.dtype != x.dtype:
        raise ZooError(f"field {name!r}: score has dtype {s.dtype} in a {cfg.dtype} run")
    if not np.all(np.isfinite(s)):
        raise ZooError(f"field {name!r}: score is not finite on a probe batch of {n} "
                       f"(t from {cfg.t_min:g} to {cfg.T:g}) at its initial weights")


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())[:300]


class NonFiniteError(ZooError):
    """The loss or the gradient norm of a training step is NaN or infinite."""

    def __init__(self, step: int, quantity: str, value: float) -> None:
        self.step, self.quantity, self.value = step, quantity, value
        super().__init__(f"non-finite {quantity} at step {step} ({value}); try a smaller --lr")


def fit(cfg: TrainConfig, on_log=None, progress=None, *, start: tuple[dict, dict] | None = None,
        on_checkpoint=None, on_snapshot=None):
    """Train in memory; ``on_log(step, mean_loss, steps_per_s)`` every ``log_every`` steps.

    ``progress(step)`` is called after every step (for a progress bar). Returns the trainer.
    start: ``(arrays, meta)`` of a checkpoint (as ``on_checkpoint`` gets it) to continue from;
    the continued run is bitwise the run that never stopped.
    ``on_checkpoint(step, (arrays, meta))`` every ``checkpoint_every`` steps before the last:
    arrays from ``Trainer.state_dict``; meta = {"trainer": its meta, "rng": the numpy
    bit_generator state, "loop": {"step", "acc", "n_acc", "first_loss"}} (JSON-able).
    ``on_snapshot(step, ema_params)`` at every step of ``cfg.eval_at`` (before that step's
    checkpoint, so a resumed run has every snapshot up to its checkpoint).
    Raises NonFiniteError at the first step whose loss or gradient norm is not finite.
    """
    trainer, ds, rng = make_trainer(cfg)
    snap = set(cfg.eval_at)
    loop = {"step": 0, "acc": 0.0, "n_acc": 0, "first_loss": None}
    if start is not None:
        arrays, meta = start
        try:
            trainer.load_state(arrays, meta["trainer"])
            rng.bit_generator.state = meta["rng"]
            loop.update({k: meta["loop"][k] for k in loop})
        except (KeyError, TypeError, ValueError) as e:
            where = meta.get("path", "checkpoint") if isinstance(meta, dict) else "checkpoint"
            raise ZooError(f"{where}: does not fit {cfg.arch} ({cfg.backend}, "
                           f"{cfg.dtype}, {cfg.options}): {_one_line(e)}") from None
    step0, acc, n_acc, first = loop["step"], loop["acc"], loop["n_acc"], loop["first_loss"]
    t0 = None
    for step in range(step0 + 1, cfg.steps + 1):
        loss = trainer.step(draw_batch(rng, ds, cfg))
        # the guard reads both numbers every step (one wait for the step, which costs JAX's
        # asynchronous dispatch little at these sizes), so a NaN stops the run at its own step,
        # before it can reach a checkpoint
        value = float(loss)
        if not math.isfinite(value):
            raise NonFiniteError(step, "loss", value)
        gnorm = float(trainer.grad_norm)
        if not math.isfinite(gnorm):
            raise NonFiniteError(step, "gradient norm", gnorm)
        acc, n_acc = acc + value, n_acc + 1
        if step == 1:
            first = value
        if t0 is None:  # after this session's first step, which compiles (JAX) or warms up
            t0 = time.perf_counter()
        if step % cfg.log_every == 0 or step == cfg.steps:
            rate = (step - step0 - 1) / max(time.perf_counter() - t0, 1e-9) if step > step0 + 1 \
                else 0.0
            if on_log:
                on_log(step, acc / n_acc, rate)
            acc, n_acc = 0.0, 0
        if on_snapshot and step in snap:
            on_snapshot(step, trainer.ema_params())
        if on_checkpoint and step % cfg.checkpoint_every == 0 and step < cfg.steps:
            arrays, tmeta = trainer.state_dict()
            on_checkpoint(step, (arrays, {
                "trainer": tmeta, "rng": rng.bit_generator.state,
                "loop": {"step": step, "acc": acc, "n_acc": n_acc, "first_loss": first}}))
        if progress:
            progress(step)
    trainer.first_loss = first
    return trainer


# settings a command may change and still continue a run: they do not change its numbers
# device: float rounding, not the algorithm; eval_at: which EMA weights are kept, not the training
RESUMABLE_CHANGES = ("checkpoint_every", "device", "eval_at", "compile")
_OWN_FILES = ("weights.safetensors", "ema.safetensors")


def run_dir_of(cfg: TrainConfig, out: str | Path | None = None) -> Path:
    """Where ``train(cfg, out)`` writes: ``out``, or results/runs/DATA/ARCH-BACKEND-sSEED."""
    return Path(out) if out else RUNS_ROOT / cfg.data / cfg.run_name()


def run_state(cfg: TrainConfig, run_dir: str | Path) -> tuple[str, dict | None]:
    """What ``run_dir`` holds for ``cfg``: ("new", None) when it holds no run, ("complete", config)
    or ("unfinished", config) when it holds this run (same settings). ZooError, one line, when it
    holds a different run or an unreadable config.json."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        return "new", None
    old = checkpoint.read_config(run_dir)
    want = json.loads(json.dumps(dataclasses.asdict(cfg)))  # as config.json stores it
    diff = [k for k in want if k not in RESUMABLE_CHANGES and old.get(k, "(unset)") != want[k]]
    if diff:
        k = diff[0]
        raise ZooError(f"{run_dir}: holds a different run ({k} {old.get(k, '(unset)')!r} there, "
                       f"{want[k]!r} here{f' and {len(diff) - 1} more' if len(diff) > 1 else ''}); "
                       "use another --out, or --force to overwrite it")
    return ("complete" if old.get("status") == "complete" else "unfinished"), old


def train(cfg: TrainConfig, out: str | Path | None = None, show_progress: bool = True, *,
          resume: bool = False, force: bool = False) -> Path:
    """Train and write the run directory (config, weights, EMA weights, metrics); returns it.

    The directory is locked for the whole run (``checkpoint.run_lock``: ZooError "in use by
    another process" if it is taken). What is already there decides what happens:
    - nothing (or no config.json): a new run;
    - this run (same settings, ``run_state``), unfinished (killed, interrupted or failed):
      it continues from its last checkpoint, or from step 0 if it has none;
    - this run, complete: nothing is trained (its weight files are verified) and it is returned;
    - another run: ZooError.
    force: start over whatever is there. resume: ZooError unless there is a run to continue.
    The first non-finite loss or gradient norm stops training: config.json says "failed" with the
    reason, the last good checkpoint stays for inspection, and ZooError is raised.
    """
    from zoo import __version__

    if resume and force:
        raise ZooError("--resume and --force exclude each other")
    ds = cfg.validate()  # before anything is written
    probe(cfg, ds)
    run_dir = run_dir_of(cfg, out)
    if resume and not (run_dir / "config.json").is_file():
        raise ZooError(f"{run_dir}: no run to resume (no config.json)")
    with checkpoint.run_lock(run_dir):
        return _train_locked(cfg, ds, run_dir, show_progress, force, __version__)


def _train_locked(cfg, ds, run_dir: Path, show_progress: bool, force: bool, version: str) -> Path:
    state, old = ("new", None) if force else run_state(cfg, run_dir)
    if old is not None:  # a latent run continues (or stands) only on the latents it began on
        check_run_autoencoder(old, run_dir)
    if state == "complete":
        for which in ("weights", "ema"):  # "complete" with altered weights is not complete
            checkpoint.read_weights(run_dir, which)
        return run_dir
    start = checkpoint.read_checkpoint(run_dir, old) if state == "unfinished" else None
    if start is not None:
        cmeta, ref = start[1], old["checkpoint"]
        cmeta["path"] = str(run_dir / ref["file"])
        step = cmeta.get("loop", {}).get("step")
        if (cmeta.get("arch"), cmeta.get("backend"), step) != (cfg.arch, cfg.backend, ref["step"]):
            raise ZooError(f"{cmeta['path']}: a checkpoint of {cmeta.get('arch')} "
                           f"({cmeta.get('backend')}) at step {step}, config.json wants "
                           f"{cfg.arch} ({cfg.backend}) at step {ref['step']}")
    step0 = start[1]["loop"]["step"] if start else 0
    keep = old["checkpoint"]["file"] if start else None
    for p in run_dir.iterdir():  # files of an earlier attempt that this one will not use
        if (p.name.startswith("ckpt-") and p.name != keep) or p.name in _OWN_FILES \
                or (p.name.startswith(".") and ".tmp" in p.name):
            p.unlink(missing_ok=True)
    if start is None:  # from step 0 (new, --force): nothing made from earlier weights may stay
        checkpoint.remove_downstream(run_dir)

    meta = {**dataclasses.asdict(cfg), "dim": ds.dim, "shape": list(ds.shape),
            "zoo_version": version, "status": "running"}
    if ds.autoencoder is not None:  # latent data: the exact autoencoder every later stage needs
        meta["autoencoder"] = dict(ds.autoencoder)
    if start:
        meta.update(checkpoint=old["checkpoint"], sha256={keep: old["sha256"][keep]},
                    resumed_at=[*old.get("resumed_at", []), step0])
        # snapshots up to the checkpoint are kept; later ones are written again (bitwise equal)
        meta["snapshots"] = {k: v for k, v in old.get("snapshots", {}).items()
                             if int(k.split("-")[1].split(".")[0]) <= step0}
    else:  # remove_downstream above took an earlier attempt's snapshots
        meta["snapshots"] = {}
    config_path = run_dir / "config.json"
    checkpoint.write_json(config_path, meta)
    metrics_path = run_dir / "metrics.jsonl"
    if start:  # lines past the checkpoint are redone by this session: drop them
        checkpoint.atomic_write(metrics_path, "".join(_lines_upto(metrics_path, step0)).encode())
    metrics = open(metrics_path, "a" if start else "w")
    last = {}
    wall0 = float(start[1].get("wall_s", 0.0)) if start else 0.0
    t_start = time.perf_counter()

    def on_log(step, loss, rate):
        last.update(step=step, loss=loss, steps_per_s=rate)
        metrics.write(f'{{"step": {step}, "loss": {loss!r}, "steps_per_s": {rate:.2f}}}\n')
        metrics.flush()

    def on_checkpoint(step, state):
        arrays, cmeta = state
        cmeta.update(arch=cfg.arch, backend=cfg.backend, dtype=cfg.dtype,
                     wall_s=round(wall0 + time.perf_counter() - t_start, 2))
        name = f"ckpt-{step:08d}.safetensors"
        sha = checkpoint.write_checkpoint(run_dir, name, arrays, cmeta)
        os.fsync(metrics.fileno())  # its metrics lines are as durable as the checkpoint
        old_file = meta.get("checkpoint", {}).get("file")
        # config.json moves to the new file only once it is on disk, and the old file goes only
        # after that: a crash anywhere leaves config.json naming a whole, checksummed checkpoint
        meta.update(checkpoint={"file": name, "step": step}, sha256={name: sha},
                    last_logged=dict(last))
        checkpoint.write_json(config_path, meta)
        if old_file and old_file != name:
            (run_dir / old_file).unlink(missing_ok=True)

    def on_snapshot(step, params):
        name = f"ema-{step:08d}"
        (run_dir / checkpoint.SNAPSHOTS).mkdir(exist_ok=True)
        meta["snapshots"][f"{name}.safetensors"] = checkpoint.write_weights(
            run_dir / checkpoint.SNAPSHOTS, name, params)
        checkpoint.write_json(config_path, meta)

    try:
        with _progress(show_progress, cfg, step0) as advance:
            def progress(step):
                advance(step, last.get("loss"), last.get("steps_per_s"))

            trainer = fit(cfg, on_log=on_log, progress=progress, start=start,
                          on_checkpoint=on_checkpoint, on_snapshot=on_snapshot)
    except BaseException as e:  # the run directory says why it stopped, then the error goes on
        if isinstance(e, NonFiniteError):
            ref = meta.get("checkpoint")
            e = ZooError(f"{e}; kept the last good checkpoint, "
                         f"{run_dir / ref['file']} (step {ref['step']})" if ref
                         else f"{e}; no checkpoint was written before it")
        meta.update(status="failed", reason=f"{type(e).__name__}: {_one_line(e)}",
                    last_logged=last)
        checkpoint.write_json(config_path, meta)
        if isinstance(e, ZooError):
            raise e from None
        raise
    finally:
        metrics.close()
    sha = {
        "weights.safetensors": checkpoint.write_weights(run_dir, "weights", trainer.params()),
        "ema.safetensors": checkpoint.write_weights(run_dir, "ema", trainer.ema_params()),
    }
    done = meta.pop("checkpoint", None)
    meta.update(status="complete", sha256=sha, first_loss=trainer.first_loss,
                final_loss=last["loss"], steps_per_s=last["steps_per_s"],
                wall_s=round(wall0 + time.perf_counter() - t_start, 2))
    meta.pop("last_logged", None)
    checkpoint.write_json(config_path, meta)
    if done:  # the final weights supersede it
        (run_dir / done["file"]).unlink(missing_ok=True)
    return run_dir


def _lines_upto(path: Path, step: int) -> list[str]:
    """The metrics.jsonl lines of steps <= ``step`` (a line cut by a crash is dropped)."""
    if not path.is_file():
        return []
    keep = []
    for line in path.read_text().splitlines(keepends=True):
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if line.endswith("\n") and isinstance(rec, dict) and rec.get("step", step + 1) <= step:
            keep.append(line)
    return keep


class _progress:
    """A rich progress bar (loss, steps/s) or nothing."""

    def __init__(self, show: bool, cfg: TrainConfig, start: int = 0) -> None:
        self.show, self.cfg, self.start = show, cfg, start

    def __enter__(self):
        if not self.show:
            return lambda *a: None
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[info]}"), TimeRemainingColumn(),
                            transient=False)
        self.bar.__enter__()
        c = self.cfg
        task = self.bar.add_task(f"{c.arch} ({c.backend}) on {c.data}", total=c.steps, info="",
                                 completed=self.start)

        def advance(step, loss, rate):
            if step % 10 == 0 or step == c.steps:
                info = "" if loss is None else f"loss {loss:.4f}  {rate:.0f} steps/s"
                self.bar.update(task, completed=step, info=info)

        return advance

    def __exit__(self, *exc):
        if self.show:
            self.bar.__exit__(*exc)
        return False

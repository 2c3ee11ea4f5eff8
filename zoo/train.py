"""The one training protocol every field goes through, in either backend.

Denoising score matching  E_{t ~ U[t_min, T], x_0, eps} ||sigma_t s(alpha_t x_0 + sigma_t eps, t) + eps||^2
(plus the field's own penalty, if its registry entry names one: qc) with Adam and an EMA of the
weights. Initial weights, data batches, times and noise all come from
one numpy generator seeded by ``seed``, so a torch run and a JAX run see the same numbers.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from zoo import backends, checkpoint
from zoo.api import create, make_schedule
from zoo.data import Dataset, get_dataset
from zoo.registry import BACKENDS, ZooError, get_info

RUNS_ROOT = Path("results/runs")


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
    options: dict = field(default_factory=dict)  # factory options: width, depth, act, ...
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
        for name in ("steps", "batch", "log_every"):
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
        return ds

    def run_name(self) -> str:
        return f"{self.arch}-{self.backend}-s{self.seed}"


def draw_batch(rng: np.random.Generator, ds: Dataset, cfg: TrainConfig) -> dict[str, np.ndarray]:
    """x0 [B, d], t [B], eps [B, d] (and Rademacher probes [P, B, d] for a qc penalty), float64,
    drawn in this order from ``rng``."""
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
    fld = create(cfg.arch, cfg.backend, dim=ds.dim, schedule=schedule, init=rng,
                 dtype=cfg.dtype, **cfg.options)
    trainer = backends.get(cfg.backend).Trainer(fld, schedule, penalty=cfg.penalty_spec(),
                                                lr=cfg.lr, ema=cfg.ema)
    return trainer, ds, rng


def fit(cfg: TrainConfig, on_log=None, progress=None):
    """Train in memory; ``on_log(step, mean_loss, steps_per_s)`` every ``log_every`` steps.

    ``progress(step)`` is called after every step (for a progress bar). Returns the trainer.
    """
    trainer, ds, rng = make_trainer(cfg)
    acc, n_acc, t0, first = 0.0, 0, None, None
    for step in range(1, cfg.steps + 1):
        loss = trainer.step(draw_batch(rng, ds, cfg))
        acc, n_acc = acc + loss, n_acc + 1  # stays on the framework's side until logged
        if step == 1:
            first = float(loss)  # also waits for the first (compiling) step
            t0 = time.perf_counter()
        if step % cfg.log_every == 0 or step == cfg.steps:
            mean = float(acc) / n_acc
            if not math.isfinite(mean):
                raise ZooError(f"non-finite loss at step {step} ({mean}); try a smaller --lr")
            rate = (step - 1) / max(time.perf_counter() - t0, 1e-9) if step > 1 else 0.0
            if on_log:
                on_log(step, mean, rate)
            acc, n_acc = 0.0, 0
        if progress:
            progress(step)
    trainer.first_loss = first
    return trainer


def train(cfg: TrainConfig, out: str | Path | None = None, show_progress: bool = True) -> Path:
    """Train and write the run directory (config, weights, EMA weights, metrics); returns it."""
    from zoo import __version__

    ds = cfg.validate()  # before anything is written
    run_dir = Path(out) if out else RUNS_ROOT / cfg.data / cfg.run_name()
    run_dir.mkdir(parents=True, exist_ok=True)
    meta = {**dataclasses.asdict(cfg), "dim": ds.dim, "zoo_version": __version__,
            "status": "running"}
    checkpoint.write_json(run_dir / "config.json", meta)
    metrics = open(run_dir / "metrics.jsonl", "w")
    last = {}

    def on_log(step, loss, rate):
        last.update(step=step, loss=loss, steps_per_s=rate)
        metrics.write(f'{{"step": {step}, "loss": {loss!r}, "steps_per_s": {rate:.2f}}}\n')
        metrics.flush()

    t_start = time.perf_counter()
    try:
        with _progress(show_progress, cfg) as advance:
            def progress(step):
                advance(step, last.get("loss"), last.get("steps_per_s"))

            trainer = fit(cfg, on_log=on_log, progress=progress)
    except BaseException as e:  # the run directory says why it stopped, then the error goes on
        meta.update(status="failed", reason=f"{type(e).__name__}: {e}", last_logged=last)
        checkpoint.write_json(run_dir / "config.json", meta)
        raise
    finally:
        metrics.close()
    sha = {
        "weights.safetensors": checkpoint.write_weights(run_dir, "weights", trainer.params()),
        "ema.safetensors": checkpoint.write_weights(run_dir, "ema", trainer.ema_params()),
    }
    meta.update(status="complete", sha256=sha, first_loss=trainer.first_loss,
                final_loss=last["loss"], steps_per_s=last["steps_per_s"],
                wall_s=round(time.perf_counter() - t_start, 2))
    checkpoint.write_json(run_dir / "config.json", meta)
    return run_dir


class _progress:
    """A rich progress bar (loss, steps/s) or nothing."""

    def __init__(self, show: bool, cfg: TrainConfig) -> None:
        self.show, self.cfg = show, cfg

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
        task = self.bar.add_task(f"{c.arch} ({c.backend}) on {c.data}", total=c.steps, info="")

        def advance(step, loss, rate):
            if step % 10 == 0 or step == c.steps:
                info = "" if loss is None else f"loss {loss:.4f}  {rate:.0f} steps/s"
                self.bar.update(task, completed=step, info=info)

        return advance

    def __exit__(self, *exc):
        if self.show:
            self.bar.__exit__(*exc)
        return False

"""The oracle experiment: every (kind, m, solver, seed) cell sampled and scored beside noise
floors, each perturbed field measured."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch

from fields.common import Schedule
from zoo.oracle.perturbations import (
    DEFAULT_MAGNITUDES,
    KINDS,
    Perturbation,
    PerturbedScore,
    field_measures,
)
from zoo.registry import ZooError


@dataclass(frozen=True)
class OracleConfig:
    """Settings of one oracle run. The defaults made results/oracle/ (about 9 min for gmm8 and
    16 min for gmm-d on 2 CPU cores shared with other jobs; 89 sampling cells each), except
    ``repeats``: its noise floors came from 8 draws, 20 now (a one-time cost, then cached)."""

    data: str = "gmm8"
    kinds: tuple[str, ...] = KINDS
    magnitudes: tuple[float, ...] = DEFAULT_MAGNITUDES
    n: int = 2000  # samples per cell, and reference points per evaluation
    seeds: int = 2  # independent draws of (h, psi, A, generic), x_T and Brownian motion: 0..S-1
    schedule: str = "ou"
    ode_method: str = "dopri5"
    rtol: float = 1e-5
    atol: float = 1e-5
    sde_method: str = "euler"
    sde_steps: int = 500  # the project's default SDE grid (rho = 2 in tau)
    # extra SDE step counts at the largest magnitude (seed 0): separates the discretisation's
    # share of a degradation from the continuous-time effect
    refine_steps: tuple[int, ...] = (2000,)
    repeats: int = 20  # real-vs-real draws behind each noise floor (results/oracle/ used 8)
    features: int = 64  # random Fourier features of h, psi and the generic field
    length_scale: float = 1.0
    calib_grid: int = 32  # times of the magnitude calibration, geometric over [t_min, T]
    calib_points: int = 32768  # Monte-Carlo points of rho_t per calibration time
    diag_points: int = 128  # points per t for NAsym (check_field) and the Stein residual
    diag_loops: int = 16  # loops per t and family for the circulation

    def validate(self) -> None:
        from zoo.data import get_dataset

        try:
            ds = get_dataset(self.data)
        except ValueError as e:
            raise ZooError(str(e)) from None
        if ds.exact is None:
            raise ZooError(f"dataset {self.data} has no closed-form rho_t; the oracle needs one "
                           "(gmm8, checkerboard, gmm-d, gmm-dN, digits-gmm)")
        bad = [k for k in self.kinds if k not in KINDS]
        if bad or not self.kinds:
            raise ZooError(f"unknown perturbation kind(s) {bad}; choose from {', '.join(KINDS)}")
        if not self.magnitudes or not all(math.isfinite(m) and m > 0 for m in self.magnitudes):
            raise ZooError(f"magnitudes must be positive finite numbers, got {list(self.magnitudes)}")
        if self.n < 20:
            raise ZooError(f"n must be at least 20 (PRDC needs neighbours), got {self.n}")
        for name in ("seeds", "sde_steps", "repeats", "features", "calib_points", "diag_points",
                     "diag_loops"):
            if getattr(self, name) < 1:
                raise ZooError(f"{name} must be positive, got {getattr(self, name)}")
        if self.repeats < 2:
            raise ZooError(f"repeats must be >= 2 (a floor needs a spread), got {self.repeats}")
        if self.calib_grid < 4:
            raise ZooError(f"calib_grid must be >= 4, got {self.calib_grid}")
        if not all(s > 0 for s in self.refine_steps):
            raise ZooError(f"refine steps must be positive, got {list(self.refine_steps)}")
        if not (math.isfinite(self.length_scale) and self.length_scale > 0):
            raise ZooError(f"length_scale must be positive, got {self.length_scale}")


def plan_cells(cfg: OracleConfig) -> list[dict]:
    """Every sampling cell: {kind, magnitude, solver, steps, seed}; ``none`` once (m = 0)."""
    mags = sorted(set(cfg.magnitudes))
    cells = []
    for seed in range(cfg.seeds):
        for kind in cfg.kinds:
            for m in ([0.0] if kind == "none" else mags):
                cells.append({"kind": kind, "magnitude": m, "solver": "ode", "steps": None,
                              "seed": seed})
                cells.append({"kind": kind, "magnitude": m, "solver": "sde",
                              "steps": cfg.sde_steps, "seed": seed})
    for steps in cfg.refine_steps:
        if steps == cfg.sde_steps:
            continue
        for kind in cfg.kinds:
            cells.append({"kind": kind, "magnitude": 0.0 if kind == "none" else mags[-1],
                          "solver": "sde", "steps": steps, "seed": 0})
    return cells


def compute_floors(data: str, schedule: Schedule, n: int, repeats: int = 20) -> dict:
    """The noise floor of every metric for n samples vs n reference points: {name: (mean, std)}
    over ``repeats`` (20 by default) real-vs-real draws.

    They depend on (data, n, schedule, repeats) only, so one call serves every cell; they come
    from ``zoo.evaluate.noise_floors`` (their own stream, cached on disk like `zoo eval`'s).
    """
    from zoo.evaluate import noise_floors

    rec = noise_floors(data, n, n, schedule=schedule, repeats=repeats)
    return {k: (v[0], v[1]) for k, v in rec["floors"].items()}


def run_oracle(cfg: OracleConfig, progress: Callable[[int, int, str], None] | None = None) -> dict:
    """Run every cell of ``plan_cells(cfg)`` and every field measure; returns the results dict.

    progress(done, total, label) is called after each step. Nothing is written here.
    """
    cfg.validate()
    # many small tensor ops: on a shared CPU extra threads cost more than they give (6x on 2 busy
    # cores); the setting is restored on the way out
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run(cfg, progress)
    finally:
        torch.set_num_threads(threads)


def _run(cfg: OracleConfig, progress: Callable[[int, int, str], None] | None) -> dict:
    from zoo.api import create, make_schedule
    from zoo.data import get_dataset
    from zoo.diagnostics import check_field, default_times
    from zoo.evaluate import evaluate_samples
    from zoo.sampling import sample_field

    t_start = time.perf_counter()
    sch = make_schedule(cfg.schedule)
    ds = get_dataset(cfg.data)
    d = ds.dim
    cells = plan_cells(cfg)
    mags = sorted(set(cfg.magnitudes))
    diag_pairs = [(k, m) for k in cfg.kinds for m in ([0.0] if k == "none" else mags)]
    total = 1 + len(cells) + len(diag_pairs)
    done = [0]

    def tick(label: str) -> None:
        done[0] += 1
        if progress:
            progress(done[0], total, label)

    floors = compute_floors(cfg.data, sch, cfg.n, cfg.repeats)
    tick("noise floors")
    exact = create("exact", "torch", data=cfg.data, schedule=sch, dtype="float64")
    opts = {"features": cfg.features, "length_scale": cfg.length_scale, "grid": cfg.calib_grid,
            "points": cfg.calib_points}
    perts: dict[tuple[str, int], Perturbation] = {}

    def pert(kind: str, seed: int) -> Perturbation:
        if (kind, seed) not in perts:
            perts[kind, seed] = Perturbation(exact, cfg.data, kind, sch, seed=seed, **opts)
        return perts[kind, seed]

    none_samples: dict[tuple[int, str, int | None], np.ndarray] = {}
    rows: list[dict | None] = [None] * len(cells)
    # "none" first in each (seed, solver): the pathwise shift of the others is measured against it
    order = sorted(range(len(cells)), key=lambda i: cells[i]["kind"] != "none")
    for i in order:
        c = cells[i]
        f = PerturbedScore(pert(c["kind"], c["seed"]), c["magnitude"])
        method = cfg.ode_method if c["solver"] == "ode" else cfg.sde_method
        out = sample_field(f, "torch", sch, (d,), n=cfg.n, seed=c["seed"], solver=c["solver"],
                           method=method, steps=c["steps"], rtol=cfg.rtol, atol=cfg.atol,
                           dtype="float64")
        x = out["samples"]
        ev = evaluate_samples(x, cfg.data, schedule=sch, seed=c["seed"], floors=floors)
        key = (c["seed"], c["solver"], c["steps"])
        if c["kind"] == "none":
            none_samples[key] = x
        shift = None
        if key in none_samples and np.all(np.isfinite(x)):
            # same x_T and Brownian path as the reference: how far the error moves each sample
            shift = float(np.sqrt(((x - none_samples[key]) ** 2).sum(1).mean()))
        rows[i] = ({**c, "method": method, "nfe": out["nfe"], "wall_s": out["wall_s"],
                     "finite": ev["finite"], "shift": shift,
                     "metrics": {k: (None if v is None else v["value"])
                                 for k, v in ev["metrics"].items()}})
        tick(f"{c['kind']} m={c['magnitude']:g} {c['solver']} seed {c['seed']}")

    diags = []
    times = default_times(sch)
    for kind, m in diag_pairs:
        f = PerturbedScore(pert(kind, 0), m)
        ck = check_field(f, "torch", data=cfg.data, schedule=sch, dtype="float64",
                         n_points=cfg.diag_points, n_loops=cfg.diag_loops, seed=0)
        fm = field_measures(f, cfg.data, sch, times, cfg.diag_points,
                            np.random.default_rng([9, KINDS.index(kind), int(m * 1e6)]))
        summ = ck["summary"]
        diags.append({"kind": kind, "magnitude": m, "nasym": summ["nasym_mean"],
                      "nasym_max": summ["nasym_max"],
                      "circulation": summ["circulation_polygon_median"],
                      "circulation_projected": summ["circulation_projected_median"],
                      "stein_residual_sq": summ.get("stein_residual_sq_mean"),
                      "error_sq": summ.get("error_sq_mean"),
                      "stein_rel": float(np.mean(fm["stein_rel"])),
                      "m_hat": float(np.mean(fm["m_hat"])),
                      "m_hat_range": [float(min(fm["m_hat"])), float(max(fm["m_hat"]))],
                      "per_t": {"times": fm["times"], "m_hat": fm["m_hat"],
                                "stein_rel": fm["stein_rel"],
                                "nasym": [r["nasym"] for r in ck["per_t"]]}})
        tick(f"diagnostics {kind} m={m:g}")

    calib = {f"{k}/s{s}": {"times": np.exp(p.calibration.log_t).tolist(),
                           "c": np.exp(p.calibration.log_c).tolist()}
             for (k, s), p in perts.items() if p.calibration is not None}
    settings = {**asdict(cfg), "kinds": list(cfg.kinds), "magnitudes": mags,
                "refine_steps": list(cfg.refine_steps), "dim": d, "t_min": sch.t_min, "T": sch.T,
                "dtype": "float64", "sampler_rho": 2.0, "denoise": False,
                "reference": "evaluate_samples: n points of rho_{t_min} from default_rng([3, seed])",
                "floors": f"{cfg.repeats} real-vs-real draws of sizes (n, n) from "
                          f"default_rng([5, n, n]), computed once (zoo.evaluate.noise_floors)"}
    return {"settings": settings, "floors": {k: list(v) for k, v in floors.items()},
            "cells": rows, "diagnostics": diags, "calibration": calib,
            "summary": summarise(rows, floors, cfg), "wall_s": time.perf_counter() - t_start}


def summarise(rows: list[dict], floors: dict, cfg: OracleConfig) -> list[dict]:
    """One row per (kind, m, solver, steps): metrics averaged over seeds, W2 z-score vs floor.

    z = (mean_seeds W2 - floor mean) / floor std: how many floor stds a cell lies above what two
    real draws give (z < 2: as good as the data can tell at this n).
    """
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["kind"], r["magnitude"], r["solver"], r["steps"]), []).append(r)
    out = []
    for (kind, m, solver, steps), rs in groups.items():
        row = {"kind": kind, "magnitude": m, "solver": solver, "steps": steps,
               "method": rs[0]["method"], "seeds": len(rs),
               "finite": all(r["finite"] for r in rs),
               "nfe": float(np.mean([r["nfe"] for r in rs]))}
        shifts = [r["shift"] for r in rs if r["shift"] is not None]
        row["shift"] = float(np.mean(shifts)) if len(shifts) == len(rs) else None
        for k in floors:
            vals = [r["metrics"].get(k) for r in rs]
            if any(v is None for v in vals):
                row[k], row[f"{k}_sd"] = None, None
            else:
                row[k] = float(np.mean(vals))
                row[f"{k}_sd"] = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
            row[f"{k}_floor"], row[f"{k}_floor_sd"] = floors[k]
        fm, fs = floors["w2"]
        row["w2_z"] = None if row["w2"] is None else (row["w2"] - fm) / max(fs, 1e-12)
        out.append(row)
    return out


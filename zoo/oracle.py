"""The oracle experiment: exact scores plus controlled errors, sampled and measured (issue 7).

Tests the claim of Vuong, McCann, Santos & Lin (*Are We Learning the Score Function?*) that an
error e in the score leaves density transport unchanged when it lies in the null space of the
Stein operator, (grad + S) . e = 0, i.e. div(rho_t e) = 0. With the closed-form score S of a
dataset (``zoo.create("exact", ...)``) the error can be chosen, not learned:

    s(x, t) = S(x, t) + m u(x, t),   u = c(t) e_hat(x, t),   c(t)^2 = E_rho_t|S|^2 / E_rho_t|e_hat|^2,

so m = sqrt(E_rho_t |s - S|^2 / E_rho_t |S|^2) at every t. The unit directions e_hat (kinds):

    none      0                                   (reference)
    gradient  grad h                              conservative: the score of another density path
    divfree   A grad psi                          div e = 0 (Euclidean), not Stein-null
    stein     A (grad psi + psi S) = rho^-1 A grad(rho psi)     div(rho_t e) = 0 exactly
    generic   sum_j b_j cos(w_j . x + c_j)        a random smooth vector field

with A a random antisymmetric matrix and h, psi random Fourier features (``RandomFourier``), all
drawn from default_rng([7, seed]); divfree and stein share psi and A, so they differ only by
the psi S term. c(t) is computed by Monte Carlo over rho_t on a grid of t and interpolated by a
cubic Hermite spline in log t (``Calibration``).

Why the Stein null space: the probability-flow ODE dx/dt = -1/2 beta (x + s) moves a density by
d rho/dt = -div(rho v), and s = S + e adds 1/2 beta div(rho e) to the right-hand side. The reverse
SDE (drift -1/2 beta x - beta s) adds beta div(rho e), twice as much, but also zero on the null
space. Both are invariant only along the true marginals rho_t: what remains is the solvers'
discretisation and the prior mismatch N(0, I) vs rho_T.

``run_oracle`` samples every (kind, m, solver, seed) cell with ``zoo.sampling.sample_field`` and
scores it with ``zoo.evaluate.evaluate_samples`` beside noise floors from 20 real-vs-real draws
(``zoo.evaluate.noise_floors``: computed once per (data, n, schedule), cached on disk), and
measures each perturbed field with ``zoo.diagnostics.check_field`` (NAsym, circulation) and
``stein_residual``; ``write_oracle`` writes the table (markdown, CSV), JSON and the figure.
"""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fields.common import Schedule
from zoo.registry import ZooError

KINDS = ("none", "gradient", "divfree", "stein", "generic")
DEFAULT_MAGNITUDES = (0.05, 0.1, 0.2, 0.5, 1.0)


# ----------------------------------------------------------------------------- random functions


class RandomFourier(nn.Module):
    """Random Fourier features (Rahimi & Recht 2007): f(x) = sqrt(2/J) sum_j a_j cos(w_j . x + b_j).

    w_j ~ N(0, I / ell^2), b_j ~ U[0, 2 pi), a_j ~ N(0, I_out) (random Fourier features: a draw
    of a Gaussian process with the squared-exponential kernel of length scale ell, as J -> inf).
    Value and gradient in closed form, so a field built on it is cheap and exactly differentiable.
    """

    def __init__(self, rng: np.random.Generator, dim: int, features: int = 64,
                 length_scale: float = 1.0, out: int = 1) -> None:
        super().__init__()
        self.register_buffer("W", torch.as_tensor(rng.standard_normal((features, dim)) / length_scale))
        self.register_buffer("b", torch.as_tensor(rng.uniform(0.0, 2 * math.pi, features)))
        self.register_buffer("a", torch.as_tensor(rng.standard_normal((features, out))))
        self.scale = math.sqrt(2.0 / features)

    def _phase(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.W.to(x.dtype).T + self.b.to(x.dtype)  # [B, J]

    def value(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, d] -> f(x): [B, out]."""
        return self.scale * torch.cos(self._phase(x)) @ self.a.to(x.dtype)

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, d] -> grad f(x): [B, d] (out = 1): -sqrt(2/J) sum_j a_j sin(w_j . x + b_j) w_j."""
        coef = -self.scale * torch.sin(self._phase(x)) * self.a.to(x.dtype)[:, 0]  # [B, J]
        return coef @ self.W.to(x.dtype)


def random_antisymmetric(rng: np.random.Generator, dim: int) -> np.ndarray:
    """A = (M - M^T) / sqrt(2), M ~ N(0, 1)^{d x d}: a random antisymmetric matrix [d, d]."""
    M = rng.standard_normal((dim, dim))
    return (M - M.T) / math.sqrt(2.0)


# ----------------------------------------------------------------------------- calibration


@dataclass(frozen=True)
class Calibration:
    """c(t) on a grid uniform in log t, interpolated by a cubic Hermite spline in log t.

    log_t: [G] uniform knots, log_c: [G] values, slopes: [G] d log c / d log t (central
    differences, one-sided at the ends). C^1 in t, so adaptive ODE solvers see a smooth field;
    t outside the grid is clamped to it.
    """

    log_t: np.ndarray
    log_c: np.ndarray
    slopes: np.ndarray

    @classmethod
    def from_values(cls, times: np.ndarray, c: np.ndarray) -> Calibration:
        lt, lc = np.log(times), np.log(c)
        return cls(lt, lc, np.gradient(lc, lt))

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        """t: [B] -> c(t): [B] (same dtype as t)."""
        G = len(self.log_t)
        u0, du = float(self.log_t[0]), float(self.log_t[1] - self.log_t[0])
        pos = ((torch.log(t) - u0) / du).clamp(0.0, G - 1.0)
        i = pos.floor().clamp(max=G - 2).long()
        f = pos - i
        y = torch.as_tensor(self.log_c, dtype=t.dtype)
        m = torch.as_tensor(self.slopes, dtype=t.dtype) * du
        f2, f3 = f * f, f * f * f
        out = ((2 * f3 - 3 * f2 + 1) * y[i] + (f3 - 2 * f2 + f) * m[i]
               + (-2 * f3 + 3 * f2) * y[i + 1] + (f3 - f2) * m[i + 1])
        return torch.exp(out)


def forward_draw(ds, schedule: Schedule, t: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """n points of rho_t: x_t = alpha_t x_0 + sigma_t eps, [n, d] float64."""
    a, s = float(schedule.alpha(t)), float(schedule.sigma(t))
    x0 = ds.sample(rng, n).reshape(n, -1)  # image-shaped data (digits-gmm) flat, as everywhere here
    return a * x0 + s * rng.standard_normal(x0.shape)


def stratified_draw(ds, schedule: Schedule, t: float, n: int,
                    rng: np.random.Generator) -> np.ndarray:
    """n points of rho_t with the mixture components allotted systematically: [n, d] float64.

    Component k gets n w_k points up to rounding (systematic sampling: one uniform offset), the
    rest as ``forward_draw``. Removing the multinomial noise of the component counts lowers the
    variance of mixture averages (the calibration's E|e|^2 varies a lot from mode to mode).
    """
    from zoo.data import BoxMixture, FullGaussianMixture, GaussianMixture

    mix = ds.exact
    k = np.searchsorted(np.cumsum(mix.weights), (np.arange(n) + rng.uniform()) / n)
    k = np.minimum(k, len(mix.weights) - 1)
    if isinstance(mix, GaussianMixture):
        x0 = mix.means[k] + mix.stds[k, None] * rng.standard_normal((n, mix.means.shape[1]))
    elif isinstance(mix, FullGaussianMixture):
        x0 = mix.sample_given(k, rng)
    elif isinstance(mix, BoxMixture):
        x0 = mix.lows[k] + rng.uniform(size=(n, mix.lows.shape[1])) * (mix.highs[k] - mix.lows[k])
    else:
        raise TypeError(f"no closed form to stratify for {ds.name}")
    a, s = float(schedule.alpha(t)), float(schedule.sigma(t))
    return a * x0 + s * rng.standard_normal(x0.shape)


# ----------------------------------------------------------------------------- the fields


class Perturbation(nn.Module):
    """An error of one kind (Vuong et al., Stein null space), scaled so E_rho_t|u|^2 = E_rho_t|S|^2.

    u(x, t) = c(t) e_hat(x, t) (module docstring). ``exact`` is the torch exact field (score,
    log_density); h, psi, A and the generic field come from default_rng([7, seed]) in a fixed
    order, so every kind of one seed shares them. The calibration draws ``points`` fresh points
    of rho_t from default_rng([8, seed, kind index]) at each of ``grid`` times geometric over
    [t_min, T] (float64), so it is deterministic from the seed.
    """

    def __init__(self, exact: nn.Module, data: str, kind: str, schedule: Schedule, *,
                 seed: int = 0, features: int = 64, length_scale: float = 1.0, grid: int = 32,
                 points: int = 32768) -> None:
        super().__init__()
        from zoo.data import get_dataset

        if kind not in KINDS:
            raise ZooError(f"unknown perturbation kind {kind!r}; choose from {', '.join(KINDS)}")
        self.exact, self.kind, self.schedule, self.seed = exact, kind, schedule, seed
        ds = get_dataset(data)
        d = ds.dim
        rng = np.random.default_rng([7, seed])
        self.h = RandomFourier(rng, d, features, length_scale)
        self.psi = RandomFourier(rng, d, features, length_scale)
        self.register_buffer("A", torch.as_tensor(random_antisymmetric(rng, d)))
        self.vec = RandomFourier(rng, d, features, length_scale, out=d)
        self.calibration = None
        if kind != "none":
            self.calibration = self._calibrate(ds, grid, points)

    def direction(self, x: torch.Tensor, t: torch.Tensor, S: torch.Tensor) -> torch.Tensor:
        """The uncalibrated e_hat(x, t): [B, d], given S = S(x, t): [B, d]."""
        if self.kind == "none":
            return torch.zeros_like(x)
        if self.kind == "gradient":
            return self.h.grad(x)
        if self.kind == "generic":
            return self.vec.value(x)
        g = self.psi.grad(x)
        if self.kind == "stein":  # rho^-1 A grad(rho psi) = A (grad psi + psi grad log rho)
            g = g + self.psi.value(x) * S
        return g @ self.A.to(x.dtype).T

    def unit(self, x: torch.Tensor, t: torch.Tensor, S: torch.Tensor) -> torch.Tensor:
        """u(x, t) = c(t) e_hat(x, t): [B, d], the error of magnitude m = 1."""
        if self.calibration is None:
            return torch.zeros_like(x)
        return self.calibration(t)[:, None] * self.direction(x, t, S)

    def _calibrate(self, ds, grid: int, points: int) -> Calibration:
        sch = self.schedule
        times = np.geomspace(sch.t_min, sch.T, grid)
        rng = np.random.default_rng([8, self.seed, KINDS.index(self.kind)])
        c = np.empty(grid)
        for k, t in enumerate(times):
            # the same points for both means: their ratio's Monte-Carlo error partly cancels
            x = torch.as_tensor(stratified_draw(ds, sch, t, points, rng))
            tt = torch.full((points,), t, dtype=torch.float64)
            with torch.no_grad():
                S = self.exact.score(x, tt)
                e = self.direction(x, tt, S)
            c[k] = math.sqrt(float((S**2).sum(1).mean()) / float((e**2).sum(1).mean()))
        return Calibration.from_values(times, c)


class PerturbedScore(nn.Module):
    """The exact score plus an error of relative size m: s(x, t) = S(x, t) + m u(x, t)."""

    def __init__(self, perturbation: Perturbation, magnitude: float) -> None:
        super().__init__()
        self.perturbation, self.magnitude = perturbation, float(magnitude)
        self.exact = perturbation.exact

    def error(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """e = s - S: [B, d] for x: [B, d], t: [B]."""
        return self.magnitude * self.perturbation.unit(x, t, self.exact.score(x, t))

    def score(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x: [B, d], t: [B] -> s: [B, d]; images [B, *shape] (check_field) are flattened and
        s comes back in their shape."""
        xf = x.reshape(len(x), -1)
        S = self.exact.score(xf, t)
        return (S + self.magnitude * self.perturbation.unit(xf, t, S)).reshape(x.shape)


def make_field(data: str, kind: str, magnitude: float, *, schedule: str | Schedule = "ou",
               seed: int = 0, **options) -> PerturbedScore:
    """The exact score of ``data`` plus a calibrated error of ``kind`` and size ``magnitude``.

    options go to ``Perturbation`` (features, length_scale, grid, points).
    """
    from zoo.api import create, make_schedule

    sch = make_schedule(schedule)
    exact = create("exact", "torch", data=data, schedule=sch, dtype="float64")
    return PerturbedScore(Perturbation(exact, data, kind, sch, seed=seed, **options), magnitude)


# ----------------------------------------------------------------------------- field measures


def stein_residual(field: PerturbedScore, x: torch.Tensor, t: torch.Tensor) -> dict[str, torch.Tensor]:
    """r = div e + S . e = div(rho_t e) / rho_t per point, with div e by autodiff (d VJPs).

    x: [B, d], t: [B]. Returns {"r", "div", "s_dot_e"}: [B] each (detached). r = 0 is the
    Stein null space; its size is judged against the terms it is the sum of.
    """
    with torch.enable_grad():
        xg = x.detach().clone().requires_grad_(True)
        e = field.error(xg, t)
        div = sum(torch.autograd.grad(e[:, i].sum(), xg, retain_graph=True)[0][:, i]
                  for i in range(e.shape[1]))
        sde = (field.exact.score(xg, t) * e).sum(1)
    return {"r": (div + sde).detach(), "div": div.detach(), "s_dot_e": sde.detach()}


def field_measures(field: PerturbedScore, data: str, schedule: Schedule, times: np.ndarray,
                   n: int, rng: np.random.Generator, n_magnitude: int = 8192) -> dict:
    """Measured magnitude and relative Stein residual at each t, on fresh points of rho_t.

    m_hat(t) = sqrt(E|e|^2 / E|S|^2) on n_magnitude points; stein_rel(t) = sqrt(E r^2 /
    E[(div e)^2 + (S . e)^2]) on the first n of them (0 on the Stein null space, 1 when the two
    terms never cancel, e.g. div e = 0 alone).
    """
    from zoo.data import get_dataset

    ds = get_dataset(data)
    m_hat, rel = [], []
    for t in times:
        x = torch.as_tensor(forward_draw(ds, schedule, float(t), max(n, n_magnitude), rng))
        tt = torch.full((len(x),), float(t), dtype=torch.float64)
        with torch.no_grad():
            S, e = field.exact.score(x, tt), field.error(x, tt)
        m_hat.append(math.sqrt(float((e**2).sum(1).mean() / (S**2).sum(1).mean())))
        if field.magnitude == 0 or field.perturbation.kind == "none":
            rel.append(0.0)
            continue
        r = stein_residual(field, x[:n], tt[:n])
        den = float((r["div"] ** 2 + r["s_dot_e"] ** 2).mean())
        rel.append(math.sqrt(float((r["r"] ** 2).mean()) / den))
    return {"times": [float(t) for t in times], "m_hat": m_hat, "stein_rel": rel}


# ----------------------------------------------------------------------------- the experiment


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


# ----------------------------------------------------------------------------- writers


def _fmt(v, spec: str) -> str:
    return "—" if v is None else format(v, spec)


def _diag_of(result: dict, kind: str, m: float) -> dict:
    for r in result["diagnostics"]:
        if r["kind"] == kind and r["magnitude"] == m:
            return r
    return {}


def _main_rows(result: dict, solver: str) -> dict[tuple[str, float], dict]:
    steps = result["settings"]["sde_steps"] if solver == "sde" else None
    return {(r["kind"], r["magnitude"]): r for r in result["summary"]
            if r["solver"] == solver and r["steps"] == steps}


def verdicts(result: dict, z_max: float = 2.0) -> list[str]:
    """One line per (solver, kind): up to which magnitude W2 stays within z_max floor stds."""
    lines = []
    mags = result["settings"]["magnitudes"]
    ref = result["floors"]["mean_log_density"][0]

    def dlogp(r: dict) -> str:
        return _fmt(None if r["mean_log_density"] is None else r["mean_log_density"] - ref, "+.3f")

    for solver in ("ode", "sde"):
        rows = _main_rows(result, solver)
        for kind in result["settings"]["kinds"]:
            if kind == "none":
                r = rows.get(("none", 0.0))
                if r:
                    lines.append(f"{solver.upper()} none: W2 {_fmt(r['w2'], '.4f')} "
                                 f"(z = {_fmt(r['w2_z'], '+.1f')}), Δlog ρ {dlogp(r)}")
                continue
            zs = [(m, rows[(kind, m)]["w2_z"]) for m in mags if (kind, m) in rows]
            ok = [m for m, z in zs if z is not None and z < z_max]
            first_bad = next((m for m, z in zs if z is None or z >= z_max), None)
            top = rows[(kind, mags[-1])]
            if first_bad is None:
                verdict = f"within the floor (z < {z_max:g}) at every m up to {mags[-1]:g}"
            elif not ok or first_bad == mags[0]:
                verdict = f"above the floor from the smallest m = {mags[0]:g}"
            else:
                verdict = f"within the floor up to m = {max(m for m in ok if m < first_bad):g}, " \
                          f"above from m = {first_bad:g}"
            lines.append(f"{solver.upper()} {kind}: {verdict}; at m = {mags[-1]:g} W2 "
                         f"{_fmt(top['w2'], '.4f')} (z = {_fmt(top['w2_z'], '+.1f')}), "
                         f"Δlog ρ {dlogp(top)}")
    return lines


def markdown(result: dict) -> str:
    """The results as markdown: settings, floors, the main table, refinement table, verdicts."""
    s = result["settings"]
    fl = result["floors"]
    lines = [f"# Oracle: exact score + controlled errors on `{s['data']}` (d = {s['dim']})", "",
             "s = S + m u: S the closed-form score of rho_t, u a calibrated error direction with "
             "E|u|^2 = E|S|^2 under rho_t at every t (zoo/oracle.py). Kinds: `gradient` grad h; "
             "`divfree` A grad psi; `stein` A (grad psi + psi S), div(rho_t e) = 0; `generic` a "
             "random vector field.", "",
             f"Settings: n = {s['n']} samples per cell (and n reference points of rho_t_min), "
             f"seeds {s['seeds']} (0..{s['seeds'] - 1}: error draw, x_T, Brownian path), "
             f"schedule {s['schedule']} (t_min = {s['t_min']:g}, T = {s['T']:g}), float64; "
             f"ODE {s['ode_method']} rtol = atol = {s['rtol']:g}; SDE {s['sde_method']} "
             f"{s['sde_steps']} steps (t-grid rho = 2); no final denoising. Errors: "
             f"{s['features']} random Fourier features, length scale {s['length_scale']:g}; "
             f"magnitude calibrated on {s['calib_grid']} times x {s['calib_points']} points. "
             f"Wall time {result['wall_s'] / 60:.1f} min.", "",
             f"Noise floors ({s['repeats']} real-vs-real draws of n vs n): "
             f"W2 {fl['w2'][0]:.4f} ± {fl['w2'][1]:.4f}, SW2 {fl['sliced_w2'][0]:.4f} ± "
             f"{fl['sliced_w2'][1]:.4f}, MMD² {fl['mmd_rbf'][0]:.1e} ± {fl['mmd_rbf'][1]:.1e}, "
             f"mean log ρ of real data {fl['mean_log_density'][0]:.4f} ± "
             f"{fl['mean_log_density'][1]:.4f}.", "",
             "Columns: m̂ measured magnitude (mean over t), NAsym and circulation (|Γ| / ∮|s||dx|, "
             "polygon loops, median) from `zoo.diagnostics.check_field`, Stein rel = "
             "sqrt(E r² / E[(div e)² + (S·e)²]), r = div e + S·e (0: Stein-null); per solver W2 "
             "(mean ± sd over seeds), z = (W2 − floor) / floor sd, Δlog ρ = mean log ρ_t_min of "
             "samples − of real data, shift = RMS distance of each sample from the `none` sample "
             "with the same x_T (and noise).", ""]
    hdr = ["kind", "m", "m̂", "NAsym", "circ.", "Stein rel"]
    for sv in ("ODE", "SDE"):
        hdr += [f"{sv} W2", f"{sv} z", f"{sv} Δlog ρ", f"{sv} shift"]
    hdr += ["ODE NFE"]
    lines += ["| " + " | ".join(hdr) + " |", "|" + "---|" * len(hdr)]
    ode, sde = _main_rows(result, "ode"), _main_rows(result, "sde")
    ref_logp = fl["mean_log_density"][0]
    for key in ode:
        kind, m = key
        dg = _diag_of(result, kind, m)
        cells = [kind, f"{m:g}", _fmt(dg.get("m_hat"), ".3f"), _fmt(dg.get("nasym"), ".2e"),
                 _fmt(dg.get("circulation"), ".2e"), _fmt(dg.get("stein_rel"), ".1e")]
        for rows in (ode, sde):
            r = rows.get(key)
            if r is None:
                cells += ["—"] * 4
                continue
            dl = None if r["mean_log_density"] is None else r["mean_log_density"] - ref_logp
            cells += [f"{_fmt(r['w2'], '.4f')} ± {_fmt(r['w2_sd'], '.4f')}",
                      _fmt(r["w2_z"], "+.1f"), _fmt(dl, "+.3f"), _fmt(r["shift"], ".3f")]
        cells.append(f"{ode[key]['nfe']:.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    refine = [r for r in result["summary"] if r["solver"] == "sde" and r["steps"] != s["sde_steps"]]
    if refine:
        lines += ["", f"SDE step refinement at m = {s['magnitudes'][-1]:g} (seed 0; W2 (z); "
                  "Δlog ρ): a gap that shrinks with the step is discretisation, not the "
                  "continuous-time SDE.", ""]
        steps_all = sorted({s["sde_steps"], *(r["steps"] for r in refine)})
        lines += ["| kind | " + " | ".join(f"{k} steps" for k in steps_all) + " |",
                  "|---|" + "---|" * len(steps_all)]
        for kind in s["kinds"]:
            m = 0.0 if kind == "none" else s["magnitudes"][-1]
            cells = [kind]
            for k in steps_all:
                r = next((c for c in result["cells"] if c["kind"] == kind and c["magnitude"] == m
                          and c["solver"] == "sde" and c["steps"] == k and c["seed"] == 0), None)
                w = None if r is None else r["metrics"].get("w2")
                lp = None if r is None else r["metrics"].get("mean_log_density")
                cells.append("—" if w is None or lp is None else
                             f"{w:.4f} ({(w - fl['w2'][0]) / fl['w2'][1]:+.1f}); "
                             f"{lp - fl['mean_log_density'][0]:+.3f}")
            lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## Verdicts (computed from the table: z < 2 on W2)", ""]
    lines += [f"- {v}" for v in verdicts(result)]
    lines += ["", "Files: `oracle.csv` (every metric, mean and sd over seeds, with floors), "
              "`oracle.json` (every cell and seed, diagnostics per t, calibration), `oracle.png`."]
    return "\n".join(lines) + "\n"


CSV_FIELDS = ("kind", "magnitude", "solver", "method", "steps", "seeds", "finite", "nfe", "shift",
              "w2_z")


def csv_text(result: dict) -> str:
    """The summary as CSV: one row per (kind, m, solver, steps), every metric with sd and floor."""
    diag_keys = ("m_hat", "nasym", "circulation", "stein_rel")
    metric_cols = []
    for k in result["floors"]:
        metric_cols += [k, f"{k}_sd", f"{k}_floor", f"{k}_floor_sd"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([*CSV_FIELDS, *diag_keys, *metric_cols])
    for r in result["summary"]:
        dg = _diag_of(result, r["kind"], r["magnitude"])
        w.writerow([("" if r.get(k) is None else r.get(k)) for k in CSV_FIELDS]
                   + [dg.get(k, "") for k in diag_keys]
                   + [("" if r.get(k) is None else r[k]) for k in metric_cols])
    return buf.getvalue()


def figure_png(result: dict) -> bytes:
    """W2 and MMD² vs magnitude, one line per kind, ODE and SDE side by side, floors drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s, fl = result["settings"], result["floors"]
    colors = {"none": "k", "gradient": "tab:blue", "divfree": "tab:orange", "stein": "tab:green",
              "generic": "tab:red"}
    fig, axes = plt.subplots(3, 2, figsize=(10, 10.5), sharex=True)
    ref = fl["mean_log_density"][0]
    mags = s["magnitudes"]
    for col, solver in enumerate(("ode", "sde")):
        rows = _main_rows(result, solver)
        for row, metric, label in ((0, "w2", "W2 to rho_t_min data"), (1, "mmd_rbf", "MMD²"),
                                   (2, "mean_log_density", "mean log rho_t_min − real data's")):
            ax = axes[row, col]
            fm, fs = fl[metric]
            off = ref if metric == "mean_log_density" else 0.0  # plot log rho as a gap
            fm -= off
            ax.axhspan(fm - 2 * fs, fm + 2 * fs, color="0.85", label="noise floor ± 2 sd")
            ax.axhline(fm, color="0.5", lw=1, ls=":")
            for kind in s["kinds"]:
                if kind == "none":
                    r = rows.get(("none", 0.0))
                    if r and r[metric] is not None:
                        ax.axhline(r[metric] - off, color="k", lw=1.2, ls="--",
                                   label="none (exact)")
                    continue
                pts = [(m, rows[(kind, m)]) for m in mags if (kind, m) in rows]
                pts = [(m, r) for m, r in pts if r[metric] is not None]
                if not pts:
                    continue
                ax.errorbar([m for m, _ in pts], [r[metric] - off for _, r in pts],
                            yerr=[r[f"{metric}_sd"] for _, r in pts], marker="o", ms=4,
                            capsize=2, color=colors.get(kind), label=kind)
            ax.set_xscale("log")
            ax.set_yscale("log" if metric == "w2" else "symlog",
                          **({} if metric == "w2" else {"linthresh": max(abs(fm) + 2 * fs, 1e-6)}))
            steps = f", {s['sde_steps']} steps" if solver == "sde" else ""
            method = s["ode_method"] if solver == "ode" else s["sde_method"]
            ax.set_title(f"{solver.upper()} ({method}{steps}): {label}", fontsize=9)
            if row == 2:
                ax.set_xlabel("relative error magnitude m")
            ax.grid(alpha=0.3, which="both")
    axes[0, 0].legend(fontsize=7, loc="upper left")
    fig.suptitle(f"Oracle on {s['data']}: exact score + error of size m "
                 f"(n = {s['n']}, {s['seeds']} seeds; mean ± sd)", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def write_oracle(result: dict, out_dir: str | Path) -> dict[str, Path]:
    """Write oracle.json, oracle.csv, oracle.md and oracle.png into out_dir (each atomically).

    Everything is rendered in memory first, so a failure leaves no file half-written.
    """
    from zoo import checkpoint

    out = Path(out_dir)
    blobs = {"oracle.md": markdown(result).encode(), "oracle.csv": csv_text(result).encode(),
             "oracle.png": figure_png(result)}
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    checkpoint.write_json(out / "oracle.json", result)
    paths["oracle.json"] = out / "oracle.json"
    for name, blob in blobs.items():
        checkpoint.atomic_write(out / name, blob)
        paths[name] = out / name
    return paths

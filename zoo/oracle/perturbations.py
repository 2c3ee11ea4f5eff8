"""The oracle's fields: the exact score plus an error of a chosen kind and size at every t
(random Fourier functions, the calibration c(t), the perturbed field and its measures)."""

from __future__ import annotations

import math
from dataclasses import dataclass

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



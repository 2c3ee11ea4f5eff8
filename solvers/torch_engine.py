"""Probability-flow ODE (torchdiffeq), reverse-time SDE (torchsde) and ODE log-likelihood.

``fn`` is a solvers.adapters function: score(x: [B, D], t: [B]) -> [B, D], torch or bridged JAX.
States are flat [B, D]; time is the flipped tau of solvers.timegrid.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torchdiffeq
import torchsde

from fields.common import Schedule
from solvers.timegrid import TimeGrid, ode_drift, sde_diffusion, sde_drift

ODE_FIXED = ("euler", "midpoint", "rk4")
ODE_ADAPTIVE = ("dopri5", "bosh3", "dopri8")
ODE_METHODS = ODE_FIXED + ODE_ADAPTIVE
SDE_METHODS = ("euler", "srk")  # Euler-Maruyama; SRK, strong order 1.5 for additive noise
ODE_ORDER = {"euler": 1, "midpoint": 2, "rk4": 4}
SRK_MAX_DIM = 256  # srk's additive noise needs a [B, D, D] diffusion matrix


def _check(method: str, allowed: tuple, steps: int | None, fixed: tuple) -> None:
    if method not in allowed:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(allowed)}")
    if method in fixed and (steps is None or steps <= 0):
        raise ValueError(f"method {method} needs a positive number of steps")


class NFEBudgetExceeded(RuntimeError):
    """An adaptive solve that needed more field evaluations than its budget allowed.

    t: where it had got to; x_max: the largest |x| among the paths then (a path escaping to
    large |x| is the usual cause: the field's extrapolation pushes it further out)."""

    def __init__(self, nfe: int, t: float, x_max: float):
        super().__init__(f"gave up after {nfe} field evaluations at t = {t:.4g} (max |x| {x_max:.3g})")
        self.nfe, self.t, self.x_max = nfe, t, x_max


def sample_ode(fn: Callable, schedule: Schedule, x_T: torch.Tensor, *, method: str = "dopri5",
               steps: int | None = None, rtol: float = 1e-5, atol: float = 1e-5,
               rho: float = 2.0, progress: Callable[[float], None] | None = None,
               max_nfe: int | None = None):
    """Integrate dx/dt = -1/2 beta (x + s) from T to t_min (tau from 0 to 1).

    x_T: [B, D]. Fixed-grid methods take ``steps`` equal tau-steps; adaptive ones use rtol/atol,
    and past ``max_nfe`` field evaluations raise NFEBudgetExceeded (a stiff path would otherwise
    shrink the steps of the whole batch without end).
    Returns (x at t_min [B, D], number of field evaluations).
    """
    _check(method, ODE_METHODS, steps, ODE_FIXED)
    grid, B, nfe = TimeGrid.of(schedule, rho), x_T.shape[0], [0]

    def f(tau, x):
        nfe[0] += 1
        if max_nfe is not None and nfe[0] > max_nfe:
            raise NFEBudgetExceeded(max_nfe, float(grid.t(tau)), float(x.norm(dim=1).max()))
        if progress:
            progress(float(tau))
        s = fn(x, grid.t(tau).expand(B))
        return ode_drift(schedule, grid, x, s, tau)

    span = torch.tensor([0.0, 1.0], dtype=x_T.dtype)
    with torch.no_grad():
        if method in ODE_FIXED:
            ticks = torch.linspace(0.0, 1.0, steps + 1, dtype=x_T.dtype)
            out = torchdiffeq.odeint(f, x_T, span, method=method,
                                     options={"grid_constructor": lambda *_: ticks})
        else:
            out = torchdiffeq.odeint(f, x_T, span, method=method, rtol=rtol, atol=atol)
    return out[-1], nfe[0]


class _ReverseSDE(torch.nn.Module):
    """The reverse-time SDE in flipped time tau, as torchsde wants it (Ito, additive noise)."""

    sde_type = "ito"

    def __init__(self, fn, schedule, grid, B, additive, progress):
        super().__init__()
        self.fn, self.schedule, self.grid, self.B = fn, schedule, grid, B
        self.noise_type = "additive" if additive else "diagonal"
        self.progress, self.nfe = progress, 0

    def f(self, tau, x):
        tau = tau.to(x.dtype)
        self.nfe += 1
        if self.progress:
            self.progress(float(tau))
        s = self.fn(x, self.grid.t(tau).expand(self.B))
        return sde_drift(self.schedule, self.grid, x, s, tau)

    def g(self, tau, x):
        tau = tau.to(x.dtype)
        g = sde_diffusion(self.schedule, self.grid, tau) * torch.ones_like(x)
        return torch.diag_embed(g) if self.noise_type == "additive" else g


def sample_sde(fn: Callable, schedule: Schedule, x_T: torch.Tensor, *, method: str = "euler",
               steps: int = 500, seed: int = 0, rho: float = 2.0,
               progress: Callable[[float], None] | None = None):
    """Integrate the reverse SDE dx = [-1/2 beta x - beta s] dt + sqrt(beta) dW from T to t_min.

    ``steps`` equal tau-steps; the Brownian motion is a torchsde.BrownianInterval seeded by
    ``seed`` (reproducible). Returns (x at t_min [B, D], number of field evaluations).
    """
    _check(method, SDE_METHODS, steps, SDE_METHODS)
    B, D = x_T.shape
    additive = method == "srk"
    if additive and D > SRK_MAX_DIM:
        raise ValueError(f"srk needs a [B, D, D] diffusion matrix; D = {D} > {SRK_MAX_DIM}: "
                         "use euler")
    grid = TimeGrid.of(schedule, rho)
    sde = _ReverseSDE(fn, schedule, grid, B, additive, progress)
    bm = torchsde.BrownianInterval(
        t0=0.0, t1=1.0, size=(B, D), dtype=x_T.dtype, device=x_T.device, entropy=seed,
        levy_area_approximation="space-time" if additive else "none")
    # time runs in float64 whatever the state's dtype, with dt a hair above 1/steps: exactly
    # `steps` steps, the last one clipped to tau = 1 (float32 sums of dt would add a tiny step)
    span = torch.tensor([0.0, 1.0], dtype=torch.float64)
    with torch.no_grad():
        ys = torchsde.sdeint(sde, x_T, span, method=method, dt=(1.0 / steps) * (1 + 1e-9), bm=bm)
    return ys[-1], sde.nfe


def tweedie(fn: Callable, schedule: Schedule, x: torch.Tensor, t: float):
    """E[x_0 | x_t] = (x_t + sigma_t^2 s(x_t, t)) / alpha_t (optional final denoising)."""
    tt = torch.full((x.shape[0],), t, dtype=x.dtype)
    return (x + schedule.sigma(tt)[:, None] ** 2 * fn(x, tt)) / schedule.alpha(tt)[:, None]


def log_likelihood(fn, schedule: Schedule, x0: torch.Tensor, *, probes: torch.Tensor | None = None,
                   method: str = "dopri5", rtol: float = 1e-5, atol: float = 1e-5,
                   max_nfe: int | None = None, progress: Callable[[float], None] | None = None):
    """log rho_{t_min}(x0) under the field's probability-flow ODE (instantaneous change of variables).

    Integrates x from t_min to T with d/dt log p(x(t), t) = -div v, v = -1/2 beta (x + s), and
    scores x(T) under the prior N(0, I):  log p(x0) = log N(x(T)) + int div v dt.
    probes: None for the exact divergence, or [B, D] Rademacher/Gaussian vectors (Hutchinson,
    held fixed along each path, so the estimate is unbiased). max_nfe: raise NFEBudgetExceeded
    past that many field evaluations (one stiff path shrinks the steps of the whole batch, so a
    field that sends held-out points off to infinity would otherwise run for hours).
    progress: called with the share of [t_min, T] integrated so far.
    Returns (log p [B], x(T) [B, D], nfe).
    """
    if method not in ODE_ADAPTIVE:
        raise ValueError(f"likelihoods use an adaptive method: {', '.join(ODE_ADAPTIVE)}")
    B, D = x0.shape
    nfe = [0]

    def f(t, state):
        x, _ = state
        nfe[0] += 1
        if max_nfe is not None and nfe[0] > max_nfe:
            raise NFEBudgetExceeded(max_nfe, float(t), float(x.norm(dim=1).max()))
        if progress:
            progress((float(t) - schedule.t_min) / (schedule.T - schedule.t_min))
        s, div = fn.score_and_div(x, t.expand(B), probes)
        b = schedule.beta(t)
        return -0.5 * b * (x + s), -0.5 * b * (D + div)

    span = torch.tensor([schedule.t_min, schedule.T], dtype=x0.dtype)
    xs, dl = torchdiffeq.odeint(f, (x0, torch.zeros(B, dtype=x0.dtype)), span, method=method,
                                rtol=rtol, atol=atol)
    xT = xs[-1]
    prior = -0.5 * (xT**2).sum(1) - 0.5 * D * math.log(2 * math.pi)
    return prior + dl[-1], xT, nfe[0]

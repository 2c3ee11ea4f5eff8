"""Native JAX sampling with diffrax: the same ODE and SDE, in the same flipped time tau.

Equinox fields are written for one example; here they are vmapped over a batch [B, D].
Times are kept in the state's dtype so float32 runs match the torch engine step for step.
"""

from __future__ import annotations

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import lineax
import numpy as np

from fields.common import Schedule
from solvers.timegrid import TimeGrid, ode_drift, sde_diffusion, sde_drift

ODE_FIXED = {"euler": (diffrax.Euler, 1), "midpoint": (diffrax.Midpoint, 2),
             "heun": (diffrax.Heun, 2)}
ODE_ADAPTIVE = {"tsit5": (diffrax.Tsit5, 6), "dopri5": (diffrax.Dopri5, 6)}
ODE_METHODS = tuple(ODE_FIXED) + tuple(ODE_ADAPTIVE)
# ShARK: for additive noise, uses space-time Levy area; two drift evaluations per step
SDE_METHODS = {"euler": (diffrax.Euler, 1), "shark": (diffrax.ShARK, 2)}


def _score(field, y, t, shape):
    B = y.shape[0]
    s = jax.vmap(field.score)(y.reshape(B, *shape), jnp.full((B,), t, dtype=y.dtype))
    return s.reshape(B, -1)


@eqx.filter_jit
def _ode(field, schedule, grid, y0, shape, method, steps, rtol, atol):
    dt = y0.dtype

    def vf(tau, y, args):
        tau = jnp.asarray(tau, dtype=dt)
        return ode_drift(schedule, grid, y, _score(field, y, grid.t(tau), shape), tau)

    zero, one = jnp.asarray(0.0, dt), jnp.asarray(1.0, dt)
    if method in ODE_FIXED:
        solver = ODE_FIXED[method][0]()
        ctrl = diffrax.StepTo(ts=jnp.linspace(zero, one, steps + 1))
        dt0 = None
    else:
        solver = ODE_ADAPTIVE[method][0]()
        ctrl = diffrax.PIDController(rtol=rtol, atol=atol)
        dt0 = None
    sol = diffrax.diffeqsolve(diffrax.ODETerm(vf), solver, t0=zero, t1=one, dt0=dt0, y0=y0,
                              stepsize_controller=ctrl, max_steps=100_000)
    return sol.ys[-1], sol.stats["num_steps"]


def sample_ode(field, schedule: Schedule, x_T, *, method: str = "tsit5", steps: int | None = None,
               rtol: float = 1e-5, atol: float = 1e-5, rho: float = 2.0):
    """Probability-flow ODE from x_T [B, *shape] at T to t_min. Returns (numpy [B, *shape], NFE).

    NFE = steps x stages (+1 for the first stage of the FSAL adaptive methods), from diffrax's
    step count (rejected steps included).
    """
    if method not in ODE_METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(ODE_METHODS)}")
    if method in ODE_FIXED and (steps is None or steps <= 0):
        raise ValueError(f"method {method} needs a positive number of steps")
    x_T = jnp.asarray(x_T)
    shape = x_T.shape[1:]
    y0 = x_T.reshape(x_T.shape[0], -1)
    y, n = _ode(field, schedule, TimeGrid.of(schedule, rho), y0, shape, method, steps, rtol, atol)
    stages = {**ODE_FIXED, **ODE_ADAPTIVE}[method][1]
    nfe = int(n) * stages + (1 if method in ODE_ADAPTIVE else 0)
    return np.asarray(y).reshape(x_T.shape), nfe


@eqx.filter_jit
def _sde(field, schedule, grid, y0, shape, method, steps, key):
    dt, B = y0.dtype, y0.shape[0]
    zero, one = jnp.asarray(0.0, dt), jnp.asarray(1.0, dt)

    def drift(tau, y, args):
        tau = jnp.asarray(tau, dtype=dt)
        x = y.reshape(B, -1)
        return sde_drift(schedule, grid, x, _score(field, x, grid.t(tau), shape), tau).reshape(-1)

    def diffusion(tau, y, args):
        g = sde_diffusion(schedule, grid, jnp.asarray(tau, dtype=dt))
        return lineax.DiagonalLinearOperator(g * jnp.ones_like(y))

    levy = diffrax.SpaceTimeLevyArea if method == "shark" else diffrax.BrownianIncrement
    bm = diffrax.VirtualBrownianTree(zero, one, tol=jnp.asarray(1e-3 / steps, dt),
                                     shape=(y0.size,), key=key, levy_area=levy)
    terms = diffrax.MultiTerm(diffrax.ODETerm(drift), diffrax.ControlTerm(diffusion, bm))
    sol = diffrax.diffeqsolve(terms, SDE_METHODS[method][0](), t0=zero, t1=one, dt0=None,
                              y0=y0.reshape(-1),
                              stepsize_controller=diffrax.StepTo(ts=jnp.linspace(zero, one, steps + 1)),
                              max_steps=steps + 1)
    return sol.ys[-1].reshape(B, -1), sol.stats["num_steps"]


def sample_sde(field, schedule: Schedule, x_T, *, method: str = "euler", steps: int = 500,
               seed: int = 0, rho: float = 2.0):
    """Reverse-time SDE from x_T [B, *shape] at T to t_min with a VirtualBrownianTree seeded by
    ``seed``. Returns (numpy [B, *shape], NFE)."""
    if method not in SDE_METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(SDE_METHODS)}")
    if steps is None or steps <= 0:
        raise ValueError("the SDE needs a positive number of steps")
    x_T = jnp.asarray(x_T)
    shape = x_T.shape[1:]
    y, n = _sde(field, schedule, TimeGrid.of(schedule, rho), x_T.reshape(x_T.shape[0], -1), shape,
                method, steps, jax.random.PRNGKey(seed))
    return np.asarray(y).reshape(x_T.shape), int(n) * SDE_METHODS[method][1]

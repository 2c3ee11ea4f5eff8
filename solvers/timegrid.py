"""The flipped time every solver integrates in.

Sampling runs t from T down to t_min. All solvers (torchdiffeq, torchsde, diffrax) instead
integrate an increasing tau in [0, 1] with

    t(tau) = (T^(1/rho) + tau (t_min^(1/rho) - T^(1/rho)))^rho,

so fixed steps in tau are steps in t that shrink towards t_min where the score changes fastest
(rho = 1: uniform in t). Increasing time is what torchsde needs, and it keeps diffrax's SRK
solvers on the direction they were verified for (they were wrong run backwards before a fix
released after 0.7.2). With dt = t'(tau) dtau (t' < 0):

    ODE   dx/dtau = -1/2 beta(t) (x + s(x, t)) t'(tau)
    SDE   dx = [-1/2 beta(t) x - beta(t) s(x, t)] t'(tau) dtau + sqrt(beta(t) |t'(tau)|) dW_tau
"""

from __future__ import annotations

from dataclasses import dataclass

from fields.common import Schedule


@dataclass(frozen=True)
class TimeGrid:
    """t(tau) for tau in [0, 1]: t(0) = T, t(1) = t_min. Works on floats, torch and jax arrays."""

    T: float
    t_min: float
    rho: float = 2.0

    @classmethod
    def of(cls, schedule: Schedule, rho: float = 2.0) -> TimeGrid:
        return cls(schedule.T, schedule.t_min, rho)

    def t(self, tau):
        a, b = self.T ** (1 / self.rho), self.t_min ** (1 / self.rho)
        return (a + tau * (b - a)) ** self.rho

    def dt_dtau(self, tau):
        """t'(tau) < 0."""
        a, b = self.T ** (1 / self.rho), self.t_min ** (1 / self.rho)
        return self.rho * (a + tau * (b - a)) ** (self.rho - 1) * (b - a)


def ode_drift(schedule: Schedule, grid: TimeGrid, x, s, tau):
    """dx/dtau of the probability-flow ODE, given the score s at (x, t(tau))."""
    t = grid.t(tau)
    return -0.5 * schedule.beta(t) * (x + s) * grid.dt_dtau(tau)


def sde_drift(schedule: Schedule, grid: TimeGrid, x, s, tau):
    """Drift of the reverse SDE per dtau, given the score s at (x, t(tau))."""
    t = grid.t(tau)
    b = schedule.beta(t)
    return (-0.5 * b * x - b * s) * grid.dt_dtau(tau)


def sde_diffusion(schedule: Schedule, grid: TimeGrid, tau):
    """sqrt(beta(t) |t'(tau)|): the same for every coordinate (additive noise)."""
    return (schedule.beta(grid.t(tau)) * -grid.dt_dtau(tau)) ** 0.5

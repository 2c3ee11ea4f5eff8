"""Score heads on a backbone (Equinox; mirrors fields/torch/heads.py).

Each head turns a backbone f(x, t) into a score s(x, t) ~ grad_x log rho_t(x); see DESIGN.md s2.
Written for one example: x: [*shape], t: [].
"""

from __future__ import annotations

import equinox as eqx
import jax

from fields.common import Schedule


class FreeField(eqx.Module):
    """Unconstrained epsilon-parameterised score s = -f(x, t) / sigma_t (Ho et al. 2020)."""

    net: eqx.Module
    schedule: Schedule = eqx.field(static=True)

    def score(self, x: jax.Array, t: jax.Array) -> jax.Array:
        """x: [*shape], t: [] -> [*shape]."""
        return -self.net(x, t).reshape(x.shape) / self.schedule.sigma(t)


class EnergyField(eqx.Module):
    """Conservative score s = -grad_x E, E = g(x, t) / sigma_t a scalar network (Salimans & Ho 2021)."""

    net: eqx.Module
    schedule: Schedule = eqx.field(static=True)

    def energy(self, x: jax.Array, t: jax.Array) -> jax.Array:
        """x: [*shape], t: [] -> E: []."""
        return self.net(x, t)[0] / self.schedule.sigma(t)

    def score(self, x: jax.Array, t: jax.Array) -> jax.Array:
        return -jax.grad(self.energy)(x, t)

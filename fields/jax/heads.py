"""Score heads on a backbone (Equinox; mirrors fields/torch/heads.py).

Each head turns a backbone f(x, t) into a score s(x, t) ~ grad_x log rho_t(x); see DESIGN.md s2.
Written for one example: x: [*shape], t: [].
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

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


def grads_of_outputs(fn, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """h = fn(x): [m] scalars and their x-gradients [m, *shape]: one VJP, vmapped over the m
    cotangents (m is 1 + K, small); never a d x d Jacobian."""
    h, vjp = jax.vjp(fn, x)
    (g,) = jax.vmap(vjp)(jnp.eye(h.shape[0], dtype=h.dtype))
    return h, g


def _antisym(m: jax.Array) -> jax.Array:
    """[K, d, d] -> A_k = M_k - M_k^T."""
    return m - jnp.swapaxes(m, 1, 2)


class EnergySqField(eqx.Module):
    """Quadratic energy E = ||x - f(x, t)||^2 / (2 sigma_t), s = -grad E (Salimans & Ho 2021; CSBM)."""

    net: eqx.Module
    schedule: Schedule = eqx.field(static=True)

    def energy(self, x: jax.Array, t: jax.Array) -> jax.Array:
        r = x.reshape(-1) - self.net(x, t)
        return 0.5 * jnp.sum(r**2) / self.schedule.sigma(t)

    def score(self, x: jax.Array, t: jax.Array) -> jax.Array:
        return -jax.grad(self.energy)(x, t)


class HelmholtzField(eqx.Module):
    """Helmholtz head s = -grad E + sum_k A_k grad psi_k, A_k = M_k - M_k^T (DESIGN.md s2).

    E = h_0 / sigma_t and psi_k = h_k / sigma_t share the backbone h: [1 + K]. The rotational
    part is divergence-free: div(A grad psi) = sum_ij A_ij d_i d_j psi = 0.
    """

    net: eqx.Module
    generators: jax.Array  # [K, d, d]
    schedule: Schedule = eqx.field(static=True)

    def __init__(self, net: eqx.Module, schedule: Schedule, dim: int, K: int) -> None:
        self.net, self.schedule = net, schedule
        self.generators = jnp.zeros((K, dim, dim))

    def parts(self, x: jax.Array, t: jax.Array) -> dict[str, jax.Array]:
        """{"gradient": -grad E, "rotational": sum_k A_k grad psi_k}, each [*shape]."""
        _, g = grads_of_outputs(lambda y: self.net(y, t) / self.schedule.sigma(t), x)
        g = g.reshape(g.shape[0], -1)  # [1 + K, d]
        rot = jnp.einsum("kij,kj->i", _antisym(self.generators), g[1:])
        return {"gradient": -g[0].reshape(x.shape), "rotational": rot.reshape(x.shape)}

    def score(self, x: jax.Array, t: jax.Array) -> jax.Array:
        p = self.parts(x, t)
        return p["gradient"] + p["rotational"]


class SteinField(eqx.Module):
    """Stein head s = grad phi + sum_k A_k (grad psi_k + psi_k grad phi) (DESIGN.md s2).

    phi = h_0 / sigma_t, psi_k = h_k. The rotational part w = e^-phi sum_k A_k grad(e^phi psi_k)
    has div(e^phi w) = 0: it lies in the null space of the Stein operator of rho ~ e^phi.
    """

    net: eqx.Module
    generators: jax.Array  # [K, d, d]
    schedule: Schedule = eqx.field(static=True)

    def __init__(self, net: eqx.Module, schedule: Schedule, dim: int, K: int) -> None:
        self.net, self.schedule = net, schedule
        self.generators = jnp.zeros((K, dim, dim))

    def _potentials(self, x: jax.Array, t: jax.Array) -> jax.Array:
        h = self.net(x, t)
        return jnp.concatenate([h[:1] / self.schedule.sigma(t), h[1:]])

    def parts(self, x: jax.Array, t: jax.Array) -> dict[str, jax.Array]:
        """{"gradient": grad phi, "rotational": w}, each [*shape]."""
        h, g = grads_of_outputs(lambda y: self._potentials(y, t), x)
        g = g.reshape(g.shape[0], -1)  # [1 + K, d]
        inner = g[1:] + h[1:, None] * g[0][None, :]  # grad psi_k + psi_k grad phi
        w = jnp.einsum("kij,kj->i", _antisym(self.generators), inner)
        return {"gradient": g[0].reshape(x.shape), "rotational": w.reshape(x.shape)}

    def score(self, x: jax.Array, t: jax.Array) -> jax.Array:
        p = self.parts(x, t)
        return p["gradient"] + p["rotational"]

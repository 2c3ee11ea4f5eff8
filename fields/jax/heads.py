"""Score heads on a backbone (Equinox; mirrors fields/torch/heads.py).

Each head turns a backbone f(x, t) into a score s(x, t) ~ grad_x log rho_t(x); see DESIGN.md s2.
Written for one example: x: [*shape], t: [].
"""

from __future__ import annotations

import math

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
    """h = fn(x): [m] scalars and their x-gradients [m, *shape]: one forward pass (jax.vjp), then
    its pullback once per output, unrolled (m is 1 + K, small); never a d x d Jacobian.

    Not ``jax.vmap(vjp)`` over the m cotangents: batching the pullback gives every backward op
    (convolutions, attention) an extra axis, and a training step of helmholtz-dit took 192 ms
    that way against 137 ms unrolled (stein-dit 180 / 135, helmholtz-unet 386 / 328,
    helmholtz-mlp 7.2 / 6.9; one thread, batch 64, equal losses).
    """
    h, vjp = jax.vjp(fn, x)
    eye = jnp.eye(h.shape[0], dtype=h.dtype)
    return h, jnp.stack([vjp(eye[i])[0] for i in range(h.shape[0])])


def antisym_generators(kind: str, shape: tuple[int, ...], K: int) -> jax.Array:
    """The parameters M of K constant antisymmetric operators (see fields/torch/heads.py):
    "dense" [K, d, d], A_k = M_k - M_k^T; "conv" [K, C, C, 3, 3], A_k = C_k - C_k^T."""
    if kind == "dense":
        d = math.prod(shape)
        return jnp.zeros((K, d, d))
    if kind == "conv":
        C = shape[0]
        return jnp.zeros((K, C, C, 3, 3))
    raise ValueError(f"unknown antisymmetric operator {kind!r}")


def antisym_apply(m: jax.Array, v: jax.Array) -> jax.Array:
    """sum_k A_k v_k for one example: v [K, *shape] -> [*shape]."""
    K = v.shape[0]
    if m.ndim == 3:  # dense
        a = m - jnp.swapaxes(m, 1, 2)
        return jnp.einsum("kij,kj->i", a, v.reshape(K, -1)).reshape(v.shape[1:])
    # C - C^T is one convolution: kernel transposed in channels and flipped in space
    kernel = m - jnp.flip(jnp.swapaxes(m, 1, 2), (-2, -1))  # [K, C_out, C_in, 3, 3]
    C = m.shape[1]
    w = jnp.transpose(kernel, (1, 0, 2, 3, 4)).reshape(C, K * C, 3, 3)
    y = jax.lax.conv_general_dilated(v.reshape(1, K * C, *v.shape[2:]), w.astype(v.dtype),
                                     (1, 1), ((1, 1), (1, 1)),
                                     dimension_numbers=("NCHW", "OIHW", "NCHW"))
    return y[0]


def _quadratic_energy(f: jax.Array, x: jax.Array, sigma: jax.Array) -> jax.Array:
    """E = ||x - f||^2 / (2 sigma_t): x [*shape], f [d] -> []."""
    return 0.5 * jnp.sum((x.reshape(-1) - f) ** 2) / sigma


class EnergySqField(eqx.Module):
    """Quadratic energy E = ||x - f(x, t)||^2 / (2 sigma_t), s = -grad E (Salimans & Ho 2021; CSBM)."""

    net: eqx.Module
    schedule: Schedule = eqx.field(static=True)

    def energy(self, x: jax.Array, t: jax.Array) -> jax.Array:
        return _quadratic_energy(self.net(x, t), x, self.schedule.sigma(t))

    def score(self, x: jax.Array, t: jax.Array) -> jax.Array:
        return -jax.grad(self.energy)(x, t)


class HelmholtzField(eqx.Module):
    """Helmholtz head s = -grad E + sum_k A_k grad psi_k, A_k constant antisymmetric (DESIGN.md s2).

    E = ||x - f||^2 / (2 sigma_t), psi_k = h_k / sigma_t from the backbone's (f, h). The rotational
    part is divergence-free: div(A grad psi) = sum_ij A_ij d_i d_j psi = 0.
    """

    net: eqx.Module
    generators: jax.Array  # see antisym_generators
    schedule: Schedule = eqx.field(static=True)

    def __init__(self, net: eqx.Module, schedule: Schedule, generators: jax.Array) -> None:
        self.net, self.schedule, self.generators = net, schedule, generators

    def _potentials(self, x: jax.Array, t: jax.Array) -> jax.Array:
        h, sigma = self.net(x, t), self.schedule.sigma(t)
        d = x.size
        return jnp.concatenate([_quadratic_energy(h[:d], x, sigma)[None], h[d:] / sigma])

    def parts(self, x: jax.Array, t: jax.Array) -> dict[str, jax.Array]:
        """{"gradient": -grad E, "rotational": sum_k A_k grad psi_k}, each [*shape]."""
        _, g = grads_of_outputs(lambda y: self._potentials(y, t), x)  # [1 + K, *shape]
        return {"gradient": -g[0], "rotational": antisym_apply(self.generators, g[1:])}

    def score(self, x: jax.Array, t: jax.Array) -> jax.Array:
        p = self.parts(x, t)
        return p["gradient"] + p["rotational"]


class SteinField(eqx.Module):
    """Stein head s = grad phi + sum_k A_k (grad psi_k + psi_k grad phi) (DESIGN.md s2).

    phi = -||x - f||^2 / (2 sigma_t), psi_k = h_k. The rotational part
    w = e^-phi sum_k A_k grad(e^phi psi_k) has div(e^phi w) = 0: it lies in the null space of the
    Stein operator of rho ~ e^phi.
    """

    net: eqx.Module
    generators: jax.Array  # see antisym_generators
    schedule: Schedule = eqx.field(static=True)

    def __init__(self, net: eqx.Module, schedule: Schedule, generators: jax.Array) -> None:
        self.net, self.schedule, self.generators = net, schedule, generators

    def _potentials(self, x: jax.Array, t: jax.Array) -> jax.Array:
        h = self.net(x, t)
        d = x.size
        phi = -_quadratic_energy(h[:d], x, self.schedule.sigma(t))
        return jnp.concatenate([phi[None], h[d:]])

    def parts(self, x: jax.Array, t: jax.Array) -> dict[str, jax.Array]:
        """{"gradient": grad phi, "rotational": w}, each [*shape]."""
        h, g = grads_of_outputs(lambda y: self._potentials(y, t), x)  # g: [1 + K, *shape]
        psi = h[1:].reshape((-1,) + (1,) * x.ndim)
        inner = g[1:] + psi * g[0][None]  # grad psi_k + psi_k grad phi
        return {"gradient": g[0], "rotational": antisym_apply(self.generators, inner)}

    def score(self, x: jax.Array, t: jax.Array) -> jax.Array:
        p = self.parts(x, t)
        return p["gradient"] + p["rotational"]

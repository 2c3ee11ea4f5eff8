"""Jitted, vmapped JAX kernels used by the DLPack bridge and the diffrax engine."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp


def compiled(field, shape):
    """(score(params, x, t), score_div(params, x, t, probes), params): jax.jit functions of the
    field's array leaves (the rest of the module is static)."""
    params, static = eqx.partition(field, eqx.is_array)

    @jax.jit
    def score(p, x, t):
        return score_flat(eqx.combine(p, static), x, t, shape)

    @jax.jit
    def score_div(p, x, t, probes):
        return score_div_flat(eqx.combine(p, static), x, t, probes, shape)

    return score, score_div, params


def score_flat(field, x, t, shape):
    """x: [B, D], t: [B] -> the field's score [B, D] (the field sees [*shape])."""
    s = jax.vmap(field.score)(x.reshape(x.shape[0], *shape), t)
    return s.reshape(x.shape[0], -1)


def score_div_flat(field, x, t, probes, shape):
    """(score [B, D], divergence [B]); exact trace of the Jacobian if probes is None."""

    def fn(y, ti):
        return field.score(y.reshape(shape), ti).reshape(-1)

    if probes is None:
        def one(xi, ti):
            return fn(xi, ti), jnp.trace(jax.jacfwd(fn)(xi, ti))

        return jax.vmap(one)(x, t)

    def one_h(xi, ti, vi):
        s, jv = jax.jvp(lambda y: fn(y, ti), (xi,), (vi,))
        return s, jnp.dot(vi, jv)

    return jax.vmap(one_h)(x, t, probes)

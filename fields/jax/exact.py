"""Closed-form scores of analytic datasets under the forward process (Equinox; mirrors torch).

See fields/torch/exact.py for the formulas. One example: x: [d], t: [] (the full-covariance
mixture also takes one image [*shape]).
"""

from __future__ import annotations

import hashlib
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import log_ndtr

from fields.common import Schedule
from fields.common import floats as _floats


def log_ndtr_diff(p: jax.Array, q: jax.Array) -> jax.Array:
    """log(Phi(p) - Phi(q)) for p > q, accurate in both tails (reflect so both sit on the left)."""
    flip = q > 0
    a = jnp.where(flip, -q, p)
    b = jnp.where(flip, -p, q)
    la, lb = log_ndtr(a), log_ndtr(b)
    return la + jnp.log(-jnp.expm1(lb - la))


class GaussianMixtureExact(eqx.Module):
    """Exact score and log-density of a forward-diffused isotropic Gaussian mixture."""

    means: tuple = eqx.field(static=True)
    stds: tuple = eqx.field(static=True)
    weights: tuple = eqx.field(static=True)
    schedule: Schedule = eqx.field(static=True)

    def __init__(self, means, stds, weights, schedule: Schedule) -> None:
        self.means = _floats(means)
        self.stds = _floats(stds)
        self.weights = _floats(weights)
        self.schedule = schedule

    def _terms(self, x, t):
        m = jnp.asarray(self.means, dtype=x.dtype)
        s2 = jnp.asarray(self.stds, dtype=x.dtype) ** 2
        logw = jnp.log(jnp.asarray(self.weights, dtype=x.dtype))
        a, sg = self.schedule.alpha(t), self.schedule.sigma(t)
        var = a**2 * s2 + sg**2  # [K]
        diff = x - a * m  # [K, d]
        d = x.shape[-1]
        logp = logw - 0.5 * d * jnp.log(2 * math.pi * var) - 0.5 * (diff**2).sum(-1) / var
        return logp, diff, var

    def log_density(self, x: jax.Array, t: jax.Array) -> jax.Array:
        logp, _, _ = self._terms(x, t)
        return jax.scipy.special.logsumexp(logp)

    def score(self, x: jax.Array, t: jax.Array) -> jax.Array:
        logp, diff, var = self._terms(x, t)
        r = jax.nn.softmax(logp)
        return -(r[:, None] * diff / var[:, None]).sum(0)


class FullGaussianMixtureExact(eqx.Module):
    """Exact score and log-density of a forward-diffused full-covariance Gaussian mixture.

    One example: x: [d] or [*shape] (flattened, d = prod(shape)), t: []; the score has x's
    shape. The constants (U is [K, d, d]) are float64 numpy arrays in one static ``_Constants``:
    not parameters (``zoo.create`` leaves them alone), hashable for jit, folded into the
    compiled function; nested tuples of floats would be slow to hash at this size.
    """

    consts: _Constants = eqx.field(static=True)
    schedule: Schedule = eqx.field(static=True)

    def __init__(self, means, eigvecs, eigvals, weights, schedule: Schedule) -> None:
        self.consts = _Constants(means=means, eigvecs=eigvecs, eigvals=eigvals, weights=weights)
        self.schedule = schedule

    def _terms(self, x, t):
        """(log w_k N(x; alpha m_k, cov_k) [K], cov_k^{-1} (x - alpha m_k) [K, d])."""
        c = {k: jnp.asarray(v, dtype=x.dtype) for k, v in self.consts.arrays.items()}
        a, sg = self.schedule.alpha(t), self.schedule.sigma(t)
        v = a**2 * c["eigvals"] + sg**2  # [K, d]: eigenvalues of cov_k
        diff = x.reshape(1, -1) - a * c["means"]  # [K, d]
        z = jnp.einsum("kij,ki->kj", c["eigvecs"], diff) / jnp.sqrt(v)  # whitened
        d = diff.shape[-1]
        logp = jnp.log(c["weights"]) - 0.5 * (d * math.log(2 * math.pi) + jnp.log(v).sum(-1)
                                               + (z**2).sum(-1))
        prec_diff = jnp.einsum("kij,kj->ki", c["eigvecs"], z / jnp.sqrt(v))
        return logp, prec_diff

    def log_density(self, x: jax.Array, t: jax.Array) -> jax.Array:
        logp, _ = self._terms(x, t)
        return jax.scipy.special.logsumexp(logp)

    def score(self, x: jax.Array, t: jax.Array) -> jax.Array:
        logp, prec_diff = self._terms(x, t)
        r = jax.nn.softmax(logp)
        return -(r[:, None] * prec_diff).sum(0).reshape(x.shape)


class _Constants:
    """Named float64 numpy arrays as one static value: equal and hashed by content (a sha256 of
    names, shapes and bytes), so jit traces a field once and reuses the trace for equal ones."""

    def __init__(self, **arrays) -> None:
        self.arrays = {k: np.array(v, dtype=np.float64) for k, v in arrays.items()}
        h = hashlib.sha256()
        for k, v in self.arrays.items():
            v.flags.writeable = False
            h.update(f"{k}{v.shape}".encode())
            h.update(v.tobytes())
        self._key = h.hexdigest()

    def __hash__(self) -> int:
        return hash(self._key)

    def __eq__(self, other) -> bool:
        return isinstance(other, _Constants) and other._key == self._key


class BoxMixtureExact(eqx.Module):
    """Exact log-density of a forward-diffused mixture of uniform boxes; score by autodiff of it."""

    lows: tuple = eqx.field(static=True)
    highs: tuple = eqx.field(static=True)
    weights: tuple = eqx.field(static=True)
    schedule: Schedule = eqx.field(static=True)

    def __init__(self, lows, highs, weights, schedule: Schedule) -> None:
        self.lows = _floats(lows)
        self.highs = _floats(highs)
        self.weights = _floats(weights)
        self.schedule = schedule

    def log_density(self, x: jax.Array, t: jax.Array) -> jax.Array:
        lo = jnp.asarray(self.lows, dtype=x.dtype)
        hi = jnp.asarray(self.highs, dtype=x.dtype)
        logw = jnp.log(jnp.asarray(self.weights, dtype=x.dtype))
        a, sg = self.schedule.alpha(t), self.schedule.sigma(t)
        per_axis = log_ndtr_diff((x - a * lo) / sg, (x - a * hi) / sg) - jnp.log(a * (hi - lo))
        return jax.scipy.special.logsumexp(logw + per_axis.sum(-1))

    def score(self, x: jax.Array, t: jax.Array) -> jax.Array:
        return jax.grad(self.log_density)(x, t)

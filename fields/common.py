"""Backend-neutral pieces shared by ``fields.torch`` and ``fields.jax``.

Everything here works on numpy arrays, torch tensors and jax arrays alike (arithmetic only, with
the exponential taken from the array's own library), so both backends compute the same numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def _lib(a):
    """The array library of ``a``: torch, jax.numpy, or numpy for everything else."""
    mod = type(a).__module__
    if mod.startswith("torch"):
        import torch

        return torch
    if mod.startswith("jax"):
        import jax.numpy as jnp

        return jnp
    return np


@dataclass(frozen=True)
class Schedule:
    """Variance-preserving forward process dx = -1/2 beta(t) x dt + sqrt(beta(t)) dW.

    ``ou``: beta = 2, the seed paper's dX = -X dt + sqrt(2) dW, alpha_t = exp(-t).
    ``vp-linear``: beta(t) = beta_min + t (beta_max - beta_min) (Song et al. 2021).
    alpha_t = exp(-1/2 int_0^t beta), sigma_t^2 = 1 - alpha_t^2.
    """

    name: str = "ou"
    t_min: float = 1e-3
    T: float = 5.0
    beta_min: float = 0.1
    beta_max: float = 20.0

    def __post_init__(self) -> None:
        if self.name not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.name!r}; choose from {', '.join(SCHEDULES)}")
        if not (0 < self.t_min < self.T) or not math.isfinite(self.T):
            raise ValueError(f"need 0 < t_min < T < inf, got t_min={self.t_min}, T={self.T}")

    def beta(self, t):
        """beta(t), same shape as t."""
        if self.name == "ou":
            return 2.0 + 0.0 * t
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def int_beta(self, t):
        """int_0^t beta(u) du."""
        if self.name == "ou":
            return 2.0 * t
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t * t

    def alpha(self, t):
        """alpha_t = exp(-1/2 int_0^t beta)."""
        return _lib(t).exp(-0.5 * self.int_beta(t))

    def sigma(self, t):
        """sigma_t = sqrt(1 - alpha_t^2), via expm1 so it stays accurate at small t."""
        lib = _lib(t)
        return lib.sqrt(-lib.expm1(-self.int_beta(t)))


SCHEDULES = ("ou", "vp-linear")


def time_frequencies(n: int = 8, low: float = 0.25, high: float = 64.0) -> tuple[float, ...]:
    """Angular frequencies of the sinusoidal time embedding, geometric from ``low`` to ``high``.

    Plain Python floats so both backends (and Equinox's static fields) hold identical constants.
    """
    return tuple(float(f) for f in np.geomspace(low, high, n))


def floats(a) -> tuple | float:
    """Nested tuples of Python floats: hashable constants (not parameters), any dtype at call time."""
    return tuple(floats(v) for v in a) if hasattr(a, "__len__") else float(a)


ACTIVATIONS = ("silu", "gelu", "tanh", "softplus")

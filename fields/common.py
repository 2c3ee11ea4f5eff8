"""Backend-neutral pieces shared by ``fields.torch`` and ``fields.jax``.

Everything here works on numpy arrays, torch tensors and jax arrays alike (arithmetic only, with
the exponential taken from the array's own library), so both backends compute the same numbers.
"""

from __future__ import annotations

import math
import numbers
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


# ----------------------------------------------------------------------------- backbone plans
# Argument checks and size-dependent defaults of the image backbones, written once for both
# backends so they accept and reject the same inputs.


def is_int(v) -> bool:
    """An integer (Python or numpy), not a bool."""
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)

def unet_plan(shape, n_maps, n_scalars, channels, mults, blocks, attn, groups, n_freq):
    """Validate the arguments; return (mults, attn): per-level multipliers and attention heights.

    One function for both backends, so they accept and reject the same inputs.
    """
    def ints(v, what):
        try:
            return tuple(v)
        except TypeError:
            raise ValueError(f"UNet {what} must be a sequence of ints, got {v!r}") from None

    if not (isinstance(shape, (tuple, list)) and len(shape) == 3
            and all(is_int(s) and s > 0 for s in shape)):
        raise ValueError(f"UNet needs an image shape (C, H, W) of positive ints, got {shape!r}")
    for name, v, lo in (("n_maps", n_maps, 0), ("n_scalars", n_scalars, 0), ("channels", channels, 1),
                        ("blocks", blocks, 1), ("groups", groups, 1), ("n_freq", n_freq, 1)):
        if not is_int(v) or v < lo:
            raise ValueError(f"UNet {name} must be an int >= {lo}, got {v!r}")
    if n_maps + n_scalars == 0:
        raise ValueError("UNet needs at least one output (n_maps + n_scalars > 0)")
    _, h, w = shape = tuple(int(s) for s in shape)
    if mults is None:
        # Halve while both sides are even and stay >= 4, at most 3 levels: 8x8 -> (1, 2),
        # 28x28 -> (1, 2, 2), an odd side -> (1,) (no down-sampling).
        n, hh, ww = 1, h, w
        while n < 3 and hh % 2 == 0 and ww % 2 == 0 and hh // 2 >= 4 and ww // 2 >= 4:
            hh, ww, n = hh // 2, ww // 2, n + 1
        mults = (1,) + (2,) * (n - 1)
    mults = ints(mults, "mults")
    if not mults or not all(is_int(m) and m > 0 for m in mults):
        raise ValueError(f"UNet mults must be a non-empty sequence of positive ints, got {mults!r}")
    k = 2 ** (len(mults) - 1)
    if h % k or w % k:
        raise ValueError(f"UNet with {len(mults)} levels needs H and W divisible by {k}, got {shape}")
    bad = [channels * m for m in mults if (channels * m) % groups]
    if bad:
        raise ValueError(f"UNet groups={groups} must divide every channel count, not {bad[0]}")
    heights = [h // 2**i for i in range(len(mults))]
    attn = (heights[-1],) if attn is None else ints(attn, "attn")
    if not all(is_int(a) and a in heights for a in attn):
        raise ValueError(f"UNet attn must list feature-map heights among {heights}, got {attn!r}")
    return tuple(int(m) for m in mults), tuple(int(a) for a in attn)


_PATCHES = (2, 4, 7)  # default patch sides, smallest first
_MAX_TOKENS = 64  # the default patch keeps at most this many tokens


def dit_plan(shape, n_maps, n_scalars, patch, hidden, depth, heads, mlp_ratio, n_freq):
    """Validate the arguments; return the patch side (the default chosen if ``patch`` is None).

    One function for both backends, so they accept and reject the same inputs.
    """
    if not (isinstance(shape, (tuple, list)) and len(shape) == 3
            and all(is_int(s) and s > 0 for s in shape)):
        raise ValueError(f"DiT needs an image shape (C, H, W) of positive ints, got {shape!r}")
    for name, v, lo in (("n_maps", n_maps, 0), ("n_scalars", n_scalars, 0), ("hidden", hidden, 1),
                        ("depth", depth, 1), ("heads", heads, 1), ("n_freq", n_freq, 1)):
        if not is_int(v) or v < lo:
            raise ValueError(f"DiT {name} must be an int >= {lo}, got {v!r}")
    if n_maps + n_scalars == 0:
        raise ValueError("DiT needs at least one output (n_maps + n_scalars > 0)")
    if hidden % heads:
        raise ValueError(f"DiT hidden={hidden} must be divisible by heads={heads}")
    if hidden % 4:  # the 2-D sin-cos position embedding splits hidden into 4 equal parts
        raise ValueError(f"DiT hidden={hidden} must be divisible by 4 (2-D sin-cos positions)")
    if not (isinstance(mlp_ratio, (int, float)) and int(hidden * mlp_ratio) >= 1):
        raise ValueError(f"DiT mlp_ratio must be a positive number, got {mlp_ratio!r}")
    _, h, w = shape
    if patch is None:
        fits = [p for p in _PATCHES if h % p == 0 and w % p == 0]
        small = [p for p in fits if (h // p) * (w // p) <= _MAX_TOKENS]
        # no candidate leaves <= 64 tokens: take the coarsest that divides (1 = pixel tokens)
        patch = small[0] if small else max(fits, default=1)
    if not is_int(patch) or patch < 1:
        raise ValueError(f"DiT patch must be a positive int, got {patch!r}")
    if h % patch or w % patch:
        raise ValueError(f"DiT patch={patch} must divide the image sides H={h} and W={w}")
    return int(patch)


def sincos_2d(gh: int, gw: int, dim: int) -> np.ndarray:
    """Fixed 2-D sin-cos position embedding [gh gw, dim] (float64), tokens in row-major order.

    As the DiT reference (MAE's get_2d_sincos_pos_embed): the first dim/2 features encode the
    column, the last dim/2 the row, each as (sin(pos w_k), cos(pos w_k)), w_k = 10000^(-k/(dim/4)).
    """
    omega = 1.0 / 10000 ** (np.arange(dim // 4, dtype=np.float64) / (dim / 4))
    rows, cols = np.meshgrid(np.arange(gh, dtype=np.float64), np.arange(gw, dtype=np.float64),
                             indexing="ij")

    def one(pos):
        a = pos.reshape(-1)[:, None] * omega
        return np.concatenate([np.sin(a), np.cos(a)], axis=1)

    return np.concatenate([one(cols), one(rows)], axis=1)


def autoencoder_plan(shape, latent, channels) -> tuple[int, int]:
    """Validate the autoencoder's arguments; return (h, w), the feature map's sides after the
    encoder's two stride-2 convolutions (H / 4, W / 4: 2 x 2 for 8x8 digits, 7 x 7 for MNIST).

    One function for both backends, so they accept and reject the same inputs.
    """
    if not (isinstance(shape, (tuple, list)) and len(shape) == 3
            and all(is_int(s) and s > 0 for s in shape)):
        raise ValueError(f"autoencoder needs an image shape (C, H, W) of positive ints, got {shape!r}")
    for name, v in (("latent", latent), ("channels", channels)):
        if not is_int(v) or v < 1:
            raise ValueError(f"autoencoder {name} must be a positive int, got {v!r}")
    _, h, w = (int(s) for s in shape)
    if h % 4 or w % 4:  # two stride-2 convolutions down, two nearest x2 up-samplings back
        raise ValueError(f"autoencoder needs H and W divisible by 4, got {tuple(shape)}")
    return h // 4, w // 4

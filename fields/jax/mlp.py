"""MLP backbone with a sinusoidal time embedding (Equinox; mirrors fields/torch/mlp.py)."""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp

from fields.common import time_frequencies
from fields.jax.layers import time_embedding

_ACT = {
    "silu": jax.nn.silu,
    # torch's gelu default is the exact erf form; match it
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "tanh": jnp.tanh,
    "softplus": jax.nn.softplus,
}



class MLP(eqx.Module):
    """f(x, t): concat(x, emb(t)) -> `depth` x (Linear, act) -> Linear to n_maps d + n_scalars.

    One example: x: [*shape] (flattened to d), t: [] -> [n_maps d + n_scalars] (the backbone
    contract; see fields/torch/mlp.py). Parameter names: layers.{i}.weight/bias, out.weight/bias
    (same as the PyTorch MLP).
    """

    layers: list[eqx.nn.Linear]
    out: eqx.nn.Linear
    freqs: tuple[float, ...] = eqx.field(static=True)
    act: str = eqx.field(static=True)

    def __init__(
        self,
        shape: tuple[int, ...],
        n_maps: int,
        n_scalars: int = 0,
        *,
        scalar_bias: bool = True,
        width: int = 256,
        depth: int = 3,
        act: str = "silu",
        n_freq: int = 8,
        key: jax.Array,
        dtype=None,
    ) -> None:
        dim = math.prod(shape)
        out_dim, out_bias = n_maps * dim + n_scalars, n_maps > 0 or scalar_bias
        self.freqs = time_frequencies(n_freq)
        self.act = act
        sizes = [dim + 2 * n_freq] + [width] * depth
        keys = jax.random.split(key, depth + 1)
        self.layers = [
            eqx.nn.Linear(a, b, key=k, dtype=dtype)
            for a, b, k in zip(sizes[:-1], sizes[1:], keys[:-1])
        ]
        self.out = eqx.nn.Linear(sizes[-1], out_dim, use_bias=out_bias, key=keys[-1], dtype=dtype)

    def __call__(self, x: jax.Array, t: jax.Array) -> jax.Array:
        h = jnp.concatenate([x.reshape(-1), time_embedding(t, self.freqs)])
        for layer in self.layers:
            h = _ACT[self.act](layer(h))
        return self.out(h)

"""MLP backbone with a sinusoidal time embedding (Equinox; mirrors fields/torch/mlp.py)."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from fields.common import time_frequencies

_ACT = {
    "silu": jax.nn.silu,
    # torch's gelu default is the exact erf form; match it
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "tanh": jnp.tanh,
    "softplus": jax.nn.softplus,
}


def time_embedding(t: jax.Array, freqs: tuple[float, ...]) -> jax.Array:
    """[] -> [2 n]: (sin(w_k t), cos(w_k t)) for the fixed frequencies w_k."""
    a = t * jnp.asarray(freqs, dtype=t.dtype)
    return jnp.concatenate([jnp.sin(a), jnp.cos(a)])


class MLP(eqx.Module):
    """f(x, t): concat(x, emb(t)) -> `depth` x (Linear, act) -> Linear to `out_dim`.

    One example: x: [dim] (flattened), t: [] -> [out_dim].
    Parameter names: layers.{i}.weight/bias, out.weight/bias (same as the PyTorch MLP).
    ``out_bias=False`` for energies: a constant offset of E has no gradient in x, so it cannot learn.
    """

    layers: list[eqx.nn.Linear]
    out: eqx.nn.Linear
    freqs: tuple[float, ...] = eqx.field(static=True)
    act: str = eqx.field(static=True)

    def __init__(
        self,
        dim: int,
        out_dim: int,
        width: int = 256,
        depth: int = 3,
        act: str = "silu",
        n_freq: int = 8,
        out_bias: bool = True,
        *,
        key: jax.Array,
        dtype=None,
    ) -> None:
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

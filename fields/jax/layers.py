"""Layers shared by the Equinox backbones (mirrors fields/torch/layers.py, same parameter names).

Equinox layers are written for one example. Where Equinox's own layer stores a parameter in
another shape than torch's (a convolution's bias is [O, 1, 1] in Equinox, [O] in torch), the layer
is written here with torch's shapes, so one safetensors file loads into either backend.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from fields.common import time_frequencies


def time_embedding(t: jax.Array, freqs: tuple[float, ...]) -> jax.Array:
    """[] -> [2 n]: (sin(w_k t), cos(w_k t)) for the fixed frequencies w_k."""
    a = t * jnp.asarray(freqs, dtype=t.dtype)
    return jnp.concatenate([jnp.sin(a), jnp.cos(a)])


class Conv2d(eqx.Module):
    """torch.nn.Conv2d for one example: x [I, H, W] -> [O, H', W'].

    weight [O, I, kh, kw] and bias [O], as torch stores them; cross-correlation like torch.
    """

    weight: jax.Array
    bias: jax.Array | None
    stride: int = eqx.field(static=True)
    padding: int = eqx.field(static=True)

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, padding: int = 0,
                 use_bias: bool = True, *, key: jax.Array, dtype=None) -> None:
        dtype = dtype or jnp.float32
        self.weight = jnp.zeros((out_ch, in_ch, kernel, kernel), dtype)  # zoo.init sets values
        self.bias = jnp.zeros((out_ch,), dtype) if use_bias else None
        self.stride, self.padding = stride, padding

    def __call__(self, x: jax.Array) -> jax.Array:
        p = self.padding
        y = jax.lax.conv_general_dilated(
            x[None], self.weight.astype(x.dtype), window_strides=(self.stride, self.stride),
            padding=((p, p), (p, p)), dimension_numbers=("NCHW", "OIHW", "NCHW"))[0]
        return y if self.bias is None else y + self.bias.astype(x.dtype)[:, None, None]


__all__ = ["Conv2d", "time_embedding", "time_frequencies"]

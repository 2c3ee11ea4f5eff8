"""A small convolutional KL-regularised autoencoder (Kingma & Welling 2014, as the first stage of
latent diffusion, Rombach et al. 2022) in Equinox; mirrors fields/torch/autoencoder.py.

Written for one example, as every Equinox module here (vmap over a batch). Same architecture,
arguments and parameter names as the PyTorch version (see its docstrings: why the latent is a
flat vector of 16 numbers, why the decoder ends in tanh). Parameters are created as zeros in
``dtype`` (float32 if None); their values come from a weight file or ``zoo.init``.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from fields.common import autoencoder_plan
from fields.jax.layers import Conv2d


def _upsample(x: jax.Array) -> jax.Array:
    """Nearest x2 up-sampling of [C, H, W] (torch's F.interpolate(mode="nearest"))."""
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


class Encoder(eqx.Module):
    """One example: x [C, H, W] -> (mean, logvar) [latent] each (see fields/torch/autoencoder.py).

    Parameter names: convs.{0..3}.weight/bias, moments.weight/bias.
    """

    convs: list[Conv2d]
    moments: eqx.nn.Linear

    def __init__(self, shape: tuple[int, int, int], latent: int, channels: int, *, key,
                 dtype) -> None:
        h, w = autoencoder_plan(shape, latent, channels)
        c_img, c = int(shape[0]), channels
        k = jax.random.split(key, 5)
        self.convs = [
            Conv2d(c_img, c, 3, padding=1, key=k[0], dtype=dtype),
            Conv2d(c, 2 * c, 3, stride=2, padding=1, key=k[1], dtype=dtype),
            Conv2d(2 * c, 2 * c, 3, padding=1, key=k[2], dtype=dtype),
            Conv2d(2 * c, 4 * c, 3, stride=2, padding=1, key=k[3], dtype=dtype),
        ]
        self.moments = eqx.nn.Linear(4 * c * h * w, 2 * latent, key=k[4], dtype=dtype)

    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        h = x
        for conv in self.convs:
            h = jax.nn.silu(conv(h))
        mean, logvar = jnp.split(self.moments(h.reshape(-1)).astype(x.dtype), 2)
        return mean, logvar


class Decoder(eqx.Module):
    """One example: z [latent] -> x [C, H, W] in (-1, 1) (see fields/torch/autoencoder.py).

    Parameter names: linear.weight/bias, convs.{0..3}.weight/bias.
    """

    linear: eqx.nn.Linear
    convs: list[Conv2d]
    hw: tuple[int, int] = eqx.field(static=True)

    def __init__(self, shape: tuple[int, int, int], latent: int, channels: int, *, key,
                 dtype) -> None:
        self.hw = autoencoder_plan(shape, latent, channels)
        c_img, c = int(shape[0]), channels
        k = jax.random.split(key, 5)
        self.linear = eqx.nn.Linear(latent, 4 * c * self.hw[0] * self.hw[1], key=k[0], dtype=dtype)
        self.convs = [
            Conv2d(4 * c, 2 * c, 3, padding=1, key=k[1], dtype=dtype),
            Conv2d(2 * c, 2 * c, 3, padding=1, key=k[2], dtype=dtype),
            Conv2d(2 * c, c, 3, padding=1, key=k[3], dtype=dtype),
            Conv2d(c, c_img, 3, padding=1, key=k[4], dtype=dtype),
        ]

    def __call__(self, z: jax.Array) -> jax.Array:
        h = jax.nn.silu(self.linear(z).astype(z.dtype)).reshape(-1, *self.hw)
        h = jax.nn.silu(self.convs[0](_upsample(h)))
        h = jax.nn.silu(self.convs[1](h))
        h = jax.nn.silu(self.convs[2](_upsample(h)))
        return jnp.tanh(self.convs[3](h))


class Autoencoder(eqx.Module):
    """A KL-regularised convolutional autoencoder for one image [C, H, W] (H, W divisible by 4).

    ``encode(x)`` -> (mean, logvar) [latent] each; ``decode(z)`` -> [C, H, W];
    ``__call__(x)`` = decode(mean). Parameter names equal fields/torch/autoencoder.py's.
    """

    encoder: Encoder
    decoder: Decoder
    shape: tuple[int, int, int] = eqx.field(static=True)
    latent: int = eqx.field(static=True)

    def __init__(self, shape: tuple[int, int, int] = (1, 8, 8), latent: int = 16,
                 channels: int = 16, *, key: jax.Array, dtype=None) -> None:
        dtype = dtype or jnp.float32
        k1, k2 = jax.random.split(key)
        self.shape, self.latent = tuple(int(s) for s in shape), int(latent)
        self.encoder = Encoder(shape, latent, channels, key=k1, dtype=dtype)
        self.decoder = Decoder(shape, latent, channels, key=k2, dtype=dtype)

    def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        return self.encoder(x)

    def decode(self, z: jax.Array) -> jax.Array:
        return self.decoder(z)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.decode(self.encode(x)[0])

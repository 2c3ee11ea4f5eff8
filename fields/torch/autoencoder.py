"""A small convolutional KL-regularised autoencoder (Kingma & Welling 2014, as the first stage of
latent diffusion, Rombach et al. 2022) in PyTorch; mirrors fields/jax/autoencoder.py.

The latent is flat, a vector of ``latent`` numbers (16 by default), not a spatial map: every
field of the zoo then runs on it with the MLP backbone, which takes any flat shape, and 16 is
gmm-d's dimension, where the MLP heads are tested and compared. A spatial latent of 8x8 digits
(e.g. 4 x 2 x 2) would be too small for the UNet's or the DiT's down-sampling anyway.

This module is the network only; training, the latent scale factor and the files live in
``zoo.autoencoder``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from fields.common import autoencoder_plan


class Encoder(nn.Module):
    """x [B, C, H, W] -> (mean, logvar) of the posterior q(z | x) = N(mean, diag(exp(logvar))),
    each [B, latent].

    conv3x3 (C -> c) -> SiLU -> conv3x3 stride 2 (c -> 2c) -> SiLU -> conv3x3 (2c -> 2c) -> SiLU
    -> conv3x3 stride 2 (2c -> 4c) -> SiLU -> flatten (channel-major, [4c H/4 W/4]) -> Linear
    ``moments`` to 2 latent numbers: the mean first, then the log-variance.
    Parameter names: convs.{0..3}.weight/bias, moments.weight/bias.
    """

    def __init__(self, shape: tuple[int, int, int], latent: int, channels: int) -> None:
        super().__init__()
        h, w = autoencoder_plan(shape, latent, channels)
        c_img, c = int(shape[0]), channels
        self.convs = nn.ModuleList([
            nn.Conv2d(c_img, c, 3, padding=1),
            nn.Conv2d(c, 2 * c, 3, stride=2, padding=1),
            nn.Conv2d(2 * c, 2 * c, 3, padding=1),
            nn.Conv2d(2 * c, 4 * c, 3, stride=2, padding=1),
        ])
        self.moments = nn.Linear(4 * c * h * w, 2 * latent)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = x
        for conv in self.convs:
            h = F.silu(conv(h))
        mean, logvar = self.moments(h.flatten(1)).chunk(2, dim=1)
        return mean, logvar


class Decoder(nn.Module):
    """z [B, latent] -> x [B, C, H, W] in (-1, 1).

    Linear ``linear`` to [4c, H/4, W/4] -> SiLU -> nearest x2 -> conv3x3 (4c -> 2c) -> SiLU
    -> conv3x3 (2c -> 2c) -> SiLU -> nearest x2 -> conv3x3 (2c -> c) -> SiLU -> conv3x3 (c -> C)
    -> tanh. The tanh keeps every decoded image in the data's range [-1, 1], whatever latent it
    is given: a poor latent field's off-manifold samples decode to images the classifier and
    the pixel-L2 memorisation check read on the same scale as real ones (digits use the whole
    range: the background is exactly -1, which tanh approaches to within the reconstruction
    error). Parameter names: linear.weight/bias, convs.{0..3}.weight/bias.
    """

    def __init__(self, shape: tuple[int, int, int], latent: int, channels: int) -> None:
        super().__init__()
        self.hw = autoencoder_plan(shape, latent, channels)
        c_img, c = int(shape[0]), channels
        self.linear = nn.Linear(latent, 4 * c * self.hw[0] * self.hw[1])
        self.convs = nn.ModuleList([
            nn.Conv2d(4 * c, 2 * c, 3, padding=1),
            nn.Conv2d(2 * c, 2 * c, 3, padding=1),
            nn.Conv2d(2 * c, c, 3, padding=1),
            nn.Conv2d(c, c_img, 3, padding=1),
        ])

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.linear(z)).reshape(len(z), -1, *self.hw)
        h = F.silu(self.convs[0](F.interpolate(h, scale_factor=2, mode="nearest")))
        h = F.silu(self.convs[1](h))
        h = F.silu(self.convs[2](F.interpolate(h, scale_factor=2, mode="nearest")))
        return torch.tanh(self.convs[3](h))


class Autoencoder(nn.Module):
    """A KL-regularised convolutional autoencoder for images [B, C, H, W] (H, W divisible by 4).

    ``encode(x)`` -> (mean, logvar) [B, latent] each; ``decode(z)`` -> [B, C, H, W];
    ``forward(x)`` = decode(mean): the deterministic reconstruction. Parameter names
    (encoder.convs.{i}, encoder.moments, decoder.linear, decoder.convs.{i}) equal
    fields/jax/autoencoder.py's, so one safetensors file loads into either.
    """

    def __init__(self, shape: tuple[int, int, int] = (1, 8, 8), latent: int = 16,
                 channels: int = 16) -> None:
        super().__init__()
        self.shape, self.latent = tuple(int(s) for s in shape), int(latent)
        self.encoder = Encoder(shape, latent, channels)
        self.decoder = Decoder(shape, latent, channels)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x)[0])

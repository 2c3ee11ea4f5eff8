"""MLP backbone with a sinusoidal time embedding (PyTorch; mirrors fields/jax/mlp.py)."""

from __future__ import annotations

import math

import torch
from torch import nn

from fields.common import time_frequencies
from fields.torch.layers import time_embedding

_ACT = {
    "silu": nn.functional.silu,
    "gelu": nn.functional.gelu,
    "tanh": torch.tanh,
    "softplus": nn.functional.softplus,
}



class MLP(nn.Module):
    """f(x, t): concat(x, emb(t)) -> `depth` x (Linear, act) -> Linear to n_maps d + n_scalars.

    x: [B, *shape] (flattened to d = prod(shape)), t: [B] -> [B, n_maps d + n_scalars]: n_maps
    x-shaped maps and n_scalars scalars, flattened and concatenated (the backbone contract).
    Parameter names: layers.{i}.weight/bias, out.weight/bias (same as the Equinox MLP).
    The output layer has a bias unless every output is a scalar without one (``scalar_bias``
    False: a constant offset of an energy has no gradient in x, so it cannot learn).
    """

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
    ) -> None:
        super().__init__()
        dim = math.prod(shape)
        out_dim, out_bias = n_maps * dim + n_scalars, n_maps > 0 or scalar_bias
        self.freqs = time_frequencies(n_freq)
        self.act = _ACT[act]
        sizes = [dim + 2 * n_freq] + [width] * depth
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.out = nn.Linear(sizes[-1], out_dim, bias=out_bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h = torch.cat([x.flatten(1), time_embedding(t, self.freqs)], dim=-1)
        for layer in self.layers:
            h = self.act(layer(h))
        return self.out(h)

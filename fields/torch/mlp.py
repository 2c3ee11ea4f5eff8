"""MLP backbone with a sinusoidal time embedding (PyTorch; mirrors fields/jax/mlp.py)."""

from __future__ import annotations

import torch
from torch import nn

from fields.common import time_frequencies

_ACT = {
    "silu": nn.functional.silu,
    "gelu": nn.functional.gelu,
    "tanh": torch.tanh,
    "softplus": nn.functional.softplus,
}


def time_embedding(t: torch.Tensor, freqs: tuple[float, ...]) -> torch.Tensor:
    """[B] -> [B, 2 n]: (sin(w_k t), cos(w_k t)) for the fixed frequencies w_k."""
    w = torch.tensor(freqs, dtype=t.dtype, device=t.device)
    a = t[:, None] * w
    return torch.cat([torch.sin(a), torch.cos(a)], dim=-1)


class MLP(nn.Module):
    """f(x, t): concat(x, emb(t)) -> `depth` x (Linear, act) -> Linear to `out_dim`.

    x: [B, dim] (extra feature dims are flattened), t: [B] -> [B, out_dim].
    Parameter names: layers.{i}.weight/bias, out.weight/bias (same as the Equinox MLP).
    ``out_bias=False`` for energies: a constant offset of E has no gradient in x, so it cannot learn.
    """

    def __init__(
        self,
        dim: int,
        out_dim: int,
        width: int = 256,
        depth: int = 3,
        act: str = "silu",
        n_freq: int = 8,
        out_bias: bool = True,
    ) -> None:
        super().__init__()
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

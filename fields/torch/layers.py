"""Layers shared by the PyTorch backbones (mirrors fields/jax/layers.py, same parameter names)."""

from __future__ import annotations

import torch

from fields.common import time_frequencies


def time_embedding(t: torch.Tensor, freqs: tuple[float, ...]) -> torch.Tensor:
    """[B] -> [B, 2 n]: (sin(w_k t), cos(w_k t)) for the fixed frequencies w_k."""
    w = torch.tensor(freqs, dtype=t.dtype, device=t.device)
    a = t[:, None] * w
    return torch.cat([torch.sin(a), torch.cos(a)], dim=-1)


__all__ = ["time_embedding", "time_frequencies"]

"""Score heads on a backbone (PyTorch; mirrors fields/jax/heads.py).

Each head turns a backbone f(x, t) into a score s(x, t) ~ grad_x log rho_t(x); see DESIGN.md s2.
"""

from __future__ import annotations

import torch
from torch import nn

from fields.common import Schedule


def _bcast(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """[B] -> [B, 1, ..., 1] to broadcast against x: [B, *shape]."""
    return v.reshape(v.shape + (1,) * (x.ndim - 1))


def grad_of_scalar(fn, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """grad_x of a per-example scalar fn(x, t): [B] with one reverse pass.

    Works under no_grad (sampling) and keeps the graph when the caller records one (training),
    so parameter gradients flow through the returned score.
    """
    keep = torch.is_grad_enabled()
    with torch.enable_grad():
        xg = x if x.requires_grad else x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(fn(xg, t).sum(), xg, create_graph=keep)
    return g


class FreeField(nn.Module):
    """Unconstrained epsilon-parameterised score s = -f(x, t) / sigma_t (Ho et al. 2020)."""

    def __init__(self, backbone: nn.Module, schedule: Schedule) -> None:
        super().__init__()
        self.net = backbone
        self.schedule = schedule

    def score(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x: [B, *shape], t: [B] -> [B, *shape]."""
        return -self.net(x, t).reshape(x.shape) / _bcast(self.schedule.sigma(t), x)


class EnergyField(nn.Module):
    """Conservative score s = -grad_x E, E = g(x, t) / sigma_t a scalar network (Salimans & Ho 2021)."""

    def __init__(self, backbone: nn.Module, schedule: Schedule) -> None:
        super().__init__()
        self.net = backbone
        self.schedule = schedule

    def energy(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x: [B, *shape], t: [B] -> E: [B]."""
        return self.net(x, t)[:, 0] / self.schedule.sigma(t)

    def score(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return -grad_of_scalar(self.energy, x, t)

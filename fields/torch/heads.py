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


def grads_of_outputs(fn, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """h = fn(x, t): [B, m] per-example scalars and their x-gradients [B, m, *shape].

    One reverse pass per output (m is 1 + K, small); never a d x d Jacobian.
    """
    keep = torch.is_grad_enabled()
    with torch.enable_grad():
        xg = x if x.requires_grad else x.detach().requires_grad_(True)
        h = fn(xg, t)
        gs = [torch.autograd.grad(h[:, i].sum(), xg, create_graph=keep, retain_graph=True)[0]
              for i in range(h.shape[1])]
    return (h if keep else h.detach()), torch.stack(gs, 1)


def _antisym(m: torch.Tensor) -> torch.Tensor:
    """[K, d, d] -> A_k = M_k - M_k^T."""
    return m - m.transpose(1, 2)


class EnergySqField(nn.Module):
    """Quadratic energy E = ||x - f(x, t)||^2 / (2 sigma_t), s = -grad E (Salimans & Ho 2021; CSBM)."""

    def __init__(self, backbone: nn.Module, schedule: Schedule) -> None:
        super().__init__()
        self.net = backbone
        self.schedule = schedule

    def energy(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        r = x.flatten(1) - self.net(x, t)
        return 0.5 * (r**2).sum(1) / self.schedule.sigma(t)

    def score(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return -grad_of_scalar(self.energy, x, t)


class HelmholtzField(nn.Module):
    """Helmholtz head s = -grad E + sum_k A_k grad psi_k, A_k = M_k - M_k^T (DESIGN.md s2).

    E = h_0 / sigma_t and psi_k = h_k / sigma_t share the backbone h: [B, 1 + K]. The rotational
    part is divergence-free: div(A grad psi) = sum_ij A_ij d_i d_j psi = 0.
    """

    def __init__(self, backbone: nn.Module, schedule: Schedule, dim: int, K: int) -> None:
        super().__init__()
        self.net = backbone
        self.schedule = schedule
        self.generators = nn.Parameter(torch.zeros(K, dim, dim))

    def _potentials(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(x, t) / self.schedule.sigma(t)[:, None]

    def parts(self, x: torch.Tensor, t: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"gradient": -grad E, "rotational": sum_k A_k grad psi_k}, each [B, *shape]."""
        _, g = grads_of_outputs(self._potentials, x, t)
        g = g.flatten(2)  # [B, 1 + K, d]
        rot = torch.einsum("kij,bkj->bi", _antisym(self.generators), g[:, 1:])
        return {"gradient": -g[:, 0].reshape(x.shape), "rotational": rot.reshape(x.shape)}

    def score(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        p = self.parts(x, t)
        return p["gradient"] + p["rotational"]


class SteinField(nn.Module):
    """Stein head s = grad phi + sum_k A_k (grad psi_k + psi_k grad phi) (DESIGN.md s2).

    phi = h_0 / sigma_t, psi_k = h_k. The rotational part w = e^-phi sum_k A_k grad(e^phi psi_k)
    has div(e^phi w) = 0: it lies in the null space of the Stein operator of rho ~ e^phi.
    """

    def __init__(self, backbone: nn.Module, schedule: Schedule, dim: int, K: int) -> None:
        super().__init__()
        self.net = backbone
        self.schedule = schedule
        self.generators = nn.Parameter(torch.zeros(K, dim, dim))

    def _potentials(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h = self.net(x, t)
        return torch.cat([h[:, :1] / self.schedule.sigma(t)[:, None], h[:, 1:]], dim=1)

    def parts(self, x: torch.Tensor, t: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"gradient": grad phi, "rotational": w}, each [B, *shape]."""
        h, g = grads_of_outputs(self._potentials, x, t)
        g = g.flatten(2)  # [B, 1 + K, d]
        grad_phi = g[:, 0]
        inner = g[:, 1:] + h[:, 1:, None] * grad_phi[:, None, :]  # grad psi_k + psi_k grad phi
        w = torch.einsum("kij,bkj->bi", _antisym(self.generators), inner)
        return {"gradient": grad_phi.reshape(x.shape), "rotational": w.reshape(x.shape)}

    def score(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        p = self.parts(x, t)
        return p["gradient"] + p["rotational"]

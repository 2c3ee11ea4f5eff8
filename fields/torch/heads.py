"""Score heads on a backbone (PyTorch; mirrors fields/jax/heads.py).

Each head turns a backbone f(x, t) into a score s(x, t) ~ grad_x log rho_t(x); see DESIGN.md s2.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from fields.common import Schedule


def _bcast(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """[B] -> [B, 1, ..., 1] to broadcast against x: [B, *shape]."""
    return v.reshape(v.shape + (1,) * (x.ndim - 1))


def grad_of_scalar(fn, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """grad_x of a per-example scalar fn(x, t): [B] with one reverse pass.

    Works under no_grad (sampling) and keeps the graph when the caller records one (training),
    so parameter gradients flow through the returned score. Under torch.compile, which cannot
    differentiate twice through torch.autograd.grad, the same gradient by torch.func.grad.
    """
    if torch.compiler.is_compiling():
        return torch.func.grad(lambda xg: fn(xg, t).sum())(x)
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

    One reverse pass per output (m is 1 + K, small); never a d x d Jacobian. Under torch.compile
    the same pullbacks by torch.func.vjp (see ``grad_of_scalar``).
    """
    if torch.compiler.is_compiling():
        h, pull = torch.func.vjp(lambda xg: fn(xg, t), x)
        eye = torch.eye(h.shape[1], dtype=h.dtype, device=h.device)
        return h, torch.stack([pull(eye[i].expand_as(h))[0] for i in range(h.shape[1])], 1)
    keep = torch.is_grad_enabled()
    with torch.enable_grad():
        xg = x if x.requires_grad else x.detach().requires_grad_(True)
        h = fn(xg, t)
        gs = [torch.autograd.grad(h[:, i].sum(), xg, create_graph=keep, retain_graph=True)[0]
              for i in range(h.shape[1])]
    return (h if keep else h.detach()), torch.stack(gs, 1)


def antisym_generators(kind: str, shape: tuple[int, ...], K: int) -> nn.Parameter:
    """The parameters M of K constant antisymmetric operators A_k on x-shaped vectors.

    "dense": M [K, d, d], A_k = M_k - M_k^T (O(d^2) parameters: points).
    "conv": M [K, C, C, 3, 3] for x [C, H, W], A_k = C_k - C_k^T with C_k the 3x3 convolution
    (zero padding 1) of kernel M_k: O(C^2) parameters and O(d) cost at any image size.
    Either is constant in x, so div(A grad psi) = 0 and the Stein-null identity hold exactly.
    """
    if kind == "dense":
        d = math.prod(shape)
        return nn.Parameter(torch.zeros(K, d, d))
    if kind == "conv":
        C = shape[0]
        return nn.Parameter(torch.zeros(K, C, C, 3, 3))
    raise ValueError(f"unknown antisymmetric operator {kind!r}")


def antisym_apply(m: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """sum_k A_k v_k for v: [B, K, *shape] -> [B, *shape] (A_k from ``antisym_generators``)."""
    B, K = v.shape[:2]
    if m.ndim == 3:  # dense
        a = m - m.transpose(1, 2)
        return torch.einsum("kij,bkj->bi", a, v.flatten(2)).reshape(B, *v.shape[2:])
    # C - C^T is itself a convolution: the adjoint of a stride-1, zero-padded 3x3 correlation is
    # the correlation with the kernel transposed in channels and flipped in space
    kernel = m - m.transpose(1, 2).flip(-2, -1)  # [K, C_out, C_in, 3, 3], antisymmetric
    C = m.shape[1]
    w = kernel.permute(1, 0, 2, 3, 4).reshape(C, K * C, 3, 3)  # all K operators in one conv
    return nn.functional.conv2d(v.reshape(B, K * C, *v.shape[3:]), w, padding=1)


def _quadratic_energy(f: torch.Tensor, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """E = ||x - f||^2 / (2 sigma_t): x [B, *shape], f [B, d], sigma [B] -> [B]."""
    return 0.5 * ((x.flatten(1) - f) ** 2).sum(1) / sigma


class EnergySqField(nn.Module):
    """Quadratic energy E = ||x - f(x, t)||^2 / (2 sigma_t), s = -grad E (Salimans & Ho 2021; CSBM)."""

    def __init__(self, backbone: nn.Module, schedule: Schedule) -> None:
        super().__init__()
        self.net = backbone
        self.schedule = schedule

    def energy(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return _quadratic_energy(self.net(x, t), x, self.schedule.sigma(t))

    def score(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return -grad_of_scalar(self.energy, x, t)


class HelmholtzField(nn.Module):
    """Helmholtz head s = -grad E + sum_k A_k grad psi_k, A_k constant antisymmetric (DESIGN.md s2).

    The backbone gives f (x-shaped) and K scalars h_k: E = ||x - f||^2 / (2 sigma_t) (the
    quadratic energy of EnergySqField) and psi_k = h_k / sigma_t. The rotational part is
    divergence-free: div(A grad psi) = sum_ij A_ij d_i d_j psi = 0.
    """

    def __init__(self, backbone: nn.Module, schedule: Schedule, generators: nn.Parameter) -> None:
        super().__init__()
        self.net = backbone
        self.schedule = schedule
        self.generators = generators  # see antisym_generators

    def _potentials(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """[B, 1 + K]: E, psi_1 .. psi_K."""
        h, sigma = self.net(x, t), self.schedule.sigma(t)
        d = x[0].numel()
        return torch.cat([_quadratic_energy(h[:, :d], x, sigma)[:, None],
                          h[:, d:] / sigma[:, None]], dim=1)

    def parts(self, x: torch.Tensor, t: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"gradient": -grad E, "rotational": sum_k A_k grad psi_k}, each [B, *shape]."""
        _, g = grads_of_outputs(self._potentials, x, t)  # [B, 1 + K, *shape]
        return {"gradient": -g[:, 0], "rotational": antisym_apply(self.generators, g[:, 1:])}

    def score(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        p = self.parts(x, t)
        return p["gradient"] + p["rotational"]


class SteinField(nn.Module):
    """Stein head s = grad phi + sum_k A_k (grad psi_k + psi_k grad phi) (DESIGN.md s2).

    phi = -||x - f||^2 / (2 sigma_t) (the quadratic energy), psi_k = h_k. The rotational part
    w = e^-phi sum_k A_k grad(e^phi psi_k) has div(e^phi w) = 0: it lies in the null space of the
    Stein operator of rho ~ e^phi.
    """

    def __init__(self, backbone: nn.Module, schedule: Schedule, generators: nn.Parameter) -> None:
        super().__init__()
        self.net = backbone
        self.schedule = schedule
        self.generators = generators  # see antisym_generators

    def _potentials(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """[B, 1 + K]: phi, psi_1 .. psi_K."""
        h = self.net(x, t)
        d = x[0].numel()
        phi = -_quadratic_energy(h[:, :d], x, self.schedule.sigma(t))
        return torch.cat([phi[:, None], h[:, d:]], dim=1)

    def parts(self, x: torch.Tensor, t: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"gradient": grad phi, "rotational": w}, each [B, *shape]."""
        h, g = grads_of_outputs(self._potentials, x, t)  # g: [B, 1 + K, *shape]
        grad_phi = g[:, 0]
        psi = h[:, 1:].reshape(h.shape[0], -1, *([1] * (x.ndim - 1)))
        inner = g[:, 1:] + psi * grad_phi[:, None]  # grad psi_k + psi_k grad phi
        return {"gradient": grad_phi, "rotational": antisym_apply(self.generators, inner)}

    def score(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        p = self.parts(x, t)
        return p["gradient"] + p["rotational"]

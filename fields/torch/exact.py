"""Closed-form scores of analytic datasets under the forward process (PyTorch; mirrors jax).

The ground truth every solver, diagnostic and metric is checked against. With
x_t = alpha_t x_0 + sigma_t eps:
- Gaussian mixture sum_k w_k N(m_k, s_k^2 I) -> rho_t = sum_k w_k N(alpha m_k, (alpha^2 s_k^2 + sigma^2) I).
- Mixture of uniform boxes prod_i U[a_i, b_i] -> per axis
  rho_t(x_i) = (Phi((x_i - alpha a_i)/sigma) - Phi((x_i - alpha b_i)/sigma)) / (alpha (b_i - a_i)).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from fields.common import Schedule
from fields.common import floats as _floats
from fields.torch.heads import grad_of_scalar


def log_ndtr_diff(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """log(Phi(p) - Phi(q)) for p > q, accurate in both tails (reflect so both sit on the left)."""
    flip = q > 0
    a = torch.where(flip, -q, p)
    b = torch.where(flip, -p, q)
    la, lb = torch.special.log_ndtr(a), torch.special.log_ndtr(b)
    return la + torch.log(-torch.expm1(lb - la))


class GaussianMixtureExact(nn.Module):
    """Exact score and log-density of a forward-diffused isotropic Gaussian mixture."""

    def __init__(self, means, stds, weights, schedule: Schedule) -> None:
        super().__init__()
        self.means = _floats(means)  # [K, d] as floats: no parameters, any dtype
        self.stds = _floats(stds)
        self.weights = _floats(weights)
        self.schedule = schedule

    def _terms(self, x, t):
        m = torch.tensor(self.means, dtype=x.dtype)
        s2 = torch.tensor(self.stds, dtype=x.dtype) ** 2
        logw = torch.log(torch.tensor(self.weights, dtype=x.dtype))
        a, sg = self.schedule.alpha(t)[:, None], self.schedule.sigma(t)[:, None]
        var = a**2 * s2 + sg**2  # [B, K]
        diff = x[:, None, :] - a[:, :, None] * m  # [B, K, d]
        d = x.shape[-1]
        logp = logw - 0.5 * d * torch.log(2 * math.pi * var) - 0.5 * (diff**2).sum(-1) / var
        return logp, diff, var

    def log_density(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x: [B, d], t: [B] -> log rho_t(x): [B]."""
        logp, _, _ = self._terms(x, t)
        return torch.logsumexp(logp, dim=1)

    def score(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """sum_k r_k(x) (alpha m_k - x) / var_k, r_k the posterior component weights."""
        logp, diff, var = self._terms(x, t)
        r = torch.softmax(logp, dim=1)
        return -(r[:, :, None] * diff / var[:, :, None]).sum(1)


class BoxMixtureExact(nn.Module):
    """Exact log-density of a forward-diffused mixture of uniform boxes; score by autodiff of it."""

    def __init__(self, lows, highs, weights, schedule: Schedule) -> None:
        super().__init__()
        self.lows = _floats(lows)  # [K, d]
        self.highs = _floats(highs)
        self.weights = _floats(weights)
        self.schedule = schedule

    def log_density(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        lo = torch.tensor(self.lows, dtype=x.dtype)
        hi = torch.tensor(self.highs, dtype=x.dtype)
        logw = torch.log(torch.tensor(self.weights, dtype=x.dtype))
        a, sg = self.schedule.alpha(t)[:, None, None], self.schedule.sigma(t)[:, None, None]
        xk = x[:, None, :]  # [B, 1, d]
        per_axis = log_ndtr_diff((xk - a * lo) / sg, (xk - a * hi) / sg) - torch.log(a * (hi - lo))
        return torch.logsumexp(logw + per_axis.sum(-1), dim=1)

    def score(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return grad_of_scalar(self.log_density, x, t)

"""Closed-form scores of analytic datasets under the forward process (PyTorch; mirrors jax).

The ground truth every solver, diagnostic and metric is checked against. With
x_t = alpha_t x_0 + sigma_t eps:
- Gaussian mixture sum_k w_k N(m_k, s_k^2 I) -> rho_t = sum_k w_k N(alpha m_k, (alpha^2 s_k^2 + sigma^2) I).
- Full-covariance mixture sum_k w_k N(m_k, C_k), C_k = U_k diag(lam_k) U_k^T ->
  rho_t = sum_k w_k N(alpha m_k, cov_k), cov_k = U_k diag(v_k) U_k^T, v_k = alpha^2 lam_k + sigma^2,
  so cov_k^{-1} = U_k diag(1 / v_k) U_k^T and log det cov_k = sum log v_k: no solve, no
  determinant, and v_k >= min(lam_k, 1) at every t (stable at small and large t alike).
- Mixture of uniform boxes prod_i U[a_i, b_i] -> per axis
  rho_t(x_i) = (Phi((x_i - alpha a_i)/sigma) - Phi((x_i - alpha b_i)/sigma)) / (alpha (b_i - a_i)).
"""

from __future__ import annotations

import math

import numpy as np
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


class FullGaussianMixtureExact(nn.Module):
    """Exact score and log-density of a forward-diffused full-covariance Gaussian mixture.

    Works on points [B, d] and on images [B, *shape] (flattened, d = prod(shape)); the score
    has the input's shape. The constants (U is [K, d, d]) are plain float64 tensors, cast to
    x's dtype and device at each call: nested tuples of floats (``_floats``) would be slow to
    rebuild at this size, and as neither parameters nor buffers they keep float64 through
    ``.to(dtype)`` and ``zoo.create`` leaves them alone.
    """

    def __init__(self, means, eigvecs, eigvals, weights, schedule: Schedule) -> None:
        super().__init__()
        self.means = _constant(means)  # [K, d]
        self.eigvecs = _constant(eigvecs)  # [K, d, d], columns are the eigenvectors
        self.eigvals = _constant(eigvals)  # [K, d]
        self.weights = _constant(weights)  # [K]
        self.schedule = schedule

    def _terms(self, x, t):
        """(log w_k N(x; alpha m_k, cov_k) [B, K], cov_k^{-1} (x - alpha m_k) [B, K, d])."""
        kw = {"dtype": x.dtype, "device": x.device}
        m, u, lam = self.means.to(**kw), self.eigvecs.to(**kw), self.eigvals.to(**kw)
        logw = torch.log(self.weights.to(**kw))
        a, sg = self.schedule.alpha(t)[:, None, None], self.schedule.sigma(t)[:, None, None]
        v = a**2 * lam + sg**2  # [B, K, d]: eigenvalues of cov_k
        diff = x.reshape(len(x), 1, -1) - a * m  # [B, K, d]
        z = torch.einsum("kij,bki->bkj", u, diff) / v.sqrt()  # whitened: |z|^2 is the Mahalanobis
        d = diff.shape[-1]
        logp = logw - 0.5 * (d * math.log(2 * math.pi) + torch.log(v).sum(-1) + (z**2).sum(-1))
        prec_diff = torch.einsum("kij,bkj->bki", u, z / v.sqrt())
        return logp, prec_diff

    def log_density(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x: [B, d] or [B, *shape], t: [B] -> log rho_t(x): [B]."""
        logp, _ = self._terms(x, t)
        return torch.logsumexp(logp, dim=1)

    def score(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """-sum_k r_k(x) cov_k^{-1} (x - alpha m_k), r_k the posterior component weights: x's shape."""
        logp, prec_diff = self._terms(x, t)
        r = torch.softmax(logp, dim=1)
        return -(r[:, :, None] * prec_diff).sum(1).reshape(x.shape)


def _constant(a) -> torch.Tensor:
    """A float64 copy on the CPU: a constant of the field, not a parameter or buffer."""
    return torch.tensor(np.asarray(a, dtype=np.float64))


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

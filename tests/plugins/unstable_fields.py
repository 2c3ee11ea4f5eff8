"""Broken third-party fields, for the reliability tests (tests/test_reliability.py).

- test-nan-after (torch): a diffused standard normal score, s = -x / (alpha_t^2 + sigma_t^2) + w,
  that turns NaN from its NAN_AFTER-th call on (a counter buffer): training calls the score once
  per step, so the loss of step NAN_AFTER is NaN.
- test-nan-grad (torch, jax): s = -x + where(c > 0, sqrt(c), 0) with c = -1: the score and the
  loss are finite, but d sqrt(c)/dc is NaN, and 0 * NaN = NaN: the gradient is NaN at step 1.
- test-bad-shape, test-bad-dtype, test-nan-probe (torch): a score of shape [B, 1], a float64
  score in a float32 run, a NaN score: refused by the probe before training.
"""

import equinox as eqx
import jax.numpy as jnp
import torch
from torch import nn

import zoo

NAN_AFTER = 7


class NanAfter(nn.Module):
    def __init__(self, dim, schedule, width=4):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(dim))
        self.v = nn.Parameter(torch.zeros(width))  # only to give the checkpoint a shape
        self.schedule = schedule
        self.register_buffer("calls", torch.zeros((), dtype=torch.int64))

    def score(self, x, t):
        self.calls += 1
        a, s = self.schedule.alpha(t)[:, None], self.schedule.sigma(t)[:, None]
        out = -x / (a**2 + s**2) + self.w + 0 * self.v.sum()
        return out * torch.nan if self.calls >= NAN_AFTER else out


@zoo.register("test-nan-after", "torch")
def make_nan_after(dim, schedule, width=4):
    """Turns NaN at step NAN_AFTER (test plugin)."""
    return NanAfter(dim, schedule, width)


class NanGradTorch(nn.Module):
    def __init__(self, dim, schedule):
        super().__init__()
        self.c = nn.Parameter(-torch.ones(dim))

    def score(self, x, t):
        return -x + torch.where(self.c > 0, torch.sqrt(self.c), torch.zeros_like(self.c))


class NanGradJax(eqx.Module):
    c: jnp.ndarray

    def score(self, x, t):  # one example: x [d], t []
        return -x + jnp.where(self.c > 0, jnp.sqrt(self.c), 0.0)


@zoo.register("test-nan-grad", "torch")
def make_nan_grad_torch(dim, schedule):
    """Finite score, NaN gradient (test plugin)."""
    return NanGradTorch(dim, schedule)


@zoo.register("test-nan-grad", "jax")
def make_nan_grad_jax(dim, schedule):
    """Finite score, NaN gradient (test plugin)."""
    return NanGradJax(-jnp.ones(dim))


class Bad(nn.Module):
    def __init__(self, dim, kind):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(dim))
        self.kind = kind

    def score(self, x, t):
        s = -x + self.w
        if self.kind == "shape":
            return s[:, :1]
        if self.kind == "dtype":
            return s.double()
        return s * torch.nan


for _kind in ("shape", "dtype"):
    zoo.register(f"test-bad-{_kind}", "torch")(lambda dim, schedule, k=_kind: Bad(dim, k))
zoo.register("test-nan-probe", "torch")(lambda dim, schedule: Bad(dim, "nan"))

"""Layers shared by the PyTorch backbones (mirrors fields/jax/layers.py, same parameter names)."""

from __future__ import annotations

import math

import torch
from torch.autograd import Function

from fields.common import time_frequencies


def time_embedding(t: torch.Tensor, freqs: tuple[float, ...]) -> torch.Tensor:
    """[B] -> [B, 2 n]: (sin(w_k t), cos(w_k t)) for the fixed frequencies w_k."""
    w = torch.tensor(freqs, dtype=t.dtype, device=t.device)
    a = t[:, None] * w
    return torch.cat([torch.sin(a), torch.cos(a)], dim=-1)


# The DiT's GELU for heads that differentiate the backbone twice (energy heads: the score is a
# gradient and the loss differentiates it again; qc, helmholtz, stein likewise). Eager torch
# differentiates the fused activation's backward kernel (gelu_backward) through a
# chain of a dozen elementwise kernels, and each one streams a whole activation tensor through
# memory: on the DiT's [B, N, 4D] MLP activations that chain was the largest part of an
# energy-dit step after the matrix products. Here the first derivative is the fused kernel
# again and the second a short closed form, so one double backward costs 3 fused kernels and a
# few elementwise ones. Every order stays differentiable (the backward is written in
# differentiable ops, and the forward-mode rule too), so higher derivatives are exact;
# torch.func (vmap, grad, jvp) and torch.compile work through it (under compile the plain
# function is used, and inductor fuses it). The same for the UNet's SiLU gained nothing (A/B in
# one process, energy-unet at 16 and 64 channels: 1.11x and 1.10x slower), so it keeps F.silu.

_GELU_C = math.sqrt(2.0 / math.pi)
_GELU_A = 0.044715


def _gelu_tanh_d2(x: torch.Tensor) -> torch.Tensor:
    """d^2/dx^2 of GELU's tanh form x (1 + tanh u) / 2, u = c (x + a x^3):
    (1 - tanh^2 u) (u' - x tanh(u) u'^2 + x u'' / 2), u' = c (1 + 3 a x^2), u'' = 6 a c x."""
    x2 = x * x
    th = torch.tanh(_GELU_C * x * (1 + _GELU_A * x2))
    du = _GELU_C * (1 + 3 * _GELU_A * x2)
    return (1 - th * th) * (du - x * th * du * du + 3 * _GELU_A * _GELU_C * x2)


_ACTS = {  # name: (forward, g * f'(x) as one fused kernel, f''(x))
    "gelu_tanh": (lambda x: torch.nn.functional.gelu(x, approximate="tanh"),
                  lambda g, x: torch.ops.aten.gelu_backward(g, x, approximate="tanh"),
                  _gelu_tanh_d2),
}


class _ActGrad(Function):
    """(g, x) -> g f'(x), the activation's fused backward kernel, with its own derivative:
    d/dg = f'(x) (the same kernel), d/dx = g f''(x)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(g, x, name):
        return _ACTS[name][1](g, x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        g, x, ctx.name = inputs
        ctx.save_for_backward(g, x)
        ctx.save_for_forward(g, x)

    @staticmethod
    def backward(ctx, gg):
        g, x = ctx.saved_tensors
        return _ActGrad.apply(gg, x, ctx.name), gg * g * _ACTS[ctx.name][2](x), None

    @staticmethod
    def jvp(ctx, g_t, x_t, _):
        g, x = ctx.saved_tensors
        return _ActGrad.apply(g_t, x, ctx.name) + g * _ACTS[ctx.name][2](x) * x_t


class _Act(Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(x, name):
        return _ACTS[name][0](x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, ctx.name = inputs
        ctx.save_for_backward(x)
        ctx.save_for_forward(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return _ActGrad.apply(g, x, ctx.name), None

    @staticmethod
    def jvp(ctx, x_t, _):
        (x,) = ctx.saved_tensors
        return _ActGrad.apply(x_t, x, ctx.name)


def twice_differentiable(name: str, x: torch.Tensor) -> torch.Tensor:
    """The activation ``name`` ("gelu_tanh") at x, with a double backward of 3 fused
    kernels and a closed-form second derivative instead of autograd's chain through the fused
    backward kernel. Same values and derivatives of every order (float64: tests/test_dit.py)."""
    if torch.compiler.is_compiling():
        return _ACTS[name][0](x)
    return _Act.apply(x, name)


class TwiceDifferentiable(torch.nn.Module):
    """``twice_differentiable`` as a module (e.g. timm's Mlp ``act_layer``)."""

    def __init__(self, name: str) -> None:
        super().__init__()
        if name not in _ACTS:
            raise ValueError(f"no twice-differentiable activation {name!r}; have {sorted(_ACTS)}")
        self.name = name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return twice_differentiable(self.name, x)


__all__ = ["TwiceDifferentiable", "time_embedding", "time_frequencies", "twice_differentiable"]

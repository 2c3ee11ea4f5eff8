"""Any field as one torch function on flat states, so torchdiffeq and torchsde sample torch and
JAX fields alike.

``TorchFieldFn`` wraps a torch field. ``JaxFieldFn`` is the DLPack bridge: torch tensors go to
JAX without a copy (``jax.dlpack.from_dlpack``), a jitted, vmapped Equinox score runs (heads
that differentiate inside JAX included), and the result comes back to torch without a copy
(``torch.from_dlpack``). Both count their evaluations in ``nfe``.
"""

from __future__ import annotations

import torch


class TorchFieldFn:
    """A batched torch field as score(x: [B, D], t: [B]) -> [B, D] (no graph kept)."""

    def __init__(self, field, shape: tuple[int, ...]) -> None:
        self.field, self.shape, self.nfe = field, tuple(shape), 0

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.nfe += 1
        with torch.no_grad():
            return self.field.score(x.reshape(-1, *self.shape), t).reshape(x.shape[0], -1)

    def score_and_div(self, x: torch.Tensor, t: torch.Tensor, probes: torch.Tensor | None = None):
        """(s [B, D], div_x s [B]): exact trace from D VJPs, or Hutchinson v^T J v with one VJP."""
        self.nfe += 1
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            s = self.field.score(xg.reshape(-1, *self.shape), t).reshape(x.shape[0], -1)
            if probes is None:
                div = sum(torch.autograd.grad(s[:, i].sum(), xg, retain_graph=True)[0][:, i]
                          for i in range(s.shape[1]))
            else:
                (u,) = torch.autograd.grad(s, xg, grad_outputs=probes)
                div = (u * probes).sum(1)
        return s.detach(), div.detach()


class JaxFieldFn:
    """The DLPack bridge: an Equinox field (one example) as a batched torch function."""

    def __init__(self, field, shape: tuple[int, ...]) -> None:
        from solvers import _jax_kernels  # imports JAX only when a JAX field is bridged

        self.field, self.shape, self.nfe = field, tuple(shape), 0
        # a plain jax.jit over the parameter leaves: cheaper to dispatch than eqx.filter_jit,
        # which re-flattens the whole module on every call
        self._score, self._score_div, self._params = _jax_kernels.compiled(field, self.shape)

    @staticmethod
    def to_jax(x: torch.Tensor):
        import jax.dlpack

        return jax.dlpack.from_dlpack(x.detach().contiguous())

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.nfe += 1
        return torch.from_dlpack(self._score(self._params, self.to_jax(x), self.to_jax(t)))

    def score_and_div(self, x: torch.Tensor, t: torch.Tensor, probes: torch.Tensor | None = None):
        """(s [B, D], div_x s [B]): exact trace (vmapped jacfwd) or Hutchinson v^T J v (one JVP)."""
        self.nfe += 1
        v = None if probes is None else self.to_jax(probes)
        s, div = self._score_div(self._params, self.to_jax(x), self.to_jax(t), v)
        return torch.from_dlpack(s), torch.from_dlpack(div)

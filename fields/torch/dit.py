"""DiT backbone with adaLN-zero blocks (Peebles & Xie 2023) in PyTorch; mirrors fields/jax/dit.py."""

from __future__ import annotations

import functools

import torch
from einops import rearrange
from timm.layers import Attention, Mlp, PatchEmbed  # the classes timm's ViT (and DiT) use
from torch import nn
from torch.nn import functional as F

from fields.common import dit_plan, sincos_2d, time_frequencies
from fields.torch.layers import TwiceDifferentiable, time_embedding

_EPS = 1e-6  # LayerNorm eps of the DiT reference, the same in both backends

def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x [B, N, D] * (1 + scale) + shift, with shift/scale [B, D] broadcast over the N tokens."""
    return x * (1 + scale[:, None]) + shift[:, None]


def _layer_norm(x: torch.Tensor) -> torch.Tensor:
    """LayerNorm over the last axis without affine parameters (adaLN supplies shift and scale).

    Written from mean and variance, not ``F.layer_norm``: in torch 2.14 the reverse-mode
    derivative of F.layer_norm's forward-mode (JVP) tangent is wrong. The qc penalty
    differentiates exactly that (w = J v by ``torch.func.jvp``, then d/dtheta): through
    F.layer_norm its gradient was off by 3e-3 to 2e-2 relative (against finite differences and
    JAX, float64), while scores, losses and first derivatives agreed. GroupNorm is not affected.
    tests/test_dit.py keeps the check.
    """
    mean = x.mean(-1, keepdim=True)
    var = (x - mean).square().mean(-1, keepdim=True)
    return (x - mean) * torch.rsqrt(var + _EPS)


class DiTBlock(nn.Module):
    """Pre-norm transformer block conditioned by adaLN-zero.

    x [B, N, D], c [B, D] -> [B, N, D]. ``adaLN_zero`` (zero-initialised) maps SiLU(c) to shift,
    scale and gate for the attention and the MLP branches; zero gates make the block the identity
    at initialisation.
    """

    def __init__(self, hidden: int, heads: int, mlp_ratio: float, fused: bool) -> None:
        super().__init__()
        self.attn = Attention(hidden, num_heads=heads, qkv_bias=True)
        # timm decides fused vs. math path per module; force it (the fused CPU kernel has no
        # double backward, which energy heads need)
        self.attn.fused_attn = fused
        # fused GELU when differentiated once (its backward is one kernel); when twice, the same
        # kernels with a closed-form second derivative (fields.torch.layers)
        act = ((lambda: nn.GELU(approximate="tanh")) if fused
               else functools.partial(TwiceDifferentiable, "gelu_tanh"))
        self.mlp = Mlp(hidden, int(hidden * mlp_ratio), act_layer=act)
        self.adaLN_zero = nn.Linear(hidden, 6 * hidden)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = self.adaLN_zero(F.silu(c)).chunk(6, -1)
        x = x + gate_a[:, None] * self.attn(modulate(_layer_norm(x), shift_a, scale_a))
        return x + gate_m[:, None] * self.mlp(modulate(_layer_norm(x), shift_m, scale_m))


class DiT(nn.Module):
    """Diffusion transformer: x [B, C, H, W], t [B] -> [B, n_maps C H W + n_scalars].

    Patchify (timm PatchEmbed: a stride-``patch`` conv) + fixed 2-D sin-cos positions -> ``depth``
    adaLN-zero blocks conditioned on c = time_mlp(sin/cos embedding of t) -> final LayerNorm
    modulated by ``final_adaLN_zero``. From those tokens:

    - n_maps image maps [n_maps C, H, W], flattened channel-major: ``final_zero`` (a zero-initialised
      Linear to patch^2 n_maps C per token), unpatchified; absent when n_maps == 0;
    - n_scalars scalars: the mean over tokens -> Linear ``scalars`` (ordinary init, not zero, so a
      scalar energy is not constant in x at the start; bias iff ``scalar_bias``); absent when 0.

    ``patch`` None: the smallest of 2, 4, 7 dividing H and W that leaves <= 64 tokens (2 for sides
    up to 16, 4 at 28x28); if none does, the largest of 1, 2, 4, 7 dividing both. ``hidden`` must be
    divisible by ``heads`` and by 4. ``fused`` False makes timm's Attention use the math path
    (differentiable twice on CPU, unlike torch's fused SDPA kernel) and the MLP's GELU
    ``TwiceDifferentiable("gelu_tanh")`` (cheaper to differentiate twice); the registry sets it
    for every head that differentiates the backbone twice.
    Parameter names are those of the Equinox DiT (``patch.proj.weight``, ``time_mlp.0.weight``,
    ``blocks.0.attn.qkv.weight``, ``blocks.0.adaLN_zero.weight``, ``final_zero.weight``, ...);
    the position embedding is a non-persistent buffer, not a parameter.
    """

    def __init__(
        self,
        shape: tuple[int, int, int],
        n_maps: int,
        n_scalars: int,
        *,
        scalar_bias: bool = True,
        patch: int | None = None,
        hidden: int = 128,
        depth: int = 4,
        heads: int = 4,
        mlp_ratio: float = 4.0,
        n_freq: int = 16,
        fused: bool = True,
    ) -> None:
        super().__init__()
        p = dit_plan(shape, n_maps, n_scalars, patch, hidden, depth, heads, mlp_ratio, n_freq)
        c, h, w = (int(s) for s in shape)
        self.shape, self.patch_size, self.n_maps = (c, h, w), p, n_maps
        self.grid = (h // p, w // p)
        self.freqs = time_frequencies(n_freq)
        self.patch = PatchEmbed(img_size=(h, w), patch_size=p, in_chans=c, embed_dim=hidden)
        self.register_buffer("pos_embed", self._pos_table(), persistent=False)
        self.time_mlp = nn.ModuleList([nn.Linear(2 * n_freq, hidden), nn.Linear(hidden, hidden)])
        self.blocks = nn.ModuleList(DiTBlock(hidden, heads, mlp_ratio, fused)
                                    for _ in range(depth))
        self.final_adaLN_zero = nn.Linear(hidden, 2 * hidden)
        self.final_zero = nn.Linear(hidden, p * p * n_maps * c) if n_maps else None
        self.scalars = nn.Linear(hidden, n_scalars, bias=scalar_bias) if n_scalars else None
        # zoo.init sets every weight by name; zero the adaLN-zero layers here too, so a bare
        # construction already starts with closed gates and a zero map, as in the paper
        with torch.no_grad():
            for name, prm in self.named_parameters():
                if any(part.endswith("_zero") for part in name.split(".")[:-1]):
                    prm.zero_()

    def _pos_table(self, like: torch.Tensor | None = None) -> torch.Tensor:
        """[N, D] sin-cos table in the dtype and device of ``like`` (default dtype, CPU if None)."""
        table = torch.as_tensor(sincos_2d(*self.grid, self.patch.proj.out_channels))
        return table.to(torch.get_default_dtype()) if like is None else table.to(like)

    def _apply(self, fn, recurse=True):
        # .to(float32) then .to(float64) would leave the table rounded to float32; rebuild it from
        # the exact values in whatever dtype and device the cast produced
        super()._apply(fn, recurse)
        self.pos_embed = self._pos_table(self.pos_embed)
        return self

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        emb = time_embedding(t.to(x.dtype), self.freqs)
        cond = self.time_mlp[1](F.silu(self.time_mlp[0](emb)))  # [B, D]
        # the patch convolution (stride = kernel = p) as one matrix product on the flattened
        # patches, with the conv's own weights: PatchEmbed's forward returns the conv's [B, D, N]
        # output transposed, and that layout, and its transpose in every backward, runs through
        # the whole token stream, so elementwise ops mix layouts (strided loops, up to 10x slower)
        proj, p = self.patch.proj, self.patch_size
        patches = rearrange(x, "b c (h p) (w q) -> b (h w) (c p q)", p=p, q=p)
        tokens = F.linear(patches, proj.weight.flatten(1), proj.bias)
        tokens = tokens + self.pos_embed.to(x.dtype)  # [B, N, D]
        for block in self.blocks:
            tokens = block(tokens, cond)
        shift, scale = self.final_adaLN_zero(F.silu(cond)).chunk(2, -1)
        tokens = modulate(_layer_norm(tokens), shift, scale)
        outs = []
        if self.final_zero is not None:
            p, (gh, gw) = self.patch_size, self.grid
            maps = rearrange(self.final_zero(tokens), "b (h w) (p q c) -> b c (h p) (w q)",
                             h=gh, w=gw, p=p, q=p)  # [B, n_maps C, H, W]
            outs.append(maps.flatten(1))
        if self.scalars is not None:
            outs.append(self.scalars(tokens.mean(1)))
        return torch.cat(outs, dim=-1)

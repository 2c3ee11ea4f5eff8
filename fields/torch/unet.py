"""DDPM++-style UNet backbone (Ho et al. 2020; Song et al. 2021) in PyTorch; mirrors fields/jax/unet.py."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from fields.common import time_frequencies, unet_plan
from fields.torch.layers import time_embedding

_SKIP_SCALE = 1 / math.sqrt(2)  # DDPM++ skip_rescale: residual sums keep unit variance with depth
_EPS = 1e-5  # GroupNorm eps, the same in both backends


class ResBlock(nn.Module):
    """GroupNorm -> SiLU -> conv3x3 -> scale-shift by the time embedding -> SiLU -> conv3x3, + skip.

    x: [B, I, H, W], emb: [B, E] (already through SiLU) -> [B, O, H, W]. ``skip`` is a 1x1 conv when
    I != O, else None (identity).
    """

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, groups: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_ch, eps=_EPS)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.temb = nn.Linear(emb_dim, 2 * out_ch)
        self.norm2 = nn.GroupNorm(groups, out_ch, eps=_EPS)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else None

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.temb(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.conv2(F.silu(self.norm2(h) * (1 + scale) + shift))
        return ((x if self.skip is None else self.skip(x)) + h) * _SKIP_SCALE


class Attention(nn.Module):
    """Single-head self-attention over pixels: x + proj(softmax(q^T k / sqrt(C)) v), rescaled.

    x: [B, C, H, W] -> [B, C, H, W]. Written out with einsum instead of
    F.scaled_dot_product_attention: the fused CPU kernel has no double backward, and heads
    differentiate through the backbone twice.
    """

    def __init__(self, ch: int, groups: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(groups, ch, eps=_EPS)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj = nn.Conv2d(ch, ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, hh, ww = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, hh * ww).unbind(1)
        w = torch.softmax(torch.einsum("bcn,bcm->bnm", q, k) / math.sqrt(c), dim=-1)
        a = torch.einsum("bnm,bcm->bcn", w, v).reshape(b, c, hh, ww)
        return (x + self.proj(a)) * _SKIP_SCALE


class Level(nn.Module):
    """One resolution of the down or up path: ResBlocks, each followed by attention if
    this resolution has it (``attn`` empty otherwise), then ``resample`` (stride-2 conv going
    down, nearest x2 + conv3x3 going up; None at the last level of the path)."""

    def __init__(self, res: list[ResBlock], attn: list[Attention], resample: nn.Module | None):
        super().__init__()
        self.res = nn.ModuleList(res)
        self.attn = nn.ModuleList(attn)
        self.resample = resample


class UNet(nn.Module):
    """DDPM++-style UNet: x [B, C, H, W], t [B] -> [B, n_maps C H W + n_scalars].

    The output concatenates ``n_maps`` image maps [n_maps C, H, W] flattened channel-major
    (GroupNorm -> SiLU -> conv3x3 ``out``) and ``n_scalars`` scalars (global average pool of the
    same normalised features -> Linear ``scalars``, with a bias iff ``scalar_bias``).

    Layout: ``conv_in`` (3x3, C -> channels); time embedding ``time_mlp`` = Linear(2 n_freq,
    4 channels) -> SiLU -> Linear(4 channels, 4 channels) on sinusoidal features of t;
    ``down.{i}`` levels of ``blocks`` ResBlocks (channels * mults[i] wide; scale-shift time
    conditioning) with a stride-2 conv between levels; middle ``mid_res1``, ``mid_attn``,
    ``mid_res2``; ``up.{i}`` levels (same resolution as ``down.{i}``, run in reverse) of
    ``blocks + 1`` ResBlocks on concatenated skips, with nearest x2 up-sampling + conv3x3.
    Residual and attention sums are scaled by 1/sqrt(2) (DDPM++'s skip_rescale).

    Defaults that depend on the image size:
    - ``mults=None``: halve while both sides are even and stay >= 4, at most 3 levels, with
      multipliers (1, 2, 2, ...): (1, 2) for 8x8, (1, 2, 2) for 28x28, (1, 2) for 12x12,
      (1,) for an odd side.
    - ``attn=None``: attention after every ResBlock at the lowest resolution only; otherwise
      ``attn`` lists the feature-map heights (e.g. (14, 7) for 28x28) that get attention. The
      middle always has attention.
    ``groups`` must divide every channel count. Parameter names equal fields/jax/unet.py's.
    """

    def __init__(
        self,
        shape: tuple[int, int, int],
        n_maps: int,
        n_scalars: int,
        *,
        scalar_bias: bool = True,
        channels: int = 32,
        mults: tuple[int, ...] | None = None,
        blocks: int = 1,
        attn: tuple[int, ...] | None = None,
        groups: int = 8,
        n_freq: int = 16,
    ) -> None:
        super().__init__()
        mults, attn = unet_plan(shape, n_maps, n_scalars, channels, mults, blocks, attn, groups, n_freq)
        shape = tuple(int(s) for s in shape)
        c_img, height, _ = shape
        self.shape, self.n_maps, self.n_scalars = tuple(shape), n_maps, n_scalars
        self.freqs = time_frequencies(n_freq)
        emb = 4 * channels
        self.time_mlp = nn.ModuleList([nn.Linear(2 * n_freq, emb), nn.Linear(emb, emb)])
        self.conv_in = nn.Conv2d(c_img, channels, 3, padding=1)

        widths = [channels * m for m in mults]
        last = len(mults) - 1
        skips, ch = [channels], channels  # channel counts of the skip activations, in order
        down = []
        for i, width in enumerate(widths):
            has_attn = height // 2**i in attn
            res, att = [], []
            for _ in range(blocks):
                res.append(ResBlock(ch, width, emb, groups))
                att += [Attention(width, groups)] if has_attn else []
                ch = width
                skips.append(ch)
            resample = None
            if i < last:
                resample = nn.Conv2d(ch, ch, 3, stride=2, padding=1)
                skips.append(ch)
            down.append(Level(res, att, resample))
        self.down = nn.ModuleList(down)

        self.mid_res1 = ResBlock(ch, ch, emb, groups)
        self.mid_attn = Attention(ch, groups)
        self.mid_res2 = ResBlock(ch, ch, emb, groups)

        up = [None] * len(widths)
        for i in reversed(range(len(widths))):
            has_attn = height // 2**i in attn
            res, att = [], []
            for _ in range(blocks + 1):
                res.append(ResBlock(ch + skips.pop(), widths[i], emb, groups))
                att += [Attention(widths[i], groups)] if has_attn else []
                ch = widths[i]
            up[i] = Level(res, att, nn.Conv2d(ch, ch, 3, padding=1) if i > 0 else None)
        self.up = nn.ModuleList(up)

        self.norm_out = nn.GroupNorm(groups, ch, eps=_EPS)
        self.out = nn.Conv2d(ch, n_maps * c_img, 3, padding=1) if n_maps else None
        self.scalars = nn.Linear(ch, n_scalars, bias=scalar_bias) if n_scalars else None

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        emb = time_embedding(t, self.freqs)
        emb = self.time_mlp[1](F.silu(self.time_mlp[0](emb)))
        emb = F.silu(emb)  # every ResBlock's projection reads SiLU(emb); apply it once

        h = self.conv_in(x)
        hs = [h]
        for level in self.down:
            for j, block in enumerate(level.res):
                h = block(h, emb)
                if len(level.attn):
                    h = level.attn[j](h)
                hs.append(h)
            if level.resample is not None:
                h = level.resample(h)
                hs.append(h)

        h = self.mid_res2(self.mid_attn(self.mid_res1(h, emb)), emb)

        for level in reversed(self.up):
            for j, block in enumerate(level.res):
                h = block(torch.cat([h, hs.pop()], dim=1), emb)
                if len(level.attn):
                    h = level.attn[j](h)
            if level.resample is not None:
                h = level.resample(F.interpolate(h, scale_factor=2, mode="nearest"))

        h = F.silu(self.norm_out(h))
        outs = []
        if self.out is not None:
            outs.append(self.out(h).flatten(1))
        if self.scalars is not None:
            outs.append(self.scalars(h.mean(dim=(2, 3))))
        return torch.cat(outs, dim=1)

"""DDPM++-style UNet backbone (Ho et al. 2020; Song et al. 2021) in Equinox; mirrors fields/torch/unet.py."""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp

from fields.common import time_frequencies, unet_plan
from fields.jax.layers import Conv2d, time_embedding

_SKIP_SCALE = 1 / math.sqrt(2)  # DDPM++ skip_rescale: residual sums keep unit variance with depth
_EPS = 1e-5  # GroupNorm eps, the same in both backends


def _norm(groups: int, ch: int, dtype) -> eqx.nn.GroupNorm:
    return eqx.nn.GroupNorm(groups, ch, eps=_EPS, dtype=dtype)


class ResBlock(eqx.Module):
    """GroupNorm -> SiLU -> conv3x3 -> scale-shift by the time embedding -> SiLU -> conv3x3, + skip.

    One example: x: [I, H, W], emb: [E] (already through SiLU) -> [O, H, W]. ``skip`` is a 1x1
    conv when I != O, else None (identity).
    """

    norm1: eqx.nn.GroupNorm
    conv1: Conv2d
    temb: eqx.nn.Linear
    norm2: eqx.nn.GroupNorm
    conv2: Conv2d
    skip: Conv2d | None

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, groups: int, *, key, dtype) -> None:
        k1, k2, k3, k4 = jax.random.split(key, 4)
        self.norm1 = _norm(groups, in_ch, dtype)
        self.conv1 = Conv2d(in_ch, out_ch, 3, padding=1, key=k1, dtype=dtype)
        self.temb = eqx.nn.Linear(emb_dim, 2 * out_ch, key=k2, dtype=dtype)
        self.norm2 = _norm(groups, out_ch, dtype)
        self.conv2 = Conv2d(out_ch, out_ch, 3, padding=1, key=k3, dtype=dtype)
        self.skip = Conv2d(in_ch, out_ch, 1, key=k4, dtype=dtype) if in_ch != out_ch else None

    def __call__(self, x: jax.Array, emb: jax.Array) -> jax.Array:
        h = self.conv1(jax.nn.silu(self.norm1(x)))
        scale, shift = jnp.split(self.temb(emb).astype(x.dtype)[:, None, None], 2)
        h = self.conv2(jax.nn.silu(self.norm2(h) * (1 + scale) + shift))
        return ((x if self.skip is None else self.skip(x)) + h) * _SKIP_SCALE


class Attention(eqx.Module):
    """Single-head self-attention over pixels: x + proj(softmax(q^T k / sqrt(C)) v), rescaled.

    One example: x: [C, H, W] -> [C, H, W] (same computation as the torch version).
    """

    norm: eqx.nn.GroupNorm
    qkv: Conv2d
    proj: Conv2d

    def __init__(self, ch: int, groups: int, *, key, dtype) -> None:
        k1, k2 = jax.random.split(key)
        self.norm = _norm(groups, ch, dtype)
        self.qkv = Conv2d(ch, 3 * ch, 1, key=k1, dtype=dtype)
        self.proj = Conv2d(ch, ch, 1, key=k2, dtype=dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        c, hh, ww = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(3, c, hh * ww)
        w = jax.nn.softmax(jnp.einsum("cn,cm->nm", q, k) / math.sqrt(c), axis=-1)
        a = jnp.einsum("nm,cm->cn", w, v).reshape(c, hh, ww)
        return (x + self.proj(a)) * _SKIP_SCALE


class Level(eqx.Module):
    """One resolution of the down or up path: ResBlocks, each followed by attention if
    this resolution has it (``attn`` empty otherwise), then ``resample`` (stride-2 conv going
    down, nearest x2 + conv3x3 going up; None at the last level of the path)."""

    res: list[ResBlock]
    attn: list[Attention]
    resample: Conv2d | None


def _upsample(x: jax.Array) -> jax.Array:
    """Nearest x2 up-sampling of [C, H, W] (torch's F.interpolate(mode="nearest"))."""
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


class UNet(eqx.Module):
    """DDPM++-style UNet for one example: x [C, H, W], t [] -> [n_maps C H W + n_scalars].

    Same architecture, arguments, defaults and parameter names as fields/torch/unet.py's UNet
    (see its docstring): ``mults=None`` halves while both sides are even and stay >= 4, at most 3
    levels ((1, 2) for 8x8, (1, 2, 2) for 28x28); ``attn=None`` puts attention at the lowest
    resolution only (``attn`` otherwise lists feature-map heights); the middle always has it.
    Parameters are created in ``dtype`` (float32 if None); zoo.init sets their values.
    """

    time_mlp: list[eqx.nn.Linear]
    conv_in: Conv2d
    down: list[Level]
    mid_res1: ResBlock
    mid_attn: Attention
    mid_res2: ResBlock
    up: list[Level]
    norm_out: eqx.nn.GroupNorm
    out: Conv2d | None
    scalars: eqx.nn.Linear | None
    freqs: tuple[float, ...] = eqx.field(static=True)
    shape: tuple[int, int, int] = eqx.field(static=True)
    n_maps: int = eqx.field(static=True)
    n_scalars: int = eqx.field(static=True)

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
        key: jax.Array,
        dtype=None,
    ) -> None:
        mults, attn = unet_plan(shape, n_maps, n_scalars, channels, mults, blocks, attn, groups, n_freq)
        dtype = dtype or jnp.float32
        keys = iter(jax.random.split(key, 8 + 2 * len(mults) * (2 * blocks + 2)))
        shape = tuple(int(s) for s in shape)
        c_img, height, _ = shape
        self.shape, self.n_maps, self.n_scalars = tuple(shape), n_maps, n_scalars
        self.freqs = time_frequencies(n_freq)
        emb = 4 * channels
        self.time_mlp = [eqx.nn.Linear(2 * n_freq, emb, key=next(keys), dtype=dtype),
                         eqx.nn.Linear(emb, emb, key=next(keys), dtype=dtype)]
        self.conv_in = Conv2d(c_img, channels, 3, padding=1, key=next(keys), dtype=dtype)

        def res_block(i, o):
            return ResBlock(i, o, emb, groups, key=next(keys), dtype=dtype)

        def attention(c):
            return Attention(c, groups, key=next(keys), dtype=dtype)

        widths = [channels * m for m in mults]
        last = len(mults) - 1
        skips, ch = [channels], channels  # channel counts of the skip activations, in order
        self.down = []
        for i, width in enumerate(widths):
            has_attn = height // 2**i in attn
            res, att = [], []
            for _ in range(blocks):
                res.append(res_block(ch, width))
                att += [attention(width)] if has_attn else []
                ch = width
                skips.append(ch)
            resample = None
            if i < last:
                resample = Conv2d(ch, ch, 3, stride=2, padding=1, key=next(keys), dtype=dtype)
                skips.append(ch)
            self.down.append(Level(res, att, resample))

        self.mid_res1 = res_block(ch, ch)
        self.mid_attn = attention(ch)
        self.mid_res2 = res_block(ch, ch)

        up = [None] * len(widths)
        for i in reversed(range(len(widths))):
            has_attn = height // 2**i in attn
            res, att = [], []
            for _ in range(blocks + 1):
                res.append(res_block(ch + skips.pop(), widths[i]))
                att += [attention(widths[i])] if has_attn else []
                ch = widths[i]
            resample = Conv2d(ch, ch, 3, padding=1, key=next(keys), dtype=dtype) if i > 0 else None
            up[i] = Level(res, att, resample)
        self.up = up

        self.norm_out = _norm(groups, ch, dtype)
        self.out = (Conv2d(ch, n_maps * c_img, 3, padding=1, key=next(keys), dtype=dtype)
                    if n_maps else None)
        self.scalars = (eqx.nn.Linear(ch, n_scalars, use_bias=scalar_bias, key=next(keys),
                                      dtype=dtype) if n_scalars else None)

    def __call__(self, x: jax.Array, t: jax.Array) -> jax.Array:
        emb = time_embedding(jnp.asarray(t, x.dtype), self.freqs)
        emb = self.time_mlp[1](jax.nn.silu(self.time_mlp[0](emb)))
        emb = jax.nn.silu(emb)  # every ResBlock's projection reads SiLU(emb); apply it once

        h = self.conv_in(x)
        hs = [h]
        for level in self.down:
            for j, block in enumerate(level.res):
                h = block(h, emb)
                if level.attn:
                    h = level.attn[j](h)
                hs.append(h)
            if level.resample is not None:
                h = level.resample(h)
                hs.append(h)

        h = self.mid_res2(self.mid_attn(self.mid_res1(h, emb)), emb)

        for level in reversed(self.up):
            for j, block in enumerate(level.res):
                h = block(jnp.concatenate([h, hs.pop()]), emb)
                if level.attn:
                    h = level.attn[j](h)
            if level.resample is not None:
                h = level.resample(_upsample(h))

        h = jax.nn.silu(self.norm_out(h))
        outs = []
        if self.out is not None:
            outs.append(self.out(h).reshape(-1))
        if self.scalars is not None:
            outs.append(self.scalars(h.mean(axis=(1, 2))).astype(h.dtype))
        return jnp.concatenate(outs)

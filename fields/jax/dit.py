"""DiT backbone with adaLN-zero blocks (Peebles & Xie 2023) in Equinox; mirrors fields/torch/dit.py."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from einops import rearrange

from fields.common import dit_plan, sincos_2d, time_frequencies
from fields.jax.layers import Conv2d, time_embedding

_EPS = 1e-6  # LayerNorm eps of the DiT reference, the same in both backends

def modulate(x: jax.Array, shift: jax.Array, scale: jax.Array) -> jax.Array:
    """x [N, D] * (1 + scale) + shift, with shift/scale [D] broadcast over the N tokens."""
    return x * (1 + scale) + shift


def _layer_norm(x: jax.Array) -> jax.Array:
    """LayerNorm over the last axis without affine parameters (biased variance, as torch)."""
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + _EPS)


def _tokens(layer: eqx.nn.Linear, x: jax.Array) -> jax.Array:
    """A Linear applied to every token: [N, I] -> [N, O]."""
    return jax.vmap(layer)(x)


def _zeros_like_linear(layer: eqx.nn.Linear) -> eqx.nn.Linear:
    """The same Linear with weight and bias zero (adaLN-zero layers)."""
    return eqx.tree_at(lambda m: (m.weight, m.bias), layer,
                       (jnp.zeros_like(layer.weight), jnp.zeros_like(layer.bias)))


class PatchEmbed(eqx.Module):
    """timm's PatchEmbed for one example: x [C, H, W] -> tokens [(H/p)(W/p), D], row-major.

    ``proj`` a stride-p p x p convolution with torch-shaped parameters (``patch.proj.weight``).
    """

    proj: Conv2d

    def __init__(self, in_ch: int, hidden: int, patch: int, *, key: jax.Array, dtype=None):
        self.proj = Conv2d(in_ch, hidden, patch, stride=patch, key=key, dtype=dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        return rearrange(self.proj(x), "d h w -> (h w) d")


class Attention(eqx.Module):
    """timm's Attention (qkv_bias=True), math path: tokens [N, D] -> [N, D].

    ``fused`` is not an option here: XLA differentiates the plain softmax(q k^T / sqrt(d)) v
    any number of times.
    """

    qkv: eqx.nn.Linear
    proj: eqx.nn.Linear
    heads: int = eqx.field(static=True)

    def __init__(self, hidden: int, heads: int, *, key: jax.Array, dtype=None):
        k1, k2 = jax.random.split(key)
        self.qkv = eqx.nn.Linear(hidden, 3 * hidden, key=k1, dtype=dtype)
        self.proj = eqx.nn.Linear(hidden, hidden, key=k2, dtype=dtype)
        self.heads = heads

    def __call__(self, x: jax.Array) -> jax.Array:
        # the same split as timm: qkv features ordered (3, heads, head_dim)
        q, k, v = rearrange(_tokens(self.qkv, x), "n (three h d) -> three h n d",
                            three=3, h=self.heads)
        w = jax.nn.softmax((q * q.shape[-1] ** -0.5) @ jnp.swapaxes(k, -1, -2), axis=-1)
        return _tokens(self.proj, rearrange(w @ v, "h n d -> n (h d)"))


class Mlp(eqx.Module):
    """timm's Mlp with GELU (tanh approximation, as DiT): tokens [N, D] -> [N, D]."""

    fc1: eqx.nn.Linear
    fc2: eqx.nn.Linear

    def __init__(self, hidden: int, width: int, *, key: jax.Array, dtype=None):
        k1, k2 = jax.random.split(key)
        self.fc1 = eqx.nn.Linear(hidden, width, key=k1, dtype=dtype)
        self.fc2 = eqx.nn.Linear(width, hidden, key=k2, dtype=dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        return _tokens(self.fc2, jax.nn.gelu(_tokens(self.fc1, x), approximate=True))


class DiTBlock(eqx.Module):
    """Pre-norm transformer block conditioned by adaLN-zero: x [N, D], c [D] -> [N, D].

    ``adaLN_zero`` (zero-initialised) maps SiLU(c) to shift, scale and gate for the attention and
    the MLP branches; zero gates make the block the identity at initialisation.
    """

    attn: Attention
    mlp: Mlp
    adaLN_zero: eqx.nn.Linear

    def __init__(self, hidden: int, heads: int, mlp_ratio: float, *, key: jax.Array, dtype=None):
        k1, k2, k3 = jax.random.split(key, 3)
        self.attn = Attention(hidden, heads, key=k1, dtype=dtype)
        self.mlp = Mlp(hidden, int(hidden * mlp_ratio), key=k2, dtype=dtype)
        self.adaLN_zero = _zeros_like_linear(eqx.nn.Linear(hidden, 6 * hidden, key=k3, dtype=dtype))

    def __call__(self, x: jax.Array, c: jax.Array) -> jax.Array:
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = jnp.split(
            self.adaLN_zero(jax.nn.silu(c)), 6)
        x = x + gate_a * self.attn(modulate(_layer_norm(x), shift_a, scale_a))
        return x + gate_m * self.mlp(modulate(_layer_norm(x), shift_m, scale_m))


class DiT(eqx.Module):
    """Diffusion transformer for one example: x [C, H, W], t [] -> [n_maps C H W + n_scalars].

    Same architecture, arguments, defaults and parameter names as fields/torch/dit.py (see there):
    patchify + fixed 2-D sin-cos positions -> ``depth`` adaLN-zero blocks conditioned on
    c = time_mlp(sin/cos embedding of t) -> final LayerNorm modulated by ``final_adaLN_zero``;
    n_maps maps [n_maps C, H, W] flattened channel-major via ``final_zero`` and unpatchify, and
    n_scalars scalars via the token mean -> ``scalars``.

    ``patch`` None: the smallest of 2, 4, 7 dividing H and W that leaves <= 64 tokens (2 for sides
    up to 16, 4 at 28x28); if none does, the largest of 1, 2, 4, 7 dividing both. ``fused`` is
    accepted for the common signature; the plain math attention is used either way. The position
    embedding is a numpy constant made at trace time, not a leaf. Parameters are created in
    ``dtype`` (float32 if None); zoo.init sets their values.
    """

    patch: PatchEmbed
    time_mlp: list[eqx.nn.Linear]
    blocks: list[DiTBlock]
    final_adaLN_zero: eqx.nn.Linear
    final_zero: eqx.nn.Linear | None
    scalars: eqx.nn.Linear | None
    shape: tuple[int, int, int] = eqx.field(static=True)
    patch_size: int = eqx.field(static=True)
    hidden: int = eqx.field(static=True)
    freqs: tuple[float, ...] = eqx.field(static=True)

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
        key: jax.Array,
        dtype=None,
    ) -> None:
        del fused  # XLA's attention here is plain math, differentiable twice
        dtype = dtype or jnp.float32
        p = dit_plan(shape, n_maps, n_scalars, patch, hidden, depth, heads, mlp_ratio, n_freq)
        c, h, w = (int(s) for s in shape)
        self.shape, self.patch_size, self.hidden = (c, h, w), p, hidden
        self.freqs = time_frequencies(n_freq)
        kp, kt0, kt1, kb, kf, km, ks = jax.random.split(key, 7)
        self.patch = PatchEmbed(c, hidden, p, key=kp, dtype=dtype)
        self.time_mlp = [eqx.nn.Linear(2 * n_freq, hidden, key=kt0, dtype=dtype),
                         eqx.nn.Linear(hidden, hidden, key=kt1, dtype=dtype)]
        self.blocks = [DiTBlock(hidden, heads, mlp_ratio, key=k, dtype=dtype)
                       for k in jax.random.split(kb, depth)]
        # zoo.init sets every weight by name; the _zero layers start at zero here too, as in DiT
        self.final_adaLN_zero = _zeros_like_linear(
            eqx.nn.Linear(hidden, 2 * hidden, key=kf, dtype=dtype))
        self.final_zero = (_zeros_like_linear(eqx.nn.Linear(hidden, p * p * n_maps * c, key=km,
                                                            dtype=dtype))
                           if n_maps else None)
        self.scalars = (eqx.nn.Linear(hidden, n_scalars, use_bias=scalar_bias, key=ks, dtype=dtype)
                        if n_scalars else None)

    def __call__(self, x: jax.Array, t: jax.Array) -> jax.Array:
        _, h, w = self.shape
        p = self.patch_size
        emb = time_embedding(t.astype(x.dtype), self.freqs)
        cond = self.time_mlp[1](jax.nn.silu(self.time_mlp[0](emb)))  # [D]
        pos = jnp.asarray(sincos_2d(h // p, w // p, self.hidden), dtype=x.dtype)
        tokens = self.patch(x) + pos  # [N, D]
        for block in self.blocks:
            tokens = block(tokens, cond)
        shift, scale = jnp.split(self.final_adaLN_zero(jax.nn.silu(cond)), 2)
        tokens = modulate(_layer_norm(tokens), shift, scale)
        outs = []
        if self.final_zero is not None:
            maps = rearrange(_tokens(self.final_zero, tokens), "(h w) (p q c) -> c (h p) (w q)",
                             h=h // p, w=w // p, p=p, q=p)  # [n_maps C, H, W]
            outs.append(maps.reshape(-1))
        if self.scalars is not None:
            outs.append(self.scalars(jnp.mean(tokens, axis=0)))
        return jnp.concatenate(outs)

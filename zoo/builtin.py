"""The built-in fields: one heads table x one backbones table, registered as ``{head}-{backbone}``.

The two tables below are the single place that says which heads and backbones exist, what each
backbone's options are (defaults, checks, help) and which data it takes; the registry, `zoo list`,
`zoo train --help` and the README's tables read them. Adding a backbone is two files
(``fields/torch/NAME.py``, ``fields/jax/NAME.py``, same parameter names) and one row here.

A backbone maps (x: [*shape], t) to ``n_maps`` x-shaped maps and ``n_scalars`` scalars, flattened
and concatenated; the head says how many of each it needs. ``zoo.create`` then sets the
backend-neutral initial weights, so the same seed gives the same field in both backends.
"""

from __future__ import annotations

import importlib
import inspect
import math
from dataclasses import dataclass, field

import numpy as np

from fields.common import ACTIVATIONS, Schedule
from zoo.data import BoxMixture, FullGaussianMixture, GaussianMixture, get_dataset
from zoo.registry import Option, ZooError, register, resolve_options

# ----------------------------------------------------------------------------- heads


@dataclass(frozen=True)
class Head:
    cls: str  # class name in fields.<backend>.heads
    n_maps: int  # x-shaped backbone outputs (f of s = -f/sigma, or of E = |x - f|^2 / 2 sigma)
    scalar_bias: bool  # False where scalars enter only through their gradients (a constant
    # offset has no x-gradient, so its bias could not learn)
    conservative: bool
    doc: str
    n_scalars: int = 0  # scalar outputs (a scalar energy); rotational heads add K potentials
    rotational: bool = False  # takes K antisymmetric operators A_k (option K)
    penalty: dict | None = None  # training penalty (zoo.train), e.g. qc
    double_backward: bool = False  # training differentiates through the backbone twice

    def scalars(self, K: int) -> int:
        return self.n_scalars + (K if self.rotational else 0)


# qc's lambda, measured on gmm8 (3000 steps, JAX, width 256): lambda = 1 cuts the mean NAsym of
# the trained field about 5x at small t (5e-4 -> 1e-4 at t = 0.02) at no cost in score error;
# lambda = 10 removes it (< 5e-5) but raises the relative score error at t = 0.1 from 0.12 to 0.21.
QC_DEFAULT = {"kind": "qc", "lambda": 1.0, "probes": 1}

# The two-part heads take their gradient part from the quadratic energy: on gmm8 a scalar-energy
# gradient part smears the modes into a ring at every budget tried, the quadratic one resolves
# them, so "gradient + rotation" is compared against the best gradient-only head.
HEADS = {
    "free": Head("FreeField", 1, True, False, "s = -f(x,t)/sigma_t, unconstrained"),
    "energy": Head("EnergyField", 0, False, True, "s = -grad_x E, E = g(x,t)/sigma_t, g a scalar "
                   "readout", n_scalars=1, double_backward=True),
    "energysq": Head("EnergySqField", 1, True, True,
                     "s = -grad_x E, E = ||x - f(x,t)||^2 / (2 sigma_t) (CSBM)",
                     double_backward=True),
    # psi_k enter only through their gradients: no scalar bias
    "helmholtz": Head("HelmholtzField", 1, False, False,
                      "s = -grad E + sum_k A_k grad psi_k, E quadratic, A_k grad psi_k "
                      "divergence-free", rotational=True, double_backward=True),
    # psi_k also enter as values (psi_k grad phi): the scalar bias is live
    "stein": Head("SteinField", 1, True, False,
                  "s = grad phi + sum_k A_k (grad psi_k + psi_k grad phi), phi = -E quadratic, "
                  "rotation Stein-null", rotational=True, double_backward=True),
    "qc": Head("FreeField", 1, True, False,
               "free field trained with lambda sigma^2 (tr JJ^T - tr J^2) (QCSBM)",
               penalty=QC_DEFAULT, double_backward=True),
}

# ----------------------------------------------------------------------------- options


def _pos_int(v):
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise ValueError(f"must be a positive integer, got {v!r}")
    return v


def _pos_float(v):
    if isinstance(v, bool) or not isinstance(v, int | float) or not (math.isfinite(v) and v > 0):
        raise ValueError(f"must be a positive finite number, got {v!r}")
    return float(v)


def _opt(check):
    """``check`` or None (the backbone then picks a value from the data's shape)."""
    return lambda v: None if v is None else check(v)


def _int_list(v):
    if isinstance(v, int) and not isinstance(v, bool):
        v = [v]
    if not isinstance(v, list | tuple) or not v:
        raise ValueError(f"must be a non-empty list of positive integers, got {v!r}")
    return [_pos_int(x) for x in v]


def _choice(*choices):
    def check(v):
        if v not in choices:
            raise ValueError(f"must be one of {', '.join(map(str, choices))}, got {v!r}")
        return v

    return check


def _bool(v):
    if not isinstance(v, bool):
        raise ValueError(f"must be true or false, got {v!r}")
    return v


K_OPTION = Option(2, _pos_int, "rotational heads: number of antisymmetric operators A_k")

# ----------------------------------------------------------------------------- backbones


@dataclass(frozen=True)
class Backbone:
    module: str  # fields.<backend>.<module>
    cls: str
    data: str  # "any": any shape, flattened (points, or images as vectors); "image": [C, H, W]
    options: dict[str, Option]
    small: dict  # options of a small, fast variant (tests, smoke runs)
    doc: str
    # where a head differentiates through the backbone twice, this option is set False: fused
    # attention kernels (torch's SDPA on CPU) have no double backward
    fused_option: str | None = None
    operator: str = "dense"  # antisymmetric operators of rotational heads: "dense" [K, d, d]
    # (O(d^2)) or "conv" (A v = C v - C^T v, C a 3x3 convolution: O(C^2) parameters, O(d) cost)
    extra: dict = field(default_factory=dict)


BACKBONES = {
    "mlp": Backbone("mlp", "MLP", "any", {
        "width": Option(256, _pos_int, "hidden units per layer"),
        "depth": Option(3, _pos_int, "hidden layers"),
        "act": Option("silu", _choice(*ACTIVATIONS), "activation"),
    }, {"width": 32, "depth": 2}, "concat(x, emb t) -> depth x (Linear, act) -> Linear"),
    "unet": Backbone("unet", "UNet", "image", {
        "channels": Option(32, _pos_int, "channels at the first level"),
        "mults": Option(None, _opt(_int_list), "channel multiplier per level, e.g. 1,2 "
                        "[default: 1,2 at 8x8, 1,2,2 at 28x28]"),
        "blocks": Option(1, _pos_int, "residual blocks per level"),
        "attn": Option(None, _opt(_int_list), "resolutions with self-attention "
                       "[default: the lowest]"),
        "groups": Option(8, _pos_int, "GroupNorm groups (divides every channel count)"),
    }, {"channels": 8, "groups": 2}, "DDPM++-style: residual GroupNorm/SiLU blocks, "
       "scale-shift time conditioning, skips, attention at the lowest resolution",
        operator="conv"),
    "dit": Backbone("dit", "DiT", "image", {
        "patch": Option(None, _opt(_pos_int), "patch side [default: 2 up to 16x16, 4 at 28x28]"),
        "hidden": Option(128, _pos_int, "token width"),
        "depth": Option(4, _pos_int, "transformer blocks"),
        "heads": Option(4, _pos_int, "attention heads (divides hidden)"),
        "mlp_ratio": Option(4.0, _pos_float, "MLP width / hidden"),
    }, {"hidden": 16, "depth": 1, "heads": 2}, "patchify, adaLN-zero transformer blocks "
       "(timm PatchEmbed, Attention, Mlp), unpatchify", fused_option="fused",
        operator="conv"),
}


def _specs(head: Head, backbone: Backbone) -> dict[str, Option]:
    return {**backbone.options, **({"K": K_OPTION} if head.rotational else {})}


def _field_factory(backend: str, head_name: str, head: Head, bb_name: str, bb: Backbone):
    def make(shape: tuple[int, ...], schedule: Schedule, **options):
        opts = resolve_options(_specs(head, bb), options)
        shape = tuple(int(s) for s in shape)
        if bb.data == "image" and len(shape) != 3:
            raise ZooError(f"{head_name}-{bb_name} needs image data of shape (C, H, W); this data "
                           f"has shape {shape} (use an -mlp field for points)")
        K = opts.pop("K", 0)
        kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in opts.items()}
        if bb.fused_option and head.double_backward:
            kw[bb.fused_option] = False
        mod = importlib.import_module(f"fields.{backend}.{bb.module}")
        heads = importlib.import_module(f"fields.{backend}.heads")
        if backend == "jax":
            import jax

            kw["key"] = jax.random.PRNGKey(0)
        try:
            net = getattr(mod, bb.cls)(shape, head.n_maps, head.scalars(K),
                                       scalar_bias=head.scalar_bias, **kw)
        except ValueError as e:  # an option that does not fit this data (e.g. patch vs size)
            raise ZooError(f"{head_name}-{bb_name}: {e}") from None
        if head.rotational:
            return getattr(heads, head.cls)(net, schedule, heads.antisym_generators(
                bb.operator, shape, K))
        return getattr(heads, head.cls)(net, schedule)

    make.__doc__ = f"{HEADS[head_name].doc} on {bb_name}: {bb.doc}"
    # the options as keyword parameters with their defaults, so signatures (and `zoo train
    # --help`) show them
    params = [inspect.Parameter("shape", inspect.Parameter.POSITIONAL_OR_KEYWORD),
              inspect.Parameter("schedule", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    specs = _specs(head, bb)
    params += [inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=o.default)
               for k, o in specs.items()]
    make.__signature__ = inspect.Signature(params)
    return make


for _bb_name, _bb in BACKBONES.items():
    for _name, _head in HEADS.items():
        for _backend in ("torch", "jax"):
            register(f"{_name}-{_bb_name}", _backend, head=_name, backbone=_bb_name,
                     conservative=_head.conservative, description=_head.doc,
                     penalty=_head.penalty, small=_bb.small,
                     options=_specs(_head, _bb), data=_bb.data)(
                _field_factory(_backend, _name, _head, _bb_name, _bb))


# ----------------------------------------------------------------------------- exact scores


def _exact_factory(backend: str):
    def make(shape: tuple[int, ...], schedule: Schedule, data: str = "gmm8"):
        try:
            ds = get_dataset(data)
        except ValueError as e:
            raise ZooError(str(e)) from None
        if int(np.prod(shape)) != ds.dim:
            raise ZooError(f"dataset {data} has dim {ds.dim}, not {int(np.prod(shape))}")
        mod = importlib.import_module(f"fields.{backend}.exact")
        if isinstance(ds.exact, GaussianMixture):
            m = ds.exact
            return mod.GaussianMixtureExact(m.means, m.stds, m.weights, schedule)
        if isinstance(ds.exact, FullGaussianMixture):
            m = ds.exact
            return mod.FullGaussianMixtureExact(m.means, m.eigvecs, m.eigvals, m.weights, schedule)
        if isinstance(ds.exact, BoxMixture):
            m = ds.exact
            return mod.BoxMixtureExact(m.lows, m.highs, m.weights, schedule)
        raise ZooError(f"dataset {data} has no closed-form score; exact fields exist for "
                       "gmm8, checkerboard, gmm-d (gmm-dN) and digits-gmm")

    return make


for _backend in ("torch", "jax"):
    register("exact", _backend, head="exact", backbone="closed-form", conservative=True,
             trainable=False, description="closed-form score of the dataset (needs data=)")(
        _exact_factory(_backend))

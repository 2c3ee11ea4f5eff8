"""Registrations of the built-in fields. Factories import their framework lazily.

A factory is ``f(dim, schedule, **options) -> field``; ``zoo.create`` then sets the
backend-neutral initial weights, so the same seed gives the same field in both backends.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fields.common import ACTIVATIONS, Schedule
from zoo.data import BoxMixture, GaussianMixture, get_dataset
from zoo.registry import ZooError, register


@dataclass(frozen=True)
class Head:
    cls: str  # class name in fields.<backend>.heads
    out: Callable[[int, int], int]  # backbone output size for data dimension d and K
    out_bias: bool  # False for pure potentials: a constant has no x-gradient, so cannot learn
    conservative: bool
    doc: str
    rotational: bool = False  # takes K antisymmetric generators
    penalty: dict | None = None  # training penalty (zoo.train), e.g. qc


# qc's lambda, measured on gmm8 (3000 steps, JAX, width 256): lambda = 1 cuts the mean NAsym of
# the trained field about 5x at small t (5e-4 -> 1e-4 at t = 0.02) at no cost in score error;
# lambda = 10 removes it (< 5e-5) but raises the relative score error at t = 0.1 from 0.12 to 0.21.
QC_DEFAULT = {"kind": "qc", "lambda": 1.0, "probes": 1}

MLP_HEADS = {
    "free": Head("FreeField", lambda d, k: d, True, False, "s = -f(x,t)/sigma_t, unconstrained"),
    "energy": Head("EnergyField", lambda d, k: 1, False, True,
                   "s = -grad_x E, E = g(x,t)/sigma_t"),
    "energysq": Head("EnergySqField", lambda d, k: d, True, True,
                     "s = -grad_x E, E = ||x - f(x,t)||^2 / (2 sigma_t) (CSBM)"),
    # psi_k enter only through their gradients: no output bias
    "helmholtz": Head("HelmholtzField", lambda d, k: 1 + k, False, False,
                      "s = -grad E + sum_k A_k grad psi_k, rotational part divergence-free",
                      rotational=True),
    # psi_k also enter as values (psi_k grad phi): the output bias is live
    "stein": Head("SteinField", lambda d, k: 1 + k, True, False,
                  "s = grad phi + sum_k A_k (grad psi_k + psi_k grad phi), rotation Stein-null",
                  rotational=True),
    "qc": Head("FreeField", lambda d, k: d, True, False,
               "free field trained with lambda sigma^2 (tr JJ^T - tr J^2) (QCSBM)",
               penalty=QC_DEFAULT),
}


SMALL_MLP = {"width": 32, "depth": 2}


def _check_mlp(width: int, depth: int, act: str) -> None:
    if not (isinstance(width, int) and width > 0 and isinstance(depth, int) and depth > 0):
        raise ZooError(f"width and depth must be positive integers, got {width}, {depth}")
    if act not in ACTIVATIONS:
        raise ZooError(f"unknown activation {act!r}; choose from {', '.join(ACTIVATIONS)}")


def _build(backend: str, head: Head, dim: int, schedule: Schedule, width: int, depth: int,
           act: str, K: int = 0):
    _check_mlp(width, depth, act)
    extra = (dim, K) if head.rotational else ()
    if backend == "torch":
        from fields.torch import heads, mlp

        net = mlp.MLP(dim, head.out(dim, K), width, depth, act, out_bias=head.out_bias)
        return getattr(heads, head.cls)(net, schedule, *extra)
    import jax

    from fields.jax import heads, mlp

    net = mlp.MLP(dim, head.out(dim, K), width, depth, act, out_bias=head.out_bias,
                  key=jax.random.PRNGKey(0))
    return getattr(heads, head.cls)(net, schedule, *extra)


def _mlp_factory(backend: str, head: Head):
    if head.rotational:
        def make(dim: int, schedule: Schedule, width: int = 256, depth: int = 3,
                 act: str = "silu", K: int = 2):
            if not (isinstance(K, int) and K > 0):
                raise ZooError(f"K must be a positive integer, got {K!r}")
            return _build(backend, head, dim, schedule, width, depth, act, K)
    else:
        def make(dim: int, schedule: Schedule, width: int = 256, depth: int = 3,
                 act: str = "silu"):
            return _build(backend, head, dim, schedule, width, depth, act)
    return make


for _name, _head in MLP_HEADS.items():
    for _backend in ("torch", "jax"):
        register(f"{_name}-mlp", _backend, head=_name, backbone="mlp",
                 conservative=_head.conservative, description=_head.doc,
                 penalty=_head.penalty, small=SMALL_MLP)(_mlp_factory(_backend, _head))


def _exact_factory(backend: str):
    def make(dim: int, schedule: Schedule, data: str = "gmm8"):
        try:
            ds = get_dataset(data)
        except ValueError as e:
            raise ZooError(str(e)) from None
        if dim != ds.dim:
            raise ZooError(f"dataset {data} has dim {ds.dim}, not {dim}")
        mod = __import__(f"fields.{backend}.exact", fromlist=["exact"])
        if isinstance(ds.exact, GaussianMixture):
            m = ds.exact
            return mod.GaussianMixtureExact(m.means, m.stds, m.weights, schedule)
        if isinstance(ds.exact, BoxMixture):
            m = ds.exact
            return mod.BoxMixtureExact(m.lows, m.highs, m.weights, schedule)
        raise ZooError(f"dataset {data} has no closed-form score; exact fields exist for "
                       "gmm8, checkerboard and gmm-d")

    return make


for _backend in ("torch", "jax"):
    register("exact", _backend, head="exact", backbone="closed-form", conservative=True,
             trainable=False, description="closed-form score of the dataset (needs data=)")(
        _exact_factory(_backend))

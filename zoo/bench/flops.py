"""FLOPs of one training step, counted from the model by the libraries themselves, and the rate
of a large float32 GEMM to measure achieved FLOP/s against.

torch: ``torch.utils.flop_counter.FlopCounterMode`` around one ``Trainer.step``. It sees every
aten op that runs, in the forward pass and in autograd's backward and double backward (a head that
differentiates in x, then the loss in the weights), and counts the matrix products only:
mm, addmm, bmm, baddbmm, convolutions and attention, 2 FLOPs per multiply-add; elementwise ops,
reductions and Adam's update count 0.

JAX: XLA's cost analysis of the compiled step (``jax.jit(step).lower(...).compile()
.cost_analysis()["flops"]``). XLA counts every op of the optimised module: dots and convolutions
(2 per multiply-add; a convolution's padded taps not counted) but also each elementwise op,
reduction and the optimiser's update (1 per element; transcendentals are counted apart and not
included). Beside it, ``dot_flops`` counts the dot_general and conv_general_dilated equations of
the step's jaxpr with torch's rule (2 per multiply-add, every kernel tap), so the two backends
compare on the matrix products alone. The jaxpr is the program before XLA optimises it: XLA
may run fewer products (it merges duplicates: qc's forward passes, taken once for the loss and
again inside its jvp and vjp, run once), so XLA's total can fall below ``dot_flops``.
"""

from __future__ import annotations

import contextlib
import math
import time

import numpy as np

from zoo.bench.common import sync

TORCH_METHOD = ("torch.utils.flop_counter.FlopCounterMode around one Trainer.step (forward, "
                "backward and double backward): matrix products only (mm, addmm, bmm, "
                "convolution, attention), 2 FLOPs per multiply-add")
JAX_METHOD = ("XLA cost analysis of the compiled jitted step (its 'flops'): every op after "
              "XLA's optimisations, elementwise and reductions and the Adam/EMA update too "
              "(transcendentals apart); dot_flops: dot_general and conv_general_dilated of the "
              "step's jaxpr (before XLA's optimisations), 2 FLOPs per multiply-add")


class _GlobalOnly(contextlib.nullcontext):
    """Stands in for FlopCounterMode's ModuleTracker: every count goes to "Global"."""

    parents = {"Global"}


def torch_step_flops(trainer, batch: dict[str, np.ndarray]) -> dict:
    """Count one ``trainer.step(batch)`` (it takes the step: the weights move on).

    Returns {"flops", "dot_flops" (the same number: the counter sees matrix products only),
    "by_op": {aten op: FLOPs}}.
    """
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    # its ModuleTracker hooks every module's output, and torch.autograd.grad on a leaf (how the
    # energy heads take grad_x) then fails (pytorch/pytorch#131753); per-module attribution is
    # not needed here, so the counts all go to "Global" as they would without modules
    counter.mod_tracker = _GlobalOnly()
    # the eager step: dynamo does not compile under a dispatch mode such as the counter's (a
    # compiled trainer would fall back to eager for good); the products are the same
    compiled, trainer.compiled = getattr(trainer, "compiled", None), None
    try:
        with counter:
            trainer.step(batch)
    finally:
        trainer.compiled = compiled
    by_op = {str(k): int(v) for k, v in counter.get_flop_counts().get("Global", {}).items()}
    total = int(counter.get_total_flops())
    return {"flops": total, "dot_flops": total, "by_op": by_op}


def _product_flops(eqn) -> int:
    """2 x multiply-adds of a dot_general or conv_general_dilated equation (0 for other ops)."""
    name = eqn.primitive.name
    out = math.prod(eqn.outvars[0].aval.shape)
    if name == "dot_general":
        (lhs_contract, _), _ = eqn.params["dimension_numbers"]
        lhs = eqn.invars[0].aval.shape
        return 2 * out * math.prod(lhs[i] for i in lhs_contract)
    if name == "conv_general_dilated":
        # each output element sums over one kernel: its input features (per group) x its taps
        rhs = eqn.invars[1].aval.shape
        out_feature_dim = eqn.params["dimension_numbers"].rhs_spec[0]
        return 2 * out * math.prod(rhs) // rhs[out_feature_dim]
    return 0


def jaxpr_product_flops(jaxpr) -> int:
    """FLOPs of the matrix products (dot_general, conv_general_dilated) of a jaxpr, through its
    sub-jaxprs (jit, custom_jvp/vjp, remat, ...): a scan's body counts ``length`` times, a cond
    its largest branch; a while loop's trip count is unknown, so ValueError."""
    return sum(_product_flops(e) for e in _product_eqns(jaxpr))


def _product_eqns(jaxpr) -> list:
    """The dot_general and conv_general_dilated equations a jaxpr runs, through its sub-jaxprs:
    a scan's body's ``length`` times, a cond's costliest branch; ValueError for a while loop."""
    from jax.extend.core import jaxprs_in_params

    out = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name in ("dot_general", "conv_general_dilated"):
            out.append(eqn)
        subs = [_product_eqns(getattr(j, "jaxpr", j)) for j in jaxprs_in_params(eqn.params)]
        if not subs:
            continue
        if eqn.primitive.name == "while":
            raise ValueError("a while loop in the step: its trip count is not known statically")
        if eqn.primitive.name == "cond":
            out += max(subs, key=lambda s: sum(_product_flops(e) for e in s))
        elif eqn.primitive.name == "scan":
            out += eqn.params["length"] * [e for s in subs for e in s]
        else:
            out += [e for s in subs for e in s]
    return out


def jax_step_flops(trainer, batch: dict[str, np.ndarray]) -> dict:
    """Cost of one ``trainer.step(batch)`` of the JAX Trainer, without taking it: its jitted step
    (``trainer._step``) traced and compiled on the arguments ``Trainer.step`` passes it (jit's
    cache is shared, so the step then runs this executable rather than compiling again).

    Returns {"flops": XLA's cost analysis of the optimised module (every op, see the module
    docstring), "dot_flops": the matrix products the step's jaxpr asks for (before XLA's
    optimisations, which may drop a duplicate product or turn a matrix-vector product into a
    multiply and a reduce), "transcendentals": XLA's count of those}.
    """
    import jax.numpy as jnp

    arrays = {k: jnp.asarray(v, dtype=trainer.dtype) for k, v in batch.items()}
    decay = jnp.asarray(0.0, dtype=trainer.dtype)  # the EMA decay: a 0-d array, as in step
    traced = trainer._step.trace(trainer.state, arrays, decay)
    cost = traced.lower().compile().cost_analysis()
    if isinstance(cost, list | tuple):  # older jax: one dict per module
        cost = cost[0]
    return {"flops": float(cost["flops"]), "dot_flops": jaxpr_product_flops(traced.jaxpr.jaxpr),
            "transcendentals": float(cost.get("transcendentals", 0.0))}


def step_flops(trainer, batch: dict[str, np.ndarray], backend: str) -> dict:
    """``torch_step_flops`` or ``jax_step_flops`` by backend (see those)."""
    if backend == "torch":
        return torch_step_flops(trainer, batch)
    if backend == "jax":
        return jax_step_flops(trainer, batch)
    raise ValueError(f"no FLOP counter for backend {backend!r}")


def method(backend: str) -> str:
    """How ``step_flops`` counts on ``backend``, in words (for records)."""
    return {"torch": TORCH_METHOD, "jax": JAX_METHOD}[backend]


def gemm(backend: str, n: int = 1024, device: str = "cpu"):
    """(run, flops): ``run()`` multiplies two fixed n x n float32 matrices once and waits for the
    result (torch.matmul on ``device``, or jnp.dot under jax.jit, already compiled, on JAX's
    default device); flops = 2 n^3."""
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n)).astype(np.float32) for _ in range(2))
    if backend == "torch":
        import torch

        ta, tb = torch.as_tensor(a, device=device), torch.as_tensor(b, device=device)
        run = lambda: sync(torch.matmul(ta, tb))
    elif backend == "jax":
        import jax
        import jax.numpy as jnp

        dot = jax.jit(jnp.dot)
        ja, jb = jnp.asarray(a), jnp.asarray(b)
        run = lambda: dot(ja, jb).block_until_ready()
    else:
        raise ValueError(f"no GEMM for backend {backend!r}")
    run()  # compile / warm up
    return run, 2 * n**3


def time_once(run) -> float:
    """Seconds one ``run()`` takes."""
    t0 = time.perf_counter()
    run()
    return time.perf_counter() - t0


# --- The step's own matrix products, replayed alone -------------------------------------------
# A step cannot beat the time its matrix products take at the rate this machine gives *their*
# shapes (a 512 x 128 x 128 product runs well below a 1024-square GEMM's rate). ``products(...)``
# records the products one step runs (their shapes, strides, dtypes and parameters) and returns a
# function that runs exactly those products again on fresh random inputs, nothing else: the
# products' own time. step time / that time says how much of a step is anything but products
# (elementwise ops, the optimiser, dispatch); its rate over the large GEMM's is the ceiling of the
# step's "of GEMM" fraction.


def torch_products(trainer, batch: dict[str, np.ndarray]):
    """(run, flops) for the matrix products of one eager ``trainer.step(batch)`` (it takes the
    step), recorded by a dispatch mode: every aten op torch's FlopCounterMode counts (mm, addmm,
    bmm, convolution and its backward, attention), with their inputs' sizes, strides and dtypes.
    ``run()`` calls each again on random tensors of the same layout."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import FlopCounterMode, flop_registry

    counted = set(flop_registry)
    calls = []

    def spec(a):
        if isinstance(a, torch.Tensor):
            return ("tensor", tuple(a.size()), tuple(a.stride()), a.dtype, a.device)
        if isinstance(a, list | tuple):
            return type(a)(spec(x) for x in a)
        return a

    class Recorder(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if func._overloadpacket in counted:
                calls.append((func, spec(args), spec(kwargs)))
            return func(*args, **kwargs)

    counter = FlopCounterMode(display=False)
    counter.mod_tracker = _GlobalOnly()  # as in torch_step_flops
    compiled, trainer.compiled = getattr(trainer, "compiled", None), None  # eager: see above
    try:
        with counter, Recorder():
            trainer.step(batch)
    finally:
        trainer.compiled = compiled
    flops = int(counter.get_total_flops())

    gen = torch.Generator().manual_seed(0)

    def make(s):
        if isinstance(s, tuple) and s[:1] == ("tensor",):
            _, size, stride, dtype, device = s
            t = torch.empty_strided(size, stride, dtype=dtype)
            t = t.normal_(generator=gen) if dtype.is_floating_point else t.zero_()
            return t.to(device)
        if isinstance(s, list | tuple):
            return type(s)(make(x) for x in s)
        return s

    ready = [(f, make(a), make(k)) for f, a, k in calls]

    def run():
        with torch.no_grad():
            for f, a, k in ready:
                f(*a, **k)
        if torch.cuda.is_available():  # a GPU's kernels return before they finish
            torch.cuda.synchronize()

    run()
    return run, flops


def jax_products(trainer, batch: dict[str, np.ndarray]):
    """(run, flops) for the matrix products of the JAX Trainer's jitted step on ``batch`` (not
    taken): its jaxpr's dot_general and conv_general_dilated equations, bound again with their
    parameters on random inputs of their shapes, in one jitted function returning every result
    (so XLA can drop none); flops as jaxpr_product_flops counts them."""
    import jax
    import jax.numpy as jnp

    arrays = {k: jnp.asarray(v, dtype=trainer.dtype) for k, v in batch.items()}
    decay = jnp.asarray(0.0, dtype=trainer.dtype)
    eqns = _product_eqns(trainer._step.trace(trainer.state, arrays, decay).jaxpr.jaxpr)
    rng = np.random.default_rng(0)
    inputs = [[jnp.asarray(rng.standard_normal(v.aval.shape), dtype=v.aval.dtype)
               for v in e.invars] for e in eqns]

    @jax.jit
    def products(inputs):
        return [e.primitive.bind(*ins, **e.params) for e, ins in zip(eqns, inputs)]

    def run():
        jax.block_until_ready(products(inputs))

    run()
    return run, sum(_product_flops(e) for e in eqns)


def products(trainer, batch: dict[str, np.ndarray], backend: str):
    """``torch_products`` or ``jax_products`` by backend (see those)."""
    if backend == "torch":
        return torch_products(trainer, batch)
    if backend == "jax":
        return jax_products(trainer, batch)
    raise ValueError(f"no product replay for backend {backend!r}")

"""JAX/Equinox side of the backend interface (mirrors zoo/backends/torch_backend.py).

Equinox fields are written for one example; everything here vmaps them. float64 is enabled at
import (arrays are always created with an explicit dtype, so float32 runs stay float32), and
float32 matrix products and convolutions run in full float32 on a GPU too (no TF32).
"""

from __future__ import annotations

import jax

jax.config.update("jax_enable_x64", True)
# float32 products and convolutions in full float32 on every device: on a GPU XLA would
# otherwise take TF32 for them (torch_backend pins the same for torch); nothing changes on a CPU
jax.config.update("jax_default_matmul_precision", "highest")

import equinox as eqx  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from fields.common import Schedule  # noqa: E402
from zoo.backends.common import ema_decay, split_state  # noqa: E402

DTYPES = {"float32": jnp.float32, "float64": jnp.float64}


def _key_name(k) -> str:
    for attr in ("name", "idx", "key"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    raise TypeError(f"unsupported pytree key {k!r}")


def _is_param(x) -> bool:
    """A parameter: an inexact array, or its abstract stand-in (a module from eqx.filter_eval_shape,
    see create_field)."""
    return eqx.is_inexact_array(x) or (isinstance(x, jax.ShapeDtypeStruct)
                                       and jnp.issubdtype(x.dtype, jnp.inexact))


def _flat(tree):
    """(names, leaves, treedef) of the parameters of ``tree``; names like torch's."""
    pairs, treedef = jax.tree_util.tree_flatten_with_path(eqx.filter(tree, _is_param))
    names = [".".join(_key_name(k) for k in path) for path, _ in pairs]
    return names, [leaf for _, leaf in pairs], treedef


def named_params(field) -> dict[str, np.ndarray]:
    """Parameter name -> numpy copy (names shared with the PyTorch version of the field)."""
    names, leaves, _ = _flat(field)
    return {n: np.array(v) for n, v in zip(names, leaves)}


def load_params(field, params: dict[str, np.ndarray], dtype: str):
    """A copy of ``field`` with every parameter from ``params`` (cast to ``dtype``)."""
    names, leaves, treedef = _flat(field)
    own = dict(zip(names, leaves))
    missing, extra = sorted(set(own) - set(params)), sorted(set(params) - set(own))
    if missing or extra:
        raise ValueError(f"parameter names differ: missing {missing[:4]}, unexpected {extra[:4]}")
    bad = [k for k in names if tuple(own[k].shape) != tuple(np.shape(params[k]))]
    if bad:
        k = bad[0]
        raise ValueError(f"parameter {k} has shape {tuple(np.shape(params[k]))}, "
                         f"the field wants {tuple(own[k].shape)}")
    new = [jnp.asarray(np.asarray(params[n]), dtype=DTYPES[dtype]) for n in names]
    _, static = eqx.partition(field, _is_param)
    return eqx.combine(jax.tree_util.tree_unflatten(treedef, new), static)


def create_field(make, draw, dtype: str):
    """``make()``'s field with every parameter from ``draw(current)`` (name -> array, or -> an
    abstract shape where ``needs_values(current)`` is False: zoo.init), cast to ``dtype``.

    Equinox layers draw their initial weights with jax.random as they are built, one small XLA
    program per distinct shape: 4-6 s of compiling for a UNet or DiT, for numbers that the
    backend-neutral ones replace at once. So the module is built abstractly first
    (eqx.filter_eval_shape: shapes only, nothing runs) and filled from ``draw``; a factory that
    cannot be traced abstractly, a parameter whose factory value is kept, or any other array
    left abstract takes the ordinary way (build, then load) and gets the same numbers.
    """
    from zoo.init import needs_values

    try:
        skeleton = eqx.filter_eval_shape(make)
        names, leaves, _ = _flat(skeleton)
        shapes = dict(zip(names, leaves))
        if shapes and not needs_values(shapes):
            field = load_params(skeleton, draw(shapes), dtype)
            if not any(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree_util.tree_leaves(field)):
                return field
    except Exception:  # noqa: BLE001 (anything: the ordinary way below raises what it raises)
        pass
    field = make()
    current = named_params(field)
    return load_params(field, draw(current), dtype) if current else field


@eqx.filter_jit
def _score(field, x, t):
    return jax.vmap(field.score)(x, t)


@eqx.filter_jit
def _energy(field, x, t):
    return jax.vmap(field.energy)(x, t)


@eqx.filter_jit
def _parts(field, x, t):
    return jax.vmap(field.parts)(x, t)


@eqx.filter_jit
def _jacobian(field, x, t, part):
    fn = field.score if part is None else (lambda y, ti: field.parts(y, ti)[part])

    def jac(xi, ti):
        return jax.jacrev(fn)(xi, ti).reshape(xi.size, xi.size)

    return jax.vmap(jac)(x, t)


def _arrays(x, t):
    x = jnp.asarray(np.asarray(x))
    return x, jnp.asarray(np.asarray(t), dtype=x.dtype)


def score(field, x: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Batched score as numpy: x [B, *shape], t [B] (the dtype of x is kept)."""
    return np.asarray(_score(field, *_arrays(x, t)))


def energy(field, x: np.ndarray, t: np.ndarray) -> np.ndarray:
    return np.asarray(_energy(field, *_arrays(x, t)))


def parts(field, x: np.ndarray, t: np.ndarray) -> dict[str, np.ndarray]:
    """The named parts of a field's score (heads with ``parts``), as numpy."""
    return {k: np.asarray(v) for k, v in _parts(field, *_arrays(x, t)).items()}


def jacobian(field, x: np.ndarray, t: np.ndarray, part: str | None = None) -> np.ndarray:
    """J[b, i, j] = d s_i / d x_j at each example: [B, D, D] (reverse mode, vmapped).

    part: differentiate ``field.parts(x, t)[part]`` instead of the score.
    """
    return np.asarray(_jacobian(field, *_arrays(x, t), part))


@eqx.filter_jit
def _jvp_vjp(field, x, t, v):
    def one(xi, ti, vi):
        f = lambda y: field.score(y, ti)
        jv = jax.jvp(f, (xi,), (vi,))[1]
        jtv = jax.vjp(f, xi)[1](vi)[0]
        return jv, jtv

    return jax.vmap(one)(x, t, v)


def jvp_vjp(field, x: np.ndarray, t: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(J v, J^T v) per example: one JVP and one VJP, vmapped."""
    xa, ta = _arrays(x, t)
    jv, jtv = _jvp_vjp(field, xa, ta, jnp.asarray(np.asarray(v), dtype=xa.dtype))
    return np.asarray(jv), np.asarray(jtv)


def _xt(schedule: Schedule, x0, t, eps):
    shape = (-1,) + (1,) * (x0.ndim - 1)
    return schedule.alpha(t).reshape(shape) * x0 + schedule.sigma(t).reshape(shape) * eps


def _dsm(schedule: Schedule, s, t, eps) -> jax.Array:
    """E ||sigma_t s + eps||^2 of scores s at x_t."""
    r = schedule.sigma(t).reshape((-1,) + (1,) * (eps.ndim - 1)) * s + eps
    return jnp.mean(jnp.sum(r.reshape(r.shape[0], -1) ** 2, axis=1))


def dsm_loss(field, schedule: Schedule, x0, t, eps) -> jax.Array:
    """Denoising score matching E ||sigma_t s(x_t, t) + eps||^2, x_t = alpha_t x_0 + sigma_t eps."""
    return _dsm(schedule, jax.vmap(field.score)(_xt(schedule, x0, t, eps), t), t, eps)


UNROLL_PROBES = 8  # training draws 1 probe per example; Hutchinson checks draw thousands


def score_and_qc(field, x, t, probes) -> tuple[jax.Array, jax.Array]:
    """(s(x, t) [B, *shape], Hutchinson estimates of tr(J J^T) - tr(J^2) [P, B]) from one
    forward pass per example.

    Per probe v: u = J^T v and z = J^T u, two applications of the one ``jax.vjp`` of the score;
    u.u - v.z = v^T J J^T v - v^T J^T J^T v (v.z = u.(J v): no JVP and no second forward). The
    training loss takes its DSM term from the same s. The probes are unrolled, not vmapped (as in
    fields/jax/heads.py's grads_of_outputs): a qc-mlp step (width 128, batch 512, one probe)
    took 11.2-15.1 ms with the vmap and 8.9 ms unrolled, equal losses. Beyond UNROLL_PROBES
    probes (thousands, for a Hutchinson check) the pullbacks are vmapped again.
    """

    def one(xi, ti, vs):  # one example, all its probes
        s, vjp = jax.vjp(lambda y: field.score(y, ti), xi)

        def per_probe(v):
            u = vjp(v)[0]
            return jnp.sum(u * u) - jnp.sum(v * vjp(u)[0])

        if vs.shape[0] > UNROLL_PROBES:  # many probes (a diagnostic): one batched pullback
            return s, jax.vmap(per_probe)(vs)
        return s, jnp.stack([per_probe(v) for v in vs])

    return jax.vmap(one, in_axes=(0, 0, 1), out_axes=(0, 1))(x, t, probes)


def qc_estimates(field, x, t, probes) -> jax.Array:
    """Hutchinson estimates of tr(J J^T) - tr(J^2) at each x, one per probe: [P, B]."""
    return score_and_qc(field, x, t, probes)[1]


def objective(field, schedule: Schedule, batch: dict, penalty: dict | None) -> jax.Array:
    """The training loss: DSM, plus lambda * the qc penalty for fields whose penalty is "qc"
    (its scores at x_t are the DSM term's: one forward pass for both)."""
    x0, t, eps = batch["x0"], batch["t"], batch["eps"]
    if penalty and penalty["kind"] == "qc":
        s, est = score_and_qc(field, _xt(schedule, x0, t, eps), t, batch["probes"])
        return _dsm(schedule, s, t, eps) + penalty["lambda"] * jnp.mean(
            schedule.sigma(t) ** 2 * est.mean(0))
    return dsm_loss(field, schedule, x0, t, eps)


def _dtype_of(field):
    _, leaves, _ = _flat(field)
    return leaves[0].dtype


def loss_and_grads(field, schedule: Schedule, batch: dict, penalty: dict | None = None):
    """(loss, d loss / d parameter by name as numpy) at the field's current weights."""
    dt = _dtype_of(field)
    arrays = {k: jnp.asarray(v, dtype=dt) for k, v in batch.items()}
    fn = eqx.filter_jit(eqx.filter_value_and_grad(
        lambda f, b: objective(f, schedule, b, penalty)))
    loss, g = fn(field, arrays)
    return float(loss), named_params(g)


class Trainer:
    """Adam + EMA on the DSM loss; the same algorithm and hyperparameters as the torch Trainer."""

    def __init__(self, field, schedule: Schedule, *, penalty: dict | None = None, lr: float,
                 betas=(0.9, 0.999), eps: float = 1e-8, ema: float = 0.999) -> None:
        params, static = eqx.partition(field, eqx.is_inexact_array)
        self.static, self.dtype = static, _dtype_of(field)
        opt = optax.adam(lr, b1=betas[0], b2=betas[1], eps=eps)
        self.state = (params, opt.init(params), params)
        self.grad_norm = None

        self.decay, self.k = ema, 0

        def step(state, batch, d):
            p, opt_state, ema_p = state
            loss, g = jax.value_and_grad(
                lambda q: objective(eqx.combine(q, static), schedule, batch, penalty))(p)
            updates, opt_state = opt.update(g, opt_state, p)
            p = optax.apply_updates(p, updates)
            ema_p = jax.tree.map(lambda e, q: d * e + (1 - d) * q, ema_p, p)
            gnorm = jnp.sqrt(sum(jnp.sum(x**2) for x in jax.tree.leaves(g)))
            return (p, opt_state, ema_p), loss, gnorm

        self._step = jax.jit(step)

    def step(self, batch: dict[str, np.ndarray]) -> jax.Array:
        """One optimiser step on this batch; returns the loss (before the step).

        Also sets ``grad_norm``: the global 2-norm of the gradient (0-d array), which is finite
        exactly when every gradient entry is (short of overflow), for the trainer's guard.
        """
        arrays = {k: jnp.asarray(v, dtype=self.dtype) for k, v in batch.items()}
        self.k += 1
        d = jnp.asarray(ema_decay(self.decay, self.k), dtype=self.dtype)
        self.state, loss, self.grad_norm = self._step(self.state, arrays, d)
        return loss

    @property
    def field(self):
        return eqx.combine(self.state[0], self.static)

    def params(self) -> dict[str, np.ndarray]:
        return named_params(self.field)

    def ema_params(self) -> dict[str, np.ndarray]:
        return named_params(eqx.combine(self.state[2], self.static))

    def _adam(self):
        """Index and state of optax's scale_by_adam in the chain optax.adam builds."""
        for i, s in enumerate(self.state[1]):
            if isinstance(s, optax.ScaleByAdamState):
                return i, s
        raise TypeError("no ScaleByAdamState in the optimiser state")

    def state_dict(self) -> tuple[dict[str, np.ndarray], dict]:
        """Everything the next step depends on, as (arrays, JSON-able meta).

        arrays: ``params.N``, ``ema.N``, ``adam.m.N``, ``adam.v.N`` for each parameter name N (the
        same names as the torch Trainer's); meta: ``k`` (steps taken, drives the EMA warm-up) and
        ``adam_step`` (optax's bias-correction count).
        """
        p, _, ema_p = self.state
        _, adam = self._adam()
        out = {}
        for group, tree in (("params", p), ("ema", ema_p), ("adam.m", adam.mu),
                            ("adam.v", adam.nu)):
            out.update({f"{group}.{k}": v for k, v in named_params(tree).items()})
        return out, {"k": self.k, "adam_step": int(adam.count)}

    def load_state(self, arrays: dict[str, np.ndarray], meta: dict) -> None:
        """Restore ``state_dict()``'s output exactly (ValueError if names or shapes differ)."""
        p, opt_state, _ = self.state
        names, leaves, treedef = _flat(p)
        groups = split_state(arrays)
        trees = {}
        for group, given in groups.items():
            missing, extra = sorted(set(names) - set(given)), sorted(set(given) - set(names))
            if missing or extra:
                raise ValueError(f"{group}: parameter names differ: missing {missing[:4]}, "
                                 f"unexpected {extra[:4]}")
            for n, leaf in zip(names, leaves):
                if tuple(np.shape(given[n])) != tuple(leaf.shape):
                    raise ValueError(f"{group}: parameter {n} has shape "
                                     f"{tuple(np.shape(given[n]))}, the field wants "
                                     f"{tuple(leaf.shape)}")
            trees[group] = jax.tree_util.tree_unflatten(
                treedef, [jnp.asarray(np.asarray(given[n]), dtype=leaf.dtype)
                          for n, leaf in zip(names, leaves)])
        i, adam = self._adam()
        adam = adam._replace(count=jnp.asarray(int(meta["adam_step"]), dtype=adam.count.dtype),
                             mu=trees["adam.m"], nu=trees["adam.v"])
        opt_state = (*opt_state[:i], adam, *opt_state[i + 1:])
        self.state = (trees["params"], opt_state, trees["ema"])
        self.k = int(meta["k"])

"""PyTorch side of the backend interface (mirrors zoo/backends/jax_backend.py).

Numpy in, numpy out at the edges, so tools and tests compare backends on the same numbers.
"""

from __future__ import annotations

import types
import warnings

import numpy as np
import torch

from fields.common import Schedule
from zoo.backends.common import ema_decay, split_state

# torch.func's first jvp/vjp scripts a helper and warns about it; nothing for a user to act on
warnings.filterwarnings("ignore", message=".*torch.jit.script.*deprecated", category=FutureWarning)

DTYPES = {"float32": torch.float32, "float64": torch.float64}

# float32 products and convolutions in full float32 on a GPU too: cuDNN would otherwise run
# float32 convolutions in TF32 (a 10-bit mantissa) while the JAX side (jax_backend) and every CPU
# computes them in float32, and fields trained from the same weights would part ways by rounding
# alone (tests/test_cuda.py). Nothing changes on a CPU.
if hasattr(torch.backends, "fp32_precision"):  # torch >= 2.9: the per-backend settings
    torch.backends.cuda.matmul.fp32_precision = "ieee"
    torch.backends.cudnn.conv.fp32_precision = "ieee"
else:
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def named_params(field: torch.nn.Module) -> dict[str, np.ndarray]:
    """Parameter name -> numpy copy (names shared with the Equinox version of the field)."""
    return {k: v.detach().cpu().numpy().copy() for k, v in field.named_parameters()}


def load_params(field: torch.nn.Module, params: dict[str, np.ndarray], dtype: str):
    """Set every parameter of ``field`` from ``params`` (cast to ``dtype``); names/shapes must match."""
    field = field.to(DTYPES[dtype])
    own = dict(field.named_parameters())
    _check_names(own, params)
    with torch.no_grad():
        for k, p in own.items():
            p.copy_(torch.as_tensor(np.asarray(params[k]), dtype=p.dtype))
    return field


def create_field(make, draw, dtype: str):
    """``make()``'s field with every parameter from ``draw(named_params)`` (zoo.init), cast to
    ``dtype`` (the JAX backend's create_field builds its modules abstractly first; torch's
    initialisers cost nothing worth saving)."""
    field = make()
    current = named_params(field)
    return load_params(field, draw(current), dtype) if current else field


def _check_names(own: dict, given: dict) -> None:
    missing, extra = sorted(set(own) - set(given)), sorted(set(given) - set(own))
    if missing or extra:
        raise ValueError(f"parameter names differ: missing {missing[:4]}, unexpected {extra[:4]}")
    bad = [k for k in own if tuple(own[k].shape) != tuple(np.shape(given[k]))]
    if bad:
        k = bad[0]
        raise ValueError(f"parameter {k} has shape {tuple(np.shape(given[k]))}, "
                         f"the field wants {tuple(own[k].shape)}")


def _t(a, dtype=None) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a), dtype=dtype)


def score(field, x: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Batched score as numpy: x [B, *shape], t [B] (the dtype of x is kept)."""
    with torch.no_grad():
        return field.score(_t(x), _t(t, _t(x).dtype)).numpy()


def parts(field, x: np.ndarray, t: np.ndarray) -> dict[str, np.ndarray]:
    """The named parts of a field's score (heads with ``parts``), as numpy."""
    with torch.no_grad():
        return {k: v.numpy() for k, v in field.parts(_t(x), _t(t, _t(x).dtype)).items()}


def energy(field, x: np.ndarray, t: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return field.energy(_t(x), _t(t, _t(x).dtype)).numpy()


def jacobian(field, x: np.ndarray, t: np.ndarray, part: str | None = None) -> np.ndarray:
    """J[b, i, j] = d s_i / d x_j at each example: [B, D, D] (D = prod(shape)), one VJP per row.

    part: differentiate ``field.parts(x, t)[part]`` instead of the score.
    """
    xt = _t(x).clone().requires_grad_(True)
    tt = _t(t, xt.dtype)
    with torch.enable_grad():
        s = (field.score(xt, tt) if part is None else field.parts(xt, tt)[part]).flatten(1)
        rows = [
            torch.autograd.grad(s[:, i].sum(), xt, retain_graph=True)[0].flatten(1)
            for i in range(s.shape[1])
        ]
    return torch.stack(rows, 1).detach().numpy()


def jvp_vjp(field, x: np.ndarray, t: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(J v, J^T v) per example: one VJP, and the JVP by the double-backward trick
    (J v = d/du [(J^T u) . v]), which also works for heads that differentiate inside."""
    xg = _t(x).clone().requires_grad_(True)
    tt, vt = _t(t, xg.dtype), _t(v, xg.dtype)
    with torch.enable_grad():
        s = field.score(xg, tt)
        u = torch.zeros_like(s, requires_grad=True)
        (g,) = torch.autograd.grad(s, xg, grad_outputs=u, create_graph=True)
        (jv,) = torch.autograd.grad(g, u, grad_outputs=vt, retain_graph=True)
        (jtv,) = torch.autograd.grad(s, xg, grad_outputs=vt)
    return jv.detach().numpy(), jtv.detach().numpy()


def _xt(schedule: Schedule, x0, t, eps):
    shape = (-1,) + (1,) * (x0.ndim - 1)
    return schedule.alpha(t).reshape(shape) * x0 + schedule.sigma(t).reshape(shape) * eps


def _dsm(schedule: Schedule, s, t, eps) -> torch.Tensor:
    """E ||sigma_t s + eps||^2 of scores s at x_t."""
    r = schedule.sigma(t).reshape((-1,) + (1,) * (eps.ndim - 1)) * s + eps
    return (r**2).flatten(1).sum(1).mean()


def dsm_loss(field, schedule: Schedule, x0, t, eps) -> torch.Tensor:
    """Denoising score matching E ||sigma_t s(x_t, t) + eps||^2, x_t = alpha_t x_0 + sigma_t eps."""
    return _dsm(schedule, field.score(_xt(schedule, x0, t, eps), t), t, eps)


def score_and_qc(field, x, t, probes) -> tuple[torch.Tensor, torch.Tensor]:
    """(s(x, t) [B, *shape], Hutchinson estimates of tr(J J^T) - tr(J^2) [P, B]) from one
    forward pass, differentiable in the field's parameters.

    Per probe v: u = J^T v and z = J^T u, two VJPs through the same graph; u.u - v.z =
    v^T J J^T v - v^T J^T J^T v, whose expectations are tr(J J^T) and tr(J^2) (v.z = u.(J v), so
    no JVP, and no second forward pass, is needed). The training loss takes its DSM term from
    the same s: a qc step costs one forward, two VJPs and their backward. Under torch.compile
    (``compiled_loss_and_grads``) the two VJPs are torch.func.vjp's pullback, applied twice.
    """
    if torch.compiler.is_compiling():
        s, pull = torch.func.vjp(lambda xg: field.score(xg, t), x)
        out = []
        for v in probes:
            (u,) = pull(v)
            (z,) = pull(u)
            out.append((u * u - v * z).flatten(1).sum(1))
        return s, torch.stack(out)
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        s = field.score(x, t)
        out = []
        for v in probes:
            (u,) = torch.autograd.grad(s, x, grad_outputs=v, create_graph=True)
            (z,) = torch.autograd.grad(s, x, grad_outputs=u, create_graph=True)
            out.append((u * u - v * z).flatten(1).sum(1))
    return s, torch.stack(out)


def qc_estimates(field, x, t, probes) -> torch.Tensor:
    """Hutchinson estimates of tr(J J^T) - tr(J^2) at each x, one per probe: [P, B]."""
    return score_and_qc(field, x, t, probes)[1]


def objective(field, schedule: Schedule, batch: dict, penalty: dict | None) -> torch.Tensor:
    """The training loss: DSM, plus lambda * the qc penalty for fields whose penalty is "qc"
    (its scores at x_t are the DSM term's: one forward pass for both)."""
    x0, t, eps = batch["x0"], batch["t"], batch["eps"]
    if penalty and penalty["kind"] == "qc":
        s, est = score_and_qc(field, _xt(schedule, x0, t, eps), t, batch["probes"])
        return _dsm(schedule, s, t, eps) + penalty["lambda"] * (
            schedule.sigma(t) ** 2 * est.mean(0)).mean()
    return dsm_loss(field, schedule, x0, t, eps)


def loss_and_grads(field, schedule: Schedule, batch: dict, penalty: dict | None = None):
    """(loss, d loss / d parameter by name as numpy) at the field's current weights."""
    dt = next(field.parameters()).dtype
    field.zero_grad(set_to_none=True)
    loss = objective(field, schedule, {k: _t(v, dt) for k, v in batch.items()}, penalty)
    loss.backward()
    grads = {k: (None if p.grad is None else p.grad.numpy().copy())
             for k, p in field.named_parameters()}
    return loss.item(), grads


class _Objective(torch.nn.Module):
    """``objective`` as a module, so torch.func.functional_call can run it on given parameters."""

    def __init__(self, field, schedule: Schedule, penalty: dict | None) -> None:
        super().__init__()
        self.field, self.schedule, self.penalty = field, schedule, penalty

    def forward(self, batch: dict) -> torch.Tensor:
        return objective(self.field, self.schedule, batch, self.penalty)


# torch.compile's backend for the training step: inductor generates fused C++ kernels (what makes
# it faster). The tests also trace every head through "aot_eager" (the same graph capture and
# torch.func decomposition, run eagerly: no C++ compiler, seconds instead of tens of seconds)
COMPILE_BACKEND = "inductor"


def compiled_loss_and_grads(field, schedule: Schedule, penalty: dict | None):
    """torch.compile of (parameters by name, batch) -> (d loss / d parameter by name, loss).

    The whole step is one graph: torch.func.grad_and_value over the parameters, and the heads'
    own x-derivatives as torch.func transforms inside it (``torch.compiler.is_compiling()``
    selects them in fields/torch/heads.py; torch.compile has no double backward through
    torch.autograd.grad). On an MLP of width 128 it runs 1.3x (free) to 2.0x (helmholtz, stein)
    faster than eager on this CPU (``zoo bench train --compile both``); the first call compiles
    (2-30 s).
    """
    obj = _Objective(field, schedule, penalty)
    grad_and_value = torch.func.grad_and_value(
        lambda params, batch: torch.func.functional_call(
            obj, {f"field.{k}": v for k, v in params.items()}, (batch,)))

    def loss_and_grads(params, batch):
        return grad_and_value(params, batch)

    # dynamo keeps its compiled graphs on the code object of the function it compiles, at most
    # 8 per code object: a function of its own code per trainer, so a process may train any
    # number of fields (a sweep worker runs many) without falling back to eager
    own = types.FunctionType(loss_and_grads.__code__.replace(), loss_and_grads.__globals__,
                             "loss_and_grads", None, loss_and_grads.__closure__)
    return torch.compile(own, fullgraph=True, dynamic=False, backend=COMPILE_BACKEND)


class Trainer:
    """Adam + EMA on the DSM loss; the same algorithm and hyperparameters as the JAX Trainer.

    compile: take the loss and its gradients from ``compiled_loss_and_grads`` (the same
    numbers as eager to float rounding, 1e-10 in float64: tests/test_torch_compile.py) instead of
    eager autograd. The first step is always eager (it finds the parameters the loss does not
    use, which Adam must skip as eager does); should compiling fail (no C++ compiler, an op
    inductor cannot lower), the trainer says so once and stays eager.
    """

    def __init__(self, field, schedule: Schedule, *, penalty: dict | None = None, lr: float,
                 betas=(0.9, 0.999), eps: float = 1e-8, ema: float = 0.999,
                 device: str = "cpu", compile: bool = False) -> None:
        self.device = torch.device(device)
        field = field.to(self.device)
        self.field, self.schedule, self.penalty, self.decay = field, schedule, penalty, ema
        self.dtype = next(field.parameters()).dtype
        # fused: one kernel for every parameter instead of a Python loop over them (2.7x faster
        # on an MLP's eight tensors on CPU; float64 results bit-identical to the loop, float32
        # equal to rounding)
        self.opt = torch.optim.Adam(field.parameters(), lr=lr, betas=betas, eps=eps, fused=True)
        self.ema = {k: v.detach().clone() for k, v in field.named_parameters()}
        self.k = 0  # steps taken
        self.names = [k for k, p in field.named_parameters() if p.requires_grad]
        self.compiled = compiled_loss_and_grads(field, schedule, penalty) if compile else None
        self._unused: set[str] | None = None  # parameters without a gradient (first step's)

    def _loss_and_grads(self, batch: dict) -> tuple[torch.Tensor, list]:
        params = dict(self.field.named_parameters())
        if self.compiled is not None and self._unused is not None:
            try:
                grads, loss = self.compiled({k: params[k].detach() for k in self.names}, batch)
                return loss, [None if k in self._unused else grads[k] for k in self.names]
            except Exception as e:  # noqa: BLE001 (any compiler failure: eager still works)
                warnings.warn(f"torch.compile failed ({type(e).__name__}: "
                              f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}); "
                              "training eagerly", RuntimeWarning, stacklevel=3)
                self.compiled = None
        loss = objective(self.field, self.schedule, batch, self.penalty)
        # the parameters' gradients only: loss.backward() would also fill the input leaf that
        # the energy heads and qc differentiate through (x_t.grad), work no one reads
        grads = torch.autograd.grad(loss, [params[k] for k in self.names], allow_unused=True)
        self._unused = {k for k, g in zip(self.names, grads) if g is None}
        return loss, list(grads)

    def step(self, batch: dict[str, np.ndarray]) -> torch.Tensor:
        """One optimiser step on this batch; returns the loss (a 0-d tensor, before the step).

        Also sets ``grad_norm``: the global 2-norm of the gradient (0-d tensor), which is finite
        exactly when every gradient entry is (short of overflow), for the trainer's guard.
        """
        # numpy -> the device once per step; nothing comes back but the two guard scalars
        batch = {k: _t(v, self.dtype).to(self.device, non_blocking=True) for k, v in batch.items()}
        loss, grads = self._loss_and_grads(batch)
        params = dict(self.field.named_parameters())
        for p, g in zip((params[k] for k in self.names), grads):
            # contiguous: autograd may hand back an expanded view (the gradient of x.sum() is a
            # broadcast scalar), which the fused Adam kernel would read as if it were dense
            p.grad = None if g is None else g.contiguous()
        grads = [p.grad for p in params.values() if p.grad is not None]
        self.grad_norm = (torch.linalg.vector_norm(torch.stack(
            [torch.linalg.vector_norm(g) for g in grads])) if grads else torch.zeros(()))
        self.opt.step()
        self.k += 1
        d = ema_decay(self.decay, self.k)
        with torch.no_grad():  # ema <- d ema + (1 - d) p, every tensor in one call
            ema = [self.ema[k] for k in params]
            torch._foreach_mul_(ema, d)
            torch._foreach_add_(ema, list(params.values()), alpha=1 - d)
        return loss.detach()

    def params(self) -> dict[str, np.ndarray]:
        return named_params(self.field)

    def ema_params(self) -> dict[str, np.ndarray]:
        return {k: v.detach().cpu().numpy().copy() for k, v in self.ema.items()}

    def state_dict(self) -> tuple[dict[str, np.ndarray], dict]:
        """Everything the next step depends on, as (arrays, JSON-able meta).

        arrays: ``params.N``, ``ema.N``, ``adam.m.N``, ``adam.v.N`` for each parameter name N (the
        same names as the JAX Trainer's); meta: ``k`` (steps taken, drives the EMA warm-up) and
        ``adam_steps`` (Adam's bias-correction count per parameter; torch.optim.Adam skips, and
        so does not count, a step in which a parameter got no gradient).
        """
        out, steps = {}, {}
        for k, p in self.field.named_parameters():
            st = self.opt.state.get(p, {})
            out[f"params.{k}"] = p.detach().cpu().numpy().copy()
            out[f"ema.{k}"] = self.ema[k].cpu().numpy().copy()
            zero = np.zeros_like(out[f"params.{k}"])
            out[f"adam.m.{k}"] = st["exp_avg"].cpu().numpy().copy() if st else zero
            out[f"adam.v.{k}"] = st["exp_avg_sq"].cpu().numpy().copy() if st else zero
            steps[k] = int(st["step"]) if st else 0
        return out, {"k": self.k, "adam_steps": steps}

    def load_state(self, arrays: dict[str, np.ndarray], meta: dict) -> None:
        """Restore ``state_dict()``'s output exactly (ValueError if names or shapes differ)."""
        own = dict(self.field.named_parameters())
        groups = split_state(arrays)
        for group in groups.values():
            _check_names(own, group)
        steps = meta["adam_steps"]
        with torch.no_grad():
            for k, p in own.items():
                p.copy_(_t(groups["params"][k], p.dtype))
                self.ema[k].copy_(_t(groups["ema"][k], p.dtype))
                self.opt.state.pop(p, None)
                if steps[k] > 0:
                    # what torch.optim.Adam keeps per parameter; "step" is read back as a Python
                    # number (bias correction), so its float32 holds any count below 2^24 exactly
                    self.opt.state[p] = {
                        "step": torch.tensor(float(steps[k]), dtype=torch.float32),
                        "exp_avg": _t(groups["adam.m"][k], p.dtype).to(p.device).clone(),
                        "exp_avg_sq": _t(groups["adam.v"][k], p.dtype).to(p.device).clone(),
                    }
        self.k = int(meta["k"])

"""``zoo bench check``: the time of the differential-constraint diagnostic (NAsym) per field and
backend, three ways, on the same points and weights, in interleaved rounds (medians):

- vectorised: the exact Jacobian with every output row at once. JAX: what ``zoo check`` runs
  (``jax_backend.jacobian``: ``jax.jacrev`` of one example's score, vmapped over the points).
  torch: the rows as one batched reverse pass (``torch.autograd.grad(..., is_grads_batched=True)``,
  autograd's backward vmapped over the d one-hot cotangents); ``zoo check``'s torch Jacobian
  (``torch_backend.jacobian``) is the row loop below.
- loop: the baseline: one forward pass, then a plain Python loop of d VJPs, row i = e_i^T J at
  every point at once (torch: ``torch.autograd.grad`` with ``retain_graph``; JAX: ``jax.vjp``
  jitted once, its pullback applied per row by a jitted call).
- Hutchinson: ``diagnostics.nasym_stochastic`` (one JVP and one VJP per Rademacher probe, through
  the backend's ``jvp_vjp``), with its delta-method SE, against the exact value.

Each includes what the diagnostic does with the result (``nasym_exact`` on the Jacobians), so the
times are those of the NAsym of ``n`` points.
"""

from __future__ import annotations

import fnmatch
import functools
import time
from pathlib import Path

import numpy as np

from zoo import backends
from zoo.bench.common import quartiles, report_setup, write_record
from zoo.registry import ZooError, entries, resolve_options

TARGET = {"loop_over_vectorised": 10.0, "d": 64, "n": 256}  # issue 15
HOW = {
    "vectorised": {
        "jax": "jax_backend.jacobian (what zoo check runs): jax.jacrev of one example's score, "
               "jax.vmap over the points, under eqx.filter_jit",
        "torch": "one reverse pass batched over the d one-hot cotangents: "
                 "torch.autograd.grad(s, x, grad_outputs=basis [d, n, d], "
                 "is_grads_batched=True)"},
    "loop": {
        "jax": "jax.vjp of the batched score jitted once (forward), then d jitted calls of its "
               "pullback, row i from the cotangent e_i at every point",
        "torch": "one forward, then d torch.autograd.grad(s, x, grad_outputs=e_i, "
                 "retain_graph=True) (what torch_backend.jacobian, so zoo check, runs)"},
    "hutchinson": "diagnostics.nasym_stochastic through the backend's jvp_vjp: one JVP and one "
                  "VJP per Rademacher probe and point; SE by the delta method",
}
CODE_USES = {"jax": "vectorised", "torch": "loop"}  # the Jacobian zoo check's NAsym uses


def match(patterns: str) -> list:
    """Registry entries whose name matches any comma-separated fnmatch pattern, sorted."""
    pats = [p.strip() for p in patterns.split(",") if p.strip()]
    return [i for i in entries() if any(fnmatch.fnmatchcase(i.name, p) for p in pats)]


# ----------------------------------------------------------------------------- the Jacobians


def _torch_inputs(x, t):
    import torch

    xt = torch.as_tensor(np.asarray(x)).clone().requires_grad_(True)
    return xt, torch.as_tensor(np.asarray(t), dtype=xt.dtype)


def _torch_loop(field, x, t) -> np.ndarray:
    import torch

    xt, tt = _torch_inputs(x, t)
    with torch.enable_grad():
        s = field.score(xt, tt).flatten(1)
        rows = []
        for i in range(s.shape[1]):
            e = torch.zeros_like(s)
            e[:, i] = 1
            (g,) = torch.autograd.grad(s, xt, grad_outputs=e, retain_graph=True)
            rows.append(g.flatten(1))
    return torch.stack(rows, 1).detach().numpy()


def _torch_vectorised(field, x, t) -> np.ndarray:
    import torch

    xt, tt = _torch_inputs(x, t)
    with torch.enable_grad():
        s = field.score(xt, tt).flatten(1)
        n, d = s.shape
        basis = torch.eye(d, dtype=s.dtype)[:, None, :].expand(d, n, d)
        (g,) = torch.autograd.grad(s, xt, grad_outputs=basis, is_grads_batched=True)
    return g.flatten(2).transpose(0, 1).detach().numpy()  # [d, n, d] -> [n, i, j]


@functools.cache
def _jax_fns():
    """(pullback, row): the batched score's jax.vjp jitted (returns its pullback, a pytree), and
    one row of the Jacobian from that pullback, jitted (compiled once per field and shape)."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    @eqx.filter_jit
    def pullback(field, x, t):
        return jax.vjp(lambda y: jax.vmap(field.score)(y, t).reshape(len(y), -1), x)

    @jax.jit
    def row(pull, s, i):
        return pull(jnp.zeros_like(s).at[:, i].set(1))[0].reshape(len(s), -1)

    return pullback, row


def _jax_loop(field, x, t) -> np.ndarray:
    import jax.numpy as jnp

    xa = jnp.asarray(np.asarray(x))
    ta = jnp.asarray(np.asarray(t), dtype=xa.dtype)
    pullback, row = _jax_fns()
    s, pull = pullback(field, xa, ta)
    return np.asarray(jnp.stack([row(pull, s, i) for i in range(s.shape[1])], 1))


def loop_jacobian(field, backend: str, x: np.ndarray, t: np.ndarray) -> np.ndarray:
    """J [N, D, D] (J[b, i, j] = d s_i / d x_j) by a Python loop over the D output rows: one
    forward pass, then one VJP per row i (cotangent e_i at every point). The baseline."""
    return {"torch": _torch_loop, "jax": _jax_loop}[backend](field, x, t)


def vectorised_jacobian(field, backend: str, x: np.ndarray, t: np.ndarray) -> np.ndarray:
    """J [N, D, D] with all rows at once: JAX, ``jax_backend.jacobian`` (vmapped jacrev, what
    ``zoo check`` runs); torch, one reverse pass batched over the one-hot cotangents."""
    if backend == "jax":
        return backends.get("jax").jacobian(field, x, t)
    return _torch_vectorised(field, x, t)


# ----------------------------------------------------------------------------- the benchmark


def bench_check(patterns: str, backend_list: list[str], *, data: str = "gmm-d64", n: int = 256,
                t: float = 0.5, probes: int = 16, rounds: int = 5, dtype: str = "float32",
                options: dict | None = None, seed: int = 0, out: str | Path | None = None,
                show: bool = True) -> list[dict]:
    """Time NAsym of ``n`` points x_t (data ``data`` at time ``t``, OU schedule) for every
    trainable field matching ``patterns`` (comma-separated fnmatch; image fields are left out
    on points) on each backend: vectorised exact Jacobian, the row-loop baseline, Hutchinson
    with ``probes`` probes (see the module docstring); prints a table, ``out`` writes a JSON
    record like ``bench train``'s.

    The fields have their initial weights for ``seed`` (the same in both backends).

    Returns one dict per (field, backend): field, backend, options, d, ms_vectorised /
    iqr_vectorised, ms_loop / iqr_loop, ms_hutchinson / iqr_hutchinson (medians and IQRs over
    rounds), ms_per_round {method: [...]}, speedup_loop_over_vectorised, code_uses (the Jacobian
    zoo check runs: "vectorised" or "loop"), jacobian_max_abs_diff (loop vs vectorised),
    nasym_exact, nasym_loop, nasym_hutchinson, nasym_se, probes, hutchinson_abs_error,
    hutchinson_rel_error and hutchinson_err_over_se (None when the exact NAsym is rounding: below
    ``rounding_floor(dtype)``, as a conservative field's is).
    """

    from zoo.api import create, make_schedule
    from zoo.data import get_dataset
    from zoo.diagnostics import nasym_exact, nasym_stochastic

    console, out_path = report_setup(show, out, "check.json", 150)
    if dtype not in ("float32", "float64"):
        raise ZooError(f"dtype must be float32 or float64, got {dtype!r}")
    for name, v in (("n", n), ("probes", probes), ("rounds", rounds)):
        if not isinstance(v, int) or v <= 0:
            raise ZooError(f"{name} must be a positive integer, got {v!r}")
    try:
        ds = get_dataset(data)
    except ValueError as e:
        raise ZooError(str(e)) from None
    sched = make_schedule("ou")
    if not sched.t_min <= t <= sched.T:
        raise ZooError(f"t must be in [{sched.t_min}, {sched.T}], got {t}")
    rng = np.random.default_rng([15, seed])
    x0 = ds.sample(rng, n).reshape(n, *ds.shape)
    tt = np.full(n, t)
    x = float(sched.alpha(tt)[0]) * x0 + float(sched.sigma(tt)[0]) * rng.standard_normal(x0.shape)
    xs, ts = x.astype(dtype), tt.astype(dtype)

    cases = []
    for info in match(patterns):
        if (not info.trainable or info.backend not in backend_list
                or (info.data == "image" and len(ds.shape) != 3)):  # image fields need images
            continue
        opts = resolve_options(info.options or {}, dict(options or {}))
        f = create(info.name, info.backend, shape=ds.shape, init=seed, dtype=dtype, **opts)
        b = backends.get(info.backend)
        jvp_vjp = functools.partial(b.jvp_vjp, f)
        runs = {
            "vectorised": lambda f=f, be=info.backend: nasym_exact(
                vectorised_jacobian(f, be, xs, ts).reshape(n, ds.dim, ds.dim).astype(np.float64)),
            "loop": lambda f=f, be=info.backend: nasym_exact(
                loop_jacobian(f, be, xs, ts).astype(np.float64)),
            "hutchinson": lambda fn=jvp_vjp: nasym_stochastic(
                lambda x_, t_, v_: fn(x_.reshape(n, *ds.shape), t_, v_.reshape(n, *ds.shape)),
                xs.reshape(n, -1), ts, probes, np.random.default_rng([15, seed, 1])),
        }
        # warm up (compile) and compare the two exact Jacobians once
        jv = vectorised_jacobian(f, info.backend, xs, ts).reshape(n, ds.dim, ds.dim)
        jl = loop_jacobian(f, info.backend, xs, ts)
        values = {k: r() for k, r in runs.items()}
        cases.append({"info": info, "options": opts, "runs": runs,
                      "values": values, "times": {k: [] for k in runs},
                      "diff": float(np.max(np.abs(jv.astype(np.float64) - jl)))})
    if not cases:
        console.print(f"no trainable field matches {patterns!r} on {', '.join(backend_list)}")
        return []
    with console.status("timing") as status:
        for r in range(rounds):
            status.update(f"round {r + 1}/{rounds}")
            for c in cases:
                for k, run in c["runs"].items():
                    t0 = time.perf_counter()
                    run()
                    c["times"][k].append(time.perf_counter() - t0)
    results = [_result(c, ds.dim, probes, rounding_floor(dtype)) for c in cases]
    console.print(_table(results, title=f"NAsym of {n} points, {ds.name} (d = {ds.dim}), "
                         f"t = {t}, {dtype}, {rounds} rounds"))
    if out_path is not None:
        write_record(out_path, "zoo bench check", {
            "pattern": patterns, "backends": list(backend_list), "data": ds.name, "d": ds.dim,
            "n": n, "t": t, "probes": probes, "rounds": rounds, "dtype": dtype,
            "options": dict(options or {}), "seed": seed, "device": "cpu",
            "interleaved": True}, results, extra={"how": HOW, "target": TARGET})
        console.print(f"wrote {out_path}")
    return results


def rounding_floor(dtype: str) -> float:
    """NAsym below which it is rounding: 100 eps^2 of ``dtype`` (a symmetric J computed with
    relative errors ~eps has ||J - J^T||^2 / ||J||^2 ~ eps^2; float32: 1.4e-12)."""
    return 100 * float(np.finfo(dtype).eps) ** 2


def _result(c: dict, d: int, probes: int, floor: float) -> dict:
    info, v = c["info"], c["values"]
    row = {"field": info.name, "backend": info.backend, "options": c["options"],
           "d": d, "code_uses": CODE_USES[info.backend],
           "ms_per_round": {k: [1e3 * x for x in ts] for k, ts in c["times"].items()}}
    for k, ts in c["times"].items():
        q1, med, q3 = quartiles(ts)
        row[f"ms_{k}"], row[f"iqr_{k}"] = 1e3 * med, 1e3 * (q3 - q1)
    row["speedup_loop_over_vectorised"] = row["ms_loop"] / row["ms_vectorised"]
    exact, hutch = v["vectorised"]["nasym"], v["hutchinson"]
    err = abs(hutch["nasym"] - exact)
    resolved = exact > floor and hutch["nasym_se"] > 0
    row.update(jacobian_max_abs_diff=c["diff"], nasym_exact=exact,
               nasym_loop=v["loop"]["nasym"], nasym_hutchinson=hutch["nasym"],
               nasym_se=hutch["nasym_se"], probes=probes, hutchinson_abs_error=err,
               hutchinson_rel_error=err / exact if resolved else None,
               hutchinson_err_over_se=err / hutch["nasym_se"] if resolved else None)
    return row


def _table(results: list[dict], title: str):
    from rich.table import Table

    fmt = lambda v, spec=".2f": "–" if v is None else format(v, spec)
    table = Table(title=title, caption_justify="left")
    table.add_column("field", no_wrap=True)
    for head in ("backend", "vectorised\nms", "loop\nms", "loop /\nvect.", "zoo check\nuses",
                 "Hutch.\nms", "probes", "NAsym\nexact", "NAsym Hutch.\n± SE", "rel.\nerror",
                 "error\n/ SE"):
        table.add_column(head, justify="left" if head in ("backend", "zoo check\nuses")
                         else "right")
    for r in results:
        table.add_row(r["field"], r["backend"], f"{r['ms_vectorised']:.1f}",
                      f"{r['ms_loop']:.1f}", f"{r['speedup_loop_over_vectorised']:.2f}",
                      r["code_uses"], f"{r['ms_hutchinson']:.1f}", str(r["probes"]),
                      f"{r['nasym_exact']:.3g}",
                      f"{r['nasym_hutchinson']:.3g} ± {r['nasym_se']:.2g}",
                      fmt(r["hutchinson_rel_error"], ".1%"), fmt(r["hutchinson_err_over_se"]))
    table.caption = "\n".join([
        "vectorised: all d rows of the exact Jacobian at once (JAX: vmapped jacrev, what zoo "
        "check runs; torch: autograd's batched reverse pass); loop: one forward, then a Python "
        "loop of d VJPs, one per output row at every point (torch: what zoo check runs).",
        f"loop / vect. = the speed-up of the vectorised Jacobian (issue 15's target: >= "
        f"{TARGET['loop_over_vectorised']:.0f}x at d = {TARGET['d']} on {TARGET['n']} points). "
        "Times include NAsym from the Jacobians; medians over the rounds.",
        "Hutch.: NAsym from Rademacher probes (a JVP and a VJP each); rel. error = |Hutch. - "
        "exact| / exact; error / SE: the same in units of its delta-method SE (about 1 "
        "expected); both '–' when exact < 100 eps^2 of the dtype (rounding: a conservative "
        "field)."])
    return table

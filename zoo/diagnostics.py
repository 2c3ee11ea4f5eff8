"""How far a field is from a true score: the seed paper's differential and integral constraints,
the split of two-part heads, and the error against the exact score.

Everything is measured at points x_t = alpha_t x_0 + sigma_t eps of the forward process, on a
grid of times, for any registered field in either backend (through ``zoo.backends``).

- Differential constraint (DC): NAsym = ||J - J^T||_F^2 / (4 ||J||_F^2) (Chao et al. 2023; 0 for
  a true score, 1 for a pure rotation), Asym = ||J - J^T||_F^2 / 2, J = ds/dx. Exact Jacobians up
  to d = 256; above, the unbiased estimates ||J - J^T||_F^2 = E_v ||Jv - J^T v||^2 and
  ||J||_F^2 = E_v ||Jv||^2 (Rademacher v; one JVP and one VJP per probe), reported with an SE.
- Integral constraint (IC): circulation Gamma = closed integral of s . dx around the seed paper's
  loops (Gauss-Legendre per segment), raw and normalised by the closed integral of |s| |dx|:
    polygon   — through K corrupted samples x_t^(k) ~ rho(. | x_0) = N(alpha_t x_0, sigma_t^2 I);
    triangle  — through alpha_t x_0 and two corrupted samples;
    projected — the polygon with every point projected radially onto the sphere around
                alpha_t x_0 of radius sigma_t sqrt(d), where rho(. | x_0) concentrates;
    interpolated — a closed polygon through noisy points between two data points x_0a, x_0b:
                vertex k is c_k + sigma_t eps_k, c_k = alpha_t ((1 - lambda_k) x_0a + lambda_k x_0b),
                lambda going 0 -> 1 on one route and back 1 -> 0 on another (``interpolation_lambdas``);
    interpolated-projected — the same vertices, every point of every chord projected radially
                onto the shell |x - c(u)| = sigma_t sqrt(d) around the moving centre c(u), linear
                in u between the c_k (the mean of rho(. | x_0) at the interpolated data point).
  With each circulation the same loops are integrated with half the nodes: quad_err =
  |Gamma_n - Gamma_{n/2}| / closed integral of |s| |dx|, an estimate of the error of
  Gamma_{n/2} and so (Gauss-Legendre converging fast) an over-estimate of that of Gamma_n: a
  normalised circulation well above its quad_err is resolved.
- Split: share of the rotational part, E ||w||^2 / E ||s||^2, for heads with ``parts``.
- Against the exact score S: E ||s - S||^2 / E ||S||^2 and the Stein residual
  r = div e + S . e, e = s - S (= div(rho_t e) / rho_t, the part of the error that moves
  density), as E[r^2] beside E ||e||^2.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from fields.common import Schedule
from zoo import backends
from zoo.registry import ZooError

EXACT_JACOBIAN_MAX_D = 256
LOOP_FAMILIES = ("polygon", "triangle", "projected", "interpolated", "interpolated-projected")
JACOBIAN_ESTIMATORS = ("auto", "exact", "hutchinson")
CHUNK = 4096  # points per field call on a loop: bounds memory for image backbones


def default_times(schedule: Schedule, n: int = 8) -> np.ndarray:
    """n times spread geometrically over [t_min, T] (the score changes fastest at small t)."""
    return np.geomspace(schedule.t_min, schedule.T, n)


# ----------------------------------------------------------------------------- differential


def nasym_exact(J: np.ndarray) -> dict:
    """From Jacobians J [N, D, D]: NAsym (ratio of means) and the mean Asym."""
    A = J - np.swapaxes(J, 1, 2)
    a2 = (A**2).sum((1, 2))
    j2 = (J**2).sum((1, 2))
    return {"nasym": float(a2.mean() / (4 * j2.mean())), "asym": float(0.5 * a2.mean()),
            "estimator": "exact", "nasym_se": 0.0}


def nasym_stochastic(jvp_vjp: Callable, x: np.ndarray, t: np.ndarray, probes: int,
                     rng: np.random.Generator) -> dict:
    """NAsym from ``probes`` Rademacher vectors per point; the SE is the delta-method one."""
    num, den = [], []
    for _ in range(probes):
        v = 2.0 * rng.integers(0, 2, size=x.shape) - 1.0
        jv, jtv = jvp_vjp(x, t, v.astype(x.dtype))
        num.append(((jv - jtv) ** 2).reshape(len(x), -1).sum(1))
        den.append((jv**2).reshape(len(x), -1).sum(1))
    a, b = np.concatenate(num).astype(np.float64), np.concatenate(den).astype(np.float64)
    ratio = a.mean() / (4 * b.mean())
    # delta method for mean(a) / mean(b)
    cov = np.cov(a, b)
    var = (cov[0, 0] / b.mean() ** 2 - 2 * a.mean() * cov[0, 1] / b.mean() ** 3
           + a.mean() ** 2 * cov[1, 1] / b.mean() ** 4) / len(a)
    return {"nasym": float(ratio), "asym": float(0.5 * a.mean()), "estimator": "hutchinson",
            "nasym_se": float(math.sqrt(max(var, 0.0)) / 4)}


# ----------------------------------------------------------------------------- integral


def loop_vertices(x0: np.ndarray, alpha: float, sigma: float, K: int,
                  rng: np.random.Generator) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """Vertices of the polygon, triangle and projected families from data points x0 [L, d]:
    {family: (vertices [L, k, d], sphere centres [L, d] or None)}."""
    L, d = x0.shape
    centre = alpha * x0
    corrupted = centre[:, None, :] + sigma * rng.standard_normal((L, K, d))
    tri = np.concatenate([centre[:, None, :], corrupted[:, :2]], axis=1)
    return {"polygon": (corrupted, None), "triangle": (tri, None), "projected": (corrupted, centre)}


def interpolation_lambdas(K: int) -> np.ndarray:
    """Interpolation weights [K] of the K vertices of an interpolated loop, in path order.

    Out on one route: lambda = 0, 1/m, ..., 1 (m = K // 2 steps, m + 1 vertices); back on the
    other: the K - m - 1 interior values of an even grid from 1 to 0. K = 6: 0, 1/3, 2/3, 1, 2/3,
    1/3; K = 3: 0, 1, 1/2. Both ends lie on the out route, so every vertex has its own noise.
    """
    if K < 3:
        raise ZooError(f"an interpolated loop needs K >= 3 vertices, got {K}")
    m = K // 2
    back = np.linspace(1.0, 0.0, K - m + 1)[1:-1]
    return np.concatenate([np.linspace(0.0, 1.0, m + 1), back])


def interpolated_vertices(x0a: np.ndarray, x0b: np.ndarray, alpha: float, sigma: float, K: int,
                          rng: np.random.Generator) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Vertices of the interpolated families from pairs of data points x0a, x0b [L, d].

    Vertex k of loop l is c_lk + sigma eps_lk (eps_lk ~ N(0, I), its own for every vertex), with
    c_lk = alpha ((1 - lambda_k) x0a_l + lambda_k x0b_l) the mean of rho(. | x_0) at the
    interpolated data point, lambda_k from ``interpolation_lambdas``. Returns
    {"interpolated": (vertices [L, K, d], None),
     "interpolated-projected": (vertices [L, K, d], centres c [L, K, d])}: the centre of a point
    between vertices k and k + 1 moves linearly from c_k to c_k+1 with the point (``loop_path``).
    """
    lam = interpolation_lambdas(K)[None, :, None]
    c = alpha * ((1 - lam) * x0a[:, None, :] + lam * x0b[:, None, :])
    v = c + sigma * rng.standard_normal(c.shape)
    return {"interpolated": (v, None), "interpolated-projected": (v, c)}


def loop_path(vertices: np.ndarray, centre: np.ndarray | None, radius: float, u: np.ndarray):
    """Points and tangents at parameters u [m] in [0, 1] on every segment of closed paths.

    vertices [L, k, d]; segment i runs from vertex i to vertex i + 1 (mod k). Returns points
    gamma_i(u) [L, k, m, d] and tangents d gamma_i / du [L, k, m, d]:
    - centre None: the chord x(u) = a + u (b - a);
    - centre [L, d] (fixed): the chord projected radially onto the sphere |x - c| = radius, which
      is the great-circle arc between the projected end points; it is traced here at constant
      angular speed (slerp), the same path (so the same circulation) with an integrand that stays
      smooth when a chord passes close to c;
    - centre [L, k, d] (one per vertex, moving linearly along the segment, c(u) = c_i + u (c_i+1
      - c_i)): every point of the chord projected onto the moving shell, gamma = c + r n with
      n = (x - c) / |x - c|, and the exact tangent
      gamma' = c' + r (I - n n^T) (x' - c') / |x - c|,
      so that the circulation of a gradient is zero to quadrature precision.
    """
    uu = np.asarray(u, dtype=np.float64)[None, None, :, None]
    if centre is None:
        a = vertices[:, :, None, :]
        seg = (np.roll(vertices, -1, axis=1) - vertices)[:, :, None, :]
        p = a + uu * seg
        return p, np.broadcast_to(seg, p.shape)
    if centre.ndim == 3:
        ca, cb = centre[:, :, None, :], np.roll(centre, -1, axis=1)[:, :, None, :]
        qa = vertices[:, :, None, :] - ca
        dq = np.roll(vertices, -1, axis=1)[:, :, None, :] - cb - qa  # x' - c'
        q = qa + uu * dq  # x(u) - c(u)
        nq = np.linalg.norm(q, axis=-1, keepdims=True)
        n = q / nq
        p = ca + uu * (cb - ca) + radius * n
        tangent = (cb - ca) + radius * (dq - n * (n * dq).sum(-1, keepdims=True)) / nq
        return p, tangent
    q = vertices - centre[:, None, :]
    qa = q / np.linalg.norm(q, axis=-1, keepdims=True)
    qb = np.roll(qa, -1, axis=1)
    theta = np.arccos(np.clip((qa * qb).sum(-1), -1.0, 1.0))[..., None, None]  # [L, k, 1, 1]
    th = np.maximum(theta, 1e-12)
    ca, cb = np.sin((1 - uu) * th) / np.sin(th), np.sin(uu * th) / np.sin(th)
    da, db = -th * np.cos((1 - uu) * th) / np.sin(th), th * np.cos(uu * th) / np.sin(th)
    A, Bv = qa[:, :, None, :], qb[:, :, None, :]
    p = centre[:, None, None, :] + radius * (ca * A + cb * Bv)
    return p, radius * (da * A + db * Bv)


def loop_nodes(vertices: np.ndarray, centre: np.ndarray | None, radius: float, nodes: int):
    """Gauss-Legendre points on every segment of closed paths through ``vertices`` [L, k, d]
    (the paths of ``loop_path``): points [L, k, m, d], tangents d gamma / du [L, k, m, d] and
    weights [m] on [0, 1]."""
    u, w = np.polynomial.legendre.leggauss(nodes)
    u, w = 0.5 * (u + 1), 0.5 * w
    p, tangent = loop_path(vertices, centre, radius, u)
    return p, tangent, w


def circulation(score_fn: Callable, t: float, vertices: np.ndarray, centre=None,
                radius: float = 0.0, nodes: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """(Gamma, closed integral of |s| |dx|) per loop [L], with s = score_fn(x [N, d], t [N]).

    Gamma = sum_i int_0^1 s(gamma_i(u)) . gamma_i'(u) du over the segments i of ``loop_path``,
    with ``nodes`` Gauss-Legendre nodes per segment: one field evaluation per node per segment
    per loop, in calls of at most ``CHUNK`` points of equal size (so a jitted field compiles
    for few shapes).
    """
    p, tangent, w = loop_nodes(vertices, centre, radius, nodes)
    flat = p.reshape(-1, p.shape[-1])
    n = len(flat)
    calls = -(-n // CHUNK)
    size = -(-n // calls)
    pad = np.concatenate([flat, np.repeat(flat[-1:], calls * size - n, axis=0)])
    s = np.concatenate([score_fn(pad[i:i + size], np.full(size, t))
                        for i in range(0, len(pad), size)])[:n]
    s = s.reshape(p.shape).astype(np.float64)
    gamma = ((s * tangent).sum(-1) * w).sum((1, 2))
    length = ((np.linalg.norm(s, axis=-1) * np.linalg.norm(tangent, axis=-1)) * w).sum((1, 2))
    return gamma, length


def _quartiles(v: np.ndarray) -> dict:
    q1, med, q3 = np.percentile(v, [25, 50, 75])
    return {"median": float(med), "q1": float(q1), "q3": float(q3)}


# ----------------------------------------------------------------------------- the check


class _Flat:
    """A backend module seen on flat points [N, d]: fields get x in the data's shape, results
    come back flat, so every diagnostic is written once for points and images alike."""

    def __init__(self, b, shape: tuple[int, ...]) -> None:
        self.b, self.shape = b, tuple(shape)

    def _x(self, x):
        return x.reshape(len(x), *self.shape)

    def score(self, field, x, t):
        return self.b.score(field, self._x(x), t).reshape(len(x), -1)

    def parts(self, field, x, t):
        return {k: v.reshape(len(x), -1) for k, v in self.b.parts(field, self._x(x), t).items()}

    def jacobian(self, field, x, t):  # already [N, d, d]
        return self.b.jacobian(field, self._x(x), t)

    def jvp_vjp(self, field, x, t, v):
        jv, jtv = self.b.jvp_vjp(field, self._x(x), t, self._x(v))
        return jv.reshape(len(x), -1), jtv.reshape(len(x), -1)



def check_field(field, backend: str, *, data, schedule: Schedule, dtype: str = "float32",
                times=None, n_points: int = 256, n_loops: int = 32, K: int = 6, nodes: int = 48,
                probes: int = 16, seed: int = 0, jacobian: str = "auto", quad_err: bool = True,
                progress: Callable | None = None) -> dict:
    """Every diagnostic at every t; returns {"settings", "per_t": [...], "summary"}.

    data: a dataset name, or a ``zoo.data.Dataset`` (no exact field is built for an object).
    jacobian: "auto" (exact Jacobians for d <= EXACT_JACOBIAN_MAX_D, Hutchinson above), "exact"
    or "hutchinson" (forced, e.g. to compare the two on one field).
    quad_err: also integrate every loop with nodes // 2 nodes (half as many field evaluations
    again) and record quad_err = |Gamma_n - Gamma_{n/2}| / closed integral of |s| |dx|.
    """
    from zoo.api import create
    from zoo.data import get_dataset

    if jacobian not in JACOBIAN_ESTIMATORS:
        raise ZooError(f"jacobian must be one of {', '.join(JACOBIAN_ESTIMATORS)}, got {jacobian!r}")
    ds = get_dataset(data) if isinstance(data, str) else data
    d = ds.dim
    exact_jac = jacobian == "exact" or (jacobian == "auto" and d <= EXACT_JACOBIAN_MAX_D)
    b = _Flat(backends.get(backend), ds.shape)
    times = default_times(schedule) if times is None else np.asarray(times, dtype=np.float64)
    rng = np.random.default_rng([4, seed])
    # the interpolated families draw from their own generator, so adding them left every other
    # number of a check (same seed) as it was
    rng_pairs = np.random.default_rng([4, seed, 1])
    exact = None
    if isinstance(data, str) and ds.exact is not None:
        exact = create("exact", backend, data=data, schedule=schedule)
    np_dtype = np.float64 if dtype == "float64" else np.float32

    def score(x, t):
        return b.score(field, x.astype(np_dtype), t.astype(np_dtype))

    rows = []
    for i, t in enumerate(times):
        a, s_t = float(schedule.alpha(t)), float(schedule.sigma(t))
        x0 = ds.sample(rng, n_points).reshape(n_points, -1)
        x = a * x0 + s_t * rng.standard_normal(x0.shape)
        tt = np.full(n_points, t)
        row: dict = {"t": float(t)}
        xs, ts = x.astype(np_dtype), tt.astype(np_dtype)
        if exact_jac:
            J = b.jacobian(field, xs, ts).astype(np.float64)
            row.update(nasym_exact(J))
        else:
            J = None
            row.update(nasym_stochastic(lambda x_, t_, v_: b.jvp_vjp(field, x_, t_, v_), xs, ts,
                                        probes, rng))
        s = b.score(field, xs, ts).astype(np.float64)
        if hasattr(field, "parts"):
            rot = b.parts(field, xs, ts)["rotational"].astype(np.float64)
            row["rot_share"] = float((rot**2).sum() / (s**2).sum())
        if exact is not None:
            S = b.score(exact, x, tt)
            e = s - S
            row["score_rel_error"] = float((e**2).sum() / (S**2).sum())
            if J is not None:
                div_e = np.trace(J, axis1=1, axis2=2) - np.trace(b.jacobian(exact, x, tt),
                                                                  axis1=1, axis2=2)
            else:  # Hutchinson: v^T (J_s - J_S) v with one probe per point
                v = 2.0 * rng.integers(0, 2, size=x.shape) - 1.0
                div_e = ((b.jvp_vjp(field, xs, ts, v.astype(np_dtype))[0].astype(np.float64)
                          - b.jvp_vjp(exact, x, tt, v)[0]) * v).sum(1)
            r = div_e + (S * e).sum(1)
            row["stein_residual_sq"] = float((r**2).mean())
            row["error_sq"] = float((e**2).sum(1).mean())
        loops = {}
        verts = loop_vertices(ds.sample(rng, n_loops).reshape(n_loops, -1), a, s_t, K, rng)
        pairs = ds.sample(rng_pairs, 2 * n_loops).reshape(2, n_loops, -1)
        verts.update(interpolated_vertices(pairs[0], pairs[1], a, s_t, K, rng_pairs))
        for fam in LOOP_FAMILIES:
            v, centre = verts[fam]
            gamma, length = circulation(score, t, v, centre, s_t * math.sqrt(d), nodes)
            loops[fam] = {"gamma": _quartiles(gamma), "gamma_abs": _quartiles(np.abs(gamma)),
                          "normalised": _quartiles(np.abs(gamma) / length)}
            if quad_err:
                half, _ = circulation(score, t, v, centre, s_t * math.sqrt(d), max(nodes // 2, 1))
                loops[fam]["quad_err"] = _quartiles(np.abs(gamma - half) / length)
        row["loops"] = loops
        rows.append(row)
        if progress:
            progress(i + 1, len(times))
    summary = {"nasym_mean": float(np.mean([r["nasym"] for r in rows])),
               "nasym_max": float(np.max([r["nasym"] for r in rows]))}
    for fam in LOOP_FAMILIES:
        summary[f"circulation_{fam}_median"] = float(
            np.median([r["loops"][fam]["normalised"]["median"] for r in rows]))
        if quad_err:  # beside it, how well the quadrature resolves it
            summary[f"circulation_{fam}_quad_err_median"] = float(
                np.median([r["loops"][fam]["quad_err"]["median"] for r in rows]))
    for key in ("rot_share", "score_rel_error", "stein_residual_sq", "error_sq"):
        if key in rows[0]:
            summary[f"{key}_mean"] = float(np.mean([r[key] for r in rows]))
    settings = {"data": ds.name, "times": [float(t) for t in times], "n_points": n_points,
                "n_loops": n_loops, "K": K, "nodes": nodes,
                "quad_err_nodes": max(nodes // 2, 1) if quad_err else None, "probes": probes,
                "seed": seed, "dtype": dtype, "jacobian": "exact" if exact_jac else "hutchinson",
                "interpolation_lambdas": interpolation_lambdas(K).tolist()}
    return {"settings": settings, "per_t": rows, "summary": summary}


def check_run(run_dir: str | Path, *, ema: bool = True, plot: bool = True, **kw) -> dict:
    """``check_field`` on a run's field; writes check.json (and check-field.png for 2-D data)."""
    from zoo import checkpoint
    from zoo.api import load, make_schedule

    field, cfg = load(run_dir, ema=ema)
    schedule = make_schedule(cfg["schedule"], cfg["t_min"], cfg["T"])
    for k in ("n_points", "n_loops", "K", "nodes", "probes"):
        if k in kw and kw[k] <= 0:
            raise ZooError(f"{k} must be positive, got {kw[k]}")
    out = check_field(field, cfg["backend"], data=cfg["data"], schedule=schedule,
                      dtype=cfg["dtype"], **kw)
    out["settings"].update(arch=cfg["arch"], backend=cfg["backend"], ema=ema)
    checkpoint.write_json(Path(run_dir) / "check.json", out)
    if plot and int(cfg["dim"]) == 2:
        plot_field(field, cfg["backend"], schedule, Path(run_dir) / "check-field.png",
                   title=f"{cfg['arch']} ({cfg['backend']}) on {cfg['data']}", dtype=cfg["dtype"])
    return out


def plot_field(field, backend: str, schedule: Schedule, path: Path, *, title: str,
               times=(0.05, 0.3, 1.0), lim: float = 3.0, n: int = 40, dtype: str = "float32"):
    """The 2-D field (arrows) over its curl d s_2/d x_1 - d s_1/d x_2 (heat map), at a few t."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from zoo import checkpoint

    b = backends.get(backend)
    g = np.linspace(-lim, lim, n)
    X, Y = np.meshgrid(g, g)
    pts = np.stack([X.ravel(), Y.ravel()], 1).astype(np.float64 if dtype == "float64" else np.float32)
    fig, axes = plt.subplots(1, len(times), figsize=(4.2 * len(times), 4))
    for ax, t in zip(np.atleast_1d(axes), times):
        tt = np.full(len(pts), t, dtype=pts.dtype)
        J = b.jacobian(field, pts, tt)
        s = b.score(field, pts, tt)
        curl = (J[:, 1, 0] - J[:, 0, 1]).reshape(n, n)
        m = np.abs(curl).max() or 1.0
        im = ax.imshow(curl, extent=(-lim, lim, -lim, lim), origin="lower", cmap="RdBu_r",
                       vmin=-m, vmax=m)
        k = 3
        ax.quiver(X[::k, ::k], Y[::k, ::k], s[:, 0].reshape(n, n)[::k, ::k],
                  s[:, 1].reshape(n, n)[::k, ::k], color="k", alpha=0.6)
        ax.set_title(f"t = {t}: curl (colour), field (arrows)", fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle(title, fontsize=10)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    checkpoint.atomic_write(path, buf.getvalue())

"""How far a field is from a true score: the seed paper's differential and integral constraints,
the split of two-part heads, and the error against the exact score.

Everything is measured at points x_t = alpha_t x_0 + sigma_t eps of the forward process, on a
grid of times, for any registered field in either backend (through ``zoo.backends``).

- Differential constraint (DC): NAsym = ||J - J^T||_F^2 / (4 ||J||_F^2) (Chao et al. 2023; 0 for
  a true score, 1 for a pure rotation), Asym = ||J - J^T||_F^2 / 2, J = ds/dx. Exact Jacobians up
  to d = 256; above, the unbiased estimates ||J - J^T||_F^2 = E_v ||Jv - J^T v||^2 and
  ||J||_F^2 = E_v ||Jv||^2 (Rademacher v; one JVP and one VJP per probe), reported with an SE.
- Integral constraint (IC): circulation Gamma = closed integral of s . dx around the seed paper's
  loops from data points x_0 (Gauss-Legendre per segment), raw and normalised by the closed
  integral of |s| |dx|:
    polygon   — through K corrupted samples x_t^(k) ~ rho(. | x_0);
    triangle  — through alpha_t x_0 and two corrupted samples;
    projected — the polygon with every point projected radially onto the sphere around
                alpha_t x_0 of radius sigma_t sqrt(d), where rho(. | x_0) concentrates.
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
LOOP_FAMILIES = ("polygon", "triangle", "projected")


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
    """Vertices of the three loop families from data points x0 [L, d]:
    {family: (vertices [L, k, d], sphere centres [L, d] or None)}."""
    L, d = x0.shape
    centre = alpha * x0
    corrupted = centre[:, None, :] + sigma * rng.standard_normal((L, K, d))
    tri = np.concatenate([centre[:, None, :], corrupted[:, :2]], axis=1)
    return {"polygon": (corrupted, None), "triangle": (tri, None), "projected": (corrupted, centre)}


def loop_nodes(vertices: np.ndarray, centre: np.ndarray | None, radius: float, nodes: int):
    """Gauss-Legendre points on every segment of closed paths through ``vertices`` [L, k, d].

    Returns points [L, k, m, d], tangents d gamma / du [L, k, m, d] and weights [m] on [0, 1].
    With a centre c, every point of a straight segment is projected radially onto the sphere
    |x - c| = radius. That curve is the great-circle arc between the projected end points; it is
    parametrised here at constant angular speed (slerp), which traces the same path (so the same
    circulation) but keeps the integrand smooth when a chord passes close to c.
    """
    u, w = np.polynomial.legendre.leggauss(nodes)
    u, w = 0.5 * (u + 1), 0.5 * w
    if centre is None:
        a = vertices
        seg = (np.roll(vertices, -1, axis=1) - a)[:, :, None, :]
        p = a[:, :, None, :] + u[None, None, :, None] * seg
        return p, np.broadcast_to(seg, p.shape), w
    q = vertices - centre[:, None, :]
    qa = q / np.linalg.norm(q, axis=-1, keepdims=True)
    qb = np.roll(qa, -1, axis=1)
    theta = np.arccos(np.clip((qa * qb).sum(-1), -1.0, 1.0))[..., None, None]  # [L, k, 1, 1]
    th = np.maximum(theta, 1e-12)
    uu = u[None, None, :, None]
    ca, cb = np.sin((1 - uu) * th) / np.sin(th), np.sin(uu * th) / np.sin(th)
    da, db = -th * np.cos((1 - uu) * th) / np.sin(th), th * np.cos(uu * th) / np.sin(th)
    A, Bv = qa[:, :, None, :], qb[:, :, None, :]
    p = centre[:, None, None, :] + radius * (ca * A + cb * Bv)
    return p, radius * (da * A + db * Bv), w


def circulation(score_fn: Callable, t: float, vertices: np.ndarray, centre=None,
                radius: float = 0.0, nodes: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """(Gamma, closed integral of |s| |dx|) per loop [L], with s = score_fn(x [N, d], t [N])."""
    p, tangent, w = loop_nodes(vertices, centre, radius, nodes)
    flat = p.reshape(-1, p.shape[-1])
    s = score_fn(flat, np.full(len(flat), t)).reshape(p.shape).astype(np.float64)
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



def check_field(field, backend: str, *, data: str, schedule: Schedule, dtype: str = "float32",
                times=None, n_points: int = 256, n_loops: int = 32, K: int = 6, nodes: int = 48,
                probes: int = 16, seed: int = 0, progress: Callable | None = None) -> dict:
    """Every diagnostic at every t; returns {"settings", "per_t": [...], "summary"}."""
    from zoo.api import create
    from zoo.data import get_dataset

    ds = get_dataset(data)
    d = ds.dim
    b = _Flat(backends.get(backend), ds.shape)
    times = default_times(schedule) if times is None else np.asarray(times, dtype=np.float64)
    rng = np.random.default_rng([4, seed])
    exact = None
    if ds.exact is not None:
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
        if d <= EXACT_JACOBIAN_MAX_D:
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
        for fam, (v, centre) in verts.items():
            gamma, length = circulation(score, t, v, centre, s_t * math.sqrt(d), nodes)
            loops[fam] = {"gamma": _quartiles(gamma), "gamma_abs": _quartiles(np.abs(gamma)),
                          "normalised": _quartiles(np.abs(gamma) / length)}
        row["loops"] = loops
        rows.append(row)
        if progress:
            progress(i + 1, len(times))
    summary = {"nasym_mean": float(np.mean([r["nasym"] for r in rows])),
               "nasym_max": float(np.max([r["nasym"] for r in rows]))}
    for fam in LOOP_FAMILIES:
        summary[f"circulation_{fam}_median"] = float(
            np.median([r["loops"][fam]["normalised"]["median"] for r in rows]))
    for key in ("rot_share", "score_rel_error", "stein_residual_sq", "error_sq"):
        if key in rows[0]:
            summary[f"{key}_mean"] = float(np.mean([r[key] for r in rows]))
    settings = {"data": data, "times": [float(t) for t in times], "n_points": n_points,
                "n_loops": n_loops, "K": K, "nodes": nodes, "probes": probes, "seed": seed,
                "dtype": dtype, "jacobian": "exact" if d <= EXACT_JACOBIAN_MAX_D else "hutchinson"}
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

"""Figures (matplotlib Agg), drawn from committed files only: the runs' JSON and the ODE sample
file of each (field, backend)'s lowest complete seed. Which figures exist therefore depends only
on what git holds, so the "Figures:" line of LEADERBOARD.md is reproducible.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np

from zoo import checkpoint
from zoo.leaderboard.collect import Run
from zoo.leaderboard.curves import CURVE_METRIC, field_curves
from zoo.leaderboard.tables import COLUMNS, Dataset

MARKERS = {"conservative": "o", "free": "^", "two-part": "s"}


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    checkpoint.atomic_write(path, buf.getvalue())


def lowest_seed(runs: list[Run], data: str) -> dict[tuple[str, str], Run]:
    """(arch, backend) -> its lowest-seed complete run on ``data``."""
    first: dict = {}
    for r in sorted(runs, key=lambda r: (r.seed, r.path)):
        if r.data == data and r.status == "complete":
            first.setdefault((r.arch, r.backend), r)
    return dict(sorted(first.items()))


def sample_files(runs: list[Run], data: str, root: Path) -> dict[tuple[str, str], Path]:
    """The ODE sample files the samples figure uses: those of each (field, backend)'s lowest
    seed among all its runs (the ones committed), when that run is complete."""
    first: dict = {}
    for r in sorted(runs, key=lambda r: (r.seed, r.path)):
        if r.data == data:
            first.setdefault((r.arch, r.backend), r)
    out = {}
    for k, r in sorted(first.items()):
        if r.status == "complete" and r.samples and (root / r.path / r.samples).is_file():
            out[k] = root / r.path / r.samples
    return out


def _conservativity(plt, data: str, first: dict, path: Path) -> bool:
    if not any(r.per_t for r in first.values()):
        return False
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for (arch, backend), r in first.items():
        if not r.per_t:
            continue
        t = [p["t"] for p in r.per_t]
        ls = "-" if backend == "torch" else "--"
        axes[0].plot(t, [max(p["nasym"], 1e-16) for p in r.per_t], ls, label=f"{arch} [{backend}]")
        axes[1].plot(t, [max(p["loops"]["polygon"]["normalised"]["median"], 1e-16)
                         for p in r.per_t], ls)
    for ax, name in zip(axes, ("NAsym (0 = symmetric Jacobian)",
                               "normalised circulation (polygon loops, median)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("t")
        ax.set_title(name, fontsize=10)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{data}: conservativity vs t (lowest complete seed per field)")
    _save(fig, path)
    return True


def _samples(plt, data: str, have: dict, path: Path) -> bool:
    if not have:
        return False
    from zoo.data import get_dataset

    arches = sorted({a for a, _ in have})
    bks = sorted({b for _, b in have})
    fig, axes = plt.subplots(len(bks), len(arches) + 1,
                             figsize=(2.4 * (len(arches) + 1), 2.4 * len(bks)), squeeze=False)
    ds = get_dataset(data)
    lat = ds.latent  # a latent set's samples are drawn decoded, as images
    image = len(ds.shape) == 3 or lat is not None
    shape = lat.image_shape if lat is not None else ds.shape
    ref = ds.sample(np.random.default_rng([2, 0]), 64 if image else 2000)
    flat = ref.reshape(len(ref), -1)
    lim = np.percentile(np.abs(flat[:, :2]), 99.5) * 1.3
    for i, b in enumerate(bks):
        panels = [("data" if lat is None else "data (decoded)", ref)]
        for a in arches:
            x = None
            if (a, b) in have:
                with np.load(have[(a, b)], allow_pickle=False) as z:
                    x = z["samples"]
            panels.append((f"{a} [{b}]", x))
        if lat is not None:  # decode the first 64 latents of each panel (non-finite ones: NaN)
            panels = [(t, None if x is None else _decode(lat, x[:64])) for t, x in panels]
        for ax, (title, pts) in zip(axes[i], panels):
            ax.set_title(title, fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
            if pts is None:  # no complete, current run in this backend: say so, not a blank
                ax.text(0.5, 0.5, "not in the table", ha="center", va="center", fontsize=8,
                        color="0.5", transform=ax.transAxes)
                continue
            if image:  # an 8 x 8 grid of images
                from zoo.sampling import tile

                ax.imshow(tile(pts.reshape(len(pts), *shape), 8), cmap="gray", vmin=-1,
                          vmax=1, interpolation="nearest")
                continue
            pts = pts.reshape(len(pts), -1)
            ax.scatter(pts[:, 0], pts[:, 1], s=1, alpha=0.4, lw=0)
            ax.set_xlim(-lim, lim)
            ax.set_ylim(-lim, lim)
            ax.set_aspect("equal")
    fig.suptitle(f"{data}: probability-flow ODE samples, lowest seed"
                 + (" (decoded)" if lat is not None else "" if image
                    else " (first two coordinates)"))
    _save(fig, path)
    return True


def _decode(lat, z: np.ndarray) -> np.ndarray:
    """Images of latents z [n, d] by the latent set's decoder; non-finite latents give NaN."""
    z = np.asarray(z, np.float64).reshape(len(z), -1)
    out = np.full((len(z), *lat.image_shape), np.nan)
    ok = np.all(np.isfinite(z), axis=1)
    if ok.any():
        out[ok] = lat.decode(z[ok])
    return out


def _curves(plt, ds: Dataset, runs: list[Run], path: Path) -> bool:
    curves = field_curves(runs, ds.name)
    if not curves:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, (name, title) in zip(axes, curve_panels(ds)):
        floor, seen = None, []
        for i, c in enumerate(curves):
            if name not in c.mean:
                continue
            steps = np.asarray(c.steps, float)
            keep = steps > 0  # log x
            m, s = c.mean[name][keep], c.sd[name][keep]
            seen.extend(m[np.isfinite(m)])
            colour = plt.cm.tab10(i % 10)
            ax.plot(steps[keep], m, "-o", ms=3, color=colour,
                    label=f"{c.arch} [{c.backend}, {len(c.seeds)} seed"
                          f"{'s' if len(c.seeds) > 1 else ''}]")
            if len(c.seeds) > 1:
                ax.fill_between(steps[keep], m - s, m + s, color=colour, alpha=0.15, lw=0)
            floor = floor or c.floors[name]
        if floor is not None:
            ax.axhspan(floor[0] - floor[1], floor[0] + floor[1], color="k", alpha=0.12, lw=0)
            ax.axhline(floor[0], color="k", lw=0.8, ls=":", label="real data (floor ± std)")
        ax.set_xscale("log")
        if _wide(seen):  # runaway early points (FD 1e7, log rho -2000) flatten the rest
            if min(seen) > 0:
                ax.set_yscale("log")
            else:  # linear out to the floor, where the late points approach it
                ax.set_yscale("symlog", linthresh=_linthresh(floor), linscale=2.0)
        ax.set_xlabel("training step")
        ax.set_title(f"{title} of ODE samples", fontsize=10)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{ds.name}: learning curves (mean ± std over seeds)")
    _save(fig, path)
    return True


def curve_panels(ds: Dataset) -> list[tuple[str, str]]:
    """The two metrics a dataset's learning-curve figure draws (eval.json name, title): its
    first verdict metric, then the second where it has a sample one (images: memorised), else
    FD on images and MMD (precision where MMD is the verdict) on points."""
    keys = [k for k in ds.verdict if k in CURVE_METRIC][:2]
    if len(keys) < 2:
        keys.append("fd_ode" if ds.image and keys[0] != "fd_ode" else None)
    panels = [(CURVE_METRIC[k], COLUMNS[k].title.replace(" ODE", "")) for k in keys if k]
    if len(panels) < 2:
        panels.append(("mmd_rbf", "MMD") if keys[0] != "mmd_ode" else ("precision", "precision"))
    return panels


def _wide(values) -> bool:
    """Whether values, none of them 0 (a share of 0 has no place on a log axis), span more
    than 30x in magnitude, so a linear axis would hide the late, small differences a reader
    looks for; values of both signs only beyond |v| = 30, where the symlog axis (linear
    within +-1) draws decades (MMD's unbiased estimate dips below 0 near the floor and stays
    linear)."""
    v = np.asarray(values, float)
    a = np.abs(v)
    if a.size < 2 or a.min() == 0 or a.max() / a.min() <= 30.0:
        return False
    return v.min() > 0 or a.max() > 30.0


def _linthresh(floor) -> float:
    """The symlog axis' linear half-width: out to the floor's far edge (digits-gmm's trimmed
    log rho: 18.5 + 0.3), so the last points, between early runaways and the floor, are drawn
    on a linear scale; 1 where there is no floor or it lies within +-1."""
    if floor is None or not np.isfinite(floor[0]):
        return 1.0
    return max(1.0, abs(floor[0]) + abs(floor[1] or 0.0))


def _floor_gap(ds: Dataset, row) -> float | None:
    """How far the row's verdict sample metric lies from its floor, in floor stds (> 0: worse)."""
    key = ds.verdict[0]
    fl = ds.floors.get(key)
    if key not in row.stats or fl is None or fl[0] is None or not fl[1]:
        return None
    m = row.stats[key][0]
    if not math.isfinite(m):
        return None
    up = COLUMNS[key].better == "max"
    return (fl[0] - m) / fl[1] if up else (m - fl[0]) / fl[1]


def _quality(plt, datasets: dict[str, Dataset], path: Path) -> bool:
    pts = [(d, r, _floor_gap(ds, r)) for d, ds in datasets.items() for r in ds.rows
           if "nasym" in r.stats]
    pts = [p for p in pts if p[2] is not None]
    if not pts:
        return False
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    datas = sorted({d for d, _, _ in pts})
    colours = {d: plt.cm.tab10(i % 10) for i, d in enumerate(datas)}
    for d, r, y in pts:
        ax.scatter(max(r.stats["nasym"][0], 1e-16), y, color=colours[d],
                   marker=MARKERS.get(r.kind, "x"), s=30)
    for d in datas:
        ax.scatter([], [], color=colours[d], label=f"{d} ({COLUMNS[datasets[d].verdict[0]].title})")
    for k, mk in MARKERS.items():
        ax.scatter([], [], marker=mk, color="grey", label=k)
    ax.axhline(0.0, color="k", lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set_yscale("symlog", linthresh=2.0)
    ax.set_ylim(bottom=min(-1.0, 1.2 * min(y for _, _, y in pts)))
    ax.set_xlabel("NAsym (mean over t)")
    ax.set_ylabel("verdict metric: distance from floor (floor stds, > 0 worse)")
    ax.set_title("sample quality vs conservativity", fontsize=10)
    ax.legend(fontsize=7)
    _save(fig, path)
    return True


def make_figures(datasets: dict[str, Dataset], runs: list[Run], root: Path,
                 fig_dir: Path) -> list[Path]:
    """Draw every figure the committed files allow; returns those written, in a fixed order."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig_dir.mkdir(parents=True, exist_ok=True)
    made = []
    for name, ds in datasets.items():
        draws = [(f"conservativity-{name}.png",
                  lambda p, n=name: _conservativity(plt, n, lowest_seed(runs, n), p)),
                 (f"curves-{name}.png", lambda p, d=ds: _curves(plt, d, runs, p)),
                 (f"samples-{name}.png",
                  lambda p, n=name: _samples(plt, n, sample_files(runs, n, root), p))]
        for fname, draw in draws:
            if draw(fig_dir / fname):
                made.append(fig_dir / fname)
    if _quality(plt, datasets, fig_dir / "quality-vs-conservativity.png"):
        made.append(fig_dir / "quality-vs-conservativity.png")
    return made

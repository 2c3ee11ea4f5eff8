"""`zoo leaderboard`: one table per dataset from the runs' JSON files, plus figures.

Reads, under a runs directory, every run's config.json (training status and speed), sweep.json
(suite, commit, failure reason), eval.json (sample quality, ODE and SDE, with noise floors),
nll.json and check.json (conservativity, score error, Stein residual). Rows are (field, backend)
per dataset; numbers are mean +- std over seeds (sample std, ddof = 1). Only the JSON is read for
the tables, so the committed JSON reproduces the committed LEADERBOARD.md and leaderboard.csv
byte for byte. A run directory whose JSON is unreadable is reported and skipped, never fatal.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from zoo import checkpoint
from zoo.registry import ZooError

# (key, markdown title, better: "min" | "max" | None, format)
COLUMNS = [
    ("w2_ode", "W2 ODE", "min", ".3f"),
    ("w2_sde", "W2 SDE", "min", ".3f"),
    ("nll", "NLL", "min", ".3f"),
    ("logp_ode", "log ρ ODE", "max", ".3f"),
    ("modes_ode", "modes ODE", "max", ".2f"),
    ("modes_sde", "modes SDE", "max", ".2f"),
    ("nasym", "NAsym", "min", ".1e"),
    ("circulation", "circ", "min", ".1e"),
    ("rot_share", "rot share", None, ".1e"),
    ("score_err", "score err", "min", ".3f"),
    ("stein_r2", "Stein r²", "min", ".2e"),
    ("ms_step", "ms/step", "min", ".2f"),
    ("ratio_free", "×free", None, ".2f"),
    ("nfe_ode", "NFE ODE", "min", ".0f"),
]
PRIMARY = "w2_ode"  # the backend gap is taken on this metric
MARKERS = {"conservative": "o", "free": "^", "two-part": "s"}


@dataclass
class Run:
    """What the leaderboard needs of one run directory."""

    path: str
    data: str
    arch: str
    backend: str
    seed: int
    status: str  # complete, failed, running, incomplete
    reason: str | None = None
    suite: str | None = None
    commit: str | None = None
    values: dict = field(default_factory=dict)  # column key -> float (None if not defined)
    floors: dict = field(default_factory=dict)  # w2_ode / w2_sde -> (mean, std)
    exact_nll: float | None = None
    per_t: list = field(default_factory=list)  # check.json per_t (for figures)


def _read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    return json.loads(path.read_text())  # errors handled by the caller (the run is skipped)


def _solver(ev: dict, solver: str) -> dict | None:
    for k, v in ev.get("solvers", {}).items():
        if k.startswith(solver + "-"):
            return v
    return None


def read_run(run_dir: Path) -> Run:
    """A run's JSON as a Run; raises ValueError/KeyError/JSONDecodeError for a corrupt one."""
    sw = _read_json(run_dir / "sweep.json") or {}
    # a run refused before training wrote anything (a field that fails its probe) has only
    # sweep.json: it still gets its row, as failed
    cfg = _read_json(run_dir / "config.json") or {k: sw[k] for k in ("data", "arch", "backend",
                                                                     "seed")}
    r = Run(str(run_dir), cfg["data"], cfg["arch"], cfg["backend"], int(cfg["seed"]),
            status=sw.get("status") or cfg.get("status", "incomplete"), suite=sw.get("suite"),
            commit=sw.get("commit"))
    r.reason = sw.get("reason") or cfg.get("reason")
    if cfg.get("status") == "failed":
        r.status, r.reason = "failed", sw.get("reason") or f"train: {cfg.get('reason')}"
    v = r.values
    if cfg.get("steps_per_s"):
        v["ms_step"] = 1000.0 / float(cfg["steps_per_s"])
    ev = _read_json(run_dir / "eval.json")
    if ev is not None:
        for solver in ("ode", "sde"):
            e = _solver(ev, solver)
            if e is None:
                continue
            m = e["metrics"]
            if not e.get("finite", True):
                v[f"w2_{solver}"] = math.inf  # shown as non-finite, never averaged
                continue
            v[f"w2_{solver}"] = m["w2"]["value"]
            r.floors[f"w2_{solver}"] = (m["w2"]["floor_mean"], m["w2"]["floor_std"])
            if "mode_coverage" in m:
                v[f"modes_{solver}"] = m["mode_coverage"]["value"]
            if solver == "ode":
                v["nfe_ode"] = float(e["nfe"])
                if "mean_log_density" in m:
                    v["logp_ode"] = m["mean_log_density"]["value"]
    nll = _read_json(run_dir / "nll.json")
    if nll is not None:
        v["nll"] = nll["nll_nats"]
        r.exact_nll = nll.get("exact_nll_nats")
    ch = _read_json(run_dir / "check.json")
    if ch is not None:
        s = ch["summary"]
        v["nasym"] = s["nasym_mean"]
        v["circulation"] = s["circulation_polygon_median"]
        for key, col in (("rot_share_mean", "rot_share"), ("score_rel_error_mean", "score_err"),
                         ("stein_residual_sq_mean", "stein_r2")):
            if key in s:
                v[col] = s[key]
        r.per_t = ch["per_t"]
    if r.status == "complete" and (ev is None or ch is None or nll is None):
        r.status = "incomplete"  # trained by hand, not through the sweep's later stages
    return r


def collect(runs_root: str | Path) -> tuple[list[Run], list[str]]:
    """Every run under ``runs_root`` (any depth) and the problems met: (runs, skipped notes)."""
    root = Path(runs_root)
    if not root.is_dir():
        raise ZooError(f"{root}: no such runs directory (run `zoo sweep` first)")
    runs, skipped = [], []
    dirs = sorted({p.parent for name in ("config.json", "sweep.json") for p in root.rglob(name)})
    for d in dirs:
        try:
            runs.append(read_run(d))
        except (ValueError, KeyError, TypeError, OSError, UnicodeDecodeError) as e:
            rel = d.relative_to(root)
            skipped.append(f"{rel}: unreadable ({type(e).__name__}: {' '.join(str(e).split())})")
    return runs, skipped


def mean_std(values: list[float]) -> tuple[float, float]:
    """(mean, sample std with ddof = 1; 0 for one value). A non-finite value makes both inf."""
    a = np.asarray(values, np.float64)
    if not np.all(np.isfinite(a)):
        return math.inf, math.inf
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


@dataclass
class Row:
    data: str
    arch: str
    backend: str
    kind: str  # conservative, two-part or free (``_kind``)
    seeds: int  # complete runs aggregated
    total: int  # runs found
    stats: dict  # key -> (mean, std)
    failed: list  # (seed, status, reason)


def _kind(arch: str, backend: str) -> str:
    """conservative (by construction), two-part (gradient + rotation heads) or free."""
    import zoo

    try:
        info = zoo.get_info(arch, backend)
    except ZooError:  # a plugin field that is not loaded: say what we know
        return "free"
    if info.conservative:
        return "conservative"
    return "two-part" if info.head in ("helmholtz", "stein") else "free"


def _backbone(arch: str) -> str:
    """The backbone a field name ends with (``energysq-unet`` -> ``unet``)."""
    return arch.rpartition("-")[2]


def aggregate(runs: list[Run]) -> dict[str, list[Row]]:
    """{dataset: rows}, one row per (field, backend), complete runs averaged over seeds."""
    groups: dict[tuple, list[Run]] = defaultdict(list)
    for r in runs:
        groups[(r.data, r.arch, r.backend)].append(r)
    out: dict[str, list[Row]] = defaultdict(list)
    for (data, arch, backend), rs in sorted(groups.items()):
        ok = [r for r in rs if r.status == "complete"]
        stats = {}
        for key, *_ in COLUMNS:
            vals = [r.values[key] for r in ok if r.values.get(key) is not None]
            if vals and len(vals) == len(ok):
                stats[key] = mean_std(vals)
        failed = sorted((r.seed, r.status, r.reason) for r in rs if r.status != "complete")
        out[data].append(Row(data, arch, backend, _kind(arch, backend), len(ok), len(rs),
                             stats, failed))
    for rows in out.values():  # training cost relative to free on the same backbone and backend
        free = {(_backbone(r.arch), r.backend): r.stats.get("ms_step") for r in rows
                if r.arch == f"free-{_backbone(r.arch)}"}
        for r in rows:
            ref = free.get((_backbone(r.arch), r.backend))
            if "ms_step" in r.stats and ref:
                r.stats["ratio_free"] = (r.stats["ms_step"][0] / ref[0], 0.0)
    return dict(out)


def backend_gap(rows: list[Row]) -> dict[str, float]:
    """{arch: mean PRIMARY (torch) - mean PRIMARY (jax)} where both backends have it."""
    by = {(r.arch, r.backend): r.stats.get(PRIMARY) for r in rows}
    return {a: by[(a, "torch")][0] - by[(a, "jax")][0] for a, b in by
            if b == "torch" and by.get((a, "torch")) and by.get((a, "jax"))}


def _fmt(ms: tuple[float, float] | None, fmt: str, seeds: int) -> str:
    if ms is None:
        return "–"
    m, s = ms
    if not math.isfinite(m):
        return "non-finite"
    return f"{m:{fmt}}" + (f" ± {s:{fmt}}" if seeds > 1 else "")


def _best(rows: list[Row], key: str, better: str | None) -> float | None:
    vals = [r.stats[key][0] for r in rows if key in r.stats and math.isfinite(r.stats[key][0])]
    if not better or not vals:
        return None
    return min(vals) if better == "min" else max(vals)


def _floor(runs: list[Run], data: str, key: str) -> tuple[float, float] | None:
    f = [r.floors[key] for r in runs if r.data == data and key in r.floors and r.status == "complete"]
    if not f:
        return None
    return float(np.mean([a for a, _ in f])), float(np.mean([b for _, b in f]))


def summary_lines(tables: dict[str, list[Row]], runs: list[Run]) -> list[str]:
    """What the tables say about conservative vs free fields, in numbers, per dataset.

    Groups: conservative by construction, free (unconstrained, with or without the qc penalty)
    and two-part heads. The verdict compares the conservative and free group means of W2 ODE on
    the scale of the seed std (several seeds) or the noise floor's std (one seed).
    """
    lines = []
    for data, rows in tables.items():
        floor = _floor(runs, data, PRIMARY)
        groups = {k: [r for r in rows if r.kind == k and PRIMARY in r.stats
                      and math.isfinite(r.stats[PRIMARY][0])]
                  for k in ("conservative", "free", "two-part")}
        if not groups["conservative"] or not groups["free"]:
            continue
        parts = []
        for k, g in groups.items():
            if not g:
                continue
            best = min(g, key=lambda r: r.stats[PRIMARY][0])
            mean = float(np.mean([r.stats[PRIMARY][0] for r in g]))
            nas = [r.stats["nasym"][0] for r in g if "nasym" in r.stats]
            nas_txt = f", NAsym {np.mean(nas):.1e}" if nas else ""
            parts.append(f"{k} fields average W2 ODE {mean:.3f} (best {best.arch} "
                         f"[{best.backend}] {best.stats[PRIMARY][0]:.3f}{nas_txt})")
        a = np.mean([r.stats[PRIMARY][0] for r in groups["conservative"]])
        b = np.mean([r.stats[PRIMARY][0] for r in groups["free"]])
        spread = [r.stats[PRIMARY][1] for r in rows if PRIMARY in r.stats and r.seeds > 1]
        scale = float(np.mean(spread)) if spread else (floor[1] if floor else 0.0)
        scale_name = "seed std" if spread else "floor std"
        ftxt = f"; noise floor {floor[0]:.3f} ± {floor[1]:.3f}" if floor else ""
        diff = a - b
        if abs(diff) <= 2 * scale:
            verdict = (f"conservative minus free {diff:+.3f}, within 2 {scale_name} "
                       f"({scale:.3f}): no clear difference")
        else:
            who = "free" if diff > 0 else "conservative"
            verdict = (f"the {who} fields are better by {abs(diff):.3f} "
                       f"({abs(diff) / max(scale, 1e-12):.1f} {scale_name})")
        lines.append(f"- **{data}**: {'; '.join(parts)}{ftxt}: {verdict}.")
    return lines


def render_markdown(tables: dict[str, list[Row]], runs: list[Run], skipped: list[str],
                    figures: list[str]) -> str:
    from zoo.sweep import SUITES

    suites = sorted({r.suite or "?" for r in runs})
    commits = sorted({r.commit or "?" for r in runs})
    seeds = sorted({r.seed for r in runs})
    defined = [f"{s} defines {SUITES[s]['seeds']}" for s in suites if s in SUITES]
    of = f" ({'; '.join(defined)})" if defined else ""
    out = ["# Leaderboard: conservative vs free score fields", "",
           f"Suite {', '.join(suites)}; seeds {', '.join(map(str, seeds))}{of}; code commit(s) "
           f"{', '.join(commits)}; {sum(r.status == 'complete' for r in runs)} complete runs of "
           f"{len(runs)}. Regenerate with `zoo leaderboard`.", "",
           "Samples stop at t_min (no denoising) and are compared with fresh rho_{t_min} data. "
           "W2: exact 2-Wasserstein distance (lower is better), beside its noise floor (the same "
           "metric between two real draws of the same size). NLL: nats per sample from the "
           "probability-flow ODE. log ρ: mean closed-form log-density of the ODE samples. modes: "
           "share of mixture components covered. NAsym: ||J - J^T||²/(4||J||²) averaged over t "
           "(0 = conservative). circ: median normalised circulation on polygon loops. rot share: "
           "rotational part's share of E|s|². score err: E|s - S|²/E|S|². Stein r²: E[(div e + "
           "S·e)²], the part of the error e = s - S that moves density. ms/step and ×free: "
           "training cost (measured during the sweep, workers side by side). gap: W2 ODE of torch "
           "minus jax for the same field (identical training should make it small). kind: "
           "conservative by construction, free (unconstrained; qc adds a soft penalty) or "
           "two-part (gradient + rotational head). **Bold**: "
           "best in column. Values: mean ± std over seeds.", "", "## Summary", ""]
    out += summary_lines(tables, runs) or ["- (no dataset has both conservative and free "
                                           "fields complete)"]
    if figures:
        out += ["", "Figures: " + ", ".join(f"[{Path(f).stem}]({f})" for f in figures)]
    for data, rows in tables.items():
        out += ["", f"## {data}", ""]
        notes = []
        for key, name in (("w2_ode", "W2 ODE"), ("w2_sde", "W2 SDE")):
            fl = _floor(runs, data, key)
            if fl:
                notes.append(f"{name} noise floor {fl[0]:.3f} ± {fl[1]:.3f}")
        ex = [r.exact_nll for r in runs if r.data == data and r.exact_nll is not None]
        if ex:
            notes.append(f"NLL of the exact density {np.mean(ex):.3f}")
        if notes:
            out += ["; ".join(notes) + ".", ""]
        keys = [c for c in COLUMNS if any(c[0] in r.stats for r in rows)]
        gap = backend_gap(rows)
        head = ["field", "backend", "kind", "seeds", *(c[1] for c in keys), "gap"]
        out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        best = {c[0]: _best(rows, c[0], c[2]) for c in keys}
        for r in rows:
            cells = [r.arch, r.backend, r.kind, f"{r.seeds}/{r.total}"]
            for key, _, _, fmt in keys:
                txt = _fmt(r.stats.get(key), fmt, r.seeds)
                if best[key] is not None and key in r.stats and r.stats[key][0] == best[key]:
                    txt = f"**{txt}**"
                cells.append(txt)
            cells.append(f"{gap[r.arch]:+.3f}" if r.arch in gap else "–")
            out.append("| " + " | ".join(cells) + " |")
        fails = [(r, f) for r in rows for f in r.failed]
        if fails:
            out += ["", "Failed or incomplete:", ""]
            out += [f"- {r.arch} [{r.backend}] seed {s}: {st}" + (f" — {why}" if why else "")
                    for r, (s, st, why) in fails]
    if skipped:
        out += ["", "## Skipped run directories", ""] + [f"- {s}" for s in skipped]
    return "\n".join(out) + "\n"


def render_csv(tables: dict[str, list[Row]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    keys = [c[0] for c in COLUMNS]
    w.writerow(["data", "field", "backend", "kind", "seeds", "runs",
                *(f"{k}_{s}" for k in keys for s in ("mean", "std")), "backend_gap"])
    for data, rows in tables.items():
        gap = backend_gap(rows)
        for r in rows:
            vals = []
            for k in keys:
                m = r.stats.get(k)
                vals += ["", ""] if m is None else [f"{m[0]:.6g}", f"{m[1]:.6g}"]
            w.writerow([data, r.arch, r.backend, r.kind, r.seeds, r.total, *vals,
                        f"{gap[r.arch]:.6g}" if r.arch in gap else ""])
    return buf.getvalue()


# ----------------------------------------------------------------------------- figures


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    checkpoint.atomic_write(path, buf.getvalue())


def make_figures(tables: dict[str, list[Row]], runs: list[Run], fig_dir: Path) -> list[Path]:
    """Samples beside data (needs the runs' sample files), NAsym and circulation vs t, and
    sample quality vs conservativity. Returns the figures written or already present."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig_dir.mkdir(parents=True, exist_ok=True)
    made = []
    complete = [r for r in runs if r.status == "complete"]
    for data in tables:
        first = {}  # (arch, backend) -> the lowest-seed complete run
        for r in sorted(complete, key=lambda r: r.seed):
            if r.data == data:
                first.setdefault((r.arch, r.backend), r)
        # NAsym and circulation vs t
        if any(r.per_t for r in first.values()):
            fig, axes = plt.subplots(1, 2, figsize=(11, 4))
            for (arch, backend), r in sorted(first.items()):
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
            fig.suptitle(f"{data}: conservativity vs t (seed {min(r.seed for r in first.values())})")
            path = fig_dir / f"conservativity-{data}.png"
            _save(fig, path)
            made.append(path)
        # samples beside the data (only where the sample files are present)
        have = {k: Path(r.path) / "samples-ode-dopri5.npz" for k, r in first.items()}
        have = {k: p for k, p in sorted(have.items()) if p.is_file()}
        path = fig_dir / f"samples-{data}.png"
        if have:
            from zoo.data import get_dataset

            arches = sorted({a for a, _ in have})
            bks = sorted({b for _, b in have}, reverse=True)
            fig, axes = plt.subplots(len(bks), len(arches) + 1,
                                     figsize=(2.4 * (len(arches) + 1), 2.4 * len(bks)),
                                     squeeze=False)
            ds = get_dataset(data)
            image = len(ds.shape) == 3
            ref = ds.sample(np.random.default_rng([2, 0]), 64 if image else 2000)
            flat = ref.reshape(len(ref), -1)
            lim = np.percentile(np.abs(flat[:, :2]), 99.5) * 1.3
            for i, b in enumerate(bks):
                panels = [("data", ref)]
                for a in arches:
                    x = None
                    if (a, b) in have:
                        with np.load(have[(a, b)], allow_pickle=False) as z:
                            x = z["samples"]
                    panels.append((f"{a} [{b}]", x))
                for ax, (title, pts) in zip(axes[i], panels):
                    ax.set_title(title, fontsize=7)
                    ax.set_xticks([])
                    ax.set_yticks([])
                    if pts is None:
                        continue
                    if image:  # an 8 x 8 grid of images
                        from zoo.sampling import tile

                        ax.imshow(tile(pts.reshape(len(pts), *ds.shape), 8), cmap="gray",
                                  vmin=-1, vmax=1, interpolation="nearest")
                        continue
                    pts = pts.reshape(len(pts), -1)
                    ax.scatter(pts[:, 0], pts[:, 1], s=1, alpha=0.4, lw=0)
                    ax.set_xlim(-lim, lim)
                    ax.set_ylim(-lim, lim)
                    ax.set_aspect("equal")
            fig.suptitle(f"{data}: probability-flow ODE samples"
                         + ("" if image else " (first two coordinates)"))
            _save(fig, path)
        if path.is_file():
            made.append(path)
    # quality vs conservativity over every dataset
    pts = [(data, r) for data, rows in tables.items() for r in rows
           if PRIMARY in r.stats and "nasym" in r.stats and math.isfinite(r.stats[PRIMARY][0])]
    if pts:
        fig, ax = plt.subplots(figsize=(6.5, 4.5))
        datas = sorted({d for d, _ in pts})
        colours = {d: plt.cm.tab10(i % 10) for i, d in enumerate(datas)}
        for d, r in pts:
            fl = _floor(runs, d, PRIMARY)
            y = r.stats[PRIMARY][0] / fl[0] if fl else r.stats[PRIMARY][0]
            ax.scatter(max(r.stats["nasym"][0], 1e-16), y, color=colours[d],
                       marker=MARKERS[r.kind], s=30)
        for d in datas:
            ax.scatter([], [], color=colours[d], label=d)
        for kind, mk in MARKERS.items():
            ax.scatter([], [], marker=mk, color="grey", label=kind)
        ax.axhline(1.0, color="k", lw=0.8, ls=":")
        ax.set_xscale("log")
        ax.set_xlabel("NAsym (mean over t)")
        ax.set_ylabel("W2 ODE / noise floor")
        ax.set_title("sample quality vs conservativity", fontsize=10)
        ax.legend(fontsize=7)
        path = fig_dir / "quality-vs-conservativity.png"
        _save(fig, path)
        made.append(path)
    return made


def write_leaderboard(runs_root: str | Path, out: str | Path, figures: bool = True) -> dict:
    """Collect, aggregate and write LEADERBOARD.md, leaderboard.csv (and figures/) under ``out``."""
    runs, skipped = collect(runs_root)
    if not runs:
        raise ZooError(f"{runs_root}: no run directories found (run `zoo sweep` first)")
    tables = aggregate(runs)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    figs = make_figures(tables, runs, out / "figures") if figures else []
    rel = [str(p.relative_to(out)) for p in figs]
    md = render_markdown(tables, runs, skipped, rel)
    checkpoint.atomic_write(out / "LEADERBOARD.md", md.encode())
    checkpoint.atomic_write(out / "leaderboard.csv", render_csv(tables).encode())
    return {"markdown": md, "tables": tables, "runs": runs, "skipped": skipped, "figures": figs,
            "out": out}

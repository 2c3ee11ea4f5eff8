"""Reading run directories: one ``Run`` per directory, from its JSON files alone.

A run directory (``<root>/<suite>/<data>/<arch>-<backend>-s<seed>/``) holds config.json
(training), sweep.json (suite, commit, status, failure reason), eval.json (sample metrics per
solver, each beside its real-vs-real noise floor), nll.json (held-out NLL under the
probability-flow ODE), check.json (conservativity) and, where the sweep drew one, curve.json
(sample metrics vs training step). Paths are kept relative to the runs root, so nothing printed
depends on where the runs live.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from zoo import checkpoint
from zoo.registry import ZooError

# column key -> eval.json metric name, for the ODE samples ("<key>" ends in _ode) and the SDE's
ODE_METRICS = {
    "logpt_ode": "trimmed_log_density", "logp_ode": "mean_log_density", "mmd_ode": "mmd_rbf",
    "prec_ode": "precision",
    "recall_ode": "recall", "density_ode": "density", "coverage_ode": "coverage",
    "offmode_ode": "off_mode", "modes_ode": "mode_coverage", "kl_ode": "component_kl",
    "w2_ode": "w2", "sw2_ode": "sliced_w2", "energy_ode": "energy",
    # images (zoo.image_metrics: the dataset's classifier)
    "fd_ode": "fd", "classkl_ode": "class_kl", "classh_ode": "class_entropy",
    "fprec_ode": "feat_precision", "frecall_ode": "feat_recall", "fcover_ode": "feat_coverage",
    "memo_ode": "memorised", "nntrain_ode": "nn_train_dist", "offrange_ode": "off_range",
}
SDE_METRICS = {"logp_sde": "mean_log_density", "mmd_sde": "mmd_rbf", "w2_sde": "w2",
               "fd_sde": "fd", "memo_sde": "memorised", "offrange_sde": "off_range"}
CHECK_KEYS = {"nasym_mean": "nasym", "circulation_polygon_median": "circulation",
              "circulation_triangle_median": "circ_tri",
              "circulation_projected_median": "circ_proj",
              "circulation_interpolated_median": "circ_interp",
              "circulation_interpolated-projected_median": "circ_iproj",
              "rot_share_mean": "rot_share", "score_rel_error_mean": "score_err",
              "stein_residual_sq_mean": "stein_r2"}


@dataclass
class Run:
    """What the leaderboard needs of one run directory."""

    path: str  # relative to the runs root
    data: str
    arch: str
    backend: str
    seed: int
    status: str  # complete, failed, running, killed, incomplete, stale (see mark_stale)
    reason: str | None = None
    suite: str | None = None
    commit: str | None = None
    values: dict = field(default_factory=dict)  # column key -> float (inf: non-finite samples)
    floors: dict = field(default_factory=dict)  # column key -> (mean or None, std)
    exact_nll: float | None = None
    floor_draws: int | None = None  # real-vs-real draws behind eval.json's floors
    ode_method: str | None = None
    samples: str | None = None  # the ODE samples file eval.json names (samples-ode-*.npz)
    per_t: list = field(default_factory=list)  # check.json per_t (for figures)
    curve: dict | None = None  # curve.json
    options: dict | None = None  # config.json field options
    spec: dict | None = None  # sweep.json: the stage settings the run was made with
    batch: int | None = None
    pixel: str | None = None  # a latent run's image set (its samples are measured decoded)


def _read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    out = json.loads(path.read_text())  # errors handled by the caller (the run is skipped)
    if not isinstance(out, dict):
        raise ValueError(f"{path.name} is not a JSON object")
    return out


def _solver(ev: dict, solver: str) -> tuple[str, dict] | None:
    for k, v in sorted(ev.get("solvers", {}).items()):
        if k.startswith(solver + "-"):
            return k.partition("-")[2], v
    return None


def _status(run_dir: Path, status: str) -> str:
    """"running" with no live sweep holding the run's lock is a killed sweep."""
    if status == "running" and hasattr(checkpoint, "is_locked"):
        if not checkpoint.is_locked(run_dir, name=".sweep.lock"):
            return "killed"
    return status


def _check_curve(c: dict) -> dict:
    pts = c["points"]
    if not isinstance(pts, list) or not pts:
        raise ValueError("curve.json has no points")
    steps = [int(p["step"]) for p in pts]
    if steps != sorted(set(steps)):
        raise ValueError("curve.json points are not in increasing step order")
    for p in pts:
        if not isinstance(p.get("metrics"), dict):
            raise ValueError("curve.json point without metrics")
    return c


def read_run(run_dir: Path, root: Path | None = None) -> Run:
    """A run's JSON as a Run; raises ValueError/KeyError/TypeError/JSONDecodeError for a
    corrupt one. ``root``: the runs root the path is made relative to."""
    sw = _read_json(run_dir / "sweep.json") or {}
    # a run refused before training wrote anything (a field that fails its probe) has only
    # sweep.json: it still gets its row, as failed
    cfg = _read_json(run_dir / "config.json") or {k: sw[k] for k in ("data", "arch", "backend",
                                                                     "seed")}
    rel = str(run_dir.relative_to(root)) if root is not None else run_dir.name
    r = Run(rel, cfg["data"], cfg["arch"], cfg["backend"], int(cfg["seed"]),
            status=_status(run_dir, sw.get("status") or cfg.get("status", "incomplete")),
            suite=sw.get("suite"), commit=sw.get("commit"))
    r.reason = sw.get("reason") or cfg.get("reason")
    if cfg.get("status") == "failed":
        r.status, r.reason = "failed", sw.get("reason") or f"train: {cfg.get('reason')}"
    r.options = cfg.get("options")
    r.spec = sw.get("spec")
    r.batch = cfg.get("batch")
    v = r.values
    ev = _read_json(run_dir / "eval.json")
    if ev is not None:
        for solver, names in (("ode", ODE_METRICS), ("sde", SDE_METRICS)):
            hit = _solver(ev, solver)
            if hit is None:
                continue
            method, e = hit
            m = e["metrics"]
            finite = e.get("finite", True)
            for key, name in names.items():
                if name not in m:
                    continue
                if not finite or m[name] is None:  # non-finite samples: no metric, no floor
                    v[key] = math.inf  # shown as non-finite, never averaged
                    continue
                v[key] = float(m[name]["value"])
                r.floors[key] = (float(m[name]["floor_mean"]), float(m[name]["floor_std"]))
            if solver == "ode":
                r.pixel = e.get("pixel_data") or ev.get("pixel_data")
                r.ode_method = method
                v["nfe_ode"] = float(e["nfe"])
                r.floor_draws = e.get("repeats") or ev.get("settings", {}).get("repeats")
                name = e.get("samples_file")
                if isinstance(name, str) and name.startswith("samples-ode-") and "/" not in name:
                    r.samples = name
    nll = _read_json(run_dir / "nll.json")
    if nll is not None and nll.get("nll_nats") is not None:  # None: the solve diverged ("–")
        v["nll"] = float(nll["nll_nats"])
        if nll.get("dequantisation"):  # an image set: the discrete-data bound in bits/dim
            v["bpd"] = float(nll["bits_per_dim"])
        r.exact_nll = nll.get("exact_nll_nats")
        # the NLL's floor: the exact density's NLL on the same held-out points, give or take the
        # standard error of a mean over that many points
        r.floors["nll"] = (r.exact_nll, float(nll.get("se") or 0.0))
    ch = _read_json(run_dir / "check.json")
    if ch is not None:
        s = ch["summary"]
        for key, col in CHECK_KEYS.items():
            if key in s:
                v[col] = float(s[key])
        r.per_t = ch["per_t"]
    cu = _read_json(run_dir / "curve.json")
    if cu is not None:
        r.curve = _check_curve(cu)
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
            runs.append(read_run(d, root))
        except (ValueError, KeyError, TypeError, OSError, UnicodeDecodeError) as e:
            rel = d.relative_to(root)
            why = " ".join(str(e).replace(f"{d}/", "").split())  # no absolute paths
            skipped.append(f"{rel}: unreadable ({type(e).__name__}: {why})")
    runs.sort(key=lambda r: (r.data, r.arch, r.backend, r.seed, r.path))
    return runs, skipped


def _spec_changes(old: dict, new: dict, where: str = "") -> list[str]:
    """What differs between two stage-settings dicts, e.g. ["train.steps 6000 (now 30000)"]."""
    out = []
    for k in sorted(set(old) | set(new), key=str):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _spec_changes(a, b, f"{where}{k}.")
        elif a != b:
            out.append(f"{where}{k} {_short(a)} (now {_short(b)})")
    return out


def _short(v) -> str:
    """A setting for one line: long lists (a curve's steps) as their ends and length."""
    if isinstance(v, list) and len(v) > 4:
        return f"[{v[0]}, ..., {v[-1]}] ({len(v)} values)"
    return str(v)


Suites = dict[str, dict | None]  # suite -> {(data, arch, backend, seed): spec}, None: unknown


def suite_definitions(runs: list[Run], suite_file: str | Path | None = None) -> Suites:
    """The runs each suite named by ``runs`` defines at present, keyed (data, arch, backend,
    seed) with the settings of each; None for a suite not defined here (nor in ``suite_file``)."""
    from zoo.sweep import resolve

    out: Suites = {}
    for suite in sorted({r.suite for r in runs if r.suite}):
        try:
            jobs = resolve(suite, suite_file=suite_file, root="runs")
        except ZooError:
            out[suite] = None
            continue
        out[suite] = {(j.data, j.arch, j.backend, j.seed): j.spec for j in jobs}
    return out


def mark_stale(runs: list[Run], suites: Suites) -> None:
    """A complete run made with other settings than its suite's present definition (``suites``,
    from suite_definitions) is "stale": kept out of the rows, comparisons and curves (a table
    compares like with like; a budget changed after a learning curve makes the older runs
    another experiment), listed with what changed, and redone by the next sweep. Runs of a suite
    not defined here stay as they are."""
    for r in runs:
        want = (suites.get(r.suite or "") or {}).get((r.data, r.arch, r.backend, r.seed))
        if r.status == "complete" and want is not None and r.spec is not None and r.spec != want:
            r.status = "stale"
            r.reason = ("made with other settings than the suite's present ones: "
                        + ", ".join(_spec_changes(r.spec, want)))

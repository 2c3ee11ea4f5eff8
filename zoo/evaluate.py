"""Sample quality of a run against fresh real data, every metric beside its noise floor.

The samplers stop at t_min without denoising, so samples are compared with rho_{t_min} data,
x = alpha(t_min) x0 + sigma(t_min) eps, drawn from the held-out stream default_rng([3, seed])
(training, plots and the likelihood use other streams). A metric's *floor* is the same metric
between two fresh real draws of the same sizes (repeated): a sampler is as good as the data can
tell when its value lies within a few floor stds of the floor mean. For one-sample metrics (mean
log-density, mode coverage, component KL) the floor is the metric of real data itself.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fields.common import Schedule
from zoo import metrics as M
from zoo.registry import ZooError

if TYPE_CHECKING:
    from rich.table import Table

# metric name -> (short column title, format); the order of the table and of eval.json's listing
METRICS = {
    "w2": ("W2", ".4f"),
    "sliced_w2": ("SW2", ".4f"),
    "mmd_rbf": ("MMD²", ".2e"),
    "energy": ("energy", ".2e"),
    "precision": ("prec", ".3f"),
    "recall": ("recall", ".3f"),
    "density": ("density", ".3f"),
    "coverage": ("cover", ".3f"),
    "mean_log_density": ("log ρ", ".4f"),
    "mode_coverage": ("modes", ".3f"),
    "off_mode": ("off-mode", ".4f"),
    "component_kl": ("KL comp", ".2e"),
}


def _real_sampler(ds, schedule: Schedule):
    """sample_real(rng, n) -> rho_{t_min} draws [n, d] float64."""
    a, s = float(schedule.alpha(schedule.t_min)), float(schedule.sigma(schedule.t_min))

    def sample_real(rng: np.random.Generator, n: int) -> np.ndarray:
        x0 = ds.sample_heldout(rng, n).reshape(n, -1)  # an image set's test split
        return a * x0 + s * rng.standard_normal(x0.shape)

    return sample_real


def evaluate_samples(samples: np.ndarray, data: str, *, schedule: str | Schedule = "ou",
                     seed: int = 0, n_ref: int | None = None, repeats: int = 3,
                     max_points: int = 5000, prdc_k: int = 5,
                     floors: dict[str, tuple[float, float]] | None = None) -> dict:
    """All sample metrics of samples: [n, d] against rho_{t_min} of dataset ``data``.

    Reference: n_ref (default n) fresh points from default_rng([3, seed]); the noise floors draw
    2 x ``repeats`` further sets of sizes (n, n_ref) from the same stream. Metrics: exact W2
    (each set subsampled to ``max_points``), sliced W2, summed unbiased RBF MMD^2, energy
    distance, PRDC (k = prdc_k); for datasets with a closed form also the mean log rho_{t_min}
    (higher is better; its floor is the value for real data), and for Gaussian mixtures the
    mode coverage (components that get >= 10% of their expected count from points inside
    their 99.9% ball), the off-mode share (points outside every component's 99.9% ball) and
    KL(component histogram of all points || weights). Returns {"finite", "n_nonfinite", "n",
    "n_ref", ..., "metrics": {name: {"value", "floor_mean", "floor_std"}}}; if any sample is
    non-finite every metric is None (they are not averaged over the finite part, which would
    hide a diverging sampler).

    floors: precomputed {name: (floor_mean, floor_std)} for these (data, n, n_ref, schedule)
    (e.g. the "metrics" floors of an earlier call): the floors do not depend on the samples, so
    a caller evaluating many sample sets skips their 2 x ``repeats`` real draws. The reference
    set is the same either way (the first draw of default_rng([3, seed])).
    """
    from zoo.api import make_schedule
    from zoo.data import GaussianMixture, get_dataset

    try:
        ds = get_dataset(data)
    except ValueError as e:
        raise ZooError(str(e)) from None
    schedule = make_schedule(schedule)
    x = np.asarray(samples, np.float64)
    if x.ndim != 2 or x.shape[1] != ds.dim or len(x) < 2:
        raise ZooError(f"samples must be [n >= 2, {ds.dim}] for {data}, got {list(x.shape)}")
    if repeats < 2:
        raise ZooError(f"repeats must be >= 2 (a floor needs a spread), got {repeats}")
    n, n_ref = len(x), len(x) if n_ref is None else n_ref
    if n_ref < 2:
        raise ZooError(f"n_ref must be >= 2, got {n_ref}")
    bad = int(np.sum(~np.all(np.isfinite(x), axis=1)))
    t_min = float(schedule.t_min)
    out = {"data": data, "n": n, "n_ref": n_ref, "seed": seed, "repeats": repeats,
           "max_points": max_points, "prdc_k": prdc_k, "schedule": schedule.name, "t_min": t_min,
           "finite": bad == 0, "n_nonfinite": bad}
    names = [k for k in METRICS if ds.exact is not None or k not in
             ("mean_log_density", "mode_coverage", "off_mode", "component_kl")]
    if not isinstance(ds.exact, GaussianMixture):
        names = [k for k in names if k not in ("mode_coverage", "off_mode", "component_kl")]
    if bad:
        out["metrics"] = dict.fromkeys(names)
        return out

    log_density = None
    if ds.exact is not None:
        import torch

        from zoo.api import create

        exact = create("exact", "torch", data=data, schedule=schedule)

        def log_density(a: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return exact.log_density(torch.as_tensor(a, dtype=torch.float64),
                                         torch.full((len(a),), t_min, dtype=torch.float64)).numpy()

    alpha, sigma = float(schedule.alpha(t_min)), float(schedule.sigma(t_min))

    def all_metrics(fake: np.ndarray, real: np.ndarray) -> dict[str, float]:
        # one fixed subsampling stream, so W2 is a function of its inputs alone
        r = {"w2": M.w2(fake, real, max_points, np.random.default_rng([4, seed])),
             "sliced_w2": M.sliced_w2(fake, real, seed=seed),
             "mmd_rbf": M.mmd_rbf(fake, real),
             "energy": M.energy_distance(fake, real),
             **M.prdc(real, fake, k=prdc_k)}
        if log_density is not None:
            r["mean_log_density"] = M.mean_log_density(fake, log_density)
        if isinstance(ds.exact, GaussianMixture):
            m = ds.exact
            counts = M.component_counts(fake, m.means, m.stds, m.weights, alpha, sigma)
            r["component_kl"] = M.component_kl(counts, m.weights)
            # a mode is covered only by points that lie in it: component_counts alone would let
            # samples a hundred units away "cover" whichever mode points their way
            far = M.off_mode(fake, m.means, m.stds, alpha, sigma)
            r["off_mode"] = float(far.mean())
            near = M.component_counts(fake[~far], m.means, m.stds, m.weights, alpha, sigma)
            r["mode_coverage"] = M.mode_coverage(near, m.weights, n=len(fake))
        return r

    sample_real = _real_sampler(ds, schedule)
    rng = np.random.default_rng([3, seed])
    t0 = time.perf_counter()
    values = all_metrics(x, sample_real(rng, n_ref))
    if floors is None:
        floors = M.noise_floor(all_metrics, sample_real, (n, n_ref), repeats=repeats, rng=rng)
    elif missing := [k for k in names if k not in floors]:
        raise ZooError(f"floors lack {', '.join(missing)}")
    out["metrics"] = {k: {"value": values[k], "floor_mean": floors[k][0], "floor_std": floors[k][1]}
                      for k in names}
    out["wall_s"] = time.perf_counter() - t0
    return out


def eval_run(run_dir: str | Path, *, n: int = 2000, seed: int = 0,
             solvers: tuple[tuple[str, str | None], ...] = (("ode", None), ("sde", None)),
             repeats: int = 3) -> dict:
    """Evaluate a run's samples for each (solver, method); writes and returns eval.json.

    Uses samples-<solver>-<method>.npz in the run directory when it exists (whatever its n),
    else samples n points with seed ``seed`` (which writes that file and its plot). method None
    means ``zoo.sampling.default_method(solver, "torch")``. The result holds the settings, one
    ``evaluate_samples`` entry per "<solver>-<method>" (with the sampler's nfe, wall time and
    settings), and nll.json's numbers under "nll" when the run has that file.
    """
    from zoo import checkpoint
    from zoo.api import make_schedule
    from zoo.sampling import SOLVERS, default_method, methods, sample_run

    if n <= 0:
        raise ZooError(f"n must be positive, got {n}")
    if repeats < 2:
        raise ZooError(f"repeats must be >= 2 (a floor needs a spread), got {repeats}")
    run_dir = Path(run_dir)
    cfg = checkpoint.read_config(run_dir)
    schedule = make_schedule(cfg["schedule"], cfg["t_min"], cfg["T"])
    pairs = [(s, m or default_method(s, "torch")) for s, m in solvers]
    for s, m in pairs:  # every pair is checked before anything is sampled or written
        if s not in SOLVERS or m not in methods(s, "torch"):
            raise ZooError(f"unknown solver/method {s}:{m}; choose a solver from "
                           f"{', '.join(SOLVERS)} and a method from `zoo sample --help`")
    result = {"run": str(run_dir), "arch": cfg["arch"], "backend": cfg["backend"],
              "data": cfg["data"],
              "settings": {"n": n, "seed": seed, "repeats": repeats,
                           "solvers": [list(p) for p in pairs], "reference_stream": [3, seed],
                           "schedule": cfg["schedule"], "t_min": cfg["t_min"], "T": cfg["T"]},
              "solvers": {}}
    for solver, method in pairs:
        path = run_dir / f"samples-{solver}-{method}.npz"
        reused = path.is_file()
        if not reused:
            try:
                sample_run(run_dir, n=n, seed=seed, solver=solver, method=method, plot=True)
            except ZooError:
                if not path.is_file():  # non-finite samples are saved (and evaluated as such)
                    raise
        try:
            with np.load(path, allow_pickle=False) as f:
                x = f["samples"]
                info = {"nfe": int(f["nfe"]), "wall_s": float(f["wall_s"]),
                        "sample_settings": json.loads(str(f["settings"]))}
        except (OSError, KeyError, ValueError) as e:
            raise ZooError(f"{path}: unreadable samples file ({e})") from None
        ev = evaluate_samples(x.reshape(len(x), -1), cfg["data"], schedule=schedule, seed=seed,
                              repeats=repeats)
        result["solvers"][f"{solver}-{method}"] = {**ev, **info, "samples_file": path.name,
                                                   "reused": reused}
    nll = run_dir / "nll.json"
    if nll.is_file():
        try:
            result["nll"] = json.loads(nll.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ZooError(f"{nll}: unreadable ({e})") from None
    checkpoint.write_json(run_dir / "eval.json", result)
    return result


def _cell(entry: dict | None, fmt: str) -> str:
    if entry is None:
        return "-"
    return (f"{entry['value']:{fmt}}\n[dim]{entry['floor_mean']:{fmt}}"
            f"±{entry['floor_std']:.1g}[/dim]")


def format_table(result: dict) -> Table:
    """A rich Table of an ``eval_run`` (one row per solver) or ``evaluate_samples`` result.

    Each cell shows the value over its floor (dimmed, mean ± std of real-vs-real draws).
    """
    from rich.table import Table

    rows = result["solvers"] if "solvers" in result else {"samples": result}
    names = [k for k in METRICS if any(k in r.get("metrics", {}) for r in rows.values())]
    title = "value / floor (real vs real, mean ± std)"
    if "arch" in result:
        title = f"{result['arch']} ({result['backend']}) on {result['data']}: {title}"
    table = Table("solver", "n", *(METRICS[k][0] for k in names), title=title)
    for label, r in rows.items():
        n = str(r["n"]) if r["finite"] else f"{r['n']} ({r['n_nonfinite']} non-finite)"
        table.add_row(label, n, *(_cell(r["metrics"].get(k), METRICS[k][1]) for k in names))
    if "nll" in result:
        nll = result["nll"]
        ref = f", exact {nll['exact_nll_nats']:.4f}" if "exact_nll_nats" in nll else ""
        table.caption = f"NLL {nll['nll_nats']:.4f} ± {nll['se']:.4f} nats{ref}"
    return table

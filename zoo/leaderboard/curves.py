"""Learning curves (curve.json) per field: mean over seeds, and where each levels off.

A curve point is the sample quality of the EMA weights kept at a training step (the last point:
the final weights). A field whose verdict metric still moves at the end of its budget is not
converged, so a gap to another field may be learning speed rather than capacity; the plateau
statement says which. "Still moves" is either of: the last step changed the mean curve by 1
floor std or more, or the trend of the curve's second half would change it by 1 floor std or
more over a doubling of the budget. The second test exists because late curve points are close
together (25000, 30000): free-dit's mean FD on digits fell 1.2 there, less than its floor std
(1.45), and its seed 0 fell 4.7 more by step 100000 (results/analysis/dit-budget.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from zoo.leaderboard.collect import Run

# the curve metric (eval.json name) of each sample verdict column
CURVE_METRIC = {"logpt_ode": "trimmed_log_density", "logp_ode": "mean_log_density",
                "mmd_ode": "mmd_rbf", "fd_ode": "fd", "memo_ode": "memorised"}


@dataclass
class FieldCurve:
    data: str
    arch: str
    backend: str
    seeds: list[int]
    steps: list[int]
    mean: dict  # metric -> [len(steps)] mean over seeds
    sd: dict  # metric -> [len(steps)] std over seeds (ddof 1; zeros for one seed)
    floors: dict  # metric -> (floor mean, floor std), averaged over seeds


def field_curves(runs: list[Run], data: str) -> list[FieldCurve]:
    """One curve per field of ``data`` that has curve.json files (JAX where both backends do),
    on the steps every seed has, sorted by field."""
    out = []
    have = [r for r in runs if r.data == data and r.curve is not None and r.status == "complete"]
    for arch in sorted({r.arch for r in have}):
        mine = [r for r in have if r.arch == arch]
        bks = sorted({r.backend for r in mine})
        backend = "jax" if "jax" in bks else bks[0]
        rs = sorted((r for r in mine if r.backend == backend), key=lambda r: r.seed)
        steps = sorted(set.intersection(*({int(p["step"]) for p in r.curve["points"]}
                                          for r in rs)))
        if not steps:
            continue
        pts = [{int(p["step"]): p["metrics"] for p in r.curve["points"]} for r in rs]

        def value(m) -> float:  # None: non-finite samples at that step
            return math.nan if not isinstance(m, dict) else float(m["value"])

        names = sorted({k for p in pts for s in steps for k, m in p[s].items()
                        if isinstance(m, dict)})
        mean, sd, floors = {}, {}, {}
        for name in names:
            v = np.array([[value(p[s].get(name)) for s in steps] for p in pts])
            mean[name] = v.mean(axis=0)
            sd[name] = v.std(axis=0, ddof=1) if len(rs) > 1 else np.zeros(len(steps))
            # each seed's floor at its last finite step (floors do not depend on the weights)
            fl = [next(p[s][name] for s in reversed(steps) if isinstance(p[s].get(name), dict))
                  for p in pts if any(isinstance(p[s].get(name), dict) for s in steps)]
            floors[name] = (float(np.mean([m["floor_mean"] for m in fl])),
                            float(np.mean([m["floor_std"] for m in fl])))
        out.append(FieldCurve(data, arch, backend, [r.seed for r in rs], steps, mean, sd,
                              floors))
    return out


def plateau(values, tol: float) -> int:
    """The first index from which every value lies within ``tol`` of the last one (the last
    index when the last step still moves by ``tol`` or more)."""
    v = np.asarray(values, np.float64)
    i = len(v) - 1
    while i > 0 and abs(v[i - 1] - v[-1]) < tol:
        i -= 1
    return i


def trend(steps, values) -> float:
    """The change of ``values`` per doubling of the step count at the rate of the curve's second
    half: the least-squares slope against ln(step) over the points from half the last step on
    (at least the last two), times ln 2. nan with fewer than two points or a non-finite one."""
    s = np.asarray(steps, np.float64)
    v = np.asarray(values, np.float64)
    if len(v) < 2:
        return math.nan
    k = max(int(np.sum(s >= s[-1] / 2)), 2)  # steps are sorted: the second half is a tail
    x, y = np.log(s[-k:]), v[-k:]
    if not np.all(np.isfinite(y)):
        return math.nan
    return float(np.polyfit(x, y, 1)[0] * math.log(2.0))


def _drifts(c: FieldCurve, metric: str) -> float | None:
    """The ``trend`` of the mean curve of ``metric`` where it is 1 floor std or more, else None."""
    drift = trend(c.steps, c.mean[metric])
    return drift if math.isfinite(drift) and abs(drift) >= c.floors[metric][1] else None


def still_moving(c: FieldCurve, metric: str) -> bool:
    """Whether the mean curve of ``metric`` moves by 1 floor std or more at its last step, or
    its ``trend`` would move it by 1 floor std or more over a doubling of the budget."""
    v = c.mean.get(metric)
    if v is None or len(v) < 2 or not np.all(np.isfinite(v[-2:])):
        return False
    return plateau(v, c.floors[metric][1]) == len(v) - 1 or _drifts(c, metric) is not None


def unconverged(runs: list[Run], names) -> set[tuple[str, str, str]]:
    """(data, arch, curve metric) of every field whose learning curve still moves at the end of its
    budget, over the datasets ``names``."""
    return {(c.data, c.arch, m) for name in names for c in field_curves(runs, name)
            for m in c.mean if still_moving(c, m)}


def plateau_line(c: FieldCurve, metric: str, title: str, fmt: str) -> str:
    n = len(c.seeds)
    who = f"{c.arch} ({n} {c.backend} seed{'s' if n > 1 else ''})"
    if metric not in c.mean:
        return f"- {who}: no {title} in its curve."
    v, tol = c.mean[metric], c.floors[metric][1]
    if not math.isfinite(v[-1]):
        return f"- {who}: {title} non-finite at the last step ({c.steps[-1]})."
    if len(v) < 2:
        return f"- {who}: one point only (step {c.steps[0]}), {title} {v[-1]:{fmt}}."
    i = plateau(v, tol)
    if i == len(v) - 1:
        return (f"- {who}: still moving at the last step: {title} {v[-2]:{fmt}} at step "
                f"{c.steps[-2]}, {v[-1]:{fmt}} at step {c.steps[-1]} (more than 1 floor std, "
                f"{tol:{fmt}}): not converged.")
    drift = _drifts(c, metric)
    if drift is not None:
        return (f"- {who}: {title} within 1 floor std ({tol:{fmt}}) of its final "
                f"{v[-1]:{fmt}} from step {c.steps[i]}, but still drifting: at the rate of the "
                f"curve's second half it moves by {drift:+{fmt}} per doubling of the budget "
                f"(more than 1 floor std): not converged.")
    return (f"- {who}: levels off from step {c.steps[i]}: {title} stays within 1 floor std "
            f"({tol:{fmt}}) of its final {v[-1]:{fmt}} up to step {c.steps[-1]}.")

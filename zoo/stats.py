"""Small pure statistics for comparing fields over seeds (the leaderboard's evidence rules).

Seeds are the unit of evidence (DESIGN.md section 8): two fields trained with the same seed see the
same initial-weight stream, batches and noise, so they are compared *paired*, d_s = a_s - b_s on
the seeds both have, with a Student-t interval from the spread of d over seeds. A difference is
*called* only when that interval excludes 0 and |mean d| exceeds ``k`` noise-floor stds of the
metric; with one seed the seed variance is unknown and the floor alone decides.

A metric whose seed-to-seed variation is multiplicative (the Fréchet distance: a few runaway
samples move it by orders of magnitude) is paired on the ratio scale, log a_s - log b_s
(``paired_ratio_by_seed``), and that interval decides "beyond the seed spread"; the floor test
stays on the metric's own scale.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """(mean, sample std with ddof = 1; 0 for one value). A non-finite value makes both inf."""
    a = np.asarray(values, np.float64)
    if a.size == 0:
        raise ValueError("mean_std of no values")
    if not np.all(np.isfinite(a)):
        return math.inf, math.inf
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0


def t_interval(mean: float, sd: float, n: int, level: float = 0.95) -> tuple[float, float]:
    """Two-sided Student-t interval of a mean of n values with sample std sd:
    mean -+ t_{(1+level)/2, n-1} sd / sqrt(n). (nan, nan) for n < 2 (no spread to go on)."""
    from scipy.stats import t

    if n < 2 or not math.isfinite(sd):
        return math.nan, math.nan
    half = float(t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return mean - half, mean + half


def paired_difference(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> dict:
    """d_i = a_i - b_i: {"mean", "sd" (ddof 1; nan for n = 1), "n", "lo", "hi", "d" (the d_i)}
    with the ``level`` t-interval of the mean (nan bounds for n = 1). a and b are aligned (same
    seeds)."""
    if len(a) != len(b):
        raise ValueError(f"paired_difference needs aligned values, got {len(a)} and {len(b)}")
    if len(a) == 0:
        raise ValueError("paired_difference of no pairs")
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    if not np.all(np.isfinite(d)):
        raise ValueError("paired_difference of non-finite values")
    n = int(d.size)
    mean = float(d.mean())
    sd = float(d.std(ddof=1)) if n > 1 else math.nan
    lo, hi = t_interval(mean, sd, n, level)
    return {"mean": mean, "sd": sd, "n": n, "lo": lo, "hi": hi, "d": [float(x) for x in d]}


def paired_by_seed(a: Mapping[int, float], b: Mapping[int, float],
                   level: float = 0.95) -> dict | None:
    """``paired_difference`` over the seeds both {seed: value} maps have (sorted), plus
    "seeds": that list; None when they share no seed."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return None
    return {**paired_difference([a[s] for s in seeds], [b[s] for s in seeds], level),
            "seeds": seeds}


def paired_ratio_by_seed(a: Mapping[int, float], b: Mapping[int, float],
                         level: float = 0.95) -> dict | None:
    """``paired_by_seed`` of the logs, d_s = log a_s - log b_s: the paired comparison of a
    positive metric on the ratio scale (exp of "mean", "lo", "hi" is the ratio a/b and its
    interval). None when the maps share no seed; ValueError unless every value is > 0."""
    seeds = sorted(set(a) & set(b))
    if not all(math.isfinite(v) and v > 0 for v in [*(a[s] for s in seeds),
                                                    *(b[s] for s in seeds)]):
        raise ValueError("paired_ratio_by_seed needs positive finite values")
    return paired_by_seed({s: math.log(a[s]) for s in seeds}, {s: math.log(b[s]) for s in seeds},
                          level)


def judge(diff: Mapping, floor_std: float, k: float = 2.0, spread: Mapping | None = None) -> dict:
    """Is a paired difference (``paired_difference``'s dict) a called difference?

    {"called", "beyond_floor": |mean| > k floor_std, "beyond_seeds": the interval excludes 0
    (None when n = 1: seed variance unknown)}. called = beyond_floor and (beyond_seeds, or
    n = 1 where the floor alone decides). ``spread``: another paired dict of the same seeds whose
    interval decides beyond_seeds (``paired_ratio_by_seed``'s, for a metric compared as a ratio);
    default ``diff`` itself.
    """
    beyond_floor = abs(diff["mean"]) > k * floor_std
    if diff["n"] < 2:
        return {"called": bool(beyond_floor), "beyond_floor": bool(beyond_floor),
                "beyond_seeds": None}
    spread = diff if spread is None else spread
    if spread["n"] != diff["n"]:
        raise ValueError(f"judge: spread over {spread['n']} seeds, difference over {diff['n']}")
    beyond_seeds = spread["lo"] > 0 or spread["hi"] < 0
    return {"called": bool(beyond_floor and beyond_seeds), "beyond_floor": bool(beyond_floor),
            "beyond_seeds": bool(beyond_seeds)}

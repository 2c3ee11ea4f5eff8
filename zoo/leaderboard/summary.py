"""Every field against free-<backbone> on the same dataset, paired over seeds, and the Summary.

For each field and verdict metric: d_s = field_s - free_s on the seeds both have complete, in one
backend (the one with the most shared seeds; ties: JAX), its mean and 95% t-interval
(``zoo.stats``). A difference is called when the interval excludes 0 and |mean d| > 2 floor std
of the metric; with one seed the seed variance is unknown and the floor alone decides, and the
line says so. FD is paired on the ratio scale (log field_s - log free_s): that interval decides
"beyond the seed spread", since a few runaway samples move FD by orders of magnitude from seed
to seed and a t-interval of raw differences then spans 0 even when every seed is far worse.
Fields are named one by one: no group means of unlike heads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from zoo import stats
from zoo.leaderboard.curves import CURVE_METRIC
from zoo.leaderboard.tables import BACKENDS_ORDER, COLUMNS, Dataset, Row

K_FLOOR = 2.0  # a called difference exceeds this many floor stds


@dataclass
class Comparison:
    data: str
    arch: str
    ref: str  # free-<backbone>
    key: str  # column key of the metric
    backend: str
    seeds: list[int]
    a: tuple[float, float]  # the field's mean, std over ``seeds``
    b: tuple[float, float]  # the reference's
    diff: dict  # stats.paired_difference + seeds
    floor_std: float
    judged: dict  # stats.judge
    ratio: dict | None = None  # stats.paired_ratio_by_seed, for a metric compared as a ratio

    @property
    def better(self) -> bool:
        """The field is better than free (by the metric's direction)."""
        up = COLUMNS[self.key].better == "max"
        return (self.diff["mean"] > 0) == up

    @property
    def seeds_ahead(self) -> tuple[int, int]:
        """(seeds on which the field is better than free, seeds on which it is worse); ties
        count in neither. Descriptive only: the call is the interval's and the floor's."""
        d = np.asarray(self.diff["d"], np.float64)
        up = COLUMNS[self.key].better == "max"
        return int(np.sum(d > 0 if up else d < 0)), int(np.sum(d < 0 if up else d > 0))

    @property
    def word(self) -> str:
        return ("better" if self.better else "worse") if self.judged["called"] else "no call"


def _pick_backend(row: Row, ref: Row, key: str) -> tuple[str, list[int]] | None:
    best = None
    for b in BACKENDS_ORDER + tuple(sorted(set(row.per_seed) - set(BACKENDS_ORDER))):
        a = row.per_seed.get(b, {}).get(key, {})
        f = ref.per_seed.get(b, {}).get(key, {})
        shared = sorted(set(a) & set(f))
        if shared and (best is None or len(shared) > len(best[1])):
            best = (b, shared)
    return best


def compare(ds: Dataset) -> list[Comparison]:
    """Each non-free field vs free-<backbone>, on each verdict metric of the dataset."""
    out = []
    for row in ds.rows:
        ref = ds.row(f"free-{row.backbone}")
        if ref is None or ref is row:
            continue
        for key in ds.verdict:
            fl = ds.floors.get(key)
            pick = _pick_backend(row, ref, key)
            if fl is None or pick is None:
                continue
            b, seeds = pick
            a = [row.per_seed[b][key][s] for s in seeds]
            f = [ref.per_seed[b][key][s] for s in seeds]
            if not all(math.isfinite(x) for x in a + f):
                continue  # non-finite samples: shown in the table, not compared
            d = stats.paired_by_seed(dict(zip(seeds, a)), dict(zip(seeds, f)))
            r = (stats.paired_ratio_by_seed(dict(zip(seeds, a)), dict(zip(seeds, f)))
                 if COLUMNS[key].ratio and min(a + f) > 0 else None)
            out.append(Comparison(ds.name, row.arch, ref.arch, key, b, seeds,
                                  stats.mean_std(a), stats.mean_std(f), d, fl[1],
                                  stats.judge(d, fl[1], K_FLOOR, spread=r), r))
    return out


def _seeds_text(c: Comparison) -> str:
    n = len(c.seeds)
    return f"{n} {c.backend} seed{'s' if n > 1 else ''} (s{','.join(map(str, c.seeds))})"


def _ms(ms: tuple[float, float], fmt: str, n: int) -> str:
    return f"{ms[0]:{fmt}}" + (f" ± {ms[1]:{fmt}}" if n > 1 else "")


def interval_text(c: Comparison) -> str:
    fmt = COLUMNS[c.key].fmt
    if c.diff["n"] < 2:
        return "seed variance unknown"
    if c.ratio is not None:
        return (f"ratio ×{_x(c.ratio['mean'])} [×{_x(c.ratio['lo'])}, "
                f"×{_x(c.ratio['hi'])}]")
    return f"[{c.diff['lo']:+{fmt}}, {c.diff['hi']:+{fmt}}]"


def _x(log_ratio: float) -> str:
    """exp(log_ratio) to 3 significant figures (a ratio field / free)."""
    return f"{math.exp(log_ratio):.3g}"


def line(c: Comparison, moving: tuple[str, ...] = ()) -> str:
    """One summary line: values, difference, interval, seeds, floor, and the call; ``moving``:
    the compared fields whose learning curve of this metric still moves at the end of the budget."""
    col = COLUMNS[c.key]
    fmt, n = col.fmt, len(c.seeds)
    direction = "higher" if col.better == "max" else "lower"
    if n > 1 and c.ratio is not None:
        r = c.ratio
        spread = (f"field / free ×{_x(r['mean'])} (geometric mean over seeds), 95% interval "
                  f"[×{_x(r['lo'])}, ×{_x(r['hi'])}]")
        rule = (f"beyond the seed spread (as a ratio) and 2 floor std "
                f"({K_FLOOR * c.floor_std:{fmt}})")
    elif n > 1:
        spread = f"95% interval {interval_text(c)}"
        rule = f"beyond the seed spread and 2 floor std ({K_FLOOR * c.floor_std:{fmt}})"
    else:
        spread = "seed variance unknown"
        rule = (f"judged against the floor only: |d| > 2 floor std "
                f"({K_FLOOR * c.floor_std:{fmt}})")
    caveat = (f" Not converged: the learning curve of {' and '.join(moving)} still moves at "
              f"the end of the budget, so the difference may be learning speed, not what the "
              f"field can represent." if moving else "")
    return (f"- **{c.data}**, {c.arch} vs {c.ref}, {col.title} ({direction} is better): "
            f"{_ms(c.a, fmt, n)} vs {_ms(c.b, fmt, n)}, difference {c.diff['mean']:+{fmt}}, "
            f"{spread}, {_seeds_text(c)}; {rule}: **{c.arch} {c.word}**.{caveat}")


def summary_lines(datasets: dict[str, Dataset], comps: list[Comparison],
                  moving: set[tuple[str, str, str]] = frozenset()) -> list[str]:
    """The Summary: called differences (with a caveat where a compared field's learning curve,
    ``moving``: (data, arch, curve metric), has not levelled off), the quiet fields, and the
    fields whose samples run off the data's range or copy training images."""
    out = []
    for name, ds in datasets.items():
        mine = [c for c in comps if c.data == name]
        called = [c for c in mine if c.judged["called"]]
        for c in called:
            m = CURVE_METRIC.get(c.key)
            out.append(line(c, tuple(a for a in (c.arch, c.ref) if (name, a, m) in moving)))
        titles = ", ".join(COLUMNS[k].title for k in ds.verdict)
        if not mine:
            others = [r for r in ds.rows if ds.row(f"free-{r.backbone}") not in (None, r)]
            if not [r for r in ds.rows if r.seeds]:
                why = "no complete run yet"
            elif not [r for r in ds.rows if r.arch != f"free-{r.backbone}"]:
                why = "only free fields, nothing to compare"
            elif not others:
                why = "no free-<backbone> field to pair with"
            else:
                why = f"no field shares a complete seed with its free field on {titles}"
            out.append(f"- **{name}**: {why}.")
            continue
        # one line per reference (a dataset with two backbones pairs each with its own free
        # field) and per set of quiet fields: the metrics on which the same fields had no call
        for ref in sorted({c.ref for c in mine}):
            by_quiet: dict[tuple[str, ...], list[str]] = {}
            for key in ds.verdict:
                on = [c for c in mine if c.ref == ref and c.key == key]
                quiet = tuple(sorted(c.arch for c in on if not c.judged["called"]))
                if quiet:
                    by_quiet.setdefault(quiet, []).append(COLUMNS[key].title)
            for quiet, keys in by_quiet.items():
                ns = sorted({len(c.seeds) for c in mine if c.arch in quiet})
                one = (" (one seed: seed variance unknown, judged against the floor only)"
                       if ns == [1] else "")
                out.append(f"- **{name}**: no difference from {ref} beyond both the seed "
                           f"spread and 2 floor std on {', '.join(keys)} for "
                           f"{', '.join(quiet)}{one}.")
    for ds in datasets.values():
        out += _runaway(ds) + _memorising(ds)
    return out


def _memorising(ds: Dataset) -> list[str]:
    """A line naming the fields whose ODE samples copy training images: memorised share above
    its floor by more than 2 floor std. FD cannot see copying (copies of real images score like
    real images), so a field that memorises must not pass for a good one on FD alone."""
    return _above_floor(ds, "memo_ode",
                        "memorisation, which FD cannot see (copies of training images score "
                        "like real ones): the share of ODE samples nearer a training image "
                        "than 95% of held-out images are is")


def _runaway(ds: Dataset) -> list[str]:
    """A line naming the fields whose ODE samples run off the data's range (a pixel beyond
    |x| > 2; real images: none). A few such samples move FD by orders of magnitude from seed to
    seed (which is why FD is paired as a ratio); the share says how many samples fail, which FD
    alone does not."""
    return _above_floor(ds, "offrange_ode",
                        "runaway samples (a few of them move FD by orders of magnitude): the "
                        "share of ODE samples with a pixel beyond |x| > 2 is")


def _above_floor(ds: Dataset, key: str, what: str) -> list[str]:
    """One line naming the rows whose ``key`` lies above its floor by more than 2 floor std
    (a floor of 0 ± 0: above 0), with their values and seeds."""
    fl = ds.floors.get(key)
    if not fl or fl[0] is None or fl[1] is None or (not fl[1] and fl[0]):
        return []  # no floor, or a nonzero floor without its spread: nothing to judge by
    limit = fl[0] + K_FLOOR * fl[1]
    hits = [r for r in ds.rows if key in r.stats and r.stats[key][0] > limit]
    if not hits:
        return []
    fmt = COLUMNS[key].fmt
    return [f"- **{ds.name}**: {what} "
            + ", ".join(f"{_ms(r.stats[key], fmt, len(r.seeds))} for {r.arch} "
                        f"({len(r.seeds)} {r.backend} seed{'s' if len(r.seeds) > 1 else ''})"
                        for r in hits)
            + f", against a floor of {fl[0]:{fmt}} ± {fl[1]:{fmt}}: more than 2 floor std "
            f"above it."]


def paired_table_lines(ds: Dataset, comps: list[Comparison]) -> list[str]:
    mine = [c for c in comps if c.data == ds.name]
    if not mine:
        return []
    ratio = [COLUMNS[k].title for k in ds.verdict if COLUMNS[k].ratio]
    head = ["field", "metric", "seeds", "field value", "free value", "d = field − free",
            f"95% interval ({', '.join(ratio)}: of field / free)" if ratio else "95% interval",
            "2 floor std", "seeds better / worse", "call"]
    out = [f"Paired with {mine[0].ref} over seeds (d_s = field_s − free_s, same backend):", "",
           "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in mine:
        fmt, n = COLUMNS[c.key].fmt, len(c.seeds)
        out.append("| " + " | ".join([
            c.arch, COLUMNS[c.key].title, _seeds_text(c), _ms(c.a, fmt, n), _ms(c.b, fmt, n),
            f"{c.diff['mean']:+{fmt}}", interval_text(c), f"{K_FLOOR * c.floor_std:{fmt}}",
            "{} / {}".format(*c.seeds_ahead),
            f"**{c.word}**" if c.judged["called"] else c.word]) + " |")
    return out


def csv_pair(key: str) -> tuple[str, ...]:
    """The CSV columns of one comparison on metric ``key``: the difference's mean and 95%
    interval, n, the call, and for a metric compared as a ratio the ratio field / free (its
    geometric mean over seeds) and that ratio's interval."""
    base = ("mean", "lo", "hi", "n", "called")
    return base + ("ratio", "ratio_lo", "ratio_hi") if COLUMNS[key].ratio else base


def csv_fields(c: Comparison | None, key: str) -> list[str]:
    """The values of ``csv_pair(key)`` (empty strings where there is no comparison, or a ratio
    column without one)."""
    n = len(csv_pair(key))
    if c is None:
        return [""] * n
    g = lambda x: "" if not np.isfinite(x) else f"{x:.6g}"  # noqa: E731
    out = [g(c.diff["mean"]), g(c.diff["lo"]), g(c.diff["hi"]), str(c.diff["n"]),
           c.word if c.judged["called"] else "no"]
    if n > len(out):
        out += ([g(math.exp(c.ratio[k])) for k in ("mean", "lo", "hi")] if c.ratio is not None
                else [""] * 3)
    return out

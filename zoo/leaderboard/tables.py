"""Rows: one per field and dataset, over the seeds of one backend (a torch and a JAX run of one
seed are one training), and the markdown table of a dataset.

A row's values are mean +- std (ddof 1) over the complete seeds of the backend with the most of
them (ties: JAX); the other backend's seeds are named, and ``gap`` is torch minus JAX on the
dataset's verdict metric over the seeds both have (the parity of the two backends).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from zoo.leaderboard.collect import Run
from zoo.registry import ZooError
from zoo.stats import mean_std


@dataclass(frozen=True)
class Column:
    key: str
    title: str
    better: str | None  # "min" | "max" | None (no best is marked)
    fmt: str
    # paired with free on the ratio scale (zoo.stats.paired_ratio_by_seed): a positive metric
    # whose seed-to-seed variation is multiplicative, so a t-interval of raw differences cannot
    # bound it (FD: a few runaway samples move it by orders of magnitude)
    ratio: bool = False


COLUMNS = {c.key: c for c in [
    Column("logpt_ode", "trim log ρ ODE", "max", ".3f"),
    Column("logp_ode", "log ρ ODE", "max", ".3f"),
    Column("nll", "NLL", "min", ".3f"),
    Column("mmd_ode", "MMD ODE", "min", ".2e"),
    Column("prec_ode", "precision", "max", ".3f"),
    Column("recall_ode", "recall", "max", ".3f"),
    Column("density_ode", "density", None, ".3f"),
    Column("coverage_ode", "coverage", "max", ".3f"),
    Column("offmode_ode", "off-mode", "min", ".4f"),
    Column("modes_ode", "modes", "max", ".2f"),
    Column("kl_ode", "KL comp", "min", ".2e"),
    Column("w2_ode", "W2 ODE", "min", ".3f"),
    Column("sw2_ode", "SW2 ODE", "min", ".3f"),
    Column("energy_ode", "energy ODE", "min", ".2e"),
    Column("logp_sde", "log ρ SDE", "max", ".3f"),
    Column("mmd_sde", "MMD SDE", "min", ".2e"),
    Column("w2_sde", "W2 SDE", "min", ".3f"),
    # images: the classifier's metrics (zoo.image_metrics) and the dequantised NLL
    Column("fd_ode", "FD ODE", "min", ".2f", ratio=True),
    Column("fd_sde", "FD SDE", "min", ".2f", ratio=True),
    Column("classkl_ode", "KL class", "min", ".3f"),
    Column("classh_ode", "H class", None, ".3f"),
    Column("fprec_ode", "prec f", "max", ".3f"),
    Column("frecall_ode", "recall f", "max", ".3f"),
    Column("fcover_ode", "cover f", "max", ".3f"),
    Column("memo_ode", "memorised", "min", ".3f"),
    Column("memo_sde", "memorised SDE", "min", ".3f"),
    Column("nntrain_ode", "NN train", None, ".3f"),
    Column("offrange_ode", "off-range ODE", "min", ".3f"),
    Column("offrange_sde", "off-range SDE", "min", ".3f"),
    Column("bpd", "bits/dim", "min", ".3f"),
    Column("nasym", "NAsym", "min", ".1e"),
    Column("circulation", "circ", "min", ".1e"),
    Column("circ_tri", "circ tri", "min", ".1e"),
    Column("circ_proj", "circ proj", "min", ".1e"),
    Column("circ_interp", "circ interp", "min", ".1e"),
    Column("circ_iproj", "circ interp-proj", "min", ".1e"),
    Column("rot_share", "rot share", None, ".1e"),
    Column("score_err", "score err", "min", ".3f"),
    Column("stein_r2", "Stein r²", "min", ".2e"),
    Column("nfe_ode", "NFE ODE", "min", ".0f"),
]}
_CONS = ["nasym", "circulation", "rot_share", "score_err", "stein_r2", "nfe_ode"]
# the markdown columns, verdict first: with a closed-form density, and without one
CLOSED_ORDER = ["logpt_ode", "nll", "logp_ode", "mmd_ode", "prec_ode", "recall_ode", "offmode_ode",
                "modes_ode", "w2_ode", "logp_sde", "w2_sde", *_CONS]
OPEN_ORDER = ["mmd_ode", "prec_ode", "recall_ode", "density_ode", "coverage_ode", "w2_ode",
              "nll", "mmd_sde", "w2_sde", *_CONS]
# images: every loop family of the seed paper (circ = polygon loops through corrupted samples)
_IMAGE_CONS = ["nasym", "circulation", "circ_tri", "circ_proj", "circ_interp", "circ_iproj",
               "rot_share", "score_err", "stein_r2", "nfe_ode"]
IMAGE_ORDER = ["fd_ode", "fd_sde", "offrange_ode", "offrange_sde", "classkl_ode", "classh_ode",
               "memo_ode", "memo_sde", "fprec_ode", "frecall_ode", "fcover_ode", "nntrain_ode",
               "bpd", *_IMAGE_CONS]
IMAGE_CLOSED_ORDER = ["logpt_ode", "nll", "fd_ode", "fd_sde", "offrange_ode", "offrange_sde",
                      "classkl_ode", "classh_ode", "fprec_ode", "frecall_ode", "fcover_ode",
                      "logp_ode", "logp_sde", *_IMAGE_CONS]
_CONS_ALL = set(_CONS) | set(_IMAGE_CONS)
CSV_KEYS = list(COLUMNS)
FLOOR_KEYS = [k for k in CSV_KEYS if k not in _CONS_ALL]  # metrics with a real-vs-real floor
VERDICT_CLOSED = ("logpt_ode", "nll")
VERDICT_OPEN = ("mmd_ode",)
# images: FD, and memorisation beside it where the samples can copy a training set (digits, its
# latents): copies of training images score like real ones on FD, so FD alone cannot carry it
VERDICT_IMAGE = ("fd_ode", "memo_ode")
BACKENDS_ORDER = ("jax", "torch")  # ties between backends go to the first


@dataclass
class Row:
    data: str
    arch: str
    kind: str  # conservative, two-part or free (``kind``)
    backend: str | None  # whose seeds give the values (None: no complete run)
    seeds: list[int]  # its complete seeds
    others: dict[str, list[int]]  # the other backends' complete seeds
    stats: dict  # key -> (mean, std) over ``seeds``
    per_seed: dict  # backend -> key -> {seed: value}, complete runs only
    total: int  # runs found
    problems: list  # (backend, seed, status, reason) of runs not complete
    gap: dict | None = None  # {"mean": torch - jax on the verdict metric, "seeds": [...]}

    @property
    def backbone(self) -> str:
        return backbone(self.arch)

    @property
    def seeds_text(self) -> str:
        """e.g. "3 jax + torch s0"."""
        if self.backend is None:
            return "none complete"
        out = f"{len(self.seeds)} {self.backend}"
        for b, ss in sorted(self.others.items()):
            if ss:
                out += f" + {b} s{','.join(map(str, ss))}"
        return out


@dataclass
class Dataset:
    name: str
    closed: bool  # a closed-form density: log ρ and the exact NLL exist
    rows: list[Row]
    floors: dict  # key -> (mean or None, std), averaged over seeds
    floor_draws: list[int]  # the real-vs-real draws behind the floors (as the runs say)
    exact_nll: float | None = None
    image: bool = False  # image-shaped data: the classifier's metrics and every loop family
    # a latent set's image set (latent-digits -> digits): its samples are measured decoded, with
    # that set's reference and floors, and its rows stand in that set's table, marked (latent)
    pixel: str | None = None

    @property
    def suffix(self) -> str:
        """What its rows' field names carry in a shared table: " (latent)" or nothing."""
        return " (latent)" if self.pixel else ""

    @property
    def verdict(self) -> tuple[str, ...]:
        return verdict_of(self.closed, self.image)

    def columns(self) -> list[Column]:
        if self.image:
            order = IMAGE_CLOSED_ORDER if self.closed else IMAGE_ORDER
        else:
            order = CLOSED_ORDER if self.closed else OPEN_ORDER
        return [COLUMNS[k] for k in order if any(k in r.stats for r in self.rows)]

    def row(self, arch: str) -> Row | None:
        return next((r for r in self.rows if r.arch == arch), None)


def verdict_of(closed: bool, image: bool) -> tuple[str, ...]:
    """The verdict columns: where the density is known its log-density and NLL (images too:
    digits-gmm), else FD-digits and memorisation on images and MMD on points."""
    if closed:
        return VERDICT_CLOSED
    return VERDICT_IMAGE if image else VERDICT_OPEN


def backbone(arch: str) -> str:
    """The backbone a field name ends with (``energysq-unet`` -> ``unet``)."""
    return arch.rpartition("-")[2]


def kind(arch: str, backend: str) -> str:
    """conservative (by construction), two-part (gradient + rotation heads) or free."""
    import zoo

    try:
        info = zoo.get_info(arch, backend)
    except ZooError:  # a plugin field that is not loaded: say what we know
        return "free"
    if info.conservative:
        return "conservative"
    return "two-part" if info.head in ("helmholtz", "stein") else "free"


def _floors(runs: list[Run]) -> dict:
    """key -> (mean, std) averaged over seeds (one run per seed: the floors of a seed are those
    of real data, the same for every field of it); mean None when some run has none."""
    per_seed: dict = {}
    for r in runs:
        for key, fl in r.floors.items():
            per_seed.setdefault(key, {}).setdefault(r.seed, fl)
    out = {}
    for key, by_seed in sorted(per_seed.items()):
        fl = [by_seed[s] for s in sorted(by_seed)]
        means = [m for m, _ in fl]
        mean = None if any(m is None for m in means) else float(np.mean(means))
        out[key] = (mean, float(np.mean([s for _, s in fl])))
    return out


def _row(data: str, arch: str, rs: list[Run], verdict: str) -> Row:
    ok = [r for r in rs if r.status == "complete"]
    per_seed: dict = {}
    for r in ok:
        for key, val in r.values.items():
            per_seed.setdefault(r.backend, {}).setdefault(key, {})[r.seed] = val
    seeds = {b: sorted({r.seed for r in ok if r.backend == b}) for b in {r.backend for r in ok}}
    rank = {b: (len(s), -BACKENDS_ORDER.index(b) if b in BACKENDS_ORDER else -99, b)
            for b, s in seeds.items()}
    main = max(rank, key=rank.get) if rank else None
    stats = {}
    if main is not None:
        for key, by in per_seed[main].items():
            if set(by) == set(seeds[main]):  # every complete seed has it: no silent subsets
                stats[key] = mean_std([by[s] for s in seeds[main]])
    gap = None
    t = per_seed.get("torch", {}).get(verdict, {})
    j = per_seed.get("jax", {}).get(verdict, {})
    shared = sorted(set(t) & set(j))
    d = [t[s] - j[s] for s in shared]
    if shared and all(math.isfinite(x) for x in d):
        gap = {"mean": float(np.mean(d)), "seeds": shared}
    problems = sorted((r.backend, r.seed, r.status, r.reason or "") for r in rs
                      if r.status != "complete")
    b0 = main or sorted(r.backend for r in rs)[0]
    return Row(data, arch, kind(arch, b0), main, seeds.get(main, []),
               {b: s for b, s in seeds.items() if b != main}, stats, per_seed, len(rs),
               problems, gap)


def _image(data: str, ok: list[Run]) -> bool:
    """Whether ``data`` is measured as images (image-shaped, or a latent set whose samples are
    decoded): the dataset registry says, or the runs' eval.json."""
    import zoo

    try:
        ds = zoo.get_dataset(data)
        return len(ds.shape) == 3 or ds.latent is not None
    except (ValueError, ZooError):
        return any("fd_ode" in r.values for r in ok)


def _pixel(data: str, ok: list[Run]) -> str | None:
    """The image set a latent set decodes to (latent-digits -> digits), else None: the runs'
    eval.json says, else the dataset registry."""
    named = sorted({r.pixel for r in ok if r.pixel})
    if named:
        return named[0]
    import zoo

    try:
        lat = zoo.get_dataset(data).latent
    except (ValueError, ZooError):
        return None
    return None if lat is None else lat.pixel


def _closed_form(data: str, ok: list[Run]) -> bool:
    """Whether ``data`` has a closed-form density (log ρ and the exact NLL exist): the dataset
    registry says, or, for a dataset it does not know, the runs' eval.json."""
    import zoo

    try:
        return zoo.get_dataset(data).exact is not None
    except (ValueError, ZooError):
        return any("logpt_ode" in r.values or "logp_ode" in r.values for r in ok)


def build(runs: list[Run]) -> dict[str, Dataset]:
    """{dataset: Dataset}, sorted by name, rows sorted by field."""
    by_data: dict[str, list[Run]] = defaultdict(list)
    for r in runs:
        by_data[r.data].append(r)
    out = {}
    for data in sorted(by_data):
        rs = by_data[data]
        ok = [r for r in rs if r.status == "complete"]
        closed, image = _closed_form(data, ok), _image(data, ok)
        verdict = verdict_of(closed, image)[0]
        groups: dict[str, list[Run]] = defaultdict(list)
        for r in rs:
            groups[r.arch].append(r)
        rows = [_row(data, a, groups[a], verdict) for a in sorted(groups)]
        ex = [r.exact_nll for r in ok if r.exact_nll is not None]
        out[data] = Dataset(data, closed, rows, _floors(ok),
                            sorted({int(r.floor_draws) for r in ok if r.floor_draws}),
                            float(np.mean(ex)) if ex else None, image, _pixel(data, ok))
    return out


def fmt_value(ms: tuple[float, float] | None, fmt: str, n: int) -> str:
    """"m ± s" (n > 1), "m" (one seed), "–" (none) or "non-finite"."""
    if ms is None:
        return "–"
    m, s = ms
    if not math.isfinite(m):
        return "non-finite"
    return f"{m:{fmt}}" + (f" ± {s:{fmt}}" if n > 1 else "")


def fmt_floor(fl: tuple[float | None, float], fmt: str) -> str:
    m, s = fl
    return (f"{m:{fmt}} ± " if m is not None else "± ") + f"{s:{fmt}}"


def _best(rows: list[Row], c: Column) -> float | None:
    vals = [r.stats[c.key][0] for r in rows if c.key in r.stats
            and math.isfinite(r.stats[c.key][0])]
    if not c.better or not vals:
        return None
    return min(vals) if c.better == "min" else max(vals)


def floors_line(ds: Dataset) -> str:
    """The dataset's noise floors, in its column order."""
    parts = []
    for c in ds.columns():
        if c.key in ds.floors and c.key != "nll":
            parts.append(f"{c.title} {fmt_floor(ds.floors[c.key], c.fmt)}")
    if "nll" in ds.floors:
        m, s = ds.floors["nll"]
        parts.append(f"NLL {m:.3f} (exact density) ± {s:.3f} (s.e.)" if m is not None
                     else f"NLL s.e. {s:.3f}")
    return "Noise floors (real vs real): " + "; ".join(parts) + "." if parts else ""


def table_lines(ds: Dataset, latent: list[Dataset] = ()) -> list[str]:
    """The markdown table of ``ds``, with the rows of the latent sets that decode to it below its
    own (their field names marked " (latent)"; their sample metrics are measured in its pixel
    space against its reference, so one column, one best)."""
    parts = [ds, *latent]
    keys = {c.key for d in parts for c in d.columns()}
    order = [k for k in (IMAGE_CLOSED_ORDER if ds.closed else IMAGE_ORDER) if k in keys] \
        if latent else [c.key for c in ds.columns()]
    cols = [COLUMNS[k] for k in order]
    v = COLUMNS[ds.verdict[0]]
    head = ["field", "kind", "seeds", *(c.title for c in cols), f"gap ({v.title})"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    rows = [(d.suffix, r) for d in parts for r in d.rows]
    best = {c.key: _best([r for _, r in rows], c) for c in cols}
    for suffix, r in rows:
        cells = [r.arch + suffix, r.kind, r.seeds_text]
        for c in cols:
            txt = fmt_value(r.stats.get(c.key), c.fmt, len(r.seeds))
            if best[c.key] is not None and c.key in r.stats and r.stats[c.key][0] == best[c.key]:
                txt = f"**{txt}**"
            cells.append(txt)
        cells.append(f"{r.gap['mean']:+{v.fmt}} (s{','.join(map(str, r.gap['seeds']))})"
                     if r.gap else "–")
        out.append("| " + " | ".join(cells) + " |")
    return out


def problem_lines(ds: Dataset) -> list[str]:
    out = []
    for r in ds.rows:
        for b, s, st, why in r.problems:
            out.append(f"- {r.arch}{ds.suffix} [{b}] seed {s}: {st}" + (f" — {why}" if why else ""))
    return out

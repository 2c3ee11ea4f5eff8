"""LEADERBOARD.md and leaderboard.csv from the datasets, comparisons, curves and bench record.

Everything is sorted and nothing depends on the clock or on where the files live, so the same
committed files give the same bytes.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from zoo.leaderboard import cost as C
from zoo.leaderboard import summary as S
from zoo.leaderboard.collect import Run, Suites
from zoo.leaderboard.curves import CURVE_METRIC, field_curves, plateau_line, unconverged
from zoo.leaderboard.tables import (
    COLUMNS,
    CSV_KEYS,
    FLOOR_KEYS,
    VERDICT_CLOSED,
    VERDICT_IMAGE,
    VERDICT_OPEN,
    Dataset,
    floors_line,
    problem_lines,
    table_lines,
)
from zoo.metrics import LOG_DENSITY_TRIM

_NOT_DONE = ("failed", "killed", "running", "incomplete")


def progress_text(runs: list[Run], suites: Suites) -> str:
    """e.g. "standard: **54 of 144 runs complete** (2 failed, 88 not started)": per suite, the
    runs complete against the runs the suite defines (``suites``, collect.suite_definitions;
    None where its definition is not at hand)."""
    parts = []
    for suite in sorted({r.suite or "?" for r in runs}):
        mine = [r for r in runs if (r.suite or "?") == suite]
        want = suites.get(suite)
        counts = {s: sum(r.status == s for r in mine) for s in _NOT_DONE}
        if want:
            found = {(r.data, r.arch, r.backend, r.seed) for r in mine}
            ok = [r for r in mine if r.status == "complete"
                  and (r.data, r.arch, r.backend, r.seed) in want]
            # made with other settings than the suite's present ones (collect.mark_stale): the
            # next sweep redoes it
            stale = sum(r.status == "stale" for r in mine)
            extra = len(found - set(want))
            text = f"{suite}: **{len(ok)} of {len(want)} runs complete**"
            notes = [f"{n} {s}" for s, n in counts.items() if n]
            if stale:
                notes.insert(0, f"{stale} more complete with older settings than the suite's "
                             "present ones")
            if set(want) - found:
                notes.append(f"{len(set(want) - found)} not started")
            if extra:
                notes.append(f"{extra} outside the suite's present definition")
        else:
            label = "runs made by hand" if suite == "?" else suite
            text = (f"{label}: **{sum(r.status == 'complete' for r in mine)} of {len(mine)} "
                    "runs found complete**")
            notes = [f"{n} {s}" for s, n in counts.items() if n]
            notes.append("the suite's size is not known here")
        parts.append(text + (f" ({', '.join(notes)})" if notes else ""))
    return "; ".join(parts)


def _draws(datasets: dict[str, Dataset]) -> str:
    d = sorted({n for ds in datasets.values() for n in ds.floor_draws})
    if not d:
        return "real-vs-real draws (their number is not recorded)"
    return (f"{d[0]} real-vs-real draws" if len(d) == 1
            else f"{d[0]} to {d[-1]} real-vs-real draws (by run)")


def header(datasets: dict[str, Dataset], runs: list[Run], bench: C.Bench | None,
           suites: Suites) -> list[str]:
    commits = sorted({r.commit or "unknown" for r in runs})
    seeds = sorted({r.seed for r in runs})
    closed = [n for n, d in datasets.items() if d.closed]
    open_ = [n for n, d in datasets.items() if not d.closed and not d.image]
    images = [n for n, d in datasets.items() if d.image]
    methods = sorted({r.ode_method for r in runs if r.ode_method})
    t = {k: COLUMNS[k].title for k in COLUMNS}
    verdict = []
    if closed:
        verdict.append(
            f"Where the density is known in closed form ({', '.join(closed)}) the verdict rests "
            f"on **{t['logpt_ode']}**, the mean closed-form log-density of the samples after "
            f"dropping their lowest {100 * LOG_DENSITY_TRIM:g}% (higher is better; mass put "
            f"where the data is not lowers it; its floor is the same statistic of real data; "
            f"the trim keeps a handful of runaway samples, which the off-mode share counts, "
            f"from carrying the verdict: {t['logp_ode']}, the untrimmed mean, is a column), "
            f"together with **NLL**, nats per held-out point under the probability-flow "
            f"ODE (lower is better; data the model misses raise it; its floor is the exact "
            f"density's NLL on the same points ± the standard error of the mean); then MMD, "
            f"precision/recall and the off-mode share (mixtures).")
    if open_:
        verdict.append(
            f"Without a closed form ({', '.join(open_)}) the verdict metric is **MMD** (RBF "
            f"kernel, lower is better), with precision, recall, density and coverage (k-nearest-"
            f"neighbour manifolds) and W2.")
    if images:
        verdict.append(
            f"On images ({', '.join(images)}) every sample metric is read through a small CNN "
            f"classifier trained deterministically on the digits train split and shipped with "
            f"the package (sha256-checked; `zoo classifier check`): **{t['fd_ode']}** is the "
            f"Fréchet distance in its 32 penultimate features (torchmetrics' FID with that "
            f"network, float64; the verdict where no density is known, with memorised beside it, "
            f"since copies of training images score like real ones on FD), against the whole "
            f"digits test split (digits-gmm: fresh mixture draws), its floor the same statistic "
            f"of training images (digits) or fresh draws (digits-gmm). KL class: KL(sample class "
            f"histogram || data's class shares); H class its entropy (log 10 = 2.303 is "
            f"uniform); off-range: share of samples with a pixel beyond |x| > 2 (digits lie in "
            f"[-1, 1], digits-gmm's Gaussian draws now and then beyond: see its floor; a few "
            f"runaway samples can raise FD by orders of magnitude, this says how many there "
            f"are); "
            f"prec f / recall f / cover f: PRDC in feature space; memorised: share of "
            f"samples closer (pixels) to a training image than 95% of test images are (floor "
            f"0.05; a model that copies its 1497 training images scores near 1); NN train: "
            f"median distance to the nearest training image; bits/dim: NLL of the test images "
            f"dequantised uniformly over each pixel's bin (17 levels on digits), the discrete "
            f"bound (4.09 = uniform). circ tri / proj / interp / interp-proj: the seed paper's "
            f"other loop families (triangle through alpha_t x0, projected onto the sphere where "
            f"rho(.|x0) concentrates, through interpolations of two images, and those projected).")
    return [
        "# Leaderboard: conservative vs free score fields", "",
        f"{progress_text(runs, suites)}. Seeds {', '.join(map(str, seeds))}; code "
        f"commit(s) {', '.join(commits)}. Regenerate with `zoo leaderboard`: it reads the runs' "
        "JSON, the ODE sample file of each field's lowest seed and the bench record, nothing "
        "else.", "",
        "**Rows.** One row per field and dataset. A torch run and a JAX run of the same seed are "
        "one training (same initial weights, batches and noise; their numbers differ by about "
        "1e-3), so they are never counted as two results: a row's values are mean ± std "
        "(ddof 1) over the complete seeds of the backend that has the most of them (ties: JAX). "
        "\"seeds\" names them and the other backend's seeds (\"3 jax + torch s0\"); \"gap\" is "
        "torch minus JAX on the dataset's verdict metric over the seeds both ran (backend "
        "parity, ideally about 0).", "",
        "**Verdict metrics.** Samples of the probability-flow ODE "
        f"({', '.join(methods) or 'adaptive'}) stop at t_min (no denoising) and are compared "
        "with fresh rho_{t_min} data. " + " ".join(verdict) + " W2 (exact 2-Wasserstein) is a "
        "column, not the verdict: it misses modes smeared into a ring.", "",
        f"**Floors.** Each dataset lists its noise floors: the metric between two fresh real "
        f"draws of the sample size, mean ± std over {_draws(datasets)}.", "",
        "**Comparisons.** Every field is paired with free-<backbone> on the same dataset over "
        "the seeds both have complete, in one backend: d_s = field_s − free_s, its mean and 95% "
        "Student-t interval from the seed spread. A difference is called only when the interval "
        f"excludes 0 and |mean d| > {S.K_FLOOR:g} floor std of the metric; with one seed the "
        "seed variance is unknown and the floor alone decides (the line says so). \"seeds "
        "better / worse\" counts the seeds on which the field beats free and trails it: "
        "descriptive only (with 3 seeds and no real difference a 3 / 0 or 0 / 3 split comes one "
        "time in four), the call is the interval's and the floor's."
        + (" FD is paired as a ratio: the interval is that of log field_s − log free_s (shown "
           "as field / free), since a few runaway samples move FD by orders of magnitude from "
           "seed to seed, and a t-interval of raw differences then spans 0 even when every seed "
           "is far worse; the floor test stays on FD itself."
           if any(d.image for d in datasets.values()) else ""), "",
        C.header_line(bench), "",
        "**Other columns.** modes: share of mixture components covered; off-mode: share of "
        "samples in no component. NAsym: ||J − J^T||²/(4||J||²) averaged over t (0 = "
        "conservative). circ: median normalised circulation on polygon loops. rot share: the "
        "rotational part's share of E|s|². score err: E|s − S|²/E|S|². Stein r²: E[(div e + "
        "S·e)²], the part of the error e = s − S that moves density. NFE ODE: function "
        "evaluations of the adaptive solver. kind: conservative by construction, free "
        "(unconstrained; qc adds a soft penalty) or two-part (gradient + rotational head). "
        "**Bold**: best in column.",
    ]


def render_markdown(datasets: dict[str, Dataset], comps: list[S.Comparison], runs: list[Run],
                    skipped: list[str], figures: list[str], bench: C.Bench | None = None,
                    suites: Suites | None = None) -> str:
    """LEADERBOARD.md's text. ``suites``: collect.suite_definitions of the runs (None: the runs
    of each suite are counted as found, its size not known)."""
    out = header(datasets, runs, bench, suites or {})
    out += ["", "## Summary", ""]
    moving = unconverged(runs, datasets)
    out += S.summary_lines(datasets, comps, moving) or ["- (no dataset has complete runs)"]
    if figures:
        out += ["", "Figures: " + ", ".join(f"[{Path(f).stem}]({f})" for f in figures)]
    if bench is not None:
        archs = sorted({r.arch for d in datasets.values() for r in d.rows})
        out += ["", "## Cost", ""] + C.cost_lines(bench, archs)
        note = C.mismatch_line(bench, runs)
        if note:
            out += ["", note]
    for name, ds in datasets.items():
        if ds.pixel in datasets:
            continue  # a latent set: its rows stand in its image set's section
        latent = [d for d in datasets.values() if d.pixel == name]
        v = " and ".join(COLUMNS[k].title for k in ds.verdict)
        out += ["", f"## {name}", "", " ".join(x for x in (f"Verdict: {v}.", floors_line(ds)) if x),
                ""]
        if latent:
            out += [", ".join(d.name for d in latent) + f": rows marked (latent) are fields "
                    f"trained on the autoencoder's latents of {name}; their samples are decoded "
                    f"and measured as {name} samples (same reference, same floors); NAsym and "
                    f"circulation are those of the latent field, where it lives; bits/dim is not "
                    f"given (their NLL is of latents).", ""]
        out += table_lines(ds, latent)
        for part in (ds, *latent):
            out += _section_tail(part, comps, runs, figures)
    if skipped:
        out += ["", "## Skipped run directories", ""] + [f"- {s}" for s in skipped]
    return "\n".join(out) + "\n"


def _section_tail(ds: Dataset, comps: list[S.Comparison], runs: list[Run],
                  figures: list[str]) -> list[str]:
    """A dataset's paired comparisons, learning curves and failed runs (below its table)."""
    out = []
    name = ds.name
    paired = S.paired_table_lines(ds, comps)
    if paired:
        out += [""] + paired
    curves = field_curves(runs, name)
    if curves:
        key = ds.verdict[0]
        fig = f"figures/curves-{name}.png"
        link = f"[curves-{name}]({fig})" if fig in figures else "curves"
        out += ["", f"Learning curves{' (latent)' if ds.pixel else ''} ({link}), "
                f"{COLUMNS[key].title} of the mean curve over seeds; levels off = the step from "
                "which it stays within 1 floor std of its final value, and the trend of the "
                "curve's second half (least squares against log step) moves it by less than 1 "
                "floor std per doubling of the budget:", ""]
        out += [plateau_line(c, CURVE_METRIC[key], COLUMNS[key].title, COLUMNS[key].fmt)
                for c in curves]
        # the other verdict metrics the curves carry (memorisation on images), the same way
        for key in ds.verdict[1:]:
            m = CURVE_METRIC.get(key)
            if m is None or not any(m in c.mean for c in curves):
                continue
            out += ["", f"The same curves, {COLUMNS[key].title}:", ""]
            out += [plateau_line(c, m, COLUMNS[key].title, COLUMNS[key].fmt) for c in curves]
    problems = problem_lines(ds)
    if problems:
        out += ["", "Failed, incomplete or stale (not in the table):", ""] + problems
    return out


def _g(x) -> str:
    return "" if x is None else f"{x:.6g}"


def render_csv(datasets: dict[str, Dataset], comps: list[S.Comparison],
               bench: C.Bench | None = None) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    # only the columns some row has (points and images have different metrics)
    keys = [k for k in CSV_KEYS if any(k in r.stats for d in datasets.values() for r in d.rows)]
    floor_keys = [k for k in FLOOR_KEYS if any(k in d.floors for d in datasets.values())]
    vs = list(dict.fromkeys(VERDICT_CLOSED + VERDICT_OPEN
                            + (VERDICT_IMAGE if any(d.image for d in datasets.values()) else ())))
    w.writerow(["data", "field", "kind", "backend", "n_seeds", "seeds", "runs", "complete",
                "verdict", *(f"{k}_{s}" for k in keys for s in ("mean", "std")),
                *(f"floor_{k}_{s}" for k in floor_keys for s in ("mean", "std")),
                "gap", "gap_seeds",
                *(f"vs_free_{k}_{s}" for k in vs for s in S.csv_pair(k)),
                *C.CSV_HEAD])
    by = {(c.data, c.arch, c.key): c for c in comps}
    for name, ds in datasets.items():
        for r in ds.rows:
            vals = []
            for k in keys:
                m = r.stats.get(k)
                vals += ["", ""] if m is None else [_g(m[0]), _g(m[1])]
            fl = []
            for k in floor_keys:
                f = ds.floors.get(k)
                fl += ["", ""] if f is None else [_g(f[0]), _g(f[1])]
            pair = [x for k in vs for x in S.csv_fields(by.get((name, r.arch, k)), k)]
            w.writerow([name, r.arch, r.kind, r.backend or "", len(r.seeds), r.seeds_text,
                        r.total, sum(len(s) for s in [r.seeds, *r.others.values()]),
                        ds.verdict[0], *vals, *fl,
                        _g(r.gap["mean"]) if r.gap else "",
                        " ".join(map(str, r.gap["seeds"])) if r.gap else "",
                        *pair, *C.csv_fields(bench, r.arch)])
    return buf.getvalue()

"""`zoo leaderboard`: per dataset, one row per field, compared with the free field over seeds.

The job is split by file:

- ``collect``: each run directory's JSON (config, sweep, eval, nll, check, curve) as a ``Run``;
- ``tables``: rows (one per field and dataset, over one backend's seeds: a torch and a JAX run
  of one seed are one training), floors, and the markdown table;
- ``summary``: every field paired with free-<backbone> over seeds (``zoo.stats``), and the
  Summary, which names only differences beyond both the seed spread and 2 floor std;
- ``curves``: learning curves (curve.json) and where each field levels off;
- ``cost``: ms/step and ×free from a ``zoo bench train --out`` record;
- ``figures``: PNGs from committed files only; ``report``: LEADERBOARD.md and leaderboard.csv.

Only committed files are read (the JSON, the lowest seed's ODE sample files, the bench record),
and the output is sorted and free of clocks and absolute paths, so the committed files
reproduce LEADERBOARD.md, leaderboard.csv and the list of figures byte for byte. A run directory
whose JSON is unreadable is reported and skipped, never fatal.
"""

from __future__ import annotations

from pathlib import Path

from zoo import checkpoint
from zoo.leaderboard.collect import Run, collect, mark_stale, read_run, suite_definitions
from zoo.leaderboard.cost import Bench, read_bench
from zoo.leaderboard.report import render_csv, render_markdown
from zoo.leaderboard.summary import Comparison, compare
from zoo.leaderboard.tables import Dataset, Row, build
from zoo.registry import ZooError
from zoo.stats import mean_std

DEFAULT_BENCH = Path("results/bench/train-mlp.json")

__all__ = ["DEFAULT_BENCH", "Bench", "Comparison", "Dataset", "Row", "Run", "build", "collect",
           "compare", "mark_stale", "mean_std", "read_bench", "read_run", "render_csv",
           "render_markdown", "suite_definitions", "write_leaderboard"]


def write_leaderboard(runs_root: str | Path, out: str | Path, figures: bool = True,
                      bench: str | Path | None = None, suite_file: str | Path | None = None) -> dict:
    """Collect, compare and write LEADERBOARD.md, leaderboard.csv (and figures/) under ``out``.

    ``bench``: ``zoo bench train --out`` record(s) for the cost columns: a path, several joined
    by commas, or a list (None: no cost columns).
    ``suite_file``: a TOML suite file, for the number of runs a suite defined there has.
    """
    runs_root = Path(runs_root)
    runs, skipped = collect(runs_root)
    if not runs:
        raise ZooError(f"{runs_root}: no run directories found (run `zoo sweep` first)")
    suites = suite_definitions(runs, suite_file)  # each suite resolved once
    mark_stale(runs, suites)
    out = Path(out)
    b = read_bench(bench, out) if bench is not None else None  # checked before writing
    datasets = build(runs)
    comps = compare_all(datasets)
    out.mkdir(parents=True, exist_ok=True)
    figs = []
    if figures:
        from zoo.leaderboard.figures import make_figures

        figs = make_figures(datasets, runs, runs_root, out / "figures")
    rel = [p.relative_to(out).as_posix() for p in figs]
    md = render_markdown(datasets, comps, runs, skipped, rel, b, suites)
    checkpoint.atomic_write(out / "LEADERBOARD.md", md.encode())
    checkpoint.atomic_write(out / "leaderboard.csv", render_csv(datasets, comps, b).encode())
    return {"markdown": md, "datasets": datasets, "comparisons": comps, "runs": runs,
            "skipped": skipped, "figures": figs, "out": out, "bench": b}


def compare_all(datasets: dict[str, Dataset]) -> list[Comparison]:
    return [c for ds in datasets.values() for c in compare(ds)]

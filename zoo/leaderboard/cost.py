"""Training cost from a ``zoo bench train --out`` record, never from the sweep's own timings.

The sweep's timings are taken with workers side by side (the same step reads 79 ms on one
dataset and 17 ms on another), so they say nothing about a field's cost. ``zoo bench train``
interleaves every (field, backend) in one process and records the median ms/step, its IQR, the
ratio to free-<backbone> on the same backend, the settings and the machine.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from zoo.leaderboard.collect import Run
from zoo.registry import ZooError


@dataclass
class Bench:
    path: str  # as printed (relative to the working directory); several joined by ", "
    record: dict  # the first record (its machine)
    cost: dict  # (field, backend) -> {"ms", "iqr", "ratio", "ratio_iqr", "floor", "options",
    # "batch", "data"}
    records: list = field(default_factory=list)  # (path, record) of every record read


def _num(x) -> float | None:
    return float(x) if isinstance(x, int | float) and math.isfinite(x) else None


def _pair(x) -> tuple[float, float] | None:
    """A record's [q1, q3] of paired per-round ratios (records made before them have none)."""
    if isinstance(x, list | tuple) and len(x) == 2:
        q = tuple(_num(v) for v in x)
        return None if None in q else q
    return None


def _read_one(path: Path) -> tuple[str, dict, dict]:
    try:
        rec = json.loads(path.read_text())
    except FileNotFoundError:
        raise ZooError(f"{path}: no such bench record (make one with `zoo bench train --out "
                       f"{path}`)") from None
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise ZooError(f"{path}: unreadable bench record ({type(e).__name__})") from None
    try:
        s, m = rec["settings"], rec["machine"]
        for k in ("batch", "data", "steps", "rounds"):
            s[k]
        cost = {}
        for r in rec["results"]:
            ms = _num(r["ms_per_step"])
            if ms is None:
                raise ValueError("ms_per_step")
            key = (str(r["field"]), str(r["backend"]))
            if key in cost:
                raise ValueError(f"results ({key[0]} {key[1]} twice: a `--compile both` "
                                 "record; time the fields as training runs them, --compile auto)")
            cost[key] = {
                "ms": ms, "iqr": _num(r.get("iqr_ms")), "ratio": _num(r.get("ratio_to_free")),
                "ratio_iqr": _pair(r.get("ratio_iqr")),
                "floor": _num(r.get("flop_ratio_to_free")), "options": r.get("options"),
                "batch": s["batch"], "data": s["data"]}
        if not isinstance(m, dict) or not cost:
            raise ValueError("machine/results")
    except (KeyError, TypeError, ValueError) as e:
        raise ZooError(f"{path}: not a `zoo bench train` record (bad or missing {e})") from None
    # named as from the working directory (the repository), so the text does not depend on --out
    rel = os.path.relpath(path.resolve(), Path.cwd().resolve())
    return (path.name if rel.startswith("..") else rel), rec, cost


def read_bench(path: str | Path | list, out_dir: str | Path) -> Bench:
    """The bench record(s) at ``path``: one path, a comma-separated string of paths or a list
    (e.g. one record per backbone of a suite: each times its fields with their own options,
    batch and data); ZooError (one line) when one is missing or malformed, or two time the
    same field and backend."""
    paths = path if isinstance(path, list | tuple) else (
        [p.strip() for p in path.split(",") if p.strip()] if isinstance(path, str) else [path])
    records, cost = [], {}
    for p in paths:
        name, rec, c = _read_one(Path(p))
        twice = sorted(set(c) & set(cost))
        if twice:
            raise ZooError(f"{p}: times {twice[0][0]} ({twice[0][1]}) again; give each field "
                           "and backend one record")
        records.append((name, rec))
        cost.update(c)
    return Bench(", ".join(n for n, _ in records), records[0][1], cost, records)


def suite_records(bench_dir: str | Path, suite: str) -> list[Path]:
    """A suite's own cost records, ``bench_dir/SUITE-*.json``, leaving out ``--compile both``
    records: they time each torch field two ways to compare them, which is not what a run of
    the suite costs. A file that cannot be read is kept, so that reading it says what is wrong."""
    out = []
    for p in sorted(Path(bench_dir).glob(f"{suite}-*.json")):
        try:
            both = json.loads(p.read_text())["settings"]["compile"] == "both"
        except (OSError, ValueError, UnicodeDecodeError, KeyError, TypeError):
            both = False
        if not both:
            out.append(p)
    return out


def _machine(rec: dict) -> str:
    m, v = rec["machine"], rec.get("versions", {})
    cpu = m.get("cpu") or "unknown CPU"
    bits = [f"{m['cpu_count']} logical CPUs" if m.get("cpu_count") else None,
            f"torch threads {m['torch_threads']}" if m.get("torch_threads") else None,
            m.get("platform")]
    vers = ", ".join(f"{k} {v[k]}" for k in ("python", "numpy", "torch", "jax", "jaxlib",
                                             "equinox", "optax") if v.get(k))
    return f"{cpu} ({', '.join(b for b in bits if b)})" + (f"; {vers}" if vers else "")


def _settings(path: str, rec: dict) -> str:
    s = rec["settings"]
    opts = s.get("options") or {}
    otxt = (", field options " + ", ".join(f"{k}={v}" for k, v in sorted(opts.items()))
            if opts else "")
    compiled = {r.get("compiled") for r in rec["results"] if r.get("backend") == "torch"}
    ctxt = {frozenset({True}): ", torch steps compiled (zoo train --compile on)",
            frozenset({False}): ", torch steps eager"}.get(frozenset(compiled), "")
    return (f"`{path}` (`zoo bench train`, {rec.get('date', 'undated')}): {s.get('pattern', '')} "
            f"at batch {s['batch']} on {s['data']}, {s['rounds']} interleaved rounds of "
            f"{s['steps']} steps{otxt}, device {s.get('device', 'cpu')}{ctxt}"
            ).replace(":  at", ": at")


def header_line(b: Bench | None) -> str:
    if b is None:
        return ("**Cost.** No bench record given, so no cost columns (the sweep's own timings "
                "are taken with workers side by side and are not costs): make one with `zoo "
                "bench train --out results/bench/train-mlp.json`.")
    machines = {_machine(rec) for _, rec in b.records}
    floor = any(c["floor"] is not None for c in b.cost.values())
    return ("**Cost.** From " + "; ".join(_settings(p, rec) for p, rec in b.records)
            + f"; machine {' / '.join(sorted(machines))}. ms/step: median over rounds (IQR); "
            "×free: ratio to free-<backbone> on the same backend"
            + (" (median of the per-round ratios [their quartiles])"
               if any(c["ratio_iqr"] for c in b.cost.values()) else "")
            + ("; FLOP ×free: the same ratio of the FLOPs one step takes (its arithmetic "
               "floor), so ×free / FLOP ×free near 1 means the head costs what its arithmetic "
               "does" if floor else "") + ".")


def mismatch_line(b: Bench, runs: list[Run]) -> str | None:
    """A note when the bench timed other settings than the runs were trained with."""
    notes = []
    seen = set()
    for r in sorted(runs, key=lambda r: (r.arch, r.backend, r.seed)):
        c = b.cost.get((r.arch, r.backend))
        if c is None or r.arch in seen:
            continue
        diff = sorted(k for k in (r.options or {}) if isinstance(c["options"], dict)
                      and c["options"].get(k) != r.options[k])
        if diff or (r.batch and r.batch != c["batch"]):
            seen.add(r.arch)
            bits = [f"{k}={r.options[k]}" for k in diff]
            bench = [f"{k}={c['options'].get(k)}" for k in diff]
            if r.batch and r.batch != c["batch"]:
                bits.append(f"batch {r.batch}")
                bench.append(f"batch {c['batch']}")
            notes.append(f"{r.arch} ran with {', '.join(bits)} (bench: {', '.join(bench)})")
    return ("Note: the bench's settings differ from the runs': " + "; ".join(notes) + ".") \
        if notes else None


def cost_lines(b: Bench | None, archs: list[str]) -> list[str]:
    if b is None:
        return []
    bks = sorted({bk for _, bk in b.cost})
    floor = any(c["floor"] is not None for c in b.cost.values())
    titles = ("ms/step", "×free", "FLOP ×free") if floor else ("ms/step", "×free")
    head = ["field", *(f"{t} {bk}" for bk in bks for t in titles)]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for arch in sorted(set(archs) | {a for a, _ in b.cost}):
        cells = [arch]
        for bk in bks:
            c = b.cost.get((arch, bk))
            if c is None:
                cells += ["–"] * len(titles)
                continue
            iqr = f" ({c['iqr']:.2f})" if c["iqr"] is not None else ""
            spread = (f" [{c['ratio_iqr'][0]:.2f}-{c['ratio_iqr'][1]:.2f}]"
                      if c["ratio_iqr"] and c["ratio"] != 1.0 else "")
            cells += [f"{c['ms']:.2f}{iqr}", f"{c['ratio']:.2f}{spread}" if c["ratio"] else "–"]
            if floor:
                cells.append(f"{c['floor']:.2f}" if c["floor"] else "–")
        out.append("| " + " | ".join(cells) + " |")
    return out


def csv_fields(b: Bench | None, arch: str) -> list[str]:
    out = []
    for bk in ("jax", "torch"):
        c = b.cost.get((arch, bk)) if b else None
        out += ["", "", ""] if c is None else [
            f"{c['ms']:.6g}", "" if c["iqr"] is None else f"{c['iqr']:.6g}",
            "" if c["ratio"] is None else f"{c['ratio']:.6g}"]
    return out


CSV_HEAD = ["ms_step_jax", "ms_step_iqr_jax", "ratio_free_jax", "ms_step_torch",
            "ms_step_iqr_torch", "ratio_free_torch"]

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
from dataclasses import dataclass
from pathlib import Path

from zoo.leaderboard.collect import Run
from zoo.registry import ZooError


@dataclass
class Bench:
    path: str  # as printed: relative to the leaderboard's directory
    record: dict
    cost: dict  # (field, backend) -> {"ms", "iqr", "ratio"}


def _num(x) -> float | None:
    return float(x) if isinstance(x, int | float) and math.isfinite(x) else None


def read_bench(path: str | Path, out_dir: str | Path) -> Bench:
    """The bench record at ``path``; ZooError (one line) when missing or malformed."""
    path = Path(path)
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
            cost[(str(r["field"]), str(r["backend"]))] = {
                "ms": ms, "iqr": _num(r.get("iqr_ms")), "ratio": _num(r.get("ratio_to_free")),
                "options": r.get("options")}
        if not isinstance(m, dict) or not cost:
            raise ValueError("machine/results")
    except (KeyError, TypeError, ValueError) as e:
        raise ZooError(f"{path}: not a `zoo bench train` record (bad or missing {e})") from None
    # named as from the working directory (the repository), so the text does not depend on --out
    rel = os.path.relpath(path.resolve(), Path.cwd().resolve())
    return Bench(path.name if rel.startswith("..") else rel, rec, cost)


def _machine(rec: dict) -> str:
    m, v = rec["machine"], rec.get("versions", {})
    cpu = m.get("cpu") or "unknown CPU"
    bits = [f"{m['cpu_count']} logical CPUs" if m.get("cpu_count") else None,
            f"torch threads {m['torch_threads']}" if m.get("torch_threads") else None,
            m.get("platform")]
    vers = ", ".join(f"{k} {v[k]}" for k in ("python", "numpy", "torch", "jax", "jaxlib",
                                             "equinox", "optax") if v.get(k))
    return f"{cpu} ({', '.join(b for b in bits if b)})" + (f"; {vers}" if vers else "")


def header_line(b: Bench | None) -> str:
    if b is None:
        return ("**Cost.** No bench record given, so no cost columns (the sweep's own timings "
                "are taken with workers side by side and are not costs): make one with `zoo "
                "bench train --out results/bench/train-mlp.json`.")
    s = b.record["settings"]
    opts = s.get("options") or {}
    otxt = (", field options " + ", ".join(f"{k}={v}" for k, v in sorted(opts.items()))
            if opts else "")
    date = b.record.get("date", "undated")
    return (f"**Cost.** From `{b.path}` (`zoo bench train`, {date}): batch {s['batch']} on "
            f"{s['data']}, {s['rounds']} interleaved rounds of {s['steps']} steps{otxt}, "
            f"device {s.get('device', 'cpu')}; machine {_machine(b.record)}. ms/step: median "
            "over rounds (IQR); ×free: ratio to free-<backbone> on the same backend.")


def mismatch_line(b: Bench, runs: list[Run]) -> str | None:
    """A note when the bench timed other settings than the runs were trained with."""
    notes = []
    batches = sorted({r.batch for r in runs if r.batch})
    if batches and batches != [b.record["settings"]["batch"]]:
        notes.append(f"the runs used batch {', '.join(map(str, batches))}")
    seen = set()
    for r in sorted(runs, key=lambda r: (r.arch, r.backend, r.seed)):
        c = b.cost.get((r.arch, r.backend))
        if c is None or not isinstance(c["options"], dict) or not r.options or r.arch in seen:
            continue
        diff = sorted(k for k in r.options if c["options"].get(k) != r.options[k])
        if diff:
            seen.add(r.arch)
            notes.append(f"{r.arch} ran with " + ", ".join(f"{k}={r.options[k]}" for k in diff)
                         + " (bench: " + ", ".join(f"{k}={c['options'].get(k)}" for k in diff)
                         + ")")
    return ("Note: the bench's settings differ from the runs': " + "; ".join(notes) + ".") \
        if notes else None


def cost_lines(b: Bench | None, archs: list[str]) -> list[str]:
    if b is None:
        return []
    bks = sorted({bk for _, bk in b.cost})
    head = ["field", *(f"{t} {bk}" for bk in bks for t in ("ms/step", "×free"))]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for arch in sorted(set(archs) | {a for a, _ in b.cost}):
        cells = [arch]
        for bk in bks:
            c = b.cost.get((arch, bk))
            if c is None:
                cells += ["–", "–"]
                continue
            iqr = f" ({c['iqr']:.2f})" if c["iqr"] is not None else ""
            cells += [f"{c['ms']:.2f}{iqr}", f"{c['ratio']:.2f}" if c["ratio"] else "–"]
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

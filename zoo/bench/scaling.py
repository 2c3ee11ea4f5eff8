"""``zoo bench scaling``: training-step time of the MLP fields against the batch (at a fixed d)
and against d (data gmm-dN, at a fixed batch), blocks of steps of every case interleaved
round-robin (medians over rounds), with the FLOPs of one step (zoo.bench.flops), so each point reads as
ms/step, GFLOP/s and ms per 1000 examples; a log-log plot beside the JSON record.

Growth faster than linear is flagged: between consecutive sizes of a sweep, a time ratio above
``SUPERLINEAR`` x the size ratio. (The step of an MLP is linear in the batch and, at a fixed
width, in d, but for the d x d antisymmetric operators of a rotational head.)
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from zoo.bench import flops as fl
from zoo.bench.common import quartiles, report_setup, sync, write_record
from zoo.registry import ZooError
from zoo.train import TrainConfig, draw_batch, make_trainer

FIELDS = ("free-mlp", "energysq-mlp", "helmholtz-mlp")
SUPERLINEAR = 1.2  # flag a time ratio above 1.2 x the size ratio


def _sizes(name: str, values) -> list[int]:
    vals = list(values)
    if not vals or any(not isinstance(v, int) or v <= 0 for v in vals):
        raise ZooError(f"--{name} takes positive integers, got {','.join(map(str, vals)) or '(none)'}")
    return sorted(set(vals))


def bench_scaling(fields: list[str], backend_list: list[str], *, batches=(64, 256, 1024, 4096),
                  dims=(2, 16, 64, 256), dim: int = 64, batch: int = 256, steps: int = 3,
                  rounds: int = 5, options: dict | None = None, out: str | Path | None = None,
                  show: bool = True) -> list[dict]:
    """Time ``steps`` training steps per block of every field and backend, at every batch of
    ``batches`` on gmm-d``dim`` and at every d of ``dims`` (gmm-dN) at batch ``batch``; a point
    in both sweeps is measured once. Prints one table per sweep and the superlinear growths;
    ``out`` writes a JSON record like ``bench train``'s and a PNG beside it (same stem).

    Returns one dict per (sweep, field, backend, size): sweep ("batch" or "d"), field, backend,
    batch, d, data, options, ms_per_step (median block), iqr_ms, ms_per_round, flops and
    dot_flops (one step, as zoo.bench.flops counts them), gflops, ms_per_1k_examples, and against the
    previous size of the sweep (None for the first): size_ratio, time_ratio, superlinear.
    """

    console, out_path = report_setup(show, out, "scaling.json", 120)
    batches, dims = _sizes("batches", batches), _sizes("dims", dims)
    for name, v in (("dim", dim), ("batch", batch), ("steps", steps), ("rounds", rounds)):
        if not isinstance(v, int) or v <= 0:
            raise ZooError(f"--{name} must be a positive integer, got {v!r}")
    if not fields:
        raise ZooError("--fields needs at least one field")
    sweeps = {"batch": [(b, dim) for b in batches], "d": [(batch, d) for d in dims]}
    points = list(dict.fromkeys(p for pts in sweeps.values() for p in pts))
    for field in fields:  # every field, backend and d checked before anything is built
        for backend in backend_list:
            for d in dict.fromkeys(d for _, d in points):
                TrainConfig(arch=field, backend=backend, data=f"gmm-d{d}").validate()
    cases: dict[tuple, dict] = {}
    with console.status("building") as status:
        for field in fields:
            for backend in backend_list:
                for b, d in points:
                    status.update(f"building {field} ({backend}), batch {b}, d = {d}")
                    cfg = TrainConfig(arch=field, backend=backend, data=f"gmm-d{d}", batch=b,
                                      options=dict(options or {}))
                    trainer, ds, rng = make_trainer(cfg)  # validates the field and options
                    blocks = [draw_batch(rng, ds, cfg) for _ in range(steps)]
                    counted = fl.step_flops(trainer, blocks[0], backend)  # torch: takes a step
                    sync(trainer.step(blocks[0]))  # compile / warm up
                    cases[(field, backend, b, d)] = {
                        "trainer": trainer, "batches": blocks, "counted": counted,
                        "data": ds.name, "options": dict(cfg.options), "times": []}
        for r in range(rounds):
            status.update(f"timing: round {r + 1}/{rounds}")
            for c in cases.values():
                t0 = time.perf_counter()
                for blk in c["batches"]:
                    loss = c["trainer"].step(blk)
                sync(loss)
                c["times"].append((time.perf_counter() - t0) / steps)
    results = []
    for sweep, pts in sweeps.items():
        for field in fields:
            for backend in backend_list:
                prev = None
                for b, d in pts:
                    row = _result(cases[(field, backend, b, d)], sweep, field, backend, b, d, prev)
                    results.append(row)
                    prev = row
    flags = [r for r in results if r["superlinear"]]
    console.print(_table(results, "batch", f"training step against the batch, gmm-d{dim}, "
                         f"{rounds} rounds x {steps} steps"))
    console.print(_table(results, "d", f"training step against d (gmm-dN), batch {batch}, "
                         f"{rounds} rounds x {steps} steps"))
    for line in flag_lines(flags):
        console.print(line)
    if out_path is not None:
        png = out_path.with_suffix(".png")
        write_record(out_path, "zoo bench scaling", {
            "fields": list(fields), "backends": list(backend_list), "batches": batches,
            "dims": dims, "dim": dim, "batch": batch, "data": "gmm-d{d}", "steps": steps,
            "rounds": rounds, "options": dict(options or {}), "device": "cpu",
            "interleaved": True}, results, extra={
            "superlinear_threshold": SUPERLINEAR,
            "superlinear": [{k: r[k] for k in ("sweep", "field", "backend", "batch", "d",
                                               "size_ratio", "time_ratio")} for r in flags],
            "flops_counted": {b: fl.method(b) for b in backend_list}, "plot": png.name})
        plot(results, png, title=f"training step, {rounds} rounds x {steps} steps")
        console.print(f"wrote {out_path} and {png}")
    return results


def _result(c: dict, sweep: str, field: str, backend: str, b: int, d: int,
            prev: dict | None) -> dict:
    q1, med, q3 = quartiles(c["times"])
    n = c["counted"]
    size = b if sweep == "batch" else d
    row = {"sweep": sweep, "field": field, "backend": backend, "batch": b, "d": d,
           "data": c["data"], "options": c["options"], "ms_per_step": 1e3 * med,
           "iqr_ms": 1e3 * (q3 - q1), "ms_per_round": [1e3 * t for t in c["times"]],
           "flops": n["flops"], "dot_flops": n["dot_flops"], "gflops": n["flops"] / med / 1e9,
           "ms_per_1k_examples": 1e3 * med / b * 1000,
           "size_ratio": None, "time_ratio": None, "superlinear": False}
    if prev is not None:
        size_ratio = size / (prev["batch"] if sweep == "batch" else prev["d"])
        time_ratio = row["ms_per_step"] / prev["ms_per_step"]
        row.update(size_ratio=size_ratio, time_ratio=time_ratio,
                   superlinear=time_ratio > SUPERLINEAR * size_ratio)
    return row


def flag_lines(flags: list[dict]) -> list[str]:
    """One line per superlinear growth, or one saying there is none."""
    if not flags:
        return [f"no growth faster than linear (time ratio > {SUPERLINEAR} x size ratio "
                "between consecutive sizes)"]
    out = []
    for r in flags:
        what = "batch" if r["sweep"] == "batch" else "d"
        now = r["batch"] if what == "batch" else r["d"]
        before = round(now / r["size_ratio"])
        out.append(f"superlinear: {r['field']} ({r['backend']}), {what} {before} -> {now}: time "
                   f"x{r['time_ratio']:.2f} for size x{r['size_ratio']:.2f} "
                   f"(> {SUPERLINEAR} x size)")
    return out


def _table(results: list[dict], sweep: str, title: str):
    from rich.table import Table

    rows = [r for r in results if r["sweep"] == sweep]
    table = Table(title=title, caption_justify="left")
    table.add_column("field", no_wrap=True)
    for head in ("backend", "batch" if sweep == "batch" else "d", "ms/step\nmedian", "IQR\nms",
                 "MFLOP\n/step", "GFLOP/s", "ms per 1k\nexamples", "time x\n(size x)"):
        table.add_column(head, justify="left" if head == "backend" else "right")
    for r in rows:
        growth = ("–" if r["time_ratio"] is None else
                  f"{r['time_ratio']:.2f} ({r['size_ratio']:.3g})"
                  + (" [bold red]superlinear[/]" if r["superlinear"] else ""))
        table.add_row(r["field"], r["backend"], str(r["batch"] if sweep == "batch" else r["d"]),
                      f"{r['ms_per_step']:.2f}", f"{r['iqr_ms']:.2f}", f"{r['flops'] / 1e6:.3g}",
                      f"{r['gflops']:.2f}", f"{r['ms_per_1k_examples']:.2f}", growth)
    table.caption = "\n".join([
        "ms per 1k examples = ms/step / batch x 1000 (flat when the step is linear in the batch);"
        " GFLOP/s = FLOPs of one step / median step time (torch: matrix products only; jax: "
        "XLA's count of every op, as in zoo bench train).",
        f"time x (size x): the step's time ratio to the previous size and the size ratio; "
        f"superlinear when above {SUPERLINEAR} x the size ratio."])
    return table


def plot(results: list[dict], path: Path, title: str = "") -> None:
    """ms/step against the batch and against d, log-log, one line per field and backend."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    from zoo import checkpoint

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4))
    styles = {"torch": "-", "jax": "--"}
    colours = {}
    for ax, sweep, key in ((axes[0], "batch", "batch"), (axes[1], "d", "d")):
        rows = [r for r in results if r["sweep"] == sweep]
        fixed = f"d = {rows[0]['d']}" if sweep == "batch" else f"batch {rows[0]['batch']}"
        for (field, backend) in dict.fromkeys((r["field"], r["backend"]) for r in rows):
            pts = [r for r in rows if r["field"] == field and r["backend"] == backend]
            colour = colours.setdefault(field, f"C{len(colours)}")
            ax.plot([r[key] for r in pts], [r["ms_per_step"] for r in pts], marker="o",
                    ls=styles.get(backend, ":"), color=colour, label=f"{field} ({backend})")
        xs = sorted({r[key] for r in rows})
        base = statistics.median(r["ms_per_step"] for r in rows if r[key] == xs[0])
        ax.plot(xs, [base * x / xs[0] for x in xs], color="0.6", lw=0.8, ls=":",
                label="linear (slope 1)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(xs, [str(x) for x in xs])
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set_xlabel(key)
        ax.set_ylabel("ms / step (median)")
        ax.set_title(f"against {key} ({fixed})", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    axes[1].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    path.parent.mkdir(parents=True, exist_ok=True)
    checkpoint.atomic_write(path, buf.getvalue())

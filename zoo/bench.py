"""Benchmarks printed as ratios measured side by side in one run (the machine is shared and noisy).

Blocks of steps of every (field, backend) are interleaved round-robin, so drift in machine load
hits all of them alike; the median block per entry is reported.
"""

from __future__ import annotations

import statistics
import time

from zoo.registry import entries
from zoo.train import TrainConfig, draw_batch, make_trainer


def _sync(x) -> None:
    if hasattr(x, "block_until_ready"):
        x.block_until_ready()


def bench_train(pattern: str, backends: list[str], *, batch: int, data: str, steps: int,
                rounds: int) -> list[dict]:
    """Time training steps of every trainable field matching ``pattern``; prints a table."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    cases = []
    for info in entries(pattern):
        if info.trainable and info.backend in backends:
            cfg = TrainConfig(arch=info.name, backend=info.backend, data=data, batch=batch)
            trainer, ds, rng = make_trainer(cfg)
            batches = [draw_batch(rng, ds, cfg) for _ in range(steps)]
            _sync(trainer.step(batches[0]))  # compile / warm up
            cases.append({"name": info.name, "backend": info.backend, "trainer": trainer,
                          "batches": batches, "times": []})
    if not cases:
        console.print(f"no trainable field matches {pattern!r}")
        return []
    with console.status("timing") as status:
        for r in range(rounds):
            status.update(f"round {r + 1}/{rounds}")
            for c in cases:
                t0 = time.perf_counter()
                for b in c["batches"]:
                    loss = c["trainer"].step(b)
                _sync(loss)
                c["times"].append((time.perf_counter() - t0) / steps)
    ref = {c["backend"]: statistics.median(c["times"]) for c in cases if c["name"] == "free-mlp"}
    table = Table("field", "backend", "ms/step (median)", "spread (IQR)", "ratio to free-mlp",
                  title=f"training step, batch {batch}, {data}, {rounds} rounds x {steps} steps")
    out = []
    for c in cases:
        med = statistics.median(c["times"])
        q = statistics.quantiles(c["times"], n=4) if len(c["times"]) > 1 else [med, med, med]
        ratio = med / ref[c["backend"]] if c["backend"] in ref else float("nan")
        table.add_row(c["name"], c["backend"], f"{1e3 * med:.2f}", f"{1e3 * (q[2] - q[0]):.2f}",
                      f"{ratio:.2f}")
        out.append({"field": c["name"], "backend": c["backend"], "ms_per_step": 1e3 * med,
                    "ratio_to_free": ratio})
    console.print(table)
    return out

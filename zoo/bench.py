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
    """Time training steps of every trainable field matching ``pattern``; prints a table with each
    field's ratio to the free field on the same backbone and backend (free-mlp, free-unet, ...)."""
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
            cases.append({"name": info.name, "backend": info.backend, "backbone": info.backbone,
                          "trainer": trainer,
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
    ref = {(c["backbone"], c["backend"]): statistics.median(c["times"]) for c in cases
           if c["name"] == f"free-{c['backbone']}"}
    table = Table("field", "backend", "ms/step (median)", "spread (IQR)", "ratio to free",
                  title=f"training step, batch {batch}, {data}, {rounds} rounds x {steps} steps")
    out = []
    for c in cases:
        med = statistics.median(c["times"])
        q = statistics.quantiles(c["times"], n=4) if len(c["times"]) > 1 else [med, med, med]
        key = (c["backbone"], c["backend"])
        ratio = med / ref[key] if key in ref else float("nan")
        table.add_row(c["name"], c["backend"], f"{1e3 * med:.2f}", f"{1e3 * (q[2] - q[0]):.2f}",
                      f"{ratio:.2f}")
        out.append({"field": c["name"], "backend": c["backend"], "ms_per_step": 1e3 * med,
                    "ratio_to_free": ratio})
    console.print(table)
    return out


def bench_sample(pattern: str, backends: list[str], *, n: int, rounds: int, steps: int,
                 sde_steps: int) -> dict:
    """Per field and solver: NFE and median wall time (fresh fields, gmm8 schedule), plus the
    DLPack bridge overhead: a JAX field through torchdiffeq vs natively through diffrax, with the
    same fixed-step method and NFE. Rounds interleave every case."""
    import numpy as np
    import torch
    from rich.console import Console
    from rich.table import Table

    from solvers import diffrax_engine as de
    from solvers import torch_engine as te
    from zoo.api import create, make_schedule
    from zoo.sampling import field_fn

    console, sched = Console(), make_schedule("ou")
    xT = np.random.default_rng(0).standard_normal((n, 2)).astype(np.float32)
    x_t = torch.as_tensor(xT)
    cases = []
    for info in entries(pattern):
        if info.backend not in backends:
            continue
        if info.trainable:
            f = create(info.name, info.backend, dim=2, dtype="float32")
        else:  # the closed-form field runs in float64
            f = create(info.name, info.backend, data="gmm8")
        fn = field_fn(f, info.backend, (2,))
        label = f"{info.name} ({info.backend})"
        x32 = x_t if info.trainable else x_t.double()
        cases += [
            (label, "ode dopri5", lambda fn=fn, x=x32: te.sample_ode(fn, sched, x)),
            (label, f"ode rk4 x{steps}",
             lambda fn=fn, x=x32: te.sample_ode(fn, sched, x, method="rk4", steps=steps)),
            (label, f"sde euler x{sde_steps}",
             lambda fn=fn, x=x32: te.sample_sde(fn, sched, x, steps=sde_steps)),
        ]
        if info.backend == "jax" and info.trainable:
            cases += [
                (label, f"bridge: ode euler x{steps}",
                 lambda fn=fn, x=x32: te.sample_ode(fn, sched, x, method="euler", steps=steps)),
                (label, f"diffrax: ode euler x{steps}",
                 lambda f=f: de.sample_ode(f, sched, xT, method="euler", steps=steps)),
            ]
    times: dict = {c[:2]: [] for c in cases}
    nfes: dict = {}
    with console.status("warming up") as status:
        for label, solver, run in cases:  # compile and warm caches
            nfes[(label, solver)] = run()[1]
        for r in range(rounds):
            status.update(f"round {r + 1}/{rounds}")
            for label, solver, run in cases:
                t0 = time.perf_counter()
                run()
                times[(label, solver)].append(time.perf_counter() - t0)
    table = Table("field", "solver", "NFE", "wall s (median)",
                  title=f"sampling {n} points, {rounds} rounds")
    out = {"cases": [], "bridge_overhead": {}}
    for key, ts in times.items():
        med = statistics.median(ts)
        table.add_row(key[0], key[1], str(nfes[key]), f"{med:.3f}")
        out["cases"].append({"field": key[0], "solver": key[1], "nfe": nfes[key], "wall_s": med})
    console.print(table)
    over = Table("field", "bridge / diffrax (same method, same NFE)",
                 title="DLPack bridge overhead (target < 1.5)")
    for key in times:
        if key[1].startswith("bridge"):
            other = (key[0], key[1].replace("bridge", "diffrax"))
            ratio = statistics.median(times[key]) / statistics.median(times[other])
            out["bridge_overhead"][key[0]] = ratio
            over.add_row(key[0], f"{ratio:.2f}")
    console.print(over)
    return out

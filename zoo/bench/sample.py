"""`zoo bench sample`: NFE and wall time per field and solver, and the DLPack bridge's overhead."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from zoo.bench.common import (
    paired_ratio,
    report_setup,
    write_record,
)
from zoo.registry import ZooError, entries

BRIDGE_TARGET = 1.2  # issue 15: a JAX field through torchdiffeq within 1.2x of diffrax


def bench_sample(pattern: str, backends: list[str], *, n: int, rounds: int, steps: int,
                 sde_steps: int, out: str | Path | None = None) -> dict:
    """Per field and solver: NFE and median wall time (fresh fields, gmm8 schedule), plus the
    DLPack bridge overhead: a JAX field through torchdiffeq vs natively through diffrax, with the
    same fixed-step method and NFE, as the quartiles of the per-round ratios (``paired_ratio``).
    Rounds interleave every case. ``out`` writes a JSON record like ``bench_train``'s."""
    import numpy as np
    import torch
    from rich.table import Table

    from solvers import diffrax_engine as de
    from solvers import torch_engine as te
    from zoo.api import create, make_schedule
    from zoo.sampling import field_fn

    console, out_path = report_setup(True, out, "results/bench/sample.json", width=100)
    sched = make_schedule("ou")
    xT = np.random.default_rng(0).standard_normal((n, 2)).astype(np.float32)
    x_t = torch.as_tensor(xT)
    cases = []
    chosen = [i for i in entries(pattern) if i.backend in backends]
    if not chosen:
        raise ZooError(f"no field matches {pattern!r} in backend(s) {', '.join(backends)}; "
                       "see `zoo list`")
    for info in chosen:
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
    res = {"cases": [], "bridge_overhead": {}}
    for key, ts in times.items():
        med = statistics.median(ts)
        table.add_row(key[0], key[1], str(nfes[key]), f"{med:.3f}")
        res["cases"].append({"field": key[0], "solver": key[1], "nfe": nfes[key], "wall_s": med})
    console.print(table)
    over = Table("field", "bridge / diffrax per round, median [quartiles]", "NFE (both)",
                 title=f"DLPack bridge overhead (issue 15's target: <= {BRIDGE_TARGET})")
    for key in times:
        if key[1].startswith("bridge"):
            other = (key[0], key[1].replace("bridge", "diffrax"))
            if nfes[key] != nfes[other]:  # the comparison is only fair at equal work
                raise ZooError(f"{key[0]}: the bridge took {nfes[key]} field evaluations and "
                               f"diffrax {nfes[other]}; the two must take the same")
            q1, med, q3 = paired_ratio(times[key], times[other])
            res["bridge_overhead"][key[0]] = {"ratio": med, "ratio_iqr": [q1, q3],
                                              "nfe": nfes[key]}
            over.add_row(key[0], f"{med:.2f} [{q1:.2f}-{q3:.2f}]", str(nfes[key]))
    console.print(over)
    if out_path is not None:
        settings = {"pattern": pattern, "backends": backends, "n": n, "rounds": rounds,
                    "steps": steps, "sde_steps": sde_steps, "dtype": "float32"}
        write_record(out_path, "zoo bench sample", settings, res["cases"], {
            "bridge_overhead": res["bridge_overhead"],
            "how": "fresh float32 fields (initial weights), N points of standard "
                   "normal noise in 2-D, the OU schedule; every case timed once "
                   "per round, rounds interleaved, after one warm-up call each "
                   "(compiles); wall_s is the median over rounds; the bridge "
                   "ratio is the median [quartiles] of the per-round ratios of "
                   "torchdiffeq (through DLPack) over diffrax, Euler, same NFE",
            "target": {"bridge_over_diffrax": BRIDGE_TARGET}})
        console.print(f"wrote {out_path}")
    return res

"""`zoo bench train`: training-step time of every field beside its FLOP floor and a GEMM's rate."""

from __future__ import annotations

import contextlib
import statistics
import time
from pathlib import Path

from zoo.bench import flops as fl
from zoo.bench.common import (
    gpu_names,
    jax_device,
    paired_ratio,
    quartiles,
    report_setup,
    sync,
    write_record,
)
from zoo.registry import ZooError, entries
from zoo.train import COMPILE_AUTO, TrainConfig, draw_batch, make_trainer

COMPILE_MODES = ("auto", "on", "off", "both")


def bench_train(pattern: str, backends: list[str], *, batch: int, data: str, steps: int,
                rounds: int, options: dict | None = None, out: str | Path | None = None,
                show: bool = True, gemm_size: int = 1024, compile: str = "auto",
                device: str = "cpu") -> list[dict]:
    """Time training steps of every trainable field matching ``pattern``; prints a table with each
    field's ratio to the free field on the same backbone and backend (free-mlp, free-unet, ...),
    the FLOPs of one step and their ratio to free's (the floor the time ratio could reach),
    and the achieved rate as a fraction of a ``gemm_size``-square float32 GEMM's, timed once per
    backend after every round.

    ``options``: field options for every field (e.g. {"width": 128}, as a suite's); ``out``: write
    the JSON record there (see the module docstring); ``compile``: torch fields' steps as
    a long training run takes them ("auto": zoo.train.COMPILE_AUTO), all compiled ("on"), all
    eager ("off"), or each both ways side by side ("both"); ``device``: "cpu", or "cuda" for
    torch's CUDA device 0 and JAX's GPU (both need one: ZooError otherwise). Returns one dict per (field,
    backend, compiled): field, backend, compiled (torch.compile'd step, JAX: jitted, so None),
    backbone, options, ms_per_step (median block), iqr_ms, ratio_to_free (to free on the same
    backbone, backend and compiled: the median of the per-round ratios, ``paired_ratio``; None
    without a free field on that backbone and backend) and ratio_iqr, ms_per_round; on torch
    rows of fields timed in both backends, torch_over_jax (paired the same way) and
    torch_over_jax_iqr; flops (one step, counted as zoo.bench.flops says: matrix products in torch,
    every op in XLA), dot_flops (matrix products only; JAX: those of the jaxpr, before XLA's
    optimisations), flop_ratio_to_free,
    dot_flop_ratio_to_free, time_over_floor (ratio_to_free / flop_ratio_to_free), gflops
    (flops / median step time), gemm_fraction (gflops / the GEMM's rate on that backend).
    """

    if compile not in COMPILE_MODES:
        raise ZooError(f"compile must be one of {', '.join(COMPILE_MODES)}, got {compile!r}")
    if device not in ("cpu", "cuda"):
        raise ZooError(f"device must be cpu or cuda, got {device!r}")
    console, out_path = report_setup(show, out, "train-mlp.json", 140)  # 140: twelve columns
    with jax_device(device) if "jax" in backends else contextlib.nullcontext():
        return _bench_train(pattern, backends, batch=batch, data=data, steps=steps, rounds=rounds,
                            options=options, console=console, out_path=out_path,
                            gemm_size=gemm_size, compile=compile, device=device)


def _bench_train(pattern, backends, *, batch, data, steps, rounds, options, console, out_path,
                 gemm_size, compile, device) -> list[dict]:
    """``bench_train`` inside its JAX device context."""
    modes = ["off", "on"] if compile == "both" else [compile]
    cases = []
    todo = [(info, mode) for info in entries(pattern) if info.trainable and info.backend in backends
            for mode in (modes if info.backend == "torch" else ["auto"])]
    for k, (info, mode) in enumerate(todo):
        t_prep = time.perf_counter()
        if mode == "auto":  # as a run of a suite's length takes its steps
            mode = "on" if info.backbone in COMPILE_AUTO else "off"
        cfg = TrainConfig(arch=info.name, backend=info.backend, data=data, batch=batch,
                          options=dict(options or {}), compile=mode,
                          device=device if info.backend == "torch" else "cpu")
        trainer, ds, rng = make_trainer(cfg)  # validates (and fills in) the options
        batches = [draw_batch(rng, ds, cfg) for _ in range(steps)]
        label = f"{info.name} ({info.backend}{', compiled' if cfg.compiled() else ''})"
        first = "compile" if cfg.compiled() or info.backend == "jax" else "warm-up"
        with console.status(f"preparing {label}, {k + 1}/{len(todo)}: FLOPs, products, {first}"):
            # torch: takes a step, eager (a compiled trainer's first step is)
            counted = fl.step_flops(trainer, batches[0], info.backend)
            products = fl.products(trainer, batches[0], info.backend)  # torch: takes a step
            sync(trainer.step(batches[0]))  # compile / warm up
        compiled = cfg.compiled() if info.backend == "torch" else None
        if compiled and trainer.compiled is None:
            console.print(f"{info.name}: torch.compile failed, timed eager")
            compiled = False
        cases.append({"name": info.name, "backend": info.backend, "compiled": compiled,
                      "backbone": info.backbone, "options": dict(cfg.options),
                      "trainer": trainer, "batches": batches, "times": [],
                      "counted": counted, "products": products, "product_times": []})
        # one line per field, so a long run's log shows where the time goes (the GPU DiT
        # bench printed nothing for 330 s before this)
        console.print(f"[dim]{k + 1}/{len(todo)} {label}: ready in "
                      f"{time.perf_counter() - t_prep:.0f} s[/dim]")
    if not cases:
        raise ZooError(f"no trainable field matches {pattern!r} on {', '.join(backends)} "
                       "(`zoo list` names them)")
    gemms = {b: fl.gemm(b, gemm_size, device) for b in dict.fromkeys(c["backend"] for c in cases)}
    gemm_times: dict[str, list[float]] = {b: [] for b in gemms}
    with console.status("timing") as status:
        for r in range(rounds):
            status.update(f"round {r + 1}/{rounds}")
            for c in cases:
                t0 = time.perf_counter()
                for b in c["batches"]:
                    loss = c["trainer"].step(b)
                sync(loss)
                c["times"].append((time.perf_counter() - t0) / steps)
                c["product_times"].append(fl.time_once(c["products"][0]))
            for b, (run, _) in gemms.items():
                gemm_times[b].append(fl.time_once(run))
    on_gpu = " / ".join(dict.fromkeys(gpu_names().values())) if device == "cuda" else None
    gemm_rate = {b: gemms[b][1] / statistics.median(ts) / 1e9 for b, ts in gemm_times.items()}
    key = lambda c: (c["backbone"], c["backend"], c["compiled"])
    free = {key(c): c for c in cases if c["name"] == f"free-{c['backbone']}"}
    results = [_train_result(c, free.get(key(c)), gemm_rate[c["backend"]]) for c in cases]
    jax_rows = {c["name"]: c for c in cases if c["backend"] == "jax"}
    for c, r in zip(cases, results):  # torch over JAX, paired per round (the same field)
        if c["backend"] == "torch" and c["name"] in jax_rows:
            q1, med, q3 = paired_ratio(c["times"], jax_rows[c["name"]]["times"])
            r["torch_over_jax"], r["torch_over_jax_iqr"] = med, [q1, q3]
    console.print(_train_table(results, gemm_rate, gemm_size,
                               title=f"training step, batch {batch}, {data}, {rounds} rounds x "
                               f"{steps} steps" + (f", {on_gpu}" if device == "cuda" else "")))
    if out_path is not None:
        write_record(out_path, "zoo bench train", {
            "pattern": pattern, "backends": list(backends), "batch": batch, "data": data,
            "steps": steps, "rounds": rounds, "options": dict(options or {}), "device": device,
            "compile": compile, "interleaved": True}, results, extra={
            "gemm": {"n": gemm_size, "dtype": "float32", "flops": 2 * gemm_size**3,
                     "gflops": gemm_rate,
                     "ms": {b: [1e3 * t for t in ts] for b, ts in gemm_times.items()},
                     "how": "one n x n product per backend after every round (torch.matmul, "
                            "jnp.dot under jax.jit); gflops from the median"},
            "flops_counted": {b: fl.method(b) for b in gemms}})
        console.print(f"wrote {out_path}")
    return results


def _ratio(a, b) -> float | None:
    return a / b if a is not None and b else None


def _train_result(c: dict, free: dict | None, gemm_gflops: float) -> dict:
    """One (field, backend)'s row of ``bench_train``: times, ratios, FLOPs and rates."""
    q1, med, q3 = quartiles(c["times"])
    n = c["counted"]
    r1, ratio, r3 = paired_ratio(c["times"], free["times"]) if free else (None, None, None)
    flop_ratio = _ratio(n["flops"], free["counted"]["flops"]) if free else None
    gflops = n["flops"] / med / 1e9
    prod = statistics.median(c["product_times"])
    extra = {k: n[k] for k in ("transcendentals",) if k in n}
    if "by_op" in n:
        extra["flops_by_op"] = n["by_op"]
    return {"field": c["name"], "backend": c["backend"], "compiled": c["compiled"],
            "backbone": c["backbone"],
            "options": c["options"], "ms_per_step": 1e3 * med, "iqr_ms": 1e3 * (q3 - q1),
            "ratio_to_free": ratio, "ratio_iqr": None if free is None else [r1, r3],
            "ms_per_round": [1e3 * t for t in c["times"]],
            "flops": n["flops"], "dot_flops": n["dot_flops"], **extra,
            "flop_ratio_to_free": flop_ratio,
            "dot_flop_ratio_to_free": (_ratio(n["dot_flops"], free["counted"]["dot_flops"])
                                       if free else None),
            "time_over_floor": _ratio(ratio, flop_ratio), "gflops": gflops,
            "gemm_fraction": gflops / gemm_gflops,
            # the step's own matrix products replayed alone (zoo.bench.flops.products): their time,
            # its share of the step, and their rate over the large GEMM's (the ceiling of
            # gemm_fraction at these shapes)
            "products_ms": 1e3 * prod, "products_share": prod / med,
            "products_gemm_fraction": c["products"][1] / prod / 1e9 / gemm_gflops}


def _train_table(results: list[dict], gemm_rate: dict, gemm_size: int, title: str):
    from rich.table import Table

    fmt = lambda v, spec=".2f": "–" if v is None else format(v, spec)
    table = Table(title=title, caption_justify="left")
    table.add_column("field", no_wrap=True)
    both = any("torch_over_jax" in r for r in results)
    for head in ("backend", "ms/step\nmedian", "IQR\nms", "ratio to\nfree [IQR]",
                 "MFLOP\n/step", "floor\nratio", "time /\nfloor", "GFLOP/s", "of\nGEMM",
                 "products\nshare", "products\nof GEMM") + (("torch /\nJAX [IQR]",) if both else ()):
        table.add_column(head, justify="left" if head == "backend" else "right")

    def spread(v, iqr):
        return "–" if v is None else f"{v:.2f} [{iqr[0]:.2f}-{iqr[1]:.2f}]"

    for r in results:
        backend = r["backend"] + (" compiled" if r.get("compiled") else "")
        row = [r["field"], backend, f"{r['ms_per_step']:.2f}", f"{r['iqr_ms']:.2f}",
               spread(r["ratio_to_free"], r["ratio_iqr"]), f"{r['flops'] / 1e6:.1f}",
               fmt(r["flop_ratio_to_free"]), fmt(r["time_over_floor"]),
               f"{r['gflops']:.2f}", fmt(r["gemm_fraction"], ".1%"),
               fmt(r["products_share"], ".0%"), fmt(r["products_gemm_fraction"], ".0%")]
        if both:
            row.append(spread(r.get("torch_over_jax"), r.get("torch_over_jax_iqr")))
        table.add_row(*row)
    rates = ", ".join(f"{b} {v:.1f}" for b, v in gemm_rate.items())
    notes = [f"GEMM {gemm_size}x{gemm_size} float32, GFLOP/s: {rates} (median, timed after "
             "every round); 'of GEMM' = GFLOP/s / that rate.",
             "products: the step's own matrix products (same shapes, layouts, parameters) "
             "replayed alone after every block: 'share' = their time / the step's, 'of GEMM' = "
             "their rate / the large GEMM's, the most the step's 'of GEMM' can reach at these "
             "shapes."]
    if any(r["backend"] == "torch" for r in results):
        notes.append("torch FLOPs: FlopCounterMode, matrix products only (forward, backward, "
                     "double backward).")
    jax = [r for r in results if r["backend"] == "jax"]
    if jax:
        share = [r["dot_flops"] / r["flops"] for r in jax if r["flops"]] or [0.0]
        span = dict.fromkeys(f"{v:.0%}" for v in (min(share), max(share)))
        notes.append("jax FLOPs: XLA's cost analysis of the compiled step, every op "
                     "(elementwise, reductions, Adam); the matrix products of the step's jaxpr "
                     f"(the record's dot_flops, torch's rule) are {'-'.join(span)} of it (over "
                     "100 %: XLA merged duplicate products).")
    if any(r.get("compiled") for r in results):
        notes.append("torch compiled: loss and gradients from one torch.compile'd graph "
                     "(zoo train --compile on); the others eager.")
    notes.append("ratio to free, torch / JAX: medians of the per-round ratios (each round's "
                 "blocks run back to back, so drifting load cancels), with their quartiles.")
    notes.append("floor ratio = FLOPs / free's on the same backbone and backend; time / floor = "
                 "ratio to free / floor ratio (issue 15's target: <= 1.15).")
    table.caption = "\n".join(notes)
    return table

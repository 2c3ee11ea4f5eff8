"""Benchmarks printed as ratios measured side by side in one run (the machine is shared and noisy).

Blocks of steps of every (field, backend) are interleaved round-robin, so drift in machine load
hits all of them alike; the median block per entry is reported. ``bench_train`` also counts the
FLOPs of one step of each (zoo.flops: torch's FlopCounterMode, XLA's cost analysis), so each
field's time ratio to free stands beside its arithmetic floor ratio, and times a float32 GEMM
between the rounds, so each step's achieved GFLOP/s reads as a fraction of what the machine's
matrix product reaches. ``bench_train(..., out=PATH)`` also writes a JSON record (settings,
per-field medians, IQRs, ratios and FLOPs, the GEMM's rate, the machine and the library
versions, the date): the leaderboard's cost columns come from such a record, never from timings
taken while other work ran.
"""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import time
from pathlib import Path

from zoo import flops as fl
from zoo.registry import ZooError, entries
from zoo.train import COMPILE_AUTO, TrainConfig, draw_batch, make_trainer

VERSIONED = ("numpy", "torch", "jax", "jaxlib", "equinox", "optax")


def _sync(x) -> None:
    if hasattr(x, "block_until_ready"):
        x.block_until_ready()


def _cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux, else what platform says)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return " ".join(line.split(":", 1)[1].split())
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine_info() -> tuple[dict, dict]:
    """({"cpu", "cpu_count", "torch_threads", "platform"}, {package: version}) of this process."""
    from importlib import metadata

    import torch

    machine = {"cpu": _cpu_model(), "cpu_count": os.cpu_count(),
               "torch_threads": torch.get_num_threads(), "platform": platform.platform()}
    versions = {"python": platform.python_version()}
    for pkg in VERSIONED:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return machine, versions


def _quartiles(xs: list[float]) -> tuple[float, float, float]:
    med = statistics.median(xs)
    if len(xs) < 2:
        return med, med, med
    q = statistics.quantiles(xs, n=4)
    return q[0], med, q[2]


def paired_ratio(xs: list[float], ys: list[float]) -> tuple[float, float, float]:
    """Quartiles (q1, median, q3) of the per-round ratios x_r / y_r of two interleaved series.
    Each round's ratio sees one machine state, so load that drifts between rounds cancels; the
    spread of the ratios says how well one run pins the ratio down (a ratio of medians has none)."""
    if len(xs) != len(ys) or not xs:
        raise ValueError(f"paired series need equal, non-zero lengths ({len(xs)} vs {len(ys)})")
    return _quartiles([x / y for x, y in zip(xs, ys)])


def _hwm_mib() -> float:
    """This process's peak resident set size so far, MiB: VmHWM of /proc/self/status (Linux; it
    belongs to the process's own address space, so unlike ru_maxrss it does not inherit the
    parent's size across fork and exec), else ru_maxrss."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    import resource
    import sys

    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 2**20 if sys.platform == "darwin" else r / 1024  # bytes on macOS, KiB on Linux


def _peak_rss_child(arch: str, backend: str, data: str, batch: int, options: dict,
                    steps: int) -> None:
    """(In a fresh process) build the trainer, take ``steps`` training steps, print JSON with the
    process's peak resident set size before the first step and after the last (MiB)."""
    import json

    cfg = TrainConfig(arch=arch, backend=backend, data=data, batch=batch, options=options)
    trainer, ds, rng = make_trainer(cfg)
    before = _hwm_mib()
    for _ in range(steps):
        loss = trainer.step(draw_batch(rng, ds, cfg))
    _sync(loss)
    print(json.dumps({"built_mib": before, "peak_mib": _hwm_mib()}))


def peak_rss(arch: str, backend: str, *, data: str, batch: int, options: dict,
             steps: int = 3) -> dict:
    """Peak RSS (MiB) of a fresh process that builds ``arch`` and trains ``steps`` steps: the
    memory a training run needs (the libraries, the field, one step's activations and the
    gradients' graph), measured in a child process so that nothing of this one counts.
    {"built_mib": before the first step, "peak_mib": after the last}."""
    import json
    import subprocess
    import sys

    code = ("import json, sys; from zoo.bench import _peak_rss_child as c; "
            "c(*json.loads(sys.argv[1]))")
    args = json.dumps([arch, backend, data, batch, options, steps])
    r = subprocess.run([sys.executable, "-c", code, args], capture_output=True, text=True,
                       env={**os.environ, "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS",
                                                                          "cpu")})
    if r.returncode != 0:
        raise ZooError(f"peak RSS of {arch} ({backend}): the child failed: "
                       f"{(r.stderr.strip().splitlines() or ['?'])[-1]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def report_setup(show: bool, out, example: str, width: int | None = None):
    """(rich Console, out Path or None) of a benchmark: quiet unless ``show``, ``width`` columns
    at least when writing to a log rather than a terminal; ZooError when ``out`` is a directory
    (``example``: a file name to suggest)."""
    from rich.console import Console

    console = Console(quiet=not show)
    if width and not console.is_terminal:
        console.width = max(console.width, width)
    out_path = Path(out) if out is not None else None
    if out_path is not None and out_path.is_dir():
        raise ZooError(f"--out {out_path}: is a directory (give a file name, e.g. {example})")
    return console, out_path


COMPILE_MODES = ("auto", "on", "off", "both")


def bench_train(pattern: str, backends: list[str], *, batch: int, data: str, steps: int,
                rounds: int, options: dict | None = None, out: str | Path | None = None,
                show: bool = True, gemm_size: int = 1024, compile: str = "auto") -> list[dict]:
    """Time training steps of every trainable field matching ``pattern``; prints a table with each
    field's ratio to the free field on the same backbone and backend (free-mlp, free-unet, ...),
    the FLOPs of one step and their ratio to free's (the floor the time ratio could reach),
    and the achieved rate as a fraction of a ``gemm_size``-square float32 GEMM's, timed once per
    backend after every round.

    ``options``: field options for every field (e.g. {"width": 128}, as a suite's); ``out``: write
    the JSON record there (see the module docstring); ``compile``: torch fields' steps as
    a long training run takes them ("auto": zoo.train.COMPILE_AUTO), all compiled ("on"), all
    eager ("off"), or each both ways side by side ("both"). Returns one dict per (field,
    backend, compiled): field, backend, compiled (torch.compile'd step, JAX: jitted, so None),
    backbone, options, ms_per_step (median block), iqr_ms, ratio_to_free (to free on the same
    backbone, backend and compiled: the median of the per-round ratios, ``paired_ratio``; None
    without a free field on that backbone and backend) and ratio_iqr, ms_per_round; on torch
    rows of fields timed in both backends, torch_over_jax (paired the same way) and
    torch_over_jax_iqr; flops (one step, counted as zoo.flops says: matrix products in torch,
    every op in XLA), dot_flops (matrix products only; JAX: those of the jaxpr, before XLA's
    optimisations), flop_ratio_to_free,
    dot_flop_ratio_to_free, time_over_floor (ratio_to_free / flop_ratio_to_free), gflops
    (flops / median step time), gemm_fraction (gflops / the GEMM's rate on that backend).
    """

    if compile not in COMPILE_MODES:
        raise ZooError(f"compile must be one of {', '.join(COMPILE_MODES)}, got {compile!r}")
    console, out_path = report_setup(show, out, "train-mlp.json", 140)  # 140: twelve columns
    modes = ["off", "on"] if compile == "both" else [compile]
    cases = []
    for info in entries(pattern):
        if not (info.trainable and info.backend in backends):
            continue
        for mode in modes if info.backend == "torch" else ["auto"]:
            if mode == "auto":  # as a run of a suite's length takes its steps
                mode = "on" if info.backbone in COMPILE_AUTO else "off"
            cfg = TrainConfig(arch=info.name, backend=info.backend, data=data, batch=batch,
                              options=dict(options or {}), compile=mode)
            trainer, ds, rng = make_trainer(cfg)  # validates (and fills in) the options
            batches = [draw_batch(rng, ds, cfg) for _ in range(steps)]
            # torch: takes a step, eager (a compiled trainer's first step is)
            counted = fl.step_flops(trainer, batches[0], info.backend)
            products = fl.products(trainer, batches[0], info.backend)  # torch: takes a step
            with console.status(f"compiling {info.name}" if cfg.compiled() else "warming up"):
                _sync(trainer.step(batches[0]))  # compile / warm up
            compiled = cfg.compiled() if info.backend == "torch" else None
            if compiled and trainer.compiled is None:
                console.print(f"{info.name}: torch.compile failed, timed eager")
                compiled = False
            cases.append({"name": info.name, "backend": info.backend, "compiled": compiled,
                          "backbone": info.backbone, "options": dict(cfg.options),
                          "trainer": trainer, "batches": batches, "times": [],
                          "counted": counted, "products": products, "product_times": []})
    if not cases:
        raise ZooError(f"no trainable field matches {pattern!r} on {', '.join(backends)} "
                       "(`zoo list` names them)")
    gemms = {b: fl.gemm(b, gemm_size) for b in dict.fromkeys(c["backend"] for c in cases)}
    gemm_times: dict[str, list[float]] = {b: [] for b in gemms}
    with console.status("timing") as status:
        for r in range(rounds):
            status.update(f"round {r + 1}/{rounds}")
            for c in cases:
                t0 = time.perf_counter()
                for b in c["batches"]:
                    loss = c["trainer"].step(b)
                _sync(loss)
                c["times"].append((time.perf_counter() - t0) / steps)
                c["product_times"].append(fl.time_once(c["products"][0]))
            for b, (run, _) in gemms.items():
                gemm_times[b].append(fl.time_once(run))
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
                               f"{steps} steps"))
    if out_path is not None:
        _write_record(out_path, "zoo bench train", {
            "pattern": pattern, "backends": list(backends), "batch": batch, "data": data,
            "steps": steps, "rounds": rounds, "options": dict(options or {}), "device": "cpu",
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
    q1, med, q3 = _quartiles(c["times"])
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
            # the step's own matrix products replayed alone (zoo.flops.products): their time,
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


def _write_record(out_path: Path, kind: str, settings: dict, results: list[dict],
                  extra: dict | None = None) -> None:
    """The JSON record: kind, date, settings, machine, versions, results, then ``extra``'s keys."""
    from zoo import checkpoint

    machine, versions = machine_info()
    record = {"kind": kind,
              "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
              "settings": settings, "machine": machine, "versions": versions,
              "results": results, **(extra or {})}
    out_path.parent.mkdir(parents=True, exist_ok=True)
    checkpoint.write_json(out_path, record)


def bench_memory(pattern: str, backends: list[str], *, batch: int, data: str, steps: int = 3,
                 options: dict | None = None, out: str | Path | None = None,
                 show: bool = True) -> list[dict]:
    """Peak resident memory of training each trainable field matching ``pattern``: one fresh
    process per field (``peak_rss``), so the numbers do not depend on what ran before. Prints a
    table with each field's ratio to the free field on the same backbone and backend; ``out``
    writes a JSON record like ``bench_train``'s. Returns one dict per (field, backend): field,
    backend, backbone, options, built_mib, peak_mib, ratio_to_free."""
    from rich.table import Table

    from zoo.registry import resolve_options

    console, out_path = report_setup(show, out, "memory.json")
    infos = [i for i in entries(pattern) if i.trainable and i.backend in backends]
    if not infos:
        raise ZooError(f"no trainable field matches {pattern!r} on {', '.join(backends)} "
                       "(`zoo list` names them)")
    results = []
    with console.status("peak RSS") as status:
        for info in infos:
            status.update(f"peak RSS: {info.name} ({info.backend})")
            opts = resolve_options(info.options or {}, dict(options or {}))
            m = peak_rss(info.name, info.backend, data=data, batch=batch, options=opts,
                         steps=steps)
            results.append({"field": info.name, "backend": info.backend,
                            "backbone": info.backbone, "options": opts, **m})
    ref = {(r["backbone"], r["backend"]): r["peak_mib"] for r in results
           if r["field"] == f"free-{r['backbone']}"}
    table = Table("field", "backend", "after build MiB", "peak MiB", "peak / free",
                  title=f"peak resident memory of a process training {steps} steps, batch "
                  f"{batch}, {data}")
    for r in results:
        key = (r["backbone"], r["backend"])
        r["ratio_to_free"] = r["peak_mib"] / ref[key] if key in ref else None
        table.add_row(r["field"], r["backend"], f"{r['built_mib']:.0f}", f"{r['peak_mib']:.0f}",
                      "–" if r["ratio_to_free"] is None else f"{r['ratio_to_free']:.2f}")
    console.print(table)
    if out_path is not None:
        _write_record(out_path, "zoo bench memory", {
            "pattern": pattern, "backends": list(backends), "batch": batch, "data": data,
            "steps": steps, "options": dict(options or {}), "device": "cpu"}, results)
        console.print(f"wrote {out_path}")
    return results


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
        _write_record(out_path, "zoo bench sample", settings, res["cases"], {
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

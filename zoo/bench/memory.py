"""`zoo bench memory`: peak resident memory of a fresh process that trains a few steps."""

from __future__ import annotations

import os
from pathlib import Path

from zoo.bench.common import (
    hwm_mib,
    report_setup,
    sync,
    write_record,
)
from zoo.registry import ZooError, entries
from zoo.train import TrainConfig, draw_batch, make_trainer


def peak_rss_child(arch: str, backend: str, data: str, batch: int, options: dict,
                    steps: int) -> None:
    """(In a fresh process) build the trainer, take ``steps`` training steps, print JSON with the
    process's peak resident set size before the first step and after the last (MiB)."""
    import json

    cfg = TrainConfig(arch=arch, backend=backend, data=data, batch=batch, options=options)
    trainer, ds, rng = make_trainer(cfg)
    before = hwm_mib()
    for _ in range(steps):
        loss = trainer.step(draw_batch(rng, ds, cfg))
    sync(loss)
    print(json.dumps({"built_mib": before, "peak_mib": hwm_mib()}))


def peak_rss(arch: str, backend: str, *, data: str, batch: int, options: dict,
             steps: int = 3) -> dict:
    """Peak RSS (MiB) of a fresh process that builds ``arch`` and trains ``steps`` steps: the
    memory a training run needs (the libraries, the field, one step's activations and the
    gradients' graph), measured in a child process so that nothing of this one counts.
    {"built_mib": before the first step, "peak_mib": after the last}."""
    import json
    import subprocess
    import sys

    code = ("import json, sys; from zoo.bench.memory import peak_rss_child as c; "
            "c(*json.loads(sys.argv[1]))")
    args = json.dumps([arch, backend, data, batch, options, steps])
    r = subprocess.run([sys.executable, "-c", code, args], capture_output=True, text=True,
                       env={**os.environ, "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS",
                                                                          "cpu")})
    if r.returncode != 0:
        raise ZooError(f"peak RSS of {arch} ({backend}): the child failed: "
                       f"{(r.stderr.strip().splitlines() or ['?'])[-1]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


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
        write_record(out_path, "zoo bench memory", {
            "pattern": pattern, "backends": list(backends), "batch": batch, "data": data,
            "steps": steps, "options": dict(options or {}), "device": "cpu"}, results)
        console.print(f"wrote {out_path}")
    return results

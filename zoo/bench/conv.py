"""``zoo bench conv``: where each backend's convolutions spend a training step's time.

One 3x3 convolution (stride 1, zero padding 1, NCHW, float32, C -> C channels: the UNet's) at
several batch x channel sizes, split into the three products a training step runs through it:
the forward, the input gradient (the backward pass into the activations) and the weight gradient.
Each is timed alone, in blocks interleaved round-robin over sizes, backends and products
(medians over rounds), with its FLOPs (2 B H W C^2 9, the same for all three) and GFLOP/s.

torch runs what autograd runs: ``F.conv2d`` and ``aten.convolution_backward`` (through
``torch.nn.grad.conv2d_input`` / ``conv2d_weight``); JAX the jitted VJPs of
``lax.conv_general_dilated`` with respect to each argument (XLA drops the unused forward). Before
timing, the two backends' results are compared on the same numbers, so both time the same
computation.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from zoo.bench.common import paired_ratio, quartiles, report_setup, write_record
from zoo.registry import ZooError

PRODUCTS = ("forward", "grad_input", "grad_weight")
AGREE_RTOL = 1e-4  # float32 results of the two backends, relative to the largest entry


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """"64x16,128x32" -> [(64, 16), (128, 32)] (batch x channels); ZooError on anything else."""
    sizes = []
    for part in (p.strip() for p in text.split(",")):
        b, _, c = part.lower().partition("x")
        if not (b.isdigit() and c.isdigit() and int(b) > 0 and int(c) > 0):
            raise ZooError(f"--sizes takes BATCHxCHANNELS pairs like 64x16,128x32; got {part!r}")
        sizes.append((int(b), int(c)))
    return list(dict.fromkeys(sizes))


def _inputs(batch: int, ch: int, side: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    shape = (batch, ch, side, side)
    return {"x": rng.normal(size=shape).astype(np.float32),
            "w": (rng.normal(size=(ch, ch, 3, 3)) / np.sqrt(9 * ch)).astype(np.float32),
            "g": rng.normal(size=shape).astype(np.float32)}


def _torch_products(a: dict[str, np.ndarray]) -> dict:
    import torch
    from torch.nn import functional as F
    from torch.nn.grad import conv2d_input, conv2d_weight

    x, w, g = (torch.from_numpy(a[k]) for k in ("x", "w", "g"))
    return {"forward": lambda: F.conv2d(x, w, padding=1),
            "grad_input": lambda: conv2d_input(x.shape, w, g, padding=1),
            "grad_weight": lambda: conv2d_weight(x, w.shape, g, padding=1)}


def _jax_products(a: dict[str, np.ndarray]) -> dict:
    import jax
    import jax.numpy as jnp

    x, w, g = (jnp.asarray(a[k]) for k in ("x", "w", "g"))

    def conv(x, w):
        return jax.lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)),
                                            dimension_numbers=("NCHW", "OIHW", "NCHW"))

    fwd = jax.jit(conv)
    gx = jax.jit(lambda w, g: jax.vjp(lambda x_: conv(x_, w), x)[1](g)[0])
    gw = jax.jit(lambda x, g: jax.vjp(lambda w_: conv(x, w_), w)[1](g)[0])
    return {"forward": lambda: fwd(x, w).block_until_ready(),
            "grad_input": lambda: gx(w, g).block_until_ready(),
            "grad_weight": lambda: gw(x, g).block_until_ready()}


def _check_agreement(size: tuple[int, int], products: dict[str, dict]) -> None:
    """The backends' three products agree on the same numbers (float32), else ZooError."""
    if len(products) < 2:
        return
    (na, pa), (nb, pb) = list(products.items())[:2]
    for op in PRODUCTS:
        ra, rb = np.asarray(pa[op]()), np.asarray(pb[op]())
        err = float(np.max(np.abs(ra - rb)) / max(np.max(np.abs(ra)), 1e-30))
        if ra.shape != rb.shape or not err <= AGREE_RTOL:
            raise ZooError(f"bench conv {size[0]}x{size[1]}: {op} of {na} and {nb} disagree "
                           f"(relative error {err:.1e}); the timings would not compare")


def bench_conv(sizes: list[tuple[int, int]], backends: list[str], *, side: int = 8,
               steps: int = 10, rounds: int = 7, out: str | Path | None = None,
               show: bool = True) -> list[dict]:
    """Time the forward, input gradient and weight gradient of one 3x3 C -> C convolution at
    every (batch, channels) of ``sizes`` on ``side`` x ``side`` images, ``steps`` calls per
    block, ``rounds`` interleaved rounds. Prints a table; ``out`` writes a JSON record.

    Returns one dict per (size, backend, product): batch, channels, side, backend, product,
    ms (median block / steps), iqr_ms, ms_per_round, flops, gflops; and per (size, product)
    with both torch and JAX, "torch_over_jax" and "torch_over_jax_iqr" on the torch row (median
    and quartiles of the per-round time ratios, ``zoo.bench.common.paired_ratio``).
    """
    console, out_path = report_setup(show, out, "conv.json", 100)
    for name, v in (("side", side), ("steps", steps), ("rounds", rounds)):
        if not isinstance(v, int) or v <= 0:
            raise ZooError(f"--{name} must be a positive integer, got {v!r}")
    if not sizes:
        raise ZooError("--sizes needs at least one BATCHxCHANNELS pair")
    makers = {"torch": _torch_products, "jax": _jax_products}
    unknown = [b for b in backends if b not in makers]
    if unknown or not backends:
        raise ZooError(f"unknown backend(s) {unknown}; choose from torch, jax")

    cases = {}
    for b, c in sizes:
        a = _inputs(b, c, side)
        products = {bk: makers[bk](a) for bk in backends}
        _check_agreement((b, c), products)
        for bk, ops in products.items():
            for op, fn in ops.items():
                fn()  # compile / warm up
                cases[(b, c, bk, op)] = fn
    times = {k: [] for k in cases}
    for _ in range(rounds):
        for key, fn in cases.items():
            t0 = time.perf_counter()
            for _ in range(steps):
                fn()
            times[key].append((time.perf_counter() - t0) / steps * 1e3)

    results = []
    for (b, c, bk, op), ts in times.items():
        q1, med, q3 = quartiles(ts)
        flops = 2 * b * side * side * c * c * 9
        r = {"batch": b, "channels": c, "side": side, "backend": bk, "product": op, "ms": med,
             "iqr_ms": q3 - q1, "ms_per_round": ts, "flops": flops, "gflops": flops / med / 1e6}
        if bk == "torch" and (b, c, "jax", op) in times:  # torch over JAX, paired per round
            q1, ratio, q3 = paired_ratio(ts, times[(b, c, "jax", op)])
            r["torch_over_jax"], r["torch_over_jax_iqr"] = ratio, [q1, q3]
        results.append(r)

    _print_table(console, results, backends, side, steps, rounds)
    if out_path is not None:
        settings = {"sizes": [list(s) for s in sizes], "side": side, "backends": backends,
                    "steps": steps, "rounds": rounds, "interleaved": True,
                    "conv": "3x3, stride 1, padding 1, NCHW, float32, C -> C"}
        write_record(out_path, "conv", settings, results)
        console.print(f"wrote {out_path}")
    return results


def _print_table(console, results, backends, side, steps, rounds) -> None:
    from rich.table import Table

    table = Table(title=f"3x3 convolution, C -> C, {side}x{side} images, float32: median ms of "
                        f"{rounds} interleaved rounds of {steps} calls")
    table.add_column("batch x C")
    table.add_column("product")
    for bk in backends:
        table.add_column(f"{bk} ms", justify="right")
        table.add_column(f"{bk} GFLOP/s", justify="right")
    both = {"torch", "jax"} <= set(backends)
    if both:
        table.add_column("torch / JAX\n[IQR]", justify="right")
    by = {(r["batch"], r["channels"], r["backend"], r["product"]): r for r in results}
    for b, c in dict.fromkeys((r["batch"], r["channels"]) for r in results):
        for op in PRODUCTS:
            row = [f"{b}x{c}", op]
            for bk in backends:
                r = by[(b, c, bk, op)]
                row += [f"{r['ms']:.2f}", f"{r['gflops']:.1f}"]
            if both:
                r = by[(b, c, "torch", op)]
                q1, q3 = r["torch_over_jax_iqr"]
                row.append(f"{r['torch_over_jax']:.2f} [{q1:.2f}-{q3:.2f}]")
            table.add_row(*row)
        total = {bk: sum(by[(b, c, bk, op)]["ms"] for op in PRODUCTS)
                 for bk in backends}
        row = [f"{b}x{c}", "all three"]
        for bk in backends:
            row += [f"{total[bk]:.2f}", ""]
        if both:
            row.append(f"{total['torch'] / total['jax']:.2f}")
        table.add_row(*row, end_section=True)
    table.caption = ("forward: F.conv2d / lax.conv_general_dilated; grad_input and grad_weight: "
                     "the backward products autograd and jax.vjp run (torch: "
                     "aten.convolution_backward). FLOPs 2 B H W C^2 9 each. Results of the two "
                     "backends checked equal before timing. torch / JAX: median and quartiles of "
                     "the per-round ratios; 'all three': ratio of the summed medians.")
    console.print(table)

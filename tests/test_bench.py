"""FLOPs of a training step (zoo.bench.flops) against hand counts from the layer sizes, and the FLOP
and GEMM columns of `zoo bench train`'s record; `zoo bench check` (its row-loop Jacobian against
the vectorised one) and `zoo bench scaling` at tiny sizes."""

from __future__ import annotations

import json
import math
import statistics

import jax
import numpy as np
import pytest
import torch
from conftest import B, build, rel, run

from zoo.bench.flops import jaxpr_product_flops, products, step_flops
from zoo.registry import ZooError
from zoo.train import TrainConfig, draw_batch, make_trainer

OPTS = {"width": 16, "depth": 2}
BATCH = 8


def _trainer(arch: str, backend: str, batch: int = BATCH, options: dict = OPTS):
    cfg = TrainConfig(arch=arch, backend=backend, batch=batch, options=dict(options))
    trainer, ds, rng = make_trainer(cfg)
    return trainer, draw_batch(rng, ds, cfg)


def _linear_sizes(trainer) -> list[int]:
    """in x out of every Linear of the MLP backbone, input layer first, output layer last
    (torch's and Equinox's Linear both hold weight as [out, in])."""
    net = trainer.field.net
    return [math.prod(m.weight.shape) for m in (*net.layers, net.out)]


def hand_count(arch: str, sizes: list[int], batch: int, *, leaf_input_grad: bool) -> int:
    """Matrix-product FLOPs of one training step of an MLP field, 2 per multiply-add.

    Unit: one product of a layer at the batch, 2 B in out. free: forward 1 per layer, backward
    2 per layer (weight and input gradients) but the input layer's input gradient is not
    needed (x does not require grad): 3 L - 1 (first layer).
    energy / energysq (s = -grad_x E, then the loss differentiated in the weights): forward 1
    and grad_x pass 1 per layer (g_in = g_out W, the input layer too: that is grad_x); the
    weight gradient then goes back through both: through g_in = g_out W, 1 for W and 1 for
    g_out; through the forward product (its output reaches the loss via silu'), 1 for W and 1
    for its input: 6 per hidden layer. The output layer of energy (a scalar E) gets 3: forward,
    grad_x pass, and the weight gradient of that pass; its forward output and the constant
    cotangent dE = 1/sigma need no gradient. energysq's output f enters E as a value, so its
    output layer counts 6 like a hidden one. ``leaf_input_grad``: a loss.backward() would also
    fill the gradient of grad_of_scalar's leaf x (the input layer's forward input gradient, 1
    unit); both Trainers differentiate in the weights only (torch: torch.autograd.grad over the
    parameters, since 09fa679) and skip it.
    """
    u = 2 * batch
    if arch == "free-mlp":
        return u * (3 * sum(sizes) - sizes[0])
    out = 3 if arch == "energy-mlp" else 6
    units = 6 * sum(sizes[:-1]) + out * sizes[-1] - (0 if leaf_input_grad else sizes[0])
    return u * units


@pytest.mark.parametrize("arch", ["free-mlp", "energy-mlp", "energysq-mlp"])
def test_torch_flops_equal_the_hand_count(arch):
    """FlopCounterMode around one step sees the forward, backward and double backward products
    exactly (free: 3 per layer but the input layer's input gradient; energy heads: 6 per layer)."""
    trainer, batch = _trainer(arch, "torch")
    sizes = _linear_sizes(trainer)
    n = step_flops(trainer, batch, "torch")
    assert n["flops"] == n["dot_flops"] == hand_count(arch, sizes, BATCH, leaf_input_grad=False)
    if arch == "free-mlp":  # forward: addmm (bias); backward: mm
        assert n["by_op"] == {"aten.addmm": 2 * BATCH * sum(sizes),
                              "aten.mm": 2 * BATCH * (2 * sum(sizes) - sizes[0])}
    else:  # twice-differentiated: the double backward is seen (about twice free's count)
        free = hand_count("free-mlp", sizes, BATCH, leaf_input_grad=False)
        assert 1.8 < n["flops"] / free < 2.6


def test_torch_counter_without_module_tracking_counts_the_same():
    """The counter runs without FlopCounterMode's ModuleTracker (it breaks autograd.grad on a
    leaf, pytorch#131753); on free-mlp, where the stock counter works, the counts agree."""
    from torch.utils.flop_counter import FlopCounterMode

    trainer, batch = _trainer("free-mlp", "torch")
    stock = FlopCounterMode(display=False)
    with stock:
        trainer.step(batch)
    assert step_flops(trainer, batch, "torch")["flops"] == stock.get_total_flops() > 0


@pytest.mark.parametrize("arch", ["free-mlp", "energy-mlp"])
def test_jax_flops_against_the_hand_count(arch):
    """The jaxpr's matrix products equal the hand count exactly (JAX takes no gradient for x).
    XLA's cost analysis counts every op of the optimised step: the products plus the
    elementwise work (activations, Adam, EMA, gradient norm: 10-11 % of the products at width
    64 and batch 64), less what XLA rewrites (energy's scalar output layer has matrix-vector
    products, which XLA may turn into multiply + reduce): within -5 % and +15 % of the hand
    count."""
    opts = {"width": 64, "depth": 2}
    trainer, batch = _trainer(arch, "jax", batch=64, options=opts)
    hand = hand_count(arch, _linear_sizes(trainer), 64, leaf_input_grad=False)
    n = step_flops(trainer, batch, "jax")
    assert n["dot_flops"] == hand
    assert 0.95 * hand <= n["flops"] <= 1.15 * hand, n["flops"] / hand


@pytest.mark.parametrize("backend", ["torch", "jax"])
@pytest.mark.parametrize("arch", ["free-mlp", "energy-mlp"])
def test_replayed_products_are_the_steps_own(arch, backend):
    """`zoo bench train`'s "products" columns time the step's matrix products replayed alone:
    the replay runs exactly the products of one step (its FLOPs are the hand count) on inputs of
    their shapes, and leaves the trainer's weights alone (JAX: the step is traced, not taken;
    torch: the recording steps are taken before the weights are read)."""
    opts = {"width": 64, "depth": 2}
    trainer, batch = _trainer(arch, backend, batch=64, options=opts)
    hand = hand_count(arch, _linear_sizes(trainer), 64, leaf_input_grad=False)
    run_products, flops = products(trainer, batch, backend)
    assert flops == hand
    before = trainer.params()
    run_products()
    after = trainer.params()
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_product_counter_agrees_with_xla_on_pure_products():
    """On functions that are nothing but a grouped convolution (no padding) or a batched matrix
    product, the jaxpr count and XLA's cost analysis are the same number, the hand count
    2 x output elements x multiply-adds per output; a while loop has no static count, a scan
    counts its body once per step."""
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    f32 = lambda *shape: jnp.ones(shape, dtype=jnp.float32)

    def conv(x, k):  # 4 input channels in 2 groups, 6 outputs, 3 x 3 taps, 9 x 9 -> 7 x 7
        return jax.lax.conv_general_dilated(x, k, (1, 1), "VALID", feature_group_count=2)

    def bmm(a, b):
        return jnp.einsum("bij,bjk->bik", a, b)

    cases = [(conv, (f32(3, 4, 9, 9), f32(6, 2, 3, 3)), 2 * (3 * 6 * 7 * 7) * (2 * 9)),
             (bmm, (f32(5, 7, 11), f32(5, 11, 4)), 2 * (5 * 7 * 4) * 11)]
    for f, args, hand in cases:
        traced = jax.jit(f).trace(*args)
        assert jaxpr_product_flops(traced.jaxpr.jaxpr) == hand
        assert traced.lower().compile().cost_analysis()["flops"] == hand
    scan = lambda x: jax.lax.scan(lambda y, _: (y @ y, None), x, None, length=5)[0]
    assert jaxpr_product_flops(jax.make_jaxpr(scan)(f32(4, 4)).jaxpr) == 5 * 2 * 4**3
    loop = lambda x: jax.lax.while_loop(lambda y: y.sum() < 1e9, lambda y: y @ y, x)
    with pytest.raises(ValueError, match="while loop"):
        jaxpr_product_flops(jax.make_jaxpr(loop)(f32(4, 4)).jaxpr)


def test_bench_record_has_flops_and_gemm_rates(tmp_path, capsys):
    """`zoo bench train --out` adds per result the step's FLOPs, their ratio to free's, the
    achieved GFLOP/s and its fraction of the GEMM's rate; the record names the GEMM and its
    rate per backend and how FLOPs were counted; the settings keep their keys."""
    rec = tmp_path / "train.json"
    code, out, err = run(["bench", "train", "--pattern", "*[ey]-mlp", "--batch", "16",
                          "--steps", "2", "--rounds", "2", "--opt", "width=8", "--opt",
                          "depth=1", "--gemm-size", "128", "--compile", "off", "--out", str(rec)],
                         capsys)
    assert code == 0, err
    assert "floor" in out and "GEMM 128x128 float32" in out
    r = json.loads(rec.read_text())
    assert set(r["settings"]) == {"pattern", "backends", "batch", "data", "steps", "rounds",
                                  "options", "device", "compile", "interleaved"}
    assert r["gemm"]["n"] == 128 and set(r["gemm"]["gflops"]) == {"torch", "jax"}
    assert all(v > 0 and math.isfinite(v) for v in r["gemm"]["gflops"].values())
    assert set(r["flops_counted"]) == {"torch", "jax"}
    by = {(x["field"], x["backend"]): x for x in r["results"]}
    assert set(by) == {(f, b) for f in ("free-mlp", "energy-mlp") for b in ("torch", "jax")}
    for x in by.values():
        for k in ("ms_per_step", "iqr_ms", "ratio_to_free", "options", "flops",
                  "flop_ratio_to_free", "gflops", "gemm_fraction", "time_over_floor",
                  "products_ms", "products_share", "products_gemm_fraction"):
            assert k in x, k
        for k in ("flops", "flop_ratio_to_free", "gflops", "gemm_fraction", "time_over_floor",
                  "products_ms", "products_share", "products_gemm_fraction"):
            assert math.isfinite(x[k]) and x[k] > 0, (k, x[k])
        assert x["gflops"] == pytest.approx(x["flops"] / x["ms_per_step"] / 1e6)
        assert x["gemm_fraction"] == pytest.approx(x["gflops"] / r["gemm"]["gflops"][x["backend"]])
    for b in ("torch", "jax"):
        assert by[("free-mlp", b)]["flop_ratio_to_free"] == 1.0
        energy = by[("energy-mlp", b)]
        assert 1.5 < energy["flop_ratio_to_free"] < 3  # the double backward is counted
        assert energy["time_over_floor"] == pytest.approx(energy["ratio_to_free"]
                                                          / energy["flop_ratio_to_free"])
        # ratios are paired per round: the median of the rounds' ratios, with its quartiles
        free = by[("free-mlp", b)]
        per_round = [e / f for e, f in zip(energy["ms_per_round"], free["ms_per_round"])]
        assert energy["ratio_to_free"] == pytest.approx(statistics.median(per_round))
        lo, hi = energy["ratio_iqr"]
        assert lo <= energy["ratio_to_free"] <= hi
    for f in ("free-mlp", "energy-mlp"):
        t, j = by[(f, "torch")], by[(f, "jax")]
        per_round = [a / c for a, c in zip(t["ms_per_round"], j["ms_per_round"])]
        assert t["torch_over_jax"] == pytest.approx(statistics.median(per_round))
        assert "torch_over_jax" not in j


def test_bench_compile_both_times_torch_twice_side_by_side(tmp_path, capsys):
    """--compile both: each torch field eager and compiled, each with its own ratio to free
    (the compiled free-mlp's); the leaderboard refuses such a record (two rows per field)."""
    from zoo.leaderboard.cost import read_bench

    rec = tmp_path / "train.json"
    code, out, err = run(["bench", "train", "--pattern", "free-mlp", "--backends", "torch",
                          "--batch", "16", "--steps", "2", "--rounds", "1", "--opt", "width=8",
                          "--opt", "depth=1", "--gemm-size", "64", "--compile", "both", "--out",
                          str(rec)], capsys)
    assert code == 0, err
    assert "torch compiled" in out
    rows = json.loads(rec.read_text())["results"]
    assert [(x["field"], x["compiled"]) for x in rows] == [("free-mlp", False), ("free-mlp", True)]
    assert all(x["ratio_to_free"] == 1.0 for x in rows)
    with pytest.raises(ZooError, match="twice: a `--compile both` record"):
        read_bench(rec, tmp_path)


# ----------------------------------------------------------------------------- bench check


@pytest.fixture
def one_torch_thread():
    """torch on one thread for these tiny timings: on a loaded machine its two-thread pool
    stalls small ops by 10-100x (a 8-point step takes seconds), which tells nothing here."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("backend", ["torch", "jax"])
@pytest.mark.parametrize("name", ["free-mlp", "helmholtz-mlp"])
def test_loop_jacobian_equals_the_vectorised_one(name, backend, one_torch_thread):
    """The baseline of `bench check` (one VJP per output row, in a Python loop) and the
    vectorised Jacobian (vmapped jacrev; torch: one batched reverse pass) agree to 1e-10 in
    float64, and with the backend's Jacobian (what zoo check runs), on a 5-D field."""
    from zoo.bench.check import loop_jacobian, vectorised_jacobian

    d, n = 5, 7
    f = build(name, backend, dim=d, dtype="float64")
    rng = np.random.default_rng(3)
    x, t = rng.standard_normal((n, d)), rng.uniform(0.05, 1.0, n)
    loop = loop_jacobian(f, backend, x, t)
    vec = vectorised_jacobian(f, backend, x, t)
    assert loop.shape == vec.shape == (n, d, d) and loop.dtype == vec.dtype == np.float64
    assert rel(loop, vec) < 1e-10
    assert rel(loop, B(backend).jacobian(f, x, t)) < 1e-10
    assert np.abs(loop - np.swapaxes(loop, 1, 2)).max() > 1e-6  # neither field is conservative


def _finite_positive(v) -> bool:
    return isinstance(v, float) and math.isfinite(v) and v > 0


def test_bench_check_record(tmp_path, capsys, one_torch_thread):
    """`zoo bench check --out` at tiny sizes: the table, and a record with bench train's layout
    whose rows carry the three medians, the speed-up and the Hutchinson error."""
    rec = tmp_path / "check.json"
    code, out, err = run(["bench", "check", "--pattern", "free-mlp,helmholtz-*,*-unet", "--data",
                          "gmm-d4", "--n", "8", "--probes", "4", "--rounds", "2", "--opt",
                          "width=8", "--opt", "depth=1", "--out", str(rec)], capsys)
    assert code == 0, err
    assert "loop /" in out and "Hutch" in out
    r = json.loads(rec.read_text())
    assert r["kind"] == "zoo bench check"
    assert set(r) >= {"date", "settings", "machine", "versions", "results", "how", "target"}
    assert set(r["settings"]) == {"pattern", "backends", "data", "d", "n", "t", "probes",
                                  "rounds", "dtype", "options", "seed", "device", "interleaved"}
    by = {(x["field"], x["backend"]): x for x in r["results"]}
    assert set(by) == {(f, b) for f in ("free-mlp", "helmholtz-mlp") for b in ("torch", "jax")}
    for x in by.values():
        for k in ("ms_vectorised", "ms_loop", "ms_hutchinson", "iqr_vectorised", "iqr_loop",
                  "iqr_hutchinson", "speedup_loop_over_vectorised", "nasym_exact",
                  "nasym_hutchinson", "nasym_se", "hutchinson_abs_error",
                  "hutchinson_rel_error", "hutchinson_err_over_se", "jacobian_max_abs_diff",
                  "code_uses", "probes", "d", "ms_per_round"):
            assert k in x, k
        for k in ("ms_vectorised", "ms_loop", "ms_hutchinson", "speedup_loop_over_vectorised",
                  "nasym_exact", "nasym_se", "hutchinson_rel_error"):
            assert _finite_positive(x[k]), (k, x[k])
        assert x["speedup_loop_over_vectorised"] == pytest.approx(x["ms_loop"]
                                                                  / x["ms_vectorised"])
        assert all(len(v) == 2 for v in x["ms_per_round"].values())
        assert x["d"] == 4 and x["probes"] == 4
        assert x["nasym_exact"] == pytest.approx(x["nasym_loop"], rel=1e-4)
        assert x["jacobian_max_abs_diff"] < 1e-3  # float32
    assert by[("free-mlp", "jax")]["code_uses"] == "vectorised"
    assert by[("free-mlp", "torch")]["code_uses"] == "loop"


# ----------------------------------------------------------------------------- bench sample


def test_bench_sample_record(tmp_path, capsys, one_torch_thread):
    """`zoo bench sample --out` at tiny sizes: a row per field, backend and solver with its NFE,
    and for the trainable JAX field the DLPack bridge against diffrax at the same NFE (the
    number of Euler steps) as per-round ratio quartiles, with issue 15's target."""
    rec = tmp_path / "sample.json"
    code, out, err = run(["bench", "sample", "--pattern", "free-mlp", "--n", "16", "--steps",
                          "3", "--sde-steps", "3", "--rounds", "2", "--out", str(rec)], capsys)
    assert code == 0, err
    assert "DLPack bridge overhead" in out
    r = json.loads(rec.read_text())
    assert r["kind"] == "zoo bench sample"
    assert set(r) >= {"date", "settings", "machine", "versions", "results", "how", "target",
                      "bridge_overhead"}
    assert r["target"] == {"bridge_over_diffrax": 1.2}
    rows = {(x["field"], x["solver"]): x for x in r["results"]}
    assert set(rows) == {(f"free-mlp ({b})", s) for b in ("torch", "jax")
                         for s in ("ode dopri5", "ode rk4 x3", "sde euler x3")} | {
        ("free-mlp (jax)", "bridge: ode euler x3"), ("free-mlp (jax)", "diffrax: ode euler x3")}
    assert rows[("free-mlp (jax)", "ode rk4 x3")]["nfe"] == 12  # 4 stages x 3 steps
    assert all(_finite_positive(x["wall_s"]) for x in rows.values())
    b = r["bridge_overhead"]["free-mlp (jax)"]
    assert b["nfe"] == 3 == rows[("free-mlp (jax)", "diffrax: ode euler x3")]["nfe"]
    assert b["ratio_iqr"][0] <= b["ratio"] <= b["ratio_iqr"][1] and _finite_positive(b["ratio"])


# ----------------------------------------------------------------------------- bench scaling


def test_bench_scaling_record_and_plot(tmp_path, capsys, one_torch_thread):
    """`zoo bench scaling --out` at tiny sizes: both tables, the record (a row per sweep, field,
    backend and size, with ms/step, GFLOP/s, ms per 1k examples and the growth against the
    previous size) and the PNG beside it."""
    rec = tmp_path / "bench" / "scaling.json"
    code, out, err = run(["bench", "scaling", "--fields", "free-mlp", "--batches", "4,8",
                          "--dim", "2", "--dims", "2,3", "--batch", "4", "--steps", "2",
                          "--rounds", "2", "--opt", "width=8", "--opt", "depth=1", "--out",
                          str(rec)], capsys)
    assert code == 0, err
    assert "against the batch" in out and "against d" in out and "linear" in out
    png = rec.with_suffix(".png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    r = json.loads(rec.read_text())
    assert r["kind"] == "zoo bench scaling" and r["plot"] == "scaling.png"
    assert set(r["settings"]) == {"fields", "backends", "batches", "dims", "dim", "batch",
                                  "data", "steps", "rounds", "options", "device", "interleaved"}
    assert {"superlinear", "superlinear_threshold", "flops_counted"} <= set(r)
    rows = {(x["sweep"], x["backend"], x["batch"], x["d"]): x for x in r["results"]}
    assert set(rows) == {(s, b, *p) for b in ("torch", "jax")
                         for s, pts in (("batch", [(4, 2), (8, 2)]), ("d", [(4, 2), (4, 3)]))
                         for p in pts}
    for x in rows.values():
        for k in ("ms_per_step", "gflops", "ms_per_1k_examples"):
            assert _finite_positive(x[k]), (k, x[k])
        assert x["flops"] > 0 and x["data"] == f"gmm-d{x['d']}"
        assert x["ms_per_1k_examples"] == pytest.approx(x["ms_per_step"] / x["batch"] * 1000)
        assert x["gflops"] == pytest.approx(x["flops"] / x["ms_per_step"] / 1e6)
        first = (x["batch"] if x["sweep"] == "batch" else x["d"]) in (4, 2)
        assert (x["time_ratio"] is None) == first
    for b in ("torch", "jax"):  # the point in both sweeps is measured once
        assert rows[("batch", b, 4, 2)]["ms_per_round"] == rows[("d", b, 4, 2)]["ms_per_round"]
        grow = rows[("batch", b, 8, 2)]
        assert grow["size_ratio"] == 2 and grow["time_ratio"] == pytest.approx(
            grow["ms_per_step"] / rows[("batch", b, 4, 2)]["ms_per_step"])


def test_paired_ratio_cancels_drift_between_rounds():
    """Load that drifts between rounds slows both series alike: a constant per-round ratio comes
    out exactly, with no spread; otherwise the quartiles of the rounds' ratios."""
    from zoo.bench import paired_ratio

    load = [1.0, 3.0, 1.5, 4.0, 2.0]
    assert paired_ratio([2 * v for v in load], load) == (2.0, 2.0, 2.0)
    q1, med, q3 = paired_ratio([2.0, 6.0, 3.0, 8.0, 4.0], [1.0, 2.0, 1.5, 4.0, 2.0])
    assert (q1, med, q3) == (2.0, 2.0, statistics.quantiles([2, 3, 2, 2, 2], n=4)[2]) == (2, 2, 2.5)
    with pytest.raises(ValueError, match="equal"):
        paired_ratio([1.0], [1.0, 2.0])


def test_superlinear_flag():
    """A time ratio above 1.2 x the size ratio between consecutive sizes is flagged."""
    from zoo.bench.scaling import _result, flag_lines

    def case(ms):
        return {"times": [ms / 1e3] * 3, "counted": {"flops": 1e6, "dot_flops": 1e6},
                "data": "gmm-d2", "options": {}}

    a = _result(case(1.0), "batch", "free-mlp", "torch", 64, 2, None)
    ok = _result(case(4.7), "batch", "free-mlp", "torch", 256, 2, a)
    bad = _result(case(4.9), "batch", "free-mlp", "torch", 256, 2, a)
    assert not a["superlinear"] and not ok["superlinear"] and bad["superlinear"]
    assert bad["size_ratio"] == 4 and bad["time_ratio"] == pytest.approx(4.9)
    assert "64 -> 256" in flag_lines([bad])[0] and "no growth" in flag_lines([])[0]


BAD_BENCH = [
    ["bench", "scaling", "--batches", "0"],
    ["bench", "scaling", "--batches", "64,x"],
    ["bench", "scaling", "--dims", ""],
    ["bench", "scaling", "--dims", "2,9999"],
    ["bench", "scaling", "--fields", "nope-mlp", "--batches", "4", "--dims", "2"],
    ["bench", "scaling", "--steps", "0"],
    ["bench", "scaling", "--backends", "mxnet"],
    ["bench", "check", "--data", "nope"],
    ["bench", "check", "--n", "0"],
    ["bench", "check", "--t", "99"],
    ["bench", "check", "--probes", "-1"],
    ["bench", "check", "--dtype", "float16"],
    ["bench", "check", "--opt", "width"],
    ["bench", "conv", "--sizes", "8y8"],
    ["bench", "conv", "--sizes", "0x4"],
    ["bench", "conv", "--backends", "mxnet"],
    ["bench", "sample", "--pattern", "nope-*"],
    ["bench", "sample", "--n", "0"],
    ["bench", "sample", "--backends", "mxnet"],
    ["bench", "train", "--device", "tpu"],
]


# on a machine without a GPU (CI), asking for one is bad input
BAD_BENCH += [["bench", "train", "--device", "cuda", "--pattern", "free-mlp", "--backends", b]
              for b, gpu in (("torch", torch.cuda.is_available()),
                             ("jax", jax.default_backend() == "gpu")) if not gpu]


@pytest.mark.parametrize("args", BAD_BENCH, ids=lambda a: " ".join(a))
def test_bad_bench_input_is_one_line_exit_2(args, capsys, tmp_path):
    out = tmp_path / "rec.json"
    code, _, err = run(args + ["--out", str(out)], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "error" in lines[0], err
    assert "Traceback" not in err and not out.exists()


@pytest.mark.parametrize("kind", ["train", "memory"])
def test_bench_pattern_matching_no_field_is_one_line_exit_2(kind, tmp_path, capsys):
    out = tmp_path / "rec.json"
    code, _, err = run(["bench", kind, "--pattern", "nope-*", "--out", str(out)], capsys)
    assert code == 2 and "no trainable field matches 'nope-*'" in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()


def test_bench_conv_times_the_same_products_in_both_backends(tmp_path, capsys, monkeypatch,
                                                            one_torch_thread):
    """`zoo bench conv`: forward, input and weight gradient of a 3x3 conv per size and backend,
    FLOPs by hand, the torch / JAX ratio, a record; the backends' results are compared first,
    and a backend computing something else is refused before anything is timed or written."""
    from zoo.bench import conv as bc

    out = tmp_path / "conv.json"
    code, stdout, _ = run(["bench", "conv", "--sizes", "4x3,2x5", "--side", "6", "--steps", "1",
                           "--rounds", "2", "--out", str(out)], capsys)
    assert code == 0 and "grad_weight" in stdout and "torch / JAX" in stdout
    rec = json.loads(out.read_text())
    assert rec["kind"] == "conv" and rec["settings"]["side"] == 6
    rows = {(r["batch"], r["channels"], r["backend"], r["product"]): r for r in rec["results"]}
    assert len(rows) == 2 * 2 * 3
    for (b, c, bk, op), r in rows.items():
        assert r["flops"] == 2 * b * 36 * c * c * 9 and r["ms"] > 0
        assert r["gflops"] == pytest.approx(r["flops"] / r["ms"] / 1e6)
        if bk == "torch":
            per_round = [t / j for t, j in zip(r["ms_per_round"],
                                               rows[(b, c, "jax", op)]["ms_per_round"])]
            assert r["torch_over_jax"] == pytest.approx(statistics.median(per_round))
            assert r["torch_over_jax_iqr"][0] <= r["torch_over_jax"] <= r["torch_over_jax_iqr"][1]

    # the products really are the convolution's: torch's input gradient against autograd
    import torch

    a = bc._inputs(3, 2, 5)
    x = torch.from_numpy(a["x"]).requires_grad_(True)
    w = torch.from_numpy(a["w"]).requires_grad_(True)
    y = torch.nn.functional.conv2d(x, w, padding=1)
    gx, gw = torch.autograd.grad(y, (x, w), torch.from_numpy(a["g"]))
    tp = bc._torch_products(a)
    assert torch.allclose(tp["grad_input"](), gx) and torch.allclose(tp["grad_weight"](), gw)

    wrong = bc._jax_products
    monkeypatch.setattr(bc, "_jax_products",
                        lambda a: {**wrong(a), "grad_weight": lambda: np.zeros_like(a["w"])})
    out.unlink()
    code, _, err = run(["bench", "conv", "--sizes", "4x3", "--steps", "1", "--rounds", "1",
                        "--out", str(out)], capsys)
    assert code == 2 and "grad_weight of torch and jax disagree" in err and not out.exists()

"""`zoo bench ...`: ratios measured side by side in one run."""

from __future__ import annotations

import click

from zoo.cli.params import POSITIVE_INT, Finite, backends, int_list, parse_options


@click.group()
def bench() -> None:
    """Benchmarks: ratios measured side by side in one run (never timed tests)."""


def _training_bench_options(f):
    """The options `bench train` and `bench memory` share: which fields, on what batch."""
    for opt in reversed([
        click.option("--pattern", default="*-mlp", show_default=True,
                     help="Fields to measure (fnmatch)."),
        click.option("--backends", "backend_list", default="torch,jax", show_default=True),
        click.option("--batch", default=512, show_default=True, type=POSITIVE_INT),
        click.option("--data", default="gmm8", show_default=True),
    ]):
        f = opt(f)
    return f


@bench.command("train")
@_training_bench_options
@click.option("--steps", default=20, show_default=True, type=POSITIVE_INT,
              help="Steps per timed block.")
@click.option("--rounds", default=7, show_default=True, type=POSITIVE_INT,
              help="Interleaved rounds; the median block is reported.")
@click.option("--opt", "opts", multiple=True, metavar="KEY=VALUE",
              help="A field option for every field timed (repeatable), e.g. --opt width=128 "
              "to time the standard suite's MLPs.")
@click.option("--gemm-size", default=1024, show_default=True, type=POSITIVE_INT,
              help="n of the n x n float32 GEMM timed after every round (the 'of GEMM' rate).")
@click.option("--compile", "compile_", default="auto", show_default=True,
              type=click.Choice(["auto", "on", "off", "both"]),
              help="Torch fields' steps: as a long `zoo train` run takes them (auto: MLPs "
              "compiled), all "
              "torch.compile'd, all eager, or both ways side by side.")
@click.option("--device", default="cpu", show_default=True, type=click.Choice(["cpu", "cuda"]),
              help="Where both backends run: the CPU, or the GPU (torch's CUDA device 0 and JAX's "
              "GPU; JAX's needs pip install 'zoo[cuda]'). Use a larger --gemm-size on a GPU.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False),
              help="Also write a JSON record (settings, medians, IQRs, ratios, FLOPs, GEMM rates, "
              "machine, library versions, date) there, e.g. results/bench/train-mlp.json for "
              "the leaderboard.")
def bench_train(pattern, backend_list, batch, data, steps, rounds, opts, gemm_size, compile_,
                device, out_path) -> None:
    """Median training-step time of every field and its ratio to the free field on the same
    backbone and backend (free-mlp, free-unet, free-dit), blocks of steps interleaved.

    Also the FLOPs of one step (torch: FlopCounterMode, matrix products only; JAX: XLA's cost
    analysis, every op), the floor ratio FLOPs / free's and "time / floor", the time ratio over
    it (target <= 1.15). GFLOP/s is FLOPs / median step time and "of GEMM" its fraction of the
    rate of a float32 GEMM timed in the same run.
    """
    from zoo.bench import bench_train as run

    run(pattern, backends(backend_list), batch=batch, data=data, steps=steps, rounds=rounds,
        options=parse_options(opts), out=out_path, gemm_size=gemm_size, compile=compile_,
        device=device)


@bench.command("memory")
@_training_bench_options
@click.option("--steps", default=3, show_default=True, type=POSITIVE_INT,
              help="Training steps each process takes.")
@click.option("--opt", "opts", multiple=True, metavar="KEY=VALUE",
              help="A field option for every field (repeatable).")
@click.option("--out", "out_path", type=click.Path(dir_okay=False),
              help="Also write a JSON record there, e.g. results/bench/memory-unet.json.")
def bench_memory_cmd(pattern, backend_list, batch, data, steps, opts, out_path) -> None:
    """Peak resident memory (VmHWM) of a fresh process that builds each field and trains a few
    steps, and its ratio to the free field on the same backbone and backend."""
    from zoo.bench import bench_memory

    bench_memory(pattern, backends(backend_list), batch=batch, data=data, steps=steps,
                 options=parse_options(opts), out=out_path)


@bench.command("sample")
@click.option("--pattern", default="*", show_default=True, help="Fields to time (fnmatch).")
@click.option("--backends", "backend_list", default="torch,jax", show_default=True)
@click.option("--n", "n", default=2000, show_default=True, type=POSITIVE_INT)
@click.option("--steps", default=100, show_default=True, type=POSITIVE_INT,
              help="Steps of the fixed-step ODE runs.")
@click.option("--sde-steps", default=200, show_default=True, type=POSITIVE_INT)
@click.option("--rounds", default=3, show_default=True, type=POSITIVE_INT,
              help="Interleaved rounds; medians and per-round ratios are reported.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False),
              help="Also write a JSON record there, e.g. results/bench/sample.json.")
def bench_sample_cmd(pattern, backend_list, n, steps, sde_steps, rounds, out_path) -> None:
    """NFE and wall time per field and solver (fresh float32 fields, N points of 2-D noise):
    dopri5, rk4 and the reverse SDE (Euler) through torchdiffeq/torchsde for each backend's
    field, and for trainable JAX fields the DLPack bridge's overhead: the same field through
    torchdiffeq and natively through diffrax, fixed-step Euler, same NFE (issue 15's target:
    at most 1.2x)."""
    from zoo.bench import bench_sample

    bench_sample(pattern, backends(backend_list), n=n, rounds=rounds, steps=steps,
                 sde_steps=sde_steps, out=out_path)


@bench.command("check")
@click.option("--pattern", default="free-mlp,energysq-mlp,helmholtz-mlp", show_default=True,
              help="Fields to time: comma-separated fnmatch patterns (e.g. '*-mlp').")
@click.option("--backends", "backend_list", default="torch,jax", show_default=True)
@click.option("--data", default="gmm-d64", show_default=True,
              help="Dataset the points come from; its dimension is the Jacobian's d.")
@click.option("--n", "n", default=256, show_default=True, type=POSITIVE_INT,
              help="Points x_t whose NAsym is computed.")
@click.option("--t", "t", default=0.5, show_default=True, type=Finite(positive=True),
              help="Diffusion time of the points (OU schedule).")
@click.option("--probes", default=16, show_default=True, type=POSITIVE_INT,
              help="Rademacher probes of the Hutchinson estimate (zoo check's default).")
@click.option("--rounds", default=5, show_default=True, type=POSITIVE_INT,
              help="Interleaved rounds; the median is reported.")
@click.option("--dtype", default="float32", show_default=True,
              type=click.Choice(["float32", "float64"]))
@click.option("--opt", "opts", multiple=True, metavar="KEY=VALUE",
              help="A field option for every field (repeatable), e.g. --opt width=128.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0),
              help="Initial weights and points.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False),
              help="Also write a JSON record there, e.g. results/bench/check.json.")
def bench_check_cmd(pattern, backend_list, data, n, t, probes, rounds, dtype, opts, seed,
                    out_path) -> None:
    """Time of the differential-constraint diagnostic (NAsym) per field and backend, on N points
    of DATA at time T, each way measured in every round (medians):

    \b
    vectorised ms  the exact Jacobian, all d rows at once (JAX: vmapped jacrev, what zoo check
                   runs; torch: autograd's reverse pass batched over the one-hot cotangents)
    loop ms        the baseline: one forward, then a Python loop of d VJPs, one per output row
                   at every point (torch: what zoo check runs)
    loop / vect.   the vectorised Jacobian's speed-up (issue 15's target: >= 10 at d = 64 on
                   256 points)
    Hutch. ms      NAsym from PROBES Rademacher probes (a JVP and a VJP each)
    NAsym exact    from the Jacobian; beside it the Hutchinson value +- its SE
    rel. error     |Hutch. - exact| / exact
    error / SE     the same error in units of the SE (about 1 expected); both '-' where
                   exact < 100 eps^2 of the dtype (rounding: a conservative field)

    The times include NAsym from the Jacobians (as zoo check computes it).
    """
    from zoo.bench.check import bench_check

    bench_check(pattern, backends(backend_list), data=data, n=n, t=t, probes=probes,
                rounds=rounds, dtype=dtype, options=parse_options(opts), seed=seed, out=out_path)



@bench.command("scaling")
@click.option("--fields", "field_list", default="free-mlp,energysq-mlp,helmholtz-mlp",
              show_default=True, help="Comma-separated fields (trainable, on points).")
@click.option("--backends", "backend_list", default="torch,jax", show_default=True)
@click.option("--batches", default="64,256,1024,4096", show_default=True,
              help="Batches of the first sweep, at d = --dim.")
@click.option("--dim", default=64, show_default=True, type=POSITIVE_INT,
              help="d of the batch sweep (data gmm-dN).")
@click.option("--dims", default="2,16,64,256", show_default=True,
              help="d of the second sweep (data gmm-dN), at --batch.")
@click.option("--batch", default=256, show_default=True, type=POSITIVE_INT,
              help="Batch of the d sweep.")
@click.option("--steps", default=3, show_default=True, type=POSITIVE_INT,
              help="Steps per timed block.")
@click.option("--rounds", default=5, show_default=True, type=POSITIVE_INT,
              help="Interleaved rounds; the median block is reported.")
@click.option("--opt", "opts", multiple=True, metavar="KEY=VALUE",
              help="A field option for every field (repeatable), e.g. --opt width=128.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False),
              help="Also write a JSON record there and the plot beside it (same name, .png), "
              "e.g. results/bench/scaling.json and scaling.png.")
def bench_scaling_cmd(field_list, backend_list, batches, dim, dims, batch, steps, rounds, opts,
                      out_path) -> None:
    """Training-step time against the batch (at d = DIM) and against d (gmm-dN, at BATCH),
    every case's blocks of steps interleaved (medians), with the FLOPs of one step:

    \b
    ms/step      median block time / steps (IQR beside it)
    MFLOP/step   one step's FLOPs (torch: matrix products; JAX: XLA's count of every op)
    GFLOP/s      FLOPs / ms/step
    ms per 1k    ms/step / batch x 1000: flat where the step is linear in the batch
    time x       time ratio to the previous size (size ratio in brackets); 'superlinear'
                 when above 1.2 x the size ratio, also listed below the tables

    The plot (with --out) draws ms/step against both, log-log, one line per field and backend.
    """
    from zoo.bench.scaling import bench_scaling

    fields = [f.strip() for f in field_list.split(",") if f.strip()]
    bench_scaling(fields, backends(backend_list), batches=int_list("batches", batches),
                  dims=int_list("dims", dims), dim=dim, batch=batch, steps=steps,
                  rounds=rounds, options=parse_options(opts), out=out_path)


@bench.command("conv")
@click.option("--sizes", default="64x16,128x32,128x64", show_default=True,
              help="BATCHxCHANNELS pairs, comma-separated (64x16: the images suite's UNet; "
              "128x32: the UNet's defaults).")
@click.option("--side", default=8, show_default=True, type=POSITIVE_INT,
              help="Image side (digits: 8).")
@click.option("--backends", "backend_list", default="torch,jax", show_default=True)
@click.option("--steps", default=10, show_default=True, type=POSITIVE_INT,
              help="Calls per timed block.")
@click.option("--rounds", default=7, show_default=True, type=POSITIVE_INT,
              help="Interleaved rounds; the median block is reported.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False),
              help="Also write a JSON record there, e.g. results/bench/conv.json.")
def bench_conv_cmd(sizes, side, backend_list, steps, rounds, out_path) -> None:
    """Where each backend's convolutions spend a training step's time: one 3x3 C -> C
    convolution (the UNet's) split into its forward, input gradient and weight gradient, each
    timed alone, interleaved over sizes and backends, with GFLOP/s and the torch / JAX ratio.

    The two backends' results are compared on the same numbers before timing.
    """
    from zoo.bench.conv import bench_conv, parse_sizes

    bench_conv(parse_sizes(sizes), backends(backend_list), side=side, steps=steps,
               rounds=rounds, out=out_path)

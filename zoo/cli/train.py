"""`zoo list` and `zoo train`: the registered fields, and training one."""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path

import click

from zoo.cli.params import POSITIVE_INT, Finite, parse_options
from zoo.data import DATA_ROOT_ENV
from zoo.registry import BACKENDS, ZooError


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _options_help() -> str:
    """The backbones table, as `zoo train --help` shows it."""
    from zoo.builtin import BACKBONES, K_OPTION

    lines = ["\b", "Field options (--opt KEY=VALUE), by backbone:"]
    for name, bb in BACKBONES.items():
        opts = ", ".join(f"{k}={'auto' if o.default is None else o.default}"
                         for k, o in bb.options.items())
        lines.append(f"  {name:<5} ({'images' if bb.data == 'image' else 'any data'}): {opts}")
    lines.append(f"  helmholtz-*, stein-*: K={K_OPTION.default} ({K_OPTION.help})")
    return "\n".join(lines)


@click.command("list")
@click.argument("pattern", default="*")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--plugin", multiple=True, help="Import MODULE (or file.py) that registers fields.")
def list_cmd(pattern: str, as_json: bool, plugin: tuple[str, ...]) -> None:
    """List registered fields matching PATTERN (fnmatch, e.g. '*-mlp')."""
    import zoo

    for p in plugin:
        zoo.load_plugin(p)
    rows = []
    for name in zoo.list_fields(pattern):
        infos = [zoo.get_info(name, b) for b in zoo.registry.backends_of(name)]
        i = infos[0]
        rows.append({"name": name, "backends": [x.backend for x in infos], "head": i.head,
                     "backbone": i.backbone, "data": i.data, "conservative": i.conservative,
                     "trainable": i.trainable, "description": i.description,
                     "options": {k: o.default for k, o in (i.options or {}).items()}})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("name", "backends", "data", "conservative", "options (--opt KEY=VALUE)",
                  "description")
    for r in rows:
        opts = " ".join(f"{k}={'auto' if v is None else v}" for k, v in r["options"].items())
        table.add_row(r["name"], ",".join(r["backends"]), r["data"],
                      "yes" if r["conservative"] else "no", opts, r["description"])
    Console().print(table)


@click.command(epilog=_options_help())
@click.option("--arch", required=True, help="Registered field name (see `zoo list`).")
@click.option("--backend", default="torch", show_default=True, type=click.Choice(BACKENDS))
@click.option("--data", default="gmm8", show_default=True,
              help="gmm8, checkerboard, moons, swissroll, rings, gmm-d (16-D) or gmm-dN; images: "
              "digits (8x8, scikit-learn), mnist (28x28, local files).")
@click.option("--steps", default=2000, show_default=True, type=POSITIVE_INT)
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0),
              help="Seeds initial weights, batches, times and noise (one numpy generator).")
@click.option("--batch", default=512, show_default=True, type=POSITIVE_INT)
@click.option("--lr", default=1e-3, show_default=True, type=Finite(positive=True),
              help="Adam learning rate.")
@click.option("--ema", default=0.999, show_default=True, type=click.FloatRange(0, 1, max_open=True))
@click.option("--dtype", default="float32", show_default=True,
              type=click.Choice(["float32", "float64"]))
@click.option("--schedule", default="ou", show_default=True,
              type=click.Choice(["ou", "vp-linear"]),
              help="ou: dX = -X dt + sqrt(2) dW (seed paper); vp-linear: Song et al. 2021.")
@click.option("--T", "T", default=5.0, show_default=True, type=Finite(positive=True))
@click.option("--t-min", default=1e-3, show_default=True, type=Finite(positive=True))
@click.option("--t-sampling", default="uniform", show_default=True,
              type=click.Choice(["uniform", "power"]),
              help="uniform: t ~ U[t_min, T]; power: t = (a + u (b - a))^rho, a = t_min^(1/rho), "
              "b = T^(1/rho): more small t (on gmm8 it cuts the score error at t = 0.01 fourfold).")
@click.option("--t-rho", default=2.0, show_default=True, type=Finite(positive=True))
@click.option("--opt", "opts", multiple=True, metavar="KEY=VALUE",
              help="A field option (repeatable), e.g. --opt channels=64 --opt mults=1,2,2; the "
              "options of each backbone are listed below and by `zoo list`.")
@click.option("--width", type=POSITIVE_INT, help="Same as --opt width=N (mlp) [default: 256].")
@click.option("--depth", type=POSITIVE_INT, help="Same as --opt depth=N [default: 3 (mlp), 4 (dit)].")
@click.option("--act", type=click.Choice(["silu", "gelu", "tanh", "softplus"]),
              help="Same as --opt act=NAME (mlp) [default: silu].")
@click.option("--K", "K", type=POSITIVE_INT,
              help="Same as --opt K=N: rotational heads (helmholtz, stein), number of antisymmetric "
              "operators A_k [default: 2].")
@click.option("--device", default="auto", show_default=True,
              type=click.Choice(["auto", "cpu", "cuda"]),
              help="Torch fields: auto = CUDA when present. JAX uses its default device.")
@click.option("--compile", "compile_", default="auto", show_default=True,
              type=click.Choice(["auto", "on", "off"]),
              help="Torch fields: take each step from one torch.compile'd graph (loss and "
              "gradients; the same numbers as eager to rounding, a C++ compiler needed, eager "
              "if compiling fails). auto = MLP runs of 5000 steps or more, where it is 1.3-2.0x "
              "faster a step for 2-30 s of compiling; off = "
              "eager autograd. JAX steps are always jitted.")
@click.option("--data-root", type=click.Path(file_okay=False),
              help="Folder of local dataset files (mnist: DIR/MNIST/raw) [default: $ZOO_DATA_ROOT "
              "or ./data]. Nothing is ever downloaded.")
@click.option("--qc-lambda", type=Finite(),
              help="qc fields: weight of the sigma^2 (tr JJ^T - tr J^2) penalty [default: 1.0].")
@click.option("--qc-probes", type=POSITIVE_INT,
              help="qc fields: Rademacher probes per example per step [default: 1].")
@click.option("--eval-at", metavar="STEPS",
              help="Comma-separated steps (below --steps) whose EMA weights are kept in "
              "RUN/snapshots/ for a learning curve (`zoo curve RUN`), e.g. 1000,3000,10000.")
@click.option("--log-every", default=50, show_default=True, type=POSITIVE_INT)
@click.option("--checkpoint-every", default=500, show_default=True, type=POSITIVE_INT,
              help="Steps per crash-safe checkpoint (weights, EMA, Adam state, data generator).")
@click.option("--out", type=click.Path(file_okay=False),
              help="Run directory [default: results/runs/DATA/ARCH-BACKEND-sSEED].")
@click.option("--resume", is_flag=True,
              help="Insist on continuing the unfinished run in the run directory (re-running the "
              "same command continues it anyway).")
@click.option("--force", is_flag=True,
              help="Start over, even if the run directory holds a complete or a different run; "
              "first deletes everything made from its old weights (samples-*, eval.json, "
              "nll.json, check.json, check-field.png, curve.json, snapshots/).")
@click.option("--plugin", multiple=True, help="Import MODULE (or file.py) that registers fields.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train(arch, backend, data, steps, seed, batch, lr, ema, dtype, schedule, T, t_min,
          t_sampling, t_rho, opts, width, depth, act, K, device, compile_, data_root, qc_lambda,
          qc_probes, eval_at, log_every, checkpoint_every, out, resume, force, plugin,
          quiet) -> None:
    """Train field ARCH by denoising score matching; prints the run directory last.

    Every field is trained the same way: Adam, EMA of weights, t ~ U[t_min, T], and one numpy
    generator (seeded by --seed) for weights, data, times and noise in either backend.

    Re-running a command continues its unfinished run from the last checkpoint (bitwise the
    same result as a run never stopped); on a complete run it trains nothing, says so and
    exits 0 (--force retrains). A non-finite loss or gradient stops the run, marked failed.
    """
    import zoo
    from zoo import checkpoint
    from zoo.train import TrainConfig, run_dir_of, run_state
    from zoo.train import train as run_training

    for p in plugin:
        zoo.load_plugin(p)
    if data_root:
        os.environ[DATA_ROOT_ENV] = str(Path(data_root).resolve())
    info = zoo.get_info(arch, backend)
    options = parse_options(opts)
    for key, v in (("width", width), ("depth", depth), ("act", act), ("K", K)):
        if v is not None:
            options[key] = v
    takes = info.options if info.options is not None else inspect.signature(info.factory).parameters
    for key in options:
        if key not in takes:
            raise ZooError(f"field {arch!r} takes no option {key!r}; it takes "
                           f"{', '.join(k for k in takes if k not in ('dim', 'shape', 'schedule'))}")
    if device == "auto":
        device = "cuda" if backend == "torch" and _cuda() else "cpu"
    penalty = {k: v for k, v in (("lambda", qc_lambda), ("probes", qc_probes)) if v is not None}
    cfg = TrainConfig(arch=arch, backend=backend, data=data, steps=steps, seed=seed, batch=batch,
                      lr=lr, ema=ema, dtype=dtype, schedule=schedule, t_min=t_min, T=T,
                      t_sampling=t_sampling, t_rho=t_rho,
                      log_every=log_every, checkpoint_every=checkpoint_every, options=options,
                      penalty=penalty, device=device, compile=compile_, eval_at=_steps(eval_at),
                      plugins=[str(Path(p).resolve()) if p.endswith(".py") else p for p in plugin])
    cfg.validate()
    if resume and force:
        raise ZooError("--resume and --force exclude each other")
    before, old = ("new", None) if force else run_state(cfg, run_dir_of(cfg, out))
    run_dir = run_training(cfg, out=out, show_progress=not quiet, resume=resume, force=force)
    c = checkpoint.read_config(run_dir)
    summary = (f"loss {c['first_loss']:.4f} -> {c['final_loss']:.4f} in {steps} steps "
               f"({c['steps_per_s']:.0f} steps/s)")
    if before == "complete":
        click.echo(f"{arch} [{backend}] on {data}: already complete, {summary}; nothing trained "
                   "(--force retrains)")
    else:
        at = (old or {}).get("checkpoint", {}).get("step")
        again = f" (continued from step {at})" if at else ""
        click.echo(f"{arch} [{backend}] on {data}: {summary}{again}")
    click.echo(str(run_dir))


def _steps(text: str | None) -> list[int]:
    """"1000,3000" -> [1000, 3000]; ZooError on anything that is not a list of integers."""
    if not text:
        return []
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ZooError(f"--eval-at takes comma-separated integers, got {text!r}") from None

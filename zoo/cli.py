"""The `zoo` command line. Errors a user can cause print one line on stderr and exit with 2."""

from __future__ import annotations

import inspect
import json
import math
import os
import sys
from pathlib import Path

import click

from zoo.data import DATA_ROOT_ENV
from zoo.registry import BACKENDS, ZooError


class Finite(click.ParamType):
    """A float that must be finite (and optionally positive): NaN and inf are refused."""

    name = "number"

    def __init__(self, positive: bool = False) -> None:
        self.positive = positive

    def convert(self, value, param, ctx):
        try:
            v = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(v) or (self.positive and v <= 0):
            self.fail(f"{value!r} must be a {'positive ' if self.positive else ''}finite number",
                      param, ctx)
        return v


POSITIVE_INT = click.IntRange(min=1)


def parse_options(items) -> dict:
    """``("channels=64", "mults=1,2,2", "patch=auto")`` -> {"channels": 64, "mults": [1, 2, 2],
    "patch": None}: integers, numbers, true/false, comma lists of numbers, none/auto, or text."""

    def value(text: str):
        low = text.strip().lower()
        if low in ("none", "auto", ""):
            return None
        if low in ("true", "false"):
            return low == "true"
        for cast in (int, float):
            try:
                return cast(text)
            except ValueError:
                pass
        if "," in text:
            return [value(v) for v in text.split(",") if v.strip()]
        return text.strip()

    out = {}
    for item in items:
        key, eq, text = item.partition("=")
        if not eq or not key.strip():
            raise ZooError(f"--opt takes KEY=VALUE, got {item!r}")
        out[key.strip()] = value(text)
    return out


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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """A zoo of conservative and free score fields for diffusion models (PyTorch and Equinox).

    Train any registered field with one protocol, in either backend: `zoo list` shows them,
    `zoo train --arch free-mlp` trains one, `zoo bench train` times them side by side.
    """


@cli.command("list")
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


@cli.command(epilog=_options_help())
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


RUN_DIR = click.Path(file_okay=False)


@cli.command()
@click.argument("run", type=RUN_DIR)
@click.option("--solver", default="ode", show_default=True, type=click.Choice(["ode", "sde"]),
              help="ode: probability-flow ODE (reversed WGF); sde: reverse-time SDE.")
@click.option("--method", help="ode: dopri5 (default), bosh3, dopri8, euler, midpoint, rk4 "
              "[diffrax: tsit5 (default), dopri5, euler, midpoint, heun]; sde: euler (default), "
              "srk [diffrax: euler, shark].")
@click.option("--steps", type=POSITIVE_INT,
              help="Steps of fixed-step methods [default: 100 for the ODE, 500 for the SDE].")
@click.option("--rtol", default=1e-5, show_default=True, type=Finite(positive=True))
@click.option("--atol", default=1e-5, show_default=True, type=Finite(positive=True))
@click.option("--n", "n", default=2000, show_default=True, type=POSITIVE_INT)
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0),
              help="Seeds x_T and the SDE's Brownian motion.")
@click.option("--engine", default="torch", show_default=True,
              type=click.Choice(["torch", "diffrax"]),
              help="torch: torchdiffeq/torchsde for every field (JAX via DLPack); diffrax: JAX only.")
@click.option("--rho", default=2.0, show_default=True, type=Finite(positive=True),
              help="Time grid t = (T^(1/rho) + tau (t_min^(1/rho) - T^(1/rho)))^rho; 1 = uniform.")
@click.option("--denoise", is_flag=True, help="Finish with Tweedie's E[x_0 | x_t_min].")
@click.option("--raw", is_flag=True, help="Use the last weights instead of the EMA weights.")
def sample(run, solver, method, steps, rtol, atol, n, seed, engine, rho, denoise, raw) -> None:
    """Sample the field of training run RUN; writes samples-SOLVER-METHOD.npz and .png there."""
    from zoo.sampling import sample_run

    path = sample_run(run, n=n, seed=seed, solver=solver, method=method, steps=steps, rtol=rtol,
                      atol=atol, engine=engine, rho=rho, denoise=denoise, ema=not raw,
                      progress=True)
    with np_load(path) as z:
        click.echo(f"{n} samples, NFE {int(z['nfe'])}, {float(z['wall_s']):.2f} s")
    click.echo(str(path))


def np_load(path):
    import numpy as np

    return np.load(path, allow_pickle=False)


@cli.command()
@click.argument("run", type=RUN_DIR)
@click.option("--n", "n", default=1000, show_default=True, type=POSITIVE_INT)
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0),
              help="Seeds the held-out data (a stream independent of training).")
@click.option("--estimator", default="auto", show_default=True,
              type=click.Choice(["auto", "exact", "hutchinson"]),
              help="Divergence: exact Jacobian trace, Hutchinson, or auto (exact for points up to "
                   "d = 64, Hutchinson on images).")
@click.option("--rtol", default=1e-5, show_default=True, type=Finite(positive=True))
@click.option("--atol", default=1e-5, show_default=True, type=Finite(positive=True))
@click.option("--max-nfe", default=2000, show_default=True, type=POSITIVE_INT,
              help="Give up past this many field evaluations (nll.json then says `diverged`).")
def nll(run, n, seed, estimator, rtol, atol, max_nfe) -> None:
    """Negative log-likelihood of held-out data under RUN's probability-flow ODE (nll.json)."""
    from zoo.sampling import nll_run

    r = nll_run(run, n=n, seed=seed, estimator=estimator, rtol=rtol, atol=atol, max_nfe=max_nfe,
                progress=True)
    if r.get("diverged"):
        click.echo(f"NLL not measured: the solve {r['diverged']['reason']}; a path escapes to "
                   "large |x| (nll.json records it)")
        return
    ref = f" (exact density: {r['exact_nll_nats']:.4f})" if "exact_nll_nats" in r else ""
    esc = f"; {r['escaped']} of {r['n']} paths escaped the prior" if r["escaped"] else ""
    click.echo(f"NLL {r['nll_nats']:.4f} +- {r['se']:.4f} nats{ref}, "
               f"{r['bits_per_dim']:.4f} bits/dim, NFE {r['nfe']}{esc}")


@cli.command()
@click.argument("run", type=RUN_DIR)
@click.option("--times", help="Comma-separated t values [default: 8 spread over t_min..T].")
@click.option("--n-points", default=256, show_default=True, type=POSITIVE_INT,
              help="Points x_t per t for Jacobians, rotational share and score error.")
@click.option("--n-loops", default=32, show_default=True, type=POSITIVE_INT,
              help="Closed loops per t and family.")
@click.option("--K", "K", default=6, show_default=True, type=click.IntRange(min=3),
              help="Corrupted samples per polygon.")
@click.option("--nodes", default=48, show_default=True, type=click.IntRange(min=2),
              help="Gauss-Legendre nodes per loop segment.")
@click.option("--probes", default=16, show_default=True, type=POSITIVE_INT,
              help="Probes per point of the stochastic NAsym (d > 256).")
@click.option("--jacobian", default="auto", show_default=True,
              type=click.Choice(["auto", "exact", "hutchinson"]),
              help="NAsym from exact Jacobians or Hutchinson probes (auto: exact for d <= 256).")
@click.option("--quad-err/--no-quad-err", default=True, show_default=True,
              help="Integrate every loop again with half the nodes (half as many field calls "
                   "again) and record the difference, quad_err.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0))
@click.option("--raw", is_flag=True, help="Use the last weights instead of the EMA weights.")
@click.option("--json", "as_json", is_flag=True, help="Print check.json instead of a table.")
def check(run, times, n_points, n_loops, K, nodes, probes, jacobian, quad_err, seed, raw,
          as_json) -> None:
    """How far RUN's field is from a true score (DC, IC, split, exact-score error): check.json."""
    from zoo.diagnostics import check_run

    ts = None
    if times:
        try:
            ts = [float(v) for v in times.split(",") if v.strip()]
        except ValueError:
            raise ZooError(f"--times must be comma-separated numbers, got {times!r}") from None
        if not ts or not all(math.isfinite(v) and v > 0 for v in ts):
            raise ZooError(f"--times must be positive finite numbers, got {times!r}")
    r = check_run(run, ema=not raw, times=ts, n_points=n_points, n_loops=n_loops, K=K,
                  nodes=nodes, probes=probes, jacobian=jacobian, quad_err=quad_err, seed=seed)
    if as_json:
        click.echo(json.dumps(r, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    keys = [("nasym", "NAsym"), ("rot_share", "rot"), ("score_rel_error", "err"),
            ("stein_residual_sq", "E r2"), ("error_sq", "E|e|2")]
    keys = [(k, h) for k, h in keys if k in r["per_t"][0]]
    from zoo.diagnostics import LOOP_FAMILIES

    short = {"polygon": "poly", "triangle": "tri", "projected": "proj",
             "interpolated": "interp", "interpolated-projected": "i-proj"}
    fams = [f for f in LOOP_FAMILIES if f in r["per_t"][0]["loops"]]
    table = Table("t", *(h for _, h in keys), *(f"G {short.get(f, f)}" for f in fams),
                  caption="rot: rotational share of E|s|^2; err: E|s-S|^2/E|S|^2; E r2: Stein "
                          "residual; G: |circulation| / closed integral of |s||dx| (with half "
                          "the nodes it changes by the ± figure: larger than G = unresolved)",
                  title=f"{r['settings']['arch']} ({r['settings']['backend']}) on "
                        f"{r['settings']['data']}: conservativity (medians over loops)")

    def g(loop: dict) -> str:
        q = loop.get("quad_err")
        return f"{loop['normalised']['median']:.1e}" + (f" ±{q['median']:.0e}" if q else "")

    for row in r["per_t"]:
        table.add_row(f"{row['t']:.2g}", *(f"{row[k]:.1e}" for k, _ in keys),
                      *(g(row["loops"][f]) for f in fams))
    Console().print(table)
    click.echo(str(Path(run) / "check.json"))


@cli.command("eval")
@click.argument("run", type=RUN_DIR)
@click.option("--n", "n", default=2000, show_default=True, type=POSITIVE_INT,
              help="Samples per solver (a samples file of another n is drawn again).")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0),
              help="Seeds new samples and the reference data (a held-out stream).")
@click.option("--solver", "solver_list", default="ode,sde", show_default=True,
              help="Comma-separated solvers, each optionally SOLVER:METHOD (e.g. ode:rk4).")
@click.option("--repeats", default=20, show_default=True, type=click.IntRange(min=2),
              help="Real-vs-real draws behind each noise floor (cached in $ZOO_CACHE_DIR/floors, "
              "default ~/.cache/zoo/floors).")
@click.option("--json", "as_json", is_flag=True, help="Print eval.json instead of a table.")
def eval_cmd(run, n, seed, solver_list, repeats, as_json) -> None:
    """Sample quality of RUN (ODE and SDE) against fresh data, each metric beside its noise floor.

    Reuses a samples-SOLVER-METHOD.npz file (made by `zoo sample` or an earlier eval) only when it
    records the run's current weights (sha256) and this very draw (N, seed, solver, method and
    default settings); otherwise samples N points again. Metrics: W2, sliced W2, MMD, energy
    distance, PRDC; log rho and mode coverage where the density is known. The floor is the same
    metric between two real draws (20 by default): a value within a few floor stds of the floor
    mean is as good as the data can tell. Writes eval.json in RUN.
    """
    from zoo.evaluate import eval_run, format_table
    from zoo.sampling import SOLVERS

    pairs = []
    for item in (s.strip() for s in solver_list.split(",")):
        if not item:
            continue
        solver, _, method = item.partition(":")
        if solver not in SOLVERS:
            raise ZooError(f"--solver: unknown solver {solver!r}; choose from {', '.join(SOLVERS)}")
        pairs.append((solver, method or None))
    if not pairs:
        raise ZooError("--solver needs at least one solver")
    r = eval_run(run, n=n, seed=seed, solvers=tuple(pairs), repeats=repeats)
    if as_json:
        click.echo(json.dumps(r, indent=2))
        return
    from rich.console import Console

    Console().print(format_table(r))
    click.echo(str(Path(run) / "eval.json"))


@cli.command("curve")
@click.argument("run", type=RUN_DIR)
@click.option("--n", default=2000, show_default=True, type=click.IntRange(min=2),
              help="ODE samples per point (the same x_T at every point).")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0),
              help="Seeds x_T and the reference data (a held-out stream).")
@click.option("--repeats", default=20, show_default=True, type=click.IntRange(min=2),
              help="Real-vs-real draws behind each noise floor.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def curve_cmd(run, n, seed, repeats, quiet) -> None:
    """Learning curve of RUN: sample quality of the EMA weights at every kept step.

    RUN must have been trained with --eval-at STEPS; each kept snapshot and the final weights
    are sampled with the probability-flow ODE and scored like `zoo eval` (log rho where the
    density is known, MMD, W2, PRDC, each beside its noise floor). Writes RUN/curve.json and
    prints one row per step.
    """
    from rich.console import Console
    from rich.progress import Progress

    from zoo.curves import curve_run
    from zoo.evaluate import METRICS

    with Progress(disable=quiet, transient=True) as bar:
        task = bar.add_task("curve", total=None)
        r = curve_run(run, n=n, seed=seed, repeats=repeats,
                      progress=lambda done, total: bar.update(task, completed=done, total=total))
    from rich.table import Table

    names = [k for k in ("trimmed_log_density", "mean_log_density", "mmd_rbf", "w2", "precision",
                         "recall", "off_mode")
             if any(p["metrics"] and p["metrics"].get(k) for p in r["points"])]
    title = (f"{r['arch']} ({r['backend']}) on {r['data']}: ODE samples vs step "
             "(floor: real vs real)")
    table = Table("step", "NFE", *(METRICS[k][0] for k in names), title=title)
    for p in r["points"]:
        m = p["metrics"]
        table.add_row(str(p["step"]), str(p["nfe"]), *(
            "non-finite" if not p["finite"] else
            f"{m[k]['value']:.4g} [dim]({m[k]['floor_mean']:.3g})[/dim]" for k in names))
    Console().print(table)
    click.echo(str(Path(run) / "curve.json"))


@cli.command("sweep")
@click.option("--suite", "suite_name", default="quick", show_default=True,
              help="quick (free, energy, energysq on gmm8 at 30000 steps + a torch twin, ~12 min), "
              "standard (every MLP field, all 2-D datasets + gmm-d, 3 seeds, 30000 steps; "
              "checkerboard 100000), "
              "images (every UNet and DiT field on digits and digits-gmm, 6000 steps (DiT: "
              "30000), and every MLP field on latent-digits, 30000 steps; 3 JAX seeds + a torch "
              "twin), or a suite of --suite-file.")
@click.option("--suite-file", type=click.Path(dir_okay=False),
              help="TOML file of extra suites ([NAME] tables: fields, datasets, seeds, backends, "
              "[NAME.train] steps/batch/lr/t_sampling, [NAME.options.BACKBONE] field options (e.g. "
              "[NAME.options.unet] channels = 64), [NAME.eval] n/repeats, [NAME.nll] n, "
              "[NAME.check] n_points/n_loops; dataset_fields = {DATA = [patterns]} limits a "
              "dataset to some fields, [NAME.backbone_train.BACKBONE] and "
              "[NAME.dataset_train.DATA] their own train settings, the dataset's winning).")
@click.option("--seeds", type=POSITIVE_INT, help="Seeds 0..N-1 [default: the suite's].")
@click.option("--backends", "backend_list", help="Comma-separated [default: the suite's].")
@click.option("--jobs", type=POSITIVE_INT,
              help="local: worker processes [default: one per core]; ray: most runs in flight "
              "[default: as many as the cluster holds].")
@click.option("--runs", "runs_root", default="results/runs", show_default=True,
              type=click.Path(file_okay=False), help="Runs land in RUNS/SUITE/DATA/ARCH-BACKEND-sSEED "
              "(with ray on a cluster: a path every node sees).")
@click.option("--plugin", multiple=True, help="Import MODULE (or file.py) that registers fields.")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: a process pool on this machine; ray: one Ray task per run.")
@click.option("--address", help="ray: join the cluster at auto, HOST:PORT or ray://HOST:PORT "
              "[default: $RAY_ADDRESS if set, else start a local Ray].")
@click.option("--cpus-per-run", type=click.FloatRange(min=0, min_open=True),
              help="CPUs (threads) per run [default: ray 1; local the cores shared out among "
              "the jobs].")
@click.option("--gpus-per-run", type=click.FloatRange(min=0),
              help="ray: GPUs per run; the run sees only those [default: 1 with --device cuda, "
              "and with --device auto on a cluster that has GPUs; else 0].")
@click.option("--retries", type=click.IntRange(min=0),
              help="ray: tries more for a run whose worker dies [default: 2].")
@click.option("--device", type=click.Choice(["cpu", "cuda", "auto"]), default="cpu",
              show_default=True, help="Where every run computes; cpu runs see no GPU.")
@click.option("--only", multiple=True, metavar="PATTERN",
              help="Run only the runs whose DATA/ARCH-BACKEND-sSEED label matches PATTERN "
              "(fnmatch; repeatable, run in the patterns' order), e.g. --only "
              "'digits/*-unet-jax-s1': a slice of the suite with its settings.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def sweep_cmd(suite_name, suite_file, seeds, backend_list, jobs, runs_root, plugin, engine,
              address, cpus_per_run, gpus_per_run, retries, device, only, quiet) -> None:
    """Train, sample (ODE and SDE), evaluate and check every run of a suite, in parallel.

    Runs already complete with the same settings are skipped, so a stopped sweep is started again
    with the same command. A run that fails is recorded with its reason (sweep.json) and the sweep
    goes on. With --engine ray every run is a Ray task, retried (from its last checkpoint) when
    its worker dies. Then `zoo leaderboard --suite SUITE` publishes the table.
    """
    from zoo.sweep import sweep

    bks = _backends(backend_list) if backend_list else None
    res = sweep(suite_name, suite_file=suite_file, seeds=seeds, backends=bks, jobs=jobs,
                root=runs_root, plugins=plugin, show_progress=not quiet, engine=engine,
                address=address, cpus_per_run=cpus_per_run, gpus_per_run=gpus_per_run,
                retries=retries, device=device, only=only)
    counts = {s: sum(r["status"] == s for r in res) for s in ("complete", "skipped", "failed",
                                                             "busy")}
    click.echo(f"sweep {suite_name}: {counts['complete']} run(s) done, {counts['skipped']} "
               f"skipped (already complete), {counts['failed']} failed, {counts['busy']} busy "
               "elsewhere")
    for r in res:
        if r["status"] == "failed":
            click.echo(f"  failed {r['label']}: {r['reason']}")


@cli.command("leaderboard")
@click.option("--suite", "suite_name", default="standard", show_default=True,
              help="Reads RUNS/SUITE; writes to results/ for standard, results/SUITE/ otherwise.")
@click.option("--runs", "runs_dir", type=click.Path(file_okay=False),
              help="Runs directory to read [default: results/runs/SUITE].")
@click.option("--out", type=click.Path(file_okay=False),
              help="Where LEADERBOARD.md, leaderboard.csv and figures/ go [default: see --suite].")
@click.option("--bench", "bench_path", metavar="PATH",
              help="`zoo bench train --out` record(s) for the cost columns, comma-separated "
              "(e.g. one per backbone of the suite, each with its options), or 'none' "
              "[default: the suite's own records, results/bench/SUITE-*.json except "
              "`--compile both` ones, else "
              "results/bench/train-mlp.json when it exists, else no cost columns].")
@click.option("--suite-file", type=click.Path(dir_okay=False),
              help="TOML file defining the suite (to count the runs it defines).")
@click.option("--no-figures", is_flag=True, help="Tables only.")
@click.option("--quiet", is_flag=True, help="Do not print the table.")
def leaderboard_cmd(suite_name, runs_dir, out, bench_path, suite_file, no_figures, quiet) -> None:
    """Compare every field with the free field, per dataset, from the runs' JSON files.

    One row per field and dataset (a torch and a JAX run of one seed are one training: values
    are mean ± std over one backend's seeds), verdict metrics beside their real-vs-real noise
    floors, every field paired with free-<backbone> over seeds (mean difference and 95% t
    interval), a Summary naming the differences beyond both the seed spread and 2 floor std,
    learning curves where runs have curve.json, costs from a `zoo bench train` record. Writes
    LEADERBOARD.md, leaderboard.csv and figures/; the committed files reproduce them exactly.
    """
    from zoo.leaderboard import DEFAULT_BENCH, write_leaderboard

    runs_dir = runs_dir or str(Path("results/runs") / suite_name)
    out = out or ("results" if suite_name == "standard" else str(Path("results") / suite_name))
    if bench_path is None:
        # a suite's own records (results/bench/SUITE-*.json: one per backbone; not the
        # `--compile both` comparisons), else the MLPs'
        from zoo.leaderboard.cost import suite_records
        own = suite_records(DEFAULT_BENCH.parent, suite_name)
        bench_path = ([str(p) for p in own] if own else
                      DEFAULT_BENCH if DEFAULT_BENCH.is_file() else None)
    elif bench_path.strip().lower() == "none":
        bench_path = None
    r = write_leaderboard(runs_dir, out, figures=not no_figures, bench=bench_path,
                          suite_file=suite_file)
    if not quiet:
        from rich.console import Console
        from rich.markdown import Markdown

        Console(width=200).print(Markdown(r["markdown"]))
    for s in r["skipped"]:
        click.echo(f"skipped {s}", err=True)
    click.echo(str(Path(out) / "LEADERBOARD.md"))


@cli.command("oracle")
@click.option("--data", default="gmm8", show_default=True,
              help="A dataset with closed-form rho_t: gmm8, checkerboard, gmm-d or gmm-dN.")
@click.option("--magnitudes", default="0.05,0.1,0.2,0.5,1.0", show_default=True,
              help="Comma-separated relative error sizes m = sqrt(E|e|^2 / E|S|^2) (every t).")
@click.option("--kinds", default="none,gradient,divfree,stein,generic", show_default=True,
              help="Comma-separated error kinds (see zoo/oracle.py).")
@click.option("--n", "n", default=2000, show_default=True, type=POSITIVE_INT,
              help="Samples per cell, and reference points of rho_t_min.")
@click.option("--seeds", default=2, show_default=True, type=POSITIVE_INT,
              help="Independent error draws, x_T and Brownian paths (seeds 0..S-1).")
@click.option("--sde-steps", default=500, show_default=True, type=POSITIVE_INT,
              help="Euler-Maruyama steps of the reverse SDE.")
@click.option("--refine", default="2000", show_default=True,
              help="Extra SDE step counts at the largest m (seed 0), comma-separated; '' for none.")
@click.option("--repeats", default=20, show_default=True, type=click.IntRange(min=2),
              help="Real-vs-real draws behind each noise floor (computed once).")
@click.option("--out", type=click.Path(file_okay=False),
              help="Output directory [default: results/oracle/DATA].")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def oracle_cmd(data, magnitudes, kinds, n, seeds, sde_steps, refine, repeats, out, quiet) -> None:
    """Exact score + controlled errors: does a Stein-null error leave the samples unchanged?

    Adds to the closed-form score S of DATA an error e of each kind (none, gradient grad h,
    divfree A grad psi, stein A (grad psi + psi S) with div(rho_t e) = 0, generic) and relative
    size m at every t, samples with the probability-flow ODE (dopri5) and the reverse SDE
    (Euler-Maruyama), and scores the samples as `zoo eval` does, beside noise floors. Writes
    oracle.md, oracle.csv, oracle.json and oracle.png to OUT, all at the end.
    """
    from zoo.oracle import OracleConfig, markdown, run_oracle, verdicts, write_oracle

    def numbers(text: str, name: str, cast) -> tuple:
        try:
            vals = tuple(cast(v) for v in text.split(",") if v.strip())
        except ValueError:
            raise ZooError(f"--{name} must be comma-separated numbers, got {text!r}") from None
        return vals

    mags = numbers(magnitudes, "magnitudes", float)
    if not mags:
        raise ZooError("--magnitudes needs at least one number")
    cfg = OracleConfig(data=data, magnitudes=mags, n=n, seeds=seeds, sde_steps=sde_steps,
                       kinds=tuple(dict.fromkeys(k.strip() for k in kinds.split(",") if k.strip())),
                       refine_steps=numbers(refine, "refine", int), repeats=repeats)
    cfg.validate()  # every input is checked before anything runs or is written
    out_dir = Path(out) if out else Path("results") / "oracle" / data
    if out_dir.exists() and not out_dir.is_dir():
        raise ZooError(f"--out {out_dir}: exists and is not a directory")
    if quiet:
        result = run_oracle(cfg)
    else:
        from rich import progress as rp

        with rp.Progress(rp.TextColumn("oracle {task.fields[label]:<34}"), rp.BarColumn(),
                         rp.MofNCompleteColumn(), rp.TimeElapsedColumn(),
                         rp.TimeRemainingColumn()) as bar:
            task = bar.add_task("oracle", total=None, label="noise floors")

            def cb(done: int, total: int, label: str) -> None:
                bar.update(task, completed=done, total=total, label=label)

            result = run_oracle(cfg, progress=cb)
    paths = write_oracle(result, out_dir)
    if quiet:
        for line in verdicts(result):
            click.echo(line)
    else:
        click.echo(markdown(result))
    click.echo(str(paths["oracle.md"]))


@cli.group()
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
@click.option("--out", "out_path", type=click.Path(dir_okay=False),
              help="Also write a JSON record (settings, medians, IQRs, ratios, FLOPs, GEMM rates, "
              "machine, library versions, date) there, e.g. results/bench/train-mlp.json for "
              "the leaderboard.")
def bench_train(pattern, backend_list, batch, data, steps, rounds, opts, gemm_size, compile_,
                out_path) -> None:
    """Median training-step time of every field and its ratio to the free field on the same
    backbone and backend (free-mlp, free-unet, free-dit), blocks of steps interleaved.

    Also the FLOPs of one step (torch: FlopCounterMode, matrix products only; JAX: XLA's cost
    analysis, every op), the floor ratio FLOPs / free's and "time / floor", the time ratio over
    it (target <= 1.15). GFLOP/s is FLOPs / median step time and "of GEMM" its fraction of the
    rate of a float32 GEMM timed in the same run.
    """
    from zoo.bench import bench_train as run

    run(pattern, _backends(backend_list), batch=batch, data=data, steps=steps, rounds=rounds,
        options=parse_options(opts), out=out_path, gemm_size=gemm_size, compile=compile_)


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

    bench_memory(pattern, _backends(backend_list), batch=batch, data=data, steps=steps,
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

    bench_sample(pattern, _backends(backend_list), n=n, rounds=rounds, steps=steps,
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
    from zoo.bench_check import bench_check

    bench_check(pattern, _backends(backend_list), data=data, n=n, t=t, probes=probes,
                rounds=rounds, dtype=dtype, options=parse_options(opts), seed=seed, out=out_path)


def _int_list(name: str, text: str) -> list[int]:
    """"64,256" -> [64, 256]; ZooError on anything but positive integers."""
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ZooError(f"--{name} takes comma-separated positive integers, got {text!r}") from None
    if not vals or min(vals) <= 0:
        raise ZooError(f"--{name} takes comma-separated positive integers, got {text!r}")
    return vals


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
    from zoo.bench_scaling import bench_scaling

    fields = [f.strip() for f in field_list.split(",") if f.strip()]
    bench_scaling(fields, _backends(backend_list), batches=_int_list("batches", batches),
                  dims=_int_list("dims", dims), dim=dim, batch=batch, steps=steps,
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
    from zoo.bench_conv import bench_conv, parse_sizes

    bench_conv(parse_sizes(sizes), _backends(backend_list), side=side, steps=steps,
               rounds=rounds, out=out_path)


def _backends(text: str) -> list[str]:
    bks = [b.strip() for b in text.split(",") if b.strip()]
    bad = [b for b in bks if b not in BACKENDS]
    if bad or not bks:
        raise ZooError(f"unknown backend(s) {bad}; choose from {', '.join(BACKENDS)}")
    return bks


# --- zoo classifier: the offline image-quality classifier (zoo/classifier.py) ---------------------

_CLASSIFIER_DATA = click.Choice(["digits", "mnist"])


@cli.group()
def classifier() -> None:
    """The small CNN whose features the image metrics use (FD, class histogram, PRDC).

    The digits classifier ships with the package (zoo/assets/digits-classifier.safetensors and
    its .json record with the sha256); mnist reads its local files ($ZOO_DATA_ROOT, else ./data).
    """


@classifier.command("train", short_help="Train the classifier deterministically; write weights and record.")
@click.option("--data", default="digits", show_default=True, type=_CLASSIFIER_DATA,
              help="Image dataset whose train split the classifier learns.")
@click.option("--out", type=click.Path(file_okay=False),
              help="Folder for DATA-classifier.safetensors and .json [default: the package's "
              "zoo/assets, replacing the shipped file].")
def classifier_train(data: str, out: str | None) -> None:
    """Train the classifier deterministically (seed 0, one thread, fixed data order) and write
    its weights and record (sha256, train and test accuracy, architecture, settings, versions).
    On the same machine and library versions a retrained file has the same sha256."""
    import time

    from zoo.classifier import paths, save_classifier, train_classifier

    t0 = time.perf_counter()
    model, record = train_classifier(data)
    seconds = time.perf_counter() - t0
    record = save_classifier(model, record, out)
    weights, rec = paths(data, out)
    click.echo(f"wrote {weights} and {rec.name}: sha256 {record['sha256']}")
    click.echo(f"train accuracy {record['train_accuracy']:.4f}, test accuracy "
               f"{record['test_accuracy']:.4f} ({record['n_test']} images), "
               f"trained in {seconds:.1f} s")


@classifier.command("check", short_help="Check the weights' sha256 and recompute the test accuracy.")
@click.option("--data", default="digits", show_default=True, type=_CLASSIFIER_DATA,
              help="Dataset whose test split the accuracy is measured on.")
@click.option("--weights", type=click.Path(dir_okay=False),
              help="A classifier's .safetensors (its record is the .json beside it) "
              "[default: the package's DATA-classifier.safetensors].")
def classifier_check(data: str, weights: str | None) -> None:
    """Check the weights' sha256 against their record and recompute the test accuracy; a
    mismatching file (or an accuracy other than the recorded one) is an error, exit 2."""
    from zoo.classifier import _image_set, accuracy, load_classifier, paths

    model, record = load_classifier(data, weights)
    images = _image_set(data)
    acc = accuracy(model, images.test, images.test_labels)
    click.echo(f"{weights or paths(data)[0]}: sha256 {record['sha256']} matches its record")
    click.echo(f"test accuracy {acc:.4f} ({round(acc * len(images.test))}/{len(images.test)}), "
               f"recorded {record['test_accuracy']:.4f}")
    if abs(acc - record["test_accuracy"]) > 0.5 / len(images.test):
        raise ZooError(f"test accuracy {acc:.4f} differs from the recorded "
                       f"{record['test_accuracy']:.4f}")


# --- zoo autoencoder: the first stage of latent diffusion (zoo/autoencoder.py) --------------------

_AUTOENCODER_DATA = click.Choice(["digits", "mnist"])


@cli.group()
def autoencoder() -> None:
    """The autoencoder whose latents the latent datasets are (latent-digits, latent-mnist).

    It lives in results/autoencoders/DATA/ (weights.safetensors, config.json with its sha256,
    reconstructions.png); $ZOO_AUTOENCODER_DIR replaces results/autoencoders. A latent run
    records the sha256 it was trained with and refuses any other autoencoder.
    """


@autoencoder.command("train", short_help="Train the autoencoder deterministically; write weights and config.")
@click.option("--data", default="digits", show_default=True, type=_AUTOENCODER_DATA,
              help="Image dataset whose train split the autoencoder learns.")
@click.option("--latent", default=16, show_default=True, type=POSITIVE_INT,
              help="Numbers in the (flat) latent.")
@click.option("--out", type=click.Path(file_okay=False),
              help="Folder for weights.safetensors, config.json and reconstructions.png "
              "[default: results/autoencoders/DATA, or $ZOO_AUTOENCODER_DIR/DATA].")
def autoencoder_train(data: str, latent: int, out: str | None) -> None:
    """Train the autoencoder deterministically (seed 0, one thread, fixed data order and noise)
    and write its weights, config (latent scale and shift, reconstruction MSE and FD, sha256,
    settings, versions) and a grid of test reconstructions. On the same machine and library
    versions a retrained file has the same sha256. Runs trained on the latents of an earlier
    autoencoder then refuse to load (retrain them)."""
    from zoo.autoencoder import (
        AutoencoderConfig,
        _float64,
        _image_set,
        reconstruction_fd,
        save_autoencoder,
        train_autoencoder,
    )
    from zoo.data import autoencoder_dir
    from zoo.image_metrics import classifier_of

    shape = tuple(_image_set(data).train.shape[1:])
    model, record = train_autoencoder(data, AutoencoderConfig(shape=shape, latent=latent))

    if classifier_of(data) is not None:
        try:
            record["reconstruction_fd"] = reconstruction_fd(_float64(model), record)
        except ZooError as e:  # no classifier for this data (mnist's is not shipped)
            click.echo(f"no reconstruction FD: {e}", err=True)
    record = save_autoencoder(model, record, out)
    where = Path(out) if out else autoencoder_dir(data)
    click.echo(f"wrote {where}/weights.safetensors, config.json, reconstructions.png: "
               f"sha256 {record['sha256']}")
    click.echo(f"reconstruction MSE train {record['train_mse']:.5f}, test {record['test_mse']:.5f}; "
               f"latent scale {record['latent_scaling']['scale']:.4f}; trained in "
               f"{record['train_seconds']:.1f} s")
    if "reconstruction_fd" in record:
        r = record["reconstruction_fd"]
        click.echo(f"FD at t_min vs the {r['n_ref']} test images: test reconstructions "
                   f"{r['test']:.3f}; reconstructed train draws of {r['n']} "
                   f"{r['train_draws'][0]:.3f} ± {r['train_draws'][1]:.3f}, real train draws "
                   f"(the floor) {r['floor'][0]:.3f} ± {r['floor'][1]:.3f}")


@autoencoder.command("check", short_help="Check the weights' sha256 and recompute the test MSE.")
@click.option("--data", default="digits", show_default=True, type=_AUTOENCODER_DATA)
@click.option("--dir", "directory", type=click.Path(file_okay=False),
              help="The autoencoder's folder [default: results/autoencoders/DATA, or "
              "$ZOO_AUTOENCODER_DIR/DATA].")
def autoencoder_check(data: str, directory: str | None) -> None:
    """Check the weights' sha256 against config.json and recompute the test reconstruction MSE;
    a mismatching file (or an MSE other than the recorded one) is an error, exit 2."""
    from zoo.autoencoder import _image_set, load_autoencoder, reconstruction_mse
    from zoo.data import autoencoder_dir

    where = Path(directory) if directory else autoencoder_dir(data)
    model, record = load_autoencoder(where)
    if record.get("data") != data:
        raise ZooError(f"{where}: an autoencoder for {record.get('data')!r}, not {data!r}")
    mse = reconstruction_mse(model, _image_set(data).test)
    click.echo(f"{where / 'weights.safetensors'}: sha256 {record['sha256']} matches config.json")
    click.echo(f"test reconstruction MSE {mse:.6f} ({len(_image_set(data).test)} images), "
               f"recorded {record['test_mse']:.6f}")
    if abs(mse - record["test_mse"]) > 1e-9 * max(record["test_mse"], 1e-12):
        raise ZooError(f"test reconstruction MSE {mse:.6g} differs from the recorded "
                       f"{record['test_mse']:.6g}")


JAX_CACHE_MAX_BYTES = 2 * 2**30


def jax_compilation_cache() -> None:
    """Keep XLA's compiled programs on disk for every zoo command and the workers it starts.

    A sweep compiles the same training step once per seed, and a resumed run compiles it again;
    a cached executable is reused instead (a UNet step: about 30 s of compiling on this CPU).
    The cache key is the program and the compiler options, so results are bit-for-bit those of
    a fresh compile. Set through the environment before JAX is imported, so spawned workers
    inherit it: ``JAX_COMPILATION_CACHE_DIR`` picks the folder (empty: no cache), default
    ``$ZOO_CACHE_DIR/jax`` (``~/.cache/zoo/jax``, beside the noise floors' cache), least
    recently used entries dropped beyond 2 GiB.
    """
    base = os.environ.get("ZOO_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache",
                                                            "zoo")
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(base, "jax"))
    os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(JAX_CACHE_MAX_BYTES))


def main(argv: list[str] | None = None) -> None:
    """Entry point: click's own usage errors and ZooError become one line and exit code 2."""
    jax_compilation_cache()
    try:
        rv = cli.main(args=argv, prog_name="zoo", standalone_mode=False)
    except click.exceptions.UsageError as e:
        msg = e.format_message().replace("\n", " ")
        cmd = e.ctx.command_path if e.ctx else "zoo"
        click.echo(f"{cmd}: error: {msg}", err=True)
        sys.exit(2)
    except ZooError as e:
        click.echo(f"zoo: error: {e}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("zoo: aborted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("zoo: interrupted", err=True)
        sys.exit(130)
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":
    main()

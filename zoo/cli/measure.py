"""Commands on one training run: sample, nll, check, eval, curve."""

from __future__ import annotations

import json
import math
from pathlib import Path

import click

from zoo.cli.params import POSITIVE_INT, RUN_DIR, Finite
from zoo.registry import ZooError


@click.command()
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


@click.command()
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


@click.command()
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


@click.command("eval")
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


@click.command("curve")
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

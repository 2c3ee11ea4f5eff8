"""Commands over many runs: sweep, leaderboard, oracle."""

from __future__ import annotations

from pathlib import Path

import click

from zoo.cli.params import POSITIVE_INT, backends
from zoo.registry import ZooError


@click.command("sweep")
@click.option("--suite", "suite_name", default="quick", show_default=True,
              help="quick (free, energy, energysq on gmm8 at 30000 steps + a torch twin, 5-12 min), "
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

    bks = backends(backend_list) if backend_list else None
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


@click.command("leaderboard")
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


@click.command("oracle")
@click.option("--data", default="gmm8", show_default=True,
              help="A dataset with closed-form rho_t: gmm8, checkerboard, gmm-d or gmm-dN.")
@click.option("--magnitudes", default="0.05,0.1,0.2,0.5,1.0", show_default=True,
              help="Comma-separated relative error sizes m = sqrt(E|e|^2 / E|S|^2) (every t).")
@click.option("--kinds", default="none,gradient,divfree,stein,generic", show_default=True,
              help="Comma-separated error kinds (see zoo/oracle/perturbations.py).")
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

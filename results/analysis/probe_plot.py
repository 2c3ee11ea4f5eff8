"""Figures of the budget probes that train a suite's runs on: the verdict metric of ODE samples
against training steps, the suite's runs (JAX, seeds 0-2) beside the probe runs of the same
seeds trained on with the same settings (a constant learning rate, so up to the suite's budget a
probe is the same training as the suite's run of that seed), and the noise floor of real data.

- checkerboard: the suite's 100000 steps of free-, energysq-, energy- and qc-mlp; the probe
  trains free-mlp and qc-mlp (seeds 0-2) and energysq-mlp (seed 0) on to 300000.
- gmm8: the suite's 30000 steps of free-, energysq-, energy- and qc-mlp; the probe trains
  free-mlp, energy-mlp and qc-mlp on to 100000.
- latent-digits: the images suite's 30000 steps of the latent MLPs, memorised share of decoded
  samples; the probe trains free-, energysq-, qc- and energy-mlp on to 100000.

Reads only committed JSON; writes DATA-budget.png beside this file.

    .venv/bin/python results/analysis/probe_plot.py checkerboard gmm8 latent-digits
"""

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from gmmd_budget_plot import curve  # noqa: E402  (the same reading of a curve.json, beside this file)

LOGRHO = ("trimmed_log_density", "trimmed mean log rho of ODE samples (higher is better)",
          "lower right")
MEMO = ("memorised", "memorised share of ODE samples (decoded; lower is better)", "upper left")

HERE = Path(__file__).resolve().parent
COLOURS = {"free-mlp": "k", "energysq-mlp": "tab:blue", "energy-mlp": "tab:orange",
           "qc-mlp": "tab:red"}
# data: (suite, suite budget, probe folder, probe budget, x limits, y limits, metric)
PROBES = {
    "checkerboard": ("standard", 100000, HERE / "checkerboard-budget/300k", 300000, (2e4, 3.3e5),
                     (-2.95, -2.19), LOGRHO),
    "gmm8": ("standard", 30000, HERE / "gmm8-budget", 100000, (4e3, 1.1e5), (-2.3, -1.65), LOGRHO),
    "latent-digits": ("images", 30000, HERE / "latent-budget", 100000, (4e2, 1.1e5), (0, 0.6),
                      MEMO),
}


def draw(data: str) -> Path:
    suite, budget, probe, probe_budget, xlim, ylim, (metric, ylabel, where) = PROBES[data]
    runs = HERE.parents[1] / "results/runs" / suite / data
    fig, ax = plt.subplots(figsize=(8, 4.8))
    floor = None
    for arch, colour in COLOURS.items():
        seeds = [s for s in range(3) if (runs / f"{arch}-jax-s{s}/curve.json").is_file()]
        for i, s in enumerate(seeds):
            steps, vals, floor = curve(runs / f"{arch}-jax-s{s}/curve.json", metric)
            ax.plot(steps, vals, color=colour, lw=1.0, marker=".", ms=3, alpha=0.8,
                    label=f"{arch}, suite, {budget} ({len(seeds)} seeds)" if i == 0 else None)
        probes = [s for s in range(3) if (probe / f"{arch}-jax-s{s}-curve.json").is_file()]
        for i, s in enumerate(probes):
            steps, vals, floor = curve(probe / f"{arch}-jax-s{s}-curve.json", metric)
            ax.plot(steps, vals, color=colour, lw=2.0, ls="--", marker="o", ms=4,
                    label=f"{arch}, probe, {probe_budget} (seed{'s' if len(probes) > 1 else ''} "
                          f"{','.join(map(str, probes))})" if i == 0 else None)
    if floor is not None:
        m, sd = floor
        ax.axhspan(m - 2 * sd, m + 2 * sd, color="0.85", zorder=0, label="real data ± 2 floor std")
    ax.set_xscale("log")
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_xlabel("training step")
    ax.set_ylabel(ylabel)
    ax.set_title(f"{data}: the suite's {budget} steps and the {probe_budget}-step probe")
    ax.legend(fontsize=8, loc=where)
    fig.tight_layout()
    out = HERE / f"{data}-budget.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


if __name__ == "__main__":
    names = sys.argv[1:] or list(PROBES)
    unknown = [n for n in names if n not in PROBES]
    if unknown:  # refuse before drawing anything
        print(f"probe_plot: no probe figure for {unknown[0]!r}; choose from {', '.join(PROBES)}",
              file=sys.stderr)
        sys.exit(2)
    for name in names:
        print(draw(name))

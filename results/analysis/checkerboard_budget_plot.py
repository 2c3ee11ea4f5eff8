"""Figure of the checkerboard budget probe: trimmed log rho of ODE samples against training steps.

The standard suite's checkerboard runs (100000 steps, JAX, seeds 0-2) of free-mlp, energysq-mlp,
energy-mlp and qc-mlp, and the probe that trains free-mlp and qc-mlp (seeds 0-2) and energysq-mlp
(seed 0) on to 300000 steps with the same settings (a constant learning rate, so up to 100000
steps the probe is the same training as the suite's run of that seed), beside the noise floor of
real data.
Reads only committed JSON; writes checkerboard-budget.png beside this file.

    .venv/bin/python results/analysis/checkerboard_budget_plot.py
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from gmmd_budget_plot import curve  # noqa: E402  (the same reading of a curve.json, beside this file)

HERE = Path(__file__).resolve().parent
RUNS = HERE.parents[1] / "results/runs/standard/checkerboard"
PROBE = HERE / "checkerboard-budget/300k"


def main() -> None:
    fig, ax = plt.subplots(figsize=(8, 4.8))
    floor = None
    colours = {"free-mlp": "k", "energysq-mlp": "tab:blue", "energy-mlp": "tab:orange",
               "qc-mlp": "tab:red"}
    for arch, colour in colours.items():
        seeds = [s for s in range(3) if (RUNS / f"{arch}-jax-s{s}/curve.json").is_file()]
        for i, s in enumerate(seeds):
            steps, vals, floor = curve(RUNS / f"{arch}-jax-s{s}/curve.json")
            ax.plot(steps, vals, color=colour, lw=1.0, marker=".", ms=3, alpha=0.8,
                    label=f"{arch}, suite, 100000 ({len(seeds)} seeds)" if i == 0 else None)
        probes = [s for s in range(3) if (PROBE / f"{arch}-jax-s{s}-curve.json").is_file()]
        for i, s in enumerate(probes):
            steps, vals, floor = curve(PROBE / f"{arch}-jax-s{s}-curve.json")
            ax.plot(steps, vals, color=colour, lw=2.0, ls="--", marker="o", ms=4,
                    label=f"{arch}, probe, 300000 (seed{'s' if len(probes) > 1 else ''} "
                          f"{','.join(map(str, probes))})" if i == 0 else None)
    if floor is not None:
        m, sd = floor
        ax.axhspan(m - 2 * sd, m + 2 * sd, color="0.85", zorder=0, label="real data ± 2 floor std")
    ax.set_xscale("log")
    ax.set_xlim(2e4, 3.3e5)
    ax.set_ylim(-2.95, -2.19)
    ax.set_xlabel("training step")
    ax.set_ylabel("trimmed mean log rho of ODE samples (higher is better)")
    ax.set_title("checkerboard: the suite's 100000 steps and the 300000-step probe")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(HERE / "checkerboard-budget.png", dpi=110)


if __name__ == "__main__":
    main()

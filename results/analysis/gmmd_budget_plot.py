"""Figure of the gmm-d budget probes: trimmed log rho of ODE samples against training steps.

free-mlp trained to 100000 and to 300000 steps, energy-mlp and qc-mlp to 100000 (JAX; same
settings as the standard suite, whose constant learning rate makes each probe the same training
as the shorter run up to its end), beside the fields that lead at the suite's 30000 steps
(energysq, helmholtz, stein) and the noise floor of real data. Reads only committed JSON; writes gmmd-budget.png beside this file.

    .venv/bin/python results/analysis/gmmd_budget_plot.py
"""

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).resolve().parent
RUNS = HERE.parents[1] / "results/runs/standard/gmm-d"
METRIC = "trimmed_log_density"


def curve(path: Path, metric: str = METRIC) -> tuple[list[int], list[float], tuple[float, float]]:
    """(steps, values, (floor mean, floor std)) of one metric of a curve.json."""
    points = json.loads(path.read_text())["points"]
    m = points[-1]["metrics"][metric]
    return ([p["step"] for p in points], [p["metrics"][metric]["value"] for p in points],
            (m["floor_mean"], m["floor_std"]))


def main() -> None:
    fig, ax = plt.subplots(figsize=(8, 4.8))
    floor = None
    styles = {"free-mlp, 300000": ("k", "-"), "free-mlp, 100000": ("0.6", "--"),
              "energysq-mlp": ("tab:blue", "-"), "helmholtz-mlp": ("tab:orange", "-"),
              "stein-mlp": ("tab:green", "-"), "energy-mlp, 100000": ("tab:purple", "--"),
              "qc-mlp, 100000": ("tab:red", "--")}
    sources = {"free-mlp, 300000": lambda s: HERE / f"gmmd-budget/300k/free-mlp-jax-s{s}-curve.json",
               "free-mlp, 100000": lambda s: HERE / f"gmmd-budget/free-mlp-jax-s{s}-curve.json"}
    for arch in ("energysq-mlp", "helmholtz-mlp", "stein-mlp"):
        sources[arch] = lambda s, a=arch: RUNS / f"{a}-jax-s{s}/curve.json"
    for arch in ("energy-mlp", "qc-mlp"):  # still rising at 30000: trained on like free
        sources[f"{arch}, 100000"] = lambda s, a=arch: HERE / f"gmmd-budget/{a}-jax-s{s}-curve.json"
    for label, where in sources.items():
        colour, ls = styles[label]
        seeds = [s for s in range(3) if where(s).is_file()]
        for i, s in enumerate(seeds):
            steps, vals, floor = curve(where(s))
            ax.plot(steps, vals, color=colour, ls=ls, marker=".", ms=4, lw=1.2,
                    label=f"{label} ({len(seeds)} seed{'s' if len(seeds) > 1 else ''})"
                    if i == 0 else None)
    if floor is not None:
        m, sd = floor
        ax.axhspan(m - 2 * sd, m + 2 * sd, color="0.85", zorder=0, label="real data ± 2 floor std")
    ax.set_xscale("log")
    ax.set_ylim(-15.0, -13.45)
    ax.set_xlabel("training step")
    ax.set_ylabel("trimmed mean log rho of ODE samples (higher is better)")
    ax.set_title("gmm-d (d = 16): free-, energy- and qc-mlp trained on; the heads that lead at 30000")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(HERE / "gmmd-budget.png", dpi=110)


if __name__ == "__main__":
    main()

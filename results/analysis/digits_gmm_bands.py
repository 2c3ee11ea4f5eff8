"""Where digits-gmm samples lose closed-form log rho: the Mahalanobis terms of each sample, split
by the eigen-directions of its component's covariance.

digits-gmm's rho_{t_min} is sum_k w_k N(alpha m_k, Ct_k), Ct_k = alpha^2 C_k + sigma^2 I with
eigenvalues alpha^2 lam_kj + sigma^2 (the data set's own eigen-decomposition). For a sample x and
its most responsible component k, log N = const_k - q/2 with q = sum_j q_j, q_j = (u_kj . (x -
alpha m_k))^2 / (alpha^2 lam_kj + sigma^2): real data has E q_j = 1 in every direction, so
sum over a band of B directions is about B, and a sample excess of Q over the band costs Q/2 nats.
The table lists the mean q summed over five bands of directions (ascending eigenvalue) for fresh
rho_{t_min} data and for the committed seed-0 ODE and SDE samples of each digits-gmm field.

Reads the committed samples (results/runs/images/digits-gmm/*-s0/samples-*.npz); prints a
markdown table.

    .venv/bin/python results/analysis/digits_gmm_bands.py
"""

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from zoo.api import make_schedule  # noqa: E402
from zoo.data import get_dataset  # noqa: E402

BANDS = [(0, 8), (8, 16), (16, 32), (32, 48), (48, 64)]


def band_terms(x: np.ndarray, mix, alpha: float, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """(log rho_{t_min}(x) [n], q [n, d]: the Mahalanobis terms of each sample's most
    responsible component, directions in ascending eigenvalue)."""
    x = x.reshape(len(x), -1).astype(np.float64)
    ev = alpha**2 * mix.eigvals + sigma**2  # [K, d]
    lp, qs = [], []
    for k in range(len(mix.weights)):
        q = ((x - alpha * mix.means[k]) @ mix.eigvecs[k]) ** 2 / ev[k]
        qs.append(q)
        lp.append(np.log(mix.weights[k]) - 0.5 * q.sum(1) - 0.5 * np.log(2 * np.pi * ev[k]).sum())
    lp = np.stack(lp, 1)
    top = lp.max(1)
    logrho = top + np.log(np.exp(lp - top[:, None]).sum(1))
    best = lp.argmax(1)
    q = np.stack([qs[k][i] for i, k in enumerate(best)])
    order = np.argsort(mix.eigvals, axis=1)  # ascending, per component
    return logrho, np.take_along_axis(q, order[best], axis=1)


def main() -> None:
    ds = get_dataset("digits-gmm")
    mix = ds.exact
    sch = make_schedule("ou", 1e-3, 5.0)
    alpha, sigma = float(sch.alpha(sch.t_min)), float(sch.sigma(sch.t_min))
    ev = np.sort(alpha**2 * mix.eigvals + sigma**2, axis=1)
    rng = np.random.default_rng(0)
    real = alpha * np.asarray(mix.sample(rng, 2000)) + sigma * rng.standard_normal((2000, 64))
    rows = [("real rho_t_min (2000 draws)", real)]
    for f in sorted((ROOT / "results/runs/images/digits-gmm").glob("*-s0/samples-*.npz")):
        with np.load(f) as z:
            rows.append((f"{f.parent.name} {f.stem.split('-')[1].upper()}", z[z.files[0]]))
    head = ["samples", "mean log rho", *(f"q, directions {lo + 1}-{hi}" for lo, hi in BANDS),
            "excess q / 2 (nats)"]
    print("eigenvalues of Ct_k by band (min-max over components): "
          + ", ".join(f"{lo + 1}-{hi}: {ev[:, lo].min():.4f}-{ev[:, hi - 1].max():.3f}"
                      for lo, hi in BANDS))
    print("\n| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for name, x in rows:
        logrho, q = band_terms(x, mix, alpha, sigma)
        sums = [q[:, lo:hi].sum(1).mean() for lo, hi in BANDS]
        excess = (sum(sums) - 64) / 2
        print(f"| {name} | {logrho.mean():.2f} | " + " | ".join(f"{v:.1f}" for v in sums)
              + f" | {excess:.1f} |")


if __name__ == "__main__":
    main()

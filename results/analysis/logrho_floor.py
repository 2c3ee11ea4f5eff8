"""Part B helper: the sampling distribution of mean log rho_{t_min} for real rho_{t_min} data.

For each dataset: per-point log rho_{t_min} of N real points (x = alpha x0 + sigma eps), its
mean, SD and quantiles, and the SD of the mean over repeated draws of n = 2000 (what the
noise floor of `zoo eval` estimates from 20 draws). Also E_{rho_t'}[log rho_{t_min}] for real
points of a slightly later time t' (samples that end 'a bit too noisy'), to convert a deficit
into an equivalent terminal-time error.
"""

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
torch.set_num_threads(1)
from zoo.api import create, make_schedule  # noqa: E402
from zoo.data import get_dataset  # noqa: E402

N, n = 400_000, 2000
for data in ("checkerboard", "gmm8"):
    sch = make_schedule("ou", 1e-3, 5.0)
    ds = get_dataset(data)
    ex = create("exact", "torch", data=data, schedule=sch, dtype="float64")
    rng = np.random.default_rng(123)

    def logp(x, ex=ex):
        with torch.no_grad():
            return ex.log_density(torch.as_tensor(x), torch.full((len(x),), 1e-3,
                                                                 dtype=torch.float64)).numpy()

    def real(t, m, sch=sch, ds=ds, rng=rng):
        return (float(sch.alpha(t)) * ds.sample(rng, m)
                + float(sch.sigma(t)) * rng.standard_normal((m, 2)))

    lp = logp(real(1e-3, N))
    means = lp[: (N // n) * n].reshape(-1, n).mean(1)
    print(f"{data}: mean {lp.mean():.4f}  per-point SD {lp.std():.3f}  SE(n=2000) "
          f"{lp.std() / np.sqrt(n):.4f}  SD of 200 means(n=2000) {means.std(ddof=1):.4f}  "
          f"min {lp.min():.1f}  q0.001 {np.quantile(lp, 0.001):.2f}  q0.01 {np.quantile(lp, 0.01):.2f}"
          f"  median {np.median(lp):.3f}")
    # floors as `zoo eval` gets them: SD over 20 draws, repeated to see its spread
    sds = [np.std(rng.choice(means, 20, replace=False), ddof=1) for _ in range(200)]
    print(f"   20-draw floor SD: median {np.median(sds):.4f}, 10-90% {np.quantile(sds, 0.1):.4f}-"
          f"{np.quantile(sds, 0.9):.4f}")
    base = lp.mean()
    for tp in (1.01e-3, 1.02e-3, 1.05e-3, 1.1e-3, 1.2e-3):
        v = logp(real(tp, N)).mean()
        dvar = float(sch.sigma(tp)) ** 2 - float(sch.sigma(1e-3)) ** 2
        print(f"   samples from rho_t' t'={tp:.4g} (sigma^2 +{dvar:.2e}): deficit {v - base:+.4f}")

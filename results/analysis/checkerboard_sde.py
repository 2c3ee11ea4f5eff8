"""Part B helper: does the reverse SDE on the exact score land on rho_{t_min}?

Every number is the mean closed-form log rho_{t_min} of n samples minus that of n_ref real
rho_{t_min} points (x = alpha x0 + sigma eps), so 0 is perfect; the SE is from the per-point
spread of both sets. Samplers:
  engine   : zoo.sampling.sample_field, torch engine (torchsde Euler-Maruyama), exact torch field
  diffrax  : zoo.sampling.sample_field, diffrax engine (Euler), exact jax field
  ref      : an independent Euler-Maruyama loop written here (numpy noise, torch score)
  ode      : probability-flow ODE, dopri5, rtol = atol = 1e-5

  nice -n 15 .venv/bin/python results/analysis/checkerboard_sde.py --data checkerboard \
      --sampler engine --steps 500 2000 8000 --n 20000 [--t-min 1e-3] [--rho 2] [--dtype float64]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402

torch.set_num_threads(1)

from solvers.timegrid import TimeGrid, sde_diffusion, sde_drift  # noqa: E402
from zoo.api import create, make_schedule  # noqa: E402
from zoo.data import get_dataset  # noqa: E402


def log_rho(ex, x, t):
    with torch.no_grad():
        return ex.log_density(torch.as_tensor(np.asarray(x, np.float64)),
                              torch.full((len(x),), t, dtype=torch.float64)).numpy()


def real_points(ds, sched, n, seed):
    rng = np.random.default_rng([3, 1000 + seed])
    a, s = float(sched.alpha(sched.t_min)), float(sched.sigma(sched.t_min))
    return a * ds.sample(rng, n) + s * rng.standard_normal((n, ds.dim))


def em_reference(ex, sched, n, steps, seed, rho, dtype, t_stop=None, final_noise=True):
    """Plain Euler-Maruyama on the same flipped time grid (the same formulas as the engines,
    written out): x <- x + drift(x, tau) dtau + g(tau) sqrt(dtau) xi."""
    dt = torch.float64 if dtype == "float64" else torch.float32
    grid = TimeGrid.of(sched, rho)
    rng = np.random.default_rng([11, seed])
    x = torch.as_tensor(rng.standard_normal((n, 2)), dtype=dt)
    taus = np.linspace(0.0, 1.0, steps + 1)
    for i in range(steps):  # the box-mixture score is an autograd gradient: keep x graph-free
        x = x.detach()
        tau0, h = torch.tensor(taus[i], dtype=dt), taus[i + 1] - taus[i]
        t0 = grid.t(tau0)
        s = ex.score(x, t0.expand(n))
        x = x + sde_drift(sched, grid, x, s, tau0) * h
        if final_noise or i < steps - 1:
            xi = torch.as_tensor(rng.standard_normal((n, 2)), dtype=dt)
            x = x + sde_diffusion(sched, grid, tau0) * math.sqrt(h) * xi
    return x.detach().numpy()


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--data", default="checkerboard")
    p.add_argument("--sampler", default="engine", choices=["engine", "diffrax", "ref", "ode",
                                                           "ref-nofinalnoise"])
    p.add_argument("--steps", type=int, nargs="+", default=[500])
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--t-min", type=float, default=1e-3)
    p.add_argument("--rho", type=float, default=2.0)
    p.add_argument("--dtype", default="float64")
    a = p.parse_args(argv)

    sched = make_schedule("ou", a.t_min, 5.0)
    ds = get_dataset(a.data)
    ex64 = create("exact", "torch", data=a.data, schedule=sched, dtype="float64")
    rows = []
    for seed in range(a.seeds):
        real = log_rho(ex64, real_points(ds, sched, a.n, seed), a.t_min)
        for steps in a.steps:
            if a.sampler in ("ref", "ref-nofinalnoise"):
                x = em_reference(ex64, sched, a.n, steps, seed, a.rho, a.dtype,
                                 final_noise=a.sampler == "ref")
            else:
                from zoo.sampling import sample_field

                backend = "jax" if a.sampler == "diffrax" else "torch"
                ex = create("exact", backend, data=a.data, schedule=sched, dtype=a.dtype)
                solver = "ode" if a.sampler == "ode" else "sde"
                out = sample_field(ex, backend, sched, ds.shape, n=a.n, seed=seed, solver=solver,
                                   steps=steps if solver == "sde" else None, rho=a.rho,
                                   engine="diffrax" if a.sampler == "diffrax" else "torch",
                                   dtype=a.dtype)
                x = out["samples"]
            lp = log_rho(ex64, x, a.t_min)
            d = float(lp.mean() - real.mean())
            se = float(math.sqrt(lp.var() / len(lp) + real.var() / len(real)))
            row = {"data": a.data, "sampler": a.sampler, "steps": steps, "seed": seed, "n": a.n,
                   "t_min": a.t_min, "rho": a.rho, "dtype": a.dtype, "deficit": d, "se": se,
                   "real_mean": float(real.mean()), "finite": bool(np.isfinite(lp).all())}
            rows.append(row)
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()

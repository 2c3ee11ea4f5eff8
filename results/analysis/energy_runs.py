"""Part A helper: train a field on gmm8 with the issue's settings, then measure it.

Usage (one heavy process at a time, single-threaded):
  nice -n 15 env OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 \
    XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" \
    .venv/bin/python results/analysis/energy_runs.py ARCH STEPS [--lr 1e-3] [--width 128] [--depth 3]

Settings (the issue's): JAX, gmm8, width 128, depth 3, power t-sampling (rho 2), batch 512,
seed 0; samples: probability-flow ODE (torch engine, dopri5, rtol = atol = 1e-5, via the DLPack
bridge), n = 2000, seed 0; score = mean closed-form log rho_{t_min} of the samples.
Also writes the relative score error E|s - S|^2 / E|S|^2 per t against the exact score.
Output: /tmp/inv/<arch>-<steps>-lr<lr>-w<width>d<depth>/ (run dir) and summary.json in it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

TIMES = [1e-3, 3e-3, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0]


def score_error_per_t(field, backend, schedule, data="gmm8", n=2000, seed=0):
    """{t: (E|s-S|^2/E|S|^2, E|s-S|^2, sigma_t^2 E|s-S|^2)} at forward-process points."""
    from zoo import backends
    from zoo.api import create
    from zoo.data import get_dataset

    ds = get_dataset(data)
    b = backends.get(backend)
    ex = create("exact", backend, data=data, schedule=schedule, dtype="float64")
    rng = np.random.default_rng([7, seed])
    out = {}
    for t in TIMES:
        a, s_t = float(schedule.alpha(t)), float(schedule.sigma(t))
        x = a * ds.sample(rng, n) + s_t * rng.standard_normal((n, ds.dim))
        tt = np.full(n, t)
        s = b.score(field, x.astype(np.float32), tt.astype(np.float32)).astype(np.float64)
        S = b.score(ex, x, tt)
        e2 = ((s - S) ** 2).sum(1)
        out[t] = {"rel": float(e2.mean() / (S**2).sum(1).mean()), "err2": float(e2.mean()),
                  "sig2_err2": float(s_t**2 * e2.mean())}
    return out


def mean_log_rho(samples, schedule, data="gmm8"):
    import torch

    from zoo.api import create

    ex = create("exact", "torch", data=data, schedule=schedule)
    x = torch.as_tensor(np.asarray(samples, np.float64).reshape(len(samples), -1))
    with torch.no_grad():
        lp = ex.log_density(x, torch.full((len(x),), schedule.t_min, dtype=torch.float64))
    return float(lp.mean())


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("arch")
    p.add_argument("steps", type=int)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default="gmm8")
    p.add_argument("--tag", default="")
    p.add_argument("--act", default="silu")
    a = p.parse_args(argv)

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from zoo.api import load, make_schedule
    from zoo.sampling import sample_field
    from zoo.train import TrainConfig, train

    cfg = TrainConfig(arch=a.arch, backend="jax", data=a.data, steps=a.steps, seed=a.seed,
                      lr=a.lr, t_sampling="power", options={"width": a.width, "depth": a.depth, "act": a.act})
    act = "" if a.act == "silu" else "-" + a.act
    out = Path(f"/tmp/inv/{a.arch}-{a.data}-{a.steps}-lr{a.lr:g}-w{a.width}d{a.depth}-s{a.seed}"
               f"{act}{a.tag}")
    train(cfg, out, show_progress=False)
    field, c = load(out)
    sched = make_schedule(c["schedule"], c["t_min"], c["T"])
    smp = sample_field(field, "jax", sched, (2,), n=2000, seed=0, solver="ode")
    lr = mean_log_rho(smp["samples"], sched, a.data)
    err = score_error_per_t(field, "jax", sched, a.data)
    losses = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    summ = {"arch": a.arch, "steps": a.steps, "lr": a.lr, "width": a.width, "depth": a.depth, "act": a.act,
            "seed": a.seed, "mean_log_rho_ode": lr, "nfe": smp["nfe"],
            "final_loss": losses[-1]["loss"], "steps_per_s": losses[-1]["steps_per_s"],
            "score_error": err}
    (out / "summary.json").write_text(json.dumps(summ, indent=1))
    print(json.dumps({k: v for k, v in summ.items() if k != "score_error"}))
    for t, v in err.items():
        print(f"  t={t:<6g} rel={v['rel']:.4f} err2={v['err2']:.4g} sig2*err2={v['sig2_err2']:.4g}")


if __name__ == "__main__":
    main()

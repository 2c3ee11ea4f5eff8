"""Part A helper: split a trained gmm8 field's score error into radial and tangential parts.

A field that learned a ring (a density that depends on |x| only) has tangential score 0, so its
error is the exact score's tangential part. Usage: energy_ring.py RUN_DIR [RUN_DIR ...]
"""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from zoo import backends  # noqa: E402
from zoo.api import create, load, make_schedule  # noqa: E402
from zoo.data import get_dataset  # noqa: E402

ds = get_dataset("gmm8")
for run in sys.argv[1:]:
    field, cfg = load(run)
    sch = make_schedule(cfg["schedule"], cfg["t_min"], cfg["T"])
    ex = create("exact", "jax", data="gmm8", schedule=sch, dtype="float64")
    b = backends.get("jax")
    rng = np.random.default_rng(5)
    print(Path(run).name)
    for t in (0.01, 0.03, 0.1):
        a, s = float(sch.alpha(t)), float(sch.sigma(t))
        x = a * ds.sample(rng, 4000) + s * rng.standard_normal((4000, 2))
        tt = np.full(4000, t)
        sf = b.score(field, x.astype(np.float32), tt.astype(np.float32)).astype(np.float64)
        S = b.score(ex, x, tt)
        u = x / np.linalg.norm(x, axis=1, keepdims=True)
        v = np.stack([-u[:, 1], u[:, 0]], 1)
        S2 = (S**2).sum(1).mean()
        e = sf - S
        print(f"  t={t}: err radial {((e*u).sum(1)**2).mean()/S2:.4f} tangential "
              f"{((e*v).sum(1)**2).mean()/S2:.4f} | exact tangential share "
              f"{((S*v).sum(1)**2).mean()/S2:.4f} | field tangential share "
              f"{((sf*v).sum(1)**2).mean()/S2:.4f}")

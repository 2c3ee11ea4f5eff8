"""Train one field on digits with the standard protocol and print its DSM loss on two fixed
batches of 512 (python run.py ARCH STEPS; ARCH a built-in field or one of plugin.py's)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

import zoo
from zoo import backends
from zoo.train import TrainConfig, draw_batch, fit

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    import plugin  # noqa: F401  (registers energyin-unet and energyhalf-unet)

    torch.set_num_threads(1)
    arch, steps = sys.argv[1], int(sys.argv[2])
    cfg = TrainConfig(arch=arch, backend="torch", data="digits", steps=steps, batch=64,
                      log_every=50, checkpoint_every=10**9, seed=0)
    losses = []
    t0 = time.time()
    trainer = fit(cfg, on_log=lambda step, loss, rate: losses.append((step, loss)))
    out = {"arch": arch, "steps": steps, "wall_s": round(time.time() - t0, 1)}
    b, sched, pen = backends.get("torch"), zoo.make_schedule("ou"), cfg.penalty_spec()
    for seed in (99, 100):
        fixed = draw_batch(np.random.default_rng(seed), zoo.get_dataset("digits"),
                           TrainConfig(arch=arch, backend="torch", batch=512))
        out[f"fixed_loss_{seed}"] = b.loss_and_grads(trainer.field, sched, fixed, pen)[0]
    out["train_loss_last200"] = float(np.mean([loss for s, loss in losses if s > steps - 200]))
    print(json.dumps(out), flush=True)

"""The training protocol learns: free-mlp on gmm8 approaches the exact score."""

from __future__ import annotations

import numpy as np
from conftest import forward_points

import zoo
from zoo import backends
from zoo.train import TrainConfig, fit, make_trainer


def rel_score_error(field, exact, backend, t, n=4000):
    """E ||s - S||^2 / E ||S||^2 over rho_t (float32 field, float64 ground truth)."""
    x, tt = forward_points(np.random.default_rng(11), "gmm8", t, n)
    B = backends.get(backend)
    S = B.score(exact, x, tt)
    s = B.score(field, x.astype(np.float32), tt.astype(np.float32))
    return float(((s - S) ** 2).sum() / (S**2).sum())


def test_free_mlp_learns_gmm8_in_2000_steps():
    cfg = TrainConfig(arch="free-mlp", backend="torch", data="gmm8", steps=2000, log_every=100)
    init = make_trainer(cfg)[0].field
    losses = []
    trainer = fit(cfg, on_log=lambda step, loss, rate: losses.append(loss))
    assert losses[-1] < 0.25 * trainer.first_loss  # from ~2.0 to ~0.25
    exact = zoo.create("exact", "torch", data="gmm8")
    trained = backends.get("torch").load_params(trainer.field, trainer.ema_params(), "float32")
    for t in (0.1, 0.5, 2.0):
        before = rel_score_error(init, exact, "torch", t)
        after = rel_score_error(trained, exact, "torch", t)
        assert before > 0.9  # an untrained net is no score at all
        assert after < 0.25 * before, (t, before, after)

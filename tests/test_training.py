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
    # width 128, as the suites train it (the default 256 costs 4x the arithmetic per step)
    cfg = TrainConfig(arch="free-mlp", backend="torch", data="gmm8", steps=2000, log_every=100,
                      options={"width": 128})
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


def test_torch_trainer_fused_step_equals_the_plain_loop():
    """The torch Trainer's fast path (parameter gradients by autograd.grad, fused Adam, foreach
    EMA) gives the same weights and EMA as the textbook loop (loss.backward(), Adam's for-loop,
    one EMA update per tensor), float64, to 1e-12, over steps of an energy head, qc, and a
    plugin field with a parameter whose gradient autograd returns as a broadcast view (0 * v.sum():
    the fused kernel reads garbage from such a view unless it is made contiguous)."""
    import copy
    from pathlib import Path

    import torch

    from zoo.backends.torch_backend import ema_decay, objective
    from zoo.train import draw_batch

    zoo.load_plugin(str(Path(__file__).parent / "plugins" / "unstable_fields.py"))
    small = {"width": 16, "depth": 2}
    for arch, opts in (("energy-mlp", small), ("qc-mlp", small), ("test-nan-after", {})):
        # (test-nan-after turns NaN at its 7th call; six steps stay before it)
        cfg = TrainConfig(arch=arch, backend="torch", data="gmm8", batch=32, dtype="float64",
                          options=opts)
        trainer, ds, rng = make_trainer(cfg)
        ref = copy.deepcopy(trainer.field)
        ema = {k: v.detach().clone() for k, v in ref.named_parameters()}
        opt = torch.optim.Adam(ref.parameters(), lr=cfg.lr, foreach=False)
        for i in range(1, 7):
            b = draw_batch(rng, ds, cfg)
            opt.zero_grad(set_to_none=True)
            objective(ref, trainer.schedule, {k: torch.as_tensor(v) for k, v in b.items()},
                      trainer.penalty).backward()
            opt.step()
            d = ema_decay(trainer.decay, i)
            with torch.no_grad():
                for k, p in ref.named_parameters():
                    ema[k].mul_(d).add_(p, alpha=1 - d)
            trainer.step(b)
        for k, p in ref.named_parameters():
            mine = dict(trainer.field.named_parameters())[k].detach().numpy()
            np.testing.assert_allclose(mine, p.detach().numpy(), rtol=1e-12, atol=1e-14,
                                       err_msg=f"{arch} {k}")
            np.testing.assert_allclose(trainer.ema[k].numpy(), ema[k].numpy(), rtol=1e-12,
                                       atol=1e-14, err_msg=f"{arch} ema {k}")

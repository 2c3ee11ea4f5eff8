"""Registry-driven checks: every registered field, every backend, no per-field test code."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import (
    B,
    both_backend_names,
    build,
    data_for,
    entry_id,
    forward_points,
    rel,
    shape_for,
    slow_if_image,
    trainable_entries,
)

import zoo
from zoo.train import TrainConfig, draw_batch, fit

ENTRIES = trainable_entries()
PAIRS = both_backend_names()
SLOW_ENTRIES = slow_if_image(ENTRIES)
SLOW_PAIRS = slow_if_image(PAIRS, lambda n: zoo.get_info(n, "torch"))


def test_registry_has_the_foundation_fields():
    assert {"free-mlp", "energy-mlp", "exact"} <= set(zoo.list_fields())


@pytest.mark.parametrize("info", SLOW_ENTRIES, ids=entry_id)
@pytest.mark.parametrize("dim", [2, 5])
def test_shapes_and_finite(info, dim, rng):
    if info.data == "image" and dim != 2:
        pytest.skip("image fields are tested on one image shape")
    f = build(info.name, info.backend, dim=dim, dtype="float32")
    shape = shape_for(info, dim)
    x = rng.standard_normal((7, *shape)).astype(np.float32)
    t = rng.uniform(1e-3, 5.0, 7).astype(np.float32)
    s = B(info.backend).score(f, x, t)
    assert s.shape == (7, *shape) and s.dtype == np.float32
    assert np.all(np.isfinite(s))
    for name in ("energy", "parts"):
        if hasattr(f, name):
            out = getattr(B(info.backend), name)(f, x, t)
            vals = out.values() if isinstance(out, dict) else [out]
            assert all(np.all(np.isfinite(v)) for v in vals)
    if hasattr(f, "energy"):
        assert B(info.backend).energy(f, x, t).shape == (7,)
    if hasattr(f, "parts"):
        parts = B(info.backend).parts(f, x, t)
        assert all(v.shape == (7, *shape) for v in parts.values())
        np.testing.assert_allclose(sum(parts.values()), s, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("info", SLOW_ENTRIES, ids=entry_id)
def test_every_parameter_gets_a_gradient(info, rng):
    """No parameter is dead (weights perturbed: adaLN-zero gates block gradients at exactly the
    initial point, not in general)."""
    f = build(info.name, info.backend)  # perturbed weights (see build)
    cfg = TrainConfig(arch=info.name, backend=info.backend, batch=32, data=data_for(info)[0])
    batch = draw_batch(rng, zoo.get_dataset(cfg.data), cfg)
    loss, grads = B(info.backend).loss_and_grads(f, zoo.make_schedule("ou"), batch,
                                                 cfg.penalty_spec())
    assert np.isfinite(loss)
    assert grads.keys() == B(info.backend).named_params(f).keys()
    for k, g in grads.items():
        assert g is not None, k
        assert np.all(np.isfinite(g)), k
        assert np.any(g != 0), f"{k} gets no gradient"


@pytest.mark.parametrize("name", PAIRS)
def test_same_seed_same_initial_weights(name):
    pt = B("torch").named_params(build(name, "torch", seed=3, perturb=False))
    pj = B("jax").named_params(build(name, "jax", seed=3, perturb=False))
    assert pt.keys() == pj.keys()
    for k in pt:
        np.testing.assert_array_equal(pt[k], pj[k])


def _shape(name):
    return shape_for(zoo.get_info(name, "torch"))


def _data(name):
    return data_for(zoo.get_info(name, "torch"))[0]


@pytest.mark.parametrize("name", PAIRS)
def test_parity_scores_float64(name, rng):
    x = rng.standard_normal((16, *_shape(name)))
    t = rng.uniform(1e-3, 5.0, 16)
    st = B("torch").score(build(name, "torch"), x, t)
    sj = B("jax").score(build(name, "jax"), x, t)
    assert rel(st, sj) < 1e-10


@pytest.mark.parametrize("name", [n for n in PAIRS if zoo.get_info(n, "torch").data == "any"])
def test_parity_scores_float32(name, rng):
    """(On points; image backbones are checked in float64, where a difference means a bug.)"""
    x = rng.standard_normal((16, *_shape(name))).astype(np.float32)
    t = rng.uniform(1e-2, 5.0, 16).astype(np.float32)
    st = B("torch").score(build(name, "torch", dtype="float32"), x, t)
    sj = B("jax").score(build(name, "jax", dtype="float32"), x, t)
    assert rel(st, sj) < 1e-5


@pytest.mark.parametrize("name", SLOW_PAIRS)
def test_parity_loss_and_gradients_float64(name, rng):
    cfg = TrainConfig(arch=name, batch=64, data=_data(name))
    batch = draw_batch(rng, zoo.get_dataset(cfg.data), cfg)
    sched, pen = zoo.make_schedule("ou"), cfg.penalty_spec()
    lt, gt = B("torch").loss_and_grads(build(name, "torch"), sched, batch, pen)
    lj, gj = B("jax").loss_and_grads(build(name, "jax"), sched, batch, pen)
    assert abs(lt - lj) / abs(lj) < 1e-9
    for k in gt:
        assert rel(gt[k], gj[k]) < 1e-9, k


@pytest.mark.parametrize("name", SLOW_PAIRS)
def test_parity_after_200_training_steps_float64(name):
    info = zoo.get_info(name, "torch")
    runs = {}
    batch = 64 if info.data == "any" else 8  # image fields: 200 steps of small batches
    for backend in ("torch", "jax"):
        cfg = TrainConfig(arch=name, backend=backend, steps=200, batch=batch, seed=7,
                          dtype="float64", log_every=200, options=dict(info.small),
                          data=_data(name))
        runs[backend] = fit(cfg)
    pt, pj = runs["torch"].params(), runs["jax"].params()
    start = B("torch").named_params(build(name, "torch", seed=0, perturb=False))
    moved = max(rel(pt[k], start[k]) for k in pt)
    assert moved > 1e-3  # the weights did train
    for k in pt:
        assert rel(pt[k], pj[k]) < 1e-8, k
    et, ej = runs["torch"].ema_params(), runs["jax"].ema_params()
    for k in et:
        assert rel(et[k], ej[k]) < 1e-8, k


# Every head learns on the MLP (points); every other backbone learns under the free head (the
# heads' code is shared across backbones, and image training is what costs CPU time here).
TRAIN_CASES = [pytest.param(info, data, marks=[pytest.mark.slow] if info.data == "image" and (
                info.backend == "jax" or info.backbone != "unet") else [],
                id=f"{entry_id(info)}-{data}")
               for info in ENTRIES for data in data_for(info)
               if info.backbone in ("mlp", "custom") or info.head == "free"]


@pytest.mark.parametrize(("info", "data"), TRAIN_CASES)
def test_trains_with_falling_loss(info, data):
    """300 steps of the standard protocol (small variant) bring the loss well down, measured on
    one fixed batch of 2048 before and after (a single step's loss is too noisy to compare:
    quadratic-energy heads start near the data's irreducible loss, since f = 0 already gives
    the right score at large t)."""
    image = info.data == "image"
    cfg = TrainConfig(arch=info.name, backend=info.backend, data=data, steps=300,
                      batch=64 if image else 128, log_every=50, options=dict(info.small))
    losses = []
    trainer = fit(cfg, on_log=lambda step, loss, rate: losses.append(loss))
    assert np.all(np.isfinite(losses))
    fixed = draw_batch(np.random.default_rng(99), zoo.get_dataset(data),
                       TrainConfig(arch=info.name, backend=info.backend,
                                   batch=512 if image else 2048))
    b, sched, pen = B(info.backend), zoo.make_schedule("ou"), cfg.penalty_spec()
    start = zoo.create(info.name, info.backend, shape=zoo.get_dataset(data).shape,
                       init=np.random.default_rng(cfg.seed), **info.small)
    before = b.loss_and_grads(start, sched, fixed, pen)[0]
    after = b.loss_and_grads(trainer.field, sched, fixed, pen)[0]
    assert after < 0.8 * before, (before, after, losses)
    field = trainer.field
    if hasattr(field, "parts"):  # a rotational head is used, not collapsed to exactly zero
        for t in (0.1, 1.0):
            x, tt = forward_points(np.random.default_rng(2), data, t, 1000)
            p = B(info.backend).parts(field, x.astype(np.float32), tt.astype(np.float32))
            s = sum(p.values())
            share = float((p["rotational"] ** 2).sum() / (s**2).sum())
            assert 1e-6 < share < 0.5, (t, share)

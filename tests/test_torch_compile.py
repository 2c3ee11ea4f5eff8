"""The compiled torch step (``zoo train --compile``) computes eager's numbers.

Registry-driven: every trainable torch field on the MLP backbone (the backbone ``compile="auto"``
compiles), float64. A trainer with compile on takes its first step eagerly and every later one
from torch.compile (torch.func.grad_and_value over the parameters, the heads' x-derivatives by
torch.func inside); its loss and gradients must equal eager autograd's to 1e-10.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import rel, trainable_entries

import zoo
from zoo.backends import torch_backend as tb
from zoo.train import TrainConfig, draw_batch, make_trainer

pytestmark = pytest.mark.usefixtures("torch_one_thread")

NAMES = [i.name for i in trainable_entries() if i.backend == "torch" and i.backbone == "mlp"]


def _trainer(name: str, compile: str):
    info = zoo.get_info(name, "torch")
    cfg = TrainConfig(arch=name, backend="torch", batch=64, seed=3, dtype="float64",
                      compile=compile, options=dict(info.small))
    trainer, ds, rng = make_trainer(cfg)
    return cfg, trainer, ds, rng


# Every head's step is traced by torch.compile and run through "aot_eager" (graph capture and the
# torch.func decomposition, executed eagerly); inductor's generated C++ kernels (what training
# runs) are checked on energy-mlp and helmholtz-mlp, one head per x-derivative path of
# fields/torch/heads.py (grad_of_scalar, grads_of_outputs), and on the others under -m slow:
# a cold inductor compile of each head costs 7-24 s here
INDUCTOR_DEFAULT = {"energy-mlp", "helmholtz-mlp"}
CASES = [(n, "aot_eager") for n in NAMES] + [
    pytest.param(n, "inductor", marks=() if n in INDUCTOR_DEFAULT else pytest.mark.slow)
    for n in NAMES]


@pytest.mark.parametrize("name,backend", CASES)
def test_compiled_step_has_eager_loss_and_gradients_float64(name, backend, monkeypatch):
    monkeypatch.setattr(tb, "COMPILE_BACKEND", backend)
    cfg, trainer, ds, rng = _trainer(name, "on")
    trainer.step(draw_batch(rng, ds, cfg))  # eager: finds the unused parameters
    batch = draw_batch(rng, ds, cfg)
    loss_e, grads_e = tb.loss_and_grads(trainer.field, trainer.schedule, batch, cfg.penalty_spec())
    loss_c = float(trainer.step(batch))  # compiled (the gradients stay in .grad)
    assert trainer.compiled is not None, "the step fell back to eager"
    assert abs(loss_c - loss_e) <= 1e-10 * abs(loss_e)
    own = dict(trainer.field.named_parameters())
    for k, g in grads_e.items():
        assert g is not None, k
        assert rel(own[k].grad.numpy(), g) < 1e-10, k


def test_compiled_training_follows_the_eager_trajectory():
    """Ten steps of energy-mlp (a head that differentiates inside the loss) with and without
    compile: the same weights to 1e-10 (Adam's state and the EMA too, via the weights)."""
    runs = {}
    for mode in ("on", "off"):
        cfg, trainer, ds, rng = _trainer("energy-mlp", mode)
        losses = [float(trainer.step(draw_batch(rng, ds, cfg))) for _ in range(10)]
        runs[mode] = (losses, trainer.params(), trainer.ema_params())
    assert np.allclose(runs["on"][0], runs["off"][0], rtol=1e-10, atol=0)
    for k, p in runs["off"][1].items():
        assert rel(runs["on"][1][k], p) < 1e-10, k
        assert rel(runs["on"][2][k], runs["off"][2][k]) < 1e-10, k


def test_auto_compiles_long_mlp_runs_only():
    long = dict(arch="free-mlp", backend="torch", steps=30000)
    assert TrainConfig(**long).compiled()
    assert not TrainConfig(**long, compile="off").compiled()
    assert not TrainConfig(arch="free-mlp", backend="torch", steps=2000).compiled()
    assert TrainConfig(arch="free-mlp", backend="torch", steps=2000, compile="on").compiled()
    assert not TrainConfig(arch="free-unet", backend="torch", data="digits", steps=30000).compiled()
    assert not TrainConfig(arch="free-mlp", backend="jax", steps=30000, compile="on").compiled()


def test_a_failing_compile_falls_back_to_eager_with_a_warning(monkeypatch):
    cfg, trainer, ds, rng = _trainer("free-mlp", "on")
    eager_cfg, eager, _, eager_rng = _trainer("free-mlp", "off")

    def broken(params, batch):
        raise RuntimeError("no C++ compiler\nsecond line")

    trainer.compiled = broken
    trainer.step(draw_batch(rng, ds, cfg))
    eager.step(draw_batch(eager_rng, ds, eager_cfg))
    with pytest.warns(RuntimeWarning, match="torch.compile failed .RuntimeError: no C.. compiler"):
        loss = trainer.step(draw_batch(rng, ds, cfg))
    assert trainer.compiled is None
    assert float(loss) == float(eager.step(draw_batch(eager_rng, ds, eager_cfg)))


def test_bad_compile_setting_is_one_line(capsys):
    from conftest import run

    code, _, err = run(["train", "--arch", "free-mlp", "--compile", "sometimes"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    with pytest.raises(zoo.ZooError, match="compile must be auto, on or off"):
        TrainConfig(arch="free-mlp", compile="yes").validate()
    assert torch.compiler.is_compiling() is False

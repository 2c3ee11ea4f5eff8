"""GPU checks, skipped where there is none (as on CI): every registered field gives the CPU's
numbers on a GPU in both backends and trains there as on the CPU, and float32 matrix products
and convolutions run in full float32 (the backends pin it: no TF32, which would part torch from
JAX and a GPU from a CPU by rounding alone). Run on a GPU machine with
`pytest tests/test_cuda.py` (JAX's GPU needs its CUDA plugin: pip install 'zoo[cuda]')."""

from __future__ import annotations

import jax
import numpy as np
import pytest
import torch
from conftest import build, data_for, entry_id, rel, shape_for, trainable_entries

from zoo import backends
from zoo.bench.common import jax_device
from zoo.train import TrainConfig, draw_batch, make_trainer

TORCH_GPU = torch.cuda.is_available()
JAX_GPU = jax.default_backend() == "gpu"
needs = {"torch": pytest.mark.skipif(not TORCH_GPU, reason="torch sees no CUDA device"),
         "jax": pytest.mark.skipif(not JAX_GPU, reason="JAX sees no GPU")}
# Measured on an NVIDIA H200 (2026-11-29, jax 0.11.2): the JAX UNet's float64 scores on the GPU
# are 5e-9 to 2.1e-8 off the CPU's and its weights after three steps 1.6e-9 to 1.7e-8, while
# everything else here (torch's UNet, both DiTs and MLPs) agrees to 1e-10. Second lease
# (2026-11-30), the forward pass stage by stage in one jitted program: every stage up to the
# first attention block agrees to 1e-15 and that block's output is 2e-8 off. The same block
# jitted alone on a random input of its shape, and each of its ops alone, agree to 2.6e-16, at
# XLA backend optimisation level 0 (as in the tests) and 3. That points at XLA's GPU compilation
# of the whole network around the attention, not at any one op. Far below float32 rounding, so
# float32 runs are unaffected; strict, so a fix shows up as a failure to remove this mark.
JAX_UNET_F64 = pytest.mark.xfail(strict=True, reason="JAX UNet float64 on a GPU: ~1e-8 off the "
                                 "CPU from its first attention block on (see the comment above)")


def _params(known_f64_gap: bool):
    return [pytest.param(i, marks=[needs[i.backend]] + (
        [JAX_UNET_F64] if known_f64_gap and i.backend == "jax" and i.backbone == "unet" else []),
        id=entry_id(i)) for i in trainable_entries()]


ENTRIES = _params(False)
# float32 products of 512-long rows: full float32 is about 1e-7 off float64 (relative to the
# largest entry), TF32's 10-bit mantissa about 3e-4
FULL_FLOAT32 = 1e-5


def _inputs(info, rng, n=8):
    return rng.standard_normal((n, *shape_for(info))), rng.uniform(1e-2, 2.0, n)


def _operands(rng):
    a, b = rng.standard_normal((2, 512, 512))
    x, w = rng.standard_normal((4, 64, 16, 16)), rng.standard_normal((32, 64, 3, 3))
    mm = a @ b
    conv = torch.nn.functional.conv2d(torch.as_tensor(x), torch.as_tensor(w)).numpy()
    return (a, b, mm), (x, w, conv)


@needs["torch"]
def test_torch_float32_products_are_full_float32(rng):
    import zoo.backends.torch_backend  # noqa: F401 (sets the precision)

    (a, b, mm), (x, w, conv) = _operands(rng)
    f32 = lambda v: torch.as_tensor(v, dtype=torch.float32, device="cuda")
    assert rel((f32(a) @ f32(b)).cpu().numpy(), mm) < FULL_FLOAT32
    assert rel(torch.nn.functional.conv2d(f32(x), f32(w)).cpu().numpy(), conv) < FULL_FLOAT32


@needs["jax"]
def test_jax_float32_products_are_full_float32(rng):
    import jax.numpy as jnp

    import zoo.backends.jax_backend  # noqa: F401 (sets the precision)

    (a, b, mm), (x, w, conv) = _operands(rng)
    f32 = lambda v: jnp.asarray(v, dtype=jnp.float32)
    assert jax.jit(jnp.dot)(f32(a), f32(b)).devices() == {jax.devices()[0]}
    assert rel(np.asarray(jax.jit(jnp.dot)(f32(a), f32(b))), mm) < FULL_FLOAT32
    out = jax.jit(lambda x, w: jax.lax.conv(x, w, (1, 1), "VALID"))(f32(x), f32(w))
    assert rel(np.asarray(out), conv) < FULL_FLOAT32


def _torch_gpu_score(f, x, t):
    g = f.to("cuda")
    with torch.no_grad():
        dt = next(g.parameters()).dtype
        s = g.score(torch.as_tensor(x, dtype=dt, device="cuda"),
                    torch.as_tensor(t, dtype=dt, device="cuda"))
    assert s.is_cuda
    return s.cpu().numpy()


@pytest.mark.parametrize("info", _params(True))
def test_score_on_gpu_matches_cpu_float64(info, rng):
    """The same numbers to float64 rounding."""
    _score_parity(info, "float64", 1e-10, rng)


@pytest.mark.parametrize("info", ENTRIES)
def test_score_on_gpu_matches_cpu_float32(info, rng):
    """To float32 rounding of different kernels (cuDNN's and XLA's algorithms, summation
    orders), far inside what TF32 would make."""
    _score_parity(info, "float32", 1e-4, rng)


def _score_parity(info, dtype, tol, rng):
    x, t = _inputs(info, rng)
    x, t = x.astype(dtype), t.astype(dtype)
    b = backends.get(info.backend)
    if info.backend == "torch":
        f = build(info.name, "torch", dtype=dtype)
        cpu = b.score(f, x, t)
        gpu = _torch_gpu_score(f, x, t)
    else:
        with jax_device("cpu"):
            cpu = b.score(build(info.name, "jax", dtype=dtype), x, t)
        gpu = b.score(build(info.name, "jax", dtype=dtype), x, t)
    assert np.all(np.isfinite(gpu))
    assert rel(gpu, cpu) < tol


@pytest.mark.parametrize("info", _params(True))
def test_training_on_gpu_matches_cpu_float64(info):
    """Three Adam steps of the standard protocol (small variant, float64) from the same weights
    and batches on the GPU and on the CPU: the same weights after them, to rounding."""

    def train(device: str) -> dict[str, np.ndarray]:
        cfg = TrainConfig(arch=info.name, backend=info.backend, data=data_for(info)[0], batch=16,
                          seed=3, dtype="float64", options=dict(info.small), compile="off",
                          device=device)
        trainer, ds, rng = make_trainer(cfg)
        for _ in range(3):
            loss = trainer.step(draw_batch(rng, ds, cfg))
        assert np.isfinite(float(loss))
        return trainer.params()

    if info.backend == "torch":
        cpu, gpu = train("cpu"), train("cuda")
    else:
        with jax_device("cpu"):
            cpu = train("cpu")
        gpu = train("cpu")  # JAX: its default device, the GPU
    start = backends.get(info.backend).named_params(build(info.name, info.backend, seed=3,
                                                          perturb=False))
    assert max(rel(cpu[k], start[k]) for k in cpu) > 1e-4  # the steps moved the weights
    for k in cpu:
        assert rel(gpu[k], cpu[k]) < 1e-9, k

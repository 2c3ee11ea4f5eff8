"""The DDPM++ UNet backbone: output contract, torch/JAX parity by parameter name, double backward,
every parameter in use, argument checks. Small models only (channels 16, groups 4)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from conftest import dead_parameters

import zoo.backends.jax_backend as JB  # enables float64 in JAX at import
import zoo.backends.torch_backend as TB
from fields.jax.unet import UNet as JUNet
from fields.torch.unet import UNet as TUNet
from zoo.init import init_params

SMALL = dict(channels=16, groups=4)
OUTPUTS = [(1, 0), (0, 1), (1, 2), (2, 0)]


def make(shape, n_maps, n_scalars, dtype="float64", seed=0, **kw):
    """Torch and Equinox UNets holding the same zoo.init weights (cast to ``dtype``)."""
    kw = {**SMALL, **kw}
    mt = TUNet(shape, n_maps, n_scalars, **kw)
    params = init_params(TB.named_params(mt), np.random.default_rng(seed))
    # built abstractly and filled (JB.create_field), as zoo.create builds it
    mj = JB.create_field(lambda: JUNet(shape, n_maps, n_scalars, key=jax.random.PRNGKey(0), **kw),
                         lambda current: params, dtype)
    return TB.load_params(mt, params, dtype), mj


def inputs(shape, n=3, seed=1):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, *shape)), rng.uniform(1e-3, 5.0, n)


def run_torch(m, x, t):
    return m(torch.as_tensor(x), torch.as_tensor(t)).detach().numpy()


def run_jax(m, x, t):
    return np.asarray(jax.vmap(m)(jnp.asarray(x), jnp.asarray(t)))


@pytest.mark.parametrize("n_maps,n_scalars", OUTPUTS)
def test_output_shape_and_finite(n_maps, n_scalars):
    shape, dtype = (1, 8, 8), "float32"  # float64 runs in test_float64_parity
    mt, mj = make(shape, n_maps, n_scalars, dtype)
    x, t = inputs(shape)
    x, t = x.astype(dtype), t.astype(dtype)
    want = (3, n_maps * 64 + n_scalars)
    for out in (run_torch(mt, x, t), run_jax(mj, x, t)):
        assert out.shape == want and out.dtype == np.dtype(dtype)
        assert np.all(np.isfinite(out)) and np.std(out) > 0


CONFIGS = [
    ((1, 8, 8), 1, 2, {}),
    ((1, 8, 8), 0, 1, dict(scalar_bias=False, blocks=2, attn=(8, 4))),
    ((3, 12, 12), 2, 0, dict(mults=(1, 2, 2), attn=(6,))),
    ((1, 28, 28), 1, 1, dict(channels=8, attn=())),
]


@pytest.mark.parametrize("shape,n_maps,n_scalars,kw", CONFIGS)
def test_same_parameter_names_and_shapes(shape, n_maps, n_scalars, kw):
    kw = {**SMALL, **kw}
    pt = TB.named_params(TUNet(shape, n_maps, n_scalars, **kw))
    pj = JB.named_params(JUNet(shape, n_maps, n_scalars, key=jax.random.PRNGKey(0), **kw))
    assert sorted(pt) == sorted(pj)
    assert {k: v.shape for k, v in pt.items()} == {k: v.shape for k, v in pj.items()}
    assert all(v.dtype == np.float32 for v in pj.values())  # Equinox default dtype: float32
    assert ("scalars.bias" in pt) == (n_scalars > 0 and kw.get("scalar_bias", True))
    assert ("out.weight" in pt) == (n_maps > 0)


def test_size_dependent_defaults():
    names8 = TB.named_params(TUNet((1, 8, 8), 1, 0))
    names28 = TB.named_params(TUNet((1, 28, 28), 1, 0))
    assert names8["down.1.res.0.conv1.weight"].shape[0] == 64  # mults (1, 2)
    assert not any(k.startswith("down.2.") for k in names8)
    assert names28["down.2.res.0.conv1.weight"].shape[0] == 64  # mults (1, 2, 2)
    # attention at the lowest resolution only (and in the middle)
    assert any(k.startswith("down.1.attn.0.") for k in names8)
    assert not any(k.startswith(("down.0.attn", "up.0.attn")) for k in names8)
    assert any(k.startswith("down.2.attn.0.") for k in names28)
    assert not any(k.startswith(("down.1.attn", "up.1.attn")) for k in names28)
    assert "mid_attn.qkv.weight" in names8


@pytest.mark.parametrize("shape,n_maps,n_scalars,kw", [  # the registry matrix checks every head's
    # scores on the small UNet (two levels, attention at the lower); these configurations
    # (14-22 s each) run under -m slow
    pytest.param(*c, marks=pytest.mark.slow) for c in CONFIGS[:3]])
def test_float64_parity(shape, n_maps, n_scalars, kw):
    mt, mj = make(shape, n_maps, n_scalars, "float64", **kw)
    x, t = inputs(shape, n=4)
    a, b = run_torch(mt, x, t), run_jax(mj, x, t)
    assert a.dtype == b.dtype == np.float64 and a.shape == b.shape
    assert np.max(np.abs(a - b)) / np.max(np.abs(a)) < 1e-10


def test_torch_double_backward():
    mt, _ = make((1, 8, 8), 1, 1)
    x, t = inputs((1, 8, 8))
    x = torch.as_tensor(x).requires_grad_(True)
    out = mt(x, torch.as_tensor(t))
    (g,) = torch.autograd.grad(out[:, -1].sum(), x, create_graph=True)  # d(scalar)/dx
    names, params = zip(*mt.named_parameters())
    grads = torch.autograd.grad(g.pow(2).sum(), params, allow_unused=True)
    by_name = dict(zip(names, grads))
    convs = [k for k in names if k.endswith("weight") and by_name[k] is not None
             and by_name[k].ndim == 4 and not k.startswith("out.")]
    assert len(convs) > 10
    for k in convs:
        assert torch.any(by_name[k] != 0), k


@pytest.mark.slow  # the registry's energy-unet parity differentiates the JAX UNet by x already
def test_jax_double_backward():
    # one level, no attention in the levels: XLA's CPU compile of second derivatives is slow,
    # and the middle still has attention
    _, mj = make((1, 8, 8), 1, 1, channels=8, mults=(1,), attn=())
    x, t = inputs((1, 8, 8), n=1)
    x, t = jnp.asarray(x[0]), jnp.asarray(t[0])

    def penalty(y):
        g = jax.grad(lambda z: mj(z, t)[-1])(y)  # d(scalar)/dx
        return jnp.sum(g**2)

    h = np.asarray(jax.jit(jax.grad(penalty))(x))
    assert h.shape == (1, 8, 8) and np.all(np.isfinite(h)) and np.any(h != 0)


@pytest.mark.parametrize("scalar_bias", [True, False])
def test_every_parameter_influences_output(scalar_bias):
    mt, _ = make((1, 8, 8), 1, 2, scalar_bias=scalar_bias, blocks=2)
    x, t = inputs((1, 8, 8))
    out = mt(torch.as_tensor(x), torch.as_tensor(t))
    assert dead_parameters(mt, out) == []
    assert ("scalars.bias" in dict(mt.named_parameters())) == scalar_bias


BAD = [
    (dict(shape=(1, 8, 8), channels=16, groups=3), "groups"),  # 3 does not divide 16
    (dict(shape=(1, 8, 8), channels=12, groups=8), "groups"),
    (dict(shape=(64,)), "shape"),
    (dict(shape=(8, 8)), "shape"),
    (dict(shape=(1, 8, 8, 1)), "shape"),
    (dict(shape=(1, 8, 8), n_maps=0, n_scalars=0), "output"),
    (dict(shape=(1, 12, 12), mults=(1, 2, 2, 2)), "divisible"),
    (dict(shape=(1, 8, 8), attn=(2,)), "attn"),
    (dict(shape=(1, 8, 8), blocks=0), "blocks"),
    (dict(shape=(1, 8, 8), mults=2), "mults"),
]


@pytest.mark.parametrize("backend", ["torch", "jax"])
@pytest.mark.parametrize("kw,match", BAD)
def test_bad_arguments_raise(backend, kw, match):
    kw = {"n_maps": 1, "n_scalars": 0, **kw}
    shape, n_maps, n_scalars = kw.pop("shape"), kw.pop("n_maps"), kw.pop("n_scalars")
    with pytest.raises(ValueError, match=match):
        if backend == "torch":
            TUNet(shape, n_maps, n_scalars, **kw)
        else:
            JUNet(shape, n_maps, n_scalars, key=jax.random.PRNGKey(0), **kw)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_torch_cuda_matches_cpu():
    mt, _ = make((1, 8, 8), 1, 1, "float64")
    x, t = inputs((1, 8, 8))
    cpu = run_torch(mt, x, t)
    mc = mt.to("cuda")
    gpu = mc(torch.as_tensor(x, device="cuda"), torch.as_tensor(t, device="cuda"))
    assert np.max(np.abs(gpu.detach().cpu().numpy() - cpu)) / np.max(np.abs(cpu)) < 1e-8

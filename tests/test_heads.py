"""The theory heads' built-in structure, checked with autodiff in float64 on random inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import B, build, shape_for

import zoo

BACKENDS = ["torch", "jax"]


def points(rng, n=16, d=3, name=None):
    shape = shape_for(zoo.get_info(name, "torch"), d) if name else (d,)
    return rng.standard_normal((n, *shape)), rng.uniform(1e-2, 5.0, n)


def on_every_backbone(head):
    """The head on every backbone; image backbones under -m slow (exact divergences at d = 64)."""
    names = sorted({i.name for i in zoo.entries(f"{head}-*")})
    return [n if n.endswith("-mlp") else pytest.param(n, marks=pytest.mark.slow) for n in names]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", on_every_backbone("helmholtz"))
def test_helmholtz_rotational_part_is_divergence_free(name, backend, rng):
    """Exact divergence (the trace of the whole Jacobian; d = 64 on 8x8 images) vanishes."""
    f = build(name, backend, dim=3)
    x, t = points(rng, name=name)
    J = B(backend).jacobian(f, x, t, part="rotational")
    diag = np.diagonal(J, axis1=1, axis2=2)
    div, scale = diag.sum(1), np.abs(diag).sum(1)
    assert np.all(scale > 1e-5)  # the part is really there (float64 noise is ~1e-16)
    assert np.max(np.abs(div) / scale) < 1e-9


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", on_every_backbone("stein"))
def test_stein_rotational_part_is_stein_null(name, backend, rng):
    """div(e^phi w) = e^phi (div w + w . grad phi) = 0, relative to the size of its terms."""
    f = build(name, backend, dim=3)
    x, t = points(rng, name=name)
    J = B(backend).jacobian(f, x, t, part="rotational")
    p = {k: v.reshape(len(x), -1) for k, v in B(backend).parts(f, x, t).items()}
    diag = np.diagonal(J, axis1=1, axis2=2)
    terms = np.concatenate([diag, p["rotational"] * p["gradient"]], axis=1)
    residual, scale = terms.sum(1), np.abs(terms).sum(1)
    assert np.all(scale > 1e-6)  # the part is really there
    assert np.max(np.abs(residual) / scale) < 1e-9
    # ... while w itself is far from divergence-free and far from conservative
    assert np.median(np.abs(diag.sum(1)) / np.abs(diag).sum(1)) > 1e-3
    Js = B(backend).jacobian(f, x, t)
    asym = np.linalg.norm(Js - Js.transpose(0, 2, 1), axis=(1, 2)) / np.linalg.norm(Js, axis=(1, 2))
    assert np.min(asym) > 1e-3


@pytest.mark.parametrize("backend", BACKENDS)
def test_energysq_jacobian_symmetric(backend, rng):
    f = build("energysq-mlp", backend, dim=4)
    x, t = points(rng, d=4)
    J = B(backend).jacobian(f, x, t)
    assert np.max(np.abs(J - J.transpose(0, 2, 1))) / np.max(np.abs(J)) < 1e-10


@pytest.mark.parametrize("backend", BACKENDS)
def test_qc_hutchinson_is_unbiased(backend, rng):
    """Mean of many Rademacher estimates of tr(JJ^T) - tr(J^2) = the full-Jacobian value (3 SE)."""
    f = build("qc-mlp", backend, dim=3)
    x, t = points(rng, n=4)
    J = B(backend).jacobian(f, x, t)
    exact = np.einsum("bij,bij->b", J, J) - np.einsum("bij,bji->b", J, J)
    n = 4000
    probes = 2.0 * rng.integers(0, 2, size=(n, 4, 3)) - 1.0
    if backend == "torch":
        from zoo.backends.torch_backend import qc_estimates

        est = qc_estimates(f, torch.as_tensor(x), torch.as_tensor(t),
                           torch.as_tensor(probes)).detach().numpy()
    else:
        import jax.numpy as jnp

        from zoo.backends.jax_backend import qc_estimates

        est = np.asarray(qc_estimates(f, jnp.asarray(x), jnp.asarray(t), jnp.asarray(probes)))
    mean, se = est.mean(0), est.std(0) / np.sqrt(n)
    assert np.all(exact > 0)
    assert np.all(np.abs(mean - exact) < 3 * se), (mean, exact, se)
    assert np.all(se < 0.1 * exact)  # the test has power: the SE is small next to the value


def test_registry_marks_structure():
    assert zoo.get_info("energysq-mlp", "jax").conservative
    for name in ("helmholtz-mlp", "stein-mlp", "qc-mlp"):
        assert not zoo.get_info(name, "torch").conservative
    assert zoo.get_info("qc-mlp", "torch").penalty["kind"] == "qc"


def _operator_matrix(backend, m, shape):
    """The d x d matrix of v -> A v for the first operator in ``m`` (the others get v = 0)."""
    d = int(np.prod(shape))
    K = m.shape[0]
    basis = np.zeros((d, K, *shape))
    basis[:, 0] = np.eye(d).reshape(d, *shape)
    if backend == "torch":
        from fields.torch.heads import antisym_apply

        cols = antisym_apply(torch.as_tensor(m), torch.as_tensor(basis)).numpy()
    else:
        import jax
        import jax.numpy as jnp

        from fields.jax.heads import antisym_apply

        cols = np.asarray(jax.vmap(lambda v: antisym_apply(jnp.asarray(m), v))(jnp.asarray(basis)))
    return cols.reshape(d, d).T


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_antisymmetric_operators_are_exactly_antisymmetric(kind, backend, rng):
    """A = M - M^T (dense) and A = C - C^T (a 3x3 convolution minus its adjoint) satisfy
    A^T = -A as matrices, built column by column from the operator; torch equals JAX."""
    import zoo.backends.jax_backend  # noqa: F401  (float64 in JAX)

    shape = (3, 5, 4)
    m = (rng.standard_normal((2, 60, 60)) if kind == "dense"
         else rng.standard_normal((2, 3, 3, 3, 3)))
    A = _operator_matrix(backend, m, shape)
    assert np.max(np.abs(A)) > 0.1  # a real operator
    assert np.max(np.abs(A + A.T)) < 1e-12 * np.max(np.abs(A))
    other = _operator_matrix("jax" if backend == "torch" else "torch", m, shape)
    np.testing.assert_allclose(A, other, atol=1e-12)


def _qc_loss_reference(backend, f, schedule, x0, t, eps, probes, lam):
    """The qc loss as first written: DSM from its own forward pass, the penalty from another, with
    u = J^T v (a VJP) and w = J v (a JVP): E_v u.(u - w). The training path now shares one
    forward pass and uses two VJPs; the two must agree to float64 rounding."""
    if backend == "torch":
        from zoo.backends.torch_backend import _xt, dsm_loss

        xt = _xt(schedule, x0, t, eps)
        fn = lambda y: f.score(y, t)
        _, vjp = torch.func.vjp(fn, xt)
        est = []
        for v in probes:
            _, w = torch.func.jvp(fn, (xt,), (v,))
            (u,) = vjp(v)
            est.append((u * (u - w)).flatten(1).sum(1))
        pen = (schedule.sigma(t) ** 2 * torch.stack(est).mean(0)).mean()
        return dsm_loss(f, schedule, x0, t, eps) + lam * pen
    import jax
    import jax.numpy as jnp

    from zoo.backends.jax_backend import _xt, dsm_loss

    def one(xi, ti, vs):
        g = lambda y: f.score(y, ti)
        _, vjp = jax.vjp(g, xi)
        return jax.vmap(lambda v: jnp.sum(vjp(v)[0] * (vjp(v)[0] - jax.jvp(g, (xi,), (v,))[1])))(vs)

    est = jax.vmap(one, in_axes=(0, 0, 1), out_axes=1)(_xt(schedule, x0, t, eps), t, probes)
    pen = jnp.mean(schedule.sigma(t) ** 2 * est.mean(0))
    return dsm_loss(f, schedule, x0, t, eps) + lam * pen


@pytest.mark.parametrize("backend", BACKENDS)
def test_qc_loss_with_one_forward_equals_the_jvp_arrangement(backend, rng):
    """Loss and every parameter gradient of the qc training objective (one forward, two VJPs)
    equal those of the JVP arrangement, float64, to 1e-10 relative: the faster path changes no
    result."""
    f = build("qc-mlp", backend, dim=3)
    b = B(backend)
    schedule = zoo.make_schedule("ou")
    n, P = 8, 2
    batch = {"x0": rng.standard_normal((n, 3)), "t": rng.uniform(0.01, 1.0, n),
             "eps": rng.standard_normal((n, 3)),
             "probes": 2.0 * rng.integers(0, 2, size=(P, n, 3)) - 1.0}
    pen = {"kind": "qc", "lambda": 0.7}
    loss, grads = b.loss_and_grads(f, schedule, batch, pen)
    if backend == "torch":
        tb = {k: torch.as_tensor(v) for k, v in batch.items()}
        f.zero_grad(set_to_none=True)
        ref = _qc_loss_reference(backend, f, schedule, tb["x0"], tb["t"], tb["eps"],
                                 tb["probes"], 0.7)
        ref.backward()
        ref_loss = ref.item()
        ref_grads = {k: p.grad.numpy() for k, p in f.named_parameters()}
    else:
        import equinox as eqx
        import jax.numpy as jnp

        jb = {k: jnp.asarray(v) for k, v in batch.items()}
        # jitted: op by op, the JVP-of-VJP graph takes seconds to dispatch
        ref_loss, g = eqx.filter_jit(eqx.filter_value_and_grad(lambda m: _qc_loss_reference(
            backend, m, schedule, jb["x0"], jb["t"], jb["eps"], jb["probes"], 0.7)))(f)
        ref_loss, ref_grads = float(ref_loss), b.named_params(g)
    assert loss == pytest.approx(ref_loss, rel=1e-10)
    assert set(grads) == set(ref_grads)
    for k, g in grads.items():
        np.testing.assert_allclose(g, np.asarray(ref_grads[k]), rtol=1e-10,
                                   atol=1e-10 * np.abs(g).max(), err_msg=k)

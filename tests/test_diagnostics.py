"""Conservativity diagnostics against fields with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import B, build, forward_points

import zoo
from fields.torch.heads import grad_of_scalar
from zoo.diagnostics import check_field, circulation, loop_vertices, nasym_exact, nasym_stochastic
from zoo.train import TrainConfig, fit

SCHED = zoo.make_schedule("ou")


class Linear(torch.nn.Module):
    """s = M x + c: a gradient for symmetric M, a pure rotation for antisymmetric M."""

    def __init__(self, M, c):
        super().__init__()
        self.M, self.c = torch.as_tensor(M), torch.as_tensor(c)

    def score(self, x, t):
        return x @ self.M.T + self.c


class SteinPerturbed(torch.nn.Module):
    """s = S + e, e = rho^-1 A grad(rho psi) = A (grad psi + psi S): div(rho e) = 0 exactly."""

    def __init__(self, data, A):
        super().__init__()
        self.exact = zoo.create("exact", "torch", data=data)
        self.A = torch.as_tensor(A)

    def psi(self, x, t):
        return torch.sin(1.3 * x[:, 0] + 0.4 * t) * torch.cos(0.7 * x[:, 1]) + 0.3 * x[:, 0]

    def score(self, x, t):
        S = self.exact.score(x, t)
        e = (grad_of_scalar(self.psi, x, t) + self.psi(x, t)[:, None] * S) @ self.A.T
        return S + e


def test_gradient_and_exact_fields_are_conservative():
    g = np.random.default_rng(0)
    Q = g.standard_normal((3, 3))
    quad = Linear(-(Q @ Q.T + np.eye(3)), g.standard_normal(3))  # grad of a random quadratic
    x, t = g.standard_normal((32, 3)), np.full(32, 0.5)
    assert nasym_exact(B("torch").jacobian(quad, x, t))["nasym"] < 1e-10
    verts = loop_vertices(g.standard_normal((16, 3)), 0.8, 0.6, 6, g)
    for fam, (v, c) in verts.items():
        gam, length = circulation(lambda p, tt: B("torch").score(quad, p, tt), 0.5, v, c,
                                  0.6 * math.sqrt(3))
        assert np.max(np.abs(gam) / length) < 1e-6, fam
    for backend in ("torch", "jax"):
        r = check_field(zoo.create("exact", backend, data="gmm8"), backend, data="gmm8",
                        schedule=SCHED, dtype="float64", times=[0.01, 0.1, 1.0], n_points=64,
                        n_loops=16)
        for row in r["per_t"]:
            assert row["nasym"] < 1e-10
            assert row["score_rel_error"] < 1e-20
            for fam in ("polygon", "triangle", "projected"):
                assert row["loops"][fam]["normalised"]["q3"] < 1e-6, (row["t"], fam)


def test_rotation_field_has_nasym_one_and_closed_form_circulation():
    g = np.random.default_rng(1)
    W = g.standard_normal((3, 3))
    M = W - W.T
    rot = Linear(M, np.zeros(3))
    x = g.standard_normal((8, 3))
    assert abs(nasym_exact(B("torch").jacobian(rot, x, np.ones(8)))["nasym"] - 1) < 1e-12
    # a circle of radius r in the plane of orthonormal u, w around c: the projected polygon
    u, w = np.linalg.qr(g.standard_normal((3, 2)))[0].T
    c, r = g.standard_normal(3), 1.7
    ang = np.linspace(0, 2 * np.pi, 7)[:-1]
    verts = (c + r * (np.cos(ang)[:, None] * u + np.sin(ang)[:, None] * w))[None]
    gam, _ = circulation(lambda p, tt: B("torch").score(rot, p, tt), 1.0, verts, c[None], r)
    assert abs(gam[0] - 2 * np.pi * r**2 * (w @ M @ u)) < 1e-10 * abs(gam[0])
    # straight chords enclose less: the polygon's circulation is the closed form for its area
    gam_poly, _ = circulation(lambda p, tt: B("torch").score(rot, p, tt), 1.0, verts)
    area = 0.5 * 6 * r**2 * np.sin(2 * np.pi / 6)
    assert abs(gam_poly[0] - 2 * area * (w @ M @ u)) < 1e-10 * abs(gam_poly[0])


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_stochastic_nasym_is_unbiased(backend, rng):
    f = build("free-mlp", backend, dim=3)
    x, t = rng.standard_normal((64, 3)), rng.uniform(0.05, 2, 64)
    exact = nasym_exact(B(backend).jacobian(f, x, t))["nasym"]
    est = nasym_stochastic(lambda a, b, v: B(backend).jvp_vjp(f, a, b, v), x, t, 200, rng)
    assert est["nasym_se"] > 0
    assert abs(est["nasym"] - exact) < 3 * est["nasym_se"], (est, exact)
    assert est["nasym_se"] < 0.2 * exact


def test_stein_residual_vanishes_for_a_stein_null_perturbation():
    A = np.array([[0.0, 1.3], [-1.3, 0.0]])
    f = SteinPerturbed("gmm8", A)
    r = check_field(f, "torch", data="gmm8", schedule=SCHED, dtype="float64",
                    times=[0.05, 0.5], n_points=128, n_loops=8)
    x, t = forward_points(np.random.default_rng(0), "gmm8", 0.5, 128)
    J = B("torch").jacobian(f, x, t) - B("torch").jacobian(zoo.create("exact", "torch",
                                                                      data="gmm8"), x, t)
    scale = float(np.mean(np.trace(J, axis1=1, axis2=2) ** 2))  # E (div e)^2, far from 0
    for row in r["per_t"]:
        assert row["error_sq"] > 1e-2  # a big, non-conservative error ...
        assert row["nasym"] > 1e-3
        assert row["stein_residual_sq"] < 1e-20 * max(scale, 1.0)  # ... that moves no density
    assert scale > 1e-2


@pytest.mark.parametrize("backend", ["torch", pytest.param("jax", marks=pytest.mark.slow)])
def test_trained_conservative_heads_stay_symmetric_free_does_not(backend):
    # (JAX: 21 s of compiling, under -m slow; check_field runs in JAX on the exact field above)
    out = {}
    for name in ("free-mlp", "energy-mlp", "energysq-mlp"):
        info = zoo.get_info(name, backend)
        trainer = fit(TrainConfig(arch=name, backend=backend, steps=300, batch=128,
                                  options=dict(info.small), log_every=300))
        r = check_field(trainer.field, backend, data="gmm8", schedule=SCHED,
                        times=[0.01, 0.1, 1.0], n_points=128, n_loops=8)
        out[name] = max(row["nasym"] for row in r["per_t"])
    assert out["energy-mlp"] < 1e-8 and out["energysq-mlp"] < 1e-8, out
    assert out["free-mlp"] > 1e-5, out

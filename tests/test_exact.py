"""The ground truth: closed-form scores and densities of rho_t, checked against autodiff,
Monte Carlo, and across backends."""

from __future__ import annotations

import jax
import numpy as np
import pytest
import torch
from conftest import B, forward_points, rel
from scipy import integrate

import zoo
from fields.torch.heads import grad_of_scalar

EXACT_DATA = ["gmm8", "checkerboard", "gmm-d"]
TIMES = [0.01, 0.1, 0.5, 2.0]


@pytest.mark.parametrize("t", [0.003, 0.4, 3.0])
def test_schedules(t):
    ou = zoo.make_schedule("ou")
    assert abs(ou.alpha(t) - np.exp(-t)) < 1e-15
    assert abs(ou.alpha(t) ** 2 + ou.sigma(t) ** 2 - 1) < 1e-14
    vp = zoo.make_schedule("vp-linear", T=1.0)
    tt = t / 5
    want = integrate.quad(vp.beta, 0, tt)[0]
    assert abs(vp.int_beta(tt) - want) < 1e-12
    assert abs(vp.alpha(tt) - np.exp(-0.5 * want)) < 1e-14


@pytest.mark.parametrize("data", ["gmm8", "gmm-d"])
@pytest.mark.parametrize("t", TIMES)
def test_gmm_closed_form_score_is_grad_of_log_density(data, t, rng):
    x, tt = forward_points(rng, data, t, 64)
    ft = zoo.create("exact", "torch", data=data)
    xt, ttt = torch.as_tensor(x), torch.as_tensor(tt)
    auto = grad_of_scalar(ft.log_density, xt, ttt).detach().numpy()
    assert rel(B("torch").score(ft, x, tt), auto) < 1e-12
    fj = zoo.create("exact", "jax", data=data)
    auto_j = np.asarray(jax.vmap(jax.grad(fj.log_density))(x, tt))
    assert rel(B("jax").score(fj, x, tt), auto_j) < 1e-12


@pytest.mark.parametrize("data", EXACT_DATA)
@pytest.mark.parametrize("t", TIMES)
def test_exact_parity_across_backends(data, t, rng):
    x, tt = forward_points(rng, data, t, 64)
    st = B("torch").score(zoo.create("exact", "torch", data=data), x, tt)
    sj = B("jax").score(zoo.create("exact", "jax", data=data), x, tt)
    assert np.all(np.isfinite(st))
    assert rel(st, sj) < 1e-10


@pytest.mark.parametrize("data", ["gmm8", "checkerboard"])
@pytest.mark.parametrize("t", [0.02, 0.3, 2.0])
def test_density_normalises(data, t):
    """int rho_t = 1, by importance sampling from N(0, 3^2 I): within 4 standard errors."""
    g = np.random.default_rng(5)
    n, c = 400_000, 3.0
    x = c * g.standard_normal((n, 2))
    logq = -0.5 * (x**2).sum(1) / c**2 - np.log(2 * np.pi * c**2)
    f = zoo.create("exact", "torch", data=data)
    logp = f.log_density(torch.as_tensor(x), torch.full((n,), t, dtype=torch.float64)).numpy()
    w = np.exp(logp - logq)
    est, se = w.mean(), w.std() / np.sqrt(n)
    assert se < 0.02
    assert abs(est - 1) < 4 * se


@pytest.mark.parametrize("data", EXACT_DATA)
def test_density_matches_monte_carlo_convolution(data):
    """rho_t(x) = E_{x0}[N(x; alpha x0, sigma^2 I)]: the closed form against data samples."""
    g = np.random.default_rng(9)
    ds, sched = zoo.get_dataset(data), zoo.make_schedule("ou")
    t = 0.4
    a, s = sched.alpha(t), sched.sigma(t)
    x0 = ds.sample(g, 200_000)
    pts = a * ds.sample(g, 5) + s * g.standard_normal((5, ds.dim))
    f = zoo.create("exact", "torch", data=data)
    logp = f.log_density(torch.as_tensor(pts), torch.full((5,), t, dtype=torch.float64)).numpy()
    for p, lp in zip(pts, logp):
        k = np.exp(-0.5 * ((p - a * x0) ** 2).sum(1) / s**2) / (2 * np.pi * s**2) ** (ds.dim / 2)
        est, se = k.mean(), k.std() / np.sqrt(len(k))
        assert abs(est - np.exp(lp)) < 4 * se + 1e-12, (est, np.exp(lp), se)


def test_exact_needs_a_closed_form():
    with pytest.raises(zoo.ZooError, match="no closed-form"):
        zoo.create("exact", "torch", data="moons")


def test_terminal_distribution_is_standard_normal():
    """At T = 5 under ou, rho_T is N(0, I) to within alpha_T = e^-5: the score is about -x."""
    x = np.random.default_rng(0).standard_normal((32, 2))
    s = B("jax").score(zoo.create("exact", "jax", data="gmm8"), x, np.full(32, 5.0))
    assert np.max(np.abs(s + x)) < 0.05

"""The seed paper's integral and differential constraints on image-shaped fields (issue 13).

Small closed-form torch fields on 1x8x8 (d = 64) and 1x28x28 (d = 784) inputs: the exact score of
a diffused Gaussian (a gradient: zero circulation on every loop family, NAsym 0), linear fields
s = (S + A) x with A antisymmetric (closed-form circulation and NAsym), and a smooth nonlinear
swirl (quadrature error, Hutchinson against exact NAsym).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import B

import zoo
from zoo.data import Dataset
from zoo.diagnostics import (
    LOOP_FAMILIES,
    check_field,
    circulation,
    interpolated_vertices,
    interpolation_lambdas,
    loop_path,
    loop_vertices,
)
from zoo.registry import ZooError

SCHED = zoo.make_schedule("ou")
pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _t(a):
    return torch.as_tensor(np.asarray(a, dtype=np.float64))


class DiffusedGaussian(torch.nn.Module):
    """Exact score of N(m, Sigma) under the forward process, on x [B, *shape], Sigma = U diag(l) U^T
    (U = None: diagonal): S(x, t) = -(alpha_t^2 Sigma + sigma_t^2 I)^{-1} (x - alpha_t m)."""

    def __init__(self, m, lam, U, schedule):
        super().__init__()
        self.m, self.lam, self.schedule = _t(m), _t(lam), schedule
        self.U = None if U is None else _t(U)

    def score(self, x, t):
        a, s = self.schedule.alpha(t)[:, None], self.schedule.sigma(t)[:, None]
        z = x.flatten(1) - a * self.m
        if self.U is None:
            return -(z / (a**2 * self.lam + s**2)).reshape(x.shape)
        z = (z @ self.U) / (a**2 * self.lam + s**2)
        return -(z @ self.U.T).reshape(x.shape)


class Linear(torch.nn.Module):
    """s = M x + b on x [B, *shape] (flattened): a gradient iff M is symmetric."""

    def __init__(self, M, b):
        super().__init__()
        self.M, self.b = _t(M), _t(b)

    def score(self, x, t):
        return (x.flatten(1) @ self.M.T + self.b).reshape(x.shape)


class Swirl(torch.nn.Module):
    """s = -x + A tanh(W x): smooth, nonlinear and not a gradient (A antisymmetric)."""

    def __init__(self, A, W):
        super().__init__()
        self.A, self.W = _t(A), _t(W)

    def score(self, x, t):
        xf = x.flatten(1)
        return (-xf + torch.tanh(xf @ self.W.T) @ self.A.T).reshape(x.shape)


def gaussian_data(d: int, shape, full: bool = True, seed: int = 0):
    """An image-shaped N(m, Sigma) dataset (full or diagonal covariance) and its diffused score."""
    g = np.random.default_rng([seed, d])
    m = 0.5 * g.standard_normal(d)
    lam = 0.05 + 0.5 * g.uniform(size=d)
    U = np.linalg.qr(g.standard_normal((d, d)))[0] if full else None
    C = np.sqrt(lam) if U is None else U * np.sqrt(lam)  # Sigma = C C^T

    def sample(rng, n):
        z = rng.standard_normal((n, d))
        return (m + (z * C if U is None else z @ C.T)).reshape(n, *shape)

    return (Dataset(f"gauss{d}", d, "N(m, Sigma), test data", shape=shape, sampler=sample),
            DiffusedGaussian(m, lam, U, SCHED))


def antisym(g, d, scale=1.0):
    W = g.standard_normal((d, d))
    return scale * (W - W.T) / math.sqrt(2 * d)


def flat_score(field, shape):
    return lambda p, t: B("torch").score(field, p.reshape(len(p), *shape), t).reshape(len(p), -1)


# ----------------------------------------------------------------------------- the paths


def test_interpolation_lambdas_go_out_and_back():
    assert np.allclose(interpolation_lambdas(6), [0, 1 / 3, 2 / 3, 1, 2 / 3, 1 / 3])
    assert np.allclose(interpolation_lambdas(3), [0, 1, 0.5])
    assert np.allclose(interpolation_lambdas(5), [0, 0.5, 1, 2 / 3, 1 / 3])
    with pytest.raises(ZooError):
        interpolation_lambdas(2)


def test_interpolated_paths_are_closed_and_projected_points_lie_on_the_moving_shell():
    g = np.random.default_rng(0)
    d, L, K, a, s = 64, 4, 6, 0.8, 0.6
    x0a, x0b = g.standard_normal((L, d)), g.standard_normal((L, d))
    fams = interpolated_vertices(x0a, x0b, a, s, K, g)
    lam = interpolation_lambdas(K)
    v, c = fams["interpolated-projected"]
    assert fams["interpolated"][0] is v and fams["interpolated"][1] is None
    assert np.allclose(c, a * ((1 - lam[None, :, None]) * x0a[:, None] + lam[None, :, None] * x0b[:, None]))
    r = s * math.sqrt(d)
    u = np.concatenate([[0.0, 1.0], np.linspace(0.01, 0.99, 9)])
    for fam, (vv, cc) in fams.items():
        p, tan = loop_path(vv, cc, r, u)
        # closed: every segment ends where the next begins, the last where the first begins
        assert np.allclose(p[:, :, 1], np.roll(p[:, :, 0], -1, axis=1), atol=1e-12), fam
        # the tangent is d gamma / du (central differences)
        h = 1e-5
        fd = (loop_path(vv, cc, r, u[2:] + h)[0] - loop_path(vv, cc, r, u[2:] - h)[0]) / (2 * h)
        assert np.max(np.abs(fd - tan[:, :, 2:])) < 1e-6 * np.max(np.abs(tan)), fam
    assert np.allclose(loop_path(v, None, r, u)[0][:, :, 0], v)  # through the noisy vertices
    # on the shell |x - c(u)| = sigma sqrt(d), c(u) the mean at lambda(u), linear along a segment
    p, _ = loop_path(v, c, r, u)
    lu = lam[None, :, None] + u[None, None, :] * (np.roll(lam, -1)[None, :, None] - lam[None, :, None])
    cu = a * ((1 - lu[..., None]) * x0a[:, None, None] + lu[..., None] * x0b[:, None, None])
    assert np.allclose(np.linalg.norm(p - cu, axis=-1), r, rtol=1e-12)
    # the projection of a vertex is the vertex pulled radially onto its own shell
    q = v - c
    assert np.allclose(p[:, :, 0], c + r * q / np.linalg.norm(q, axis=-1, keepdims=True))


# ----------------------------------------------------------------------------- the integral constraint


@pytest.mark.parametrize("kind", ["gaussian", "gmm"])
def test_exact_score_has_zero_circulation_on_every_family_in_64d(kind):
    """A true score in 1x8x8: NAsym 0 and every loop family's circulation 0 to quadrature
    precision; a linear one (Gaussian) and a nonlinear one (gmm-d64's exact score). The
    interpolated loops of the mixture run from one mode to another, where at small t the score
    turns within a short stretch of the path: 48 nodes leave a circulation of about 1e-4 there
    (1e-11 with 192), and quad_err says so."""
    ds, field = gaussian_data(64, (1, 8, 8))
    if kind == "gmm":
        inner = zoo.create("exact", "torch", data="gmm-d64", schedule=SCHED)
        gmm = zoo.get_dataset("gmm-d64")

        class Img(torch.nn.Module):
            def score(self, x, t):
                return inner.score(x.flatten(1), t).reshape(x.shape)

        field = Img()
        ds = Dataset("gmm-d64-img", 64, "gmm-d64 as 1x8x8", shape=(1, 8, 8),
                     sampler=lambda rng, n: gmm.sample(rng, n).reshape(n, 1, 8, 8))
    r = check_field(field, "torch", data=ds, schedule=SCHED, dtype="float64", times=[0.05, 0.5],
                    n_points=16, n_loops=8)
    assert r["settings"]["jacobian"] == "exact"
    for row in r["per_t"]:
        assert row["nasym"] < 1e-12, row["nasym"]
        assert set(row["loops"]) == set(LOOP_FAMILIES)
        for fam in LOOP_FAMILIES:
            lp = row["loops"][fam]
            if kind == "gmm" and fam.startswith("interpolated"):
                assert lp["normalised"]["q3"] < max(lp["quad_err"]["q3"], 1e-12), (row["t"], fam)
                continue
            assert lp["normalised"]["q3"] < 1e-12, (kind, row["t"], fam, lp["normalised"])
            assert lp["quad_err"]["q3"] < 1e-12, (kind, row["t"], fam, lp["quad_err"])
    for fam in LOOP_FAMILIES:
        assert f"circulation_{fam}_median" in r["summary"]
        assert f"circulation_{fam}_quad_err_median" in r["summary"]


def test_rotation_field_gives_its_closed_form_circulation_in_64d():
    """s = A (x - c) + S x with A antisymmetric, S symmetric: around a closed polygon with
    vertices v_i, Gamma = sum_i int_0^1 s(v_i + u e_i) . e_i du (e_i = v_i+1 - v_i)
    = sum_i v_i^T A^T v_i+1 (the gradient parts S x and -A c telescope to 0; the antisymmetric
    part's cross terms give (1/2)(v_i + v_i+1)^T A^T (v_i+1 - v_i) = v_i^T A^T v_i+1). Around a
    circle of radius r in the plane of orthonormal a, b (traced a -> b), Gamma = 2 pi r^2 b^T A a."""
    g = np.random.default_rng(3)
    d, shape = 64, (1, 8, 8)
    A = antisym(g, d)
    Q = g.standard_normal((d, d)) / math.sqrt(d)
    c = g.standard_normal(d)
    f = Linear(A - Q @ Q.T, -A @ c)
    score = flat_score(f, shape)
    x0 = g.standard_normal((8, d))
    fams = loop_vertices(x0, 0.7, 0.7, 6, g)
    fams.update(interpolated_vertices(x0, g.standard_normal((8, d)), 0.7, 0.7, 6, g))
    for fam in ("polygon", "triangle", "interpolated"):
        v, _ = fams[fam]
        gam, _ = circulation(score, 0.5, v, None, 0.0, nodes=4)
        closed = np.einsum("lki,ij,lkj->l", v, A.T, np.roll(v, -1, axis=1))
        assert np.max(np.abs(gam - closed)) < 1e-11 * np.max(np.abs(closed)), fam
        assert np.median(np.abs(closed)) > 1.0  # far from 0: the test can fail
    # projected families on a planar circle around a fixed centre: the closed form
    ua, ub = np.linalg.qr(g.standard_normal((d, 2)))[0].T
    r = 0.7 * math.sqrt(d)
    ang = np.linspace(0, 2 * np.pi, 7)[:-1]
    ring = c + 1.3 * (np.cos(ang)[:, None] * ua + np.sin(ang)[:, None] * ub)  # inside the shell
    closed = 2 * np.pi * r**2 * (ub @ A @ ua)
    gam, _ = circulation(score, 0.5, ring[None], c[None], r)  # slerp around a fixed centre
    assert abs(gam[0] - closed) < 1e-10 * abs(closed)
    # the interpolated-projected path with x0a = x0b: its centre stands still, so it is that circle
    gam, _ = circulation(score, 0.5, ring[None], np.broadcast_to(c, ring.shape)[None], r)
    assert abs(gam[0] - closed) < 1e-10 * abs(closed)
    # with a moving centre: against the path's own chords (a fine polyline, no tangent used)
    v, cc = fams["interpolated-projected"]
    gam, _ = circulation(score, 0.5, v, cc, r)
    u = np.linspace(0, 1, 2001)
    p, _ = loop_path(v, cc, r, u)
    mid, step = 0.5 * (p[:, :, 1:] + p[:, :, :-1]), p[:, :, 1:] - p[:, :, :-1]
    poly = (score(mid.reshape(-1, d), np.full(mid[..., 0].size, 0.5)).reshape(mid.shape)
            * step).sum((1, 2, 3))
    assert np.max(np.abs(gam - poly)) < 1e-5 * np.max(np.abs(gam)), (gam, poly)


def test_quadrature_error_is_tiny_when_resolved_and_large_with_few_nodes():
    g = np.random.default_rng(4)
    d = 64
    f = Swirl(antisym(g, d, 2.0), g.standard_normal((d, d)) / math.sqrt(d))
    ds, _ = gaussian_data(d, (1, 8, 8))
    kw = dict(data=ds, schedule=SCHED, dtype="float64", times=[0.3], n_points=4, n_loops=8)
    fine = check_field(f, "torch", nodes=48, **kw)["per_t"][0]["loops"]
    coarse = check_field(f, "torch", nodes=4, **kw)["per_t"][0]["loops"]
    for fam in LOOP_FAMILIES:
        assert fine[fam]["quad_err"]["q3"] < 1e-10, (fam, fine[fam]["quad_err"])
        assert coarse[fam]["quad_err"]["median"] > 1e3 * fine[fam]["quad_err"]["q3"] + 1e-6, fam
        assert fine[fam]["normalised"]["median"] > 1e-3  # a swirl circulates: resolved, not 0
    # |Gamma_4 - Gamma_2| does not understate the error of Gamma_4 (Gamma_48 as truth)
    fams = loop_vertices(g.standard_normal((8, d)), 0.8, 0.6, 6, g)
    for fam, (v, c) in fams.items():
        score = flat_score(f, (1, 8, 8))
        g48, _ = circulation(score, 0.3, v, c, 0.6 * 8, 48)
        g4, _ = circulation(score, 0.3, v, c, 0.6 * 8, 4)
        g2, _ = circulation(score, 0.3, v, c, 0.6 * 8, 2)
        assert np.all(np.abs(g4 - g48) <= np.abs(g4 - g2)), fam


def test_circulation_calls_the_field_in_equal_chunks_with_the_same_result(monkeypatch):
    import zoo.diagnostics as D

    g = np.random.default_rng(7)
    d = 64
    f = Swirl(antisym(g, d, 2.0), g.standard_normal((d, d)) / math.sqrt(d))
    score, sizes = flat_score(f, (1, 8, 8)), []

    def counted(p, t):
        sizes.append(len(p))
        return score(p, t)

    v, c = interpolated_vertices(g.standard_normal((5, d)), g.standard_normal((5, d)), 0.8, 0.6,
                                 6, g)["interpolated-projected"]
    whole = circulation(counted, 0.3, v, c, 4.8, 16)
    assert sizes == [5 * 6 * 16]
    monkeypatch.setattr(D, "CHUNK", 100)
    sizes.clear()
    chunked = circulation(counted, 0.3, v, c, 4.8, 16)
    assert len(set(sizes)) == 1 and sizes[0] <= 100 and sum(sizes) >= 480, sizes
    assert np.allclose(chunked, whole, rtol=1e-13, atol=0)


# ----------------------------------------------------------------------------- the differential constraint


def test_hutchinson_nasym_agrees_with_exact_at_64d():
    """The same 1x8x8 points (drawn before the Jacobian): exact vs forced Hutchinson."""
    g = np.random.default_rng(5)
    d = 64
    f = Swirl(antisym(g, d, 1.5), g.standard_normal((d, d)) / math.sqrt(d))
    ds, _ = gaussian_data(d, (1, 8, 8))
    kw = dict(data=ds, schedule=SCHED, dtype="float64", times=[0.3], n_points=64, n_loops=1,
              K=3, nodes=2, quad_err=False)
    ex = check_field(f, "torch", jacobian="exact", **kw)
    hu = check_field(f, "torch", jacobian="hutchinson", probes=16, **kw)
    assert ex["settings"]["jacobian"] == "exact" and hu["settings"]["jacobian"] == "hutchinson"
    e, h = ex["per_t"][0], hu["per_t"][0]
    assert e["estimator"] == "exact" and h["estimator"] == "hutchinson"
    assert 0.05 < e["nasym"] < 0.95, e  # neither symmetric nor a pure rotation
    assert 0 < h["nasym_se"] < 0.1 * e["nasym"], h
    assert abs(h["nasym"] - e["nasym"]) < 3 * h["nasym_se"], (h, e)
    with pytest.raises(ZooError):
        check_field(f, "torch", jacobian="jvp", **kw)


def test_images_above_256_dims_use_hutchinson_with_the_closed_form_nasym():
    """1x28x28: check_field goes stochastic by itself; J = S + A constant, so NAsym =
    ||A||_F^2 / (||S||_F^2 + ||A||_F^2) (tr(S^T A) = 0); a gradient gives 0 with SE 0, and its
    loops on every family (784-D) circulate 0."""
    g = np.random.default_rng(6)
    d, shape = 784, (1, 28, 28)
    ds, gauss = gaussian_data(d, shape, full=False)  # an eigh at d = 784 costs seconds here
    A = antisym(g, d, 0.8)
    Q = g.standard_normal((d, d)) / math.sqrt(d)
    S = -(Q @ Q.T + np.eye(d))
    closed = (A**2).sum() / ((S**2).sum() + (A**2).sum())
    kw = dict(data=ds, schedule=SCHED, dtype="float64", times=[0.3], n_points=32, n_loops=2,
              K=4, nodes=48)
    r = check_field(Linear(S + A, np.zeros(d)), "torch", **kw)
    assert r["settings"]["jacobian"] == "hutchinson"
    row = r["per_t"][0]
    assert 0 < row["nasym_se"] < 0.1 * closed
    assert abs(row["nasym"] - closed) < 3 * row["nasym_se"], (row["nasym"], row["nasym_se"], closed)
    r = check_field(gauss, "torch", **kw)
    row = r["per_t"][0]
    assert row["nasym"] < 1e-28 and row["nasym_se"] < 1e-28, row
    for fam in LOOP_FAMILIES:
        assert row["loops"][fam]["normalised"]["q3"] < 1e-12, (fam, row["loops"][fam])

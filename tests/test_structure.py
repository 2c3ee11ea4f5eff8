"""Built-in structure of the heads, checked with autodiff in float64."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import B, build, forward_points, shape_for, slow_if_image

import zoo

# image fields (64 x 64 Jacobians through twice-differentiated UNets and DiTs) run with -m slow
CONSERVATIVE = slow_if_image([i for i in zoo.entries() if i.conservative and i.trainable])
FREE = slow_if_image([i for i in zoo.entries("free-*")])


def asym(J):
    """||J - J^T||_F / ||J||_F per example."""
    return np.linalg.norm(J - J.transpose(0, 2, 1), axis=(1, 2)) / np.linalg.norm(J, axis=(1, 2))


@pytest.mark.parametrize("info", CONSERVATIVE, ids=lambda i: f"{i.name}-{i.backend}")
def test_conservative_fields_have_symmetric_jacobians(info, rng):
    """The whole Jacobian (64 x 64 for 8x8 images) is symmetric to float64 precision."""
    f = build(info.name, info.backend, dim=3)
    x, t = rng.standard_normal((16, *shape_for(info, 3))), rng.uniform(1e-2, 5, 16)
    assert np.max(asym(B(info.backend).jacobian(f, x, t))) < 1e-12


@pytest.mark.parametrize("info", FREE, ids=lambda i: f"{i.name}-{i.backend}")
def test_free_field_jacobian_is_not_symmetric(info, rng):
    f = build(info.name, info.backend, dim=3)
    x, t = rng.standard_normal((16, *shape_for(info, 3))), rng.uniform(1e-2, 5, 16)
    assert np.min(asym(B(info.backend).jacobian(f, x, t))) > 1e-3


@pytest.mark.parametrize("backend", ["torch", "jax"])
@pytest.mark.parametrize("data", ["gmm8", "checkerboard"])
def test_exact_score_jacobian_is_symmetric(backend, data, rng):
    x, t = forward_points(rng, data, 0.2, 16)
    J = B(backend).jacobian(zoo.create("exact", backend, data=data), x, t)
    assert np.max(asym(J)) < 1e-10

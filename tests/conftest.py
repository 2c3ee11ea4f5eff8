"""Shared helpers. Field tests are parametrised over the registry at collection time, so a newly
registered field is checked the moment it exists."""

from __future__ import annotations

import numpy as np
import pytest

import zoo
from zoo import backends


def trainable_entries():
    return [i for i in zoo.entries() if i.trainable]


def both_backend_names():
    return sorted({i.name for i in trainable_entries()
                   if set(zoo.registry.backends_of(i.name)) >= {"torch", "jax"}})


def entry_id(info) -> str:
    return f"{info.name}-{info.backend}"


def build(name: str, backend: str, dim: int = 2, dtype: str = "float64", seed: int = 0):
    info = zoo.get_info(name, backend)
    return zoo.create(name, backend, dim=dim, dtype=dtype, init=seed, **info.small)


def rel(a, b) -> float:
    """max |a - b| / max |b| (a relative error that ignores tiny entries' own noise)."""
    a, b = np.asarray(a), np.asarray(b)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def forward_points(rng, data: str, t: float, n: int):
    """x_t = alpha_t x_0 + sigma_t eps for x_0 from the dataset: [n, d], and t as [n]."""
    ds = zoo.get_dataset(data)
    s = zoo.make_schedule("ou")
    tt = np.full(n, t)
    x0 = ds.sample(rng, n)
    return s.alpha(tt)[:, None] * x0 + s.sigma(tt)[:, None] * rng.standard_normal(x0.shape), tt


B = backends.get

"""Analytic datasets, deterministic from a numpy generator.

Each dataset draws samples with ``sample(rng, n) -> [n, dim]`` float64 and, where rho_t has a
closed form under the forward process, describes it with ``exact`` (a Gaussian mixture or a
mixture of uniform boxes) so the field ``exact`` can be built in either backend.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class GaussianMixture:
    """sum_k w_k N(m_k, s_k^2 I): means [K, d], stds [K], weights [K] (sum 1)."""

    means: np.ndarray
    stds: np.ndarray
    weights: np.ndarray

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        k = rng.choice(len(self.weights), size=n, p=self.weights)
        z = rng.standard_normal((n, self.means.shape[1]))
        return self.means[k] + self.stds[k, None] * z


@dataclass(frozen=True)
class BoxMixture:
    """sum_k w_k U(prod_i [lo_ki, hi_ki]): lows, highs [K, d], weights [K] (sum 1)."""

    lows: np.ndarray
    highs: np.ndarray
    weights: np.ndarray

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        k = rng.choice(len(self.weights), size=n, p=self.weights)
        u = rng.uniform(size=(n, self.lows.shape[1]))
        return self.lows[k] + u * (self.highs[k] - self.lows[k])


@dataclass(frozen=True)
class Dataset:
    """A named data distribution: ``dim``, a sampler and, when known, its closed form."""

    name: str
    dim: int
    description: str
    exact: GaussianMixture | BoxMixture | None = None
    sampler: object = field(default=None, repr=False)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """n samples, [n, dim] float64, drawn from ``rng``."""
        if self.exact is not None:
            return self.exact.sample(rng, n)
        return self.sampler(rng, n)


def _gmm8() -> Dataset:
    ang = 2 * np.pi * np.arange(8) / 8
    means = 2.0 * np.stack([np.cos(ang), np.sin(ang)], 1)
    mix = GaussianMixture(means, np.full(8, 0.2), np.full(8, 1 / 8))
    return Dataset("gmm8", 2, "8 Gaussians (std 0.2) on a circle of radius 2", exact=mix)


def _checkerboard() -> Dataset:
    cells = [(i, j) for i in range(4) for j in range(4) if (i + j) % 2 == 0]
    lows = np.array([[-2.0 + i, -2.0 + j] for i, j in cells])
    mix = BoxMixture(lows, lows + 1.0, np.full(len(cells), 1 / len(cells)))
    return Dataset("checkerboard", 2, "uniform on the 8 dark cells of a 4x4 board on [-2, 2]^2",
                   exact=mix)


def _moons(rng: np.random.Generator, n: int) -> np.ndarray:
    which = rng.integers(0, 2, size=n)
    a = np.pi * rng.uniform(size=n)
    upper = np.stack([np.cos(a), np.sin(a)], 1)
    lower = np.stack([1 - np.cos(a), 0.5 - np.sin(a)], 1)
    x = np.where(which[:, None] == 0, upper, lower) + 0.05 * rng.standard_normal((n, 2))
    return (x - np.array([0.5, 0.25])) * 1.5  # centred, unit-ish spread


def _swissroll(rng: np.random.Generator, n: int) -> np.ndarray:
    s = 1.5 * np.pi * (1 + 2 * rng.uniform(size=n))
    x = np.stack([s * np.cos(s), s * np.sin(s)], 1) / 5.0
    return x + 0.05 * rng.standard_normal((n, 2))


def _rings(rng: np.random.Generator, n: int) -> np.ndarray:
    r = np.array([0.75, 1.5, 2.25])[rng.integers(0, 3, size=n)]
    a = 2 * np.pi * rng.uniform(size=n)
    return r[:, None] * np.stack([np.cos(a), np.sin(a)], 1) + 0.05 * rng.standard_normal((n, 2))


def _gmm_d(d: int, k: int = 8) -> Dataset:
    g = np.random.default_rng(20240917 + d)  # the dataset is fixed; runs vary only their seed
    means = 0.8 * g.standard_normal((k, d))
    w = g.uniform(0.5, 1.5, size=k)
    mix = GaussianMixture(means, np.full(k, 0.5), w / w.sum())
    return Dataset(f"gmm-d{d}" if d != 16 else "gmm-d", d,
                   f"{k} Gaussians (std 0.5) in {d} dimensions, unequal weights", exact=mix)


_FIXED = {
    "gmm8": _gmm8,
    "checkerboard": _checkerboard,
    "moons": lambda: Dataset("moons", 2, "two interleaved half circles", sampler=_moons),
    "swissroll": lambda: Dataset("swissroll", 2, "a 2-D swiss roll", sampler=_swissroll),
    "rings": lambda: Dataset("rings", 2, "three concentric rings", sampler=_rings),
}
_GMM_D = re.compile(r"gmm-d(\d*)$")


def list_datasets() -> list[str]:
    """Built-in dataset names (``gmm-d`` takes a dimension suffix: ``gmm-d32``)."""
    return [*_FIXED, "gmm-d"]


def get_dataset(name: str) -> Dataset:
    """The dataset called ``name``; ValueError naming the choices if there is none."""
    if name in _FIXED:
        return _FIXED[name]()
    m = _GMM_D.match(name)
    if m:
        d = int(m.group(1) or 16)
        if not 1 <= d <= 4096:
            raise ValueError(f"gmm-d dimension must be in 1..4096, got {d}")
        return _gmm_d(d)
    raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(list_datasets())} "
                     "(gmm-dN for N dimensions)")

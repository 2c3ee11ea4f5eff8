"""Sample-quality statistics between point sets (numpy)."""

from __future__ import annotations

import numpy as np
from scipy.spatial.distance import cdist


def energy_distance(x: np.ndarray, y: np.ndarray) -> float:
    """Energy distance 2 E|X - Y| - E|X - X'| - E|Y - Y'| (Szekely & Rizzo), V-statistic.

    x: [n, d], y: [m, d]. Zero iff the distributions agree (in the population limit).
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return float(2 * cdist(x, y).mean() - cdist(x, x).mean() - cdist(y, y).mean())


def component_counts(x: np.ndarray, means: np.ndarray, stds: np.ndarray, weights: np.ndarray,
                     alpha: float = 1.0, sigma: float = 0.0) -> np.ndarray:
    """How many points of x each mixture component claims (maximum posterior under rho_t)."""
    var = alpha**2 * np.asarray(stds) ** 2 + sigma**2
    d2 = ((x[:, None, :] - alpha * means[None]) ** 2).sum(-1)
    logp = np.log(weights) - 0.5 * x.shape[1] * np.log(var) - 0.5 * d2 / var
    return np.bincount(logp.argmax(1), minlength=len(weights))

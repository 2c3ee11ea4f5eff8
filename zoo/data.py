"""Datasets, deterministic from a numpy generator: analytic point clouds and image sets.

Each dataset has a ``shape`` ((2,), (16,), (1, 8, 8), (1, 28, 28)) and draws samples with
``sample(rng, n) -> [n, *shape]`` float64. Where rho_t has a closed form under the forward process,
``exact`` describes it (an isotropic or a full-covariance Gaussian mixture, or a mixture of
uniform boxes) so the field ``exact`` can be built in either backend; ``digits-gmm``, a mixture
fitted to the digits, is an image-shaped dataset with a closed-form score. Image sets
(``digits``, ``mnist``) are finite: training draws from their train split, ``sample_heldout``
from their test split, and their labels are kept. Latent sets (``latent-digits``,
``latent-mnist``) are an image set encoded by an autoencoder (``zoo.autoencoder``): flat
vectors, drawn from the encoded splits the same way, with the autoencoder named and its decoder
at hand (``Dataset.latent``).
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

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
class FullGaussianMixture:
    """sum_k w_k N(m_k, C_k), C_k = U_k diag(lam_k) U_k^T, stored factorised.

    means [K, d]; eigvecs U [K, d, d] (orthonormal columns: C_k U_k[:, j] = lam_k[j] U_k[:, j]);
    eigvals lam [K, d] (> 0); weights [K] (sum 1). The factorised form is what the exact fields
    need (cov_t = U (alpha^2 lam + sigma^2) U^T, so its inverse and log-determinant are
    elementwise) and it is computed once here, so both backends receive identical numbers.
    """

    means: np.ndarray
    eigvecs: np.ndarray
    eigvals: np.ndarray
    weights: np.ndarray

    @classmethod
    def from_covariances(cls, means, covariances, weights) -> FullGaussianMixture:
        """From means [K, d], symmetric positive-definite covariances [K, d, d], weights [K]."""
        covariances = np.asarray(covariances, dtype=np.float64)
        lam, u = np.linalg.eigh(0.5 * (covariances + np.swapaxes(covariances, 1, 2)))
        if not np.all(lam > 0):
            raise ValueError("covariances must be positive definite")
        w = np.asarray(weights, dtype=np.float64)
        return cls(np.asarray(means, dtype=np.float64), u, lam, w / w.sum())

    @property
    def covariances(self) -> np.ndarray:
        """C_k = U_k diag(lam_k) U_k^T: [K, d, d]."""
        return np.einsum("kij,kj,klj->kil", self.eigvecs, self.eigvals, self.eigvecs)

    def sample_given(self, k: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One draw from each listed component: k [n] ints -> [n, d], x = m_k + U_k sqrt(lam_k) z."""
        z = rng.standard_normal((len(k), self.means.shape[1]))
        x = np.empty_like(z)
        for j in range(len(self.weights)):  # per component: no [n, d, d] gather of U
            sel = k == j
            x[sel] = self.means[j] + (z[sel] * np.sqrt(self.eigvals[j])) @ self.eigvecs[j].T
        return x

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        k = rng.choice(len(self.weights), size=n, p=self.weights)
        return self.sample_given(k, rng)


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
class ImageSet:
    """Images in [-1, 1] with labels, split once into train and test: [N, C, H, W] float64.

    ``levels``: how many values a pixel takes (17 for digits' 0..16, 256 for MNIST), evenly
    spaced over [-1, 1], so one quantisation bin is 2 / (levels - 1) wide (``bin_width``).
    """

    train: np.ndarray
    train_labels: np.ndarray
    test: np.ndarray
    test_labels: np.ndarray
    levels: int = 256

    @property
    def bin_width(self) -> float:
        return 2.0 / (self.levels - 1)

    def sample(self, rng: np.random.Generator, n: int, split: str = "train") -> np.ndarray:
        """n images drawn uniformly with replacement from one split."""
        pool = self.train if split == "train" else self.test
        return pool[rng.integers(0, len(pool), size=n)]


@dataclass(frozen=True)
class LatentSet:
    """An image set encoded by an autoencoder: scaled latents [N, d] float64 of its train and
    test splits (with their labels), the image set's name (``pixel``), the autoencoder they were
    encoded with ({"path", "sha256"}) and its ``decoder``: latents [n, d] -> images
    [n, *image_shape] float64 (``zoo.autoencoder.decode``)."""

    train: np.ndarray
    train_labels: np.ndarray
    test: np.ndarray
    test_labels: np.ndarray
    pixel: str
    autoencoder: dict
    decoder: Callable[[np.ndarray], np.ndarray] = field(repr=False)
    image_shape: tuple[int, ...] = (1, 8, 8)

    def decode(self, z: np.ndarray) -> np.ndarray:
        """Images [n, *image_shape] float64 of latents z [n, d] (or [n, *shape])."""
        z = np.asarray(z, np.float64)
        return self.decoder(z.reshape(len(z), -1))

    def sample(self, rng: np.random.Generator, n: int, split: str = "train") -> np.ndarray:
        """n latents drawn uniformly with replacement from one split."""
        pool = self.train if split == "train" else self.test
        return pool[rng.integers(0, len(pool), size=n)]


@dataclass(frozen=True)
class Dataset:
    """A named data distribution: ``dim``, a sampler and, when known, its closed form.

    ``shape`` is one sample's shape (``(dim,)`` when not given); ``dim`` = prod(shape).
    """

    name: str
    dim: int
    description: str
    exact: GaussianMixture | FullGaussianMixture | BoxMixture | None = None
    sampler: object = field(default=None, repr=False)
    shape: tuple[int, ...] | None = None
    images: ImageSet | None = field(default=None, repr=False)
    latent: LatentSet | None = field(default=None, repr=False)

    @property
    def autoencoder(self) -> dict | None:
        """{"path", "sha256"} of the autoencoder a latent set was encoded with, else None."""
        return None if self.latent is None else self.latent.autoencoder

    def __post_init__(self) -> None:
        if self.shape is None:
            object.__setattr__(self, "shape", (self.dim,))
        if int(np.prod(self.shape)) != self.dim:
            raise ValueError(f"dataset {self.name}: shape {self.shape} does not hold {self.dim} numbers")

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """n samples, [n, *shape] float64, drawn from ``rng`` (an image set's train split)."""
        if self.images is not None:
            return self.images.sample(rng, n)
        if self.latent is not None:
            return self.latent.sample(rng, n)
        if self.exact is not None:  # mixtures draw flat points: [n, d] -> [n, *shape]
            return self.exact.sample(rng, n).reshape(n, *self.shape)
        return self.sampler(rng, n)

    def sample_heldout(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """n samples no training run has seen: an image set's (or a latent set's) test split;
        for an analytic distribution, fresh draws (which training never sees either)."""
        if self.images is not None:
            return self.images.sample(rng, n, split="test")
        if self.latent is not None:
            return self.latent.sample(rng, n, split="test")
        return self.sample(rng, n)


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


DIGITS_TEST = 300  # of scikit-learn's 1797 digits, a fixed stratified split: 1497 train, 300 test


@functools.cache
def _digits() -> Dataset:
    """scikit-learn's 8x8 digits (shipped with the package, nothing downloaded), 0..16 -> [-1, 1]."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.images.astype(np.float64) / 8.0 - 1.0)[:, None]  # [1797, 1, 8, 8]
    xtr, xte, ytr, yte = train_test_split(x, d.target, test_size=DIGITS_TEST, stratify=d.target,
                                          random_state=0)
    return Dataset("digits", 64, f"scikit-learn's 8x8 digits in [-1, 1] ({len(xtr)} train, "
                   f"{len(xte)} test images)", shape=(1, 8, 8),
                   images=ImageSet(xtr, ytr, xte, yte, levels=17))


# The digits as a Gaussian mixture: an image-shaped dataset whose rho_t is closed form. Chosen by
# mean held-out log-likelihood per image (nats, 64 dims) of the 300 test digits, fitted on the
# 1497 train digits (scikit-learn 1.9.1, random_state 0). The test pixels are quantised (steps
# of 1/8) and many border pixels are always -1, so on the raw test set a smaller variance floor
# (reg_covar) always buys likelihood; the choice uses the test set dequantised (uniform noise of
# one pixel step, 10 copies, default_rng(0)), where too small a floor is punished:
#   dequantised test                    K:  5      8     10     12     15     20     40     80
#   full, reg_covar 3e-4                 -0.3    1.1   -0.5   -3.7   -9.5  -31.4 -337.6
#   full, reg_covar 1e-3                 13.3   16.6   16.5   14.9   11.7    0.4 -120.8
#   full, reg_covar 2e-3                 13.4   17.3   17.8   16.8   15.0    8.0  -55.4
#   full, reg_covar 3e-3                 12.3   16.4   17.2   16.5   15.3   10.4  -31.6
#   full, reg_covar 1e-2                  5.8   10.0   11.5   11.4   11.7   11.0    1.2
#   diag, reg_covar 2e-3                 -1.6    4.3    6.2    8.1    9.8   11.8   15.8   17.6
#   raw test, full 3e-4 / 2e-3 / 1e-2 at K = 10: 35.7 / 24.6 / 13.3
# K = 10, full, reg_covar 2e-3 tops a flat ridge (random_state 1, 2 move it by -0.6, +0.2);
# above K = 10 the 64 x 64 covariances overfit 1497 images, and diagonal ones need K = 80 to
# come close. The floor 2e-3 is about the variance of one quantisation step, (1/8)^2 / 12.
DIGITS_GMM = {"n_components": 10, "covariance_type": "full", "reg_covar": 2e-3,
              "random_state": 0, "max_iter": 200}


@functools.cache
def _digits_gmm() -> Dataset:
    """A Gaussian mixture fitted to the digits' train split (EM, ``DIGITS_GMM``): samples look
    like blurred digits, and rho_t = sum_k w_k N(alpha m_k, alpha^2 C_k + sigma^2 I) is exact.

    The fit depends on scikit-learn's EM (its numbers may move between versions; the tests pin
    the held-out log-likelihood with a tolerance, not the parameters). One BLAS thread: about
    0.3 s, and no thread-count-dependent rounding.
    """
    from sklearn.mixture import GaussianMixture as EM
    from threadpoolctl import threadpool_limits

    train = _digits().images.train
    with threadpool_limits(1):
        g = EM(**DIGITS_GMM).fit(train.reshape(len(train), -1))
    mix = FullGaussianMixture.from_covariances(g.means_, g.covariances_, g.weights_)
    return Dataset("digits-gmm", 64, f"a {DIGITS_GMM['n_components']}-component full-covariance "
                   "Gaussian mixture fitted to the 8x8 digits (closed-form score)",
                   exact=mix, shape=(1, 8, 8))


DATA_ROOT_ENV = "ZOO_DATA_ROOT"


def data_root() -> Path:
    """Where datasets read from local files live: $ZOO_DATA_ROOT, else ./data."""
    return Path(os.environ.get(DATA_ROOT_ENV) or "data")


@functools.cache
def _mnist_from(root: str) -> Dataset:
    from torchvision.datasets import MNIST

    try:  # torchvision reads ROOT/MNIST/raw/*-ubyte; it never downloads unless asked to
        sets = [MNIST(root, train=tr, download=False) for tr in (True, False)]
    except RuntimeError:
        raise ValueError(
            f"mnist: no MNIST files under {Path(root) / 'MNIST' / 'raw'}; point {DATA_ROOT_ENV} "
            "(or --data-root) at a folder that has them, or fetch them once yourself with "
            "python -c \"import torchvision; torchvision.datasets.MNIST('DIR', download=True)\""
        ) from None
    (xtr, ytr), (xte, yte) = (((s.data.numpy().astype(np.float64) / 127.5 - 1.0)[:, None],
                               s.targets.numpy()) for s in sets)
    return Dataset("mnist", 784, f"MNIST 28x28 in [-1, 1] from {root} ({len(xtr)} train, "
                   f"{len(xte)} test images)", shape=(1, 28, 28),
                   images=ImageSet(xtr, ytr, xte, yte))


AUTOENCODER_ENV = "ZOO_AUTOENCODER_DIR"
# latent dataset -> the image set its autoencoder encodes
LATENT = {"latent-digits": "digits", "latent-mnist": "mnist"}


def autoencoder_root() -> Path:
    """Where autoencoders live: $ZOO_AUTOENCODER_DIR, else ./results/autoencoders."""
    return Path(os.environ.get(AUTOENCODER_ENV) or "results/autoencoders")


def autoencoder_dir(data: str) -> Path:
    """The folder of ``data``'s autoencoder (weights.safetensors, config.json): root/data."""
    return autoencoder_root() / data


def _latent(name: str) -> Dataset:
    from zoo.autoencoder import latent_dataset  # torch, only for the latent sets

    return latent_dataset(name)


def check_run_autoencoder(cfg: dict, where: str | Path) -> None:
    """Refuse (ZooError, one line) a run of a latent dataset whose config ``cfg`` records another
    autoencoder than the one on disk now: its field was trained on other latents, and their
    decoder would turn its samples into other images. Runs of other data pass untouched.

    The sha256 of ``autoencoder_dir(image set)/weights.safetensors`` is compared with the one
    config.json recorded at training (``cfg["autoencoder"]["sha256"]``); ``where`` names the run.
    """
    import hashlib

    from zoo.registry import ZooError

    pixel = LATENT.get(cfg.get("data"))
    if pixel is None:
        return
    rec = cfg.get("autoencoder")
    want = rec.get("sha256") if isinstance(rec, dict) else None
    if not isinstance(want, str):
        raise ZooError(f"{where}: a {cfg['data']} run that records no autoencoder sha256; "
                       "retrain it (--force)")
    path = autoencoder_dir(pixel) / "weights.safetensors"
    if not path.is_file():
        raise ZooError(f"{where}: trained with the autoencoder of sha256 {want[:12]}..., and "
                       f"{path} is missing (restore it, or set {AUTOENCODER_ENV})")
    got = hashlib.sha256(path.read_bytes()).hexdigest()
    if got != want:
        raise ZooError(f"{where}: trained with the autoencoder of sha256 {want[:12]}..., but "
                       f"{path} has {got[:12]}... (restore that autoencoder, or retrain the run "
                       "with --force)")


_FIXED = {
    "gmm8": _gmm8,
    "checkerboard": _checkerboard,
    "moons": lambda: Dataset("moons", 2, "two interleaved half circles", sampler=_moons),
    "swissroll": lambda: Dataset("swissroll", 2, "a 2-D swiss roll", sampler=_swissroll),
    "rings": lambda: Dataset("rings", 2, "three concentric rings", sampler=_rings),
    "digits": _digits,
    "digits-gmm": _digits_gmm,
    "mnist": lambda: _mnist_from(str(data_root().resolve())),
    **{name: functools.partial(_latent, name) for name in LATENT},
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

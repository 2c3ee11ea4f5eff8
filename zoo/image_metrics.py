"""Offline image quality: Fréchet distance, class balance, PRDC and memorisation (numpy in, floats out).

Images are [N, C, H, W] in [-1, 1] (or flattened [N, C*H*W]: they are reshaped to the
classifier's shape). Every statistic uses the dataset's own classifier (``zoo.classifier``,
shipped for digits, sha256 checked on load), so nothing is downloaded:

- ``fd``: the Fréchet distance between Gaussians fitted to the classifier's penultimate features
  (F = 32) of samples and of real images, computed by torchmetrics' ``FrechetInceptionDistance``
  with the classifier as its feature extractor, states and features in float64:
  FD = ||mu_f - mu_r||^2 + tr(S_f + S_r - 2 (S_f S_r)^{1/2}).
- ``class_kl``: KL(q || p) = sum_k q_k log(q_k / p_k) of the samples' class histogram q (argmax of
  the classifier) from the data's class distribution p (train-split label frequencies). This
  direction stays finite when a class is missing (q_k = 0 adds 0 log 0 = 0; dropping one of ten
  equal classes gives log(10/9) = 0.105, a single class log 10 = 2.30), as ``component_kl`` does
  for mixtures; KL(p || q) would be infinite there. ``class_entropy`` = -sum_k q_k log q_k
  (log 10 = 2.303 is uniform over ten classes).
- ``feat_precision`` / ``feat_recall`` / ``feat_density`` / ``feat_coverage``: PRDC
  (``zoo.metrics.prdc``, k = 5) in the classifier's feature space.
- ``memorised``: the share of samples at least as near (pixel L2) to their nearest training image
  as the ``MEMO_QUANTILE`` (5 %) quantile tau of the held-out images' nearest-training-image
  distances: mean_i [min_j |x_i - t_j| <= tau]. Held-out images score 5 % by construction, a
  model that copies training images scores near 1 (with 1497 training images a model can).
  ``nn_train_dist``: the median sample-to-nearest-training-image distance.
- ``off_range``: the share of samples with some pixel beyond |x| > ``OFF_RANGE`` = 2, a full
  half-range outside the data's [-1, 1] (real images at t_min: 0). A field whose ODE sends a few
  samples far away (energy-unet on digits: 22 of 500 beyond 2, one pixel at 446) can blow FD up
  by orders of magnitude; this column says how many samples did it.

``image_metrics(fake, real, train, data)`` returns all of them; ``real`` must be held-out images
(the test split), never training images, since it sets tau. ``image_noise_floor`` is their
real-vs-real floor. ``IMAGE_METRICS`` names them like ``zoo.evaluate.METRICS``.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import entropy
from torch import nn

from zoo import metrics as M
from zoo.classifier import Classifier, load_classifier

# metric name -> (short column title, format), in the order of a table (zoo.evaluate.METRICS' form)
IMAGE_METRICS = {
    "fd": ("FD", ".3f"),
    "class_kl": ("KL class", ".2e"),
    "class_entropy": ("H class", ".3f"),
    "feat_precision": ("prec f", ".3f"),
    "feat_recall": ("recall f", ".3f"),
    "feat_density": ("density f", ".3f"),
    "feat_coverage": ("cover f", ".3f"),
    "memorised": ("memorised", ".3f"),
    "nn_train_dist": ("NN train", ".3f"),
    "off_range": ("off-range", ".3f"),
}
OFF_RANGE = 2.0  # |pixel| beyond this is off the data's range [-1, 1] by a full half-range
# memorisation's threshold: this quantile of the held-out images' nearest-train distances. Low,
# so that only samples closer to the training set than nearly all real unseen digits count; on
# digits the test split's 5 % quantile is 1.414 (median 2.08, the closest train pair 0.66).
MEMO_QUANTILE = 0.05
MEMO_METRICS = ("memorised", "nn_train_dist")  # need a training split (a finite image set)
# the classifier whose features measure each image dataset: digits-gmm is drawn in digits' image
# space (a mixture fitted to them), so the digits classifier reads it too
_CLASSIFIER_OF = {"digits": "digits", "digits-gmm": "digits", "mnist": "mnist"}


def classifier_of(data: str) -> str | None:
    """The classifier (``zoo.classifier``) that measures images of ``data``, or None."""
    return _CLASSIFIER_OF.get(data)


def classifier_sha256(data: str) -> str:
    """The sha256 of ``data``'s classifier weights (checked against its record on load)."""
    return load_classifier(data)[1]["sha256"]
_BATCH = 1024


class ClassifierFeatures(nn.Module):
    """The classifier's penultimate features as torchmetrics' FID feature extractor:
    x [N, C, H, W] -> [N, F] float64. ``num_features`` spares torchmetrics its probe with a
    random 3 x 299 x 299 image, and the module never leaves eval mode (a Metric is a Module
    created in training mode)."""

    def __init__(self, model: Classifier) -> None:
        super().__init__()
        self.model = model
        self.num_features = model.cfg.features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.features(x.to(torch.float64))

    def train(self, mode: bool = True) -> ClassifierFeatures:
        return super().train(False)


class IdentityFeatures(nn.Module):
    """Features that are the input [N, F]: the same Fréchet code path on given feature vectors."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(torch.float64)


def _as_images(x: np.ndarray, model: Classifier) -> np.ndarray:
    """[N, C, H, W] or [N, C*H*W] -> [N, C, H, W] float64 in the classifier's image shape."""
    x = np.asarray(x, np.float64)
    return x.reshape(len(x), *model.cfg.shape)


def frechet(fake: np.ndarray, real: np.ndarray, feature: nn.Module) -> float:
    """Fréchet distance of ``feature(fake)`` from ``feature(real)`` by torchmetrics' FID, float64.

    fake: [N, ...], real: [M, ...] (whatever ``feature`` takes; N, M >= 2), ``feature``: a Module
    with ``num_features`` that maps a batch to [B, F]. With sample means mu and covariances S
    (ddof = 1) of the features: FD = ||mu_f - mu_r||^2 + tr(S_f + S_r - 2 (S_f S_r)^{1/2}),
    the trace of the square root taken as sum_i sqrt(lambda_i(S_f S_r)).
    """
    from torchmetrics.image.fid import FrechetInceptionDistance

    fid = FrechetInceptionDistance(feature=feature, normalize=False).set_dtype(torch.float64)
    for x, is_real in ((real, True), (fake, False)):
        x = torch.as_tensor(np.asarray(x), dtype=torch.float64)
        for i in range(0, len(x), _BATCH):
            fid.update(x[i:i + _BATCH], real=is_real)
    return float(fid.compute())


def frechet_distance(fake: np.ndarray, real: np.ndarray, data: str = "digits") -> float:
    """FD of images fake [N, C, H, W] from real [M, C, H, W] in ``data``'s classifier features."""
    model, _ = load_classifier(data)
    return frechet(_as_images(fake, model), _as_images(real, model), ClassifierFeatures(model))


@torch.no_grad()
def features(images: np.ndarray, data: str = "digits") -> np.ndarray:
    """Penultimate features [N, F] float64 of images [N, C, H, W] (the float64 classifier)."""
    model, _ = load_classifier(data)
    x = torch.as_tensor(_as_images(images, model))
    return torch.cat([model.features(x[i:i + _BATCH]) for i in range(0, len(x), _BATCH)]).numpy()


def class_counts(images: np.ndarray, data: str = "digits") -> np.ndarray:
    """How many images the classifier puts in each class: [classes] ints (argmax of the logits)."""
    from zoo.classifier import predict

    model, _ = load_classifier(data)
    return np.bincount(predict(model, _as_images(images, model)), minlength=model.cfg.classes)


def class_distribution(data: str = "digits") -> np.ndarray:
    """p_k: the train split's label frequencies [classes] (sum 1)."""
    from zoo.classifier import _image_set

    model, _ = load_classifier(data)
    labels = _image_set(data).train_labels
    return np.bincount(labels, minlength=model.cfg.classes) / len(labels)


def class_kl(counts: np.ndarray, p: np.ndarray) -> float:
    """KL(q || p) = sum_k q_k log(q_k / p_k), q = counts / sum(counts): finite with empty classes."""
    return M.component_kl(counts, p)


def nearest_distance(x: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """min_j |x_i - ref_j| (Euclidean, flattened pixels): [N] for x [N, ...], ref [M, ...].

    The nearest neighbour is found with |x|^2 - 2 x.r + |r|^2 by blocks (BLAS; MNIST's 60000
    training images are too many for pairwise differences), then its distance recomputed as
    |x_i - r_j| directly, so an exact copy gives exactly 0.
    """
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    ref = np.asarray(ref, np.float64).reshape(len(ref), -1)
    r2 = (ref**2).sum(1)
    out = np.empty(len(x))
    for i in range(0, len(x), _BATCH):
        b = x[i:i + _BATCH]
        j = np.argmin(r2[None] - 2.0 * b @ ref.T, axis=1)  # |b|^2 is constant along a row
        out[i:i + _BATCH] = np.linalg.norm(b - ref[j], axis=1)
    return out


def memorisation(fake: np.ndarray, real: np.ndarray, train: np.ndarray,
                 q: float = MEMO_QUANTILE) -> dict[str, float]:
    """{"memorised": mean_i [d(fake_i) <= tau], "nn_train_dist": median_i d(fake_i)}, where
    d(x) = min_j |x - train_j| (pixel L2) and tau = the q-quantile of d over ``real`` (held-out
    images; numpy's ``inverted_cdf``, an observed distance, so ``real`` itself scores
    ceil(q M) / M = q when no distances tie at tau). fake [N, ...], real [M, ...], train [T, ...].
    """
    tau = float(np.quantile(nearest_distance(real, train), q, method="inverted_cdf"))
    d = nearest_distance(fake, train)
    return {"memorised": float(np.mean(d <= tau)), "nn_train_dist": float(np.median(d))}


def off_range(x: np.ndarray, bound: float = OFF_RANGE) -> float:
    """The share of images x [N, ...] with some pixel beyond |x| > ``bound``."""
    x = np.asarray(x).reshape(len(x), -1)
    return float(np.mean(np.abs(x).max(axis=1) > bound))


def _metrics(fake: np.ndarray, ff: np.ndarray, real: np.ndarray, fr: np.ndarray,
             train: np.ndarray, model: Classifier, p: np.ndarray, prdc_k: int, q: float
             ) -> dict[str, float]:
    """``image_metrics`` from images and their features (ff [N, F], fr [M, F]), so a noise floor
    computes each image's features once. FD goes through the same torchmetrics FID with
    ``IdentityFeatures``: FID's statistics depend on its feature extractor's output alone."""
    with torch.no_grad():
        logits = model.out(torch.as_tensor(ff))  # logits = W_o features + b_o
    counts = np.bincount(logits.argmax(1).numpy(), minlength=model.cfg.classes)
    out = {"fd": frechet(ff, fr, IdentityFeatures(ff.shape[1])),
           "class_kl": class_kl(counts, p),
           "class_entropy": float(entropy(counts)),
           **{f"feat_{k}": v for k, v in M.prdc(fr, ff, k=prdc_k).items()},
           "off_range": off_range(fake)}
    if train is not None:
        out.update(memorisation(fake, real, train, q))
    return {k: out[k] for k in IMAGE_METRICS if k in out}


def image_metrics(fake: np.ndarray, real: np.ndarray, train: np.ndarray | None,
                  data: str = "digits", prdc_k: int = 5, q: float = MEMO_QUANTILE
                  ) -> dict[str, float]:
    """Every metric of ``IMAGE_METRICS`` for samples fake [N, C, H, W] against held-out images
    real [M, C, H, W], with train [T, C, H, W] the images the model was trained on (None: a
    distribution with no training set to copy, such as digits-gmm; no memorisation metrics).

    FD equals ``frechet_distance(fake, real, data)`` (the classifier inside FID; a test checks
    it) but takes the features computed once for PRDC and the class histogram. Non-finite
    samples raise ValueError: the caller reports them (as ``zoo.evaluate`` does) rather than
    averaging over the finite part, which would hide a diverging sampler."""
    if not np.all(np.isfinite(fake)):
        raise ValueError("image_metrics: the samples hold non-finite values")
    model, _ = load_classifier(data)
    fake, real = _as_images(fake, model), _as_images(real, model)
    return _metrics(fake, features(fake, data), real, features(real, data), train, model,
                    class_distribution(data), prdc_k, q)


def image_noise_floor(real: np.ndarray, train: np.ndarray, n: int, data: str = "digits",
                      repeats: int = 20, rng: np.random.Generator | int | None = 0,
                      prdc_k: int = 5, q: float = MEMO_QUANTILE
                      ) -> dict[str, tuple[float, float]]:
    """{metric: (mean, std over draws, ddof = 1)}: ``image_metrics`` of what a perfect model
    that never copies would give, over ``repeats`` (>= 20 for a verdict) draws of n images.

    The distribution metrics (FD, class KL and entropy, PRDC) take n training images as the
    samples (drawn without replacement while n <= T), against the same held-out ``real``: real
    digits the held-out set has never met. Memorisation cannot use training images (they are
    copies by definition and score 1); its floor takes n held-out images drawn with replacement
    from ``real``, which score q in expectation (binomial std sqrt(q (1 - q) / n)).
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    g = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    model, _ = load_classifier(data)
    real, train = _as_images(real, model), _as_images(train, model)
    fr, ft, p = features(real, data), features(train, data), class_distribution(data)
    vals = []
    for _ in range(repeats):
        i = g.choice(len(train), size=n, replace=n > len(train))
        v = _metrics(train[i], ft[i], real, fr, train, model, p, prdc_k, q)
        v.update(memorisation(real[g.integers(0, len(real), size=n)], real, train, q))
        vals.append(v)
    return {k: (float(np.mean([v[k] for v in vals])),
                float(np.std([v[k] for v in vals], ddof=1)) if repeats > 1 else 0.0)
            for k in IMAGE_METRICS}

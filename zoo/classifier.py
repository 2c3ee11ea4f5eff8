"""A small CNN classifier for image datasets, the feature extractor of the offline image metrics.

The zoo's image metrics (``zoo.image_metrics``: Fréchet distance, class histogram, PRDC in feature
space) need a network that has seen the data, and nothing may be downloaded, so the zoo trains
its own: a four-convolution CNN on the dataset's train split, deterministic (one seed, one
thread, ``torch.use_deterministic_algorithms``, a fixed data order), so retraining on the same
machine reproduces the weight file byte for byte. The digits classifier ships with the package
(``zoo/assets/digits-classifier.safetensors`` and its ``.json`` record: sha256, accuracies,
architecture, training settings, library versions); MNIST gets its own the same way when its
files are present (``zoo classifier train --data mnist``), nothing is shipped for it.

Loading checks the file's sha256 against the record and refuses a mismatch with ZooError
(one line, exit 2 in the CLI). Weights are safetensors only, never pickle.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import platform
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from zoo.registry import ZooError

ASSETS = Path(__file__).parent / "assets"
CLASSIFIER_DATA = ("digits", "mnist")  # image datasets a classifier can be trained for


@dataclass(frozen=True)
class ClassifierConfig:
    """The network: two conv blocks (two 3x3 convs + ReLU, then 2x2 max-pool), a 2x2 average
    pool, a ``features``-wide SiLU layer (the penultimate features), a linear map to the logits.

    ``features = 32``: the Fréchet distance estimates an F x F covariance from a few hundred
    images (the digits test split has 300), so F must stay well below n; at F = 32 the
    covariance has 528 free entries against 300 x 32 numbers, where Inception's 2048 would be
    hopeless. 32 is also ample for 10 classes (the logits are a linear map of the features).
    """

    shape: tuple[int, int, int] = (1, 8, 8)  # [C, H, W]
    channels: tuple[int, int] = (32, 64)
    features: int = 32
    classes: int = 10
    act: str = "silu"  # of the feature layer


@dataclass(frozen=True)
class TrainConfig:
    """Training settings (AdamW on cross-entropy, a fixed data order and augmentation)."""

    seed: int = 0
    epochs: int = 20
    batch: int = 64
    lr: float = 2e-3  # peak; cosine decay to 0 over the run (the last epochs settle the weights)
    weight_decay: float = 1e-2  # AdamW's decoupled decay
    shift: int = 1  # random shifts of up to this many pixels, filled with the background -1


_ACTS = {"relu": torch.relu, "silu": nn.functional.silu}


class Classifier(nn.Module):
    """A small VGG-style CNN (Simonyan & Zisserman 2015, scaled down): x [N, C, H, W] in [-1, 1]
    -> logits [N, classes]; ``features(x)`` -> [N, F], the penultimate layer."""

    def __init__(self, cfg: ClassifierConfig) -> None:
        super().__init__()
        c = cfg.shape[0]
        c1, c2 = cfg.channels
        self.cfg = cfg
        self.conv = nn.Sequential(
            nn.Conv2d(c, c1, 3, padding=1), nn.ReLU(), nn.Conv2d(c1, c1, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), nn.Conv2d(c2, c2, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
            # 8x8 -> 2x2 already (an identity here); 28x28 -> 7x7 -> 2x2: one head for both sizes
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
        )
        self.hidden = nn.Linear(4 * c2, cfg.features)
        self.out = nn.Linear(cfg.features, cfg.classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """[N, C, H, W] -> [N, F] = act(W_h conv(x) + b_h).

        SiLU rather than ReLU: with ReLU 15 of 32 units were dead on the digits test split
        (a constant 0, wasted width in the covariance); SiLU has no dead units."""
        return _ACTS[self.cfg.act](self.hidden(self.conv(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, C, H, W] -> logits [N, classes] = W_o features(x) + b_o."""
        return self.out(self.features(x))


def paths(data: str, out: str | Path | None = None) -> tuple[Path, Path]:
    """(weights, record) of ``data``'s classifier in ``out`` (default: the package's assets)."""
    root = ASSETS if out is None else Path(out)
    return root / f"{data}-classifier.safetensors", root / f"{data}-classifier.json"


def _image_set(data: str):
    """The ImageSet of ``data``: ZooError if it is not an image dataset or its files are missing."""
    from zoo.data import get_dataset

    if data not in CLASSIFIER_DATA:
        raise ZooError(f"no classifier for {data!r}; image datasets: {', '.join(CLASSIFIER_DATA)}")
    try:
        ds = get_dataset(data)
    except ValueError as e:  # mnist without its local files
        raise ZooError(str(e)) from None
    return ds.images


@contextlib.contextmanager
def _deterministic(threads: int = 1) -> Iterator[None]:
    """Deterministic kernels on ``threads`` threads inside the block; the caller's settings after.

    One thread fixes the order of floating-point reductions in CPU convolutions and matmuls, so
    the same machine and library versions produce the same bits."""
    prev_threads = torch.get_num_threads()
    prev_det = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev_det, warn_only=prev_warn)
        torch.set_num_threads(prev_threads)


def _shift(x: torch.Tensor, dy: int, dx: int, fill: float = -1.0) -> torch.Tensor:
    """x [N, C, H, W] moved by (dy, dx) pixels, the vacated border set to ``fill``."""
    h, w = x.shape[-2:]
    out = torch.full_like(x, fill)
    out[..., max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        x[..., max(-dy, 0):h - max(dy, 0), max(-dx, 0):w - max(dx, 0)]
    return out


def _augment(x: torch.Tensor, rng: np.random.Generator, shift: int) -> torch.Tensor:
    """Each image moved by its own (dy, dx) in {-shift..shift}^2, drawn from ``rng``."""
    if shift == 0:
        return x
    d = rng.integers(-shift, shift + 1, size=(len(x), 2))
    out = x.clone()
    for dy in range(-shift, shift + 1):
        for dx in range(-shift, shift + 1):
            sel = np.flatnonzero((d[:, 0] == dy) & (d[:, 1] == dx))
            if len(sel) and (dy or dx):
                idx = torch.as_tensor(sel)
                out[idx] = _shift(x[idx], dy, dx)
    return out


@torch.no_grad()
def predict(model: Classifier, images: np.ndarray, batch: int = 1024) -> np.ndarray:
    """Class labels [N] (argmax of the logits) of images [N, C, H, W], in the model's dtype."""
    dtype = next(model.parameters()).dtype
    x = torch.as_tensor(np.asarray(images), dtype=dtype)
    return torch.cat([model(x[i:i + batch]).argmax(1) for i in range(0, len(x), batch)]).numpy()


def accuracy(model: Classifier, images: np.ndarray, labels: np.ndarray) -> float:
    """Share of images whose predicted class is their label."""
    return float(np.mean(predict(model, images) == np.asarray(labels)))


def train_classifier(data: str = "digits", cfg: TrainConfig = TrainConfig(), evaluate: bool = True
                     ) -> tuple[Classifier, dict]:
    """Train ``data``'s classifier on its train split: (model in float32, record).

    Deterministic: the initial weights come from ``torch.manual_seed(cfg.seed)`` inside a forked
    RNG (the caller's torch RNG is left alone), batch order and shifts from
    ``np.random.default_rng(cfg.seed)``, one thread and deterministic kernels. The record holds
    the architecture, the settings, train and test accuracy (of the float64 model, as the
    metrics use it; left out when not ``evaluate``) and the library versions;
    ``save_classifier`` adds the sha256.
    """
    images = _image_set(data)
    arch = ClassifierConfig(shape=tuple(images.train.shape[1:]),
                            classes=int(max(images.train_labels.max(), images.test_labels.max())) + 1)
    x = torch.as_tensor(images.train, dtype=torch.float32)
    y = torch.as_tensor(images.train_labels, dtype=torch.long)
    rng = np.random.default_rng(cfg.seed)
    with _deterministic(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = Classifier(arch)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        steps = cfg.epochs * -(-len(x) // cfg.batch)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 0.5 * (1 + math.cos(math.pi * k / steps)))
        model.train()
        for _ in range(cfg.epochs):
            order = torch.as_tensor(rng.permutation(len(x)))
            for i in range(0, len(x), cfg.batch):
                idx = order[i:i + cfg.batch]
                loss = nn.functional.cross_entropy(model(_augment(x[idx], rng, cfg.shift)), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
    model.eval()
    record = {
        "data": data,
        "architecture": {"class": "Classifier", **asdict(arch)},
        "training": asdict(cfg),
        "n_train": len(images.train),
        "n_test": len(images.test),
        "versions": {"torch": torch.__version__, "numpy": np.__version__,
                     "python": sys.version.split()[0]},
        "machine": platform.machine(),
    }
    if evaluate:
        m64 = _float64(model)
        record["train_accuracy"] = accuracy(m64, images.train, images.train_labels)
        record["test_accuracy"] = accuracy(m64, images.test, images.test_labels)
    return model, record


def save_classifier(model: Classifier, record: dict, out: str | Path | None = None) -> dict:
    """Write ``{data}-classifier.safetensors`` (float32 weights, no header metadata, so the bytes
    depend on the weights alone) and ``{data}-classifier.json`` (the record plus the file's
    sha256) to ``out`` (default: the package's assets); returns the completed record."""
    from safetensors.numpy import save as st_save

    from zoo.checkpoint import atomic_write, write_json

    weights, rec_path = paths(record["data"], out)
    weights.parent.mkdir(parents=True, exist_ok=True)
    blob = st_save({k: np.ascontiguousarray(v.detach().cpu().numpy())
                    for k, v in model.state_dict().items()})
    record = {**record, "file": weights.name, "sha256": hashlib.sha256(blob).hexdigest()}
    atomic_write(weights, blob)
    write_json(rec_path, record)
    return record


def _float64(model: Classifier) -> Classifier:
    """A float64 copy in eval mode (the metrics compute features in float64)."""
    return copy.deepcopy(model).double().eval().requires_grad_(False)


_CACHE: dict[tuple[str, ClassifierConfig], Classifier] = {}  # float64 models by (sha256, config)


def load_classifier(data: str = "digits", weights: str | Path | None = None
                    ) -> tuple[Classifier, dict]:
    """(float64 model in eval mode, record) of ``data``'s classifier.

    ``weights`` defaults to the package's ``{data}-classifier.safetensors``; its record is the
    ``.json`` beside it. The file's sha256 is computed on every call and must equal the record's,
    else ZooError (one line): a changed file would silently change every FD in the leaderboard.
    """
    if weights is None:
        if data not in CLASSIFIER_DATA:
            raise ZooError(f"no classifier for {data!r}; image datasets: {', '.join(CLASSIFIER_DATA)}")
        weights, rec_path = paths(data)
    else:
        weights = Path(weights)
        rec_path = weights.with_suffix(".json")
    if not weights.is_file():
        raise ZooError(f"{weights}: no classifier weights (train them with "
                       f"`zoo classifier train --data {data}`)")
    if not rec_path.is_file():
        raise ZooError(f"{rec_path}: missing (the record with the weights' sha256)")
    try:
        record = json.loads(rec_path.read_text())
        want = record["sha256"]
        arch = {k: v for k, v in record["architecture"].items() if k != "class"}
        cfg = ClassifierConfig(**{k: tuple(v) if isinstance(v, list) else v
                                  for k, v in arch.items()})
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as e:
        raise ZooError(f"{rec_path}: unreadable classifier record ({type(e).__name__}: {e})") from None
    if record.get("data") != data:  # the network would run (its pooling adapts to any size)
        raise ZooError(f"{weights}: a classifier for {record.get('data')!r}, not {data!r}")
    blob = weights.read_bytes()
    got = hashlib.sha256(blob).hexdigest()
    if got != want:
        raise ZooError(f"{weights}: sha256 {got[:12]}... does not match the recorded {want[:12]}... "
                       "(file altered or truncated)")
    if (got, cfg) not in _CACHE:
        from safetensors.numpy import load as st_load

        try:
            state = {k: torch.from_numpy(v.copy()) for k, v in st_load(blob).items()}
            with torch.random.fork_rng(devices=[]):  # the throwaway initial weights draw numbers
                model = Classifier(cfg)
            model.load_state_dict(state)
        except Exception as e:  # safetensors and load_state_dict raise their own types
            raise ZooError(f"{weights}: does not fit the recorded architecture ({e})") from None
        _CACHE[got, cfg] = _float64(model)
    return _CACHE[got, cfg], record

"""The first stage of latent diffusion: an autoencoder for an image set, trained deterministically,
stored with its sha256, and the latent datasets made with it (``latent-digits``, ``latent-mnist``).

Training (``train_autoencoder``): the KL-regularised autoencoder of ``fields.torch.autoencoder``
(Rombach et al. 2022's first stage, with a flat latent) on the image set's train split, by
minimising per image

    L(x) = ||x - D(z)||^2 / d + beta KL(N(m(x), diag e^{v(x)}) || N(0, I)),  z = m + e^{v/2} eps,

with d the number of pixels. This is the Gaussian-decoder VAE's loss ||x - D||^2 / (2 s^2) + KL
rescaled by 2 s^2 / d, so beta = 2 s^2 / d picks the decoder noise s: beta = 1e-4 at d = 64 is
s = 0.057, half of one of digits' 17 grey levels (0.125). The KL term keeps the posterior a cloud
of that width rather than a point, so the decoder is smooth around every training latent (a
diffusion sample a little off them still decodes to a digit), and keeps the latents near the
origin. Deterministic like the classifier (``zoo.classifier``): initial weights from ``zoo.init``
and a numpy generator, batch order and posterior noise from the same generator, one torch
thread and deterministic kernels, so a retrained file has the same sha256 on the same machine.

Latents (``encode``): the posterior mean, shifted and scaled as latent diffusion does,
z = (m(x) - shift) / scale, shift = the per-dimension mean of m over the train split, scale =
the standard deviation of all its centred entries (one number, so the latent dimensions keep
their relative sizes): the train latents have mean 0 and mean variance 1, the scale of the
forward process's N(0, I) at T. ``decode`` inverts it: D(scale z + shift).

Files (``save_autoencoder``): ``<dir>/weights.safetensors`` (float32, no metadata, so the bytes
depend on the weights alone), ``<dir>/config.json`` (architecture, latent size, shift and scale,
training settings, train and test reconstruction MSE, the reconstruction FD, sha256 of the
weights, library versions) and ``<dir>/reconstructions.png``, where <dir> is
``results/autoencoders/<data>`` (``zoo.data.autoencoder_dir``; $ZOO_AUTOENCODER_DIR moves the
root). Loading checks the sha256 against config.json; weights are never pickled.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from fields.torch.autoencoder import Autoencoder
from zoo.data import (
    AUTOENCODER_ENV,
    LATENT,
    Dataset,
    LatentSet,
    autoencoder_dir,
    get_dataset,
)
from zoo.registry import ZooError

WEIGHTS, RECORD, GRID = "weights.safetensors", "config.json", "reconstructions.png"
AUTOENCODER_DATA = tuple(LATENT.values())  # image sets an autoencoder can be trained for


@dataclass(frozen=True)
class AutoencoderConfig:
    """The network (``fields.torch.autoencoder.Autoencoder``): image shape, latent size, width.

    ``latent = 16``: a flat latent lets every MLP head run on it, and 16 numbers is gmm-d's
    dimension, where the MLP fields are tested and compared; a quarter of digits' 64 pixels,
    enough for a test reconstruction error well below the spread of the digits themselves.
    """

    shape: tuple[int, int, int] = (1, 8, 8)
    latent: int = 16
    channels: int = 16  # c: the encoder's widths are c, 2c, 2c, 4c (the decoder's mirror them);
    # 16 trains 150 epochs in about 85 s on one loaded core (32: 4x the time) and already
    # reconstructs the test digits to an FD within the real-vs-real floor


@dataclass(frozen=True)
class TrainConfig:
    """Training settings (AdamW, cosine decay, a fixed data order and posterior noise)."""

    seed: int = 0
    epochs: int = 150
    batch: int = 64
    lr: float = 2e-3  # peak; cosine decay to 0 over the run
    weight_decay: float = 0.0
    kl_weight: float = 1e-4  # beta = 2 s^2 / d: decoder noise s = 0.057 at d = 64 (see above)
    logvar_clip: tuple[float, float] = (-30.0, 20.0)  # as latent diffusion's posterior


def _image_set(data: str):
    """The ImageSet of ``data``: ZooError if no autoencoder is made for it or its files are missing."""
    if data not in AUTOENCODER_DATA:
        raise ZooError(f"no autoencoder for {data!r}; image datasets: {', '.join(AUTOENCODER_DATA)}")
    try:
        return get_dataset(data).images
    except ValueError as e:  # mnist without its local files
        raise ZooError(str(e)) from None


def _init(model: Autoencoder, rng: np.random.Generator) -> Autoencoder:
    """Initial weights from ``zoo.init`` (U(-1/sqrt(fan_in), ..), torch's default rule), drawn
    from ``rng``: the same numbers in either backend, and the caller's torch RNG is untouched."""
    from zoo.backends import torch_backend
    from zoo.init import init_params

    params = init_params(torch_backend.named_params(model), rng)
    return torch_backend.load_params(model, params, "float32")


def train_autoencoder(data: str = "digits", arch: AutoencoderConfig | None = None,
                      cfg: TrainConfig = TrainConfig()) -> tuple[Autoencoder, dict]:
    """Train ``data``'s autoencoder on its train split: (model in float32, eval mode; record).

    The record holds the architecture, the settings, the latent shift and scale (computed in
    float64 from the float32 weights, as every later encoding is), the train and test
    reconstruction MSE of the deterministic reconstruction D(m(x)) (mean over images and
    pixels, float64) and the library versions. ``save_autoencoder`` adds the sha256.
    """
    from zoo.classifier import _deterministic

    images = _image_set(data)
    arch = arch or AutoencoderConfig(shape=tuple(images.train.shape[1:]))
    if tuple(arch.shape) != tuple(images.train.shape[1:]):
        raise ZooError(f"autoencoder shape {arch.shape} does not fit {data}'s "
                       f"{tuple(images.train.shape[1:])}")
    try:
        with torch.random.fork_rng(devices=[]):  # the throwaway default init draws torch numbers
            model = Autoencoder(**asdict(arch))
    except ValueError as e:
        raise ZooError(str(e)) from None
    rng = np.random.default_rng(cfg.seed)
    x = torch.as_tensor(images.train, dtype=torch.float32)
    d = int(np.prod(arch.shape))
    lo, hi = cfg.logvar_clip
    t0 = time.perf_counter()
    with _deterministic():
        model = _init(model, rng)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        steps = cfg.epochs * -(-len(x) // cfg.batch)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda k: 0.5 * (1 + math.cos(math.pi * k / steps)))
        model.train()
        for _ in range(cfg.epochs):
            order = torch.as_tensor(rng.permutation(len(x)))
            for i in range(0, len(x), cfg.batch):
                xb = x[order[i:i + cfg.batch]]
                mean, logvar = model.encode(xb)
                logvar = logvar.clamp(lo, hi)
                eps = torch.as_tensor(rng.standard_normal(mean.shape), dtype=mean.dtype)
                z = mean + torch.exp(0.5 * logvar) * eps
                rec = ((model.decode(z) - xb) ** 2).flatten(1).sum(1) / d
                kl = 0.5 * (mean**2 + logvar.exp() - 1.0 - logvar).sum(1)
                loss = (rec + cfg.kl_weight * kl).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
    model.eval()
    wall = time.perf_counter() - t0
    m64 = _float64(model)
    means = _means(m64, images.train)
    shift = means.mean(0)
    scale = float((means - shift).std())
    record = {
        "data": data,
        "architecture": {"class": "Autoencoder", **asdict(arch)},
        "latent": arch.latent,
        "latent_scaling": {
            "shift": shift.tolist(), "scale": scale,
            "rule": "z = (m(x) - shift) / scale, m the posterior mean; decode: D(scale z + shift); "
                    "shift = per-dimension mean of m over the train split, scale = std of all "
                    "its centred entries"},
        "training": asdict(cfg),
        "n_train": len(images.train),
        "n_test": len(images.test),
        "train_mse": reconstruction_mse(m64, images.train),
        "test_mse": reconstruction_mse(m64, images.test),
        "train_seconds": round(wall, 1),
        "versions": {"torch": torch.__version__, "numpy": np.__version__,
                     "python": sys.version.split()[0]},
        "machine": platform.machine(),
    }
    return model, record


def _float64(model: Autoencoder) -> Autoencoder:
    """A float64 copy in eval mode with no gradients (encoding and decoding run in float64)."""
    import copy

    return copy.deepcopy(model).double().eval().requires_grad_(False)


_BATCH = 1024


@torch.no_grad()
def _means(model: Autoencoder, images: np.ndarray) -> np.ndarray:
    """Posterior means m(x) [N, latent] float64 of images [N, C, H, W]."""
    x = torch.as_tensor(np.asarray(images, np.float64))
    return torch.cat([model.encode(x[i:i + _BATCH])[0] for i in range(0, len(x), _BATCH)]).numpy()


@torch.no_grad()
def _decode_raw(model: Autoencoder, m: np.ndarray) -> np.ndarray:
    """D(m) [N, C, H, W] float64 of unscaled latents m [N, latent]."""
    z = torch.as_tensor(np.asarray(m, np.float64))
    return torch.cat([model.decode(z[i:i + _BATCH]) for i in range(0, len(z), _BATCH)]).numpy()


def reconstruction_mse(model: Autoencoder, images: np.ndarray) -> float:
    """mean over images and pixels of (x - D(m(x)))^2, the deterministic reconstruction."""
    return float(np.mean((_decode_raw(model, _means(model, images)) - images) ** 2))


def encode(model: Autoencoder, record: dict, images: np.ndarray) -> np.ndarray:
    """Scaled latents z = (m(x) - shift) / scale: images [N, C, H, W] -> [N, latent] float64."""
    s = record["latent_scaling"]
    return (_means(model, images) - np.asarray(s["shift"])) / s["scale"]


def decode(model: Autoencoder, record: dict, z: np.ndarray) -> np.ndarray:
    """Images D(scale z + shift): scaled latents [N, latent] -> [N, C, H, W] float64 in [-1, 1]."""
    s = record["latent_scaling"]
    return _decode_raw(model, np.asarray(z, np.float64) * s["scale"] + np.asarray(s["shift"]))


def reconstruction_fd(model: Autoencoder, record: dict, *, n: int | None = None,
                      repeats: int = 20) -> dict:
    """The autoencoder's own Fréchet distance, measured as ``zoo eval`` measures samples: at the
    default schedule's t_min (alpha x + sigma eps), in the classifier's features, against the
    whole test split (the reference of ``zoo.evaluate``, stream [3, 0]).

    - ``test``: the reconstructions of the test images themselves against the test split: the
      distortion alone (the same images on both sides; 0 for a perfect autoencoder up to noise).
    - ``train_draws``: the real-vs-real floor's draws (``zoo.evaluate._floor_draw``, same stream
      [5, n, n_ref], so the same training images and noise) with every training image replaced
      by its reconstruction: mean and std over ``repeats`` draws, and ``paired_difference``, the
      mean and std of (reconstructed - real) per draw. ``floor`` is the real digits' FD floor
      (``noise_floors``): a latent model that generates its training latents exactly sits at
      ``train_draws``, not at ``floor``.
    ``n``: samples per draw (default: the test split's size). Needs the data's classifier.
    """
    from zoo import image_metrics as IM
    from zoo.api import make_schedule
    from zoo.data import ImageSet
    from zoo.evaluate import _floor_draw, _real_sampler, noise_floors

    data = record["data"]
    ds = get_dataset(data)
    im = ds.images
    n = n or len(im.test)
    sch = make_schedule("ou")
    a, s = float(sch.alpha(sch.t_min)), float(sch.sigma(sch.t_min))
    clf = IM.classifier_of(data)

    def fd(fake, real):
        return {"fd": IM.frechet_distance(fake, real, clf)}

    rng = np.random.default_rng([3, 0])
    real = _real_sampler(ds, sch)(rng, len(im.test))
    rec_test = _decode_raw(model, _means(model, im.test))
    test = fd(a * rec_test.reshape(len(rec_test), -1)
              + s * rng.standard_normal(real.shape), real)["fd"]
    recon = Dataset(f"{data}-reconstructed", ds.dim, "reconstructions", shape=ds.shape,
                    images=ImageSet(_decode_raw(model, _means(model, im.train)), im.train_labels,
                                    im.test, im.test_labels, levels=im.levels))
    draw = _floor_draw(recon, sch, ["fd"], fd, n, len(im.test))
    stream = np.random.default_rng([5, n, len(im.test)])
    draws = np.array([draw(stream)["fd"] for _ in range(repeats)])
    floors = noise_floors(data, n, len(im.test), schedule=sch, repeats=repeats)
    real_draws = np.asarray(floors["draws"]["fd"])
    return {"n": n, "n_ref": len(im.test), "repeats": repeats, "schedule": sch.name,
            "t_min": float(sch.t_min), "test": float(test),
            "train_draws": [float(draws.mean()), float(draws.std(ddof=1))],
            "floor": [float(v) for v in floors["floors"]["fd"]],
            "paired_difference": [float((draws - real_draws).mean()),
                                  float((draws - real_draws).std(ddof=1))]}


def save_autoencoder(model: Autoencoder, record: dict, out: str | Path | None = None, *,
                     grid: bool = True) -> dict:
    """Write weights.safetensors (float32, no header metadata), config.json (the record plus the
    file's sha256) and, with ``grid``, reconstructions.png to ``out`` (default:
    ``zoo.data.autoencoder_dir(data)``); returns the completed record."""
    from safetensors.numpy import save as st_save

    from zoo.checkpoint import atomic_write, write_json

    out = Path(out) if out is not None else autoencoder_dir(record["data"])
    out.mkdir(parents=True, exist_ok=True)
    blob = st_save({k: np.ascontiguousarray(v.detach().cpu().numpy())
                    for k, v in model.state_dict().items()})
    record = {**record, "file": WEIGHTS, "sha256": hashlib.sha256(blob).hexdigest()}
    atomic_write(out / WEIGHTS, blob)
    write_json(out / RECORD, record)
    if grid:
        images = _image_set(record["data"])
        m64 = _float64(model)
        test = images.test[:64]
        reconstruction_grid(test, _decode_raw(m64, _means(m64, test)), out / GRID,
                            f"{record['data']} autoencoder, latent {record['latent']}: test MSE "
                            f"{record['test_mse']:.4f}, sha256 {record['sha256'][:12]}")
    return record


def reconstruction_grid(images: np.ndarray, recon: np.ndarray, path: Path, title: str) -> None:
    """Test images beside their reconstructions (8 x 8 of each, [N, C, H, W] in [-1, 1]), PNG."""
    from zoo.sampling import image_pair

    image_pair(images, recon, ("test images", "reconstructions"), path, title)


_CACHE: dict[tuple, Autoencoder] = {}  # float64 models by (sha256, architecture)


def load_autoencoder(directory: str | Path) -> tuple[Autoencoder, dict]:
    """(float64 model in eval mode, record) of the autoencoder in ``directory``.

    The weights' sha256 is computed on every call and must equal config.json's, else ZooError
    (one line): another file would silently change every latent dataset and decoded sample.
    """
    directory = Path(directory)
    weights, rec_path = directory / WEIGHTS, directory / RECORD
    for p in (weights, rec_path):
        if not p.is_file():
            raise ZooError(f"{p}: missing (make the autoencoder with `zoo autoencoder train`)")
    try:
        record = json.loads(rec_path.read_text())
        want = record["sha256"]
        arch = {k: tuple(v) if isinstance(v, list) else v
                for k, v in record["architecture"].items() if k != "class"}
        AutoencoderConfig(**arch)
        s = record["latent_scaling"]
        if len(s["shift"]) != arch["latent"] or not float(s["scale"]) > 0:
            raise ValueError("latent_scaling does not fit the latent size")
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError,
            AttributeError) as e:
        raise ZooError(f"{rec_path}: unreadable autoencoder record ({type(e).__name__}: {e})") from None
    blob = weights.read_bytes()
    got = hashlib.sha256(blob).hexdigest()
    if got != want:
        raise ZooError(f"{weights}: sha256 {got[:12]}... does not match config.json's "
                       f"{want[:12]}... (file altered or truncated)")
    key = (got, tuple(sorted(arch.items())))
    if key not in _CACHE:
        from safetensors.numpy import load as st_load

        try:
            state = {k: torch.from_numpy(v.copy()) for k, v in st_load(blob).items()}
            with torch.random.fork_rng(devices=[]):
                model = Autoencoder(**arch)
            model.load_state_dict(state)
        except Exception as e:  # safetensors and load_state_dict raise their own types
            raise ZooError(f"{weights}: does not fit the recorded architecture ({e})") from None
        _CACHE[key] = _float64(model)
    return _CACHE[key], record


def latent_dataset(name: str) -> Dataset:
    """The dataset ``name`` (a key of ``zoo.data.LATENT``): the scaled latents of its image set's
    train split (held-out: of its test split) under the autoencoder in
    ``autoencoder_dir(image set)``. ValueError, one line, when that autoencoder is missing."""
    pixel = LATENT[name]
    directory = autoencoder_dir(pixel)
    if not (directory / WEIGHTS).is_file():
        raise ValueError(f"{name}: no autoencoder in {directory} (make it with `zoo autoencoder "
                         f"train --data {pixel}`, or point {AUTOENCODER_ENV} at the folder above "
                         f"{pixel}/)")
    model, record = load_autoencoder(directory)
    if record.get("data") != pixel:
        raise ZooError(f"{directory}: an autoencoder for {record.get('data')!r}, not {pixel!r}")
    return _latent_dataset(name, str(directory), record["sha256"],
                           json.dumps(record["latent_scaling"], sort_keys=True))


@functools.cache
def _latent_dataset(name: str, directory: str, sha256: str, scaling: str) -> Dataset:
    """The latent dataset, encoded once per (name, folder, weights, scaling) in a process."""
    pixel = LATENT[name]
    model, record = load_autoencoder(directory)
    im = get_dataset(pixel).images
    latent = LatentSet(encode(model, record, im.train), im.train_labels,
                       encode(model, record, im.test), im.test_labels, pixel=pixel,
                       autoencoder={"path": directory, "sha256": sha256},
                       decoder=functools.partial(decode, model, record),
                       image_shape=tuple(im.train.shape[1:]))
    n = record["latent"]
    return Dataset(name, n, f"{pixel} encoded to {n} numbers by the autoencoder in {directory} "
                   f"(sha256 {sha256[:12]}; {len(im.train)} train, {len(im.test)} test latents)",
                   latent=latent)


__all__ = ["AutoencoderConfig", "TrainConfig", "decode", "encode", "latent_dataset",
           "load_autoencoder", "reconstruction_fd", "save_autoencoder", "train_autoencoder"]

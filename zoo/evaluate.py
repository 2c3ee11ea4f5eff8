"""Sample quality of a run against fresh real data, every metric beside its noise floor.

The samplers stop at t_min without denoising, so samples are compared with rho_{t_min} data,
x = alpha(t_min) x0 + sigma(t_min) eps, drawn from the held-out stream default_rng([3, seed])
(training, plots and the likelihood use other streams). A metric's *floor* is the same metric
between two fresh real draws of the same sizes, repeated 20 times by default (mean and std of
the 20 values): a sampler is as good as the data can tell when its value lies within a few floor
stds of the floor mean. For one-sample metrics (mean log-density, mode coverage, component KL)
the floor is the metric of real data itself. The floors depend on (dataset, sizes, schedule,
metric settings, repeats) only, never on a run or its seed: they are drawn from
default_rng([5, n, n_ref]) and cached on disk (``noise_floors``). Samples of a latent dataset
(``latent-digits``) are decoded and measured in pixel space, as their image set's samples are,
with that image set's reference and floors (``_evaluate_latent``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fields.common import Schedule
from zoo import metrics as M
from zoo.registry import ZooError

if TYPE_CHECKING:
    from rich.table import Table

# metric name -> (short column title, format); the order of the table and of eval.json's listing
METRICS = {
    "w2": ("W2", ".4f"),
    "sliced_w2": ("SW2", ".4f"),
    "mmd_rbf": ("MMD²", ".2e"),
    "energy": ("energy", ".2e"),
    "precision": ("prec", ".3f"),
    "recall": ("recall", ".3f"),
    "density": ("density", ".3f"),
    "coverage": ("cover", ".3f"),
    "mean_log_density": ("log ρ", ".4f"),
    "trimmed_log_density": ("log ρ trim", ".4f"),
    "mode_coverage": ("modes", ".3f"),
    "off_mode": ("off-mode", ".4f"),
    "component_kl": ("KL comp", ".2e"),
}


def _real_sampler(ds, schedule: Schedule):
    """sample_real(rng, n) -> rho_{t_min} draws [n, d] float64 of held-out data.

    An image set's reference is its whole test split (each image once, fresh noise per call):
    drawing n with replacement from 300 test images would repeat images and flatter every
    two-sample metric. ``n`` is then ignored (``reference_size`` says how many there are).
    """
    a, s = float(schedule.alpha(schedule.t_min)), float(schedule.sigma(schedule.t_min))

    def sample_real(rng: np.random.Generator, n: int) -> np.ndarray:
        if ds.images is not None:
            x0 = ds.images.test.reshape(len(ds.images.test), -1)
        else:
            x0 = ds.sample_heldout(rng, n).reshape(n, -1)
        return a * x0 + s * rng.standard_normal(x0.shape)

    return sample_real


def reference_size(ds, n_ref: int) -> int:
    """How many reference points a comparison uses: an image set's test split, else n_ref."""
    return len(ds.images.test) if ds.images is not None else n_ref


def _floor_draw(ds, schedule: Schedule, names: list[str], all_metrics, n: int, n_ref: int):
    """draw(rng) -> {name: value}: one real-vs-real comparison of a noise floor.

    Points: two fresh held-out draws of sizes n and n_ref. Image sets: n training images (never
    in the reference, drawn without replacement while n allows) against the test split, i.e. a
    perfect model that has not copied; memorisation instead takes n test images (training
    images are copies by definition), which score its quantile. All at t_min, fresh noise.
    """
    sample_real = _real_sampler(ds, schedule)
    if ds.images is None:
        return lambda rng: all_metrics(sample_real(rng, n), sample_real(rng, n_ref))
    from zoo import image_metrics as IM

    a, s = float(schedule.alpha(schedule.t_min)), float(schedule.sigma(schedule.t_min))
    train = ds.images.train.reshape(len(ds.images.train), -1)
    test = ds.images.test.reshape(len(ds.images.test), -1)

    def draw(rng: np.random.Generator) -> dict[str, float]:
        real = sample_real(rng, n_ref)
        x0 = train[rng.choice(len(train), size=n, replace=n > len(train))]
        v = all_metrics(a * x0 + s * rng.standard_normal(x0.shape), real)
        if "memorised" in names:
            t0 = test[rng.integers(0, len(test), size=n)]
            v.update(IM.memorisation(a * t0 + s * rng.standard_normal(t0.shape), real,
                                     ds.images.train))
        return v

    return draw


# Bump when a metric's code or the floors' draws change: every cached floor then goes stale.
FLOORS_VERSION = 4  # 2: trimmed_log_density; 3: image metrics; 4: off_range (images)
DEFAULT_REPEATS = 20  # real-vs-real draws behind a noise floor (DESIGN.md: at least 20)
_MIXTURE_ONLY = ("mode_coverage", "off_mode", "component_kl")
_DENSITY = ("mean_log_density", "trimmed_log_density")


def metric_titles() -> dict[str, tuple[str, str]]:
    """Every metric any dataset gets -> (column title, format): points' and images' in one order."""
    from zoo.image_metrics import IMAGE_METRICS

    return {**IMAGE_METRICS, **METRICS}


def _image_suite(ds, schedule: Schedule, *, prdc_k: int):
    """(names, all_metrics) for an image dataset with a classifier (``zoo.image_metrics``), or
    None for an image shape no classifier knows (it is then measured like points)."""
    from zoo import image_metrics as IM

    clf = IM.classifier_of(ds.name)
    if clf is None:
        return None
    names = [k for k in IM.IMAGE_METRICS if ds.images is not None or k not in IM.MEMO_METRICS]
    train = ds.images.train if ds.images is not None else None

    def all_metrics(fake: np.ndarray, real: np.ndarray) -> dict[str, float]:
        return IM.image_metrics(fake, real, train, data=clf, prdc_k=prdc_k)

    return names, all_metrics


def _metric_suite(data: str, schedule: Schedule, *, max_points: int, prdc_k: int, seed: int):
    """(dataset, metric names, all_metrics(fake [n, d], real [m, d]) -> {name: float}).

    Points: distances between the sets (W2, MMD, ...) and PRDC. Images with a classifier
    (digits, digits-gmm, mnist): the classifier's metrics (FD, class KL, feature PRDC, and
    memorisation where there is a training split to copy). Either way, with a closed form, the
    (trimmed) mean log rho_{t_min} of the samples, and for isotropic mixtures the mode metrics.
    """
    from zoo.data import GaussianMixture, get_dataset

    try:
        ds = get_dataset(data)
    except ValueError as e:
        raise ZooError(str(e)) from None
    image = _image_suite(ds, schedule, prdc_k=prdc_k) if len(ds.shape) == 3 else None
    if image is not None:
        names, base = image
    else:
        names = [k for k in METRICS if k not in _DENSITY and k not in _MIXTURE_ONLY]
        base = None
    if ds.exact is not None:
        names += list(_DENSITY)
    if isinstance(ds.exact, GaussianMixture):
        names += list(_MIXTURE_ONLY)
    names = [k for k in metric_titles() if k in names]
    t_min = float(schedule.t_min)
    log_density = None
    if ds.exact is not None:
        import torch

        from zoo.api import create

        exact = create("exact", "torch", data=data, schedule=schedule)

        def log_density(a: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return exact.log_density(torch.as_tensor(a, dtype=torch.float64),
                                         torch.full((len(a),), t_min, dtype=torch.float64)).numpy()

    alpha, sigma = float(schedule.alpha(t_min)), float(schedule.sigma(t_min))

    def all_metrics(fake: np.ndarray, real: np.ndarray) -> dict[str, float]:
        if base is not None:
            r = base(fake, real)
        else:  # one fixed subsampling stream, so W2 is a function of its inputs alone
            r = {"w2": M.w2(fake, real, max_points, np.random.default_rng([4, seed])),
                 "sliced_w2": M.sliced_w2(fake, real, seed=seed),
                 "mmd_rbf": M.mmd_rbf(fake, real),
                 "energy": M.energy_distance(fake, real),
                 **M.prdc(real, fake, k=prdc_k)}
        if log_density is not None:
            log_p = log_density(fake)
            r["mean_log_density"] = float(np.mean(log_p))
            r["trimmed_log_density"] = M.trimmed_log_density(log_p)
        if isinstance(ds.exact, GaussianMixture):
            m = ds.exact
            counts = M.component_counts(fake, m.means, m.stds, m.weights, alpha, sigma)
            r["component_kl"] = M.component_kl(counts, m.weights)
            # a mode is covered only by points that lie in it: component_counts alone would let
            # samples a hundred units away "cover" whichever mode points their way
            far = M.off_mode(fake, m.means, m.stds, alpha, sigma)
            r["off_mode"] = float(far.mean())
            near = M.component_counts(fake[~far], m.means, m.stds, m.weights, alpha, sigma)
            r["mode_coverage"] = M.mode_coverage(near, m.weights, n=len(fake))
        return {k: r[k] for k in names}

    return ds, names, all_metrics


def floors_cache_dir() -> Path:
    """Where noise floors are cached: $ZOO_CACHE_DIR/floors, else ~/.cache/zoo/floors."""
    root = os.environ.get("ZOO_CACHE_DIR")
    return (Path(root) if root else Path.home() / ".cache" / "zoo") / "floors"


def floors_key(data: str, n: int, n_ref: int, *, schedule: str | Schedule = "ou",
               repeats: int = DEFAULT_REPEATS, max_points: int = 5000, prdc_k: int = 5) -> dict:
    """Everything a noise floor depends on (JSON): the cache key of ``noise_floors``."""
    from zoo.api import make_schedule
    from zoo.data import get_dataset

    sch = make_schedule(schedule)
    extra = {}
    try:
        ds = get_dataset(data)
    except ValueError:
        ds = None
    if ds is not None and len(ds.shape) == 3:
        from zoo import image_metrics as IM

        if (clf := IM.classifier_of(data)) is not None:
            # a retrained classifier changes every image metric: its floors must not be reused
            extra["classifier_sha256"] = IM.classifier_sha256(clf)
        n_ref = reference_size(ds, n_ref)
    return {"version": FLOORS_VERSION, "data": data, "n": int(n), "n_ref": int(n_ref), **extra,
            "schedule": sch.name, "t_min": float(sch.t_min), "T": float(sch.T),
            "beta_min": float(sch.beta_min), "beta_max": float(sch.beta_max),
            "repeats": int(repeats), "max_points": int(max_points), "prdc_k": int(prdc_k),
            "stream": [5, int(n), int(n_ref)]}


def floors_path(key: dict) -> Path:
    """The cache file of ``key``: <cache>/<data>-n<N>-m<N_REF>-r<REPEATS>-<sha256 of key, 16>.json."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    data = re.sub(r"[^A-Za-z0-9_.-]", "_", key["data"])
    return floors_cache_dir() / f"{data}-n{key['n']}-m{key['n_ref']}-r{key['repeats']}-{digest}.json"


def _read_floors(path: Path, key: dict) -> dict | None:
    """The cached record at ``path`` if it is whole and made for ``key``, else None."""
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):  # absent, unreadable or corrupt: computed again
        return None
    if not (isinstance(rec, dict) and rec.get("key") == key and isinstance(rec.get("floors"), dict)
            and isinstance(rec.get("draws"), dict)):
        return None
    for name, v in rec["floors"].items():
        draws = rec["draws"].get(name)
        if not (isinstance(v, list) and len(v) == 2 and all(isinstance(a, int | float) for a in v)
                and isinstance(draws, list) and len(draws) == key["repeats"]):
            return None
    return rec


def noise_floors(data: str, n: int, n_ref: int | None = None, *, schedule: str | Schedule = "ou",
                 repeats: int = DEFAULT_REPEATS, max_points: int = 5000, prdc_k: int = 5,
                 cache: bool = True) -> dict:
    """The noise floor of every metric of ``evaluate_samples`` for n samples vs n_ref references
    (a latent dataset's are its image set's: its samples are measured decoded).

    For r = 1..repeats: two fresh rho_{t_min} draws of sizes n and n_ref, v_r = the metrics
    between them; floor = (mean_r v_r, std_r v_r) (ddof 1). The draws come from
    default_rng([5, n, n_ref]) and the metrics' own randomness (W2 subsampling, sliced-W2
    directions) from seed 0, so a floor is one fixed number per key (``floors_key``), whatever
    run or seed it is compared with. With ``cache`` it is read from, or computed once and written
    (atomically) to, ``floors_path(key)`` under ``floors_cache_dir()``; an unreadable or foreign
    file there is computed again. Returns the record {"key", "floors": {name: [mean, std]},
    "draws": {name: [v_1, ..., v_repeats]}, "wall_s", "cache": "hit" | "miss" | "off"}.
    """
    from zoo import checkpoint
    from zoo.api import make_schedule
    from zoo.data import LATENT

    data = LATENT.get(data, data)  # decoded latent samples are measured as their image set's
    n_ref = n if n_ref is None else n_ref
    if repeats < 2:
        raise ZooError(f"repeats must be >= 2 (a floor needs a spread), got {repeats}")
    if n < 2 or n_ref < 2:
        raise ZooError(f"floors need n and n_ref >= 2, got {n} and {n_ref}")
    sch = make_schedule(schedule)
    key = floors_key(data, n, n_ref, schedule=sch, repeats=repeats, max_points=max_points,
                     prdc_k=prdc_k)
    path = floors_path(key)
    if cache and (rec := _read_floors(path, key)) is not None:
        return {**rec, "cache": "hit"}
    ds, names, all_metrics = _metric_suite(data, sch, max_points=max_points, prdc_k=prdc_k,
                                           seed=0)
    draw = _floor_draw(ds, sch, names, all_metrics, n, key["n_ref"])
    rng = np.random.default_rng(key["stream"])
    t0 = time.perf_counter()
    draws = [draw(rng) for _ in range(repeats)]
    rec = {"key": key,
           "floors": {k: [float(np.mean([d[k] for d in draws])),
                          float(np.std([d[k] for d in draws], ddof=1))] for k in names},
           "draws": {k: [float(d[k]) for d in draws] for k in names},
           "wall_s": round(time.perf_counter() - t0, 3)}
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        checkpoint.write_json(path, rec)
    return {**rec, "cache": "miss" if cache else "off"}


def evaluate_samples(samples: np.ndarray, data: str, *, schedule: str | Schedule = "ou",
                     seed: int = 0, n_ref: int | None = None, repeats: int = DEFAULT_REPEATS,
                     max_points: int = 5000, prdc_k: int = 5,
                     floors: dict[str, tuple[float, float]] | None = None,
                     cache: bool = True) -> dict:
    """All sample metrics of samples: [n, d] against rho_{t_min} of dataset ``data``.

    Reference: n_ref (default n) fresh points from default_rng([3, seed]); for an image set its
    whole test split, noised from that stream (``reference_size``). Image datasets with a
    classifier get ``zoo.image_metrics``' metrics (FD, class KL and entropy, feature PRDC,
    memorisation) in place of the point metrics. Each metric's noise
    floor comes from ``noise_floors`` (``repeats``, default 20, real-vs-real draws of sizes
    (n, n_ref) from their own stream, cached on disk unless ``cache`` is False). Metrics: exact
    W2 (each set subsampled to ``max_points``), sliced W2, summed unbiased RBF MMD^2, energy
    distance, PRDC (k = prdc_k); for datasets with a closed form also the mean log rho_{t_min}
    (higher is better; its floor is the value for real data), and for Gaussian mixtures the
    mode coverage (components that get >= 10% of their expected count from points inside
    their 99.9% ball), the off-mode share (points outside every component's 99.9% ball) and
    KL(component histogram of all points || weights). Returns {"finite", "n_nonfinite", "n",
    "n_ref", "repeats", ..., "floors_cache", "metrics": {name: {"value", "floor_mean",
    "floor_std"}}}; if any sample is non-finite every metric is None (they are not averaged over
    the finite part, which would hide a diverging sampler).

    floors: precomputed {name: (floor_mean, floor_std)} for these (data, n, n_ref, schedule)
    (e.g. the "metrics" floors of an earlier call): used as given ("repeats" then records
    whatever the caller passed). The reference set is the same either way.

    A latent dataset's samples z [n, d] are decoded to images first and measured as samples of
    its image set (``_evaluate_latent``: same metrics, reference and floors; the result also
    names the autoencoder).
    """
    from zoo.api import make_schedule
    from zoo.data import LATENT

    schedule = make_schedule(schedule)
    if data in LATENT:
        return _evaluate_latent(samples, data, schedule=schedule, seed=seed, n_ref=n_ref,
                                repeats=repeats, max_points=max_points, prdc_k=prdc_k,
                                floors=floors, cache=cache)
    ds, names, all_metrics = _metric_suite(data, schedule, max_points=max_points, prdc_k=prdc_k,
                                           seed=seed)
    x = np.asarray(samples, np.float64)
    if x.ndim != 2 or x.shape[1] != ds.dim or len(x) < 2:
        raise ZooError(f"samples must be [n >= 2, {ds.dim}] for {data}, got {list(x.shape)}")
    if repeats < 2:
        raise ZooError(f"repeats must be >= 2 (a floor needs a spread), got {repeats}")
    n, n_ref = len(x), len(x) if n_ref is None else n_ref
    if n_ref < 2:
        raise ZooError(f"n_ref must be >= 2, got {n_ref}")
    n_ref = reference_size(ds, n_ref)
    bad = int(np.sum(~np.all(np.isfinite(x), axis=1)))
    out = {"data": data, "n": n, "n_ref": n_ref, "seed": seed, "repeats": repeats,
           "max_points": max_points, "prdc_k": prdc_k, "schedule": schedule.name,
           "t_min": float(schedule.t_min), "finite": bad == 0, "n_nonfinite": bad}
    if bad:
        out["metrics"] = dict.fromkeys(names)
        return out

    t0 = time.perf_counter()
    values = all_metrics(x, _real_sampler(ds, schedule)(np.random.default_rng([3, seed]), n_ref))
    if floors is None:
        rec = noise_floors(data, n, n_ref, schedule=schedule, repeats=repeats,
                           max_points=max_points, prdc_k=prdc_k, cache=cache)
        floors = rec["floors"]
        out["floors_stream"], out["floors_cache"] = rec["key"]["stream"], rec["cache"]
    elif missing := [k for k in names if k not in floors]:
        raise ZooError(f"floors lack {', '.join(missing)}")
    else:
        out["floors_cache"] = "given"
    out["metrics"] = {k: {"value": values[k], "floor_mean": floors[k][0], "floor_std": floors[k][1]}
                      for k in names}
    out["wall_s"] = time.perf_counter() - t0
    return out


def _evaluate_latent(samples: np.ndarray, data: str, *, schedule: Schedule, seed: int,
                     **kw) -> dict:
    """``evaluate_samples`` of latent samples [n, d]: decoded, then measured in pixel space.

    The latents are decoded by the dataset's autoencoder (``Dataset.latent.decode``: x = D(scale
    z + shift), [n, C, H, W]) and put at the image set's t_min, x' = alpha(t_min) x +
    sigma(t_min) eps with eps from default_rng([6, seed]): the pixel samples of a plain run and
    the reference are rho_{t_min} draws, so the decoded ones are too, and a latent model whose
    decoded samples are real unseen images scores the image set's floor. (A model that copies
    its training latents is still caught: their decodings lie nearer the training images than
    the memorisation threshold.) Everything after is the image set's
    evaluation: its metrics (FD, class KL, feature PRDC, memorisation against its train split),
    its reference (the whole test split) and its noise floors (shared with plain runs). The
    result adds "pixel_data", "latent_dim" and the "autoencoder" ({"path", "sha256"}) the
    samples were decoded with; "data" stays the latent set's name.
    """
    from zoo.data import get_dataset

    try:
        ds = get_dataset(data)
    except ValueError as e:
        raise ZooError(str(e)) from None
    lat = ds.latent
    z = np.asarray(samples, np.float64)
    if z.ndim != 2 or z.shape[1] != ds.dim or len(z) < 2:
        raise ZooError(f"samples must be [n >= 2, {ds.dim}] for {data}, got {list(z.shape)}")
    extra = {"pixel_data": lat.pixel, "latent_dim": ds.dim, "autoencoder": dict(lat.autoencoder)}
    x = np.full((len(z), int(np.prod(lat.image_shape))), np.nan)
    finite = np.all(np.isfinite(z), axis=1)  # a non-finite latent stays non-finite (all None)
    if finite.any():
        x[finite] = lat.decode(z[finite]).reshape(int(finite.sum()), -1)
    a, s = float(schedule.alpha(schedule.t_min)), float(schedule.sigma(schedule.t_min))
    x = a * x + s * np.random.default_rng([6, seed]).standard_normal(x.shape)
    out = evaluate_samples(x, lat.pixel, schedule=schedule, seed=seed, **kw)
    return {**out, "data": data, **extra}


def _read_samples(path: Path) -> tuple[np.ndarray, dict]:
    """(samples, {"nfe", "wall_s", "sample_settings"}) of a samples file; ZooError if unreadable."""
    try:
        with np.load(path, allow_pickle=False) as f:
            x = f["samples"]
            info = {"nfe": int(f["nfe"]), "wall_s": float(f["wall_s"]),
                    "sample_settings": json.loads(str(f["settings"]))}
    except (OSError, KeyError, ValueError) as e:
        raise ZooError(f"{path}: unreadable samples file ({e})") from None
    if not isinstance(info["sample_settings"], dict):
        raise ZooError(f"{path}: unreadable samples file (settings are not a JSON object)")
    return x, info


def stale_reason(path: Path, want: dict) -> str | None:
    """Why the samples file ``path`` cannot stand for a draw with provenance ``want``
    (``zoo.sampling.sample_provenance``), or None when it can: it exists, is readable, and
    records the same weights (sha256) and every same setting, n points included."""
    if not path.is_file():
        return "no samples file"
    try:
        x, info = _read_samples(path)
    except ZooError as e:
        return str(e)
    have = info["sample_settings"]
    if "weights_sha256" not in have:
        return "the file records no provenance (made before samples recorded their weights)"
    for k, v in want.items():
        if have.get(k) != v:
            if k == "weights_sha256":
                return (f"drawn from other weights ({have.get('weights')} sha256 "
                        f"{str(have.get(k))[:12]} there, {str(v)[:12]} now)")
            return f"{k} {have.get(k, '(unset)')!r} there, {v!r} requested"
    if len(x) != want["n"]:
        return f"{len(x)} samples there, n {want['n']} requested"
    return None


def eval_run(run_dir: str | Path, *, n: int = 2000, seed: int = 0,
             solvers: tuple[tuple[str, str | None], ...] = (("ode", None), ("sde", None)),
             repeats: int = DEFAULT_REPEATS) -> dict:
    """Evaluate a run's samples for each (solver, method); writes and returns eval.json.

    Reuses samples-<solver>-<method>.npz in the run directory only when it records the run's
    current EMA weights (their sha256 in config.json) and exactly this draw: n points, seed
    ``seed``, the solver, method and every other sampler setting at its default
    (``zoo.sampling.sample_provenance``). Anything else (other weights, n, seed or settings, a
    file from before samples recorded their provenance, an unreadable file) is sampled again,
    which rewrites that file and its plot; each entry says "reused" and, when it was not,
    "resampled_reason". method None means ``zoo.sampling.default_method(solver, "torch")``.
    Every metric stands beside its noise floor from ``repeats`` (default 20) real-vs-real draws
    (``noise_floors``, cached). The result holds the settings, the weights' sha256, one
    ``evaluate_samples`` entry per "<solver>-<method>" (with the sampler's nfe, wall time and
    settings), and nll.json's numbers under "nll" when the run has that file.
    """
    from zoo import checkpoint
    from zoo.api import make_schedule
    from zoo.data import check_run_autoencoder
    from zoo.sampling import SOLVERS, default_method, methods, sample_provenance, sample_run

    if n <= 0:
        raise ZooError(f"n must be positive, got {n}")
    if repeats < 2:
        raise ZooError(f"repeats must be >= 2 (a floor needs a spread), got {repeats}")
    run_dir = Path(run_dir)
    cfg = checkpoint.read_config(run_dir)
    # a latent run's samples are decoded: only by the autoencoder it was trained with
    check_run_autoencoder(cfg, run_dir)
    schedule = make_schedule(cfg["schedule"], cfg["t_min"], cfg["T"])
    pairs = [(s, m or default_method(s, "torch")) for s, m in solvers]
    for s, m in pairs:  # every pair is checked before anything is sampled or written
        if s not in SOLVERS or m not in methods(s, "torch"):
            raise ZooError(f"unknown solver/method {s}:{m}; choose a solver from "
                           f"{', '.join(SOLVERS)} and a method from `zoo sample --help`")
    # the weights on disk must be the ones config.json names, or no samples file can vouch for them
    checkpoint.read_weights(run_dir, "ema")
    result = {"run": str(run_dir), "arch": cfg["arch"], "backend": cfg["backend"],
              "data": cfg["data"], "weights_sha256": cfg["sha256"]["ema.safetensors"],
              "settings": {"n": n, "seed": seed, "repeats": repeats,
                           "solvers": [list(p) for p in pairs], "reference_stream": [3, seed],
                           "schedule": cfg["schedule"], "t_min": cfg["t_min"], "T": cfg["T"]},
              "solvers": {}}
    for solver, method in pairs:
        path = run_dir / f"samples-{solver}-{method}.npz"
        want = sample_provenance(cfg, n=n, seed=seed, solver=solver, method=method)
        reason = stale_reason(path, want)
        if reason is not None:
            path.unlink(missing_ok=True)  # a failed draw must not leave the stale file to be read
            try:
                sample_run(run_dir, n=n, seed=seed, solver=solver, method=method, plot=True)
            except ZooError:
                if not path.is_file():  # non-finite samples are saved (and evaluated as such)
                    raise
        x, info = _read_samples(path)
        ev = evaluate_samples(x.reshape(len(x), -1), cfg["data"], schedule=schedule, seed=seed,
                              repeats=repeats)
        result["solvers"][f"{solver}-{method}"] = {**ev, **info, "samples_file": path.name,
                                                   "reused": reason is None,
                                                   "resampled_reason": reason}
    nll = run_dir / "nll.json"
    if nll.is_file():
        try:
            rec = json.loads(nll.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ZooError(f"{nll}: unreadable ({e})") from None
        if not isinstance(rec, dict):
            raise ZooError(f"{nll}: unreadable (not a JSON object)")
        if rec.get("weights_sha256", result["weights_sha256"]) == result["weights_sha256"]:
            result["nll"] = rec
        else:  # measured on other weights: not this run's number
            result["nll_skipped"] = "nll.json measured other weights (sha256 differs)"
    checkpoint.write_json(run_dir / "eval.json", result)
    return result


def _cell(entry: dict | None, fmt: str) -> str:
    if entry is None:
        return "-"
    return (f"{entry['value']:{fmt}}\n[dim]{entry['floor_mean']:{fmt}}"
            f"±{entry['floor_std']:.1g}[/dim]")


def format_table(result: dict) -> Table:
    """A rich Table of an ``eval_run`` (one row per solver) or ``evaluate_samples`` result.

    Each cell shows the value over its floor (dimmed, mean ± std of real-vs-real draws).
    """
    from rich.table import Table

    rows = result["solvers"] if "solvers" in result else {"samples": result}
    titles = metric_titles()
    names = [k for k in titles if any(k in r.get("metrics", {}) for r in rows.values())]
    title = "value / floor (real vs real, mean ± std)"
    if "arch" in result:
        title = f"{result['arch']} ({result['backend']}) on {result['data']}: {title}"
    table = Table("solver", "n", *(titles[k][0] for k in names), title=title)
    for label, r in rows.items():
        n = str(r["n"]) if r["finite"] else f"{r['n']} ({r['n_nonfinite']} non-finite)"
        table.add_row(label, n, *(_cell(r["metrics"].get(k), titles[k][1]) for k in names))
    if "nll" in result:
        nll = result["nll"]
        ref = f", exact {nll['exact_nll_nats']:.4f}" if "exact_nll_nats" in nll else ""
        table.caption = (f"NLL not measured ({nll['diverged']['reason']})" if nll.get("diverged")
                         else f"NLL {nll['nll_nats']:.4f} ± {nll['se']:.4f} nats{ref}")
    return table

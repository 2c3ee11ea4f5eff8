"""Suites as data, and the jobs (runs) they resolve to.

A suite is a dict (``SUITES`` below, or a table of a TOML file given with ``--suite-file``) naming
the fields (fnmatch patterns over the registry), datasets, seeds, backends and the settings of each
stage. Every run of a suite gets the same settings, so the leaderboard compares like with like; a
run lands in ``<root>/<suite>/<data>/<arch>-<backend>-s<seed>/``.
"""

from __future__ import annotations

import fnmatch
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path

from zoo.registry import BACKENDS, ZooError

RUNS_ROOT = Path("results/runs")

# Stage settings shared by the built-in suites; a suite overrides what it names.
_STAGES = {
    # power t-sampling (more small t, where the score is sharp): on gmm8 it brings free-mlp's
    # ODE samples from W2 0.37 to 0.27 against a noise floor of 0.24 (1500 steps, width 128)
    "train": {"steps": 3000, "batch": 512, "lr": 1e-3, "t_sampling": "power", "eval_at": []},
    "nll": {"n": 500},
    "eval": {"n": 2000, "repeats": 20},  # floors from 20 real-vs-real draws (3 biased them high)
    "check": {"n_points": 128, "n_loops": 16},
    # the learning curve over train.eval_at (skipped when that is empty): ODE samples per point
    "curve": {"n": 2000},
}

CURVE_STEPS = [500, 1000, 2000, 4000, 8000, 12000, 16000, 20000, 25000]
CHECKERBOARD_CURVE = CURVE_STEPS + [30000, 40000, 50000, 60000, 75000, 90000]

SUITES: dict[str, dict] = {
    "quick": {
        # the standard budget, so its verdicts are the standard suite's: at fewer steps energy-mlp
        # is still a ring (it leaves that plateau between 16000 and 20000 steps on gmm8). The
        # two-part heads and qc cost 3.4-3.7x free per step (results/bench/train-mlp.json), which
        # would more than double its 5-12 minutes; the standard suite has them.
        "description": "free-mlp, energy-mlp and energysq-mlp on gmm8 at the standard budget "
                       "(30000 steps), JAX, with a torch twin of free-mlp for parity, 1 seed "
                       "(5-12 minutes on 2 cores)",
        "fields": ["free-mlp", "energy-mlp", "energysq-mlp"], "datasets": ["gmm8"], "seeds": 1,
        "backends": ["jax", "torch"], "backend_fields": {"torch": ["free-mlp"]},
        "train": {"steps": 30000},
        "options": {"mlp": {"width": 128, "depth": 3}},
    },
    "standard": {
        "description": "every MLP field on all 2-D datasets and gmm-d (d = 16), 3 seeds in JAX "
                       "and a torch twin of seed 0, 30000 steps (checkerboard: 100000) with a "
                       "learning curve",
        "fields": ["*-mlp"],
        "datasets": ["gmm8", "checkerboard", "moons", "swissroll", "rings", "gmm-d"],
        "seeds": 3, "backends": ["jax", "torch"], "seeds_per_backend": {"torch": 1},
        # 30000 steps: on gmm8 (seed 0) energysq-mlp's log rho levels off by 12000 steps
        # (-1.794 there, -1.781 at 30000; floor -1.744 +- 0.023) while free-mlp still gains
        # 0.08 nats from 12000 to 30000 (-1.867 -> -1.781): a shorter budget would measure
        # learning speed (results/LEADERBOARD.md draws every field's curve)
        "train": {"steps": 30000, "eval_at": CURVE_STEPS},
        # the checkerboard's sharp cell edges take longer: energysq-mlp (JAX, seed 0) has trim
        # log rho -2.417 at 30000 steps, -2.360 at 40000, -2.319 at 75000, -2.302 at 90000 and
        # -2.301 at 100000 (floor -2.217 +- 0.007), level from 90000; free-mlp -2.806, -2.661,
        # -2.460, -2.440, -2.402, still rising: at 30000 their gap (0.39) was mostly learning
        # speed (results/analysis/checkerboard-budget.md). Trained on to 300000 (seed 0) both
        # still creep up (energysq -2.252, free -2.268): 100000 is a compromise the leaderboard
        # flags as not converged, not a plateau
        "dataset_train": {"checkerboard": {"steps": 100000, "eval_at": CHECKERBOARD_CURVE}},
        "options": {"mlp": {"width": 128, "depth": 3}},
    },
    "images": {
        "description": "every head on the UNet and the DiT, on digits and digits-gmm, and on the "
                       "MLP in latent-digits (a digits autoencoder's 16-number latents, measured "
                       "decoded), 3 seeds in JAX (the faster backend at these sizes) and a "
                       "torch twin of seed 0, 6000 steps (the DiT and the latents: 30000) with a "
                       "learning curve in FD-digits",
        "fields": ["*-unet", "*-dit", "*-mlp"],
        "datasets": ["digits", "digits-gmm", "latent-digits"],
        "dataset_fields": {"digits": ["*-unet", "*-dit"], "digits-gmm": ["*-unet", "*-dit"],
                           "latent-digits": ["*-mlp"]},
        # JAX for the seeds: one sweep worker's thread, free step, ms (torch / JAX, `zoo bench
        # train`, OMP_NUM_THREADS=1, quiet machine): UNet 16 ch batch 64 98 / 74, DiT 41.6 / 30.8,
        # latent MLP batch 128 6.4 / 3.3; of the heads only qc-unet was faster in torch (232 / 261).
        # The first 7 runs were torch seed 0 (the suite named torch then); they are the twins.
        "seeds": 3, "backends": ["jax", "torch"], "seeds_per_backend": {"torch": 1},
        # small backbones, so that 72 runs fit a 2-core CPU in parts: a 16-channel UNet (one
        # training step of all six heads at batch 64 costs about 1.8 s there) and a 2-block DiT
        "train": {"steps": 6000, "batch": 64, "eval_at": [500, 1000, 2000, 3000, 4000]},
        # a 256-wide MLP on 16 numbers: cheap steps, more of them. free-mlp (torch, seed 0) at
        # batch 128: FD ODE 16.9 at 1000 steps, 9.1 at 8000, 6.4 at 20000, 5.4 at 30000 (floor
        # 4.3 +- 1.5), within 1 floor std of its last value from 20000; at 6000 steps, batch 64,
        # it was still at 11.8
        "dataset_train": {"latent-digits": {"steps": 30000, "batch": 128,
                                            "eval_at": CURVE_STEPS}},
        # the DiT learns digits more slowly per step than the UNet: free-dit (JAX, seed 0) at
        # batch 64: FD ODE 78.1 at 4000 steps, 36.1 at 8000, 23.8 at 16000, 20.4 at 20000,
        # 17.8 at 25000, 17.7 at 30000 (floor std 1.45), within 1 floor std from 25000 but
        # still drifting (seed 0 trained on reaches 13.1 at 100000, results/analysis/
        # dit-budget.md); at 6000 steps the DiTs were 32-42 and falling, their pairs measured
        # learning speed
        "backbone_train": {"dit": {"steps": 30000, "eval_at": CURVE_STEPS}},
        "options": {"unet": {"channels": 16}, "dit": {"hidden": 64, "depth": 2}},
        # the reference is digits' whole test split (300 images); NLL on those 300 (dequantised)
        "nll": {"n": 300},
        "eval": {"n": 500},
        "check": {"n_points": 64, "n_loops": 8},
        "curve": {"n": 500},
    },
}

# "options": field options per backbone ({"mlp": {"width": 128}, "unet": {"channels": 64}}),
# checked against the registry's option tables; what a suite does not name takes its default
# "seeds_per_backend": fewer seeds for a backend ({"torch": 1}: torch twins of seed 0 only; a
# torch and a JAX run of one seed are one training, so the twins show parity, not variance)
# "backend_fields": fields (fnmatch patterns) a backend is limited to ({"torch": ["free-mlp"]})
# "dataset_fields": fields (fnmatch patterns) a dataset is limited to ({"latent-digits":
# ["*-mlp"]}: the flat latents get the MLP fields, the images the UNet and DiT ones)
# "dataset_train": train settings of one dataset over the suite's ({"latent-digits": {"steps":
# 20000}}: a small MLP on 16 numbers needs more, cheaper steps than a UNet on images)
# "backbone_train": train settings of one backbone over the suite's ({"dit": {"steps": 30000}}:
# a transformer learns digits more slowly per step than a UNet). A run's train settings are the
# suite's, then its backbone's, then its dataset's: the more specific table wins.
SUITE_KEYS = {"description", "fields", "datasets", "seeds", "backends", "options",
              "seeds_per_backend", "backend_fields", "dataset_fields", "dataset_train",
              "backbone_train", *_STAGES}

DEVICES = ("cpu", "cuda", "auto")


@dataclass(frozen=True)
class Job:
    """One run of a suite: where it lives and every setting it is made with."""

    suite: str
    arch: str
    backend: str
    data: str
    seed: int
    run_dir: str
    spec: dict  # the stage settings (train, nll, eval, check): recorded in sweep.json
    # The device the run asked for (cpu | cuda | auto). The executors act on it (a Ray task of a
    # cuda run reserves a GPU; a cpu run's worker sees no GPU) and the train stage trains torch
    # fields there. Not in ``spec``: the device changes float rounding, not the algorithm, so a
    # run made on a CPU is not redone on a GPU machine (and an unfinished one may continue there).
    device: str = "cpu"

    @property
    def label(self) -> str:
        return f"{self.data}/{self.arch}-{self.backend}-s{self.seed}"


def load_suites(suite_file: str | Path | None = None) -> dict[str, dict]:
    """The built-in suites, plus (overriding by name) the tables of a TOML file.

    A TOML suite looks like ``[tiny]`` with ``fields = ["free-mlp"]``, ``datasets = ["gmm8"]``,
    ``seeds = 1`` and optional sub-tables ``[tiny.train]`` (steps, batch, lr, t_sampling),
    ``[tiny.options.BACKBONE]`` (field options, e.g. ``[tiny.options.mlp] width = 64``),
    ``[tiny.eval]`` (n, repeats), ``[tiny.nll]`` (n), ``[tiny.check]`` (n_points, n_loops).
    """
    suites = {k: dict(v) for k, v in SUITES.items()}
    if suite_file is not None:
        path = Path(suite_file)
        try:
            extra = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ZooError(f"suite file not found: {path}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ZooError(f"{path}: not a valid TOML file ({e})") from None
        for name, spec in extra.items():
            if not isinstance(spec, dict):
                raise ZooError(f"{path}: [{name}] must be a table")
            suites[name] = spec
    return suites


def _stage_spec(name: str, s: dict, where: str = "") -> dict:
    """The stage settings of suite ``s``: the defaults overridden by what it names, checked."""
    spec = {}
    for stage, defaults in _STAGES.items():
        given = s.get(stage, {})
        if not isinstance(given, dict):
            raise ZooError(f"suite {name!r}: [{stage}] must be a table")
        unknown = sorted(set(given) - set(defaults))
        if unknown:
            raise ZooError(f"suite {name!r}: unknown {stage} setting(s) {', '.join(unknown)}"
                           + (f" in {where}" if where else ""))
        spec[stage] = {**defaults, **given}
        for k, v in spec[stage].items():
            if k == "eval_at":
                if not (isinstance(v, list) and all(
                        isinstance(i, int) and 0 < i < spec["train"]["steps"] for i in v)):
                    raise ZooError(f"suite {name!r}: train.eval_at must be a list of steps "
                                   f"between 1 and train.steps - 1, got {v!r}"
                                   + (f" in {where}" if where else ""))
                continue
            if k == "t_sampling":
                if v not in ("uniform", "power"):
                    raise ZooError(f"suite {name!r}: train.t_sampling must be uniform or power")
                continue
            ok = (v > 0 and math.isfinite(v)) if isinstance(v, float) else (
                isinstance(v, int) and v > 0)
            if not ok:
                raise ZooError(f"suite {name!r}: {stage}.{k} must be a positive number, got {v!r}"
                               + (f" in {where}" if where else ""))
    if spec["eval"]["repeats"] < 2:
        raise ZooError(f"suite {name!r}: eval.repeats must be >= 2 (a floor needs a spread)")
    return spec


def resolve(name: str, *, suite_file=None, seeds: int | None = None,
            backends: list[str] | None = None, root: str | Path = RUNS_ROOT,
            plugins: tuple[str, ...] = (), device: str = "cpu") -> list[Job]:
    """The jobs of suite ``name`` (seeds/backends override the suite's); ZooError on a bad suite."""
    import zoo

    if device not in DEVICES:
        raise ZooError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    for p in plugins:
        zoo.load_plugin(p)
    suites = load_suites(suite_file)
    if name not in suites:
        raise ZooError(f"unknown suite {name!r}; choose from {', '.join(sorted(suites))}")
    s = suites[name]
    bad = sorted(set(s) - SUITE_KEYS)
    if bad:
        raise ZooError(f"suite {name!r}: unknown key(s) {', '.join(bad)}")
    for key in ("fields", "datasets"):
        if not (isinstance(s.get(key), list) and s[key] and all(isinstance(v, str) for v in s[key])):
            raise ZooError(f"suite {name!r}: {key} must be a non-empty list of names")
    n_seeds = s.get("seeds", 1) if seeds is None else seeds
    if not (isinstance(n_seeds, int) and n_seeds >= 1):
        raise ZooError(f"suite {name!r}: seeds must be a positive integer, got {n_seeds!r}")
    bks = list(backends or s.get("backends", list(BACKENDS)))
    if not bks or any(b not in BACKENDS for b in bks):
        raise ZooError(f"backends must be among {', '.join(BACKENDS)}, got {bks}")
    per_backend = s.get("seeds_per_backend", {})
    if not (isinstance(per_backend, dict) and all(
            b in BACKENDS and isinstance(k, int) and k >= 1 for b, k in per_backend.items())):
        raise ZooError(f"suite {name!r}: seeds_per_backend must map backends to positive "
                       f"integers, got {per_backend!r}")
    only = s.get("backend_fields", {})
    if not (isinstance(only, dict) and all(
            b in BACKENDS and isinstance(v, list) and all(isinstance(p, str) for p in v)
            for b, v in only.items())):
        raise ZooError(f"suite {name!r}: backend_fields must map backends to lists of field "
                       f"patterns, got {only!r}")
    for d in s["datasets"]:
        try:
            zoo.get_dataset(d)
        except ValueError as e:
            raise ZooError(f"suite {name!r}: {e}") from None
    per_data = s.get("dataset_fields", {})
    if not (isinstance(per_data, dict) and all(
            d in s["datasets"] and isinstance(v, list) and all(isinstance(p, str) for p in v)
            for d, v in per_data.items())):
        raise ZooError(f"suite {name!r}: dataset_fields must map datasets of the suite to lists "
                       f"of field patterns, got {per_data!r}")
    per_train = s.get("dataset_train", {})
    if not (isinstance(per_train, dict) and all(
            d in s["datasets"] and isinstance(v, dict) for d, v in per_train.items())):
        raise ZooError(f"suite {name!r}: dataset_train must map datasets of the suite to tables "
                       f"of train settings, got {per_train!r}")
    per_backbone = s.get("backbone_train", {})
    if not (isinstance(per_backbone, dict) and all(
            isinstance(v, dict) for v in per_backbone.values())):
        raise ZooError(f"suite {name!r}: backbone_train must map backbones to tables of train "
                       f"settings, got {per_backbone!r}")
    specs: dict[tuple, dict] = {}

    def stage_spec(data: str, backbone: str) -> dict:
        """The stage settings of a run: suite, then backbone, then dataset train settings."""
        key = (data if data in per_train else None,
               backbone if backbone in per_backbone else None)
        if key not in specs:
            where = " and ".join([f"backbone_train.{key[1]}"] * (key[1] is not None)
                                 + [f"dataset_train.{key[0]}"] * (key[0] is not None))
            train = {**s.get("train", {}), **per_backbone.get(backbone, {}),
                     **per_train.get(data, {})}
            specs[key] = _stage_spec(name, {**s, "train": train}, where)
        return specs[key]

    for d in per_train:  # every table checked, even one no run reaches
        stage_spec(d, "")
    for b in per_backbone:
        stage_spec("", b)
    archs = []
    backbones = set()
    for pattern in s["fields"]:
        hits = [n for n in zoo.list_fields(pattern) if any(
            i.trainable for i in zoo.entries(n) if i.name == n)]
        if not hits:
            raise ZooError(f"suite {name!r}: no trainable field matches {pattern!r}")
        archs += [h for h in hits if h not in archs]
        backbones |= {i.backbone for h in hits for i in zoo.entries(h) if i.name == h}
    unknown = sorted(set(per_backbone) - backbones)
    if unknown:
        raise ZooError(f"suite {name!r}: backbone_train names {', '.join(unknown)}, not a "
                       f"backbone of the suite's fields ({', '.join(sorted(backbones))})")
    options = s.get("options", {})
    if not (isinstance(options, dict) and all(isinstance(v, dict) for v in options.values())):
        raise ZooError(f"suite {name!r}: options must be a table of tables, one per backbone")
    jobs = []
    for data in s["datasets"]:
        shape = zoo.get_dataset(data).shape
        for arch in archs:
            if data in per_data and not any(fnmatch.fnmatchcase(arch, p) for p in per_data[data]):
                continue
            for backend in bks:
                if backend not in zoo.registry.backends_of(arch):
                    continue
                if backend in only and not any(fnmatch.fnmatchcase(arch, p)
                                               for p in only[backend]):
                    continue
                info = zoo.get_info(arch, backend)
                if info.data == "image" and len(shape) != 3:
                    continue  # an image field on points: not a run of this suite
                given = dict(options.get(info.backbone, {}))
                if info.options is not None:  # every option checked before anything runs
                    try:
                        zoo.registry.resolve_options(info.options, given)
                    except ZooError as e:
                        raise ZooError(f"suite {name!r}, {arch}: {e}") from None
                base = stage_spec(data, info.backbone)
                job_spec = {**base, "train": {**base["train"], "options": given}}
                for seed in range(min(n_seeds, per_backend.get(backend, n_seeds))):
                    run_dir = Path(root) / name / data / f"{arch}-{backend}-s{seed}"
                    jobs.append(Job(name, arch, backend, data, seed, str(run_dir), job_spec,
                                    device))
    if not jobs:
        raise ZooError(f"suite {name!r} has no runs for backends {bks}")
    return jobs


def select(jobs: list[Job], only: tuple[str, ...] | list[str] = ()) -> list[Job]:
    """The jobs whose label (``DATA/ARCH-BACKEND-sSEED``) matches one of the fnmatch patterns
    ``only``, in the order of the patterns (a slice of a suite, run first; its runs keep the
    suite's settings, so the leaderboard counts them as the suite's). No patterns: all jobs."""
    if not only:
        return list(jobs)
    out: list[Job] = []
    for p in only:
        hits = [j for j in jobs if fnmatch.fnmatchcase(j.label, p)]
        if not hits:
            raise ZooError(f"--only {p!r} matches none of the suite's {len(jobs)} runs (labels "
                           f"look like {jobs[0].label})")
        out += [j for j in hits if j not in out]
    return out

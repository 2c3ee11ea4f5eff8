"""Learning curves: sample quality of a run's EMA weights at the steps it kept (``eval_at``).

A comparison of undertrained fields measures learning speed, not what a constraint does. A run
trained with ``eval_at`` keeps its EMA weights at those steps (``snapshots/ema-<step>``); this
samples each of them, and the final EMA weights, with the probability-flow ODE (same seed, same
x_T for every point) and scores the samples with ``zoo.evaluate.evaluate_samples`` against the
same rho_{t_min} reference, so the points differ only by the weights. The result, ``curve.json``:

    {"arch", "backend", "data", "seed", "run",
     "settings": {"n", "seed", "solver": "ode", "method", "repeats"},
     "points": [{"step", "nfe", "sha256", "metrics": {name: {"value", "floor_mean",
                 "floor_std"}}}, ...]}   # increasing steps, the last the final weights

``zoo leaderboard`` draws these curves, so a reader sees whether a field has levelled off.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from zoo import checkpoint
from zoo.registry import ZooError


def snapshots(run_dir: str | Path, cfg: dict) -> list[tuple[int, Path, str]]:
    """(step, path, recorded sha256) of each kept snapshot, by step; final weights excluded."""
    out = []
    for name, sha in (cfg.get("snapshots") or {}).items():
        step = int(name.removeprefix("ema-").removesuffix(".safetensors"))
        out.append((step, Path(run_dir) / checkpoint.SNAPSHOTS / name, sha))
    return sorted(out)


def _arrays(path: Path, sha: str) -> dict[str, np.ndarray]:
    from safetensors.numpy import load

    if not path.is_file():
        raise ZooError(f"{path}: missing (train again, or with --force)")
    blob = path.read_bytes()
    if hashlib.sha256(blob).hexdigest() != sha:
        raise ZooError(f"{path}: sha256 does not match config.json (file altered or truncated)")
    return load(blob)


def curve_run(run_dir: str | Path, *, n: int = 2000, seed: int = 0, method: str | None = None,
              repeats: int = 20, progress=None) -> dict:
    """Evaluate every snapshot and the final EMA weights of a complete run; writes curve.json.

    ``progress(done, total)`` after each point. ZooError (one line) if the run is not complete,
    kept no snapshots, or a snapshot file is missing or altered.
    """
    from zoo import backends
    from zoo.api import load, make_schedule
    from zoo.evaluate import evaluate_samples
    from zoo.sampling import default_method, sample_field

    if n < 2:
        raise ZooError(f"n must be >= 2, got {n}")
    run_dir = Path(run_dir)
    cfg = checkpoint.read_config(run_dir)
    if cfg.get("status") != "complete":
        raise ZooError(f"{run_dir}: the run is not complete (status {cfg.get('status')!r})")
    snaps = snapshots(run_dir, cfg)
    if not snaps:
        raise ZooError(f"{run_dir}: the run kept no snapshots (train it with --eval-at)")
    method = method or default_method("ode", "torch")
    field, cfg = load(run_dir)
    backend = backends.get(cfg["backend"])
    schedule = make_schedule(cfg["schedule"], cfg["t_min"], cfg["T"])
    shape = tuple(cfg.get("shape") or [cfg["dim"]])
    points = [(step, path, sha) for step, path, sha in snaps]
    points.append((int(cfg["steps"]), run_dir / "ema.safetensors", cfg["sha256"]["ema.safetensors"]))
    out = {"run": run_dir.name, "arch": cfg["arch"], "backend": cfg["backend"],
           "data": cfg["data"], "seed": cfg["seed"],
           "settings": {"n": n, "seed": seed, "solver": "ode", "method": method,
                        "repeats": repeats}, "points": []}
    floors = None
    for i, (step, path, sha) in enumerate(points):
        try:
            f = backend.load_params(field, _arrays(path, sha), cfg["dtype"])
        except ValueError as e:
            raise ZooError(f"{path}: weights do not fit {cfg['arch']}: {e}") from None
        s = sample_field(f, cfg["backend"], schedule, shape, n=n, seed=seed, solver="ode",
                         method=method, dtype=cfg["dtype"])
        x = np.asarray(s["samples"], np.float64).reshape(n, -1)
        ev = evaluate_samples(x, cfg["data"], schedule=schedule, seed=seed, repeats=repeats,
                              floors=floors)
        if ev.get("finite") and floors is None:  # the floors do not depend on the samples
            floors = {k: (m["floor_mean"], m["floor_std"]) for k, m in ev["metrics"].items()}
        out["points"].append({"step": step, "nfe": s["nfe"], "sha256": sha,
                              "finite": ev["finite"], "metrics": ev["metrics"]})
        if progress:
            progress(i + 1, len(points))
    checkpoint.write_json(run_dir / "curve.json", out)
    return out

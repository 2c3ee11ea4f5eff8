"""Run directories: config.json, weights.safetensors, ema.safetensors, metrics.jsonl.

Weights are safetensors only (never pickle), written atomically (temporary file, fsync, rename);
config.json records each weight file's sha256, and reading checks it.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from zoo.registry import ZooError

REQUIRED = ("arch", "backend", "data", "dim", "dtype", "schedule", "t_min", "T", "options")


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so a reader sees the old file or the whole new one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json(path: Path, obj: dict) -> None:
    atomic_write(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def write_weights(run_dir: Path, which: str, params: dict[str, np.ndarray]) -> str:
    """Save ``which``.safetensors (name -> array); returns its sha256."""
    blob = st_save({k: np.ascontiguousarray(v) for k, v in params.items()})
    atomic_write(Path(run_dir) / f"{which}.safetensors", blob)
    return hashlib.sha256(blob).hexdigest()


def read_config(run_dir: str | Path) -> dict:
    """config.json of a run; ZooError (one line) if the directory is not a run."""
    path = Path(run_dir) / "config.json"
    if not Path(run_dir).is_dir():
        raise ZooError(f"{run_dir}: not a directory")
    if not path.is_file():
        raise ZooError(f"{run_dir}: not a run directory (no config.json)")
    try:
        cfg = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ZooError(f"{path}: unreadable config ({e})") from None
    missing = [k for k in REQUIRED if k not in cfg]
    if missing:
        raise ZooError(f"{path}: config lacks {', '.join(missing)}")
    return cfg


def read_weights(run_dir: str | Path, which: str = "ema") -> dict[str, np.ndarray]:
    """Load ``which``.safetensors, checking the sha256 that config.json recorded."""
    cfg = read_config(run_dir)
    path = Path(run_dir) / f"{which}.safetensors"
    if not path.is_file():
        raise ZooError(f"{path}: missing (was the run finished?)")
    blob = path.read_bytes()
    want = cfg.get("sha256", {}).get(path.name)
    if want is None:
        raise ZooError(f"{path}: no checksum in config.json (the run did not finish)")
    if hashlib.sha256(blob).hexdigest() != want:
        raise ZooError(f"{path}: sha256 does not match config.json (file altered or truncated)")
    try:
        return st_load(blob)
    except Exception as e:  # safetensors raises its own error types
        raise ZooError(f"{path}: not a valid safetensors file ({e})") from None

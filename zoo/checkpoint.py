"""Run directories: config.json, weights.safetensors, ema.safetensors, metrics.jsonl, and while a
run trains, one periodic checkpoint ``ckpt-STEP.safetensors``.

Weights and optimiser state are safetensors only (never pickle), written atomically (temporary
file, flush, fsync, rename); config.json records each file's sha256, and reading checks it.
A checkpoint keeps its JSON (step, generator state, ...) in the safetensors header's
``__metadata__``, so one file, one checksum, holds the whole state of a run at one step.
What is made from the weights afterwards (samples, eval.json, nll.json, ...: ``DOWNSTREAM``) goes
when a run is trained again from the start (``remove_downstream``). Locks: ``run_lock`` holds one,
``is_locked`` tells whether anyone does.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from zoo.registry import ZooError

REQUIRED = ("arch", "backend", "data", "dim", "dtype", "schedule", "t_min", "T", "options")
CKPT_META_KEY = "zoo_checkpoint"

# What is made from a run's weights after (or, snapshots, during) training: stale once they change
DOWNSTREAM = ("eval.json", "nll.json", "check.json", "check-field.png", "curve.json")
DOWNSTREAM_GLOBS = ("samples-*.npz", "samples-*.png")
SNAPSHOTS = "snapshots"  # the folder of the EMA weights kept during training (``--eval-at``)


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so a reader sees the old file or the whole new one.

    The bytes go to a temporary file beside ``path`` (flushed, fsynced), which then replaces
    ``path``; the directory is fsynced after the rename (where the OS lets a directory be
    opened), so the new name survives a power cut too. On any error the temporary file is
    removed and the error goes on: a failed write leaves ``path`` as it was and nothing else.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    """fsync a directory (its entries: a rename in it); a no-op where the OS or the file system
    does not allow it (no O_DIRECTORY, EINVAL, ...): the data itself is already on disk."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_downstream(run_dir: str | Path, *, snapshots: bool = True) -> list[str]:
    """Delete every file made from the run's weights: ``DOWNSTREAM``, the samples files
    (``DOWNSTREAM_GLOBS``) and, unless ``snapshots`` is False, the ``snapshots/`` folder.

    Called before a run is trained from the start (``zoo train --force``, a sweep's retrain), so
    nothing computed from earlier weights survives beside the new ones. A resumed run keeps its
    snapshots (``snapshots=False``): those up to its checkpoint are still its own. Returns the
    names removed (sorted); a missing directory removes nothing.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    gone = [run_dir / name for name in DOWNSTREAM]
    gone += [p for pattern in DOWNSTREAM_GLOBS for p in run_dir.glob(pattern)]
    removed = []
    for p in gone:
        if p.is_file() or p.is_symlink():
            p.unlink(missing_ok=True)
            removed.append(p.name)
    snap = run_dir / SNAPSHOTS
    if snapshots and snap.is_dir():
        shutil.rmtree(snap)
        removed.append(SNAPSHOTS)
    return sorted(removed)


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
    if not isinstance(cfg, dict):
        raise ZooError(f"{path}: unreadable config (not a JSON object)")
    missing = [k for k in REQUIRED if k not in cfg]
    if missing:
        raise ZooError(f"{path}: config lacks {', '.join(missing)}")
    return cfg


def _verified_blob(path: Path, cfg: dict, missing_hint: str) -> bytes:
    """The bytes of ``path``, refused (ZooError naming the file) unless their sha256 is the one
    config.json recorded."""
    if not path.is_file():
        raise ZooError(f"{path}: missing ({missing_hint})")
    blob = path.read_bytes()
    sums = cfg.get("sha256")
    want = sums.get(path.name) if isinstance(sums, dict) else None
    if want is None:
        raise ZooError(f"{path}: no checksum in config.json (the run did not finish)")
    if hashlib.sha256(blob).hexdigest() != want:
        raise ZooError(f"{path}: sha256 does not match config.json (file altered or truncated)")
    return blob


def _load_arrays(path: Path, blob: bytes) -> dict[str, np.ndarray]:
    try:
        return st_load(blob)
    except Exception as e:  # safetensors raises its own error types
        raise ZooError(f"{path}: not a valid safetensors file ({e})") from None


def read_weights(run_dir: str | Path, which: str = "ema") -> dict[str, np.ndarray]:
    """Load ``which``.safetensors, checking the sha256 that config.json recorded."""
    cfg = read_config(run_dir)
    path = Path(run_dir) / f"{which}.safetensors"
    return _load_arrays(path, _verified_blob(path, cfg, "was the run finished?"))


def write_checkpoint(run_dir: Path, name: str, arrays: dict[str, np.ndarray], meta: dict) -> str:
    """Save a training checkpoint: ``arrays`` as safetensors, ``meta`` (JSON) in its header.

    Returns the file's sha256 (for config.json). Written atomically: a reader sees no file or all
    of it.
    """
    blob = st_save({k: np.ascontiguousarray(v) for k, v in arrays.items()},
                   metadata={CKPT_META_KEY: json.dumps(meta, sort_keys=True)})
    atomic_write(Path(run_dir) / name, blob)
    return hashlib.sha256(blob).hexdigest()


def read_checkpoint(run_dir: str | Path, cfg: dict | None = None) -> tuple[dict, dict] | None:
    """(arrays, meta) of the run's last checkpoint (``cfg["checkpoint"]["file"]``), sha256-checked,
    or None when the run has none yet. ZooError naming the file when it is missing or altered."""
    cfg = read_config(run_dir) if cfg is None else cfg
    ref = cfg.get("checkpoint")
    if not ref:
        return None
    if not (isinstance(ref, dict) and isinstance(ref.get("file"), str)
            and Path(ref["file"]).name == ref["file"]):
        raise ZooError(f"{Path(run_dir) / 'config.json'}: malformed checkpoint entry {ref!r}")
    path = Path(run_dir) / ref["file"]
    blob = _verified_blob(path, cfg, "the checkpoint config.json names is gone")
    arrays = _load_arrays(path, blob)
    # the header is verified with the rest of the file: 8-byte little-endian length, then JSON
    try:
        (n,) = struct.unpack("<Q", blob[:8])
        meta = json.loads(json.loads(blob[8:8 + n])["__metadata__"][CKPT_META_KEY])
    except (struct.error, KeyError, TypeError, ValueError) as e:
        raise ZooError(f"{path}: not a zoo checkpoint ({type(e).__name__}: {e})") from None
    return arrays, meta


class RunBusy(ZooError):
    """Another process holds a run directory's lock."""


@contextlib.contextmanager
def run_lock(run_dir: str | Path, name: str = ".lock") -> Iterator[None]:
    """Hold ``run_dir/name`` (fcntl.flock, exclusive, non-blocking) for the ``with`` block.

    RunBusy "RUN: in use by another process (pid N)" when another process (or another open of
    the file in this one) holds it. The kernel drops the lock when its holder dies, even by
    SIGKILL, so a crashed run never leaves a stale lock behind. Creates ``run_dir``. Training
    holds ``.lock``; a sweep holds ``.sweep.lock`` around all the stages of a run.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / name, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise RunBusy(f"{run_dir}: in use by another process (pid {pid})") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def is_locked(run_dir: str | Path, name: str = ".sweep.lock") -> bool:
    """Whether someone holds ``run_dir/name`` (a ``run_lock``) right now: a non-blocking probe.

    True when another process (or another open of the file in this one) holds the lock; False
    when nobody does, or when there is no such file. It creates nothing (neither the run
    directory nor the lock file) and takes the lock only shared and for an instant, so a holder
    is never disturbed (a ``run_lock`` attempted in that instant may read busy). The kernel
    drops a dead process's lock, so a "running" run whose lock is free has no live worker.
    """
    try:
        fd = os.open(Path(run_dir) / name, os.O_RDONLY)
    except OSError:  # no lock file (or no directory): nobody can hold it
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)

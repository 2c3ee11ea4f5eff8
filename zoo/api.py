"""Building and loading fields: ``create`` and ``load``."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np

from fields.common import Schedule
from zoo import backends
from zoo.data import check_run_autoencoder, get_dataset
from zoo.init import init_params
from zoo.registry import ZooError, get_info, load_plugin


def make_schedule(schedule: str | Schedule = "ou", t_min: float = 1e-3, T: float = 5.0) -> Schedule:
    if isinstance(schedule, Schedule):
        return schedule
    try:
        return Schedule(schedule, t_min=t_min, T=T)
    except ValueError as e:
        raise ZooError(str(e)) from None


def create(
    name: str,
    backend: str = "torch",
    *,
    dim: int | None = None,
    shape: tuple[int, ...] | None = None,
    schedule: str | Schedule = "ou",
    init: int | np.random.Generator = 0,
    dtype: str = "float32",
    **options,
):
    """Build field ``name`` for ``backend`` with backend-neutral initial weights.

    shape: one sample's shape, e.g. (2,) or (1, 8, 8); dim=d is short for shape=(d,). Taken from
    ``data=`` when a field needs a dataset and neither is given.
    init: a seed or numpy generator for the initial weights; the same value gives the same
    weights in both backends. dtype: "float32" or "float64". ``options`` go to the factory.
    """
    info = get_info(name, backend)
    if dtype not in ("float32", "float64"):
        raise ZooError(f"dtype must be float32 or float64, got {dtype!r}")
    if shape is None and dim is None and "data" in options:
        try:
            shape = get_dataset(options["data"]).shape
        except ValueError as e:
            raise ZooError(str(e)) from None
    if shape is None and dim is not None:
        shape = (dim,)
    if shape is None or not all(isinstance(s, int | np.integer) and s > 0 for s in shape) \
            or not shape:
        raise ZooError(f"create({name!r}) needs a positive dim= or shape=, got {shape!r}")
    shape = tuple(int(s) for s in shape)
    sched = make_schedule(schedule)
    # a factory takes the data's shape, or (plugins written for points) its flat dimension
    first = ({"shape": shape} if "shape" in inspect.signature(info.factory).parameters
             else {"dim": int(np.prod(shape))})
    try:
        inspect.signature(info.factory).bind(**first, schedule=sched, **options)
    except TypeError as e:
        raise ZooError(f"field {name!r}: {e}") from None
    rng = init if isinstance(init, np.random.Generator) else np.random.default_rng(init)
    return backends.get(backend).create_field(
        lambda: info.factory(**first, schedule=sched, **options),
        lambda current: init_params(current, rng), dtype)


def load(run_dir: str | Path, backend: str | None = None, *, ema: bool = True,
         dtype: str | None = None):
    """The field of a training run, in either backend (torch weights load into JAX and back).

    ema: the EMA weights (default) or the raw last weights. Returns (field, config dict).
    """
    from zoo import checkpoint

    cfg = checkpoint.read_config(run_dir)
    check_run_autoencoder(cfg, run_dir)  # a latent run: the autoencoder it was trained with
    for p in cfg.get("plugins", []):
        load_plugin(p)
    backend = backend or cfg["backend"]
    field = create(cfg["arch"], backend, shape=tuple(cfg.get("shape") or [cfg["dim"]]),
                   schedule=make_schedule(
        cfg["schedule"], cfg["t_min"], cfg["T"]), dtype=dtype or cfg["dtype"],
        **cfg["options"])
    which = "ema" if ema else "weights"
    params = checkpoint.read_weights(run_dir, which)
    try:
        field = backends.get(backend).load_params(field, params, dtype or cfg["dtype"])
    except ValueError as e:  # another architecture or shape than config.json describes
        raise ZooError(f"{Path(run_dir) / f'{which}.safetensors'}: weights do not fit "
                       f"{cfg['arch']} {cfg['options']}: {e}") from None
    return field, cfg


"""score-zoo: conservative and free score fields for diffusion models, in PyTorch and Equinox.

    import zoo
    zoo.list_fields("*-mlp")
    f = zoo.create("energy-mlp", "jax", dim=2)
    f, cfg = zoo.load("results/runs/gmm8/free-mlp-torch-s0", backend="jax")

New fields: decorate a factory with ``zoo.register(name, backend, ...)`` (see README).
"""

from zoo.api import create, load, make_schedule
from zoo.data import get_dataset, list_datasets
from zoo.registry import ZooError, entries, get_info, list_fields, load_plugin, register

__version__ = "0.1.0"

__all__ = [
    "ZooError", "create", "entries", "get_dataset", "get_info", "list_datasets", "list_fields",
    "load", "load_plugin", "make_schedule", "register",
]

"""One module per framework with the same functions, so tools and training are written once.

``get("torch")`` / ``get("jax")`` import lazily: a torch-only user never imports JAX.
Each module provides: ``named_params``, ``load_params``, ``score``, ``jacobian``, ``parts``,
``loss_and_grads``, ``Trainer`` and ``DTYPES`` (see zoo/backends/torch_backend.py).
"""

from __future__ import annotations

import importlib
from types import ModuleType

_MODULES = {"torch": "zoo.backends.torch_backend", "jax": "zoo.backends.jax_backend"}


def get(backend: str) -> ModuleType:
    """The backend module for ``backend`` ("torch" or "jax")."""
    return importlib.import_module(_MODULES[backend])

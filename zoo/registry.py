"""The field registry: decorator-registered factories, looked up by (name, backend).

    @zoo.register("my-field", "torch", head="free", conservative=False)
    def make(dim, schedule, width=256): ...

``create`` builds a field and gives it the backend-neutral initial weights of ``zoo.init`` (the
same numbers in both backends for the same seed). Third-party fields come from the entry-point
group ``zoo.fields`` or ``zoo train --plugin MODULE``.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import importlib.metadata
import importlib.util
import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

BACKENDS = ("torch", "jax")


class ZooError(ValueError):
    """An error the user caused (bad name, bad number, bad file): reported as one line, exit 2."""


@dataclass(frozen=True)
class Option:
    """One factory option: its default, a check (value -> normalised value, or ValueError) and help."""

    default: object
    check: Callable[[object], object]
    help: str


def resolve_options(specs: dict[str, Option], given: dict) -> dict:
    """Every option of ``specs`` with defaults filled in and each value checked (tuples become
    lists, as JSON keeps them). ZooError (one line) naming the option for an unknown name or a
    bad value. What this returns is what config.json records, so a run names every setting."""
    unknown = sorted(set(given) - set(specs))
    if unknown:
        raise ZooError(f"unknown option(s) {', '.join(unknown)} for this field; it takes "
                       f"{', '.join(sorted(specs)) or 'none'}")
    out = {}
    for name, spec in specs.items():
        v = given.get(name, spec.default)
        if isinstance(v, tuple):
            v = list(v)
        try:
            out[name] = spec.check(v)
        except ValueError as e:
            raise ZooError(f"option {name} {e}") from None
    return out


@dataclass(frozen=True)
class FieldInfo:
    """What the registry knows of one (name, backend) entry."""

    name: str
    backend: str
    factory: Callable
    head: str
    backbone: str
    conservative: bool  # conservative by construction (an exact gradient)
    trainable: bool = True
    penalty: str | None = None  # an extra training penalty (zoo.train), e.g. "qc"
    description: str = ""
    small: dict | None = None  # options for a small, fast variant (tests, smoke runs)
    options: dict | None = None  # option name -> Option (default, check, help); None: unknown
    data: str = "any"  # the data it takes: "any" shape, or "image" ([C, H, W] only)


_REGISTRY: dict[tuple[str, str], FieldInfo] = {}
_loaded_builtin = False
_loaded_entry_points = False


def register(
    name: str,
    backend: str,
    *,
    head: str = "custom",
    backbone: str = "custom",
    conservative: bool = False,
    trainable: bool = True,
    penalty: str | None = None,
    description: str = "",
    small: dict | None = None,
    options: dict | None = None,
    data: str = "any",
) -> Callable[[Callable], Callable]:
    """Decorate a factory ``f(dim, schedule, **cfg) -> field`` as field ``name`` for ``backend``.

    The factory takes ``dim`` (the data flattened to a vector) or ``shape`` (one sample's shape,
    e.g. (1, 8, 8)) as its first argument, whichever it names. Torch fields are batched
    ``nn.Module``s with ``score(x, t)``; Equinox fields are ``eqx.Module``s written for one
    example. Registering a taken (name, backend) raises.
    ``small``: factory options of a small variant, used by the registry-driven tests.
    ``options``: the options it takes, for help texts (built-in fields: zoo.builtin's tables).
    ``data``: "any" (points or images, flattened as the field likes) or "image" ([C, H, W] only).
    """
    if data not in ("any", "image"):
        raise ZooError(f"data must be 'any' or 'image', got {data!r}")
    if backend not in BACKENDS:
        raise ZooError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")

    def deco(factory: Callable) -> Callable:
        _ensure_builtin()  # so a plugin cannot take a built-in name unnoticed
        key = (name, backend)
        if key in _REGISTRY:
            raise ZooError(f"field {name!r} is already registered for backend {backend!r}")
        doc = description or (inspect.getdoc(factory) or "").split("\n")[0]
        _REGISTRY[key] = FieldInfo(name, backend, factory, head, backbone, conservative,
                                   trainable, penalty, doc, dict(small or {}), options, data)
        return factory

    return deco


def _ensure_builtin() -> None:
    global _loaded_builtin
    if not _loaded_builtin:
        _loaded_builtin = True
        importlib.import_module("zoo.builtin")


def _ensure_loaded() -> None:
    global _loaded_entry_points
    _ensure_builtin()
    if not _loaded_entry_points:
        _loaded_entry_points = True
        for ep in importlib.metadata.entry_points(group="zoo.fields"):
            try:
                ep.load()
            except Exception as e:  # a broken plugin must not hide the built-in fields
                raise ZooError(f"plugin entry point {ep.name!r} ({ep.value}) failed: {e}") from e


def load_plugin(spec: str) -> None:
    """Import a plugin that registers fields: a module name or a path to a .py file."""
    path = Path(spec)
    try:
        if spec.endswith(".py"):
            if not path.is_file():
                raise ZooError(f"plugin file not found: {spec}")
            modname = f"zoo_plugin_{path.stem}"
            if modname in sys.modules:
                return
            mspec = importlib.util.spec_from_file_location(modname, path)
            module = importlib.util.module_from_spec(mspec)
            sys.modules[modname] = module
            mspec.loader.exec_module(module)
        else:
            if "" not in sys.path:
                sys.path.insert(0, "")  # like `python -m`: modules in the working directory
            importlib.import_module(spec)
    except ZooError:
        raise
    except Exception as e:
        raise ZooError(f"plugin {spec!r} failed to import: {type(e).__name__}: {e}") from e


def list_fields(pattern: str = "*", backend: str | None = None) -> list[str]:
    """Sorted names of registered fields matching the fnmatch ``pattern`` (optionally one backend)."""
    _ensure_loaded()
    names = {n for (n, b) in _REGISTRY if backend is None or b == backend}
    return sorted(n for n in names if fnmatch.fnmatchcase(n, pattern))


def get_info(name: str, backend: str) -> FieldInfo:
    """The registry entry for (name, backend); ZooError with the closest names if there is none."""
    _ensure_loaded()
    if backend not in BACKENDS:
        raise ZooError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    key = (name, backend)
    if key in _REGISTRY:
        return _REGISTRY[key]
    others = [b for (n, b) in _REGISTRY if n == name]
    if others:
        raise ZooError(f"field {name!r} has no {backend} version (it has: {', '.join(others)})")
    close = difflib.get_close_matches(name, list_fields(), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else "; see `zoo list`"
    raise ZooError(f"unknown field {name!r}{hint}")


def backends_of(name: str) -> list[str]:
    _ensure_loaded()
    return [b for b in BACKENDS if (name, b) in _REGISTRY]


def entries(pattern: str = "*") -> list[FieldInfo]:
    """Every registry entry whose name matches ``pattern``, sorted by name then backend."""
    _ensure_loaded()
    return [_REGISTRY[(n, b)] for n in list_fields(pattern) for b in BACKENDS if (n, b) in _REGISTRY]

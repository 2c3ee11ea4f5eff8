"""Backend-neutral initial weights: the same numpy numbers go into a torch or an Equinox field.

Rules (by parameter name and shape, drawn in sorted-name order from one numpy generator):
- ndim >= 2 (weights, generators): U(-b, b), b = 1/sqrt(fan_in), fan_in = prod(shape[1:])
  (PyTorch's nn.Linear default);
- ``P.bias`` beside a matrix ``P.weight``: U(-b, b) with that weight's fan_in (also nn.Linear's);
- ``P.weight`` of ndim 1 (a norm's scale): ones; its ``P.bias``: zeros;
- any parameter under a module whose name ends in ``_zero`` (``blocks.0.adaLN_zero.weight``,
  ``final_zero.bias``): zeros, for layers a paper initialises at zero (adaLN-zero, Peebles & Xie
  2023); checked first;
- anything else keeps the value its factory gave it, which must be deterministic.
"""

from __future__ import annotations

import numpy as np


def _rule(name: str, current: dict) -> tuple[str, tuple]:
    """(rule, fan shape): which of the module docstring's rules draws parameter ``name`` ("zeros",
    "ones", "uniform" with the bound of that shape's fan-in, or "keep"); only shapes are read."""
    shape = tuple(current[name].shape)
    stem, _, leaf = name.rpartition(".")
    partner = current.get(f"{stem}.weight" if stem else "weight")
    if any(part.endswith("_zero") for part in stem.split(".")):
        return "zeros", ()
    if len(shape) >= 2:
        return "uniform", shape
    if leaf == "bias" and partner is not None and len(partner.shape) >= 2:
        return "uniform", tuple(partner.shape)
    if leaf == "weight" and len(shape) == 1:
        return "ones", ()
    if leaf == "bias" and partner is not None:
        return "zeros", ()
    return "keep", ()


def needs_values(current: dict) -> bool:
    """Whether ``init_params(current, ...)`` reads a value of ``current`` (a parameter no rule
    draws keeps its factory's value) rather than only its shapes."""
    return any(_rule(name, current)[0] == "keep" for name in current)


def init_params(current: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """New float64 values for the named parameters ``current`` (name -> array), drawn from ``rng``."""
    out: dict[str, np.ndarray] = {}
    for name in sorted(current):
        shape = tuple(current[name].shape)
        rule, fan = _rule(name, current)
        if rule == "uniform":
            b = 1 / np.sqrt(np.prod(fan[1:]))
            out[name] = rng.uniform(-b, b, size=shape)
        elif rule == "zeros":
            out[name] = np.zeros(shape)
        elif rule == "ones":
            out[name] = np.ones(shape)
        else:
            out[name] = np.asarray(current[name], dtype=np.float64)
    return out

"""Parameter types and parsers the `zoo` commands share."""

from __future__ import annotations

import math

import click

from zoo.registry import BACKENDS, ZooError


class Finite(click.ParamType):
    """A float that must be finite (and optionally positive): NaN and inf are refused."""

    name = "number"

    def __init__(self, positive: bool = False) -> None:
        self.positive = positive

    def convert(self, value, param, ctx):
        try:
            v = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(v) or (self.positive and v <= 0):
            self.fail(f"{value!r} must be a {'positive ' if self.positive else ''}finite number",
                      param, ctx)
        return v


POSITIVE_INT = click.IntRange(min=1)


def parse_options(items) -> dict:
    """``("channels=64", "mults=1,2,2", "patch=auto")`` -> {"channels": 64, "mults": [1, 2, 2],
    "patch": None}: integers, numbers, true/false, comma lists of numbers, none/auto, or text."""

    def value(text: str):
        low = text.strip().lower()
        if low in ("none", "auto", ""):
            return None
        if low in ("true", "false"):
            return low == "true"
        for cast in (int, float):
            try:
                return cast(text)
            except ValueError:
                pass
        if "," in text:
            return [value(v) for v in text.split(",") if v.strip()]
        return text.strip()

    out = {}
    for item in items:
        key, eq, text = item.partition("=")
        if not eq or not key.strip():
            raise ZooError(f"--opt takes KEY=VALUE, got {item!r}")
        out[key.strip()] = value(text)
    return out


RUN_DIR = click.Path(file_okay=False)


def backends(text: str) -> list[str]:
    bks = [b.strip() for b in text.split(",") if b.strip()]
    bad = [b for b in bks if b not in BACKENDS]
    if bad or not bks:
        raise ZooError(f"unknown backend(s) {bad}; choose from {', '.join(BACKENDS)}")
    return bks


def int_list(name: str, text: str) -> list[int]:
    """"64,256" -> [64, 256]; ZooError on anything but positive integers."""
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ZooError(f"--{name} takes comma-separated positive integers, got {text!r}") from None
    if not vals or min(vals) <= 0:
        raise ZooError(f"--{name} takes comma-separated positive integers, got {text!r}")
    return vals

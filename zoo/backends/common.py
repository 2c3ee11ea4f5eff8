"""Pieces both backends share."""


def ema_decay(decay: float, k: int) -> float:
    """EMA decay after k steps, warmed up as min(decay, (1 + k) / (10 + k)) so short runs average
    recent weights rather than the initialisation."""
    return min(decay, (1 + k) / (10 + k))


# a Trainer's state_dict(): one group of arrays per kind, each keyed by parameter name
STATE_GROUPS = ("params", "ema", "adam.m", "adam.v")


def split_state(arrays: dict) -> dict[str, dict]:
    """``{"params.w": a, "adam.m.w": b, ...}`` -> ``{"params": {"w": a}, "adam.m": {"w": b}, ...}``."""
    out: dict[str, dict] = {g: {} for g in STATE_GROUPS}
    for key, v in arrays.items():
        group = next((g for g in STATE_GROUPS if key.startswith(g + ".")), None)
        if group is None:
            raise ValueError(f"unexpected array {key!r} in a training state")
        out[group][key[len(group) + 1:]] = v
    return out

"""Pieces both backends share."""


def ema_decay(decay: float, k: int) -> float:
    """EMA decay after k steps, warmed up as min(decay, (1 + k) / (10 + k)) so short runs average
    recent weights rather than the initialisation."""
    return min(decay, (1 + k) / (10 + k))

"""PyTorch score fields: batched, ``score(x, t)`` with x: [B, *shape], t: [B]."""

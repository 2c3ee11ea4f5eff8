"""Equinox score fields: written for one example, ``score(x, t)`` with x: [*shape], t: [].

Callers vmap them (the Equinox convention); ``zoo`` has the batched adapter.
"""

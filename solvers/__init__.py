"""Sampling and likelihood for any field, torch or JAX, with the same solvers.

- ``solvers.timegrid``: the flipped time tau in [0, 1] every solver integrates in.
- ``solvers.adapters``: a torch field, or a JAX field through the zero-copy DLPack bridge, as one
  torch function ``score(x, t)`` (plus ``score_and_div`` for likelihoods).
- ``solvers.torch_engine``: probability-flow ODE (torchdiffeq), reverse SDE (torchsde), likelihood.
- ``solvers.diffrax_engine``: the same three natively in JAX with diffrax.

Solvers know nothing of training or the registry: they take a field, a ``fields.common.Schedule``
and x_T.
"""

"""Sampling and likelihood: torchdiffeq/torchsde ODE and SDE solvers, diffrax for JAX (issue 4)."""

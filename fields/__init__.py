"""Score-field parameterisations, one module tree per backend.

``fields.torch`` and ``fields.jax`` mirror each other file for file and use the same parameter
names, so one safetensors file loads into either. This package knows nothing of training, the
registry or the CLI (those live in ``zoo``); ``fields.common`` holds the backend-neutral maths.
"""

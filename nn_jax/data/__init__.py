"""Data that ships with packages or is generated locally (never downloaded), and batching."""

from nn_jax.data.batching import batches
from nn_jax.data.digits import Split, load_digits

__all__ = ["Split", "batches", "load_digits"]

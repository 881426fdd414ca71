"""The model zoo: ready models built from nn_jax layers."""

from nn_jax.models.mlp import MLP, SimpleNetwork

__all__ = ["MLP", "SimpleNetwork"]

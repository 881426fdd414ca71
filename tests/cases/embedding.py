"""Embedding lookup (integer inputs)."""

from nn_jax.embedding import Embedding
from tests.cases import Case

CASES = [
    Case("embedding", Embedding(11, 4), lambda g: g.integers(0, 11, (3, 5))),
]

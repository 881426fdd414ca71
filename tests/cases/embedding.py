"""Embedding lookup (integer inputs)."""

from nn_jax.embedding import Embedding
from tests.cases import Case

CASES = [
    Case("embedding", Embedding(11, 4), lambda g: g.integers(0, 11, (3, 5))),
    # The ids skip the padding row 0: by design it gets no gradient, so finite differences of
    # the output along it would not match (tests/test_torch_parity_layers.py checks that row).
    Case(
        "embedding_padding_idx",
        Embedding(11, 4, padding_idx=0),
        lambda g: g.integers(1, 11, (3, 5)),
    ),
]

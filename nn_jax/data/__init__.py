"""Data that ships with packages or is generated locally (never downloaded), and batching."""

from nn_jax.data.batching import batches
from nn_jax.data.digits import Split, load_digits
from nn_jax.data.graphs import (
    KARATE_SEEDS,
    GraphSet,
    KarateClub,
    from_networkx,
    load_karate_club,
    make_cycles_and_paths,
)

__all__ = [
    "KARATE_SEEDS",
    "GraphSet",
    "KarateClub",
    "Split",
    "batches",
    "from_networkx",
    "load_digits",
    "load_karate_club",
    "make_cycles_and_paths",
]

"""Data that ships with packages or is generated locally (never downloaded), splitting,
batching and prefetching to the device."""

from nn_jax.data.batching import batches
from nn_jax.data.digits import Split, load_digits
from nn_jax.data.graph_batch import Graph, GraphBatch, batch_graphs
from nn_jax.data.graphs import (
    KARATE_SEEDS,
    GraphSet,
    KarateClub,
    from_networkx,
    load_karate_club,
    make_cycles_and_paths,
)
from nn_jax.data.mnist1d import load_mnist1d
from nn_jax.data.prefetch import prefetch_to_device
from nn_jax.data.sequences import adding_problem, copy_task, reverse_task
from nn_jax.data.splits import Splits, split_dataset, with_validation
from nn_jax.data.synthetic import make_classification, make_regression, regression_target

__all__ = [
    "KARATE_SEEDS",
    "Graph",
    "GraphBatch",
    "GraphSet",
    "KarateClub",
    "Split",
    "Splits",
    "adding_problem",
    "batch_graphs",
    "batches",
    "copy_task",
    "from_networkx",
    "load_digits",
    "load_karate_club",
    "load_mnist1d",
    "make_classification",
    "make_cycles_and_paths",
    "make_regression",
    "prefetch_to_device",
    "regression_target",
    "reverse_task",
    "split_dataset",
    "with_validation",
]

"""Dropout family in training mode (with an rng) and evaluation mode."""

from nn_jax.regularization import Dropout, DropPath, SpatialDropout
from tests.cases import Case, normal

CASES = [
    Case("dropout_train", Dropout(0.3), normal(4, 5), train=True, rng=True),
    Case(
        "dropout_broadcast_train",
        Dropout(0.5, broadcast_dims=(-2,)),
        normal(2, 3, 4),
        train=True,
        rng=True,
    ),
    Case("dropout_eval", Dropout(0.5), normal(4, 5)),
    Case("spatial_dropout_train", SpatialDropout(0.4), normal(2, 3, 3, 4), train=True, rng=True),
    Case("drop_path_train", DropPath(0.5), normal(6, 3, 2), train=True, rng=True),
]

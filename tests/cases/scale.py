"""Remat and Repeat (rematerialization and scan over stacked layers)."""

import jax

from nn_jax.combinators import Residual, Sequential
from nn_jax.dense import Dense
from nn_jax.regularization import Dropout
from nn_jax.remat import Remat
from nn_jax.repeat import Repeat
from tests.cases import Case, normal

CASES = [
    Case("remat", Remat(Sequential(Dense(4), jax.nn.tanh, Dense(2))), normal(5, 3)),
    Case("repeat", Repeat(Sequential(Dense(3), jax.nn.tanh), 3), normal(4, 3)),
    Case(
        "repeat_remat_dropout_train",
        Repeat(Residual(Sequential(Dense(3), Dropout(0.2))), 2, remat="dots_saveable"),
        normal(4, 3),
        train=True,
        rng=True,
    ),
]

"""Dense models: the seed's ``SimpleNetwork`` and a generic ``MLP``."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax

from nn_jax.activations import get_activation
from nn_jax.combinators import Sequential
from nn_jax.core import Activation, Block, Lambda, Scope, Sizes
from nn_jax.dense import Dense

__all__ = ["MLP", "SimpleNetwork"]


@dataclasses.dataclass(frozen=True)
class SimpleNetwork(Block):
    """The seed's network: ``10 -> 32 -> 16 -> 1`` with ReLU, ReLU and a sigmoid output.

    Params mirror the seed's PyTorch ``state_dict`` (``layers.0.weight`` is
    ``params["layers"]["0"]["w"]``, transposed)::

        {"layers": {"0": {"w": (10, 32), "b": (32,)},
                    "2": {"w": (32, 16), "b": (16,)},
                    "4": {"w": (16, 1), "b": (1,)}}}

    Train it with ``losses.binary_cross_entropy`` (PyTorch's ``nn.BCELoss``) and
    ``optax.adam(0.01)``.
    """

    def forward(self, scope: Scope, x: Any) -> Any:
        layers = Sequential(
            Dense(32), jax.nn.relu, Dense(16), jax.nn.relu, Dense(1), jax.nn.sigmoid
        )
        return scope("layers", layers, x)


@dataclasses.dataclass(frozen=True)
class MLP(Block):
    """A multi-layer perceptron: ``Dense(widths[0])``, activation, ..., ``Dense(widths[-1])``.

    Args:
        widths: output sizes of each Dense layer; the last is the model's output size.
        activation: between layers (a callable or a name such as ``"relu"``).
        final_activation: after the last layer (``None``: logits).

    Params: ``{"dense_0": {"w", "b"}, ..., "dense_{n-1}": {...}}``. The activations are
    parameter-free children ``activation_0``, ... (and ``final_activation``), so their outputs
    are tapped by path (``apply_with_intermediates``, the dead-ReLU monitor).
    """

    widths: Sizes
    activation: Activation = "relu"
    final_activation: Activation | None = None

    def forward(self, scope: Scope, x: Any) -> Any:
        act = Lambda(get_activation(self.activation))
        last = len(self.widths) - 1
        for i, width in enumerate(self.widths):
            x = scope(f"dense_{i}", Dense(width), x)
            if i < last:
                x = scope(f"activation_{i}", act, x)
        if self.final_activation is not None:
            x = scope("final_activation", Lambda(get_activation(self.final_activation)), x)
        return x

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

    Input ``(..., F)`` -> ``(..., widths[-1])``. Params: ``{"dense_0": {"w": (F, widths[0]),
    "b": (widths[0],)}, ..., "dense_{n-1}": {...}}``.

    Taps (paths for :func:`~nn_jax.inspect.apply_with_intermediates` and its ``edit``): the
    pre-activations ``dense_<i>`` ``(..., widths[i])``, and the post-activations
    ``activation_<i>`` for ``i < n - 1`` (``final_activation`` when set): the activations are
    parameter-free children, so they add nothing to the params. Zeroing unit ``j`` of
    ``activation_<i>`` (:func:`nn_jax.interventions.zero_units`) ablates hidden unit ``j``.

    >>> import jax, jax.numpy as jnp
    >>> from nn_jax.inspect import apply_with_intermediates
    >>> mlp = MLP((8, 8, 3), activation="tanh")
    >>> params, state = mlp.init(jax.random.key(0), jnp.zeros((2, 5)))
    >>> jax.tree.map(jnp.shape, params)["dense_1"]
    {'b': (8,), 'w': (8, 8)}
    >>> _, _, values = apply_with_intermediates(mlp, params, state, jnp.ones((2, 5)))
    >>> list(values)
    ['dense_0', 'activation_0', 'dense_1', 'activation_1', 'dense_2']
    >>> values["activation_1"].shape
    (2, 8)
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

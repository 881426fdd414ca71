"""Recurrent models: ``RNNClassifier``, a (stacked, optionally bidirectional) RNN and a head."""

from __future__ import annotations

import dataclasses
from dataclasses import KW_ONLY
from typing import Any

import jax.numpy as jnp

from nn_jax.core import Array, Block, Rate, Scope, Size
from nn_jax.dense import Dense
from nn_jax.embedding import Embedding
from nn_jax.errors import ConfigError
from nn_jax.masks import combine_masks, masked_mean_over_time, sequence_mask
from nn_jax.recurrent import (
    RNN,
    Bidirectional,
    GRUCell,
    LSTMCell,
    SimpleRNNCell,
    StackedRNN,
)
from nn_jax.regularization import Dropout

__all__ = ["RNNClassifier"]

_CELLS = {"lstm": LSTMCell, "gru": GRUCell, "rnn": SimpleRNNCell}
_POOLINGS = ("last", "mean")


@dataclasses.dataclass(frozen=True)
class RNNClassifier(Block):
    """Classify sequences with a stacked recurrent network and a dense head.

    ``x -> [Embedding] -> RNN layers -> pool over time -> [Dropout] -> Dense(num_classes)``.

    Args:
        num_classes: number of logits ``C``.
        cell: ``"lstm"``, ``"gru"`` or ``"rnn"`` (:class:`~nn_jax.recurrent.SimpleRNNCell`).
        hidden: hidden size ``H`` of every layer.
        num_layers: stacked layers.
        bidirectional: wrap each layer in :class:`~nn_jax.recurrent.Bidirectional` (concat).
        pooling: ``"last"`` (the output at the last real step; for the backward direction, at
            step 0) or ``"mean"`` (mean of the outputs over the real steps).
        dropout_rate: dropout between layers and before the head (training; needs ``rng``).
        vocab_size: if given, inputs are token ids embedded by an ``Embedding(vocab_size,
            embed_features or hidden)``.
        embed_features: embedding size (default ``hidden``).

    Input ``x``: ``(B, T, F)`` floats (or ``(B, T)`` token ids). Output ``(B, C)`` logits.

    Side inputs: ``"lengths"`` (``(B,)`` ints: steps at ``t >= lengths[b]`` are padding that
    changes nothing) and ``"mask"`` (``(B, T)`` bools, ``True`` = a real step; combined with
    ``"lengths"`` by *and*), read by the recurrent layers and by the ``"mean"`` pooling;
    ``"initial_carry"`` as for :class:`~nn_jax.recurrent.StackedRNN` (``{"0": carry, ...}``).
    With the train-step builders and ``fit``, give batches ``(x, y, {"lengths": lengths})``.

    Params: ``{"embedding"?, "rnn": {"0": ..., ...}, "head": {"w": (H or 2H, C), "b": (C,)}}``.

    >>> import jax, jax.numpy as jnp
    >>> model = RNNClassifier(10, cell="gru", hidden=16)
    >>> params, _ = model.init(jax.random.key(0), jnp.zeros((4, 40, 1)))
    >>> model(params, jnp.zeros((4, 40, 1)), side={"lengths": jnp.array([40, 3, 9, 1])}).shape
    (4, 10)
    """

    num_classes: Size
    _: KW_ONLY
    cell: str = "lstm"
    hidden: Size = 64
    num_layers: Size = 1
    bidirectional: bool = False
    pooling: str = "last"
    dropout_rate: Rate = 0.0
    vocab_size: Size | None = None
    embed_features: Size | None = None

    def __post_init__(self) -> None:
        if self.cell not in _CELLS:
            raise ConfigError(
                f"RNNClassifier: cell must be one of {tuple(_CELLS)}, given {self.cell!r}"
            )
        if self.pooling not in _POOLINGS:
            raise ConfigError(
                f"RNNClassifier: pooling must be one of {_POOLINGS}, given {self.pooling!r}"
            )
        self._stack()  # validates the recurrent layers' options

    def _stack(self) -> StackedRNN:
        layers = []
        for i in range(self.num_layers):
            last_only = i == self.num_layers - 1 and self.pooling == "last"
            rnn = RNN(_CELLS[self.cell](self.hidden), return_sequences=not last_only)
            layers.append(Bidirectional(rnn) if self.bidirectional else rnn)
        return StackedRNN(tuple(layers), dropout_rate=self.dropout_rate)

    def forward(self, scope: Scope, x: Any) -> Array:
        if self.vocab_size is not None:
            features = self.embed_features or self.hidden
            x = scope("embedding", Embedding(self.vocab_size, features), x)
        h = scope("rnn", self._stack(), x)
        if self.pooling == "mean":
            h = self._mean_over_real_steps(scope, h)
        if self.dropout_rate > 0:
            h = scope("dropout", Dropout(self.dropout_rate), h)
        return scope("head", Dense(self.num_classes), h)

    def _mean_over_real_steps(self, scope: Scope, h: Array) -> Array:
        """Mean of ``h: (B, T, D)`` over the steps that ``"lengths"`` and ``"mask"`` call real."""
        lengths, mask = scope.side_input("lengths"), scope.side_input("mask")
        if mask is None:
            return masked_mean_over_time(h, lengths)
        valid = combine_masks(
            None if lengths is None else sequence_mask(lengths, h.shape[-2]), mask
        )
        weights = jnp.asarray(valid).astype(h.dtype)[..., None]
        count = jnp.maximum(jnp.sum(weights, axis=-2), 1)
        return jnp.sum(h * weights, axis=-2) / count

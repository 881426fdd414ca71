"""Token embeddings: ``Embedding`` (a lookup table) with a tied output projection ``attend``."""

from __future__ import annotations

import dataclasses
from dataclasses import KW_ONLY
from typing import Any

import jax
import jax.numpy as jnp

from nn_jax import initializers
from nn_jax.core import Array, Call, Initializer, Layer, Params, PRNGKey, Size, State
from nn_jax.errors import ConfigError, ShapeError

__all__ = ["Embedding"]

default_embedding_init: Initializer = initializers.variance_scaling(
    1.0, "fan_in", "normal", out_axis=0
)
"""Normal with variance ``1 / features`` (Flax's default): rows have squared norm about 1."""


@dataclasses.dataclass(frozen=True)
class Embedding(Layer):
    """Look up rows of a ``(num_embeddings, features)`` table by integer index.

    ``y[..., :] = table[x[...], :]``. Indices must lie in ``[0, num_embeddings)``: others raise
    ``ValueRangeError`` when called eagerly, and under ``jit`` in checked mode
    (:func:`nn_jax.checked`); an unchecked jitted call would return NaN rows for them.

    :meth:`attend` is the tied output projection of a language model,
    ``logits = h @ table.T``: the same table maps tokens in and hidden states out.

    ``padding_idx`` (PyTorch ``nn.Embedding(padding_idx=...)``): that row is initialized to
    zeros and the lookup passes it no gradient (``jax.lax.stop_gradient`` on that row), so an
    optimizer whose update comes from the gradient leaves it unchanged (decoupled weight decay
    would shrink a non-zero row, as in PyTorch; a zero row stays zero). As in PyTorch the
    lookup reads the row as stored: a loaded non-zero row is used as is, still with no
    gradient. :meth:`attend` reads the whole table, as a tied PyTorch output layer does, so a
    tied model gives that row the output projection's gradient.

    Args:
        num_embeddings: vocabulary size ``V``.
        features: embedding size ``D``.
        dtype: output dtype; ``None`` keeps the table's.
        param_dtype: storage dtype of the table.
        table_init: ``(key, shape, dtype)`` initializer of the table (default normal,
            variance ``1 / D``; PyTorch's ``nn.Embedding`` draws ``normal(stddev=1.0)``). No
            fan-in is passed.
        padding_idx: ``None`` (default), or the index of the padding row, in
            ``[-num_embeddings, num_embeddings)``; a negative index counts from the end as in
            PyTorch and is stored as ``num_embeddings + padding_idx``.

    Input ``(...)`` integer indices -> ``(..., D)``. Params ``table: (V, D)``. No side inputs.

    >>> import jax, jax.numpy as jnp
    >>> emb = Embedding(100, 8)
    >>> params, _ = emb.init(jax.random.key(0), jnp.zeros((2, 5), jnp.int32))
    >>> jax.tree.map(jnp.shape, params)
    {'table': (100, 8)}
    >>> h = emb(params, jnp.array([[1, 2, 3, 4, 5]]))
    >>> emb.attend(params, h).shape
    (1, 5, 100)
    >>> padded = Embedding(100, 8, padding_idx=-1)
    >>> padded.padding_idx
    99
    >>> params, _ = padded.init(jax.random.key(0), jnp.zeros((2, 5), jnp.int32))
    >>> padded(params, jnp.array([99, 1]))[0]
    Array([0., 0., 0., 0., 0., 0., 0., 0.], dtype=float32)
    """

    num_embeddings: Size
    features: Size
    _: KW_ONLY
    dtype: Any = None
    param_dtype: Any = jnp.float32
    table_init: Initializer = default_embedding_init
    padding_idx: int | None = None

    def __post_init__(self) -> None:
        index, size = self.padding_idx, self.num_embeddings
        if index is None:
            return
        if not -size <= index < size:
            raise ConfigError(
                f"Embedding: padding_idx must be None or an index in [{-size}, {size}) "
                f"(num_embeddings={size}; negative counts from the end), given {index}"
            )
        object.__setattr__(self, "padding_idx", index % size)

    def init(self, key: PRNGKey, x: Any) -> tuple[Params, State]:
        shape = (self.num_embeddings, self.features)
        table = self.table_init(key, shape, self.param_dtype)
        if self.padding_idx is not None:
            table = table.at[self.padding_idx].set(0)
        return {"table": table}, {}

    def _table(self, params: Params) -> Array:
        table = self.param(params, "table", (self.num_embeddings, self.features))
        return table.astype(self.dtype or table.dtype)

    def compute(self, params: Params, state: State, x: Any, call: Call) -> tuple[Array, State]:
        x = jnp.asarray(x)
        if not jnp.issubdtype(x.dtype, jnp.integer):
            raise self.error(
                ShapeError,
                f"expected integer indices, given dtype {x.dtype} (shape {x.shape}); cast token "
                "ids with x.astype(jnp.int32)",
            )
        self.check_range("indices", x, 0, self.num_embeddings)
        table = self._table(params)
        if self.padding_idx is not None:
            row = self.padding_idx
            table = table.at[row].set(jax.lax.stop_gradient(table[row]))
        return jnp.take(table, x, axis=0), {}

    def attend(self, params: Params, x: Any) -> Array:
        """Tied output logits ``x @ table.T``: ``(..., D) -> (..., V)``.

        Args:
            params: this layer's params (``{"table": (V, D)}``).
            x: hidden states ``(..., D)``.

        Returns:
            ``(..., V)`` logits, one per vocabulary entry.
        """
        table = self._table(params)
        x = jnp.asarray(x)
        if x.ndim < 1 or x.shape[-1] != self.features:
            raise self.error(
                ShapeError,
                f"attend: input last axis must be features={self.features}, given shape {x.shape}",
            )
        dtype = jnp.result_type(x.dtype, table.dtype)
        return jax.lax.dot_general(
            x.astype(dtype), table.astype(dtype), (((x.ndim - 1,), (1,)), ((), ()))
        )

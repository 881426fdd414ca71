"""Masks for padded sequences and attention, and masked reductions over time.

Booleans, ``True`` = valid (a real step; a key a query may attend to). A padded batch of
sequences is described by its ``lengths: (B,)``; :func:`sequence_mask` turns them into the
``(B, T)`` step mask, which the layers take as the side input ``"key_mask"`` (attention) or
``"mask"`` (recurrent), or the lengths themselves as ``"lengths"``.

Lengths must lie in ``[0, T]``: a longer or negative length would silently mean "all steps" or
"none". Out-of-range lengths are a :class:`~nn_jax.errors.ValueRangeError` naming the function
(or, as a side input, the layer) - at once for concrete lengths, under ``jax.jit`` in checked mode
(:func:`nn_jax.checked`).
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from nn_jax.checks import check_in_range
from nn_jax.core import Array
from nn_jax.errors import ShapeError

__all__ = [
    "causal_mask",
    "combine_masks",
    "make_attention_mask",
    "masked_mean_over_time",
    "sequence_mask",
]


def sequence_mask(lengths: Any, max_length: int) -> Array:
    """``(..., T)`` bools, ``True`` at the valid steps ``t < lengths[...]`` of a padded batch.

    Args:
        lengths: ``(...)`` ints in ``[0, T]`` (value-checked).
        max_length: ``T``.
    """
    return _sequence_mask("sequence_mask", lengths, max_length)


def _sequence_mask(fn: str, lengths: Any, max_length: int) -> Array:
    """:func:`sequence_mask`, its value-check errors starting with ``fn``."""
    lengths = jnp.asarray(lengths)
    check_in_range(fn, "lengths", lengths, 0, max_length, closed=True)
    return jnp.arange(max_length).reshape((1,) * lengths.ndim + (max_length,)) < lengths[..., None]


def causal_mask(q_len: int, kv_len: int | None = None, *, offset: Any = 0) -> Array:
    """``(q_len, kv_len)`` bools: query ``i`` may attend to key ``j`` iff ``j <= i + offset``.

    Args:
        q_len: number of queries.
        kv_len: number of keys (default ``q_len``).
        offset: position of query 0 among the keys (e.g. the number of cached steps).
    """
    kv_len = q_len if kv_len is None else kv_len
    return jnp.arange(kv_len)[None, :] <= jnp.arange(q_len)[:, None] + offset


def make_attention_mask(query_mask: Any, key_mask: Any) -> Array:
    """``(..., 1, Tq, Tk)`` bools from per-token validity ``(..., Tq)`` and ``(..., Tk)``.

    Entry ``[..., 0, i, j]`` is ``query_mask[..., i] and key_mask[..., j]``.
    """
    query_mask, key_mask = jnp.asarray(query_mask, bool), jnp.asarray(key_mask, bool)
    return query_mask[..., None, :, None] & key_mask[..., None, None, :]


def combine_masks(*masks: Any) -> Array | None:
    """Logical *and* of the masks that are not ``None`` (right-aligned broadcasting).

    Returns ``None`` when every mask is ``None``. Masks must be booleans: casting a float
    *additive* mask (0 = attend, -inf = not) to bool would invert it, so that is an error.
    """
    present = [jnp.asarray(m) for m in masks if m is not None]
    for m in present:
        if m.dtype != jnp.bool_:
            raise ShapeError(
                f"combine_masks: masks must be booleans (True = attend), given dtype {m.dtype}; "
                f"an additive float mask (0 = attend, -inf = not) converts with `mask == 0`"
            )
    if not present:
        return None
    rank = max(m.ndim for m in present)
    out = present[0].reshape((1,) * (rank - present[0].ndim) + present[0].shape)
    for m in present[1:]:
        out = out & m.reshape((1,) * (rank - m.ndim) + m.shape)
    return out


def masked_mean_over_time(h: Array, lengths: Any) -> Array:
    """Mean of ``h: (B, T, F)`` over its first ``lengths[b]`` steps (all ``T`` if None).

    Zero-length sequences give zeros. Lengths must lie in ``[0, T]`` (value-checked).
    """
    if lengths is None:
        return jnp.mean(h, axis=-2)
    valid = _sequence_mask("masked_mean_over_time", lengths, h.shape[-2]).astype(h.dtype)
    total = jnp.sum(h * valid[..., None], axis=-2)
    count = jnp.maximum(jnp.sum(valid, axis=-1), 1.0)
    return total / count[..., None]

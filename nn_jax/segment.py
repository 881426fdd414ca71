"""Masked segment reductions: sum, mean, max and softmax of rows grouped by an integer id.

These are ``jax.ops.segment_sum`` / ``segment_max`` with the two things graph code needs added:

* a ``mask`` (``(M,)`` booleans): masked rows are left out entirely (their values, even NaN or
  inf, never reach the result or its gradient);
* empty segments (no unmasked row) give ``0`` for every reduction - not ``-inf`` (max) or NaN
  (mean, softmax).

Every function takes ``data`` of shape ``(M, ...)``, ``segment_ids`` of shape ``(M,)`` and a
static ``num_segments`` (a Python int, so shapes are known under ``jax.jit``). The ids of the
unmasked rows must lie in ``[0, num_segments)``: ``jax.ops.segment_sum`` would drop the others
silently, so here they are a :class:`~nn_jax.errors.ValueRangeError` naming the function, the
range and the ids given - at once for concrete ids, under ``jax.jit`` in checked mode
(:func:`nn_jax.checked`; an unchecked jitted call still drops them). Masked rows' ids are not
checked: padding may point anywhere.

>>> import jax.numpy as jnp
>>> data = jnp.array([1.0, 2.0, 3.0, 100.0])
>>> ids = jnp.array([0, 0, 2, 2])
>>> mask = jnp.array([True, True, True, False])
>>> segment_mean(data, ids, 3, mask=mask)
Array([1.5, 0. , 3. ], dtype=float32)
>>> segment_softmax(data, ids, 3, mask=mask)
Array([0.26894143, 0.7310586 , 1.        , 0.        ], dtype=float32)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from nn_jax.checks import check_in_range
from nn_jax.errors import ShapeError

__all__ = ["segment_count", "segment_max", "segment_mean", "segment_softmax", "segment_sum"]


def _prepare(
    fn: str, data: ArrayLike, segment_ids: ArrayLike, num_segments: int, mask: ArrayLike | None
) -> tuple[jax.Array, jax.Array, jax.Array | None]:
    """Check shapes and the ids of the unmasked rows; return ``data``, ids with masked rows sent
    out of range, and the mask."""
    data, segment_ids = jnp.asarray(data), jnp.asarray(segment_ids)
    if not isinstance(num_segments, int) or num_segments < 0:
        raise ShapeError(
            f"{fn}: num_segments must be a non-negative Python int (static under jit), "
            f"given {num_segments!r}"
        )
    if data.ndim < 1:
        raise ShapeError(f"{fn}: data must have a leading segment axis (M, ...), given a scalar")
    expected = (data.shape[0],)
    if segment_ids.shape != expected or not jnp.issubdtype(segment_ids.dtype, jnp.integer):
        raise ShapeError(
            f"{fn}: segment_ids must be integers of shape {expected} (one per data row), given "
            f"shape {segment_ids.shape} and dtype {segment_ids.dtype}"
        )
    if mask is not None:
        mask = jnp.asarray(mask)
        if mask.shape != expected or mask.dtype != jnp.bool_:
            raise ShapeError(
                f"{fn}: mask must be booleans of shape {expected}, given shape {mask.shape} and "
                f"dtype {mask.dtype}"
            )
    what = "segment_ids" if mask is None else "segment_ids of the unmasked rows"
    check_in_range(fn, what, segment_ids, 0, num_segments, mask=mask)
    if mask is None:
        return data, segment_ids, None
    # Out-of-range ids are dropped by the scatter inside jax.ops.segment_*.
    return data, jnp.where(mask, segment_ids, num_segments), mask


def _rows(mask: jax.Array, like: jax.Array) -> jax.Array:
    """``mask`` of shape ``(M,)`` reshaped to broadcast against ``like`` of shape ``(M, ...)``."""
    return mask.reshape(mask.shape + (1,) * (like.ndim - 1))


def segment_count(
    segment_ids: ArrayLike, num_segments: int, *, mask: ArrayLike | None = None
) -> jax.Array:
    """Number of (unmasked) rows in each segment, as int32 of shape ``(num_segments,)``."""
    ids = jnp.asarray(segment_ids)
    _, ids, _ = _prepare("segment_count", ids, ids, num_segments, mask)
    return jax.ops.segment_sum(jnp.ones(ids.shape, jnp.int32), ids, num_segments)


def segment_sum(
    data: ArrayLike, segment_ids: ArrayLike, num_segments: int, *, mask: ArrayLike | None = None
) -> jax.Array:
    """``out[s] = sum of data[i] over unmasked i with segment_ids[i] == s`` (0 when empty).

    Args:
        data: ``(M, ...)``.
        segment_ids: ``(M,)`` integers in ``[0, S)`` (those of unmasked rows are value-checked).
        num_segments: ``S``, a Python int.
        mask: optional ``(M,)`` booleans; ``False`` rows are left out.

    Returns:
        ``(S, ...)``.

    Builds on: ``jax.ops.segment_sum``.
    """
    data, ids, _ = _prepare("segment_sum", data, segment_ids, num_segments, mask)
    return jax.ops.segment_sum(data, ids, num_segments)


def segment_mean(
    data: ArrayLike, segment_ids: ArrayLike, num_segments: int, *, mask: ArrayLike | None = None
) -> jax.Array:
    """Mean of the unmasked rows of each segment; an empty segment gives 0 (not NaN).

    Args and returns as :func:`segment_sum`.

    Builds on: ``jax.ops.segment_sum`` (sum and count).
    """
    data, ids, _ = _prepare("segment_mean", data, segment_ids, num_segments, mask)
    total = jax.ops.segment_sum(data, ids, num_segments)
    count = jax.ops.segment_sum(jnp.ones(ids.shape, total.dtype), ids, num_segments)
    return total / _rows(jnp.maximum(count, 1), total)


def segment_max(
    data: ArrayLike, segment_ids: ArrayLike, num_segments: int, *, mask: ArrayLike | None = None
) -> jax.Array:
    """Maximum of the unmasked rows of each segment; an empty segment gives 0 (not ``-inf``).

    Args and returns as :func:`segment_sum`. The gradient is that of ``jax.ops.segment_max``
    (it reaches the maximal rows).

    Builds on: ``jax.ops.segment_max``.
    """
    data, ids, _ = _prepare("segment_max", data, segment_ids, num_segments, mask)
    return _max(data, ids, num_segments)


def _max(data: jax.Array, ids: jax.Array, num_segments: int) -> jax.Array:
    """:func:`segment_max` of prepared ids (out of range = masked: dropped, not checked)."""
    out = jax.ops.segment_max(data, ids, num_segments)
    count = jax.ops.segment_sum(jnp.ones(ids.shape, jnp.int32), ids, num_segments)
    return jnp.where(_rows(count > 0, out), out, jnp.zeros_like(out))


def segment_softmax(
    logits: ArrayLike, segment_ids: ArrayLike, num_segments: int, *, mask: ArrayLike | None = None
) -> jax.Array:
    """Softmax over the rows of each segment, independently per trailing index.

    ``out[i] = exp(z[i] - m[s]) / sum_{j in s} exp(z[j] - m[s])`` with ``s = segment_ids[i]`` and
    ``m[s]`` the segment's maximum (so large logits do not overflow). Masked rows get 0 and take
    no part in the normalization (as would rows with an out-of-range id in an unchecked jitted
    call; otherwise those are an error); over the other rows each segment's outputs sum to 1.

    Args:
        logits: ``(M, ...)``, e.g. ``(E, heads)`` attention logits per edge.
        segment_ids: ``(M,)`` integers in ``[0, S)``, e.g. each edge's receiver.
        num_segments: ``S``, a Python int.
        mask: optional ``(M,)`` booleans.

    Returns:
        ``(M, ...)``, the same shape as ``logits``.

    Builds on: ``jax.ops.segment_max`` and ``jax.ops.segment_sum``.
    """
    logits, ids, _ = _prepare("segment_softmax", logits, segment_ids, num_segments, mask)
    # Masked rows were given id num_segments (and unchecked out-of-range ids are out of range).
    keep = _rows((ids >= 0) & (ids < num_segments), logits)
    # Replace masked logits before exp, so a NaN/inf there cannot leak into the gradient.
    logits = jnp.where(keep, logits, jnp.zeros_like(logits))
    # The shift cancels in the ratio: no gradient through it.
    shift = jax.lax.stop_gradient(_max(logits, ids, num_segments))
    exp = jnp.where(keep, jnp.exp(logits - shift[ids]), jnp.zeros_like(logits))
    total = jax.ops.segment_sum(exp, ids, num_segments)[ids]
    return exp / jnp.where(total > 0, total, jnp.ones_like(total))

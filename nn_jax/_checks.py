"""Input checks shared by :mod:`nn_jax.losses` and :mod:`nn_jax.metrics`, and their reduction.

A private module made for sharing: shape checks, label checks (value checks through
:func:`nn_jax.checks.check_in_range`) and the masked reduction of losses and metrics. Its names
are not part of the public API (nothing re-exports them) and may change without notice. The
reduction rule is documented for users in the :mod:`nn_jax.losses` module docstring.
"""

from __future__ import annotations

import typing
from typing import Literal

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from nn_jax.checks import check_in_range
from nn_jax.errors import ConfigError, ShapeError

__all__ = [
    "Reduction",
    "check_class_axis",
    "check_float",
    "check_mask",
    "check_same_shape",
    "masked_reduce",
    "scores_and_int_labels",
]

Reduction = Literal["mean", "sum", "none"]
_REDUCTIONS: tuple[str, ...] = typing.get_args(Reduction)


def check_mask(fn_name: str, mask: ArrayLike, shape: tuple[int, ...]) -> jax.Array:
    """``mask`` as an array, or a ShapeError unless it has the rank of ``shape`` (the
    per-element loss shape) and each axis equal to ``shape``'s or 1 (no rank promotion)."""
    mask = jnp.asarray(mask)
    if mask.ndim != len(shape) or any(
        m not in (1, n) for m, n in zip(mask.shape, shape, strict=True)
    ):
        raise ShapeError(
            f"{fn_name}: mask shape {mask.shape} does not fit the per-element loss shape "
            f"{shape}; pass a mask of shape {shape} (axes of size 1 broadcast)"
        )
    return mask


def masked_reduce(
    values: jax.Array, reduction: str, mask: ArrayLike | None, fn_name: str
) -> jax.Array:
    """Reduce per-element ``values`` (masked/weighted) by the rule of :mod:`nn_jax.losses`.

    Float weights must be ``>= 0`` (a value check, see :func:`check_range`).
    """
    if reduction not in _REDUCTIONS:
        raise ConfigError(
            f"{fn_name}: reduction must be one of {', '.join(map(repr, _REDUCTIONS))}; "
            f"got {reduction!r}"
        )
    if mask is None:
        if reduction == "none":
            return values
        return jnp.sum(values) if reduction == "sum" else jnp.mean(values)
    mask = check_mask(fn_name, mask, values.shape)
    if mask.dtype != jnp.bool_:
        check_in_range(fn_name, "mask weights", mask, 0, jnp.inf, closed=True)
    weights = jnp.broadcast_to(mask, values.shape).astype(values.dtype)
    weighted = jnp.where(weights != 0, values, jnp.zeros_like(values)) * weights
    if reduction == "none":
        return weighted
    total = jnp.sum(weighted)
    if reduction == "sum":
        return total
    count = jnp.sum(weights)
    return total / jnp.where(count > 0, count, jnp.ones_like(count))


def check_same_shape(fn_name: str, a_name: str, a: jax.Array, b_name: str, b: jax.Array) -> None:
    """Raise a ShapeError naming ``fn_name`` and both shapes unless ``a`` and ``b`` agree."""
    if a.shape != b.shape:
        raise ShapeError(
            f"{fn_name}: {a_name} shape {a.shape} and {b_name} shape {b.shape} differ; "
            "nn_jax does not broadcast these inputs, reshape them to the same shape"
        )


def check_float(fn_name: str, name: str, x: jax.Array) -> None:
    """Raise a ShapeError unless ``x`` has a floating-point dtype."""
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ShapeError(f"{fn_name}: {name} must be a floating-point array; got dtype {x.dtype}")


def check_class_axis(fn_name: str, name: str, scores: jax.Array) -> None:
    """Raise a ShapeError unless ``scores`` has a last (class) axis."""
    if scores.ndim < 1:
        raise ShapeError(
            f"{fn_name}: {name} must have a class axis (shape [..., num_classes]); "
            f"got shape {scores.shape}"
        )


def scores_and_int_labels(
    fn_name: str,
    name: str,
    scores: ArrayLike,
    labels: ArrayLike,
    *,
    mask: ArrayLike | None = None,
    num_classes: int | None = None,
) -> tuple[jax.Array, jax.Array]:
    """``scores`` of shape ``[..., C]`` and integer ``labels`` of shape ``[...]``, as arrays.

    The labels are value-checked to lie in ``[0, num_classes)`` (default ``C``), those where
    ``mask`` (shape-checked against ``[...]``) is nonzero only: a label past the class count
    would give a meaningless loss or metric silently.
    """
    scores, labels = jnp.asarray(scores), jnp.asarray(labels)
    check_class_axis(fn_name, name, scores)
    if not jnp.issubdtype(labels.dtype, jnp.integer) or labels.shape != scores.shape[:-1]:
        raise ShapeError(
            f"{fn_name}: labels must be integer class indices of shape {name}.shape[:-1] = "
            f"{scores.shape[:-1]} ({name} shape {scores.shape}); got labels of shape "
            f"{labels.shape} and dtype {labels.dtype}"
        )
    if mask is not None:
        mask = check_mask(fn_name, mask, labels.shape)
    classes = scores.shape[-1] if num_classes is None else num_classes
    what = f"labels (class indices for {name} of shape {scores.shape})"
    check_in_range(fn_name, what, labels, 0, classes, mask=mask)
    return scores, labels

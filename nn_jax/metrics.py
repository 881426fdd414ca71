"""Classification metrics: fractions of correct predictions, optionally masked.

Each metric computes a per-example 0/1 correctness and averages it with the same masked mean as
the losses (``sum(mask * correct) / sum(mask)``; a fully masked batch gives 0, not NaN).

Ties are resolved deterministically, toward the **lowest class index** (the rule of
``jnp.argmax``): with logits ``[1, 1, 0]`` the prediction is class 0, so label 1 counts as wrong
for ``accuracy`` and as rank 2 for ``top_k_accuracy``. Thresholds are strict: a score exactly
equal to the threshold is class 0.

Labels and targets are value-checked, as in :mod:`nn_jax.losses`: an integer label outside
``[0, C)`` (``[0, 2)`` for a single score column) or a binary target outside ``[0, 1]``, where the
mask is nonzero, is a :class:`~nn_jax.errors.ValueRangeError` - at once for concrete inputs,
under ``jax.jit`` in checked mode (:func:`nn_jax.checked`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from nn_jax._checks import (
    check_mask,
    check_same_shape,
    masked_reduce,
    scores_and_int_labels,
)
from nn_jax.checks import check_in_range
from nn_jax.errors import ConfigError

__all__ = ["accuracy", "binary_accuracy", "top_k_accuracy"]


def _fraction(correct: jax.Array, mask: ArrayLike | None, fn_name: str) -> jax.Array:
    """The (masked) mean of a boolean ``correct``, in the default float dtype."""
    return masked_reduce(correct.astype(jnp.result_type(float)), "mean", mask, fn_name)


def accuracy(
    logits_or_probs: ArrayLike,
    labels: ArrayLike,
    *,
    threshold: float = 0.5,
    mask: ArrayLike | None = None,
) -> jax.Array:
    """Fraction of examples whose predicted class equals the integer label.

    With ``C > 1`` columns the prediction is ``argmax`` over the last axis (ties: lowest index).
    With a single column (``C == 1``) the column is read as a class-1 score: the prediction is
    ``score > threshold`` (default 0.5, for sigmoid probabilities; pass ``threshold=0.0`` for
    logits).

    Args:
      logits_or_probs: scores of shape ``[..., C]``.
      labels: integer class indices of shape ``[...]``, in ``[0, C)`` (in ``[0, 2)`` when
        ``C == 1``); others are a ``ValueRangeError`` (eagerly, or in checked mode).
      threshold: used only when ``C == 1``.
      mask: optional mask/weights of shape ``[...]``.

    Returns:
      A scalar in ``[0, 1]``.

    Builds on: ``jnp.argmax``.
    """
    name = "accuracy"
    scores = jnp.asarray(logits_or_probs)
    binary = scores.ndim >= 1 and scores.shape[-1] == 1
    scores, labels = scores_and_int_labels(
        name, "logits_or_probs", scores, labels, mask=mask, num_classes=2 if binary else None
    )
    if binary:
        predicted = (scores[..., 0] > threshold).astype(labels.dtype)
    else:
        predicted = jnp.argmax(scores, axis=-1)
    return _fraction(predicted == labels, mask, name)


def top_k_accuracy(
    logits: ArrayLike,
    labels: ArrayLike,
    k: int,
    *,
    mask: ArrayLike | None = None,
) -> jax.Array:
    """Fraction of examples whose label is among the ``k`` highest-scoring classes.

    The label's rank is the number of classes scoring strictly higher, plus those scoring the
    same with a lower index (ties: lowest index first, so ``k=1`` agrees with :func:`accuracy`);
    the example is correct when that rank is ``< k``.

    Args:
      logits: scores of shape ``[..., C]``.
      labels: integer class indices in ``[0, C)`` of shape ``[...]`` (others are a
        ``ValueRangeError``, eagerly or in checked mode).
      k: a positive Python int, at most ``C`` (``k == C`` makes every example correct; a
        larger ``k`` is a ``ConfigError``).
      mask: optional mask/weights of shape ``[...]``.

    Returns:
      A scalar in ``[0, 1]``.

    Builds on: ``jnp.take_along_axis`` (a rank count, no sort).
    """
    name = "top_k_accuracy"
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"{name}: k must be a positive int; got {k!r}")
    logits, labels = scores_and_int_labels(name, "logits", logits, labels, mask=mask)
    classes = logits.shape[-1]
    if k > classes:
        raise ConfigError(
            f"{name}: k={k} is more than the {classes} classes of logits shape {logits.shape}; "
            f"every example would count as correct. Use k <= {classes}"
        )
    label_score = jnp.take_along_axis(logits, labels[..., None], axis=-1)
    index = jax.lax.broadcasted_iota(labels.dtype, logits.shape, logits.ndim - 1)
    ahead = (logits > label_score) | ((logits == label_score) & (index < labels[..., None]))
    return _fraction(jnp.sum(ahead, axis=-1) < k, mask, name)


def binary_accuracy(
    probs_or_logits: ArrayLike,
    targets: ArrayLike,
    *,
    threshold: float = 0.5,
    mask: ArrayLike | None = None,
) -> jax.Array:
    """Fraction of elements where ``score > threshold`` agrees with the 0/1 target.

    Args:
      probs_or_logits: scores of any shape ``[...]``; use ``threshold=0.5`` for probabilities
        (the default) and ``threshold=0.0`` for logits.
      targets: 0/1 (bool, int or float) targets in ``[0, 1]``, the same shape; a float target
        counts as 1 when it is ``> 0.5``. Values outside ``[0, 1]`` (where ``mask`` is
        nonzero) are a ``ValueRangeError``, eagerly or in checked mode.
      threshold: the decision threshold (strict: ``score == threshold`` predicts 0).
      mask: optional mask/weights of the same shape.

    Returns:
      A scalar in ``[0, 1]``.

    Builds on: plain ``jnp`` comparisons.
    """
    name = "binary_accuracy"
    scores, targets = jnp.asarray(probs_or_logits), jnp.asarray(targets)
    check_same_shape(name, "probs_or_logits", scores, "targets", targets)
    if targets.dtype != jnp.bool_:
        checked_mask = None if mask is None else check_mask(name, mask, targets.shape)
        check_in_range(name, "targets", targets, 0, 1, closed=True, mask=checked_mask)
    return _fraction((scores > threshold) == (targets > 0.5), mask, name)

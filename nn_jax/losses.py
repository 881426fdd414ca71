"""Loss functions: ``optax.losses`` with reductions, masks and shape checks added.

Each loss computes a per-element loss with the optax function it names (``Builds on:``), then
reduces it with one shared rule:

- ``reduction="mean"`` (default): ``sum(mask * loss) / sum(mask)``; without a mask, the plain mean.
  A fully masked batch gives ``0``, not NaN.
- ``reduction="sum"``: ``sum(mask * loss)``.
- ``reduction="none"``: the per-element loss (masked entries set to 0).

``mask`` is ``None``, a boolean/0-1 array, or non-negative float weights (a weighted mean). It has
the rank of the per-element loss and each axis equal to the loss's or 1 (no rank promotion).
Masked entries are excluded with ``jnp.where``, so a NaN/inf loss at a masked position does not
leak into the value (its gradient may still, if the loss itself is non-finite there).

Predictions and targets must have the same shape: nn_jax never broadcasts them into a wrong
answer, a mismatch raises :class:`~nn_jax.errors.ShapeError` naming the loss and both shapes.
``reduction`` and ``label_smoothing`` are static Python values (safe to close over in ``jax.jit``).
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
import optax
from jax.typing import ArrayLike

from nn_jax.errors import ConfigError, ShapeError

Reduction = Literal["mean", "sum", "none"]
_REDUCTIONS = ("mean", "sum", "none")

__all__ = [
    "Reduction",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "huber",
    "kl_divergence",
    "mae",
    "mean_squared_error",
    "mse",
    "softmax_cross_entropy",
    "softmax_cross_entropy_with_integer_labels",
]


def _reduce(loss: jax.Array, reduction: str, mask: ArrayLike | None, fn_name: str) -> jax.Array:
    """Reduce a per-element ``loss`` (masked/weighted) as described in the module docstring."""
    if reduction not in _REDUCTIONS:
        raise ConfigError(
            f"{fn_name}: reduction must be one of {', '.join(map(repr, _REDUCTIONS))}; "
            f"got {reduction!r}"
        )
    if mask is None:
        if reduction == "none":
            return loss
        return jnp.sum(loss) if reduction == "sum" else jnp.mean(loss)
    mask = jnp.asarray(mask)
    if mask.ndim != loss.ndim or any(
        m not in (1, n) for m, n in zip(mask.shape, loss.shape, strict=True)
    ):
        raise ShapeError(
            f"{fn_name}: mask shape {mask.shape} does not fit the per-element loss shape "
            f"{loss.shape}; pass a mask of shape {loss.shape} (axes of size 1 broadcast)"
        )
    weights = jnp.broadcast_to(mask, loss.shape).astype(loss.dtype)
    weighted = jnp.where(weights != 0, loss, jnp.zeros_like(loss)) * weights
    if reduction == "none":
        return weighted
    total = jnp.sum(weighted)
    if reduction == "sum":
        return total
    count = jnp.sum(weights)
    return total / jnp.where(count > 0, count, jnp.ones_like(count))


def _check_same_shape(fn_name: str, a_name: str, a: jax.Array, b_name: str, b: jax.Array) -> None:
    if a.shape != b.shape:
        raise ShapeError(
            f"{fn_name}: {a_name} shape {a.shape} and {b_name} shape {b.shape} differ; "
            "nn_jax does not broadcast loss inputs, reshape them to the same shape"
        )


def _check_float(fn_name: str, name: str, x: jax.Array) -> None:
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ShapeError(f"{fn_name}: {name} must be a floating-point array; got dtype {x.dtype}")


def _check_class_axis(fn_name: str, logits: jax.Array) -> None:
    if logits.ndim < 1:
        raise ShapeError(
            f"{fn_name}: logits must have a class axis (shape [..., num_classes]); "
            f"got shape {logits.shape}"
        )


def _check_label_smoothing(fn_name: str, label_smoothing: float) -> float:
    alpha = float(label_smoothing)
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"{fn_name}: label_smoothing must be in [0, 1]; got {label_smoothing}")
    return alpha


def binary_cross_entropy(
    probs: ArrayLike,
    targets: ArrayLike,
    *,
    reduction: Reduction = "mean",
    mask: ArrayLike | None = None,
) -> jax.Array:
    """Binary cross-entropy of probabilities (what PyTorch's ``nn.BCELoss`` computes).

    ``loss = -(t * max(log p, -100) + (1 - t) * max(log(1 - p), -100))``

    Like PyTorch, each log is clamped to ``>= -100`` so ``p`` exactly 0 or 1 gives a finite loss
    (at most 100 per element). The clamp is written so that its gradient is finite too: where a
    clamp is active (``p`` is 0, 1, or within ``e^-100`` of them) that term's gradient is 0.
    ``log(1 - p)`` is computed as ``log1p(-p)``. Prefer
    :func:`binary_cross_entropy_with_logits` when you have logits: it is exact for any logit.

    Args:
      probs: predicted probabilities in ``[0, 1]``, any shape ``[...]``.
      targets: target probabilities in ``[0, 1]`` (hard 0/1 or soft), the same shape as ``probs``.
      reduction: ``"mean"``, ``"sum"`` or ``"none"``.
      mask: optional mask/weights of the shape of ``probs``.

    Returns:
      A scalar, or the per-element loss of shape ``[...]`` for ``reduction="none"``.

    Builds on: nothing in optax (optax has only the logits form); written here.
    """
    name = "binary_cross_entropy"
    probs, targets = jnp.asarray(probs), jnp.asarray(targets)
    _check_float(name, "probs", probs)
    _check_same_shape(name, "probs", probs, "targets", targets)
    targets = targets.astype(probs.dtype)
    floor = jnp.asarray(-100.0, probs.dtype)
    # Double `where`: the log is only ever evaluated on values > 0, so no inf/NaN in the gradient.
    pos, neg = probs > 0, probs < 1
    log_p = jnp.where(pos, jnp.log(jnp.where(pos, probs, jnp.ones_like(probs))), floor)
    log_1mp = jnp.where(neg, jnp.log1p(-jnp.where(neg, probs, jnp.zeros_like(probs))), floor)
    loss = -(targets * jnp.maximum(log_p, floor) + (1 - targets) * jnp.maximum(log_1mp, floor))
    return _reduce(loss, reduction, mask, name)


def binary_cross_entropy_with_logits(
    logits: ArrayLike,
    targets: ArrayLike,
    *,
    reduction: Reduction = "mean",
    mask: ArrayLike | None = None,
) -> jax.Array:
    """Binary cross-entropy of ``sigmoid(logits)``, computed stably from the logits.

    ``loss = -(t * log_sigmoid(z) + (1 - t) * log_sigmoid(-z))``, finite for any finite ``z``.

    Args:
      logits: real-valued scores, any shape ``[...]``.
      targets: target probabilities in ``[0, 1]``, the same shape as ``logits``.
      reduction: ``"mean"``, ``"sum"`` or ``"none"``.
      mask: optional mask/weights of the shape of ``logits``.

    Returns:
      A scalar, or the per-element loss of shape ``[...]`` for ``reduction="none"``.

    Builds on: ``optax.losses.sigmoid_binary_cross_entropy``.
    """
    name = "binary_cross_entropy_with_logits"
    logits, targets = jnp.asarray(logits), jnp.asarray(targets)
    _check_float(name, "logits", logits)
    _check_same_shape(name, "logits", logits, "targets", targets)
    loss = optax.losses.sigmoid_binary_cross_entropy(logits, targets)
    return _reduce(loss, reduction, mask, name)


def softmax_cross_entropy(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    label_smoothing: float = 0.0,
    reduction: Reduction = "mean",
    mask: ArrayLike | None = None,
) -> jax.Array:
    """Cross-entropy between ``softmax(logits)`` and target distributions (e.g. one-hot).

    ``loss = -sum_c y_c * log_softmax(z)_c`` with ``y = (1 - a) * labels + a / C`` when
    ``label_smoothing = a`` (``C`` classes).

    Args:
      logits: scores of shape ``[..., C]``.
      labels: target probabilities of shape ``[..., C]`` (rows summing to 1).
      label_smoothing: a Python float ``a`` in ``[0, 1]``.
      reduction: ``"mean"``, ``"sum"`` or ``"none"``.
      mask: optional mask/weights of shape ``[...]`` (one entry per example).

    Returns:
      A scalar, or the per-example loss of shape ``[...]`` for ``reduction="none"``.

    Builds on: ``optax.losses.softmax_cross_entropy`` and ``optax.losses.smooth_labels``.
    """
    name = "softmax_cross_entropy"
    logits, labels = jnp.asarray(logits), jnp.asarray(labels)
    _check_float(name, "logits", logits)
    _check_class_axis(name, logits)
    _check_same_shape(name, "logits", logits, "labels", labels)
    alpha = _check_label_smoothing(name, label_smoothing)
    labels = labels.astype(logits.dtype)
    if alpha:
        labels = optax.losses.smooth_labels(labels, alpha)
    loss = optax.losses.softmax_cross_entropy(logits, labels)
    return _reduce(loss, reduction, mask, name)


def softmax_cross_entropy_with_integer_labels(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    label_smoothing: float = 0.0,
    reduction: Reduction = "mean",
    mask: ArrayLike | None = None,
) -> jax.Array:
    """Cross-entropy between ``softmax(logits)`` and integer class labels.

    ``loss = logsumexp(z) - z[label]``; with ``label_smoothing = a`` the target is
    ``(1 - a) * one_hot(label) + a / C`` instead (see :func:`softmax_cross_entropy`).

    Args:
      logits: scores of shape ``[..., C]``.
      labels: integer class indices in ``[0, C)`` of shape ``[...]`` (not checked under ``jit``;
        out-of-range indices give meaningless values).
      label_smoothing: a Python float ``a`` in ``[0, 1]``.
      reduction: ``"mean"``, ``"sum"`` or ``"none"``.
      mask: optional mask/weights of shape ``[...]``.

    Returns:
      A scalar, or the per-example loss of shape ``[...]`` for ``reduction="none"``.

    Builds on: ``optax.losses.softmax_cross_entropy_with_integer_labels``; with label smoothing,
    ``jax.nn.one_hot`` + ``optax.losses.smooth_labels`` + ``optax.losses.softmax_cross_entropy``.
    """
    name = "softmax_cross_entropy_with_integer_labels"
    logits, labels = jnp.asarray(logits), jnp.asarray(labels)
    _check_float(name, "logits", logits)
    _check_class_axis(name, logits)
    _check_int_labels(name, logits, labels)
    alpha = _check_label_smoothing(name, label_smoothing)
    if alpha:
        one_hot = jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)
        smoothed = optax.losses.smooth_labels(one_hot, alpha)
        loss = optax.losses.softmax_cross_entropy(logits, smoothed)
    else:
        loss = optax.losses.softmax_cross_entropy_with_integer_labels(logits, labels)
    return _reduce(loss, reduction, mask, name)


def _check_int_labels(fn_name: str, logits: jax.Array, labels: jax.Array) -> None:
    """Integer labels of shape ``logits.shape[:-1]`` (shared with :mod:`nn_jax.metrics`)."""
    if not jnp.issubdtype(labels.dtype, jnp.integer) or labels.shape != logits.shape[:-1]:
        raise ShapeError(
            f"{fn_name}: labels must be integer class indices of shape logits.shape[:-1] = "
            f"{logits.shape[:-1]} (logits shape {logits.shape}); got labels of shape "
            f"{labels.shape} and dtype {labels.dtype}"
        )


def mse(
    predictions: ArrayLike,
    targets: ArrayLike,
    *,
    reduction: Reduction = "mean",
    mask: ArrayLike | None = None,
) -> jax.Array:
    """Mean squared error: ``loss = (predictions - targets)^2`` per element (no factor 1/2).

    Args:
      predictions: any shape ``[...]``.
      targets: the same shape as ``predictions``.
      reduction: ``"mean"``, ``"sum"`` or ``"none"``.
      mask: optional mask/weights of the shape of ``predictions``.

    Returns:
      A scalar, or the per-element loss of shape ``[...]`` for ``reduction="none"``.

    Builds on: ``optax.losses.squared_error`` (``optax.losses.l2_loss`` is half of it).
    """
    name = "mse"
    predictions, targets = jnp.asarray(predictions), jnp.asarray(targets)
    _check_float(name, "predictions", predictions)
    _check_same_shape(name, "predictions", predictions, "targets", targets)
    loss = optax.losses.squared_error(predictions, targets.astype(predictions.dtype))
    return _reduce(loss, reduction, mask, name)


mean_squared_error = mse


def mae(
    predictions: ArrayLike,
    targets: ArrayLike,
    *,
    reduction: Reduction = "mean",
    mask: ArrayLike | None = None,
) -> jax.Array:
    """Mean absolute error: ``loss = |predictions - targets|`` per element.

    Args:
      predictions: any shape ``[...]``.
      targets: the same shape as ``predictions``.
      reduction: ``"mean"``, ``"sum"`` or ``"none"``.
      mask: optional mask/weights of the shape of ``predictions``.

    Returns:
      A scalar, or the per-element loss of shape ``[...]`` for ``reduction="none"``.

    Builds on: nothing in optax (optax has no absolute-error loss); ``jnp.abs``.
    """
    name = "mae"
    predictions, targets = jnp.asarray(predictions), jnp.asarray(targets)
    _check_float(name, "predictions", predictions)
    _check_same_shape(name, "predictions", predictions, "targets", targets)
    loss = jnp.abs(predictions - targets.astype(predictions.dtype))
    return _reduce(loss, reduction, mask, name)


def huber(
    predictions: ArrayLike,
    targets: ArrayLike,
    *,
    delta: float = 1.0,
    reduction: Reduction = "mean",
    mask: ArrayLike | None = None,
) -> jax.Array:
    """Huber loss: quadratic for small errors, linear for large ones.

    With ``e = |predictions - targets|``: ``loss = e^2 / 2`` if ``e <= delta`` else
    ``delta * (e - delta / 2)`` (PyTorch's ``HuberLoss``; ``SmoothL1Loss`` is this / ``delta``).

    Args:
      predictions: any shape ``[...]``.
      targets: the same shape as ``predictions``.
      delta: the positive error at which the loss turns from quadratic to linear.
      reduction: ``"mean"``, ``"sum"`` or ``"none"``.
      mask: optional mask/weights of the shape of ``predictions``.

    Returns:
      A scalar, or the per-element loss of shape ``[...]`` for ``reduction="none"``.

    Builds on: ``optax.losses.huber_loss``.
    """
    name = "huber"
    predictions, targets = jnp.asarray(predictions), jnp.asarray(targets)
    _check_float(name, "predictions", predictions)
    _check_same_shape(name, "predictions", predictions, "targets", targets)
    loss = optax.losses.huber_loss(predictions, targets.astype(predictions.dtype), delta=delta)
    return _reduce(loss, reduction, mask, name)


def kl_divergence(
    log_predictions: ArrayLike,
    targets: ArrayLike,
    *,
    reduction: Reduction = "mean",
    mask: ArrayLike | None = None,
) -> jax.Array:
    """KL divergence ``KL(targets || predictions)`` of the target from the predicted distribution.

    ``loss = sum_c t_c * (log t_c - log_predictions_c)``, with ``0 * log 0 = 0``. The predictions
    come as **log-probabilities** (e.g. ``jax.nn.log_softmax(logits)``) and the targets as
    **probabilities**: the convention of ``optax.losses.kl_divergence`` and PyTorch's
    ``KLDivLoss``. ``reduction="mean"`` averages over distributions (PyTorch's ``"batchmean"``).

    Args:
      log_predictions: log-probabilities of shape ``[..., C]``.
      targets: probabilities of shape ``[..., C]``, each row summing to 1.
      reduction: ``"mean"``, ``"sum"`` or ``"none"``.
      mask: optional mask/weights of shape ``[...]`` (one entry per distribution).

    Returns:
      A scalar, or the per-distribution loss of shape ``[...]`` for ``reduction="none"``.

    Builds on: ``optax.losses.kl_divergence``.
    """
    name = "kl_divergence"
    log_predictions, targets = jnp.asarray(log_predictions), jnp.asarray(targets)
    _check_float(name, "log_predictions", log_predictions)
    _check_float(name, "targets", targets)
    _check_class_axis(name, log_predictions)
    _check_same_shape(name, "log_predictions", log_predictions, "targets", targets)
    loss = optax.losses.kl_divergence(log_predictions, targets)
    return _reduce(loss, reduction, mask, name)

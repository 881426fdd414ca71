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
Targets are cast to the predictions' floating dtype (0/1 integer targets are accepted), so the
loss has the predictions' dtype.

Wrong *values* are errors too (:class:`~nn_jax.errors.ValueRangeError`, naming the loss, the
allowed range and the values given): integer labels outside ``[0, C)``, probabilities or targets
outside ``[0, 1]``, positive log-probabilities, negative mask weights. Entries a mask leaves out
are not checked (padding may hold anything). The check runs at once on concrete inputs (outside
``jax.jit``) and, inside ``jit``, only in checked mode (:func:`nn_jax.checked`); the unchecked
compiled step is unchanged. See :mod:`nn_jax.checks`.
``reduction`` and ``label_smoothing`` are static Python values (safe to close over in ``jax.jit``);
``Reduction`` is the type of ``reduction``, ``Literal["mean", "sum", "none"]``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from jax.typing import ArrayLike

from nn_jax._checks import (
    Reduction,
    check_class_axis,
    check_float,
    check_mask,
    check_same_shape,
    masked_reduce,
    scores_and_int_labels,
)
from nn_jax.checks import check_in_range
from nn_jax.errors import ConfigError

__all__ = [
    "Reduction",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "huber",
    "kl_divergence",
    "mae",
    "mse",
    "softmax_cross_entropy",
    "softmax_cross_entropy_with_integer_labels",
]


def _float_pair(
    fn_name: str,
    a_name: str,
    a: ArrayLike,
    b_name: str,
    b: ArrayLike,
    *,
    b_float: bool = False,
) -> tuple[jax.Array, jax.Array]:
    """``a`` (floating) and ``b`` (of ``a``'s shape, cast to its dtype) as arrays.

    ``b_float`` also requires ``b`` to be floating (not just castable).
    """
    a, b = jnp.asarray(a), jnp.asarray(b)
    check_float(fn_name, a_name, a)
    if b_float:
        check_float(fn_name, b_name, b)
    check_same_shape(fn_name, a_name, a, b_name, b)
    return a, b.astype(a.dtype)


def _check_values(
    fn_name: str,
    what: str,
    x: jax.Array,
    low: float,
    high: float,
    mask: ArrayLike | None,
    *,
    per_row: bool = False,
) -> None:
    """Value check of ``x`` in ``[low, high]`` where ``mask`` is nonzero (all of ``x`` without
    a mask). ``mask`` has the per-element loss shape: ``x``'s, or ``x.shape[:-1]`` with
    ``per_row`` (one entry per distribution, spread over the class axis)."""
    if mask is not None:
        mask = check_mask(fn_name, mask, x.shape[:-1] if per_row else x.shape)
        if per_row:
            mask = mask[..., None]
    check_in_range(fn_name, what, x, low, high, closed=True, mask=mask)


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
      probs: predicted probabilities in ``[0, 1]``, any shape ``[...]`` (value-checked).
      targets: target probabilities in ``[0, 1]`` (hard 0/1 or soft), the same shape as ``probs``
        (value-checked).
      reduction: ``"mean"``, ``"sum"`` or ``"none"``.
      mask: optional mask/weights of the shape of ``probs``.

    Returns:
      A scalar, or the per-element loss of shape ``[...]`` for ``reduction="none"``.

    Builds on: nothing in optax (optax has only the logits form); written here.
    """
    name = "binary_cross_entropy"
    probs, targets = _float_pair(name, "probs", probs, "targets", targets)
    _check_values(name, "probs", probs, 0, 1, mask)
    _check_values(name, "targets", targets, 0, 1, mask)
    floor = jnp.asarray(-100.0, probs.dtype)
    # Double `where`: the log is only ever evaluated on values > 0, so no inf/NaN in the gradient.
    pos, neg = probs > 0, probs < 1
    log_p = jnp.where(pos, jnp.log(jnp.where(pos, probs, jnp.ones_like(probs))), floor)
    log_1mp = jnp.where(neg, jnp.log1p(-jnp.where(neg, probs, jnp.zeros_like(probs))), floor)
    loss = -(targets * jnp.maximum(log_p, floor) + (1 - targets) * jnp.maximum(log_1mp, floor))
    return masked_reduce(loss, reduction, mask, name)


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
      targets: target probabilities in ``[0, 1]``, the same shape as ``logits`` (value-checked).
      reduction: ``"mean"``, ``"sum"`` or ``"none"``.
      mask: optional mask/weights of the shape of ``logits``.

    Returns:
      A scalar, or the per-element loss of shape ``[...]`` for ``reduction="none"``.

    Builds on: ``optax.losses.sigmoid_binary_cross_entropy``.
    """
    name = "binary_cross_entropy_with_logits"
    logits, targets = _float_pair(name, "logits", logits, "targets", targets)
    _check_values(name, "targets", targets, 0, 1, mask)
    loss = optax.losses.sigmoid_binary_cross_entropy(logits, targets)
    return masked_reduce(loss, reduction, mask, name)


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
      labels: target probabilities of shape ``[..., C]`` (rows summing to 1; entries outside
        ``[0, 1]`` are a ``ValueRangeError``).
      label_smoothing: a Python float ``a`` in ``[0, 1]``.
      reduction: ``"mean"``, ``"sum"`` or ``"none"``.
      mask: optional mask/weights of shape ``[...]`` (one entry per example).

    Returns:
      A scalar, or the per-example loss of shape ``[...]`` for ``reduction="none"``.

    Builds on: ``optax.losses.softmax_cross_entropy`` and ``optax.losses.smooth_labels``.
    """
    name = "softmax_cross_entropy"
    logits, labels = _float_pair(name, "logits", logits, "labels", labels)
    check_class_axis(name, "logits", logits)
    alpha = _check_label_smoothing(name, label_smoothing)
    _check_values(name, "labels (target probabilities)", labels, 0, 1, mask, per_row=True)
    if alpha:
        labels = optax.losses.smooth_labels(labels, alpha)
    loss = optax.losses.softmax_cross_entropy(logits, labels)
    return masked_reduce(loss, reduction, mask, name)


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
      labels: integer class indices in ``[0, C)`` of shape ``[...]``; others (where ``mask`` is
        nonzero) are a ``ValueRangeError``, eagerly or in checked mode (an unchecked jitted
        call would give a meaningless loss for them).
      label_smoothing: a Python float ``a`` in ``[0, 1]``.
      reduction: ``"mean"``, ``"sum"`` or ``"none"``.
      mask: optional mask/weights of shape ``[...]``.

    Returns:
      A scalar, or the per-example loss of shape ``[...]`` for ``reduction="none"``.

    Builds on: ``optax.losses.softmax_cross_entropy_with_integer_labels``; with label smoothing,
    ``jax.nn.one_hot`` + ``optax.losses.smooth_labels`` + ``optax.losses.softmax_cross_entropy``.
    """
    name = "softmax_cross_entropy_with_integer_labels"
    logits, labels = scores_and_int_labels(name, "logits", logits, labels, mask=mask)
    check_float(name, "logits", logits)
    alpha = _check_label_smoothing(name, label_smoothing)
    if alpha:
        one_hot = jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)
        smoothed = optax.losses.smooth_labels(one_hot, alpha)
        loss = optax.losses.softmax_cross_entropy(logits, smoothed)
    else:
        loss = optax.losses.softmax_cross_entropy_with_integer_labels(logits, labels)
    return masked_reduce(loss, reduction, mask, name)


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
    predictions, targets = _float_pair(name, "predictions", predictions, "targets", targets)
    loss = optax.losses.squared_error(predictions, targets)
    return masked_reduce(loss, reduction, mask, name)


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
    predictions, targets = _float_pair(name, "predictions", predictions, "targets", targets)
    loss = jnp.abs(predictions - targets)
    return masked_reduce(loss, reduction, mask, name)


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
    if isinstance(delta, int | float) and not delta > 0:
        raise ConfigError(f"{name}: delta must be positive; got {delta!r}")
    predictions, targets = _float_pair(name, "predictions", predictions, "targets", targets)
    loss = optax.losses.huber_loss(predictions, targets, delta=delta)
    return masked_reduce(loss, reduction, mask, name)


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
      log_predictions: log-probabilities (``<= 0``) of shape ``[..., C]``.
      targets: probabilities (in ``[0, 1]``) of shape ``[..., C]``, each row summing to 1.
      reduction: ``"mean"``, ``"sum"`` or ``"none"``.
      mask: optional mask/weights of shape ``[...]`` (one entry per distribution).

    Returns:
      A scalar, or the per-distribution loss of shape ``[...]`` for ``reduction="none"``.

    Builds on: ``optax.losses.kl_divergence``.
    """
    name = "kl_divergence"
    log_predictions, targets = _float_pair(
        name, "log_predictions", log_predictions, "targets", targets, b_float=True
    )
    check_class_axis(name, "log_predictions", log_predictions)
    # Probabilities or logits passed as log-probabilities (a classic mix-up) are mostly > 0.
    what = "log_predictions (log-probabilities)"
    _check_values(name, what, log_predictions, -jnp.inf, 0, mask, per_row=True)
    _check_values(name, "targets (probabilities)", targets, 0, 1, mask, per_row=True)
    loss = optax.losses.kl_divergence(log_predictions, targets)
    return masked_reduce(loss, reduction, mask, name)

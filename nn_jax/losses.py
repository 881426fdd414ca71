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
Losses compute in at least float32: half-precision (bfloat16, float16) predictions are cast to
float32 first, so a mixed-precision model's loss and the gradient it sends back are float32
(float64 stays float64). Targets are cast to that dtype (0/1 integer targets are accepted), and
the loss has it.

Wrong *values* are errors too (:class:`~nn_jax.errors.ValueRangeError`, naming the loss, the
allowed range and the values given): integer labels outside ``[0, C)``, probabilities or targets
outside ``[0, 1]``, positive log-probabilities, negative mask weights. Entries a mask leaves out
are not checked (padding may hold anything). The check runs at once on concrete inputs (outside
``jax.jit``) and, inside ``jit``, only in checked mode (:func:`nn_jax.checked`); the unchecked
compiled step is unchanged. See :mod:`nn_jax.checks`.
``reduction`` and ``label_smoothing`` are static Python values (safe to close over in ``jax.jit``);
``Reduction`` is the type of ``reduction``, ``Literal["mean", "sum", "none"]``.

**PyTorch options.** The losses take PyTorch's options under PyTorch's names, with PyTorch's
numbers: class ``weight``, ``ignore_index`` and the class ``axis`` (``axis=1`` for PyTorch's
``(N, C, ...)`` layout) for :func:`softmax_cross_entropy_with_integer_labels` and
:func:`nll_loss`; ``weight`` and ``axis`` for :func:`softmax_cross_entropy`; ``pos_weight`` and
``weight`` for :func:`binary_cross_entropy_with_logits`; ``log_target`` and
``reduction="batchmean"`` for :func:`kl_divergence`; ``beta`` for :func:`smooth_l1`. One rule
differs from the above: with class weights and integer labels, ``"mean"`` is PyTorch's weighted
mean ``sum(mask * w[y] * loss) / sum(mask * w[y])``. Each docstring names its PyTorch
equivalent and any difference (an all-ignored batch gives 0 here, NaN in PyTorch).
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from typing import Literal

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
from nn_jax._options import at_least_float32
from nn_jax.checks import check_in_range
from nn_jax.errors import ConfigError, ShapeError

__all__ = [
    "Reduction",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "huber",
    "kl_divergence",
    "mae",
    "mse",
    "nll_loss",
    "smooth_l1",
    "softmax_cross_entropy",
    "softmax_cross_entropy_with_integer_labels",
]

_REDUCTIONS: tuple[str, ...] = typing.get_args(Reduction)


def _float_pair(
    fn_name: str,
    a_name: str,
    a: ArrayLike,
    b_name: str,
    b: ArrayLike,
    *,
    b_float: bool = False,
) -> tuple[jax.Array, jax.Array]:
    """``a`` (floating, in at least float32) and ``b`` (of ``a``'s shape, cast to that dtype)
    as arrays.

    ``b_float`` also requires ``b`` to be floating (not just castable).
    """
    a, b = jnp.asarray(a), jnp.asarray(b)
    check_float(fn_name, a_name, a)
    if b_float:
        check_float(fn_name, b_name, b)
    check_same_shape(fn_name, a_name, a, b_name, b)
    a = a.astype(at_least_float32(a.dtype))
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


def _check_reduction(fn_name: str, reduction: str, allowed: tuple[str, ...]) -> None:
    if reduction not in allowed:
        raise ConfigError(
            f"{fn_name}: reduction must be one of {', '.join(map(repr, allowed))}; "
            f"got {reduction!r}"
        )


def _classes_last(fn_name: str, name: str, scores: jax.Array, axis: int) -> tuple[jax.Array, str]:
    """``scores`` with its class axis ``axis`` moved last, and the name to show in messages
    (``moveaxis(logits, 1, -1)`` once moved, so that the shapes they show read right)."""
    if isinstance(axis, bool) or not isinstance(axis, int):
        raise ConfigError(f"{fn_name}: axis (the class axis) must be an int; got {axis!r}")
    check_class_axis(fn_name, name, scores)
    if not -scores.ndim <= axis < scores.ndim:
        raise ShapeError(
            f"{fn_name}: axis={axis} (the class axis) is out of range for {name} of shape "
            f"{scores.shape}; expected an int in [{-scores.ndim}, {scores.ndim})"
        )
    if axis % scores.ndim == scores.ndim - 1:
        return scores, name
    return jnp.moveaxis(scores, axis, -1), f"moveaxis({name}, {axis}, -1)"


def _weight_array(
    fn_name: str,
    what: str,
    weight: ArrayLike,
    dtype: jnp.dtype,
    fits: Callable[[tuple[int, ...]], bool],
    expected: str,
) -> jax.Array:
    """``weight`` as a non-negative real array of ``dtype``; a ShapeError naming ``expected``
    unless ``fits(shape)``; its values are checked like every loss input (eagerly, or inside
    ``jit`` in checked mode)."""
    w = jnp.asarray(weight)
    if not fits(w.shape):
        raise ShapeError(f"{fn_name}: {what} must have shape {expected}; got shape {w.shape}")
    if not (jnp.issubdtype(w.dtype, jnp.floating) or jnp.issubdtype(w.dtype, jnp.integer)):
        raise ShapeError(f"{fn_name}: {what} must be a real-valued array; got dtype {w.dtype}")
    check_in_range(fn_name, what, w, 0, jnp.inf, closed=True)
    return w.astype(dtype)


def _class_weight(
    fn_name: str, what: str, weight: ArrayLike, scores: jax.Array, name: str
) -> jax.Array:
    """Per-class ``weight`` of shape ``(C,)`` for ``scores`` of shape ``[..., C]``."""
    classes = scores.shape[-1]
    return _weight_array(
        fn_name,
        what,
        weight,
        scores.dtype,
        lambda shape: shape == (classes,),
        f"(C,) = ({classes},), one entry per class of {name} (shape {scores.shape})",
    )


def _fits(given: tuple[int, ...], shape: tuple[int, ...]) -> bool:
    """Whether ``given`` has the rank of ``shape`` and each axis equal to ``shape``'s or 1."""
    return len(given) == len(shape) and all(g in (1, n) for g, n in zip(given, shape, strict=True))


def _per_class(weight: jax.Array, ndim: int) -> jax.Array:
    """A ``(C,)`` weight reshaped to rank ``ndim`` (no implicit rank promotion)."""
    return weight.reshape((1,) * (ndim - 1) + weight.shape)


def _check_ignore_index(fn_name: str, ignore_index: int | None) -> None:
    if ignore_index is not None and (
        isinstance(ignore_index, bool) or not isinstance(ignore_index, int)
    ):
        raise ConfigError(
            f"{fn_name}: ignore_index must be None or a Python int (a label value to skip, "
            f"e.g. -100 as in PyTorch); got {ignore_index!r}"
        )


def _mask_and_keep(
    fn_name: str, mask: ArrayLike | None, keep: jax.Array | None, shape: tuple[int, ...]
) -> jax.Array | None:
    """The user ``mask`` (shape-checked against ``shape``) with the non-ignored labels ``keep``
    folded in: a boolean or float mask, ``None`` if neither is given."""
    if mask is not None:
        mask = check_mask(fn_name, mask, shape)
        if keep is not None:
            keep_b = jnp.broadcast_to(keep, shape)
            if mask.dtype == jnp.bool_:
                return mask & keep_b
            return jnp.where(keep_b, mask, jnp.zeros_like(mask))
        return mask
    return keep


def _integer_label_inputs(
    fn_name: str,
    name: str,
    scores: ArrayLike,
    labels: ArrayLike,
    *,
    axis: int,
    ignore_index: int | None,
    mask: ArrayLike | None,
) -> tuple[jax.Array, jax.Array, jax.Array | None, str]:
    """Checked inputs of a loss over integer labels (cross-entropy, NLL).

    Returns ``scores`` of shape ``[..., C]`` (class axis moved last), ``labels`` of shape
    ``[...]`` with ignored entries replaced by 0 (a safe index), the mask for value checks and
    the reduction (``mask`` with ``labels != ignore_index`` folded in; ``None`` if neither) and
    the name of ``scores`` for messages. Labels are value-checked where kept and unmasked only:
    ignored and masked labels may hold anything.
    """
    _check_ignore_index(fn_name, ignore_index)
    scores, name = _classes_last(fn_name, name, jnp.asarray(scores), axis)
    labels = jnp.asarray(labels)
    keep = None
    if ignore_index is not None:
        keep = jnp.ones(labels.shape, bool)  # no label can equal an ignore_index out of range
        if jnp.issubdtype(labels.dtype, jnp.integer):
            info = jnp.iinfo(labels.dtype)
            if info.min <= ignore_index <= info.max:
                keep = labels != jnp.asarray(ignore_index, labels.dtype)
    if labels.shape == scores.shape[:-1]:
        reduce_mask = _mask_and_keep(fn_name, mask, keep, labels.shape)
    else:
        reduce_mask = None  # scores_and_int_labels raises the shape error
    scores, labels = scores_and_int_labels(fn_name, name, scores, labels, mask=reduce_mask)
    check_float(fn_name, name, scores)
    scores = scores.astype(at_least_float32(scores.dtype))
    if keep is not None:
        labels = jnp.where(keep, labels, jnp.zeros_like(labels))
    return scores, labels, reduce_mask, name


def _integer_label_reduce(
    fn_name: str,
    nll: jax.Array,
    labels: jax.Array,
    *,
    smooth: jax.Array | None,
    alpha: float,
    classes: int,
    weight: jax.Array | None,
    reduce_mask: jax.Array | None,
    reduction: str,
) -> jax.Array:
    """The one reduction of :func:`softmax_cross_entropy_with_integer_labels` and
    :func:`nll_loss`: PyTorch's ``nll_loss``/``cross_entropy`` rule, with nn_jax's mask.

    Per example: ``l = w[y] * nll`` (``(1 - a) * w[y] * nll + a / C * smooth`` with label
    smoothing ``a``, ``smooth = -sum_c w_c log p_c``), 0 where ``reduce_mask`` (the user mask
    with ignored labels folded in) is 0. ``"none"``: ``m * l``; ``"sum"``: ``sum(m * l)``;
    ``"mean"``: ``sum(m * l) / sum(m * w[y])`` (the weighted mean), 0 if that sum is 0.
    """
    _check_reduction(fn_name, reduction, _REDUCTIONS)
    loss = nll if weight is None else weight[labels] * nll
    if smooth is not None:
        loss = (1 - alpha) * loss + (alpha / classes) * smooth
    if weight is None:  # the denominator is the mask's sum: nn_jax's usual rule
        return masked_reduce(loss, reduction, reduce_mask, fn_name)
    if reduce_mask is None:
        m = jnp.ones_like(loss)
    else:
        if reduce_mask.dtype != jnp.bool_:
            check_in_range(fn_name, "mask weights", reduce_mask, 0, jnp.inf, closed=True)
        m = jnp.broadcast_to(reduce_mask, loss.shape).astype(loss.dtype)
    zero = jnp.zeros_like(loss)
    # `where` first, so a non-finite loss at a left-out position does not leak (NaN * 0).
    weighted = jnp.where(m != 0, loss, zero) * m
    if reduction == "none":
        return weighted
    total = jnp.sum(weighted)
    if reduction == "sum":
        return total
    count = jnp.sum(jnp.where(m != 0, weight[labels], zero) * m)
    safe = jnp.where(count > 0, count, jnp.ones_like(count))
    return jnp.where(count > 0, total / safe, jnp.zeros_like(total))


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
    pos_weight: ArrayLike | None = None,
    weight: ArrayLike | None = None,
    reduction: Reduction = "mean",
    mask: ArrayLike | None = None,
) -> jax.Array:
    """Binary cross-entropy of ``sigmoid(logits)``, computed stably from the logits.

    ``loss = -w * (p * t * log_sigmoid(z) + (1 - t) * log_sigmoid(-z))``, finite for any finite
    ``z`` (``log_sigmoid`` never forms ``log(1 - sigmoid(z))``). ``p`` (``pos_weight``, default 1)
    weighs the positive term, per class; ``w`` (``weight``, default 1) rescales each element
    before the reduction, so ``"mean"`` still divides by the number of (unmasked) elements, as
    PyTorch does. PyTorch: ``F.binary_cross_entropy_with_logits(input, target, weight=w,
    pos_weight=p, reduction=...)`` / ``nn.BCEWithLogitsLoss``.

    Args:
      logits: real-valued scores, any shape ``[..., C]``.
      targets: target probabilities in ``[0, 1]``, the same shape as ``logits`` (value-checked).
      pos_weight: optional non-negative weight of the positive term, of shape ``(C,)`` (one per
        class, the last axis of ``logits``) or ``()`` (PyTorch: ``pos_weight``; ``p > 1`` raises
        recall, ``p = n_negative / n_positive`` balances a class).
      weight: optional non-negative rescaling of each element's loss: shape ``()`` or the rank of
        ``logits`` with each axis equal to ``logits``' or 1 (PyTorch: ``weight``).
      reduction: ``"mean"``, ``"sum"`` or ``"none"``.
      mask: optional mask/weights of the shape of ``logits`` (nn_jax's rule: ``"mean"`` divides by
        the mask's sum).

    Returns:
      A scalar, or the per-element loss of shape ``[..., C]`` for ``reduction="none"``.

    >>> import jax.numpy as jnp
    >>> z, t = jnp.array([[0.0, 2.0]]), jnp.array([[1.0, 0.0]])
    >>> binary_cross_entropy_with_logits(z, t, pos_weight=jnp.array([3.0, 1.0]), reduction="none")
    Array([[2.0794415, 2.126928 ]], dtype=float32)

    Builds on: ``optax.losses.sigmoid_binary_cross_entropy``; with ``pos_weight``,
    ``jax.nn.log_sigmoid``.
    """
    name = "binary_cross_entropy_with_logits"
    logits, targets = _float_pair(name, "logits", logits, "targets", targets)
    _check_values(name, "targets", targets, 0, 1, mask)
    if pos_weight is None:
        loss = optax.losses.sigmoid_binary_cross_entropy(logits, targets)
    else:
        check_class_axis(name, "logits", logits)
        classes = logits.shape[-1]
        p = _weight_array(
            name,
            "pos_weight",
            pos_weight,
            logits.dtype,
            lambda shape: shape in ((), (classes,)),
            f"(C,) = ({classes},), one entry per class (the last axis of logits, shape "
            f"{logits.shape}), or ()",
        )
        p = _per_class(p, logits.ndim) if p.ndim else p
        loss = -(
            p * targets * jax.nn.log_sigmoid(logits) + (1 - targets) * jax.nn.log_sigmoid(-logits)
        )
    if weight is not None:
        shape = logits.shape
        w = _weight_array(
            name,
            "weight",
            weight,
            logits.dtype,
            lambda s: s == () or _fits(s, shape),
            f"() or {shape} (logits' shape; axes of size 1 broadcast)",
        )
        loss = loss * jnp.broadcast_to(w, shape)
    return masked_reduce(loss, reduction, mask, name)


def softmax_cross_entropy(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    weight: ArrayLike | None = None,
    axis: int = -1,
    label_smoothing: float = 0.0,
    reduction: Reduction = "mean",
    mask: ArrayLike | None = None,
) -> jax.Array:
    """Cross-entropy between ``softmax(logits)`` and target distributions (e.g. one-hot).

    ``loss = -sum_c w_c * y_c * log_softmax(z)_c`` with ``y = (1 - a) * labels + a / C`` when
    ``label_smoothing = a`` (``C`` classes) and ``w`` the class weights (default 1). Class
    weights do not change the reduction: ``"mean"`` divides by the number of examples (PyTorch's
    rule for probability targets: ``F.cross_entropy(input, target_probs, weight=w,
    label_smoothing=a)``), unlike :func:`softmax_cross_entropy_with_integer_labels`.

    Args:
      logits: scores of shape ``[..., C]``; with ``axis``, ``C`` sits at that axis (PyTorch's
        ``(N, C, H, W)`` is ``axis=1``).
      labels: target probabilities of the shape of ``logits`` (rows summing to 1; entries outside
        ``[0, 1]`` are a ``ValueRangeError``).
      weight: optional non-negative per-class weights of shape ``(C,)`` (PyTorch: ``weight``).
      axis: the class axis of ``logits`` and ``labels`` (PyTorch's class axis is 1).
      label_smoothing: a Python float ``a`` in ``[0, 1]`` (PyTorch: ``label_smoothing``).
      reduction: ``"mean"``, ``"sum"`` or ``"none"``.
      mask: optional mask/weights of the shape of ``logits`` without its class axis (one entry
        per example).

    Returns:
      A scalar, or the per-example loss (the shape of ``logits`` without the class axis) for
      ``reduction="none"``.

    Builds on: ``optax.losses.softmax_cross_entropy`` and ``optax.losses.smooth_labels``.
    """
    name = "softmax_cross_entropy"
    logits, probs = _float_pair(name, "logits", logits, "labels", labels)
    logits, logits_name = _classes_last(name, "logits", logits, axis)
    if logits_name != "logits":
        probs = jnp.moveaxis(probs, axis, -1)
    alpha = _check_label_smoothing(name, label_smoothing)
    _check_values(name, "labels (target probabilities)", probs, 0, 1, mask, per_row=True)
    if alpha:
        probs = jnp.asarray(optax.losses.smooth_labels(probs, alpha))
    if weight is not None:
        w = _class_weight(name, "weight", weight, logits, logits_name)
        probs = probs * _per_class(w, probs.ndim)
    loss = optax.losses.softmax_cross_entropy(logits, probs)
    return masked_reduce(loss, reduction, mask, name)


def softmax_cross_entropy_with_integer_labels(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    weight: ArrayLike | None = None,
    ignore_index: int | None = None,
    axis: int = -1,
    label_smoothing: float = 0.0,
    reduction: Reduction = "mean",
    mask: ArrayLike | None = None,
) -> jax.Array:
    """Cross-entropy between ``softmax(logits)`` and integer class labels.

    ``loss = w[y] * (logsumexp(z) - z[y])`` for label ``y`` and class weights ``w`` (default 1).
    With ``label_smoothing = a`` the target is ``(1 - a) * one_hot(y) + a / C`` and, as in
    PyTorch, ``loss = (1 - a) * w[y] * nll + (a / C) * sum_c w_c * (-log_softmax(z)_c)``.

    This is PyTorch's ``F.cross_entropy(input, target, weight=w, ignore_index=i,
    label_smoothing=a, reduction=...)`` (``nn.CrossEntropyLoss``) with ``axis=1`` for its
    ``(N, C, ...)`` layout, including its weighted mean: ``"mean"`` is
    ``sum_i loss_i / sum_i w[y_i]`` over the kept examples (the weighted losses averaged with
    the weights, not a plain mean of them); ``"sum"`` is ``sum_i loss_i``; ``"none"`` gives
    the weighted per-example losses, 0 where the label is ``ignore_index``. An ignored example
    contributes nothing, to the value, the denominator or the gradient. A ``mask`` multiplies
    into both the numerator and the denominator. **One difference from PyTorch**: when nothing
    is left to average (every label ignored or masked, or all their weights 0), ``"mean"``
    gives 0, as every nn_jax loss does for a fully masked batch, where PyTorch gives NaN (so
    one batch of padding does not turn a training run into NaN).

    Args:
      logits: scores of shape ``[..., C]``; with ``axis``, ``C`` sits at that axis (PyTorch's
        ``(N, C, H, W)`` is ``axis=1``).
      labels: integer class indices in ``[0, C)``, of the shape of ``logits`` without the class
        axis; others (where not ignored and ``mask`` is nonzero) are a ``ValueRangeError``,
        eagerly or in checked mode (an unchecked jitted call would give a meaningless loss).
      weight: optional non-negative per-class weights of shape ``(C,)`` (PyTorch: ``weight``).
      ignore_index: optional Python int: examples whose label equals it are skipped (PyTorch:
        ``ignore_index``, whose default -100 you pass explicitly here). Not value-checked.
      axis: the class axis of ``logits`` (PyTorch's class axis is 1).
      label_smoothing: a Python float ``a`` in ``[0, 1]`` (PyTorch: ``label_smoothing``).
      reduction: ``"mean"``, ``"sum"`` or ``"none"``.
      mask: optional mask/weights of the shape of ``labels``.

    Returns:
      A scalar, or the per-example loss of the shape of ``labels`` for ``reduction="none"``.

    >>> import jax.numpy as jnp
    >>> logits = jnp.zeros((3, 2))  # every example: loss log(2) = 0.693
    >>> labels = jnp.array([0, 1, -100])
    >>> w = jnp.array([1.0, 3.0])
    >>> softmax_cross_entropy_with_integer_labels(
    ...     logits, labels, weight=w, ignore_index=-100, reduction="none")
    Array([0.6931472, 2.0794415, 0.       ], dtype=float32)
    >>> softmax_cross_entropy_with_integer_labels(logits, labels, weight=w, ignore_index=-100)
    Array(0.6931472, dtype=float32)

    Builds on: ``optax.losses.softmax_cross_entropy_with_integer_labels``; with label
    smoothing, ``jax.nn.log_softmax``.
    """
    name = "softmax_cross_entropy_with_integer_labels"
    alpha = _check_label_smoothing(name, label_smoothing)
    logits, labels, reduce_mask, logits_name = _integer_label_inputs(
        name, "logits", logits, labels, axis=axis, ignore_index=ignore_index, mask=mask
    )
    w = None if weight is None else _class_weight(name, "weight", weight, logits, logits_name)
    nll = optax.losses.softmax_cross_entropy_with_integer_labels(logits, labels)
    smooth = None
    if alpha:
        log_probs = jax.nn.log_softmax(logits)
        if w is not None:
            log_probs = log_probs * _per_class(w, log_probs.ndim)
        smooth = -jnp.sum(log_probs, axis=-1)
    return _integer_label_reduce(
        name,
        nll,
        labels,
        smooth=smooth,
        alpha=alpha,
        classes=logits.shape[-1],
        weight=w,
        reduce_mask=reduce_mask,
        reduction=reduction,
    )


def nll_loss(
    log_probs: ArrayLike,
    labels: ArrayLike,
    *,
    weight: ArrayLike | None = None,
    ignore_index: int | None = None,
    axis: int = -1,
    reduction: Reduction = "mean",
    mask: ArrayLike | None = None,
) -> jax.Array:
    """Negative log-likelihood of integer labels under given log-probabilities.

    ``loss = -w[y] * log_probs[y]``: :func:`softmax_cross_entropy_with_integer_labels` for
    inputs that are already log-probabilities (e.g. ``jax.nn.log_softmax(logits)``), with the
    same class weights, ``ignore_index``, ``axis``, weighted ``"mean"`` and all-ignored rule
    (0, where PyTorch gives NaN). PyTorch: ``F.nll_loss(input, target, weight=w,
    ignore_index=i, reduction=...)`` / ``nn.NLLLoss``, with ``axis=1``.

    Args:
      log_probs: log-probabilities (``<= 0``, value-checked where the label is kept) of shape
        ``[..., C]``; with ``axis``, ``C`` sits at that axis.
      labels: integer class indices in ``[0, C)`` of the shape of ``log_probs`` without the
        class axis (value-checked where kept and unmasked).
      weight: optional non-negative per-class weights of shape ``(C,)`` (PyTorch: ``weight``).
      ignore_index: optional Python int: examples whose label equals it are skipped (PyTorch:
        ``ignore_index``). Not value-checked.
      axis: the class axis of ``log_probs`` (PyTorch's class axis is 1).
      reduction: ``"mean"``, ``"sum"`` or ``"none"``.
      mask: optional mask/weights of the shape of ``labels``.

    Returns:
      A scalar, or the per-example loss of the shape of ``labels`` for ``reduction="none"``.

    >>> import jax.numpy as jnp
    >>> log_probs = jnp.log(jnp.array([[0.5, 0.5], [0.25, 0.75]]))
    >>> nll_loss(log_probs, jnp.array([0, 1]), weight=jnp.array([1.0, 3.0]), reduction="none")
    Array([0.6931472, 0.8630463], dtype=float32)

    Builds on: nothing in optax; ``jnp.take_along_axis``.
    """
    name = "nll_loss"
    log_probs, labels, reduce_mask, lp_name = _integer_label_inputs(
        name, "log_probs", log_probs, labels, axis=axis, ignore_index=ignore_index, mask=mask
    )
    what = f"{lp_name} (log-probabilities)"
    _check_values(name, what, log_probs, -jnp.inf, 0, reduce_mask, per_row=True)
    w = None if weight is None else _class_weight(name, "weight", weight, log_probs, lp_name)
    nll = -jnp.take_along_axis(log_probs, labels[..., None], axis=-1)[..., 0]
    return _integer_label_reduce(
        name,
        nll,
        labels,
        smooth=None,
        alpha=0.0,
        classes=log_probs.shape[-1],
        weight=w,
        reduce_mask=reduce_mask,
        reduction=reduction,
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
    ``delta * (e - delta / 2)``. PyTorch: ``F.huber_loss(input, target, delta=delta)`` /
    ``nn.HuberLoss``; its ``SmoothL1Loss`` is this divided by ``delta``, :func:`smooth_l1`.

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


def smooth_l1(
    predictions: ArrayLike,
    targets: ArrayLike,
    *,
    beta: float = 1.0,
    reduction: Reduction = "mean",
    mask: ArrayLike | None = None,
) -> jax.Array:
    """Smooth L1 loss: :func:`huber` with ``delta = beta``, divided by ``beta``.

    With ``e = |predictions - targets|``: ``loss = 0.5 * e^2 / beta`` if ``e < beta`` else
    ``e - 0.5 * beta``; ``beta = 0`` is the L1 loss (:func:`mae`). So
    ``huber(delta=beta) == beta * smooth_l1(beta=beta)``: the two differ only in scale (the
    linear part has slope 1 here, ``delta`` in Huber). PyTorch: ``F.smooth_l1_loss(input,
    target, beta=beta, reduction=...)`` / ``nn.SmoothL1Loss``.

    Args:
      predictions: any shape ``[...]``.
      targets: the same shape as ``predictions``.
      beta: a Python float ``>= 0``, the error at which the loss turns from quadratic to linear
        (static: safe to close over in ``jax.jit``).
      reduction: ``"mean"``, ``"sum"`` or ``"none"``.
      mask: optional mask/weights of the shape of ``predictions``.

    Returns:
      A scalar, or the per-element loss of shape ``[...]`` for ``reduction="none"``.

    >>> import jax.numpy as jnp
    >>> smooth_l1(jnp.array([0.5, 3.0]), jnp.zeros(2), beta=1.0, reduction="none")
    Array([0.125, 2.5  ], dtype=float32)

    Builds on: ``optax.losses.huber_loss`` (as :func:`huber` does); ``jnp.abs`` for
    ``beta = 0``.
    """
    name = "smooth_l1"
    if isinstance(beta, bool) or not isinstance(beta, int | float) or not beta >= 0:
        raise ConfigError(f"{name}: beta must be a Python float >= 0; got {beta!r}")
    predictions, targets = _float_pair(name, "predictions", predictions, "targets", targets)
    if beta == 0:
        loss = jnp.abs(predictions - targets)
    else:
        loss = optax.losses.huber_loss(predictions, targets, delta=beta) / beta
    return masked_reduce(loss, reduction, mask, name)


def kl_divergence(
    log_predictions: ArrayLike,
    targets: ArrayLike,
    *,
    log_target: bool = False,
    reduction: Literal["mean", "sum", "none", "batchmean"] = "mean",
    mask: ArrayLike | None = None,
) -> jax.Array:
    """KL divergence ``KL(targets || predictions)`` of the target from the predicted distribution.

    ``loss = sum_c t_c * (log t_c - log_predictions_c)``, with ``0 * log 0 = 0``. The predictions
    come as **log-probabilities** (e.g. ``jax.nn.log_softmax(logits)``) and the targets as
    **probabilities**, or as log-probabilities with ``log_target=True`` (then
    ``loss = sum_c exp(t_c) * (t_c - log_predictions_c)``, 0 for ``t_c = -inf``): the convention of
    ``optax.losses.kl_divergence`` and of PyTorch.

    PyTorch: ``F.kl_div(input, target, reduction=r, log_target=b)`` (``nn.KLDivLoss``) is
    ``kl_divergence(input, target, log_target=b, reduction=r2)`` with the same argument order
    (``input`` = ``log_predictions``) and, for the reduction:

    - ``"batchmean"`` (PyTorch's recommended one) is ``"batchmean"`` here too: the sum divided
      by the size of the first axis, ``log_predictions.shape[0]`` (rank >= 2 needed).
    - ``"sum"`` is ``"sum"``.
    - ``"none"``: PyTorch returns the per-*element* terms, shape ``[..., C]``; nn_jax returns
      their sum over the class axis, shape ``[...]`` (one KL per distribution).
    - ``"mean"``: PyTorch divides the sum by the number of *elements* (``N * C``, a value it
      warns about); nn_jax's ``"mean"`` averages over distributions (``prod(shape[:-1])``),
      which for ``[N, C]`` inputs equals PyTorch's ``"batchmean"``. PyTorch's ``"mean"`` is
      nn_jax's ``"sum"`` divided by ``log_predictions.size``.

    Args:
      log_predictions: log-probabilities (``<= 0``) of shape ``[..., C]``.
      targets: probabilities (in ``[0, 1]``) of shape ``[..., C]``, each row summing to 1; with
        ``log_target=True``, log-probabilities (``<= 0``).
      log_target: whether ``targets`` are log-probabilities (PyTorch: ``log_target``).
      reduction: ``"mean"``, ``"sum"``, ``"none"`` or ``"batchmean"`` (``sum(mask * loss)`` over
        ``log_predictions.shape[0]``).
      mask: optional mask/weights of shape ``[...]`` (one entry per distribution).

    Returns:
      A scalar, or the per-distribution loss of shape ``[...]`` for ``reduction="none"``.

    >>> import jax.numpy as jnp
    >>> log_q = jnp.log(jnp.array([[0.5, 0.5], [0.9, 0.1]]))
    >>> p = jnp.array([[1.0, 0.0], [0.5, 0.5]])
    >>> kl_divergence(log_q, p, reduction="none")
    Array([0.6931472 , 0.51082563], dtype=float32)
    >>> kl_divergence(log_q, jnp.log(p), log_target=True, reduction="batchmean")
    Array(0.6019864, dtype=float32)

    Builds on: ``optax.losses.kl_divergence``; with ``log_target``, the formula of
    ``optax.losses.kl_divergence_with_log_targets``, written here so that a target
    log-probability of ``-inf`` (probability 0) adds 0, not NaN (PyTorch gives NaN there).
    """
    name = "kl_divergence"
    _check_reduction(name, reduction, (*_REDUCTIONS, "batchmean"))
    log_predictions, targets = _float_pair(
        name, "log_predictions", log_predictions, "targets", targets, b_float=True
    )
    check_class_axis(name, "log_predictions", log_predictions)
    if reduction == "batchmean" and log_predictions.ndim < 2:
        raise ShapeError(
            f"{name}: reduction='batchmean' divides by the batch size, the first axis of "
            f"log_predictions, which needs rank >= 2 (shape [batch, ..., C]); got shape "
            f"{log_predictions.shape}. Use reduction='sum' for a single distribution"
        )
    # Probabilities or logits passed as log-probabilities (a classic mix-up) are mostly > 0.
    what = "log_predictions (log-probabilities)"
    _check_values(name, what, log_predictions, -jnp.inf, 0, mask, per_row=True)
    if log_target:
        _check_values(name, "targets (log-probabilities)", targets, -jnp.inf, 0, mask, per_row=True)
        # exp(t) * (t - log q) with the 0 * log 0 = 0 convention at t = -inf (optax's
        # kl_divergence_with_log_targets and PyTorch give NaN there); double `where` for the grad.
        possible = targets > -jnp.inf
        t = jnp.where(possible, targets, jnp.zeros_like(targets))
        terms = jnp.where(possible, jnp.exp(t) * (t - log_predictions), jnp.zeros_like(t))
        loss = jnp.sum(terms, axis=-1)
    else:
        _check_values(name, "targets (probabilities)", targets, 0, 1, mask, per_row=True)
        loss = optax.losses.kl_divergence(log_predictions, targets)
    if reduction == "batchmean":
        return masked_reduce(loss, "sum", mask, name) / log_predictions.shape[0]
    return masked_reduce(loss, reduction, mask, name)

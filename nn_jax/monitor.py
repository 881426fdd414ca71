"""Watching a training run for the field's failure modes, inside the compiled step.

The seed warns that networks need "careful monitoring for overfitting, drift, and failure
modes". :class:`Monitor` says what a train step measures; everything is computed on device as part
of the jitted step and read back only on the steps ``fit`` logs:

* **non-finite loss or gradients**: a flag per step; with ``on_nonfinite="skip"`` the step leaves
  params, state and optimizer state as they were, with ``"stop"`` it does so and ``fit`` stops,
  reporting the step and the first layer whose activations went non-finite.
* **gradient health**: the global gradient norm (``grad_norm=False`` turns it and the per-array
  non-finite check off), and per layer (``per_layer=True``) the gradient norm and the
  update/param norm ratio (healthy runs sit near 1e-3 with Adam).
* **activation health** (``activations=True``): per ReLU layer the fraction of *dead* units (zero
  for every example of the batch), per sigmoid/tanh layer the fraction of *saturated* outputs
  (``|tanh| > 0.99``, ``sigmoid`` outside ``[0.01, 0.99]``), read through the taps every
  :class:`~nn_jax.core.Block` child output goes through (:func:`nn_jax.core.tapping`).

A *layer* here is a dict of arrays in the param tree (``"encoder/0"`` holds ``w`` and ``b``).
The skip is an on-device select rather than ``optax.apply_if_finite``: that wrapper guards the
optimizer's update only, while a non-finite step must also leave the layer state (batch-norm
statistics) and the loss bookkeeping untouched.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

from nn_jax.activations import relu, sigmoid, tanh
from nn_jax.core import Array, Lambda, Layer, Params
from nn_jax.errors import ConfigError

__all__ = ["Monitor", "activation_health", "layer_norms", "sums_of_squares"]

_SATURATION = 0.99
_STACKED_SIZE = 1 << 14
"""Arrays of at most this many elements are reduced stacked with their equals (see
:func:`sums_of_squares`); larger ones are reduced one by one, without a copy."""
_RELU_LIKE = (relu, jax.nn.relu6)

ActivationKind = Literal["relu", "tanh", "sigmoid", "other"]


def activation_kind(layer: Layer | None) -> ActivationKind:
    """``"relu"`` (ReLU or ReLU6), ``"tanh"``, ``"sigmoid"`` for those activation layers (a
    :class:`~nn_jax.core.Lambda` of the function), else ``"other"``: the outputs whose dead or
    saturated units :func:`activation_health` and :mod:`nn_jax.drift` count."""
    fn = layer.fn if isinstance(layer, Lambda) else None
    if any(fn is f for f in _RELU_LIKE):
        return "relu"
    if fn is tanh:
        return "tanh"
    if fn is sigmoid:
        return "sigmoid"
    return "other"


def saturated(value: Array, kind: ActivationKind) -> Array:
    """Where a ``tanh`` output is beyond ±0.99, a ``sigmoid`` one outside [0.01, 0.99]; all
    ``False`` for other kinds."""
    if kind == "tanh":
        return jnp.abs(value) > _SATURATION
    if kind == "sigmoid":
        return (value < 1 - _SATURATION) | (value > _SATURATION)
    return jnp.zeros(value.shape, bool)


@dataclasses.dataclass(frozen=True)
class Monitor:
    """What a train step measures besides the loss and metrics (see the module docstring).

    Args:
        per_layer: per-layer gradient norms and update/param ratios (``"grad_norm/<layer>"``,
            ``"update_ratio/<layer>"``).
        activations: dead-ReLU and saturation fractions per activation layer, and the path of
            the first layer whose output is non-finite. Costs a reduction per tapped output.
        on_nonfinite: ``"stop"`` (default: skip the step, and ``fit`` stops at its next log
            with the step number and layer), ``"skip"`` (skip the step and go on) or
            ``"ignore"`` (apply it anyway; the step is still counted in ``"nonfinite"``).
        grad_norm: the global gradient norm (``"grad_norm"``) and a NaN/inf check of every
            gradient array (default). It costs a sum of squares per gradient array (small
            arrays of one shape are reduced together); on a CPU that was within noise for most
            models and about 8% of the step of a 100-block stack of tiny layers (the
            ``overhead`` workload of ``nn-jax bench``; ``benchmarks/monitor_cost.py``).
            ``False`` drops both: then only a non-finite loss skips or stops a step, so a NaN
            gradient under a finite loss is applied and shows as a non-finite loss one step
            later.
    """

    per_layer: bool = False
    activations: bool = False
    on_nonfinite: Literal["stop", "skip", "ignore"] = "stop"
    grad_norm: bool = True

    def __post_init__(self) -> None:
        if self.on_nonfinite not in ("stop", "skip", "ignore"):
            raise ConfigError(
                f"Monitor: on_nonfinite must be 'stop', 'skip' or 'ignore', "
                f"given {self.on_nonfinite!r}"
            )


def sums_of_squares(arrays: Sequence[Array]) -> Array:
    """Each array's sum of squares (in float32), one vector in the order given.

    Small arrays (at most 2**14 elements) of one shape and dtype are stacked and reduced in one
    op: XLA runs every reduction as a kernel of its own on CPU, and one per array made the
    step of a 100-block stack of tiny layers (400 gradient arrays) 15-20% slower than the same
    step without them. Larger arrays are reduced one by one, so no big array is copied.
    """
    groups: dict[Any, list[int]] = {}
    for i, a in enumerate(arrays):
        groups.setdefault((a.shape, a.dtype) if a.size <= _STACKED_SIZE else i, []).append(i)
    parts, order = [], []
    for members in groups.values():
        stacked = jnp.stack([arrays[i] for i in members]).astype(jnp.float32)
        parts.append(jnp.sum(jnp.square(stacked), axis=tuple(range(1, stacked.ndim))))
        order += members
    if not parts:
        return jnp.zeros((0,), jnp.float32)
    squares = jnp.concatenate(parts)
    return squares if order == sorted(order) else squares[np.argsort(order)]


def layer_norms(tree: Params) -> dict[str, Array]:
    """The L2 norm of each layer's arrays, keyed by the layer's path (``"encoder/0"``)."""
    leaves = jax.tree_util.tree_leaves_with_path(tree)
    totals = sums_of_squares([leaf for _, leaf in leaves])
    squares: dict[str, Array] = {}
    for (path, _), total in zip(leaves, totals, strict=True):
        layer = "/".join(_key(k) for k in path[:-1]) or "."
        squares[layer] = squares[layer] + total if layer in squares else total
    return {layer: jnp.sqrt(s) for layer, s in squares.items()}


def activation_health(
    values: Mapping[str, Any], layers: Mapping[str, Layer]
) -> tuple[dict[str, Array], list[str], Array]:
    """Dead-ReLU and saturation fractions of tapped activation outputs, and non-finite flags.

    Returns ``(stats, paths, nonfinite)``: ``stats`` has ``"dead_relu/<path>"`` and
    ``"saturated/<path>"`` fractions; ``paths`` the tapped array paths in execution order and
    ``nonfinite`` a bool vector over them (True where the output holds a NaN or inf).
    """
    stats: dict[str, Array] = {}
    paths: list[str] = []
    flags: list[Array] = []
    for path, value in values.items():
        if not isinstance(value, jax.Array) or not jnp.issubdtype(value.dtype, jnp.inexact):
            continue
        value = jax.lax.stop_gradient(value)
        paths.append(path)
        flags.append(~jnp.all(jnp.isfinite(value)))
        kind = activation_kind(layers.get(path))
        if kind == "relu" and value.ndim >= 1:
            units = value.reshape(-1, value.shape[-1])
            stats[f"dead_relu/{path}"] = jnp.mean(jnp.all(units <= 0, axis=0))
        elif kind in ("tanh", "sigmoid"):
            stats[f"saturated/{path}"] = jnp.mean(saturated(value, kind))
    nonfinite = jnp.stack(flags) if flags else jnp.zeros((0,), bool)
    return stats, paths, nonfinite


def _key(entry: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)

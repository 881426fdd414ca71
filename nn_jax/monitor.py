"""Watching a training run for the field's failure modes, inside the compiled step.

The seed warns that networks need "careful monitoring for overfitting, drift, and failure
modes". :class:`Monitor` says what a train step measures; everything is computed on device as part
of the jitted step and read back only on the steps ``fit`` logs:

* **non-finite loss or gradients**: a flag per step; with ``on_nonfinite="skip"`` the step leaves
  params, state and optimizer state as they were, with ``"stop"`` it does so and ``fit`` stops,
  reporting the step and the first layer whose activations went non-finite.
* **gradient health**: the global gradient norm, and per layer (``per_layer=True``) the gradient
  norm and the update/param norm ratio (healthy runs sit near 1e-3 with Adam).
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
from collections.abc import Mapping
from typing import Any, Literal

import jax
import jax.numpy as jnp

from nn_jax.activations import relu, sigmoid, tanh
from nn_jax.core import Array, Lambda, Layer, Params
from nn_jax.errors import ConfigError

__all__ = ["Monitor", "activation_health", "layer_norms"]

_SATURATION = 0.99
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
    """

    per_layer: bool = False
    activations: bool = False
    on_nonfinite: Literal["stop", "skip", "ignore"] = "stop"

    def __post_init__(self) -> None:
        if self.on_nonfinite not in ("stop", "skip", "ignore"):
            raise ConfigError(
                f"Monitor: on_nonfinite must be 'stop', 'skip' or 'ignore', "
                f"given {self.on_nonfinite!r}"
            )


def layer_norms(tree: Params) -> dict[str, Array]:
    """The L2 norm of each layer's arrays, keyed by the layer's path (``"encoder/0"``)."""
    squares: dict[str, Array] = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        layer = "/".join(_key(k) for k in path[:-1]) or "."
        total = jnp.sum(jnp.square(leaf.astype(jnp.float32)))
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

"""Activation functions: JAX's own, re-exported (not re-implemented), plus a name lookup.

Every function here *is* the ``jax.nn`` function of the same name (``tanh`` is ``jax.numpy.tanh``),
so their docstrings, defaults and gradients are JAX's. Defaults worth knowing:

- ``gelu(x, approximate=True)``: JAX's default is the tanh approximation
  ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``; PyTorch's ``nn.GELU`` defaults to the exact
  ``x Phi(x)``. Pass ``functools.partial(gelu, approximate=False)`` for the exact form.
- ``leaky_relu(x, negative_slope=0.01)``, ``elu(x, alpha=1.0)``.
- ``softmax`` and ``log_softmax`` normalise over ``axis=-1``.
- ``silu(x) = x * sigmoid(x)``. ``swish`` is an alias: the same function object as ``silu``, as
  in ``jax.nn``. Both names are in common use, so both stay: ``silu`` (Hendrycks & Gimpel; PyTorch's
  ``nn.SiLU``, JAX's primary name) is the canonical one, ``swish`` (Ramachandran et al., 2017;
  Keras/TensorFlow, and the "Swi" of SwiGLU) the alias. ``get_activation`` accepts both names.

``identity`` is the one function defined here: ``identity(x) = x``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.nn import (
    elu,
    gelu,
    leaky_relu,
    log_softmax,
    relu,
    selu,
    sigmoid,
    silu,
    softmax,
    softplus,
    swish,
)

from nn_jax.errors import ConfigError

tanh = jnp.tanh

__all__ = [
    "elu",
    "gelu",
    "get_activation",
    "identity",
    "leaky_relu",
    "log_softmax",
    "relu",
    "selu",
    "sigmoid",
    "silu",
    "softmax",
    "softplus",
    "swish",
    "tanh",
]


def identity(x: jax.Array) -> jax.Array:
    """Return the input unchanged: ``identity(x) = x`` (the "no activation" activation).

    Args:
      x: an array of any shape.

    Returns:
      ``x`` itself.
    """
    return x


_ACTIVATIONS: dict[str, Callable[..., Any]] = {
    "elu": elu,
    "gelu": gelu,
    "identity": identity,
    "leaky_relu": leaky_relu,
    "log_softmax": log_softmax,
    "relu": relu,
    "selu": selu,
    "sigmoid": sigmoid,
    "silu": silu,
    "softmax": softmax,
    "softplus": softplus,
    "swish": swish,
    "tanh": tanh,
}


def get_activation(name_or_fn: str | Callable[..., Any]) -> Callable[..., Any]:
    """Map an activation name (``"relu"``, ``"gelu"``, ...) or a callable to the callable.

    Args:
      name_or_fn: one of the names in this module's ``__all__`` (except ``get_activation``), or
        any callable, which is returned unchanged.

    Returns:
      The activation function, e.g. ``get_activation("relu") is jax.nn.relu``.

    Raises:
      ConfigError: for an unknown name (the message lists the valid names) or a value that is
        neither a string nor callable.
    """
    if isinstance(name_or_fn, type):
        raise ConfigError(
            f"get_activation: expected an activation function or name, given the class "
            f"{name_or_fn.__name__}; give a function such as jax.nn.relu"
        )
    if callable(name_or_fn):
        return name_or_fn
    if isinstance(name_or_fn, str) and name_or_fn in _ACTIVATIONS:
        return _ACTIVATIONS[name_or_fn]
    valid = ", ".join(sorted(_ACTIVATIONS))
    raise ConfigError(
        f"get_activation: unknown activation {name_or_fn!r}; expected a callable or one of: {valid}"
    )

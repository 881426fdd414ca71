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

PyTorch parity. Each of these is ``jax.nn``'s function, checked against PyTorch's definition
(``tests/test_torch_parity_layers.py``); the PyTorch module is named with any difference:

- ``relu6(x) = min(max(x, 0), 6)``: ``nn.ReLU6``.
- ``hard_sigmoid(x) = relu6(x + 3) / 6``: ``nn.Hardsigmoid``.
- ``hard_swish(x) = x * relu6(x + 3) / 6``: ``nn.Hardswish`` (``jax.nn.hard_swish``, which JAX
  also calls ``hard_silu``; only ``hard_swish`` is listed here).
- ``hard_tanh(x)``: ``x`` clipped to ``[-1, 1]``: ``nn.Hardtanh()`` with its default
  ``min_val=-1, max_val=1`` (JAX has no bounds arguments; use ``jnp.clip`` for others).
- ``mish(x) = x * tanh(softplus(x))``: ``nn.Mish``.
- ``celu(x, alpha=1.0) = max(0, x) + min(0, alpha * (exp(x / alpha) - 1))``: ``nn.CELU``, the
  same default ``alpha=1.0``.
- ``glu(x, axis=-1) = a * sigmoid(b)`` with ``a, b`` the two halves of ``x`` along ``axis``:
  ``nn.GLU`` (``dim=-1``, the same default axis). The axis must have even size.
- ``soft_sign(x) = x / (1 + |x|)``: ``nn.Softsign``.
- ``log_sigmoid(x) = -softplus(-x)``: ``nn.LogSigmoid`` (stable for large ``|x|``).
- Also: ``leaky_relu`` (``nn.LeakyReLU``, the same slope 0.01), ``elu`` (``nn.ELU``),
  ``selu`` (``nn.SELU``), ``silu`` (``nn.SiLU``), ``softplus`` (``nn.Softplus`` with its
  default ``beta=1``), ``gelu`` (see above for the default that differs). The learnable
  ``nn.PReLU`` is the layer :class:`~nn_jax.dense.PReLU`.

At a kink (``relu6`` at 0 and 6, ``hard_tanh`` at -1 and 1, ...) the derivative is whichever
one-sided value JAX picks, which may differ from PyTorch's; away from kinks they agree.

``identity`` is the one function defined here: ``identity(x) = x``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.nn import (
    celu,
    elu,
    gelu,
    glu,
    hard_sigmoid,
    hard_swish,
    hard_tanh,
    leaky_relu,
    log_sigmoid,
    log_softmax,
    mish,
    relu,
    relu6,
    selu,
    sigmoid,
    silu,
    soft_sign,
    softmax,
    softplus,
    swish,
)

from nn_jax.errors import ConfigError

tanh = jnp.tanh

__all__ = [
    "celu",
    "elu",
    "gelu",
    "get_activation",
    "glu",
    "hard_sigmoid",
    "hard_swish",
    "hard_tanh",
    "identity",
    "leaky_relu",
    "log_sigmoid",
    "log_softmax",
    "mish",
    "relu",
    "relu6",
    "selu",
    "sigmoid",
    "silu",
    "soft_sign",
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
    "celu": celu,
    "elu": elu,
    "gelu": gelu,
    "glu": glu,
    "hard_sigmoid": hard_sigmoid,
    "hard_swish": hard_swish,
    "hard_tanh": hard_tanh,
    "identity": identity,
    "leaky_relu": leaky_relu,
    "log_sigmoid": log_sigmoid,
    "log_softmax": log_softmax,
    "mish": mish,
    "relu": relu,
    "relu6": relu6,
    "selu": selu,
    "sigmoid": sigmoid,
    "silu": silu,
    "soft_sign": soft_sign,
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

"""Parameter initializers: ``jax.nn.initializers``, as picklable, printable values.

An *initializer* is a function ``init(key, shape, dtype=None) -> Array`` (``jax.nn.initializers``'
signature), so any of JAX's own initializers, or your own with that signature, plugs into nn_jax.
JAX's conventions are kept exactly:

- ``zeros`` and ``ones`` **are** initializers: call ``zeros(key, (3, 4), jnp.float32)``.
- Every other name is a **factory** that returns an initializer:
  ``normal(stddev=1e-2)(key, shape, dtype)``, ``glorot_uniform()(key, shape, dtype)``.
- ``constant(value)`` fills with ``value``.
- ``normal(stddev)``: N(0, stddev^2).
- ``uniform(scale)``: uniform on ``[0, scale)`` (not symmetric about 0), variance ``scale^2/12``.
- ``truncated_normal(stddev, lower=-2.0, upper=2.0)``: ``stddev * z`` with ``z`` a standard normal
  truncated to ``[lower, upper]``; ``stddev`` is that of the *untruncated* normal, so the samples'
  standard deviation is smaller (about ``0.88 * stddev`` for the default ±2 bounds).
- ``variance_scaling(scale, mode, distribution)``: variance ``scale / n`` with ``n`` = fan_in,
  fan_out or their average (``mode``); the ``"truncated_normal"`` distribution is rescaled so the
  variance is exact. For a 2-D kernel of shape ``(in, out)`` fan_in is ``in`` and fan_out ``out``
  (``in_axis=-2``, ``out_axis=-1``; other axes are receptive field).
- ``glorot_*``: variance ``2 / (fan_in + fan_out)``; ``he_*``: ``2 / fan_in``; ``lecun_*``:
  ``1 / fan_in``. ``*_normal`` variants use a truncated normal.
- ``xavier_normal``/``xavier_uniform`` and ``kaiming_normal``/``kaiming_uniform`` are aliases: the
  same objects as ``glorot_*`` and ``he_*``, as in ``jax.nn.initializers``. Both names are in
  common use (Glorot & Bengio and He et al. by surname in Keras and JAX, by first name in
  PyTorch's ``nn.init.xavier_*``/``kaiming_*``), so both stay; ``glorot_*``/``he_*`` are the
  canonical names (an alias's initializer prints as ``glorot_normal()``).
- ``orthogonal(scale=1.0, column_axis=-1)``: orthonormal rows or columns, whichever side is
  smaller, times ``scale``. On CPU it cannot draw ``bfloat16`` (no bfloat16 QR in LAPACK: JAX
  raises ``NotImplementedError``); draw in float32 and cast.
- ``delta_orthogonal(scale=1.0, column_axis=-1)``: for convolution kernels of shape
  ``(*window, in, out)``: an orthogonal matrix at the window's centre, zeros elsewhere.

Each factory here takes the same arguments as its ``jax.nn.initializers`` namesake and gives the
same numbers, but returns a :class:`JaxInitializer`, a frozen value that names the factory and
its arguments: it prints as ``lecun_normal()`` or ``normal(stddev=0.02)`` (a layer's ``repr`` is a
readable config), compares by value and pickles (layers go to worker processes). Arguments are
kept as plain Python values: a ``dtype`` as its name (``normal(dtype='bfloat16')``), NumPy
scalars as Python numbers, lists as tuples; an array-valued ``constant`` is not a config value
(use ``jax.nn.initializers.constant(array)``). JAX's own factories return closures that neither
print, compare nor pickle; they still work in every layer.

``Initializer`` is JAX's protocol type for annotating such functions.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.nn.initializers import Initializer, ones, zeros

from nn_jax.errors import ConfigError

_FACTORIES = (
    "constant",
    "delta_orthogonal",
    "glorot_normal",
    "glorot_uniform",
    "he_normal",
    "he_uniform",
    "lecun_normal",
    "lecun_uniform",
    "normal",
    "orthogonal",
    "truncated_normal",
    "uniform",
    "variance_scaling",
)


def _config_value(factory: str, name: str, value: Any) -> Any:
    """``value`` as a plain, hashable, picklable Python value (see the module docstring)."""
    if name == "dtype" and value is not None:
        return jnp.dtype(value).name
    if isinstance(value, list | tuple):
        return tuple(_config_value(factory, name, v) for v in value)
    if isinstance(value, np.generic) or (
        isinstance(value, np.ndarray | jax.Array) and not value.shape
    ):
        return value.item()
    if isinstance(value, np.ndarray | jax.Array):
        raise ConfigError(
            f"{factory}: argument {name} is an array of shape {value.shape}; nn_jax initializers "
            f"take Python values (printable and picklable). Pass a Python number, or use "
            f"jax.nn.initializers.{factory}(...) directly"
        )
    return value


@dataclasses.dataclass(frozen=True)
class JaxInitializer:
    """``jax.nn.initializers.<factory>(**arguments)`` as a value: ``(key, shape, dtype) -> Array``.

    >>> import jax
    >>> init = normal(stddev=0.02)
    >>> init
    normal(stddev=0.02)
    >>> init(jax.random.key(0), (2, 3)).shape
    (2, 3)
    """

    factory: str
    arguments: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        if self.factory not in _FACTORIES:
            raise ConfigError(
                f"unknown initializer factory {self.factory!r}; one of {', '.join(_FACTORIES)}"
            )

    def __call__(self, key: jax.Array, shape: Any, dtype: Any = None) -> jax.Array:
        init = getattr(jax.nn.initializers, self.factory)(**dict(self.arguments))
        return init(key, shape) if dtype is None else init(key, shape, dtype)

    def __repr__(self) -> str:
        args = ", ".join(f"{name}={value!r}" for name, value in self.arguments)
        return f"{self.factory}({args})"


def _factory(name: str) -> Callable[..., JaxInitializer]:
    jax_factory = getattr(jax.nn.initializers, name)
    signature = inspect.signature(jax_factory)

    @functools.wraps(jax_factory)
    def make(*args: Any, **kwargs: Any) -> JaxInitializer:
        bound = signature.bind(*args, **kwargs)
        arguments = []
        for key, value in bound.arguments.items():
            value = _config_value(name, key, value)
            # Arguments equal to their default are left out: one config, one value and one repr.
            if value != signature.parameters[key].default:
                arguments.append((key, value))
        return JaxInitializer(name, tuple(arguments))

    jax_doc = inspect.cleandoc(jax_factory.__doc__ or "")
    make.__doc__ = (
        f"``jax.nn.initializers.{name}`` as a printable, picklable :class:`JaxInitializer` (same "
        f"arguments, same numbers). JAX's documentation follows.\n\n{jax_doc}"
    )
    make.__module__ = __name__
    make.__qualname__ = name
    return make


constant = _factory("constant")
delta_orthogonal = _factory("delta_orthogonal")
glorot_normal = _factory("glorot_normal")
glorot_uniform = _factory("glorot_uniform")
he_normal = _factory("he_normal")
he_uniform = _factory("he_uniform")
lecun_normal = _factory("lecun_normal")
lecun_uniform = _factory("lecun_uniform")
normal = _factory("normal")
orthogonal = _factory("orthogonal")
truncated_normal = _factory("truncated_normal")
uniform = _factory("uniform")
variance_scaling = _factory("variance_scaling")
# Aliases, the same objects (see the module docstring).
xavier_normal = glorot_normal
xavier_uniform = glorot_uniform
kaiming_normal = he_normal
kaiming_uniform = he_uniform

__all__ = [
    "Initializer",
    "JaxInitializer",
    *_FACTORIES,
    "kaiming_normal",
    "kaiming_uniform",
    "ones",
    "xavier_normal",
    "xavier_uniform",
    "zeros",
]

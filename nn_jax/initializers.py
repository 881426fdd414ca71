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
- ``glorot_*`` (``xavier_*``): variance ``2 / (fan_in + fan_out)``; ``he_*`` (``kaiming_*``):
  ``2 / fan_in``; ``lecun_*``: ``1 / fan_in``. ``*_normal`` variants use a truncated normal.
- ``orthogonal(scale=1.0, column_axis=-1)``: orthonormal rows or columns, whichever side is
  smaller, times ``scale``. On CPU it cannot draw ``bfloat16`` (no bfloat16 QR in LAPACK: JAX
  raises ``NotImplementedError``); draw in float32 and cast.

Each factory here takes the same arguments as its ``jax.nn.initializers`` namesake and gives the
same numbers, but returns a :class:`JaxInitializer`, a frozen value that names the factory and
its arguments: it prints as ``lecun_normal()`` or ``normal(stddev=0.02)`` (a layer's ``repr`` is a
readable config), compares by value and pickles (layers go to worker processes). JAX's own
factories return closures that do neither; they still work in every layer.

``Initializer`` is JAX's protocol type for annotating such functions.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable
from typing import Any

import jax
from jax.nn.initializers import Initializer, ones, zeros

_FACTORIES = (
    "constant",
    "glorot_normal",
    "glorot_uniform",
    "he_normal",
    "he_uniform",
    "kaiming_normal",
    "kaiming_uniform",
    "lecun_normal",
    "lecun_uniform",
    "normal",
    "orthogonal",
    "truncated_normal",
    "uniform",
    "variance_scaling",
    "xavier_normal",
    "xavier_uniform",
)


def _hashable(value: Any) -> Any:
    return tuple(_hashable(v) for v in value) if isinstance(value, list | tuple) else value


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
            raise ValueError(f"unknown initializer factory {self.factory!r}; one of {_FACTORIES}")

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
        return JaxInitializer(name, tuple((k, _hashable(v)) for k, v in bound.arguments.items()))

    make.__module__ = __name__
    make.__qualname__ = name
    return make


constant = _factory("constant")
glorot_normal = _factory("glorot_normal")
glorot_uniform = _factory("glorot_uniform")
he_normal = _factory("he_normal")
he_uniform = _factory("he_uniform")
kaiming_normal = _factory("kaiming_normal")
kaiming_uniform = _factory("kaiming_uniform")
lecun_normal = _factory("lecun_normal")
lecun_uniform = _factory("lecun_uniform")
normal = _factory("normal")
orthogonal = _factory("orthogonal")
truncated_normal = _factory("truncated_normal")
uniform = _factory("uniform")
variance_scaling = _factory("variance_scaling")
xavier_normal = _factory("xavier_normal")
xavier_uniform = _factory("xavier_uniform")

__all__ = [
    "Initializer",
    "JaxInitializer",
    *_FACTORIES,
    "ones",
    "zeros",
]

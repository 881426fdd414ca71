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

**Initializers that read the fan-in.** PyTorch draws a bias from ``U(-1/sqrt(fan_in),
1/sqrt(fan_in))``, where ``fan_in`` belongs to the layer's *weight*: the bias's own shape
``(features,)`` does not tell it. An initializer that needs it declares
``takes_fan_in = True`` (the :class:`FanInInitializer` protocol) and is called as
``init(key, shape, dtype, fan_in=n)``; layers call every initializer through
:func:`initialize`, which passes ``fan_in=`` only to those, so plain ``(key, shape, dtype)``
initializers, JAX's included, work unchanged. The fan-in each layer passes (to its weight and
bias initializers alike):

- ``Dense``: ``D``, the input features (``w: (D, F)``).
- ``Conv``: ``prod(kernel_size) * C_in / groups``; ``ConvTranspose``: ``prod(kernel_size) *
  F / groups``. Both are the kernel's size without its last axis (JAX's default ``in_axis=-2``),
  and both equal PyTorch's (whose ``ConvTranspose`` weight is ``(C_in, F / groups, *k)`` and
  whose fan-in is read from its axis 1).
- Recurrent cells: ``F`` for ``w_i``, ``H`` for ``w_h`` and ``b_hn``, ``F + H`` for ``b``
  (each pre-activation sums ``F`` inputs and ``H`` carry entries).
- ``MultiHeadAttention``: the rows of each kernel's 2-D view, ``F_q`` for ``w_q``/``b_q``,
  ``F_kv`` for ``w_k``, ``w_v``, ``b_k``, ``b_v`` and ``H * D`` for ``w_o``/``b_o``.

A layer that knows no fan-in (``Embedding``'s table, the normalization layers, graph layers'
own parameters) calls without it, and a fan-in initializer then raises a ``ConfigError``.

- ``uniform_fan_in(scale=1.0)``: ``U(-scale/sqrt(fan_in), scale/sqrt(fan_in))``, variance
  ``scale^2 / (3 fan_in)``. As a bias initializer it is PyTorch's ``nn.Linear``/``nn.Conv*d``
  bias; as a weight initializer it equals ``variance_scaling(1/3, "fan_in", "uniform")``,
  PyTorch's ``kaiming_uniform_(a=sqrt(5))`` weight.
- ``uniform_symmetric(bound, terms=1)``: ``U(-bound, bound)``, or the sum of ``terms``
  independent such draws (see :class:`UniformSymmetric`). PyTorch's recurrent cells draw every
  weight and bias from ``U(-1/sqrt(H), 1/sqrt(H))``.

:mod:`nn_jax.presets` applies PyTorch's defaults to a whole model.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
from collections.abc import Callable
from typing import Any, ClassVar, Protocol, runtime_checkable

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


_QR_FACTORIES = ("orthogonal", "delta_orthogonal")


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
        if dtype is None:
            return init(key, shape)
        if self.factory in _QR_FACTORIES and jnp.finfo(dtype).bits < 32:
            # The QR decomposition has no half-precision kernel on CPU: draw in float32, cast.
            return init(key, shape, jnp.float32).astype(dtype)
        return init(key, shape, dtype)

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


# --------------------------------------------------------------------------------------------
# Initializers that read the fan-in, and the one way layers call initializers.


@runtime_checkable
class FanInInitializer(Protocol):
    """An initializer that reads the fan-in of the layer's weight: ``takes_fan_in = True``.

    Called as ``init(key, shape, dtype=None, *, fan_in=n)`` by :func:`initialize`; see the
    module docstring for the fan-in each layer passes.
    """

    takes_fan_in: bool

    def __call__(
        self, key: jax.Array, shape: Any, dtype: Any = None, *, fan_in: int | None = None
    ) -> jax.Array: ...


def initialize(
    init: Callable[..., jax.Array],
    key: jax.Array,
    shape: Any,
    dtype: Any = None,
    *,
    fan_in: int | None = None,
) -> jax.Array:
    """``init(key, shape, dtype)``, with ``fan_in=`` added when ``init`` takes it.

    How layers call their initializers: a plain ``(key, shape, dtype)`` initializer (any of
    JAX's) is called as always; a :class:`FanInInitializer` also gets ``fan_in``.

    Args:
        init: the initializer.
        key: PRNG key.
        shape: the shape to draw.
        dtype: the dtype (``None``: the initializer's default).
        fan_in: the fan-in of the layer's weight (``None`` when the layer knows none).

    >>> import jax
    >>> initialize(uniform_fan_in(), jax.random.key(0), (3,), fan_in=4).shape
    (3,)
    """
    if getattr(init, "takes_fan_in", False) is True:
        return init(key, shape, dtype, fan_in=fan_in)
    return init(key, shape) if dtype is None else init(key, shape, dtype)


def _default_dtype(dtype: Any) -> Any:
    """``dtype``, or JAX's default float (float32, float64 under ``jax_enable_x64``)."""
    return jax.dtypes.canonicalize_dtype(jnp.float64) if dtype is None else dtype


def _check_number(factory: str, name: str, value: Any) -> float:
    value = _config_value(factory, name, value)
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ConfigError(f"{factory}: {name} must be a number >= 0, given {value!r}")
    return value


def _arguments_repr(factory: str, arguments: dict[str, Any], defaults: dict[str, Any]) -> str:
    shown = ", ".join(f"{k}={v!r}" for k, v in arguments.items() if v != defaults.get(k, object()))
    return f"{factory}({shown})"


@dataclasses.dataclass(frozen=True, repr=False)
class UniformFanIn:
    """``U(-scale / sqrt(fan_in), scale / sqrt(fan_in))``: PyTorch's ``nn.Linear``/``nn.Conv*d``
    bias (``scale=1``), a :class:`FanInInitializer`. Made by :func:`uniform_fan_in`.

    With ``fan_in == 0`` (an empty weight) it draws zeros, as PyTorch does.
    """

    scale: float = 1.0

    takes_fan_in: ClassVar[bool] = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "scale", _check_number("uniform_fan_in", "scale", self.scale))

    def __call__(
        self, key: jax.Array, shape: Any, dtype: Any = None, *, fan_in: int | None = None
    ) -> jax.Array:
        if fan_in is None:
            raise ConfigError(
                f"{self!r} needs the fan-in of a layer's weight, and this layer passes none; "
                "use it as w_init/b_init of Dense, Conv, ConvTranspose, a recurrent cell or "
                "MultiHeadAttention (see nn_jax.initializers), or give a fixed bound with "
                "uniform_symmetric(bound)"
            )
        bound = self.scale / math.sqrt(fan_in) if fan_in > 0 else 0.0
        return jax.random.uniform(key, shape, _default_dtype(dtype), -bound, bound)

    def __repr__(self) -> str:
        return _arguments_repr("uniform_fan_in", {"scale": self.scale}, {"scale": 1.0})


@dataclasses.dataclass(frozen=True, repr=False)
class UniformSymmetric:
    """``U(-bound, bound)``, or per entry the sum of ``terms`` independent such draws.

    Made by :func:`uniform_symmetric`. ``terms`` is an int (every entry), or a tuple with one
    entry per equal block of the last axis. It exists for PyTorch's recurrent cells, which have
    two biases per gate (``bias_ih`` and ``bias_hh``, each ``U(-1/sqrt(H), 1/sqrt(H))``) that
    nn_jax folds into one ``b``: an LSTM's ``b`` is their sum, ``terms=2``; a GRU's ``b`` is the
    sum on the ``r`` and ``z`` blocks but ``bias_ih`` alone on ``n`` (``bias_hh``'s ``n`` part
    is ``b_hn``), ``terms=(2, 2, 1)``. A sum of two draws is triangular on
    ``[-2 bound, 2 bound]`` with variance ``2 bound^2 / 3``.
    """

    bound: float
    terms: int | tuple[int, ...] = 1

    def __post_init__(self) -> None:
        factory = "uniform_symmetric"
        object.__setattr__(self, "bound", _check_number(factory, "bound", self.bound))
        terms = _config_value(factory, "terms", self.terms)
        per_block = terms if isinstance(terms, tuple) else (terms,)
        if not per_block or any(
            isinstance(t, bool) or not isinstance(t, int) or t < 1 for t in per_block
        ):
            raise ConfigError(
                f"{factory}: terms must be a positive int or a non-empty tuple of them, given "
                f"{self.terms!r}"
            )
        object.__setattr__(self, "terms", terms)

    def __call__(self, key: jax.Array, shape: Any, dtype: Any = None) -> jax.Array:
        dtype = _default_dtype(dtype)
        shape = tuple(shape)
        b = self.bound
        if isinstance(self.terms, int):
            if self.terms == 1:
                return jax.random.uniform(key, shape, dtype, -b, b)
            draws = jax.random.uniform(key, (self.terms, *shape), dtype, -b, b)
            return jnp.sum(draws, axis=0)
        blocks = len(self.terms)
        if not shape or shape[-1] % blocks:
            raise ConfigError(
                f"{self!r}: the last axis of shape {shape} must split into {blocks} equal "
                f"blocks, one per entry of terms={self.terms}"
            )
        most = max(self.terms)
        draws = jax.random.uniform(key, (most, *shape), dtype, -b, b)
        count = jnp.repeat(jnp.asarray(self.terms), shape[-1] // blocks)  # (last axis,)
        keep = jnp.arange(most)[:, None] < count[None, :]  # (most, last axis)
        keep = keep.reshape((most,) + (1,) * (len(shape) - 1) + (shape[-1],))
        return jnp.sum(jnp.where(keep, draws, jnp.zeros((), dtype)), axis=0)

    def __repr__(self) -> str:
        return _arguments_repr(
            "uniform_symmetric", {"bound": self.bound, "terms": self.terms}, {"terms": 1}
        )


def uniform_fan_in(scale: float = 1.0) -> UniformFanIn:
    """``U(-scale / sqrt(fan_in), scale / sqrt(fan_in))`` with the layer's fan-in.

    PyTorch's default bias of ``nn.Linear`` and ``nn.Conv*d``/``nn.ConvTranspose*d``
    (``scale=1``); as a weight initializer, PyTorch's ``kaiming_uniform_(a=sqrt(5))``. A
    :class:`FanInInitializer`: the layer passes ``fan_in`` (see the module docstring).

    >>> import jax
    >>> from nn_jax import Dense
    >>> layer = Dense(3, b_init=uniform_fan_in())
    >>> params, _ = layer.init(jax.random.key(0), jax.numpy.zeros((1, 100)))
    >>> bool(abs(params["b"]).max() <= 0.1)  # 1 / sqrt(100)
    True
    """
    return UniformFanIn(scale)


def uniform_symmetric(bound: float, terms: int | tuple[int, ...] = 1) -> UniformSymmetric:
    """``U(-bound, bound)`` (or a sum of ``terms`` such draws; see :class:`UniformSymmetric`).

    >>> import jax
    >>> init = uniform_symmetric(0.5)
    >>> init
    uniform_symmetric(bound=0.5)
    >>> bool(abs(init(jax.random.key(0), (1000,))).max() <= 0.5)
    True
    """
    return UniformSymmetric(bound, terms)


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
    "FanInInitializer",
    "Initializer",
    "JaxInitializer",
    "UniformFanIn",
    "UniformSymmetric",
    *_FACTORIES,
    "initialize",
    "kaiming_normal",
    "kaiming_uniform",
    "ones",
    "uniform_fan_in",
    "uniform_symmetric",
    "xavier_normal",
    "xavier_uniform",
    "zeros",
]

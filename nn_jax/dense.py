"""Dense building blocks: ``Dense`` (also under PyTorch's name ``Linear``), ``PReLU`` (a ReLU
with a learned negative slope), ``Flatten``, ``Reshape``.

Also here, for the other layer modules with a weight ``w`` and a bias ``b`` (convolutions,
recurrent cells, attention, graph layers), not re-exported at the top level:
``default_kernel_init``, ``weight_and_bias``, ``add_bias`` and ``project`` (``x @ w``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping
from dataclasses import KW_ONLY
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero

from nn_jax import initializers
from nn_jax._options import DtypeOptions
from nn_jax.core import (
    Array,
    Call,
    Initializer,
    Layer,
    ParameterFree,
    Params,
    PRNGKey,
    Size,
    State,
)
from nn_jax.errors import ConfigError, ShapeError

__all__ = ["Dense", "Flatten", "Linear", "PReLU", "Reshape"]

default_kernel_init: Initializer = initializers.lecun_normal()
"""LeCun normal, as in Flax; PyTorch's ``nn.Linear`` uses a uniform of the same scale family."""


def add_bias(y: Array, b: Array) -> Array:
    """``y + b`` with ``b`` broadcast explicitly along the trailing axes (no rank promotion)."""
    return y + b.reshape((1,) * (y.ndim - b.ndim) + b.shape)


def _dot(x: Array, w: Array, precision: Any) -> Array:
    """``x @ w`` as one ``dot_general``: the last axis of ``x`` with the first of ``w``."""
    return jax.lax.dot_general(x, w, (((x.ndim - 1,), (0,)), ((), ())), precision=precision)


def _dot_narrow_major(x: Array, w: Array, precision: Any) -> Array:
    """``x @ w`` computed as ``x @ (w.T).T`` with ``w.T`` behind an optimization barrier: its
    transpose in ``w`` (the weight gradient) is then ``g^T x``, computed ``(F, D)`` as Equinox
    and PyTorch store weights, and transposed after; the barrier keeps XLA's simplifier from
    folding that transpose back into the product."""
    w_t = jax.lax.optimization_barrier(w.T)
    return jax.lax.dot_general(x, w_t, (((x.ndim - 1,), (1,)), ((), ())), precision=precision)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def project_narrow_major_grad(x: Array, w: Array, precision: Any) -> Array:
    """``x @ w`` whose weight tangent (and so gradient) takes the ``(F, D)``-major GEMM on CPU."""
    return _dot(x, w, precision)


def _project_jvp(precision: Any, primals: Any, tangents: Any) -> tuple[Array, Array]:
    """``dx @ w + x @ dw`` with the second term narrow-major on CPU. A symbolic-zero tangent
    (a first layer's input) adds nothing; JAX never calls this with both zero."""
    (x, w), (dx, dw) = primals, tangents
    parts = []
    if not isinstance(dx, SymbolicZero):
        parts.append(_dot(dx, w, precision))
    if not isinstance(dw, SymbolicZero):
        narrow = functools.partial(_dot_narrow_major, precision=precision)
        plain = functools.partial(_dot, precision=precision)
        parts.append(jax.lax.platform_dependent(x, dw, cpu=narrow, default=plain))
    return _dot(x, w, precision), functools.reduce(jnp.add, parts)


project_narrow_major_grad.defjvp(_project_jvp, symbolic_zeros=True)


def project(x: Array, w: Array, precision: Any = None) -> Array:
    """``x @ w``: the last axis of ``x`` contracted with the first of a 2-D ``w``.

    On CPU, the gradient of a float32 ``w`` that maps many features to few
    (``2 <= F <= 32``, ``D >= 2 F``, and a product large enough to matter) is computed
    ``(F, D)``-major and then transposed: XLA:CPU's ``(D, F)`` GEMM is up to 2x slower there
    (``benchmarks/dense_grad_layout.py``; a 512 -> 10 classifier head, Cora's 1433 -> 16 GCN
    projection), and XLA folds a written-out transpose back into the slow form. The product,
    the input gradient, other backends, dtypes and shapes are one ``dot_general``. Values and
    derivatives of every order are the same either way (a ``jax.custom_jvp`` whose weight
    tangent is a ``jax.lax.platform_dependent``, resolved when the program is lowered).
    """
    d, f = w.shape
    rows = x.shape[:-1]
    narrow = isinstance(d, int) and isinstance(f, int) and 2 <= f <= 32 and d >= 2 * f
    narrow = narrow and x.dtype == w.dtype == jnp.float32  # bfloat16 measured no faster
    # a symbolic batch size (jax.export's shape polymorphism) counts as large
    small = all(isinstance(n, int) for n in rows) and math.prod(rows) * d * f < 2**18
    if narrow and not small:
        return project_narrow_major_grad(x, w, precision)
    return _dot(x, w, precision)


def weight_and_bias(layer: Any, key: PRNGKey, w_shape: tuple[int, ...]) -> Params:
    """``{"w": (w_shape), "b": (layer.features,)}`` made by ``layer.w_init`` and ``layer.b_init``.

    For layers with the fields ``features``, ``use_bias`` (no ``b`` when false), ``w_init``,
    ``b_init`` and ``param_dtype`` (the storage dtype), as :class:`Dense` and the convolutions.
    Initializers that take the fan-in (:class:`~nn_jax.initializers.FanInInitializer`) get
    ``fan_in = prod(w_shape[:-1])``: the kernel read with JAX's default axes (``in_axis=-2``,
    the rest receptive field).
    """
    w_key, b_key = jax.random.split(key)
    fan_in = math.prod(w_shape[:-1])
    dtype = layer.param_dtype
    params = {"w": initializers.initialize(layer.w_init, w_key, w_shape, dtype, fan_in=fan_in)}
    if layer.use_bias:
        shape = (layer.features,)
        params["b"] = initializers.initialize(layer.b_init, b_key, shape, dtype, fan_in=fan_in)
    return params


@dataclasses.dataclass(frozen=True)
class Dense(Layer, DtypeOptions):
    """Affine map over the last axis: ``y = x @ w + b``.

    Args:
        features: output size ``F``.
        use_bias: add ``b``.
        dtype: computation dtype; ``None`` uses the promoted dtype of input and params.
        param_dtype: storage dtype of ``w`` and ``b``.
        w_init, b_init: initializers with the ``(key, shape, dtype)`` signature (default LeCun
            normal and zeros); a :class:`~nn_jax.initializers.FanInInitializer` also gets
            ``fan_in=D``. PyTorch's defaults are ``w_init=variance_scaling(1/3, "fan_in",
            "uniform")`` and ``b_init=uniform_fan_in()`` (see :mod:`nn_jax.presets`).
        precision: passed to ``jax.lax.dot_general``.

    Input ``(..., D)`` floating-point -> output ``(..., F)`` (integer inputs are a
    ``ShapeError``: cast features, embed token ids). Params: ``w: (D, F)``, ``b: (F,)``.
    PyTorch's ``nn.Linear`` is this layer; :data:`Linear` is an alias of it under that name.

    >>> import jax, jax.numpy as jnp
    >>> params, _ = Dense(3).init(jax.random.key(0), jnp.zeros((2, 5)))
    >>> jax.tree.map(jnp.shape, params)
    {'b': (3,), 'w': (5, 3)}
    """

    features: Size
    _: KW_ONLY
    use_bias: bool = True
    w_init: Initializer = default_kernel_init
    b_init: Initializer = initializers.zeros

    def init(self, key: PRNGKey, x: Any) -> tuple[Params, State]:
        self.check_rank(x, 1)
        return weight_and_bias(self, key, (x.shape[-1], self.features)), {}

    def compute(self, params: Params, state: State, x: Any, call: Call) -> tuple[Array, State]:
        w = self.param(params, "w")
        x = jnp.asarray(x)
        if x.ndim == 0:
            self.check_rank(x, 1)
        check_floating(self, x)
        if w.ndim != 2 or w.shape[1] != self.features:
            raise self.error(
                ShapeError, f"parameter 'w' has shape {w.shape}, expected (in, {self.features})"
            )
        if x.shape[-1] != w.shape[0]:
            raise self.error(
                ShapeError,
                f"input last axis has size {x.shape[-1]} (input shape {x.shape}), expected "
                f"{w.shape[0]}, the size this layer was initialized with (w: {w.shape})",
            )
        dtype = self.dtype or jnp.result_type(x.dtype, w.dtype)
        y = project(x.astype(dtype), w.astype(dtype), self.precision)
        if self.use_bias:
            y = add_bias(y, self.param(params, "b", (self.features,)).astype(dtype))
        return y, {}


def check_floating(layer: Layer, x: Array) -> None:
    """A ``ShapeError`` unless ``x`` is floating-point: a linear layer's input is features,
    and integers there are usually token ids or labels given to the wrong layer."""
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise layer.error(
            ShapeError,
            f"expected floating-point inputs, given dtype {x.dtype} (input shape {x.shape}); "
            "cast features with x.astype(jnp.float32), or embed token ids with Embedding",
        )


Linear = Dense
"""Alias of :class:`Dense` under PyTorch's name (``torch.nn.Linear``), kept because PyTorch users
know it: the same class, so ``Linear(3) == Dense(3)``."""


default_alpha_init: Initializer = initializers.constant(0.25)
"""PReLU's initial slope, PyTorch's ``nn.PReLU(init=0.25)``."""


@dataclasses.dataclass(frozen=True)
class PReLU(Layer):
    """ReLU with a learned negative slope: ``y = x`` where ``x > 0``, else ``alpha * x``.

    PyTorch: ``nn.PReLU(num_parameters, init)``. ``num_parameters=1`` shares one slope over
    every element; ``num_parameters=C`` learns one slope per channel, the entries along
    ``channel_axis`` (which must have size ``C``). PyTorch's channel axis is 1 (``(N, C, ...)``);
    here it is ``-1`` by default (channels last): pass ``channel_axis=1`` for PyTorch's layout.
    The derivative at ``x = 0`` is ``alpha``, as PyTorch's.

    Args:
        num_parameters: number of slopes: 1 (shared) or the number of channels ``C``.
        channel_axis: the axis of ``x`` holding the channels (used when ``num_parameters > 1``).
        dtype: computation dtype; ``None`` uses the promoted dtype of input and ``alpha``.
        param_dtype: storage dtype of ``alpha``.
        alpha_init: ``(key, shape, dtype)`` initializer of the slopes; default
            ``constant(0.25)``, PyTorch's ``init=0.25`` (``nn.PReLU(init=v)`` is
            ``alpha_init=initializers.constant(v)``).

    Input ``(...)`` floating-point -> the same shape. Params ``alpha: (num_parameters,)``.

    >>> import jax, jax.numpy as jnp
    >>> layer = PReLU(3)
    >>> params, _ = layer.init(jax.random.key(0), jnp.zeros((2, 3)))
    >>> jax.tree.map(jnp.shape, params)
    {'alpha': (3,)}
    >>> layer(params, jnp.array([[-4.0, 0.0, 2.0]]))
    Array([[-1.,  0.,  2.]], dtype=float32)
    """

    num_parameters: Size = 1
    _: KW_ONLY
    channel_axis: int = -1
    dtype: Any = None
    param_dtype: Any = jnp.float32
    alpha_init: Initializer = default_alpha_init

    field_notes: ClassVar[Mapping[str, str]] = {"num_parameters": "the number of slopes"}

    def _alpha_shape(self, x: Any) -> tuple[int, ...]:
        """``alpha`` reshaped to broadcast against ``x`` (no rank promotion), after checking
        that ``x``'s channel axis has ``num_parameters`` entries."""
        if self.num_parameters == 1:
            return (1,) * jnp.ndim(x)
        shape = tuple(jnp.shape(x))
        if not -len(shape) <= self.channel_axis < len(shape):
            raise self.error(
                ShapeError,
                f"channel_axis={self.channel_axis} is outside the input's {len(shape)} axes "
                f"(input shape {shape}); with num_parameters={self.num_parameters} the input "
                "needs a channel axis",
            )
        axis = self.channel_axis % len(shape)
        if shape[axis] != self.num_parameters:
            raise self.error(
                ShapeError,
                f"input axis {self.channel_axis} (channel_axis) has size {shape[axis]} (input "
                f"shape {shape}), expected num_parameters={self.num_parameters}, one slope per "
                "channel; pass channel_axis=1 for PyTorch's (N, C, ...) layout",
            )
        return tuple(self.num_parameters if a == axis else 1 for a in range(len(shape)))

    def init(self, key: PRNGKey, x: Any) -> tuple[Params, State]:
        self._alpha_shape(x)
        alpha = initializers.initialize(
            self.alpha_init, key, (self.num_parameters,), self.param_dtype
        )
        return {"alpha": alpha}, {}

    def compute(self, params: Params, state: State, x: Any, call: Call) -> tuple[Array, State]:
        alpha = self.param(params, "alpha", (self.num_parameters,))
        x = jnp.asarray(x)
        check_floating(self, x)
        shape = self._alpha_shape(x)
        dtype = self.dtype or jnp.result_type(x.dtype, alpha.dtype)
        x, alpha = x.astype(dtype), alpha.astype(dtype).reshape(shape)
        return jnp.where(x > 0, x, alpha * x), {}


def _check_batch_dims(layer: Flatten | Reshape) -> None:
    if layer.batch_dims < 0:
        raise ConfigError(
            f"{type(layer).__name__}: batch_dims must be an int >= 0, given {layer.batch_dims!r}"
        )


@dataclasses.dataclass(frozen=True)
class Flatten(ParameterFree):
    """Flatten all axes after the first ``batch_dims``: ``(B, H, W, C) -> (B, H*W*C)``."""

    batch_dims: int = 1

    def __post_init__(self) -> None:
        _check_batch_dims(self)

    def transform(self, x: Any, call: Call) -> Array:
        if jnp.ndim(x) < self.batch_dims:
            self.check_rank(x, self.batch_dims)
        shape = jnp.shape(x)
        return jnp.reshape(x, (*shape[: self.batch_dims], math.prod(shape[self.batch_dims :])))


@dataclasses.dataclass(frozen=True)
class Reshape(ParameterFree):
    """Reshape the axes after the first ``batch_dims`` to ``shape`` (``-1`` allowed once)."""

    shape: tuple[int, ...]
    _: KW_ONLY
    batch_dims: int = 1

    def __post_init__(self) -> None:
        _check_batch_dims(self)
        if any(d < 1 and d != -1 for d in self.shape) or self.shape.count(-1) > 1:
            raise ConfigError(
                f"Reshape: shape must hold sizes >= 1 and at most one -1, given {self.shape!r}"
            )

    def transform(self, x: Any, call: Call) -> Array:
        batch, rest = jnp.shape(x)[: self.batch_dims], jnp.shape(x)[self.batch_dims :]
        known = math.prod(d for d in self.shape if d != -1)
        size = math.prod(rest)
        if (-1 in self.shape and size % known) or (-1 not in self.shape and size != known):
            raise self.error(
                ShapeError,
                f"cannot reshape per-example shape {rest} ({size} elements) to {self.shape}",
            )
        return jnp.reshape(x, (*batch, *self.shape))

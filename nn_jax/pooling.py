"""Pooling over 1-D, 2-D and 3-D inputs: max, average, global and adaptive average pooling.

Inputs are ``(*batch, *spatial, C)`` (channels last, the default) or ``(*batch, C, *spatial)``
with ``data_format="channels_first"``. Windowed pools are one ``jax.lax.reduce_window``; padding
takes the same forms as :class:`~nn_jax.conv.Conv`'s.

Sizes (``window``, ``strides``, ``output_size``) are an int, the same on every spatial axis
(``MaxPool(2)`` is a 2x2 pool on images, as PyTorch's ``MaxPool2d(2)``), or a tuple with one
entry per spatial axis (``MaxPool((2, 2))``), whose length is the spatial rank. With ints only,
the rank is read from the input at each call: ``x.ndim - 2``, i.e. the input has one batch axis,
``(N, *spatial, C)``; for an unbatched input or several batch axes (e.g. inside ``jax.vmap``
over examples) give a tuple. The global pools reduce ``spatial_dims`` axes.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import KW_ONLY
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from nn_jax import _spatial as sp
from nn_jax.core import Array, Call, ParameterFree
from nn_jax.errors import ConfigError, ShapeError

__all__ = ["AdaptiveAvgPool", "AvgPool", "GlobalAvgPool", "GlobalMaxPool", "MaxPool"]


@dataclasses.dataclass(frozen=True)
class _Pool(sp.SpatialRank, ParameterFree):
    """A windowed reduction; subclasses say how a window is reduced."""

    window: int | tuple[int, ...]
    _: KW_ONLY
    strides: int | tuple[int, ...] | None = None
    padding: Any = "VALID"
    data_format: str = "channels_last"

    rank_field: ClassVar[str] = "window"

    def __post_init__(self) -> None:
        if self.strides is None:
            object.__setattr__(self, "strides", self.window)
        sp.normalize_fields(self, {"window": 1, "strides": 1}, padding=True)
        sp.check_format(type(self).__name__, self.data_format)

    def _windows(self, x: Array) -> tuple[tuple[int, ...], dict[str, Any]]:
        """The spatial axes of ``x`` and full-rank ``reduce_window`` arguments for it."""
        pool = self.for_input(x)
        axes = sp.check_spatial_rank(self, x, len(pool.window), self.data_format)
        sizes = tuple(x.shape[a] for a in axes)
        pads = sp.resolve_padding(pool.padding, sizes, pool.window, pool.strides)
        outs = tuple(map(sp.out_size, sizes, pads, pool.window, pool.strides))
        if min(outs) <= 0:
            raise self.error(
                ShapeError,
                f"spatial input size {sizes} gives an empty output {outs} with window="
                f"{pool.window}, strides={pool.strides}, padding={pool.padding!r}",
            )
        window, strides, padding = [1] * x.ndim, [1] * x.ndim, [(0, 0)] * x.ndim
        for i, a in enumerate(axes):
            window[a], strides[a], padding[a] = pool.window[i], pool.strides[i], pads[i]
        return axes, {
            "window_dimensions": tuple(window),
            "window_strides": tuple(strides),
            "padding": tuple(padding),
        }


@dataclasses.dataclass(frozen=True)
class MaxPool(_Pool):
    """Max over each window; padded positions are ``-inf`` (never selected).

    Args:
        window: window size: an int (the same on every spatial axis; the rank is then
            ``x.ndim - 2``, see the module docstring) or a tuple of 1, 2 or 3 ints.
        strides: int or one per spatial axis; default ``window`` (non-overlapping windows).
        padding: ``"VALID"`` (default), ``"SAME"``, ``"CAUSAL"`` (1-D), an int, or one int or
            ``(lo, hi)`` pair per spatial axis.
        data_format: ``"channels_last"`` or ``"channels_first"``.

    Input ``(*batch, *spatial, C)`` -> ``(*batch, *out_spatial, C)``. No params.

    >>> import jax.numpy as jnp
    >>> MaxPool(2)({}, jnp.zeros((1, 6, 6, 3))).shape
    (1, 3, 3, 3)
    """

    def transform(self, x: Any, call: Call) -> Array:
        x = jnp.asarray(x)
        _, windows = self._windows(x)
        lowest = -jnp.inf if jnp.issubdtype(x.dtype, jnp.inexact) else jnp.iinfo(x.dtype).min
        return jax.lax.reduce_window(x, np.array(lowest, x.dtype), jax.lax.max, **windows)


@dataclasses.dataclass(frozen=True)
class AvgPool(_Pool):
    """Mean over each window.

    With ``count_include_pad=True`` (default, as PyTorch and Flax) every window is divided by
    ``prod(window)``, padded zeros included; with ``False`` only real input elements are
    counted, so border windows average what they cover.

    Args:
        window, strides, padding, data_format: as in :class:`MaxPool`.
        count_include_pad: count padded elements in the divisor.

    Input ``(*batch, *spatial, C)`` -> ``(*batch, *out_spatial, C)``. No params.
    """

    _: KW_ONLY
    count_include_pad: bool = True

    def transform(self, x: Any, call: Call) -> Array:
        x = jnp.asarray(x)
        axes, windows = self._windows(x)
        zero = np.array(0, x.dtype)
        sums = jax.lax.reduce_window(x, zero, jax.lax.add, **windows)
        if self.count_include_pad:
            return sums / math.prod(windows["window_dimensions"])
        ones = jnp.ones([d if a in axes else 1 for a, d in enumerate(x.shape)], x.dtype)
        return sums / jax.lax.reduce_window(ones, zero, jax.lax.add, **windows)


@dataclasses.dataclass(frozen=True)
class _GlobalPool(ParameterFree):
    """A reduction (``reduce``) over all spatial axes."""

    spatial_dims: int = 2
    _: KW_ONLY
    keepdims: bool = False
    data_format: str = "channels_last"

    reduce: ClassVar[Callable[..., Array]]

    def __post_init__(self) -> None:
        if not sp.is_int(self.spatial_dims) or not 1 <= self.spatial_dims <= 3:
            name = type(self).__name__
            raise ConfigError(
                f"{name}: spatial_dims must be 1, 2 or 3, given {self.spatial_dims!r}"
            )
        sp.check_format(type(self).__name__, self.data_format)

    def transform(self, x: Any, call: Call) -> Array:
        x = jnp.asarray(x)
        axes = sp.check_spatial_rank(self, x, self.spatial_dims, self.data_format)
        return type(self).reduce(x, axis=axes, keepdims=self.keepdims)


@dataclasses.dataclass(frozen=True)
class GlobalAvgPool(_GlobalPool):
    """Mean over all spatial axes: ``(*batch, *spatial, C) -> (*batch, C)``.

    Args:
        spatial_dims: number of spatial axes (1, 2 or 3), the axes just before the channels
            (or just after them, channels first).
        keepdims: keep the spatial axes with size 1.
        data_format: ``"channels_last"`` or ``"channels_first"``.
    """

    reduce = jnp.mean


@dataclasses.dataclass(frozen=True)
class GlobalMaxPool(_GlobalPool):
    """Max over all spatial axes: ``(*batch, *spatial, C) -> (*batch, C)``.

    Args: as :class:`GlobalAvgPool`.
    """

    reduce = jnp.max


def _adaptive_bins(size: int, out: int) -> list[tuple[int, int]]:
    """PyTorch's adaptive-pooling bins: bin ``i`` is ``[floor(i n / o), ceil((i + 1) n / o))``."""
    return [((i * size) // out, -((-(i + 1) * size) // out)) for i in range(out)]


@dataclasses.dataclass(frozen=True)
class AdaptiveAvgPool(sp.SpatialRank, ParameterFree):
    """Average pooling to a fixed output size, whatever the input size (PyTorch's bins).

    Along each spatial axis of size ``n``, output ``i`` of ``o`` is the mean of inputs
    ``floor(i n / o) <= j < ceil((i + 1) n / o)``; bins overlap when ``o`` does not divide
    ``n``, and ``o > n`` repeats inputs. Computed as one small averaging matrix per axis
    (a ``tensordot``), so it is linear, exact and differentiable.

    Args:
        output_size: target spatial size: an int (the same on every spatial axis; the rank is
            then ``x.ndim - 2``, see the module docstring) or a tuple of 1, 2 or 3 ints.
        data_format: ``"channels_last"`` or ``"channels_first"``.

    Input ``(*batch, *spatial, C)`` -> ``(*batch, *output_size, C)``. No params.

    >>> import jax.numpy as jnp
    >>> AdaptiveAvgPool((2, 3))({}, jnp.zeros((4, 7, 9, 5))).shape
    (4, 2, 3, 5)
    """

    output_size: int | tuple[int, ...]
    _: KW_ONLY
    data_format: str = "channels_last"

    rank_field: ClassVar[str] = "output_size"

    def __post_init__(self) -> None:
        sp.normalize_fields(self, {"output_size": 1})
        sp.check_format("AdaptiveAvgPool", self.data_format)

    def transform(self, x: Any, call: Call) -> Array:
        x = jnp.asarray(x)
        for axis, out in self.sizes_by_axis(x):
            matrix = np.zeros((x.shape[axis], out))
            for i, (lo, hi) in enumerate(_adaptive_bins(x.shape[axis], out)):
                matrix[lo:hi, i] = 1.0 / (hi - lo)
            x = jnp.moveaxis(
                jnp.tensordot(x, jnp.asarray(matrix, x.dtype), axes=((axis,), (0,))), -1, axis
            )
        return x

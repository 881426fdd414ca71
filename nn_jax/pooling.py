"""Pooling over 1-D, 2-D and 3-D inputs: max, average, global and adaptive average pooling.

Inputs are ``(*batch, *spatial, C)`` (channels last, the default) or ``(*batch, C, *spatial)``
with ``data_format="channels_first"``; the spatial rank is the length of the window (or of
``output_size``, or ``spatial_dims`` for the global pools). Windowed pools are one
``jax.lax.reduce_window``; padding takes the same forms as :class:`~nn_jax.conv.Conv`'s.
"""

from __future__ import annotations

import dataclasses
from dataclasses import KW_ONLY
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nn_jax import _spatial as sp
from nn_jax.core import Array, Call, Layer, Params, PRNGKey, State
from nn_jax.errors import ConfigError, ShapeError

__all__ = ["AdaptiveAvgPool", "AvgPool", "GlobalAvgPool", "GlobalMaxPool", "MaxPool"]


@dataclasses.dataclass(frozen=True)
class _Pool(Layer):
    """A windowed reduction; subclasses say how a window is reduced."""

    window: tuple[int, ...]
    _: KW_ONLY
    strides: int | tuple[int, ...] | None = None
    padding: Any = "VALID"
    data_format: str = "channels_last"

    def __post_init__(self) -> None:
        name = type(self).__name__
        window = sp.window_tuple(name, "window", self.window)
        object.__setattr__(self, "window", window)
        strides = window if self.strides is None else self.strides
        object.__setattr__(self, "strides", sp.int_tuple(name, "strides", strides, len(window)))
        object.__setattr__(self, "padding", sp.normalize_padding(name, self.padding, len(window)))
        sp.check_format(name, self.data_format)

    def init(self, key: PRNGKey, x: Any) -> tuple[Params, State]:
        return {}, {}

    def _windows(self, x: Array) -> tuple[tuple[int, ...], tuple[int, ...], list[tuple[int, int]]]:
        """Full-rank window, strides and padding for ``reduce_window`` on ``x``."""
        n = len(self.window)
        sp.check_spatial_rank(self, x, n, self.data_format)
        axes = sp.spatial_axes(x.ndim, n, self.data_format)
        sizes = tuple(x.shape[a] for a in axes)
        pads = sp.resolve_padding(self.padding, sizes, self.window, self.strides)
        outs = tuple(map(sp.out_size, sizes, pads, self.window, self.strides))
        if min(outs) <= 0:
            raise self.error(
                ShapeError,
                f"spatial input size {sizes} gives an empty output {outs} with window="
                f"{self.window}, strides={self.strides}, padding={self.padding!r}",
            )
        window, strides, padding = [1] * x.ndim, [1] * x.ndim, [(0, 0)] * x.ndim
        for i, a in enumerate(axes):
            window[a], strides[a], padding[a] = self.window[i], self.strides[i], pads[i]
        return tuple(window), tuple(strides), padding


@dataclasses.dataclass(frozen=True)
class MaxPool(_Pool):
    """Max over each window; padded positions are ``-inf`` (never selected).

    Args:
        window: window size, a tuple of 1, 2 or 3 ints (its length is the spatial rank).
        strides: int or one per spatial axis; default ``window`` (non-overlapping windows).
        padding: ``"VALID"`` (default), ``"SAME"``, ``"CAUSAL"`` (1-D), an int, or one int or
            ``(lo, hi)`` pair per spatial axis.
        data_format: ``"channels_last"`` or ``"channels_first"``.

    Input ``(*batch, *spatial, C)`` -> ``(*batch, *out_spatial, C)``. No params.

    >>> import jax.numpy as jnp
    >>> MaxPool((2, 2))({}, jnp.zeros((1, 6, 6, 3))).shape
    (1, 3, 3, 3)
    """

    def compute(self, params: Params, state: State, x: Any, call: Call) -> tuple[Array, State]:
        x = jnp.asarray(x)
        window, strides, padding = self._windows(x)
        lowest = -jnp.inf if jnp.issubdtype(x.dtype, jnp.inexact) else jnp.iinfo(x.dtype).min
        y = jax.lax.reduce_window(
            x, np.array(lowest, x.dtype), jax.lax.max, window, strides, padding
        )
        return y, {}


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

    def compute(self, params: Params, state: State, x: Any, call: Call) -> tuple[Array, State]:
        x = jnp.asarray(x)
        window, strides, padding = self._windows(x)
        sums = jax.lax.reduce_window(x, np.array(0, x.dtype), jax.lax.add, window, strides, padding)
        if self.count_include_pad:
            return sums / np.prod(window), {}
        axes = sp.spatial_axes(x.ndim, len(self.window), self.data_format)
        ones = jnp.ones([d if a in axes else 1 for a, d in enumerate(x.shape)], x.dtype)
        counts = jax.lax.reduce_window(
            ones, np.array(0, x.dtype), jax.lax.add, window, strides, padding
        )
        return sums / counts, {}


@dataclasses.dataclass(frozen=True)
class _GlobalPool(Layer):
    """A reduction over all spatial axes."""

    spatial_dims: int = 2
    _: KW_ONLY
    keepdims: bool = False
    data_format: str = "channels_last"

    def __post_init__(self) -> None:
        if not sp.is_int(self.spatial_dims) or not 1 <= self.spatial_dims <= 3:
            name = type(self).__name__
            raise ConfigError(
                f"{name}: spatial_dims must be 1, 2 or 3, given {self.spatial_dims!r}"
            )
        sp.check_format(type(self).__name__, self.data_format)

    def init(self, key: PRNGKey, x: Any) -> tuple[Params, State]:
        return {}, {}

    def _axes(self, x: Array) -> tuple[int, ...]:
        sp.check_spatial_rank(self, x, self.spatial_dims, self.data_format)
        return sp.spatial_axes(x.ndim, self.spatial_dims, self.data_format)


@dataclasses.dataclass(frozen=True)
class GlobalAvgPool(_GlobalPool):
    """Mean over all spatial axes: ``(*batch, *spatial, C) -> (*batch, C)``.

    Args:
        spatial_dims: number of spatial axes (1, 2 or 3), the axes just before the channels
            (or just after them, channels first).
        keepdims: keep the spatial axes with size 1.
        data_format: ``"channels_last"`` or ``"channels_first"``.
    """

    def compute(self, params: Params, state: State, x: Any, call: Call) -> tuple[Array, State]:
        x = jnp.asarray(x)
        return jnp.mean(x, axis=self._axes(x), keepdims=self.keepdims), {}


@dataclasses.dataclass(frozen=True)
class GlobalMaxPool(_GlobalPool):
    """Max over all spatial axes: ``(*batch, *spatial, C) -> (*batch, C)``.

    Args: as :class:`GlobalAvgPool`.
    """

    def compute(self, params: Params, state: State, x: Any, call: Call) -> tuple[Array, State]:
        x = jnp.asarray(x)
        return jnp.max(x, axis=self._axes(x), keepdims=self.keepdims), {}


def _adaptive_bins(size: int, out: int) -> list[tuple[int, int]]:
    """PyTorch's adaptive-pooling bins: bin ``i`` is ``[floor(i n / o), ceil((i + 1) n / o))``."""
    return [((i * size) // out, -((-(i + 1) * size) // out)) for i in range(out)]


@dataclasses.dataclass(frozen=True)
class AdaptiveAvgPool(Layer):
    """Average pooling to a fixed output size, whatever the input size (PyTorch's bins).

    Along each spatial axis of size ``n``, output ``i`` of ``o`` is the mean of inputs
    ``floor(i n / o) <= j < ceil((i + 1) n / o)``; bins overlap when ``o`` does not divide
    ``n``, and ``o > n`` repeats inputs. Computed as one small averaging matrix per axis
    (a ``tensordot``), so it is linear, exact and differentiable.

    Args:
        output_size: target spatial size, a tuple of 1, 2 or 3 ints (its length is the rank).
        data_format: ``"channels_last"`` or ``"channels_first"``.

    Input ``(*batch, *spatial, C)`` -> ``(*batch, *output_size, C)``. No params.

    >>> import jax.numpy as jnp
    >>> AdaptiveAvgPool((2, 3))({}, jnp.zeros((4, 7, 9, 5))).shape
    (4, 2, 3, 5)
    """

    output_size: tuple[int, ...]
    _: KW_ONLY
    data_format: str = "channels_last"

    def __post_init__(self) -> None:
        size = sp.window_tuple("AdaptiveAvgPool", "output_size", self.output_size)
        object.__setattr__(self, "output_size", size)
        sp.check_format("AdaptiveAvgPool", self.data_format)

    def init(self, key: PRNGKey, x: Any) -> tuple[Params, State]:
        return {}, {}

    def compute(self, params: Params, state: State, x: Any, call: Call) -> tuple[Array, State]:
        x = jnp.asarray(x)
        n = len(self.output_size)
        sp.check_spatial_rank(self, x, n, self.data_format)
        for axis, out in zip(
            sp.spatial_axes(x.ndim, n, self.data_format), self.output_size, strict=True
        ):
            matrix = np.zeros((x.shape[axis], out))
            for i, (lo, hi) in enumerate(_adaptive_bins(x.shape[axis], out)):
                matrix[lo:hi, i] = 1.0 / (hi - lo)
            x = jnp.moveaxis(
                jnp.tensordot(x, jnp.asarray(matrix, x.dtype), axes=((axis,), (0,))), -1, axis
            )
        return x, {}

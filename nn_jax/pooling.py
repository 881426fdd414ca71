"""Pooling over 1-D, 2-D and 3-D inputs: max, average, global and adaptive (max and average).

Inputs are ``(*batch, *spatial, C)`` (channels last, the default) or ``(*batch, C, *spatial)``
with ``data_format="channels_first"``. Windowed pools are one ``jax.lax.reduce_window``; padding
takes the same forms as :class:`~nn_jax.conv.Conv`'s.

Sizes (``window``, ``strides``, ``output_size``) are an int, the same on every spatial axis
(``MaxPool(2)`` is a 2x2 pool on images, as PyTorch's ``MaxPool2d(2)``), or a tuple with one
entry per spatial axis (``MaxPool((2, 2))``), whose length is the spatial rank. With ints only,
the rank is read from the input at each call: ``x.ndim - 2``, i.e. the input has one batch axis,
``(N, *spatial, C)``; for an unbatched input or several batch axes (e.g. inside ``jax.vmap``
over examples) give a tuple. The global pools reduce ``spatial_dims`` axes.

PyTorch: :class:`MaxPool` is ``nn.MaxPool1d/2d/3d`` (``dilation``, ``ceil_mode``; no
``return_indices``), :class:`AvgPool` is ``nn.AvgPool1d/2d/3d`` (``ceil_mode``,
``count_include_pad`` with PyTorch's divisors; no ``divisor_override``), and
:class:`AdaptiveAvgPool` / :class:`AdaptiveMaxPool` are ``nn.AdaptiveAvgPool*d`` /
``nn.AdaptiveMaxPool*d``, with the same output sizes and values. PyTorch's ``(N, C, *spatial)``
layout is ``data_format="channels_first"``; an int ``padding`` is PyTorch's (both sides).
"""

from __future__ import annotations

import abc
import dataclasses
import itertools
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

__all__ = [
    "AdaptiveAvgPool",
    "AdaptiveMaxPool",
    "AvgPool",
    "GlobalAvgPool",
    "GlobalMaxPool",
    "MaxPool",
]


@dataclasses.dataclass(frozen=True)
class _Pool(sp.SpatialRank, ParameterFree):
    """A windowed reduction; subclasses say how a window is reduced."""

    window: int | tuple[int, ...]
    _: KW_ONLY
    strides: int | tuple[int, ...] | None = None
    padding: Any = "VALID"
    data_format: str = "channels_last"
    ceil_mode: bool = False

    rank_field: ClassVar[str] = "window"
    _sizes: ClassVar[dict[str, int]] = {"window": 1, "strides": 1}

    def __post_init__(self) -> None:
        if self.strides is None:
            object.__setattr__(self, "strides", self.window)
        sp.normalize_fields(self, self._sizes, padding=True)
        sp.check_format(type(self).__name__, self.data_format)

    def _dilation(self) -> tuple[int, ...]:
        """The window dilation per spatial axis (of a layer with tuple sizes)."""
        return (1,) * len(self.window)  # type: ignore[arg-type]

    def _windows(self, x: Array) -> tuple[tuple[int, ...], dict[str, Any], tuple[int, ...]]:
        """The spatial axes of ``x``, full-rank ``reduce_window`` arguments for it, and the
        ``ceil_mode`` extension per spatial axis.

        With ``ceil_mode``, windows that hang over the high edge of the padded input get that
        much extra high padding (added to ``padding``), filled with the reduction's init value
        (``-inf`` for max, ``0`` for sums)."""
        pool = self.for_input(x)
        axes = sp.check_spatial_rank(self, x, len(pool.window), self.data_format)
        sizes = tuple(x.shape[a] for a in axes)
        dilation = pool._dilation()
        spans = tuple(map(sp.dilate, pool.window, dilation))
        pads = sp.resolve_padding(pool.padding, sizes, spans, pool.strides)
        outs = tuple(
            sp.out_size(n, p, k, s, self.ceil_mode)
            for n, p, k, s in zip(sizes, pads, spans, pool.strides, strict=True)
        )
        if min(outs) <= 0:
            raise self.error(
                ShapeError,
                f"spatial input size {sizes} gives an empty output {outs} with window="
                f"{pool.window}, strides={pool.strides}, padding={pool.padding!r}"
                + (f", dilation={dilation}" if max(dilation) > 1 else ""),
            )
        extras = tuple(
            max((o - 1) * s + k - (n + lo + hi), 0)
            for o, s, k, n, (lo, hi) in zip(outs, pool.strides, spans, sizes, pads, strict=True)
        )
        window, strides, padding = [1] * x.ndim, [1] * x.ndim, [(0, 0)] * x.ndim
        dilations = [1] * x.ndim
        for i, a in enumerate(axes):
            window[a], strides[a], dilations[a] = pool.window[i], pool.strides[i], dilation[i]
            padding[a] = (pads[i][0], pads[i][1] + extras[i])
        windows = {
            "window_dimensions": tuple(window),
            "window_strides": tuple(strides),
            "padding": tuple(padding),
            "window_dilation": tuple(dilations),
        }
        return axes, windows, extras


@dataclasses.dataclass(frozen=True)
class MaxPool(_Pool):
    """Max over each window; padded positions are ``-inf`` (never selected).

    PyTorch: ``nn.MaxPool1d/2d/3d(kernel_size, stride, padding, dilation, ceil_mode)`` (an int
    ``padding`` here is PyTorch's, on both sides of each spatial axis).

    Output size per spatial axis of size ``n`` padded by ``(lo, hi)``, with the dilated window
    ``k' = dilation (window - 1) + 1``: ``floor((n + lo + hi - k') / s) + 1``; with
    ``ceil_mode=True`` the division rounds up, and the last window is dropped when it would
    start inside the right padding (PyTorch's rule). Windows that then hang over the edge
    take the max of what they cover.

    Args:
        window: window size: an int (the same on every spatial axis; the rank is then
            ``x.ndim - 2``, see the module docstring) or a tuple of 1, 2 or 3 ints.
        strides: int or one per spatial axis; default ``window`` (non-overlapping windows).
        padding: ``"VALID"`` (default), ``"SAME"``, ``"CAUSAL"`` (1-D), an int, or one int or
            ``(lo, hi)`` pair per spatial axis. ``"SAME"`` and ``"CAUSAL"`` account for the
            dilation.
        data_format: ``"channels_last"`` or ``"channels_first"``.
        ceil_mode: round the output size up (PyTorch ``nn.MaxPool2d(ceil_mode=True)``); no
            effect with ``"SAME"``, which already covers the input.
        dilation: window dilation, an int or one per spatial axis: the window reads every
            ``dilation``-th element (PyTorch ``nn.MaxPool2d(dilation=...)``). A dilated pool
            is computed as the max of one strided slice per window position (JAX has no
            gradient for a dilated ``reduce_window`` max).

    Input ``(*batch, *spatial, C)`` -> ``(*batch, *out_spatial, C)``. No params.

    >>> import jax.numpy as jnp
    >>> MaxPool(2)({}, jnp.zeros((1, 6, 6, 3))).shape
    (1, 3, 3, 3)
    >>> MaxPool(2, ceil_mode=True)({}, jnp.zeros((1, 5, 5, 3))).shape
    (1, 3, 3, 3)
    """

    _: KW_ONLY
    dilation: int | tuple[int, ...] = 1

    _sizes: ClassVar[dict[str, int]] = {"window": 1, "strides": 1, "dilation": 1}

    def _dilation(self) -> tuple[int, ...]:
        return self.dilation  # type: ignore[return-value]

    def transform(self, x: Any, call: Call) -> Array:
        x = jnp.asarray(x)
        _, windows, _ = self._windows(x)
        lowest = -jnp.inf if jnp.issubdtype(x.dtype, jnp.inexact) else jnp.iinfo(x.dtype).min
        init = np.array(lowest, x.dtype)
        if max(windows["window_dilation"]) == 1:
            return jax.lax.reduce_window(x, init, jax.lax.max, **windows)
        return _max_over_taps(x, init, **windows)


def _max_over_taps(
    x: Array,
    init: Any,
    *,
    window_dimensions: tuple[int, ...],
    window_strides: tuple[int, ...],
    padding: tuple[tuple[int, int], ...],
    window_dilation: tuple[int, ...],
) -> Array:
    """A dilated max pool as the max of ``prod(window)`` strided slices, one per window tap.

    The same numbers as ``reduce_window(..., window_dilation=...)``, but differentiable: JAX
    has no gradient for a max ``reduce_window`` with window dilation.
    """
    padded = jax.lax.pad(x, init, [(lo, hi, 0) for lo, hi in padding])
    outs = [
        (n - sp.dilate(k, d)) // s + 1
        for n, k, d, s in zip(
            padded.shape, window_dimensions, window_dilation, window_strides, strict=True
        )
    ]
    y = None
    for taps in itertools.product(*map(range, window_dimensions)):
        start = [t * d for t, d in zip(taps, window_dilation, strict=True)]
        limit = [b + (o - 1) * s + 1 for b, o, s in zip(start, outs, window_strides, strict=True)]
        tap = jax.lax.slice(padded, start, limit, window_strides)
        y = tap if y is None else jnp.maximum(y, tap)
    assert y is not None
    return y


@dataclasses.dataclass(frozen=True)
class AvgPool(_Pool):
    """Mean over each window, with PyTorch's divisors.

    PyTorch: ``nn.AvgPool1d/2d/3d(kernel_size, stride, padding, ceil_mode,
    count_include_pad)``. The divisor of a window is the number of positions it covers:

    - ``count_include_pad=True`` (default, as PyTorch and Flax): positions inside the padded
      input (input and padding), i.e. ``prod(window)`` except for a window that hangs over the
      high edge in ``ceil_mode``, which counts only what it covers of the padded input;
    - ``count_include_pad=False``: real input positions only, so border windows average what
      they cover.

    Args:
        window, strides, padding, data_format: as in :class:`MaxPool`.
        ceil_mode: round the output size up, PyTorch's rule (see :class:`MaxPool`; PyTorch
            ``nn.AvgPool2d(ceil_mode=True)``).
        count_include_pad: count padded elements in the divisor (PyTorch
            ``count_include_pad``).

    Input ``(*batch, *spatial, C)`` -> ``(*batch, *out_spatial, C)``. No params.

    >>> import jax.numpy as jnp
    >>> AvgPool((2,), ceil_mode=True)({}, jnp.arange(5.0).reshape(1, 5, 1))[0, :, 0]
    Array([0.5, 2.5, 4. ], dtype=float32)
    """

    _: KW_ONLY
    count_include_pad: bool = True

    def transform(self, x: Any, call: Call) -> Array:
        x = jnp.asarray(x)
        axes, windows, extras = self._windows(x)
        zero = np.array(0, x.dtype)
        sums = jax.lax.reduce_window(x, zero, jax.lax.add, **windows)
        if self.count_include_pad and not any(extras):
            return sums / math.prod(windows["window_dimensions"])
        # The divisor: a window sum over ones laid on the positions that count, zeros elsewhere.
        pads = windows["padding"]
        if self.count_include_pad:  # ones on the padded input, zeros on the ceil_mode extension
            shape = [1] * x.ndim
            padding = [(0, 0)] * x.ndim
            for a, extra in zip(axes, extras, strict=True):
                shape[a] = pads[a][0] + x.shape[a] + pads[a][1] - extra
                padding[a] = (0, extra)
        else:  # ones on the input only
            shape = [d if a in axes else 1 for a, d in enumerate(x.shape)]
            padding = list(pads)
        ones = jnp.ones(shape, x.dtype)
        counts = jax.lax.reduce_window(ones, zero, jax.lax.add, **{**windows, "padding": padding})
        return sums / counts


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
class _AdaptivePool(sp.SpatialRank, ParameterFree):
    """Pooling to a fixed output size over PyTorch's bins (:func:`_adaptive_bins`), one
    spatial axis at a time (max and mean over a box are both separable); subclasses reduce
    one axis's bins."""

    output_size: int | tuple[int, ...]
    _: KW_ONLY
    data_format: str = "channels_last"

    rank_field: ClassVar[str] = "output_size"

    def __post_init__(self) -> None:
        sp.normalize_fields(self, {"output_size": 1})
        sp.check_format(type(self).__name__, self.data_format)

    @abc.abstractmethod
    def _pool_axis(self, x: Array, axis: int, bins: list[tuple[int, int]]) -> Array:
        """``x`` with ``axis`` replaced by one entry per bin ``[lo, hi)``."""

    def transform(self, x: Any, call: Call) -> Array:
        x = jnp.asarray(x)
        for axis, out in self.sizes_by_axis(x):
            x = self._pool_axis(x, axis, _adaptive_bins(x.shape[axis], out))
        return x


@dataclasses.dataclass(frozen=True)
class AdaptiveAvgPool(_AdaptivePool):
    """Average pooling to a fixed output size, whatever the input size (PyTorch's bins).

    PyTorch: ``nn.AdaptiveAvgPool1d/2d/3d(output_size)``. Along each spatial axis of size
    ``n``, output ``i`` of ``o`` is the mean of inputs ``floor(i n / o) <= j < ceil((i + 1) n /
    o)``; bins overlap when ``o`` does not divide ``n``, and ``o > n`` repeats inputs.
    Computed as one small averaging matrix per axis (a ``tensordot``), so it is linear, exact
    and differentiable.

    Args:
        output_size: target spatial size: an int (the same on every spatial axis; the rank is
            then ``x.ndim - 2``, see the module docstring) or a tuple of 1, 2 or 3 ints.
        data_format: ``"channels_last"`` or ``"channels_first"``.

    Input ``(*batch, *spatial, C)`` -> ``(*batch, *output_size, C)``. No params.

    >>> import jax.numpy as jnp
    >>> AdaptiveAvgPool((2, 3))({}, jnp.zeros((4, 7, 9, 5))).shape
    (4, 2, 3, 5)
    """

    def _pool_axis(self, x: Array, axis: int, bins: list[tuple[int, int]]) -> Array:
        matrix = np.zeros((x.shape[axis], len(bins)))
        for i, (lo, hi) in enumerate(bins):
            matrix[lo:hi, i] = 1.0 / (hi - lo)
        y = jnp.tensordot(x, jnp.asarray(matrix, x.dtype), axes=((axis,), (0,)))
        return jnp.moveaxis(y, -1, axis)


@dataclasses.dataclass(frozen=True)
class AdaptiveMaxPool(_AdaptivePool):
    """Max pooling to a fixed output size, whatever the input size (PyTorch's bins).

    PyTorch: ``nn.AdaptiveMaxPool1d/2d/3d(output_size)`` (without ``return_indices``). The
    bins are :class:`AdaptiveAvgPool`'s: along each spatial axis of size ``n``, output ``i`` of
    ``o`` is the max of inputs ``floor(i n / o) <= j < ceil((i + 1) n / o)``. Computed per
    axis as one gather of the bins (padded to the longest by repeating their last element)
    and a max.

    Args:
        output_size: target spatial size: an int (the same on every spatial axis; the rank is
            then ``x.ndim - 2``, see the module docstring) or a tuple of 1, 2 or 3 ints.
        data_format: ``"channels_last"`` or ``"channels_first"``.

    Input ``(*batch, *spatial, C)`` -> ``(*batch, *output_size, C)``. No params.

    >>> import jax.numpy as jnp
    >>> AdaptiveMaxPool((3,))({}, jnp.arange(7.0).reshape(1, 7, 1))[0, :, 0]
    Array([2., 4., 6.], dtype=float32)
    """

    def _pool_axis(self, x: Array, axis: int, bins: list[tuple[int, int]]) -> Array:
        longest = max(hi - lo for lo, hi in bins)
        index = np.array([[min(lo + j, hi - 1) for j in range(longest)] for lo, hi in bins])
        gathered = jnp.take(x, jnp.asarray(index.reshape(-1)), axis=axis)
        shape = (*x.shape[:axis], len(bins), longest, *x.shape[axis + 1 :])
        return jnp.max(gathered.reshape(shape), axis=axis + 1)

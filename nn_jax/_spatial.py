"""Private helpers shared by the spatial layers (conv, pooling, resize): option normalization,
the spatial rank, padding resolution and the channels-last / channels-first layout.

Layouts: ``"channels_last"`` is ``(*batch, *spatial, C)`` (NWC, NHWC, NDHWC);
``"channels_first"`` is ``(*batch, C, *spatial)`` (NCW, NCHW, NCDHW).

Sizes (kernel, window, strides, dilation, output size, scale) are an int, the same on every
spatial axis, or a tuple with one entry per spatial axis. A tuple (or explicit padding pairs, or
``"CAUSAL"`` padding, which is 1-D) fixes the spatial rank when the layer is built; a layer
whose sizes are all ints reads its rank from the input, ``x.ndim - 2`` (one batch axis:
``(N, *spatial, C)``), as PyTorch's ``Conv2d(..., 3)`` means a 3x3 kernel.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import jax
import numpy as np

from nn_jax.errors import ConfigError, ShapeError

DATA_FORMATS = ("channels_last", "channels_first")
PAD_STRINGS = ("SAME", "VALID", "CAUSAL")

Padding = str | int | tuple[tuple[int, int], ...]
"""Normalized padding: ``"SAME"``, ``"VALID"``, ``"CAUSAL"``, an int (the same ``(p, p)`` on every
axis, while the rank is unknown) or one ``(lo, hi)`` pair per axis."""


def is_int(v: Any) -> bool:
    """An int or a NumPy integer, not a bool (callers store ``int(v)``)."""
    return isinstance(v, int | np.integer) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
    """A real Python or NumPy number, not a bool."""
    return isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool)


def size_option(owner: str, name: str, value: Any, *, minimum: int = 1) -> int | tuple[int, ...]:
    """An int ``>= minimum`` (the same on every spatial axis) or a tuple of 1 to 3 such ints."""
    if is_int(value) and value >= minimum:
        return int(value)
    if (
        isinstance(value, Sequence)
        and not isinstance(value, str)
        and 1 <= len(value) <= 3
        and all(is_int(v) and v >= minimum for v in value)
    ):
        return tuple(int(v) for v in value)
    raise ConfigError(
        f"{owner}: {name} must be an int >= {minimum} (the same on every spatial axis) or a "
        f"tuple of 1 to 3 such ints (one per spatial axis, e.g. (3, 3) for 2-D inputs), given "
        f"{value!r}"
    )


def padding_option(owner: str, padding: Any) -> Padding:
    """``"SAME"``/``"VALID"``/``"CAUSAL"`` (any case), an int, or one int or (lo, hi) pair per
    spatial axis (returned as pairs)."""
    if isinstance(padding, str) and padding.upper() in PAD_STRINGS:
        return padding.upper()
    if is_int(padding):
        return int(padding)
    pairs = []
    if isinstance(padding, Sequence) and not isinstance(padding, str) and 1 <= len(padding) <= 3:
        for e in padding:
            pair = (e, e) if is_int(e) else e
            if isinstance(pair, Sequence) and len(pair) == 2 and all(is_int(p) for p in pair):
                pairs.append((int(pair[0]), int(pair[1])))
    if not pairs or len(pairs) != len(padding):
        raise ConfigError(
            f"{owner}: padding must be one of {PAD_STRINGS}, an int, or a tuple of one int or "
            f"(lo, hi) pair per spatial axis, given {padding!r}"
        )
    return tuple(pairs)


def per_axis(value: Any, n: int) -> tuple[Any, ...]:
    """``value`` repeated ``n`` times if it is a scalar, else ``value`` (already per axis)."""
    return value if isinstance(value, tuple) else (value,) * n


def normalize_fields(layer: Any, sizes: Mapping[str, int], *, padding: bool = False) -> int | None:
    """Validate and normalize a frozen layer's spatial size fields (and ``padding``) in place.

    ``sizes`` maps field names to their minimum value. Returns the spatial rank fixed by the
    options (a tuple, padding pairs or ``"CAUSAL"``), with every field then a tuple of that
    length, or ``None`` when all are ints (the rank comes from the input).
    """
    owner = type(layer).__name__
    values = {
        name: size_option(owner, name, getattr(layer, name), minimum=minimum)
        for name, minimum in sizes.items()
    }
    ranks = {name: len(v) for name, v in values.items() if isinstance(v, tuple)}
    pad: Any = padding_option(owner, layer.padding) if padding else None
    if isinstance(pad, tuple):
        ranks["padding"] = len(pad)
    shown = ", ".join(f"{name}={({**values, 'padding': pad})[name]!r}" for name in ranks)
    if pad == "CAUSAL" and any(r != 1 for r in ranks.values()):
        raise ConfigError(
            f"{owner}: padding 'CAUSAL' is for 1-D inputs, given {shown}; pass explicit "
            "(lo, hi) pairs instead"
        )
    if len(set(ranks.values())) > 1:
        raise ConfigError(
            f"{owner}: the options disagree on the number of spatial axes, given {shown}; give "
            "every tuple one entry per spatial axis (or an int, the same on every axis)"
        )
    n = 1 if pad == "CAUSAL" else next(iter(ranks.values()), None)
    if n is not None:
        values = {name: per_axis(v, n) for name, v in values.items()}
        if is_int(pad):
            pad = ((pad, pad),) * n
    for name, value in values.items():
        object.__setattr__(layer, name, value)
    if padding:
        object.__setattr__(layer, "padding", pad)
    return n


class SpatialRank:
    """Mixin for spatial layers whose ``rank_field`` may be an int (the same on every axis).

    Such a layer takes its spatial rank from the input (``x.ndim - 2``); :meth:`for_input`
    gives the equivalent layer with every size a tuple, which the maths then uses.
    """

    rank_field: ClassVar[str]

    @property
    def spatial_rank(self) -> int | None:
        """Number of spatial axes, or ``None`` when it comes from the input."""
        value = getattr(self, self.rank_field)
        return len(value) if isinstance(value, tuple) else None

    def at_rank(self, n: int) -> Any:
        """This layer with its int sizes repeated on ``n`` spatial axes."""
        if self.spatial_rank is not None:
            return self
        size = getattr(self, self.rank_field)
        return dataclasses.replace(self, **{self.rank_field: (size,) * n})  # type: ignore[type-var]

    def for_input(self, x: Any) -> Any:
        """This layer with the rank of input ``x``: ``x.ndim - 2`` unless fixed by a tuple."""
        if self.spatial_rank is not None:
            return self
        rank = len(x.shape) - 2
        if not 1 <= rank <= 3:
            value = getattr(self, self.rank_field)
            raise self.error(  # type: ignore[attr-defined]
                ShapeError,
                f"{self.rank_field}={value!r} is the same on every spatial axis, so the number "
                "of spatial axes is the input's rank - 2 (one batch axis: (N, *spatial, C)), "
                f"which must be 1 to 3; given rank {len(x.shape)} (shape {tuple(x.shape)}). "
                f"Pass a tuple {self.rank_field} (one entry per spatial axis) for unbatched "
                "inputs or several batch axes",
            )
        return self.at_rank(rank)

    def sizes_by_axis(self, x: Any) -> tuple[tuple[int, Any], ...]:
        """``(axis, size)`` per spatial axis of ``x``, the sizes being ``rank_field``'s entries."""
        sizes = getattr(self.for_input(x), self.rank_field)
        axes = check_spatial_rank(self, x, len(sizes), self.data_format)  # type: ignore[attr-defined]
        return tuple(zip(axes, sizes, strict=True))


def resolve_padding(
    padding: Padding,
    in_sizes: Sequence[int],
    window: Sequence[int],
    strides: Sequence[int],
) -> tuple[tuple[int, int], ...]:
    """Explicit ``(lo, hi)`` pairs for ``padding`` given (dilated) input and window sizes.

    ``SAME`` gives ``ceil(n / s)`` outputs with the extra padding on the high side (as XLA and
    TensorFlow); ``CAUSAL`` pads ``window - 1`` on the low side only.
    """
    if padding == "CAUSAL":
        return tuple((w - 1, 0) for w in window)
    if isinstance(padding, str):
        return tuple(jax.lax.padtype_to_pads(in_sizes, window, strides, padding))
    if is_int(padding):
        return ((padding, padding),) * len(in_sizes)  # type: ignore[return-value]
    return padding  # type: ignore[return-value]


def dilate(size: int, dilation: int) -> int:
    """Size of an axis of ``size`` elements with ``dilation - 1`` holes between neighbours."""
    return 0 if size == 0 else (size - 1) * dilation + 1


def out_size(
    size: int, pads: tuple[int, int], window: int, stride: int, ceil_mode: bool = False
) -> int:
    """Number of windows of ``window`` (dilated) elements at ``stride`` in ``size`` padded by
    ``pads``: ``floor((size + lo + hi - window) / stride) + 1``.

    With ``ceil_mode`` (pooling) the division rounds up, less the last window when it would
    start inside the high padding (at or past ``size + lo``): PyTorch's
    ``pooling_output_shape_pad_lr``.
    """
    out = (size + pads[0] + pads[1] - window + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + pads[0]:
        out -= 1
    return out


def check_format(owner: str, data_format: str) -> None:
    if data_format not in DATA_FORMATS:
        raise ConfigError(
            f"{owner}: data_format must be one of {DATA_FORMATS}, given {data_format!r}"
        )


def spatial_axes(ndim: int, n: int, data_format: str) -> tuple[int, ...]:
    """The ``n`` spatial axes of a rank-``ndim`` input in ``data_format``."""
    if data_format == "channels_last":
        return tuple(range(ndim - n - 1, ndim - 1))
    return tuple(range(ndim - n, ndim))


def channel_axis(ndim: int, n: int, data_format: str) -> int:
    return ndim - 1 if data_format == "channels_last" else ndim - n - 1


def layout(n: int, data_format: str) -> str:
    """``"N" + spatial + "C"`` (or channels first): ``"NHWC"`` for ``n = 2``, channels last."""
    spatial = "DHW"[3 - n :]
    return f"N{spatial}C" if data_format == "channels_last" else f"NC{spatial}"


def check_spatial_rank(layer: Any, x: Any, n: int, data_format: str) -> tuple[int, ...]:
    """The spatial axes of ``x``; ``ShapeError`` unless it has rank ``>= n + 1``."""
    if x.ndim < n + 1:
        raise layer.error(
            ShapeError,
            f"input must have rank >= {n + 1}, i.e. (*batch, {describe(n, data_format)}) for a "
            f"{n}-D layer; given rank {x.ndim} (shape {tuple(x.shape)})",
        )
    return spatial_axes(x.ndim, n, data_format)


def describe(n: int, data_format: str) -> str:
    """``"H, W, C"`` style description of one example's axes."""
    return ", ".join(layout(n, data_format)[1:])


def flatten_batch(x: Any, n: int) -> tuple[Any, tuple[int, ...]]:
    """``(*batch, rest...)`` -> ``(prod(batch), rest...)`` and ``batch`` (``()`` adds an axis)."""
    batch = tuple(x.shape[: x.ndim - n - 1])
    return x.reshape((math.prod(batch), *x.shape[x.ndim - n - 1 :])), batch

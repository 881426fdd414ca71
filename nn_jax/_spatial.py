"""Private helpers shared by the spatial layers (conv, pooling, resize): option normalization,
padding resolution and the channels-last / channels-first layout.

Layouts: ``"channels_last"`` is ``(*batch, *spatial, C)`` (NWC, NHWC, NDHWC);
``"channels_first"`` is ``(*batch, C, *spatial)`` (NCW, NCHW, NCDHW).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax

from nn_jax.errors import ConfigError, ShapeError

DATA_FORMATS = ("channels_last", "channels_first")
PAD_STRINGS = ("SAME", "VALID", "CAUSAL")

Padding = str | tuple[tuple[int, int], ...]
"""Normalized padding: ``"SAME"``, ``"VALID"``, ``"CAUSAL"`` or one ``(lo, hi)`` pair per axis."""


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def window_tuple(owner: str, name: str, value: Any, *, minimum: int = 1) -> tuple[int, ...]:
    """A window size: a tuple of 1 to 3 ints, one per spatial axis (its length is the rank)."""
    if not isinstance(value, Sequence) or isinstance(value, str) or not 1 <= len(value) <= 3:
        raise ConfigError(
            f"{owner}: {name} must be a tuple of 1 to 3 ints, one per spatial axis "
            f"(e.g. (3, 3) for 2-D inputs), given {value!r}"
        )
    return int_tuple(owner, name, value, len(value), minimum=minimum)


def int_tuple(owner: str, name: str, value: Any, n: int, *, minimum: int = 1) -> tuple[int, ...]:
    """An int (repeated ``n`` times) or a tuple of ``n`` ints, each ``>= minimum``."""
    values = (value,) * n if is_int(value) else value
    if (
        not isinstance(values, Sequence)
        or len(values) != n
        or not all(is_int(v) and v >= minimum for v in values)
    ):
        raise ConfigError(
            f"{owner}: {name} must be an int >= {minimum} or a tuple of {n} such ints "
            f"(one per spatial axis), given {value!r}"
        )
    return tuple(values)


def normalize_padding(owner: str, padding: Any, n: int) -> Padding:
    """``"SAME"``/``"VALID"``/``"CAUSAL"`` (any case), an int, or ``n`` ints or (lo, hi) pairs."""
    if isinstance(padding, str):
        if padding.upper() not in PAD_STRINGS:
            raise ConfigError(f"{owner}: padding must be one of {PAD_STRINGS}, given {padding!r}")
        if padding.upper() == "CAUSAL" and n != 1:
            raise ConfigError(
                f"{owner}: padding 'CAUSAL' is for 1-D inputs, given a {n}-D window; "
                "pass explicit (lo, hi) pairs instead"
            )
        return padding.upper()
    entries = (padding,) * n if is_int(padding) else padding
    pairs = []
    if isinstance(entries, Sequence) and len(entries) == n:
        for e in entries:
            pair = (e, e) if is_int(e) else e
            if isinstance(pair, Sequence) and len(pair) == 2 and all(is_int(p) for p in pair):
                pairs.append((int(pair[0]), int(pair[1])))
    if len(pairs) != n:
        raise ConfigError(
            f"{owner}: padding must be one of {PAD_STRINGS}, an int, or a tuple of {n} ints or "
            f"(lo, hi) pairs (one per spatial axis), given {padding!r}"
        )
    return tuple(pairs)


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
    return padding


def dilate(size: int, dilation: int) -> int:
    """Size of an axis of ``size`` elements with ``dilation - 1`` holes between neighbours."""
    return 0 if size == 0 else (size - 1) * dilation + 1


def out_size(size: int, pads: tuple[int, int], window: int, stride: int) -> int:
    """Number of windows of ``window`` elements at ``stride`` in ``size`` padded by ``pads``."""
    return (size + pads[0] + pads[1] - window) // stride + 1


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


def check_spatial_rank(layer: Any, x: Any, n: int, data_format: str) -> None:
    """Raise ``ShapeError`` unless ``x`` has rank ``>= n + 1`` (``(*batch, *spatial, C)``)."""
    if x.ndim < n + 1:
        raise layer.error(
            ShapeError,
            f"input must have rank >= {n + 1}, i.e. (*batch, {describe(n, data_format)}) for a "
            f"{n}-D layer; given rank {x.ndim} (shape {tuple(x.shape)})",
        )


def describe(n: int, data_format: str) -> str:
    """``"H, W, C"`` style description of one example's axes."""
    return ", ".join(layout(n, data_format)[1:])


def flatten_batch(x: Any, n: int) -> tuple[Any, tuple[int, ...]]:
    """``(*batch, rest...)`` -> ``(prod(batch), rest...)`` and ``batch`` (``()`` adds an axis)."""
    batch = tuple(x.shape[: x.ndim - n - 1])
    return x.reshape((math.prod(batch), *x.shape[x.ndim - n - 1 :])), batch

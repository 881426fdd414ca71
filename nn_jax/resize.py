"""Spatial resizing: ``Upsample`` (nearest, bilinear/trilinear, cubic) via ``jax.image.resize``."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import KW_ONLY
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from nn_jax import _spatial as sp
from nn_jax.core import Array, Call, ParameterFree
from nn_jax.errors import ConfigError

__all__ = ["Upsample"]

_METHODS = {
    "nearest": "nearest",
    "linear": "linear",
    "bilinear": "linear",
    "trilinear": "linear",
    "cubic": "cubic",
    "bicubic": "cubic",
}
"""PyTorch's names (``bilinear``, ``trilinear``, ``bicubic``) and jax.image's (``linear``,
``cubic``) are both in common use."""


@dataclasses.dataclass(frozen=True)
class Upsample(sp.SpatialRank, ParameterFree):
    """Resize the spatial axes by ``scale``: output size ``floor(size * scale)`` per axis.

    Sampling uses half-pixel centres (output pixel ``i`` samples input coordinate
    ``(i + 0.5) / r - 0.5`` with ``r = out_size / in_size``, which is ``scale`` unless the size
    was rounded down), i.e. PyTorch's ``align_corners=False``; ``"nearest"`` with an
    integer scale repeats each element ``scale`` times, and ``"bilinear"`` interpolates
    linearly along each axis, clamping to the edge pixels at the borders.

    Args:
        scale: a number ``>= 1``, the same on every spatial axis (the spatial rank is then the
            input's rank - 2: one batch axis, ``(N, *spatial, C)``, as PyTorch's
            ``Upsample(scale_factor=2)``), or a tuple of 1, 2 or 3 such numbers, one per
            spatial axis (its length is the rank; use it for unbatched inputs).
        method: ``"nearest"``, ``"bilinear"`` (also ``"linear"``/``"trilinear"``) or
            ``"cubic"``/``"bicubic"``.
        data_format: ``"channels_last"`` or ``"channels_first"``.

    Input ``(*batch, *spatial, C)`` -> ``(*batch, *(floor(s * k) ...), C)``. No params.

    >>> import jax.numpy as jnp
    >>> Upsample(2)({}, jnp.zeros((1, 4, 4, 3))).shape
    (1, 8, 8, 3)
    """

    scale: float | tuple[float, ...]
    _: KW_ONLY
    method: str = "nearest"
    data_format: str = "channels_last"

    rank_field: ClassVar[str] = "scale"

    def __post_init__(self) -> None:
        scale: Any = tuple(self.scale) if isinstance(self.scale, list | tuple) else self.scale
        valid = sp.is_number(scale) and scale >= 1
        if isinstance(scale, tuple):
            valid = 1 <= len(scale) <= 3 and all(sp.is_number(s) and s >= 1 for s in scale)
        if not valid:
            raise ConfigError(
                "Upsample: scale must be a number >= 1 (the same on every spatial axis) or a "
                "tuple of 1 to 3 such numbers (one per spatial axis), given "
                f"{self.scale!r}; to downsample use AvgPool or AdaptiveAvgPool"
            )
        object.__setattr__(self, "scale", scale)
        if self.method not in _METHODS:
            raise ConfigError(
                f"Upsample: method must be one of {sorted(_METHODS)}, given {self.method!r}"
            )
        sp.check_format("Upsample", self.data_format)

    def transform(self, x: Any, call: Call) -> Array:
        x = jnp.asarray(x)
        shape = list(x.shape)
        for axis, s in self.sizes_by_axis(x):
            shape[axis] = math.floor(x.shape[axis] * s)
        if not jnp.issubdtype(x.dtype, jnp.inexact):
            x = x.astype(jnp.float32)
        return jax.image.resize(x, tuple(shape), _METHODS[self.method])

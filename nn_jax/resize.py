"""Spatial resizing: ``Upsample`` (nearest, bilinear/trilinear, cubic) via ``jax.image.resize``."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import KW_ONLY
from typing import Any

import jax
import jax.numpy as jnp

from nn_jax import _spatial as sp
from nn_jax.core import Array, Call, Layer, Params, PRNGKey, State
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


@dataclasses.dataclass(frozen=True)
class Upsample(Layer):
    """Resize the spatial axes by ``scale``: output size ``floor(size * scale)`` per axis.

    Sampling uses half-pixel centres (output pixel ``i`` samples input coordinate
    ``(i + 0.5) / r - 0.5`` with ``r = out_size / in_size``, which is ``scale`` unless the size
    was rounded down), i.e. PyTorch's ``align_corners=False``; ``"nearest"`` with an
    integer scale repeats each element ``scale`` times, and ``"bilinear"`` interpolates
    linearly along each axis, clamping to the edge pixels at the borders.

    Args:
        scale: per spatial axis, a tuple of 1, 2 or 3 numbers ``>= 1`` (its length is the rank).
        method: ``"nearest"``, ``"bilinear"`` (also ``"linear"``/``"trilinear"``) or
            ``"cubic"``/``"bicubic"``.
        data_format: ``"channels_last"`` or ``"channels_first"``.

    Input ``(*batch, *spatial, C)`` -> ``(*batch, *(floor(s * k) ...), C)``. No params.

    >>> import jax.numpy as jnp
    >>> Upsample((2, 2))({}, jnp.zeros((1, 4, 4, 3))).shape
    (1, 8, 8, 3)
    """

    scale: tuple[float, ...]
    _: KW_ONLY
    method: str = "nearest"
    data_format: str = "channels_last"

    def __post_init__(self) -> None:
        scale = self.scale
        if (
            not isinstance(scale, tuple | list)
            or not 1 <= len(scale) <= 3
            or not all(isinstance(s, int | float) and s >= 1 for s in scale)
        ):
            raise ConfigError(
                "Upsample: scale must be a tuple of 1 to 3 numbers >= 1, one per spatial axis "
                f"(e.g. (2, 2) for 2-D inputs), given {scale!r}; to downsample use AvgPool or "
                "AdaptiveAvgPool"
            )
        object.__setattr__(self, "scale", tuple(scale))
        if self.method not in _METHODS:
            raise ConfigError(
                f"Upsample: method must be one of {sorted(_METHODS)}, given {self.method!r}"
            )
        sp.check_format("Upsample", self.data_format)

    def init(self, key: PRNGKey, x: Any) -> tuple[Params, State]:
        return {}, {}

    def compute(self, params: Params, state: State, x: Any, call: Call) -> tuple[Array, State]:
        x = jnp.asarray(x)
        n = len(self.scale)
        sp.check_spatial_rank(self, x, n, self.data_format)
        shape = list(x.shape)
        for axis, s in zip(sp.spatial_axes(x.ndim, n, self.data_format), self.scale, strict=True):
            shape[axis] = math.floor(x.shape[axis] * s)
        if not jnp.issubdtype(x.dtype, jnp.inexact):
            x = x.astype(jnp.float32)
        return jax.image.resize(x, tuple(shape), _METHODS[self.method]), {}

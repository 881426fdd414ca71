"""Stochastic regularization: ``Dropout``, ``SpatialDropout`` and ``DropPath`` (stochastic depth).

All three drop with probability ``rate`` (the *drop* probability, as in PyTorch, Keras and Flax)
and scale what they keep by ``1 / (1 - rate)`` ("inverted dropout"), so the expectation of the
output equals the input and evaluation is the identity. They differ only in which elements share
one random draw. In training (``train=True``, ``rate > 0``) they need an ``rng`` key and raise
:class:`~nn_jax.errors.RngError` without one; with ``train=False`` they return the input
unchanged and ignore ``rng``.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Mapping
from dataclasses import KW_ONLY
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from nn_jax.core import Array, Call, ParameterFree, Rate
from nn_jax.errors import ShapeError

__all__ = ["DropPath", "Dropout", "SpatialDropout"]


@dataclasses.dataclass(frozen=True)
class _Drop(ParameterFree):
    """Inverted dropout with a mask shared along some axes; subclasses choose the axes."""

    rate: Rate

    field_notes: ClassVar[Mapping[str, str]] = {"rate": "the drop probability"}

    @abc.abstractmethod
    def _shared_axes(self, x: Array) -> tuple[int, ...]:
        """Axes along which one draw is shared (the mask has size 1 there)."""

    def transform(self, x: Any, call: Call) -> Array:
        x = jnp.asarray(x)
        if not call.train or self.rate == 0:
            return x
        rng = self.require_rng(call.rng)
        if self.rate == 1:
            return jnp.zeros_like(x)
        shared = self._shared_axes(x)
        shape = tuple(1 if a in shared else d for a, d in enumerate(x.shape))
        keep = jnp.broadcast_to(jax.random.bernoulli(rng, 1.0 - self.rate, shape), x.shape)
        return jnp.where(keep, x / jnp.asarray(1.0 - self.rate, x.dtype), jnp.zeros_like(x))


@dataclasses.dataclass(frozen=True)
class Dropout(_Drop):
    """Zero each element with probability ``rate`` in training; scale the rest by ``1/(1-rate)``.

    Args:
        rate: drop probability in ``[0, 1]`` (``1`` gives zeros).
        broadcast_dims: axes sharing one draw (e.g. ``(1,)`` to drop the same features at
            every time step of a ``(B, T, D)`` input); negative axes count from the end.

    Call: ``apply(params, state, x, rng=key, train=True)``; identity with ``train=False``.
    Input any shape -> same shape. No params.
    """

    _: KW_ONLY
    broadcast_dims: tuple[int, ...] = ()

    def _shared_axes(self, x: Array) -> tuple[int, ...]:
        if any(not -x.ndim <= d < x.ndim for d in self.broadcast_dims):
            raise self.error(
                ShapeError,
                f"broadcast_dims={self.broadcast_dims} is out of range for an input of rank "
                f"{x.ndim} (shape {x.shape})",
            )
        return tuple(d % x.ndim for d in self.broadcast_dims)


@dataclasses.dataclass(frozen=True)
class SpatialDropout(_Drop):
    """Drop whole channels (feature maps): one draw per example and channel (Tompson et al.).

    For an input ``(N, *spatial, C)`` (channels last) the mask has shape ``(N, 1, ..., 1, C)``,
    so a dropped channel is zero at every position. For 1-D, 2-D or 3-D feature maps alike.

    Args:
        rate: drop probability in ``[0, 1]``.

    Input ``(N, *spatial, C)`` (rank >= 3) -> same shape. No params.
    """

    def _shared_axes(self, x: Array) -> tuple[int, ...]:
        self.check_rank(x, 3, what="input (N, *spatial, C)")
        return tuple(range(1, x.ndim - 1))


@dataclasses.dataclass(frozen=True)
class DropPath(_Drop):
    """Stochastic depth (Huang et al., 2016): drop a whole residual branch per example.

    The mask has shape ``(N, 1, ..., 1)``: each example's input is kept (scaled by
    ``1/(1-rate)``) or zeroed entirely. Put it at the end of a residual block's body, before the
    addition, so a dropped example skips the block: ``Residual(Sequential(body, DropPath(0.1)))``.

    Args:
        rate: drop probability in ``[0, 1]``.

    Input ``(N, ...)`` (rank >= 1, axis 0 the batch) -> same shape. No params.
    """

    def _shared_axes(self, x: Array) -> tuple[int, ...]:
        self.check_rank(x, 1, what="input (N, ...)")
        return tuple(range(1, x.ndim))

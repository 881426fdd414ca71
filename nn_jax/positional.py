"""Positional encodings: sinusoidal, learned, and rotary (RoPE).

* :func:`sinusoidal_encoding` / :class:`SinusoidalPositionalEncoding` - the fixed encodings of
  Vaswani et al. (2017), added to the input.
* :class:`LearnedPositionalEmbedding` - a trained ``(max_length, D)`` table, added to the input.
* :func:`rotary_embedding` / :class:`RotaryEmbedding` - rotary position embedding (Su et al.,
  2021), applied to queries and keys inside attention
  (``MultiHeadAttention(..., rope=RotaryEmbedding())``).

Positions are ``0 .. T-1`` unless the side input ``"positions"`` (``(B, T)`` ints) gives them,
e.g. to count only the real tokens of a left-padded batch.

Incremental decoding: with ``decode=True`` the additive encodings keep the next position in their
state (``{"index": int32 scalar}``, starting at 0), so feeding a sequence one chunk at a time
gives each chunk the positions it would have had in one call.
"""

from __future__ import annotations

import abc
import dataclasses
from dataclasses import KW_ONLY
from typing import Any

import jax.numpy as jnp

from nn_jax import initializers
from nn_jax._options import at_least_float32
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

default_position_init: Initializer = initializers.normal(0.02)
"""Normal with standard deviation 0.02 (GPT-2's position table)."""

__all__ = [
    "LearnedPositionalEmbedding",
    "RotaryEmbedding",
    "SinusoidalPositionalEncoding",
    "rotary_embedding",
    "sinusoidal_encoding",
]


def sinusoidal_encoding(
    positions: Any, features: int, *, base: float = 10000.0, dtype: Any = jnp.float32
) -> Array:
    """The sinusoidal encodings of ``positions`` (Vaswani et al., 2017, section 3.5).

    .. math::
        PE[p, 2i] = \\sin(p / \\text{base}^{2i/D}), \\qquad
        PE[p, 2i + 1] = \\cos(p / \\text{base}^{2i/D})

    Args:
        positions: ``(...)`` integer or float positions.
        features: the even encoding size ``D``.
        base: the wavelength base (10000 in the paper).
        dtype: the dtype of the computation and the result.

    Returns:
        ``(..., D)`` encodings.
    """
    if not isinstance(features, int) or features <= 0 or features % 2:
        raise ShapeError(
            f"sinusoidal_encoding: features must be a positive even int, given {features!r}"
        )
    positions = jnp.asarray(positions, dtype)
    inv_freq = base ** (-jnp.arange(0, features, 2, dtype=dtype) / features)
    angles = positions[..., None] * inv_freq.reshape((1,) * positions.ndim + inv_freq.shape)
    return jnp.stack([jnp.sin(angles), jnp.cos(angles)], axis=-1).reshape(
        (*positions.shape, features)
    )


def rotary_embedding(x: Any, positions: Any, *, base: float = 10000.0) -> Array:
    """Rotate pairs of features of ``x`` by position-dependent angles (RoPE, Su et al., 2021).

    Uses the "rotate half" pairing of GPT-NeoX and LLaMA: feature ``i`` is paired with feature
    ``i + D/2`` and the pair is rotated by ``theta_i = p * base^(-2i/D)``:

    .. math::
        y_i = x_i \\cos\\theta_i - x_{i+D/2} \\sin\\theta_i, \\qquad
        y_{i+D/2} = x_{i+D/2} \\cos\\theta_i + x_i \\sin\\theta_i

    so the dot product of a rotated query at ``p`` and key at ``q`` depends on ``p - q`` only.

    Args:
        x: ``(..., T, H, D)`` queries or keys (``D`` even).
        positions: ``(T,)`` or ``(..., T)`` positions (broadcast against ``x``'s leading axes).
        base: the wavelength base.

    Returns:
        An array shaped like ``x``, in ``x``'s dtype (angles computed in at least float32).
    """
    x = jnp.asarray(x)
    positions = jnp.asarray(positions)
    if x.ndim < 3 or x.shape[-1] % 2:
        raise ShapeError(
            f"rotary_embedding: x must be (..., T, H, D) with even D, given shape {x.shape}"
        )
    if positions.ndim < 1 or positions.ndim > x.ndim - 2 or positions.shape[-1] != x.shape[-3]:
        raise ShapeError(
            f"rotary_embedding: positions must be (..., T) with T = {x.shape[-3]} (x shape "
            f"{x.shape}), given shape {positions.shape}"
        )
    half = x.shape[-1] // 2
    dtype = at_least_float32(x.dtype)
    inv_freq = base ** (-jnp.arange(half, dtype=dtype) * 2 / x.shape[-1])
    angles = positions.astype(dtype)[..., None] * inv_freq.reshape((1,) * positions.ndim + (half,))
    angles = angles.reshape((1,) * (x.ndim - 2 - positions.ndim) + angles.shape[:-1] + (1, half))
    cos, sin = jnp.cos(angles).astype(x.dtype), jnp.sin(angles).astype(x.dtype)
    x1, x2 = x[..., :half], x[..., half:]
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


def _positions(layer: Layer, call: Call, shape: tuple[int, ...], what: str) -> Array | None:
    """The side input ``"positions"``, checked to be ints of shape ``(..., T)`` or ``(T,)``.

    ``shape`` is ``(*batch, T)``: the positions may omit leading batch axes, never add any.
    """
    positions = layer.side_input(call, "positions")
    if positions is None:
        return None
    positions = jnp.asarray(positions)
    if (
        not jnp.issubdtype(positions.dtype, jnp.integer)
        or not 1 <= positions.ndim <= len(shape)
        or positions.shape != shape[len(shape) - positions.ndim :]
    ):
        raise layer.error(
            ShapeError,
            f"side input 'positions' must be ints of shape {shape} or {shape[-1:]} ({what}), "
            f"given dtype {positions.dtype} and shape {positions.shape}",
        )
    return positions


@dataclasses.dataclass(frozen=True)
class RotaryEmbedding(ParameterFree):
    """Rotary position embedding as a layer (see :func:`rotary_embedding`).

    Pass it to attention as ``MultiHeadAttention(..., rope=RotaryEmbedding())``; as a layer of
    its own it rotates ``(..., T, H, D)`` inputs at their positions.

    Args:
        base: the wavelength base (10000).

    Side inputs: ``"positions"``, ``(..., T)`` or ``(T,)`` ints (default ``0 .. T-1``).

    Input ``(..., T, H, D)`` -> same shape. No params.
    """

    base: float = 10000.0

    def __post_init__(self) -> None:
        if not isinstance(self.base, int | float) or self.base <= 1:
            raise ConfigError(f"RotaryEmbedding: base must be a number > 1, given {self.base!r}")

    def transform(self, x: Any, call: Call) -> Array:
        self.check_rank(x, 3, what="input (..., T, H, D)")
        positions = _positions(self, call, tuple(jnp.shape(x)[:-2]), "(..., T)")
        if positions is None:
            positions = jnp.arange(jnp.shape(x)[-3])
        return rotary_embedding(x, positions, base=self.base)


@dataclasses.dataclass(frozen=True)
class _AdditivePositions(Layer):
    """Add per-position vectors to ``(..., T, D)``; with ``decode``, positions continue."""

    _: KW_ONLY
    decode: bool = False

    @abc.abstractmethod
    def _encodings(self, params: Params, positions: Array, features: int, dtype: Any) -> Array:
        """``(*positions.shape, D)`` encodings of integer ``positions`` in ``dtype``."""

    def _check_positions(self, what: str, positions: Array) -> None:
        """Value-check ``positions`` (described by ``what``); any position is valid here."""

    def _check(self, x: Any) -> None:
        self.check_rank(x, 2, what="input (..., T, D)")

    def _decode_state(self) -> State:
        return {"index": jnp.zeros((), jnp.int32)} if self.decode else {}

    def compute(self, params: Params, state: State, x: Any, call: Call) -> tuple[Array, State]:
        x = jnp.asarray(x)
        self._check(x)
        length, features = x.shape[-2:]
        start = self.state_entry(state, "index") if self.decode else 0
        positions = _positions(self, call, x.shape[:-1], "(..., T)")
        if positions is not None:
            self._check_positions("side input 'positions'", positions)
        else:
            positions = start + jnp.arange(length)
            if self.decode:  # without it, 0..T-1 with T checked statically
                self._check_positions("positions (decode state 'index' + 0..T-1)", positions)
        dtype = at_least_float32(x.dtype)
        pe = self._encodings(params, positions, features, dtype).astype(x.dtype)
        y = x + pe.reshape((1,) * (x.ndim - pe.ndim) + pe.shape)
        return y, ({"index": start + length} if self.decode else {})


@dataclasses.dataclass(frozen=True)
class SinusoidalPositionalEncoding(_AdditivePositions):
    """Add the sinusoidal encodings of the positions: ``y = x + PE[positions]`` (no params).

    Args:
        base: the wavelength base (10000).
        decode: keep the next position in the state ``{"index": int32}`` (incremental
            decoding); the state from ``init`` starts at 0.

    Side inputs: ``"positions"``, ``(..., T)`` or ``(T,)`` ints (default ``0 .. T-1``, or
    ``index .. index + T - 1`` with ``decode``; the index advances by ``T`` either way).

    Input ``(..., T, D)`` (``D`` even) -> same shape.
    """

    base: float = 10000.0

    def init(self, key: PRNGKey, x: Any) -> tuple[Params, State]:
        self._check(x)
        if x.shape[-1] % 2:
            raise self.error(ShapeError, f"features must be even, given input shape {x.shape}")
        return {}, self._decode_state()

    def _encodings(self, params: Params, positions: Array, features: int, dtype: Any) -> Array:
        return sinusoidal_encoding(positions, features, base=self.base, dtype=dtype)


@dataclasses.dataclass(frozen=True)
class LearnedPositionalEmbedding(_AdditivePositions):
    """Add a learned vector per position: ``y[..., t, :] = x[..., t, :] + embedding[p_t]``.

    Args:
        max_length: number of positions ``L``; inputs may have ``T <= L`` steps.
        decode: keep the next position in the state ``{"index": int32}`` (incremental
            decoding); the state from ``init`` starts at 0.
        embedding_init: initializer (normal, stddev 0.02, as GPT-2).
        param_dtype: storage dtype.

    Side inputs: ``"positions"``, ``(..., T)`` or ``(T,)`` ints in ``[0, L)`` (default
    ``0 .. T-1``, or ``index .. index + T - 1`` with ``decode``; the index advances by ``T``
    either way). A position outside ``[0, L)`` (given, or reached by decoding past ``L``) is a
    ``ValueRangeError`` naming the layer path - at once for concrete positions, under ``jax.jit``
    in checked mode (:func:`nn_jax.checked`); an unchecked jitted call gives a NaN row for it.

    Input ``(..., T, D)`` -> same shape. Params: ``embedding: (L, D)``.
    """

    max_length: Size
    _: KW_ONLY
    embedding_init: Initializer = default_position_init
    param_dtype: Any = jnp.float32

    def _check(self, x: Any) -> None:
        super()._check(x)
        if x.shape[-2] > self.max_length:
            raise self.error(
                ShapeError,
                f"input has {x.shape[-2]} positions (shape {tuple(x.shape)}), more than "
                f"max_length={self.max_length}",
            )

    def init(self, key: PRNGKey, x: Any) -> tuple[Params, State]:
        self._check(x)
        table = self.embedding_init(key, (self.max_length, x.shape[-1]), self.param_dtype)
        return {"embedding": table}, self._decode_state()

    def _check_positions(self, what: str, positions: Array) -> None:
        self.check_range(what, positions, 0, self.max_length)

    def _encodings(self, params: Params, positions: Array, features: int, dtype: Any) -> Array:
        table = self.param(params, "embedding", (self.max_length, features))
        positions = jnp.where(positions < 0, self.max_length, positions)  # no wrap-around
        return jnp.take(table, positions, axis=0, mode="fill", fill_value=jnp.nan)

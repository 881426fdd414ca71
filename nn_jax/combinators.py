"""Combinators: layers made of layers, children keyed by name (given, or slot "0", "1", ...).

Each combinator is a :class:`~nn_jax.core.Block`, so its ``init`` is derived from its forward pass
and its children's params appear under their names (empty entries, e.g. for ``relu``, are left
out). Plain functions are accepted wherever a layer is and wrapped in :class:`~nn_jax.core.Lambda`.
Every child receives the combinator's side inputs, train flag and an rng derived from its name.

Name children when a model will change: inserting a layer into a numbered ``Sequential`` renames
every later slot (and old checkpoints stop loading), a named one keeps its keys.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from nn_jax.core import Block, Layer, Scope, as_layer
from nn_jax.errors import ConfigError, ShapeError

__all__ = ["Branch", "Parallel", "Residual", "Sequential"]

LayerLike = Layer | Callable[[Any], Any]


@dataclasses.dataclass(frozen=True, init=False)
class _Children(Block):
    """A combinator over named children: ``Comb(a, b)`` (slots "0", "1"), ``Comb(enc=a, head=b)``
    or ``Comb({"enc": a, "head": b})`` (names, in the given order)."""

    layers: tuple[tuple[str, Layer], ...]

    def __init__(self, *layers: LayerLike | Mapping[str, LayerLike], **named: LayerLike) -> None:
        if len(layers) == 1 and isinstance(layers[0], Mapping) and not named:
            named = dict(layers[0])
        elif layers and named:
            raise ConfigError(
                f"{type(self).__name__}: give the children positionally (slots '0', '1', ...) or "
                f"by name, not both; given {len(layers)} positional and names {sorted(named)}"
            )
        children: list[tuple[str, Any]] = (
            list(named.items()) if named else [(str(i), v) for i, v in enumerate(layers)]
        )
        where = type(self).__name__
        names = [str(k) for k, _ in children]
        if not all(k and "/" not in k for k in names):
            raise ConfigError(
                f"{where}: child names must be non-empty strings without '/', given {names}"
            )
        resolved = tuple(
            (k, as_layer(v, f"{where}: child {k!r}"))
            for k, (_, v) in zip(names, children, strict=True)
        )
        object.__setattr__(self, "layers", resolved)


@dataclasses.dataclass(frozen=True, init=False)
class Sequential(_Children):
    """Apply layers one after another: ``Sequential(Dense(32), jax.nn.relu, Dense(1))``.

    Children are keyed by slot (``"0"``, ``"1"``, ...), or by name:
    ``Sequential(encoder=enc, head=head)`` or ``Sequential({"encoder": enc, "head": head})``.

    >>> import jax, jax.numpy as jnp
    >>> from nn_jax import Dense
    >>> model = Sequential(Dense(4), jax.nn.relu, Dense(2))
    >>> params, _ = model.init(jax.random.key(0), jax.ShapeDtypeStruct((8, 3), jnp.float32))
    >>> jax.tree.map(jnp.shape, params)
    {'0': {'b': (4,), 'w': (3, 4)}, '2': {'b': (2,), 'w': (4, 2)}}
    """

    def forward(self, scope: Scope, x: Any) -> Any:
        for name, layer in self.layers:
            x = scope(name, layer, x)
        return x


@dataclasses.dataclass(frozen=True, init=False)
class Branch(_Children):
    """Apply every layer to the same input; returns the tuple of their outputs."""

    def forward(self, scope: Scope, x: Any) -> tuple[Any, ...]:
        return tuple(scope(name, layer, x) for name, layer in self.layers)


@dataclasses.dataclass(frozen=True, init=False)
class Parallel(_Children):
    """Apply the i-th layer to the i-th element of a tuple input; returns the tuple of outputs."""

    def forward(self, scope: Scope, x: Any) -> tuple[Any, ...]:
        if not isinstance(x, tuple | list) or len(x) != len(self.layers):
            given = (
                f"{type(x).__name__} of length {len(x)}"
                if isinstance(x, tuple | list)
                else (type(x).__name__)
            )
            raise self.error(
                ShapeError, f"expected a tuple of {len(self.layers)} inputs, given {given}"
            )
        return tuple(
            scope(name, layer, xi) for (name, layer), xi in zip(self.layers, x, strict=True)
        )


@dataclasses.dataclass(frozen=True)
class Residual(Block):
    """``y = body(x) + shortcut(x)``; ``shortcut`` defaults to the identity.

    Params: ``{"body": ..., "shortcut": ...}`` (the latter only for a layer with params, e.g. a
    projection). The shapes must match exactly: nothing is broadcast silently.
    """

    body: LayerLike
    shortcut: LayerLike | None = None

    def forward(self, scope: Scope, x: Any) -> Any:
        y = scope("body", self.body, x)
        skip = x if self.shortcut is None else scope("shortcut", self.shortcut, x)
        shapes = (jax.tree.map(jnp.shape, y), jax.tree.map(jnp.shape, skip))
        if shapes[0] != shapes[1]:  # compares the tree structures and every leaf's shape
            raise self.error(
                ShapeError,
                f"body output shape {shapes[0]} differs from shortcut shape {shapes[1]}; "
                "give a projection shortcut, e.g. Residual(body, shortcut=Dense(n))",
            )
        return jax.tree.map(lambda a, b: a + b, y, skip)

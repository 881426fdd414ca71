"""Rematerialization: trade compute for memory with ``jax.checkpoint``, by wrapper or by path.

The backward pass needs the forward pass's intermediate values. Stored, they cost memory that
grows with depth; rematerialized (recomputed in the backward pass from the inputs of a
checkpointed region), they cost a second forward pass of that region. ``jax.checkpoint``'s
*policy* decides what is saved anyway (``"dots_saveable"``: matmul outputs are kept, the cheap
elementwise work is recomputed).

* :class:`Remat` wraps a layer: ``Remat(block, "nothing_saveable")``.
* :func:`rematerializing` chooses layers by path without touching the model's code, e.g. from a
  rule table: ``with rematerializing(rules.remat_paths(params)): loss_fn(params, batch)``.

Both are transparent: the params and state trees, and the tap paths, are the wrapped layer's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax

from nn_jax.core import (
    STACKED,
    Call,
    Layer,
    Params,
    PRNGKey,
    State,
    expose_taps,
    tap_region,
    wrapping_children,
)
from nn_jax.errors import ConfigError

__all__ = ["REMAT_POLICIES", "Remat", "checkpoint_policy", "rematerializing"]

REMAT_POLICIES: tuple[str, ...] = tuple(
    name
    for name in (
        "nothing_saveable",
        "dots_saveable",
        "dots_with_no_batch_dims_saveable",
        "everything_saveable",
        "checkpoint_dots",
        "checkpoint_dots_with_no_batch_dims",
    )
    if hasattr(jax.checkpoint_policies, name)
)
"""The names of the ``jax.checkpoint_policies`` that are policies (not policy factories)."""


def checkpoint_policy(name: str, where: str = "Remat") -> Callable[..., bool]:
    """The ``jax.checkpoint_policies`` policy called ``name``; a ``ConfigError`` listing the
    names for anything else (``where`` starts the message)."""
    if not isinstance(name, str) or name not in REMAT_POLICIES:
        raise ConfigError(
            f"{where}: policy must be one of {', '.join(REMAT_POLICIES)} "
            f"(jax.checkpoint_policies), given {name!r}"
        )
    policy: Callable[..., bool] = getattr(jax.checkpoint_policies, name)
    return policy


@dataclasses.dataclass(frozen=True)
class Remat(Layer):
    """Run ``layer`` under ``jax.checkpoint``: its intermediates are recomputed in the backward
    pass instead of stored, except what ``policy`` saves.

    Args:
        layer: the layer to rematerialize; its params and state trees are this layer's.
        policy: a name from :data:`REMAT_POLICIES`: ``"nothing_saveable"`` (save only the region's
            inputs), ``"dots_saveable"`` (keep matmul outputs), ``"everything_saveable"`` (no
            rematerialization), ...

    Values tapped inside (:func:`nn_jax.core.tapping`) are collected within the checkpointed
    function and returned from it, so they come out at the same paths as without ``Remat``;
    edits apply inside. rng, train flag and side inputs pass through unchanged.

    >>> import jax, jax.numpy as jnp
    >>> from nn_jax import Dense, Sequential
    >>> model = Remat(Sequential(Dense(8), jax.nn.tanh, Dense(1)))
    >>> params, _ = model.init(jax.random.key(0), jnp.zeros((2, 3)))
    >>> jax.tree.map(jnp.shape, params)
    {'0': {'b': (8,), 'w': (3, 8)}, '2': {'b': (1,), 'w': (8, 1)}}
    """

    layer: Layer
    policy: str = "nothing_saveable"

    def __post_init__(self) -> None:
        checkpoint_policy(self.policy)

    def init(self, key: PRNGKey, x: Any) -> tuple[Params, State]:
        return self.layer.init(key, x)

    def compute(self, params: Params, state: State, x: Any, call: Call) -> tuple[Any, State]:
        layers: dict[str, Layer] = {}  # the layers the region ran, by path (for tapping)

        def run(params: Params, state: State, x: Any, rng: PRNGKey | None) -> Any:
            with tap_region() as region:
                y, new_state = self.layer.apply(
                    params, state, x, side=call.side, rng=rng, train=call.train
                )
            if region is None:
                return y, new_state, {}
            layers.update(region.layers)
            return y, new_state, region.values

        checkpointed = jax.checkpoint(run, policy=checkpoint_policy(self.policy))
        y, new_state, tapped = checkpointed(params, state, x, call.rng)
        expose_taps(tapped, layers)
        return y, new_state


def _policies(paths: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    if not isinstance(paths, Mapping) or not all(isinstance(k, str) for k in paths):
        raise ConfigError(
            "rematerializing: paths must map layer paths or patterns to policy names, e.g. "
            f"{{'encoder/*': 'nothing_saveable'}}, given {type(paths).__name__}"
        )
    for pattern, name in paths.items():
        checkpoint_policy(name, f"rematerializing: path {pattern!r}")
    return tuple(paths.items())


@contextlib.contextmanager
def rematerializing(paths: Mapping[str, str]) -> Iterator[None]:
    """Rematerialize the layers at chosen paths of any model traced inside the ``with`` block.

    Args:
        paths: ``{layer path or fnmatch pattern: policy name}``, e.g. ``{"block_*":
            "nothing_saveable"}`` (``*`` crosses ``/``); the first matching entry decides. The
            form of ``Rules.remat_paths(params)``.

    Each child a block runs at a matching path is run as ``Remat(child, policy)`` (a
    :class:`~nn_jax.repeat.Repeat` as ``Repeat(..., remat=policy)``: each stacked layer is
    checkpointed). Inside a ``Repeat`` the paths matched are the params' paths, without the
    layer index (``stack/0`` is child ``"0"`` of every stacked layer), since one traced body
    runs every layer. The model itself (path ``""``) is wrapped with :class:`Remat` instead.
    """
    table = _policies(paths)

    def wrap(layer: Layer, path: str) -> Layer:
        params_path = "/".join(part for part in path.split("/") if part != STACKED)
        for pattern, policy in table:
            if fnmatch.fnmatchcase(params_path, pattern):
                from nn_jax.repeat import Repeat  # repeat builds on this module

                if isinstance(layer, Repeat):
                    return dataclasses.replace(layer, remat=policy)
                return Remat(layer, policy)
        return layer

    with wrapping_children(wrap):
        yield

"""Scan over layers: ``Repeat`` stacks n identical blocks and runs them with ``jax.lax.scan``.

An unrolled stack of n blocks is n copies of the block in the compiled program, so compile
time grows with depth. ``Repeat`` keeps one copy: the blocks' params (and state) are stacked on
a leading axis of size n and ``jax.lax.scan`` runs the block once per slice, so compiling 32
layers costs about what 4 do (``benchmarks/repeat_compile.py``).

``Repeat(block, n)`` computes what ``Sequential(*[block] * n)`` does, with the same init
(layer i from ``derive_key(key, str(i))``), the same rng per layer, and the same tap paths
(``<repeat path>/<i>/...``); :meth:`Repeat.unstack` and :meth:`Repeat.stack` convert params
and state to and from that per-layer form.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from nn_jax.core import (
    STACKED,
    Array,
    Call,
    Layer,
    Params,
    PRNGKey,
    Size,
    State,
    derive_key,
    expose_taps,
    layer_path,
    nested,
    tap_region,
)
from nn_jax.errors import ParamsError, ShapeError
from nn_jax.inspect import flatten_params
from nn_jax.remat import Remat, checkpoint_policy

__all__ = ["Repeat"]


def _stacked_match(
    match: Callable[[str, str], bool | Array], prefix: str, base: str, n: int, index: Array
) -> Callable[[str, str], bool | Array]:
    """Path matching for a scan body traced once at ``prefix`` (``<base>/<i>``): a pattern
    matches for layer ``index`` when it matches ``<base>/<index>/...``; a bool when the answer is
    the same for every layer, else a traced boolean."""

    @functools.cache
    def hits(path: str, pattern: str) -> tuple[bool | Array, ...]:
        rest = path[len(prefix) :]
        return tuple(match(f"{base}{i}{rest}", pattern) for i in range(n))

    def stacked(path: str, pattern: str) -> bool | Array:
        if not path.startswith(prefix):
            return match(path, pattern)
        found = hits(path, pattern)
        if all(h is True for h in found):
            return True
        if all(h is False for h in found):
            return False
        return jnp.stack([jnp.asarray(h) for h in found])[index]

    return stacked


@dataclasses.dataclass(frozen=True)
class Repeat(Layer):
    """``n`` copies of ``block`` one after another, params stacked, run by ``jax.lax.scan``.

    Args:
        block: the repeated layer; its output must have its input's structure, shapes and
            dtypes (it is the scan's carry).
        n: the number of layers.
        remat: a ``jax.checkpoint`` policy name (:data:`nn_jax.remat.REMAT_POLICIES`) to
            rematerialize each layer in the backward pass (the memory of one layer's
            intermediates plus the n carries), or ``None``.
        unroll: layers per scan iteration (``jax.lax.scan``'s ``unroll``).

    Params and state are the block's, each leaf with a leading axis of size ``n`` (layer ``i``
    at index ``i``). Side inputs reach every layer; with an rng, layer ``i`` gets
    ``derive_key(rng, str(i))`` as ``Sequential``'s child ``"i"`` does. Tapped values inside
    come out per layer at ``<path>/<i>/...``; an edit whose pattern names some layers only
    (``"stack/1/*"``) edits those layers only.

    >>> import jax, jax.numpy as jnp
    >>> from nn_jax import Dense
    >>> model = Repeat(Dense(4), 3)
    >>> params, _ = model.init(jax.random.key(0), jnp.zeros((2, 4)))
    >>> jax.tree.map(jnp.shape, params)
    {'b': (3, 4), 'w': (3, 4, 4)}
    >>> jax.tree.map(jnp.shape, model.unstack(params))["2"]
    {'b': (4,), 'w': (4, 4)}
    """

    block: Layer
    n: Size
    remat: str | None = None
    unroll: Size = 1

    field_notes: ClassVar[Mapping[str, str]] = {"n": "the number of layers"}

    def __post_init__(self) -> None:
        if self.remat is not None:
            checkpoint_policy(self.remat, "Repeat: remat")

    def init(self, key: PRNGKey, x: Any) -> tuple[Params, State]:
        keys = jnp.stack([derive_key(key, str(i)) for i in range(self.n)])
        with nested(STACKED):
            params, state = jax.vmap(lambda k: self.block.init(k, x))(keys)
        return params, state

    def compute(self, params: Params, state: State, x: Any, call: Call) -> tuple[Any, State]:
        self._check_stacked("params", params)
        self._check_stacked("state", state)
        layer = self.block if self.remat is None else Remat(self.block, self.remat)
        base = f"{layer_path()}/" if layer_path() else ""
        prefix = f"{base}{STACKED}"
        rngs = (
            None
            if call.rng is None
            else jnp.stack([derive_key(call.rng, str(i)) for i in range(self.n)])
        )

        def body(carry: Any, xs: Any) -> tuple[Any, Any]:
            p, s, rng, index = xs
            with tap_region() as region:
                if region is not None:
                    region.match = _stacked_match(region.match, prefix, base, self.n, index)
                with nested(STACKED):
                    y, new_s = layer.apply(p, s, carry, side=call.side, rng=rng, train=call.train)
                self._check_output(carry, y)
                if region is not None:  # the layer's output, as Sequential's scope taps it
                    y = region.visit(prefix, y)
            return y, (new_s, {} if region is None else region.values)

        xs = (params, state, rngs, jnp.arange(self.n))
        y, (new_state, tapped) = jax.lax.scan(body, x, xs, unroll=self.unroll)
        for i in range(self.n):
            expose_taps(
                {
                    f"{base}{i}{path[len(prefix) :]}": jax.tree.map(lambda a, i=i: a[i], value)
                    for path, value in tapped.items()
                }
            )
        return y, new_state

    def unstack(self, tree: Params | State) -> dict[str, Any]:
        """Stacked params (or state) -> ``{"0": layer 0's, ..., "n-1": ...}``, the form
        ``Sequential(*[block] * n)`` uses (``{}`` for a block without any)."""
        self._check_stacked("params or state", tree)
        if not tree:
            return {}
        return {str(i): jax.tree.map(lambda a, i=i: a[i], tree) for i in range(self.n)}

    def stack(self, layers: Mapping[str, Any]) -> dict[str, Any]:
        """``{"0": ..., "n-1": ...}`` (per-layer params or state) -> the stacked form."""
        expected = [str(i) for i in range(self.n)]
        if not isinstance(layers, Mapping):
            raise self.error(
                ParamsError, f"stack takes a dict of layers {expected}, given {type(layers)}"
            )
        if not layers:
            return {}
        if sorted(layers) != sorted(expected):
            raise self.error(
                ParamsError,
                f"stack takes one entry per layer, keys {expected}, given {sorted(layers)}",
            )
        first = flatten_params(layers["0"])
        for name in expected[1:]:
            flat = flatten_params(layers[name])
            if set(flat) != set(first):
                raise self.error(
                    ParamsError,
                    f"layer {name!r} has entries {sorted(flat)}, layer '0' has {sorted(first)}",
                )
            for path, leaf in flat.items():
                if (jnp.shape(leaf), jnp.result_type(leaf)) != (
                    jnp.shape(first[path]),
                    jnp.result_type(first[path]),
                ):
                    raise self.error(
                        ShapeError,
                        f"'{name}/{path}' is {jnp.result_type(leaf)}{list(jnp.shape(leaf))}, "
                        f"'0/{path}' is {jnp.result_type(first[path])}"
                        f"{list(jnp.shape(first[path]))}; stacked layers must be identical",
                    )
        return jax.tree.map(lambda *leaves: jnp.stack(leaves), *(layers[k] for k in expected))

    def _check_stacked(self, what: str, tree: Any) -> None:
        """Every leaf of ``tree`` has a leading axis of size ``n`` (else a ``ShapeError``)."""
        if not isinstance(tree, Mapping):
            return  # Layer.apply has said what params and state must be
        for path, leaf in flatten_params(tree).items():
            shape = tuple(jnp.shape(leaf))
            if shape[:1] != (self.n,):
                raise self.error(
                    ShapeError,
                    f"{what} entry {path!r} has shape {shape}, expected a leading axis of size "
                    f"n={self.n} (one slice per stacked layer); per-layer {what} "
                    "({'0': ..., '1': ...}) convert with Repeat.stack",
                )

    def _check_output(self, x: Any, y: Any) -> None:
        def spec(tree: Any) -> Any:
            return jax.tree.map(lambda a: (tuple(jnp.shape(a)), jnp.result_type(a).name), tree)

        given, expected = spec(y), spec(x)
        if given != expected:  # the tree structures and every leaf's shape and dtype
            raise self.error(
                ShapeError,
                f"the block {self.block!r} returns {given} for an input {expected}; a repeated "
                "block must return its input's structure, shapes and dtypes (its output is the "
                "next layer's input)",
            )

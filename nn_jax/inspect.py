"""Looking inside models and parameter trees: counts, summaries, paths, intermediates.

Built on the taps of :mod:`nn_jax.core` (:func:`~nn_jax.core.tapping`): every child output of a
block and every value a layer exposes with :func:`~nn_jax.core.tap` can be read or replaced.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from nn_jax.core import (
    Lambda,
    Layer,
    Params,
    PRNGKey,
    Side,
    State,
    check_input,
    check_key,
    check_layer,
    describe,
    tapping,
)
from nn_jax.errors import ArgumentError, ParamsError

__all__ = [
    "apply_with_intermediates",
    "flatten_params",
    "param_count",
    "summary",
    "unflatten_params",
]

SEP = "/"


def param_count(tree: Any) -> int:
    """Total number of scalars in a params (or any) pytree."""
    return sum(math.prod(jnp.shape(leaf)) for leaf in jax.tree.leaves(tree))


def flatten_params(tree: Mapping[str, Any], sep: str = SEP) -> dict[str, Any]:
    """``{"a": {"b": x}}`` -> ``{"a/b": x}``, in sorted path order."""
    if not isinstance(tree, Mapping):
        raise ArgumentError(
            f"flatten_params: expected a params tree (a dict of dicts of arrays), given "
            f"{describe(tree)}"
        )
    flat: dict[str, Any] = {}

    def visit(node: Any, prefix: str) -> None:
        if isinstance(node, Mapping):
            for key in sorted(node):
                visit(node[key], f"{prefix}{sep}{key}" if prefix else str(key))
        else:
            flat[prefix] = node

    visit(tree, "")
    return flat


def unflatten_params(flat: Mapping[str, Any], sep: str = SEP) -> dict[str, Any]:
    """Inverse of :func:`flatten_params`: ``{"a/b": x}`` -> ``{"a": {"b": x}}``."""
    if not isinstance(flat, Mapping) or not all(isinstance(k, str) for k in flat):
        raise ArgumentError(
            f"unflatten_params: expected a dict from paths ('a{sep}b') to arrays, given "
            f"{describe(flat)}"
        )
    tree: dict[str, Any] = {}
    for path, value in flat.items():
        *parents, leaf = path.split(sep)
        node = tree
        for key in parents:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ParamsError(f"unflatten_params: path {path!r} goes through a leaf at {key!r}")
        if leaf in node:
            raise ParamsError(f"unflatten_params: path {path!r} appears twice")
        node[leaf] = value
    return tree


def _subtree(tree: Mapping[str, Any], path: str) -> Any:
    node: Any = tree
    for key in path.split(SEP) if path else []:
        node = node.get(key, {}) if isinstance(node, Mapping) else {}
    return node


def apply_with_intermediates(
    model: Layer,
    params: Params,
    state: State,
    x: Any,
    *,
    side: Side | None = None,
    rng: PRNGKey | None = None,
    train: bool = False,
    capture: str | Sequence[str] = "*",
    edit: Mapping[str, Callable[[Any], Any]] | None = None,
) -> tuple[Any, State, dict[str, Any]]:
    """``model.apply`` that also returns the tapped values whose path matches ``capture``.

    Tapped values are every child's output (keyed by its layer path, e.g. ``"encoder/0"``) and
    the values layers expose by name (``"block_0/attention/weights"``). ``edit``
    replaces values on the way (``{"hidden": lambda h: h.at[..., 3].set(0.0)}`` ablates unit 3).
    Pure and ``jit``-able: the values are returned, never stored.

    >>> import jax, jax.numpy as jnp
    >>> from nn_jax import Dense, Sequential
    >>> model = Sequential(Dense(4), jax.nn.relu, Dense(1))
    >>> params, state = model.init(jax.random.key(0), jnp.zeros((2, 3)))
    >>> _, _, values = apply_with_intermediates(model, params, state, jnp.ones((2, 3)))
    >>> {path: v.shape for path, v in values.items()}
    {'0': (2, 4), '1': (2, 4), '2': (2, 1)}
    """
    check_layer("apply_with_intermediates", model)
    with tapping(capture, edit) as taps:
        y, new_state = model.apply(params, state, x, side=side, rng=rng, train=train)
    return y, new_state, taps.values


def _fmt_shape(tree: Any) -> str:
    shapes = [f"{jnp.dtype(a.dtype).name}{list(a.shape)}" for a in jax.tree.leaves(tree)]
    return shapes[0] if len(shapes) == 1 else "(" + ", ".join(shapes) + ")"


def summary(
    model: Layer,
    x: Any,
    *,
    side: Side | None = None,
    key: PRNGKey | None = None,
    train: bool = False,
) -> str:
    """A table of every layer: path, type, output shape, parameter shapes and counts.

    Computed with ``jax.eval_shape``: nothing is run on data. Nested rows repeat the counts of
    their children; the total counts each parameter once.

    Args:
        model: a layer instance.
        x: an example input: an array, a ``jax.ShapeDtypeStruct`` or a pytree of them. A shape
            alone is not accepted (it says nothing of the dtype, and a tuple of ints is also a
            pytree): pass ``jax.ShapeDtypeStruct((8, 3), jnp.float32)`` or ``jnp.zeros((8, 3))``.
        side: side inputs, as ``apply`` takes them.
        key: the key for ``init`` (default ``jax.random.key(0)``).
        train: trace the training path (dropout, batch statistics).

    Raises:
        ArgumentError: ``model`` is not a layer instance, or ``x`` is not an example input.
    """
    check_layer("summary", model)
    check_input("summary", x, example=True, call="summary(model, x)")
    check_key(key, "summary", optional=True)
    key = jax.random.key(0) if key is None else key
    params, state = jax.eval_shape(model.init, key, x)

    def run(p: Params, s: State, x: Any, side: Side | None) -> Any:
        return model.apply(p, s, x, side=side, rng=key, train=train)[0]

    with tapping() as taps:  # the tapped values are tracers: only shapes and dtypes are read
        y = jax.eval_shape(run, params, state, x, side)
    rows = [("(root)", type(model).__name__, _fmt_shape(y), "", str(param_count(params)))]
    for path, layer in taps.layers.items():
        out = taps.values[path]
        sub = _subtree(params, path)
        own = (
            ", ".join(f"{k}: {list(v.shape)}" for k, v in sub.items() if not isinstance(v, Mapping))
            if isinstance(sub, Mapping)
            else ""
        )
        kind = repr(layer) if isinstance(layer, Lambda) else type(layer).__name__
        rows.append((path, kind, _fmt_shape(out), own, str(param_count(sub))))
    header = ("path", "type", "output", "params", "count")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    out_lines = [line.format(*header), line.format(*("-" * w for w in widths))]
    out_lines += [line.format(*r).rstrip() for r in rows]
    out_lines.append(f"Total parameters: {param_count(params):,}")
    return "\n".join(out_lines)

"""Looking inside models and parameter trees: counts, summaries, paths, intermediates.

Built on the taps of :mod:`nn_jax.core` (:func:`~nn_jax.core.tapping`): every child output of a
block and every value a layer exposes with :func:`~nn_jax.core.tap` can be read or replaced.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from nn_jax._flops import step_flops
from nn_jax.core import (
    Block,
    Lambda,
    Layer,
    Params,
    PRNGKey,
    Scope,
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
    "SummaryRow",
    "apply_with_intermediates",
    "flatten_params",
    "param_bytes",
    "param_count",
    "render_array",
    "render_tree",
    "summary",
    "summary_rows",
    "unflatten_params",
    "use_treescope",
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


def param_bytes(tree: Any) -> int:
    """Total bytes of the arrays in a params (or any) pytree: ``sum(size * itemsize)``.

    Leaves may be arrays or ``jax.ShapeDtypeStruct`` (as ``jax.eval_shape`` gives them).

    >>> import jax.numpy as jnp
    >>> param_bytes({"w": jnp.zeros((3, 4), jnp.float32), "b": jnp.zeros(4, jnp.bfloat16)})
    56
    """
    return sum(
        math.prod(jnp.shape(leaf)) * jnp.dtype(leaf.dtype).itemsize
        for leaf in jax.tree.leaves(tree)
    )


def _fmt_shape(tree: Any) -> str:
    shapes = [f"{jnp.dtype(a.dtype).name}{list(a.shape)}" for a in jax.tree.leaves(tree)]
    return shapes[0] if len(shapes) == 1 else "(" + ", ".join(shapes) + ")"


@dataclasses.dataclass(frozen=True)
class SummaryRow:
    """One row of :func:`summary`: a layer at a path, what it outputs, owns and costs.

    Attributes:
        path: the layer path (``"encoder/0"``; ``""`` for the model itself).
        kind: the layer's type name (a plain function's repr, e.g. ``Lambda(relu)``).
        output: the output's shapes and dtypes (a pytree of ``jax.ShapeDtypeStruct``).
        params: ``{relative path: shape}`` of the parameters this row shows: those not shown on
            a child's row (``{"cell/w_h": (8, 32), ...}`` for an ``RNN``; ``{}`` for a
            container whose parameters all belong to its children).
        count: scalars in the layer's whole params subtree (children included).
        bytes: bytes of that subtree, ``sum(size * itemsize)`` over its arrays.
        flops: XLA's FLOP count of the layer's own compiled ``apply`` on the shapes it sees in
            the model, with every ``jax.lax.scan`` counted once per iteration; ``None`` when
            not computed (``summary(..., flops=False)``).
    """

    path: str
    kind: str
    output: Any
    params: dict[str, tuple[int, ...]]
    count: int
    bytes: int
    flops: float | None


@dataclasses.dataclass(frozen=True)
class _Probe(Block):
    """Runs ``layer`` as child ``"layer"`` after reading every side input, so a child compiled
    on its own with the side inputs its parent gave it does not fail the "side input read by no
    layer" check on names its siblings read."""

    layer: Layer
    names: tuple[str, ...]

    def forward(self, scope: Scope, x: Any) -> Any:
        for name in self.names:
            scope.side_input(name)
        return scope("layer", self.layer, x)


def _spec(tree: Any) -> Any:
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(jnp.shape(a), a.dtype), tree)


class _FlopCounter:
    """FLOPs of ``layer.apply`` on given shapes, compiled once per distinct (layer, shapes)."""

    def __init__(self, key: PRNGKey, train: bool) -> None:
        self.key, self.train = key, train
        self.cache: dict[Any, float] = {}

    def __call__(self, layer: Layer, params: Any, state: Any, x: Any, side: Side | None) -> float:
        args = _spec((params, state, x, side))
        leaves, treedef = jax.tree.flatten(args)
        cache_key = (layer, treedef, tuple((a.shape, jnp.dtype(a.dtype).name) for a in leaves))
        if cache_key not in self.cache:
            key, train = self.key, self.train
            names = tuple(sorted(side)) if side else ()
            if names:
                probe = _Probe(layer=layer, names=names)

                def run(p: Params, s: State, x: Any, side: Side | None) -> Any:
                    return probe.apply(
                        {"layer": p}, {"layer": s}, x, side=side, rng=key, train=train
                    )[0]

            else:

                def run(p: Params, s: State, x: Any, side: Side | None) -> Any:
                    return layer.apply(p, s, x, side=side, rng=key, train=train)[0]

            self.cache[cache_key] = float(step_flops(jax.jit(run), *args)["flops"])
        return self.cache[cache_key]


def summary_rows(
    model: Layer,
    x: Any,
    *,
    side: Side | None = None,
    key: PRNGKey | None = None,
    train: bool = False,
    flops: bool = True,
) -> list[SummaryRow]:
    """The rows of :func:`summary` as data: one :class:`SummaryRow` per layer, the model first.

    Shapes come from ``jax.eval_shape``: nothing is run on data. FLOPs come from XLA's cost
    analysis of each layer's ``apply`` compiled on its own, on the input (and side inputs) it
    gets inside the model, corrected for loops (XLA counts a ``jax.lax.scan`` body once; here
    it counts once per step, as in the benchmark suite). Each distinct (layer, shapes) is
    compiled once; ``flops=False`` skips the compiling. XLA counts what the compiled program
    does: a ``Dense(n)`` on ``(m, k)`` costs ``2*m*k*n`` for the matmul plus ``m*n`` for the
    bias add; elementwise work counts too. A parent's row counts its children's work as well
    (compiled together with its own), so rows must not be summed across levels.

    Args:
        model: a layer instance.
        x: an example input (an array, a ``jax.ShapeDtypeStruct`` or a pytree of them).
        side: side inputs, as ``apply`` takes them.
        key: the key for ``init`` and the ``rng`` of ``apply`` (default ``jax.random.key(0)``).
        train: trace the training path (dropout, batch statistics).
        flops: compute the FLOPs column (compiles each distinct layer once).

    Returns:
        The model's row (path ``""``) then one row per child, in the order their ``apply``
        finished (a child before its parent).

    Raises:
        ArgumentError: ``model`` is not a layer instance, or ``x`` is not an example input.

    >>> import jax, jax.numpy as jnp
    >>> from nn_jax import Dense
    >>> (row,) = summary_rows(Dense(3), jax.ShapeDtypeStruct((2, 4), jnp.float32))
    >>> row.params, row.count, row.bytes, row.flops  # 2*2*4*3 matmul + 2*3 bias add
    ({'b': (3,), 'w': (4, 3)}, 15, 60, 54.0)
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
    # Input and side inputs each child was called with (recorded by nn_jax.core's Scope).
    calls: Mapping[str, tuple[Any, Side]] = taps.calls
    count_flops = _FlopCounter(key, train) if flops else None
    paths = ["", *taps.layers]

    def own_params(path: str, sub: Any) -> dict[str, tuple[int, ...]]:
        # Leaves under ``path`` that no child row (a deeper tapped layer path) shows.
        prefix = f"{path}{SEP}" if path else ""
        children = [p[len(prefix) :] for p in paths if p != path and p.startswith(prefix)]
        flat = flatten_params(sub) if isinstance(sub, Mapping) else {}
        return {
            k: tuple(v.shape)
            for k, v in flat.items()
            if not any(k == c or k.startswith(f"{c}{SEP}") for c in children)
        }

    rows = []
    for path in paths:
        layer = model if not path else taps.layers[path]
        sub = params if not path else _subtree(params, path)
        cost = None
        if count_flops is not None:
            if not path:
                cost = count_flops(model, params, state, x, side)
            elif path in calls:
                child_x, child_side = calls[path]
                cost = count_flops(layer, sub, _subtree(state, path), child_x, child_side)
        rows.append(
            SummaryRow(
                path=path,
                kind=repr(layer) if isinstance(layer, Lambda) else type(layer).__name__,
                output=_spec(y if not path else taps.values[path]),
                params=own_params(path, sub),
                count=param_count(sub),
                bytes=param_bytes(sub),
                flops=cost,
            )
        )
    return rows


def summary(
    model: Layer,
    x: Any,
    *,
    side: Side | None = None,
    key: PRNGKey | None = None,
    train: bool = False,
    flops: bool = True,
) -> str:
    """A table of every layer: path, type, output shape, parameters, their bytes and FLOPs.

    Shapes come from ``jax.eval_shape`` (nothing is run on data); FLOPs from XLA's cost analysis
    of each layer's own compiled ``apply`` on the shapes it sees in the model, with scans
    counted once per step (see :func:`summary_rows`). Nested rows repeat the counts, bytes and
    FLOPs of their children; the totals count each parameter once and the FLOPs of the model's
    ``apply`` once.

    Args:
        model: a layer instance.
        x: an example input: an array, a ``jax.ShapeDtypeStruct`` or a pytree of them. A shape
            alone is not accepted (it says nothing of the dtype, and a tuple of ints is also a
            pytree): pass ``jax.ShapeDtypeStruct((8, 3), jnp.float32)`` or ``jnp.zeros((8, 3))``.
        side: side inputs, as ``apply`` takes them.
        key: the key for ``init`` (default ``jax.random.key(0)``).
        train: trace the training path (dropout, batch statistics).
        flops: fill the FLOPs column (compiles each distinct layer once; ``False`` is faster).

    Raises:
        ArgumentError: ``model`` is not a layer instance, or ``x`` is not an example input.

    >>> import jax, jax.numpy as jnp
    >>> from nn_jax import Dense
    >>> print(summary(Dense(3), jax.ShapeDtypeStruct((2, 4), jnp.float32)))
    path    type   output         params             count  bytes  flops
    ------  -----  -------------  -----------------  -----  -----  -----
    (root)  Dense  float32[2, 3]  b: [3], w: [4, 3]  15     60     54
    Total parameters: 15
    Parameter bytes: 60
    FLOPs of one apply: 54
    """
    rows = summary_rows(model, x, side=side, key=key, train=train, flops=flops)
    header = ("path", "type", "output", "params", "count", "bytes", "flops")
    cells = [
        (
            r.path or "(root)",
            r.kind,
            _fmt_shape(r.output),
            ", ".join(f"{k}: {list(v)}" for k, v in r.params.items()),
            str(r.count),
            str(r.bytes),
            "" if r.flops is None else f"{round(r.flops):,}",
        )
        for r in rows
    ]
    widths = [max(len(c[i]) for c in [header, *cells]) for i in range(len(header))]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    out_lines = [line.format(*header), line.format(*("-" * w for w in widths))]
    out_lines += [line.format(*c).rstrip() for c in cells]
    out_lines.append(f"Total parameters: {rows[0].count:,}")
    out_lines.append(f"Parameter bytes: {rows[0].bytes:,}")
    if rows[0].flops is not None:
        out_lines.append(f"FLOPs of one apply: {round(rows[0].flops):,}")
    return "\n".join(out_lines)


# --------------------------------------------------------------------------------------------
# treescope: interactive, foldable renderings of params trees and activations in notebooks.


def _treescope(fn: str) -> Any:
    try:
        import treescope
    except ImportError as e:
        raise ImportError(
            f"{fn} needs treescope, which is not installed: pip install treescope "
            "(or pip install -e '.[notebooks]')"
        ) from e
    return treescope


def use_treescope(*, autovisualize_arrays: bool = True) -> None:
    """Make treescope the notebook's renderer for every cell result (one line of setup).

    Calls ``treescope.basic_interactive_setup``: params trees, configs and captured values
    display as foldable trees, arrays as colour-coded heatmaps (``autovisualize_arrays``).
    treescope is imported only here and in :func:`render_array` and :func:`render_tree`.

    Args:
        autovisualize_arrays: draw arrays as heatmaps instead of listing their values.

    Raises:
        ImportError: treescope is not installed.
        RuntimeError: no IPython shell is running (outside a notebook, use
            :func:`render_tree` or :func:`render_array` and save their HTML).
    """
    treescope = _treescope("use_treescope")
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - treescope depends on IPython
        get_ipython = None
    if get_ipython is None or get_ipython() is None:
        raise RuntimeError(
            "use_treescope: no IPython shell is running; call it in a notebook, or use "
            "render_tree / render_array and save their HTML"
        )
    treescope.basic_interactive_setup(autovisualize_arrays=autovisualize_arrays)


def render_array(
    array: Any,
    axis_names: Sequence[str],
    *,
    item_labels: Mapping[str, Sequence[str]] | None = None,
    rows: Sequence[str] = (),
    columns: Sequence[str] = (),
) -> Any:
    """A treescope heatmap of ``array`` with named axes, e.g. a captured activation.

    Args:
        array: an array of rank ``len(axis_names)`` (e.g. ``(B, T, H)`` hidden states).
        axis_names: one name per axis, e.g. ``("example", "step", "unit")``; shown on the
            figure's axes and usable in ``rows``, ``columns`` and ``item_labels``.
        item_labels: ``{axis name: one label per index}``, e.g. ``{"class": ["cat", "dog"]}``.
        rows: axis names to lay out vertically (treescope chooses for the others).
        columns: axis names to lay out horizontally.

    Returns:
        A treescope figure: it displays itself in a notebook (``_repr_html_``) and
        ``treescope.render_to_html`` turns it into a standalone HTML string.

    Raises:
        ArgumentError: the number of axis names is not the array's rank, an axis name in
            ``item_labels``/``rows``/``columns`` is not one of them, or a list of item labels
            is not as long as its axis.
        ImportError: treescope is not installed.

    >>> import jax.numpy as jnp
    >>> fig = render_array(jnp.ones((2, 3)), ("example", "unit"), item_labels={"unit": "abc"})
    >>> hasattr(fig, "_repr_html_")
    True
    """
    shape = jnp.shape(array)
    names = tuple(axis_names)
    if isinstance(axis_names, str) or len(names) != len(shape):
        raise ArgumentError(
            f"render_array: expected one axis name per axis of the array (shape {shape}, "
            f"{len(shape)} names), given {axis_names!r}"
        )
    index = {name: i for i, name in enumerate(names)}
    labels = {} if item_labels is None else dict(item_labels)
    for name in (*labels, *rows, *columns):
        if name not in index:
            raise ArgumentError(
                f"render_array: axis name {name!r} is not one of the array's axes {names}"
            )
    for name, items in labels.items():
        if len(items) != shape[index[name]]:
            raise ArgumentError(
                f"render_array: axis {name!r} has {shape[index[name]]} entries, given "
                f"{len(items)} item labels"
            )
    treescope = _treescope("render_array")
    return treescope.render_array(
        array,
        axis_labels=dict(enumerate(names)),
        axis_item_labels={index[n]: [str(s) for s in items] for n, items in labels.items()},
        rows=[index[n] for n in rows],
        columns=[index[n] for n in columns],
    )


def render_tree(tree: Any, *, autovisualize_arrays: bool = True) -> str:
    """A standalone HTML rendering of a params tree (or captured values) by treescope.

    Nested dicts fold and unfold; with ``autovisualize_arrays`` each array is drawn as a
    heatmap under its path, with its shape and dtype. The HTML needs no running kernel: write
    it to a file or show it with ``IPython.display.HTML``.

    Args:
        tree: any pytree, e.g. ``params`` or the values of :func:`apply_with_intermediates`.
        autovisualize_arrays: draw arrays as heatmaps (otherwise list their summaries).

    Returns:
        The HTML, as a string.

    Raises:
        ImportError: treescope is not installed.
    """
    treescope = _treescope("render_tree")
    visualizer = treescope.ArrayAutovisualizer() if autovisualize_arrays else None
    with treescope.active_autovisualizer.set_scoped(visualizer):
        html: str = treescope.render_to_html(tree, compressed=False)
    return html

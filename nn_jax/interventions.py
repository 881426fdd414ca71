"""Interventions: change values inside a model during ``apply`` and measure what changes.

Built on the ``edit`` of :func:`nn_jax.core.tapping` (and
:func:`nn_jax.inspect.apply_with_intermediates`): ``edit={pattern: fn}`` replaces every tapped
value whose path matches ``pattern`` by ``fn(value)`` before the model goes on. This module
builds such functions and runs the usual experiments:

* :func:`zero_units` ablates units (features) of an activation;
* :func:`knock_out_heads` zeroes attention heads in the ``heads`` tap of
  :class:`~nn_jax.attention.MultiHeadAttention`;
* :func:`patch` replaces values with those recorded in another run;
* :func:`activation_patching` runs a corrupted input with each path patched from a clean run
  (causal tracing, Meng et al., 2022; activation patching, Wang et al., 2023).

Every edit function is traceable: the units and heads may be traced integers, so an intervention
runs under ``jax.jit`` and ``jax.vmap`` (``vmap`` over which head is knocked out, for instance).

What is reachable, by path (``apply_with_intermediates(..., capture="*")`` lists them all):

* every child output of a :class:`~nn_jax.core.Block` / :class:`~nn_jax.combinators.Sequential`,
  at its layer path (``"block_0"``, ``"block_0/attention"``, ``"encoder/0"``);
* the zoo :class:`~nn_jax.models.MLP`: pre-activations ``dense_<i>`` and post-activations
  ``activation_<i>`` (``final_activation`` when set);
* attention (:class:`~nn_jax.attention.MultiHeadAttention` at path ``<p>``): ``<p>/weights``
  ``(..., H, Tq, Tk)`` and ``<p>/heads`` ``(..., Tq, H, Dv)``, the per-head outputs before the
  output projection; in :class:`~nn_jax.models.TransformerLM` and
  :class:`~nn_jax.models.TransformerEncoder` ``p`` is ``block_<i>/attention``, the block's output
  ``block_<i>`` (the residual stream after the block), ``block_<i>/attention`` and
  ``block_<i>/mlp`` its two residual branches;
* recurrent (:class:`~nn_jax.recurrent.RNN` at path ``<p>``): its output (every step's ``y_t``,
  or the last one) at ``<p>``, and the final carry at ``<p>/carry``. The carry tap is read-only in
  effect: the carry is not used after the scan, so editing it changes nothing. Values inside the
  ``lax.scan`` body (the carry at step ``t``, gates) are *not* reachable: a tap there would hold
  a tracer of the loop body that cannot leave the loop; edit the RNN's output, or its input
  projection by running the cell yourself.
"""

from __future__ import annotations

import fnmatch
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from nn_jax.core import Array, Layer, Params, PRNGKey, Side, State, check_layer, describe
from nn_jax.errors import ArgumentError, ShapeError
from nn_jax.inspect import apply_with_intermediates

__all__ = [
    "PatchingResult",
    "activation_patching",
    "knock_out_heads",
    "patch",
    "zero_units",
]

Edit = Callable[[Any], Any]


def _escape(path: str) -> str:
    """``path`` as an ``fnmatch`` pattern that matches exactly that path."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in path)


def _index_set(fn: str, name: str, indices: Any) -> Array:
    """``indices`` (an int, a sequence of ints or an int array, maybe traced) as an int array."""
    try:
        array = jnp.asarray(indices)
    except TypeError:
        array = None
    if array is None or not jnp.issubdtype(array.dtype, jnp.integer):
        raise ArgumentError(
            f"{fn}: {name} must be an int, a sequence of ints or an int array, given "
            f"{describe(indices)}"
        )
    return array.reshape(-1)


def _zero_along(fn: str, name: str, indices: Any, axis: int) -> Edit:
    """The edit function zeroing positions ``indices`` of ``axis``."""
    index = _index_set(fn, name, indices)
    # Concrete indices are range-checked once the value's shape is known; traced ones cannot be.
    concrete = None if isinstance(index, jax.core.Tracer) else [int(i) for i in np.asarray(index)]

    def edit(value: Any) -> Any:
        value = jnp.asarray(value)
        if not -value.ndim <= axis < value.ndim:
            raise ShapeError(
                f"{fn}: axis {axis} is out of range for a value of shape {value.shape}"
            )
        size = value.shape[axis]
        if concrete is not None and any(not -size <= i < size for i in concrete):
            raise ShapeError(
                f"{fn}: {name} {list(concrete)} out of range for axis {axis} of size {size} "
                f"(value shape {value.shape}); expected indices in [{-size}, {size - 1}]"
            )
        keep = jnp.ones((size,), bool).at[index].set(False)
        shape = [1] * value.ndim
        shape[axis] = size
        return jnp.where(keep.reshape(shape), value, jnp.zeros((), value.dtype))

    return edit


def zero_units(units: Any, axis: int = -1) -> Edit:
    """An edit function that sets units ``units`` of ``axis`` to zero (ablation).

    Args:
        units: an int, a sequence of ints or an int array (may be traced, e.g. under ``vmap``);
            negative indices count from the end.
        axis: the units' axis of the tapped value (default the last: features).

    Returns:
        ``fn(value) -> value`` with the same shape and dtype, for ``edit={path: fn}``.

    For an activation with ``act(0) = 0`` (ReLU, tanh), zeroing unit ``j`` of
    ``activation_<i>`` equals zeroing column ``j`` of ``dense_<i>``'s ``w`` and ``b[j]``.

    >>> import jax, jax.numpy as jnp
    >>> from nn_jax.inspect import apply_with_intermediates
    >>> from nn_jax.models import MLP
    >>> mlp = MLP((4, 2))
    >>> params, state = mlp.init(jax.random.key(0), jnp.zeros((3, 5)))
    >>> _, _, values = apply_with_intermediates(
    ...     mlp, params, state, jnp.ones((3, 5)), capture="activation_0",
    ...     edit={"activation_0": zero_units([0, 2])})
    >>> values["activation_0"][:, jnp.array([0, 2])].tolist()
    [[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]
    """
    return _zero_along("zero_units", "units", units, axis)


def knock_out_heads(heads: Any) -> Edit:
    """An edit function for the ``heads`` tap ``(..., Tq, H, Dv)`` that zeroes heads ``heads``.

    The attention's output is ``sum_h heads[..., h, :] @ w_o[h] + b_o``, so a zeroed head adds
    nothing (the output bias stays): the same as zeroing ``w_o[h]``.

    Args:
        heads: query head index(es): an int, a sequence of ints or an int array (may be traced).

    Returns:
        ``fn(heads_value) -> heads_value`` for ``edit={"<attention path>/heads": fn}``.

    >>> import jax, jax.numpy as jnp
    >>> from nn_jax.inspect import apply_with_intermediates
    >>> from nn_jax.models import TransformerLM
    >>> lm = TransformerLM(11, num_layers=2, d_model=8, num_heads=2)
    >>> tokens = jnp.zeros((1, 5), jnp.int32)
    >>> params, state = lm.init(jax.random.key(0), tokens)
    >>> _, _, values = apply_with_intermediates(
    ...     lm, params, state, tokens, capture="*/heads",
    ...     edit={"block_1/attention/heads": knock_out_heads(1)})
    >>> {path: v.shape for path, v in values.items()}
    {'block_0/attention/heads': (1, 5, 2, 4), 'block_1/attention/heads': (1, 5, 2, 4)}
    >>> float(jnp.abs(values["block_1/attention/heads"][:, :, 1]).max())
    0.0
    """
    return _zero_along("knock_out_heads", "heads", heads, -2)


def patch(values: Mapping[str, Any]) -> dict[str, Edit]:
    """Edits that replace the tapped value at each path of ``values`` by the value given.

    Args:
        values: ``{path: value}``, typically the values captured in another run
            (:func:`~nn_jax.inspect.apply_with_intermediates`); each path is matched exactly
            (not as a pattern). A value may be a pytree (an LSTM's ``carry``).

    Returns:
        ``{pattern: fn}`` for ``edit=``; each ``fn`` checks that the replacement has the
        tapped value's tree structure, shapes and dtypes and raises ``ShapeError`` otherwise.

    >>> import jax, jax.numpy as jnp
    >>> from nn_jax.inspect import apply_with_intermediates
    >>> from nn_jax.models import MLP
    >>> mlp = MLP((4, 2))
    >>> params, state = mlp.init(jax.random.key(0), jnp.zeros((3, 5)))
    >>> clean, _, recorded = apply_with_intermediates(
    ...     mlp, params, state, jnp.ones((3, 5)), capture="activation_0")
    >>> patched, _, _ = apply_with_intermediates(
    ...     mlp, params, state, jnp.zeros((3, 5)), capture=(), edit=patch(recorded))
    >>> bool(jnp.allclose(patched, clean))
    True
    """
    if not isinstance(values, Mapping) or not all(isinstance(k, str) for k in values):
        raise ArgumentError(
            f"patch: values must be a dict from layer paths to arrays, given {describe(values)}"
        )

    def replace(path: str, new: Any) -> Edit:
        def edit(old: Any) -> Any:
            old_tree: Any = jax.tree.structure(old)
            new_tree: Any = jax.tree.structure(new)
            if old_tree != new_tree:
                raise ShapeError(
                    f"patch: the value at {path!r} has structure {old_tree}, the patch {new_tree}"
                )
            for a, b in zip(jax.tree.leaves(old), jax.tree.leaves(new), strict=True):
                if jnp.shape(a) != jnp.shape(b) or jnp.result_type(a) != jnp.result_type(b):
                    raise ShapeError(
                        f"patch: the value at {path!r} is {jnp.result_type(a)}"
                        f"{list(jnp.shape(a))}, the patch {jnp.result_type(b)}"
                        f"{list(jnp.shape(b))}; patch with values recorded at the same path "
                        "from an input of the same shape"
                    )
            return new

        return edit

    return {_escape(path): replace(path, value) for path, value in values.items()}


class PatchingResult(NamedTuple):
    """What :func:`activation_patching` returns: the metric of the clean run, of the corrupted
    run, and of the corrupted run with each path (pattern) patched from the clean run."""

    clean: Array
    corrupted: Array
    patched: dict[str, Array]


@functools.partial(jax.jit, static_argnames=("model", "paths", "metric", "train"))
def _patching(
    model: Layer,
    params: Params,
    state: State,
    clean_x: Any,
    corrupted_x: Any,
    side: Side | None,
    rng: PRNGKey | None,
    *,
    paths: tuple[str, ...],
    metric: Callable[[Any], Any],
    train: bool,
) -> PatchingResult:
    def run(x: Any, capture: Any, edit: Any) -> tuple[Any, dict[str, Any]]:
        y, _, values = apply_with_intermediates(
            model, params, state, x, side=side, rng=rng, train=train, capture=capture, edit=edit
        )
        return y, values

    clean_y, recorded = run(clean_x, paths, None)
    corrupted_y, _ = run(corrupted_x, (), None)
    patched = {}
    for pattern in paths:
        chosen = {p: v for p, v in recorded.items() if fnmatch.fnmatchcase(p, pattern)}
        if not chosen:
            raise ArgumentError(
                f"activation_patching: path pattern {pattern!r} matches no tapped value; "
                f"list the paths with apply_with_intermediates(..., capture='*')"
            )
        patched[pattern] = metric(run(corrupted_x, (), patch(chosen))[0])
    return PatchingResult(metric(clean_y), metric(corrupted_y), patched)


def activation_patching(
    model: Layer,
    params: Params,
    state: State,
    clean_x: Any,
    corrupted_x: Any,
    *,
    paths: Sequence[str],
    metric: Callable[[Any], Any],
    side: Side | None = None,
    rng: PRNGKey | None = None,
    train: bool = False,
) -> PatchingResult:
    """Run ``corrupted_x`` with the values at each of ``paths`` patched from the ``clean_x`` run.

    For each entry of ``paths`` (an ``fnmatch`` pattern: ``"block_0"``, or
    ``"block_*/attention/heads"`` to patch several values at once) the model runs on
    ``corrupted_x`` with every tapped value matching it replaced by the value the clean run had
    there; ``metric`` scores each output. A path whose patch brings the metric back to the
    clean run's carries the information the corruption destroyed (causal tracing, Meng et al.,
    2022). All runs are one ``jax.jit``-compiled function per ``(model, paths, metric)``: pass
    the same ``metric`` function (not a new lambda) to reuse it.

    Args:
        model: a layer instance.
        params, state: the model's params and state.
        clean_x: the clean input, e.g. ``(B, T)`` tokens.
        corrupted_x: the corrupted input, the same shape as ``clean_x`` (so the patched values
            fit).
        paths: path patterns to patch, one run each; each must match a tapped value.
        metric: ``metric(output) -> array`` (e.g. a scalar logit difference or accuracy).
        side, rng, train: as ``model.apply`` takes them (the same for every run).

    Returns:
        :class:`PatchingResult` ``(clean, corrupted, patched)`` with ``patched[path]`` the
        metric of the corrupted run with ``path`` patched, for each entry of ``paths``.

    >>> import jax, jax.numpy as jnp
    >>> from nn_jax.models import MLP
    >>> mlp = MLP((4, 4, 1))
    >>> params, state = mlp.init(jax.random.key(0), jnp.zeros((2, 3)))
    >>> def output(y):
    ...     return y[:, 0]
    >>> result = activation_patching(
    ...     mlp, params, state, jnp.ones((2, 3)), -jnp.ones((2, 3)),
    ...     paths=["dense_0", "activation_1"], metric=output)
    >>> sorted(result.patched)
    ['activation_1', 'dense_0']
    >>> bool(jnp.allclose(result.patched["dense_0"], result.clean))  # everything flows through it
    True
    """
    fn = "activation_patching"
    check_layer(fn, model)
    if isinstance(paths, str) or not all(isinstance(p, str) for p in paths) or not paths:
        raise ArgumentError(
            f"{fn}: paths must be a non-empty sequence of path patterns, e.g. "
            f"['block_0', 'block_1'], given {describe(paths)}"
        )
    if not callable(metric):
        raise ArgumentError(
            f"{fn}: metric must be a function of the output, given {describe(metric)}"
        )
    clean_shapes = jax.tree.map(jnp.shape, clean_x)
    corrupted_shapes = jax.tree.map(jnp.shape, corrupted_x)
    if clean_shapes != corrupted_shapes:
        raise ShapeError(
            f"{fn}: clean_x and corrupted_x must have the same shapes (the patched values "
            f"must fit), given {clean_shapes} and {corrupted_shapes}"
        )
    result = _patching(
        model,
        params,
        state,
        clean_x,
        corrupted_x,
        side,
        rng,
        paths=tuple(paths),
        metric=metric,
        train=train,
    )
    # jit returns dicts sorted by key: give them back in the order of ``paths``.
    return result._replace(patched={p: result.patched[p] for p in paths})

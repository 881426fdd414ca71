"""Equinox bridges: ``equinox.Module`` s as nn_jax layers, and nn_jax layers as Modules.

* :class:`EquinoxModule` wraps a *constructor* of an Equinox module (a function of a PRNG key):
  an Equinox module holds its arrays, an nn_jax layer holds none, so the layer keeps the
  constructor and ``init`` calls it. The module's floating-point arrays
  (``eqx.partition(module, eqx.is_inexact_array)``) become params, a plain nested dict keyed by
  attribute path (``{"layers": {"0": {"weight": ..., "bias": ...}}}``); everything else (the
  static rest: activations, sizes, integer arrays) is rebuilt from the constructor by
  ``eqx.filter_eval_shape`` (no arrays are made) and put back with ``eqx.combine`` in
  ``apply``.
* :func:`to_equinox` goes the other way: an nn_jax layer and its params as an
  :class:`NNJaxModule`, whose array leaves are the params, so ``eqx.filter_grad`` and
  ``eqx.filter_jit`` train and compile it like any Equinox model.

Equinox is imported by this module only: ``import nn_jax`` never needs it.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from nn_jax.compat._foreign import foreign_errors, takes_keyword
from nn_jax.core import Call, Layer, Params, State
from nn_jax.errors import ArgumentError, ConfigError, ParamsError, ShapeError

__all__ = ["EquinoxModule", "NNJaxModule", "to_equinox"]

PRNGKey = jax.Array


def _key_name(entry: Any) -> str:
    """One entry of a JAX key path as a dict key: an attribute name, an index, a dict key."""
    for attribute in ("name", "idx", "key"):
        if hasattr(entry, attribute):
            return str(getattr(entry, attribute))
    return str(entry)


def _to_dict(tree: Any) -> dict[str, Any]:
    """The array leaves of ``tree`` as a nested dict keyed by their path names."""
    out: dict[str, Any] = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        names = [_key_name(entry) for entry in path]
        node = out
        for name in names[:-1]:
            node = node.setdefault(name, {})
        node[names[-1]] = leaf
    return out


def _is_struct(x: Any) -> bool:
    return isinstance(x, jax.ShapeDtypeStruct)


def _is_inexact_struct(x: Any) -> bool:
    return _is_struct(x) and jnp.issubdtype(x.dtype, jnp.inexact)


@functools.lru_cache(maxsize=64)
def _skeleton(make: Callable[[PRNGKey], Any]) -> tuple[Any, Any]:
    """``(module, state)`` as the constructor makes them, arrays as ``ShapeDtypeStruct`` s
    (``state`` is ``None`` for a stateless module); no array is computed."""
    made = eqx.filter_eval_shape(make, jax.random.key(0))
    if isinstance(made, tuple) and len(made) == 2 and isinstance(made[1], eqx.nn.State):
        return made[0], made[1]
    return made, None


def _from_dict(layer: Layer, what: str, tree: Any, template: Any) -> Any:
    """``tree`` (a nested dict) rebuilt into the structure of ``template`` (structs as leaves),
    checking that every entry exists with the template's shape and that none is extra."""
    leaves_with_path, treedef = jax.tree_util.tree_flatten_with_path(template)
    leaves = []
    seen: set[tuple[str, ...]] = set()
    for path, struct in leaves_with_path:
        names = tuple(_key_name(entry) for entry in path)
        node = tree
        for depth, name in enumerate(names):
            if not isinstance(node, dict) or name not in node:
                given = sorted(node) if isinstance(node, dict) else type(node).__name__
                raise layer.error(
                    ParamsError,
                    f"missing {what} entry {'/'.join(names[: depth + 1])!r} (given keys {given} "
                    f"there); pass the {what} returned by this layer's init",
                )
            node = node[name]
        shape = tuple(getattr(node, "shape", ()))
        if shape != tuple(struct.shape):
            raise layer.error(
                ShapeError,
                f"{what} entry {'/'.join(names)!r} has shape {shape}, expected "
                f"{tuple(struct.shape)}, the shape the Equinox module was built with",
            )
        seen.add(names)
        leaves.append(node)
    extra = sorted(
        "/".join(_key_name(e) for e in path)
        for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]
        if tuple(_key_name(e) for e in path) not in seen
    )
    if extra:
        raise layer.error(
            ParamsError,
            f"{what} has entries {extra} that the Equinox module does not have; pass the "
            f"{what} returned by this layer's init",
        )
    return jax.tree.unflatten(treedef, leaves)


def _has_random_dropout(module: Any) -> bool:
    dropouts = jax.tree.leaves(module, is_leaf=lambda m: isinstance(m, eqx.nn.Dropout))
    return any(isinstance(m, eqx.nn.Dropout) and m.p > 0 for m in dropouts)


@dataclasses.dataclass(frozen=True)
class EquinoxModule(Layer):
    """An Equinox module as an nn_jax layer, built by its constructor ``make(key)``.

    Args:
        make: ``make(key) -> module``, e.g. ``lambda key: eqx.nn.MLP(4, 2, 8, 2, key=key)``;
            for a stateful module (``eqx.nn.BatchNorm``, ``eqx.nn.StateIndex``),
            ``make(key) -> (module, state)`` as ``eqx.nn.make_with_state(cls)(..., key=key)``
            returns. It is called by ``init`` (with the key) and traced by
            ``eqx.filter_eval_shape`` in ``apply`` (to rebuild the static part), so it must be
            deterministic apart from its key. Keep one function object per model (a
            ``lambda`` written twice is two different layers).
        vmap: Equinox modules compute on one example, nn_jax layers on a batch: with ``True``
            (the default), ``apply`` maps the module over the leading axis of ``x`` with
            ``jax.vmap(..., axis_name="batch")`` (so ``eqx.nn.BatchNorm(..., axis_name="batch")``
            sees the whole batch) and gives each example its own dropout key. ``False``
            calls the module on ``x`` as given.

    Input: what the module takes, with a leading batch axis ``(B, ...)`` when ``vmap``;
    output: what it returns (batched likewise). Params: the module's floating-point arrays
    keyed by attribute path (``weight``/``bias`` for Equinox's ``Linear``; ``"0"``, ``"1"``,
    ... for tuple items). State: the ``eqx.nn.State`` of a stateful module, as a nested dict
    keyed by the state's own path (``{"0": ..., "1": {"0": ..., "1": ...}}``; its order is the
    state's), ``{}`` otherwise.

    ``apply`` calls ``module(x, key=rng)`` (``module(x, state, key=rng) -> (y, state)`` when
    stateful; ``key`` only if ``__call__`` takes it), after
    ``eqx.nn.inference_mode(module, not train)``: Equinox's ``Dropout`` drops and ``BatchNorm``
    uses (and updates) batch statistics only when ``train=True``. A module holding an
    ``eqx.nn.Dropout`` with ``p > 0``, called with ``train=True`` and no ``rng``, raises an
    ``RngError``. Non-array fields (activations, sizes) come from ``make`` again in every
    ``apply``; a module holding integer or boolean arrays outside an ``eqx.nn.State`` is a
    ``ConfigError`` when constructed, as they would be neither params nor state. An error of
    the module itself on a wrong input is a ``ShapeError`` naming this layer's path.

    >>> import equinox as eqx, jax, jax.numpy as jnp
    >>> layer = EquinoxModule(lambda key: eqx.nn.MLP(3, 2, 4, 1, key=key))
    >>> params, state = layer.init(jax.random.key(0), jnp.zeros((5, 3)))
    >>> jax.tree.map(jnp.shape, params)
    {'layers': {'0': {'bias': (4,), 'weight': (4, 3)}, '1': {'bias': (2,), 'weight': (2, 4)}}}
    >>> layer.apply(params, state, jnp.ones((5, 3)))[0].shape
    (5, 2)
    """

    make: Callable[[Any], Any]
    vmap: bool = True

    def __post_init__(self) -> None:
        module, _ = self._built()
        if not isinstance(module, eqx.Module):
            raise ConfigError(
                f"EquinoxModule: make(key) must return an equinox.Module or (module, "
                f"eqx.nn.State), given a {type(module).__name__}"
            )
        others = eqx.filter(module, lambda v: _is_struct(v) and not _is_inexact_struct(v))
        if jax.tree.leaves(others, is_leaf=_is_struct):
            raise ConfigError(
                "EquinoxModule: the module holds non-floating-point arrays "
                f"{jax.tree.map(lambda v: f'{v.dtype}{list(v.shape)}', others)}, which are "
                "neither params nor state here; keep such constants as Python values or in an "
                "eqx.nn.State"
            )

    def _built(self) -> tuple[Any, Any]:
        try:
            return _skeleton(self.make)
        except TypeError as e:
            raise ConfigError(
                f"EquinoxModule: make must be a function of one PRNG key, e.g. "
                f"lambda key: eqx.nn.MLP(4, 2, 8, 2, key=key); calling it failed: {e}"
            ) from None

    def init(self, key: PRNGKey, x: Any) -> tuple[Params, State]:
        made = self.make(key)
        module, state = made if isinstance(made, tuple) else (made, None)
        params = _to_dict(eqx.filter(module, eqx.is_inexact_array))
        state_dict = {} if state is None else _to_dict(state)
        # Trace one call now (no FLOPs), so an input the module cannot take fails here.
        jax.eval_shape(
            lambda p, s, v: self.compute(p, s, v, Call({}, None, False)), params, state_dict, x
        )
        return params, state_dict

    def compute(self, params: Params, state: State, x: Any, call: Call) -> tuple[Any, State]:
        skeleton, state_skeleton = self._built()
        arrays, static = eqx.partition(skeleton, _is_inexact_struct)
        module = eqx.combine(_from_dict(self, "params", params, arrays), static)
        module = eqx.nn.inference_mode(module, value=not call.train)
        if call.train and call.rng is None and _has_random_dropout(module):
            self.require_rng(None)
        stateful = state_skeleton is not None
        eqx_state = _from_dict(self, "state", state, state_skeleton) if stateful else None
        takes_key = takes_keyword(module.__call__, "key", if_unknown=True)

        def run(xi: Any, s: Any, key: PRNGKey | None) -> tuple[Any, Any]:
            kwargs = {"key": key} if takes_key and key is not None else {}
            if stateful:
                return module(xi, s, **kwargs)
            return module(xi, **kwargs), s

        what = f"Equinox module {type(module).__name__}"
        if not self.vmap:
            with foreign_errors(self, what, x):
                y, new_state = run(x, eqx_state, call.rng)
        else:
            batch = {jnp.shape(leaf)[0] for leaf in jax.tree.leaves(x) if jnp.ndim(leaf)}
            if len(batch) != 1 or any(jnp.ndim(leaf) == 0 for leaf in jax.tree.leaves(x)):
                shapes = jax.tree.map(jnp.shape, x)
                raise self.error(
                    ShapeError,
                    f"with vmap=True the input needs one leading batch axis shared by every "
                    f"array, given shapes {shapes}; pass vmap=False to call the module on x "
                    "as it is",
                )
            (size,) = batch
            keys = None if call.rng is None else jax.random.split(call.rng, size)
            mapped = jax.vmap(
                run,
                in_axes=(0, None, None if keys is None else 0),
                out_axes=(0, None),
                axis_name="batch",
            )
            with foreign_errors(self, what, x):
                y, new_state = mapped(x, eqx_state, keys)
        return y, ({} if new_state is None else _to_dict(new_state))


class NNJaxModule(eqx.Module):
    """An nn_jax layer and its params as an Equinox module (made by :func:`to_equinox`).

    ``module(x, *, key=None)`` is ``layer.apply(params, state, x, rng=key,
    train=not inference)[0]``. ``params`` are the module's array leaves, so
    ``eqx.filter_grad(loss)(module, ...)`` returns their gradients (in a module of the same
    structure) and ``eqx.apply_updates`` updates them. ``state`` (batch-norm statistics) is
    fixed: it is read under ``jax.lax.stop_gradient`` and never updated, so a stateful layer
    runs only with ``inference=True`` (eval mode). ``inference`` follows Equinox's
    convention (``False``: training behaviour, e.g. dropout), and
    ``eqx.nn.inference_mode(module)`` switches it. The state's float arrays are array leaves
    too (with zero gradients): give an optimizer with weight decay ``module.params`` only.
    """

    layer: Layer = eqx.field(static=True)
    params: Params
    state: State
    inference: bool = False

    def __call__(self, x: Any, *, key: PRNGKey | None = None) -> Any:
        if jax.tree.leaves(self.state) and not self.inference:
            raise self.layer.error(
                ConfigError,
                "this layer has state, which an Equinox module call cannot update; call "
                "eqx.nn.inference_mode(module) to run it in eval mode with the fixed state, "
                "or train it with nn_jax's apply and thread the state",
            )
        state = jax.lax.stop_gradient(self.state)
        return self.layer.apply(self.params, state, x, rng=key, train=not self.inference)[0]


def to_equinox(
    layer: Layer, params: Params, state: State | None = None, *, inference: bool = False
) -> NNJaxModule:
    """``layer`` with its ``params`` (and fixed ``state``) as an Equinox module.

    Args:
        layer: an nn_jax layer.
        params: its params (as ``layer.init`` returns them); the module's trainable leaves.
        state: its state, ``None`` or ``{}`` for a stateless layer; held fixed (eval mode).
        inference: Equinox's flag; ``True`` runs the layer with ``train=False``.

    Returns:
        An :class:`NNJaxModule` whose ``__call__(x, *, key=None)`` applies the layer.

    >>> import equinox as eqx, jax, jax.numpy as jnp
    >>> from nn_jax import Dense
    >>> params, _ = Dense(2).init(jax.random.key(0), jnp.zeros((1, 3)))
    >>> module = to_equinox(Dense(2), params)
    >>> module(jnp.ones((4, 3))).shape
    (4, 2)
    >>> grads = eqx.filter_grad(lambda m, x: m(x).sum())(module, jnp.ones((4, 3)))
    >>> jax.tree.map(jnp.shape, grads.params)
    {'b': (2,), 'w': (3, 2)}
    """
    if not isinstance(layer, Layer):
        raise ArgumentError(
            f"to_equinox: layer must be an nn_jax layer instance, given {type(layer).__name__}"
        )
    for what, tree in (("params", params), ("state", state)):
        if tree is not None and not isinstance(tree, dict):
            raise ArgumentError(
                f"to_equinox: {what} must be the dict {layer!r}.init returned, given "
                f"{type(tree).__name__}"
            )
    return NNJaxModule(layer, params, {} if state is None else state, inference)

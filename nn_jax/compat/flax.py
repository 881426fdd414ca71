"""Flax bridges: Linen and NNX modules as nn_jax layers, and nn_jax layers inside Linen.

Builds on Flax's own functional entry points, so nothing of Flax is re-implemented:

- :class:`FlaxLinen` runs a ``flax.linen.Module`` through ``module.init`` / ``module.apply``.
  Linen's ``"params"`` collection is the nn_jax params; every other collection
  (``"batch_stats"``, ...) is the nn_jax state, keyed by collection name, made mutable in
  training (``mutable=[...]``) and returned as the new state.
- :class:`FlaxNNX` runs a ``flax.nnx.Module`` built by a constructor that takes ``rngs``, with
  ``nnx.split`` / ``nnx.merge``: ``nnx.Param`` variables are the params, the other variables
  (``nnx.BatchStat``, ...) the state, the ``nnx.GraphDef`` static data derived from the
  constructor; the random state (``nnx.RngState``) is never stored, it is derived per call from
  nn_jax's ``rng``.
- :func:`to_linen` wraps an nn_jax layer as a Linen module (:class:`LinenLayer`).

Params and state are plain nested dicts of arrays with string keys (an NNX list index ``0``
reads ``"0"``), so optax, checkpointing and the step builders of :mod:`nn_jax.train` see them as
any other model's. Randomness is explicit as everywhere in nn_jax: the Flax module's rng streams
come from the ``rng`` of ``apply`` (one key per stream, derived by name), and a module that draws
random numbers when ``rng`` is ``None`` raises :class:`~nn_jax.errors.RngError` naming the layer.

A Flax module is not describable as data, so :func:`nn_jax.config.to_config` refuses these
layers (their params and state checkpoint as any other's). Needs the ``flax`` package
(tested with flax 0.12).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import KW_ONLY
from typing import Any

import flax
import flax.errors
import flax.linen as linen
import jax
import jax.numpy as jnp
from flax import nnx

from nn_jax.core import (
    Call,
    Layer,
    Params,
    PRNGKey,
    Side,
    State,
    check_layer,
    derive_key,
    describe,
)
from nn_jax.errors import (
    ConfigError,
    NNJaxError,
    ParamsError,
    RngError,
    ShapeError,
)

__all__ = ["FlaxLinen", "FlaxNNX", "LinenLayer", "to_linen"]


# --------------------------------------------------------------------------------------------
# Shared by both wrappers.


def _mode_kwargs(layer: FlaxLinen | FlaxNNX, train: bool) -> dict[str, bool]:
    """The train flag as the module's own keyword: ``train=train`` and/or ``deterministic=not
    train`` (the names given as ``train_kwarg`` / ``eval_kwarg``)."""
    kwargs = {}
    if layer.train_kwarg is not None:
        kwargs[layer.train_kwarg] = train
    if layer.eval_kwarg is not None:
        kwargs[layer.eval_kwarg] = not train
    return kwargs


def _side_kwargs(layer: FlaxLinen | FlaxNNX, call: Call) -> dict[str, Any]:
    """The side inputs named in ``side_kwargs`` that this call was given, as keywords."""
    kwargs = {}
    for name in layer.side_kwargs:
        value = layer.side_input(call, name)
        if value is not None:
            kwargs[name] = value
    return kwargs


def _check_kwarg_names(layer: FlaxLinen | FlaxNNX) -> None:
    names = [n for n in (layer.train_kwarg, layer.eval_kwarg) if n is not None]
    names += list(layer.side_kwargs)
    bad = [n for n in names if not n.isidentifier()]
    if bad:
        raise ConfigError(
            f"{type(layer).__name__}: keyword names must be Python identifiers, given {bad}"
        )
    if len(set(names)) < len(names):
        raise ConfigError(
            f"{type(layer).__name__}: train_kwarg, eval_kwarg and side_kwargs name one keyword "
            f"twice: {names}"
        )


def _typed_key(key: PRNGKey) -> PRNGKey:
    """``key`` as a typed key (a legacy ``uint32`` key is wrapped)."""
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key
    return jax.random.wrap_key_data(key)


def _plain(tree: Any) -> Any:
    """Nested mappings (Flax ``FrozenDict`` s) as plain nested dicts with string keys."""
    if isinstance(tree, Mapping):
        return {str(k): _plain(v) for k, v in tree.items()}
    return tree


# --------------------------------------------------------------------------------------------
# Linen modules as nn_jax layers.

_LINEN_ERRORS: dict[type[Exception], type[NNJaxError]] = {
    flax.errors.ScopeParamShapeError: ShapeError,
    flax.errors.ScopeParamNotFoundError: ParamsError,
    flax.errors.ScopeVariableNotFoundError: ParamsError,
    flax.errors.ApplyScopeInvalidVariablesStructureError: ParamsError,
    flax.errors.ApplyScopeInvalidVariablesTypeError: ParamsError,
}


@dataclasses.dataclass(frozen=True)
class FlaxLinen(Layer):
    """A ``flax.linen.Module`` as an nn_jax layer.

    ``init(key, x)`` runs ``module.init({"params": key, <stream>: ...}, x, **mode)`` in eval
    mode and splits the variables: ``params`` is Linen's ``"params"`` collection, ``state`` holds
    every other collection under its name (``{"batch_stats": {...}}``; ``"intermediates"``,
    what ``sow`` collects, is left out). ``apply(params, state, x, rng=..., train=...)`` runs
    ``module.apply({"params": params, **state}, x, rngs=..., mutable=...)``: in training the
    state's collections are mutable and their updated values are the new state; in evaluation
    nothing is mutable.

    The train flag reaches the module through its own keyword argument, named here: with
    ``train_kwarg="train"`` the module is called ``module(x, train=train)`` (the common Linen
    signature ``__call__(self, x, train: bool)``); with ``eval_kwarg="deterministic"`` it is
    called ``module(x, deterministic=not train)`` (Linen's ``deterministic`` /
    ``use_running_average`` convention). Give neither for a module without modes.

    Args:
        module: an unbound ``flax.linen.Module`` instance (a frozen dataclass, so the layer stays
            hashable).
        train_kwarg: keyword of ``module.__call__`` that gets ``train``, or ``None``.
        eval_kwarg: keyword that gets ``not train``, or ``None``.
        rng_streams: names of the Linen rng streams the module draws from
            (``self.make_rng(name)``). Stream ``name`` gets
            ``jax.random.fold_in(rng, zlib.crc32(name.encode()) & 0x7FFFFFFF)``: the key nn_jax
            derives for a child called ``name``; Linen then derives each submodule's key from it
            by module path, as in ``module.apply(..., rngs={name: key})``.
        side_kwargs: names of side inputs passed to ``module.__call__`` as keyword arguments of
            the same name when the call has them (e.g. ``("mask",)``).

    Input: whatever ``module.__call__`` takes as its first argument (an array or a pytree);
    output: what it returns. Params: Linen's ``"params"`` tree (e.g. ``{"Dense_0": {"kernel":
    (D, F), "bias": (F,)}}``).

    >>> import jax, jax.numpy as jnp, flax.linen as nn
    >>> layer = FlaxLinen(nn.Dense(3))
    >>> params, state = layer.init(jax.random.key(0), jnp.zeros((2, 5)))
    >>> jax.tree.map(jnp.shape, (params, state))
    ({'bias': (3,), 'kernel': (5, 3)}, {})
    >>> layer(params, jnp.ones((2, 5))).shape
    (2, 3)
    """

    module: Any
    _: KW_ONLY
    train_kwarg: str | None = None
    eval_kwarg: str | None = None
    rng_streams: tuple[str, ...] = ("dropout",)
    side_kwargs: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        module = self.module
        if not isinstance(module, linen.Module):
            hint = ""
            if isinstance(module, type) and issubclass(module, linen.Module):
                hint = f"; construct it first, e.g. FlaxLinen({module.__name__}(...))"
            elif isinstance(module, nnx.Module):
                hint = "; an NNX module goes in FlaxNNX, given its constructor"
            raise ConfigError(
                f"FlaxLinen: module must be a flax.linen.Module instance, given "
                f"{describe(module)}{hint}"
            )
        if "params" in self.rng_streams:
            raise ConfigError(
                "FlaxLinen: rng_streams must not hold 'params': parameters are drawn from "
                f"init's key, given {self.rng_streams}"
            )
        _check_kwarg_names(self)

    def _rngs(self, rng: PRNGKey) -> dict[str, PRNGKey]:
        return {name: derive_key(rng, name) for name in self.rng_streams}

    def init(self, key: PRNGKey, x: Any) -> tuple[Params, State]:
        structs = jax.eval_shape(lambda t: t, x)
        leaves, treedef = jax.tree.flatten(structs)
        with _linen_errors(self, rng_given=True):
            return _linen_init(self, treedef, tuple(leaves), key)

    def init_traced(self, key: PRNGKey, x: Any) -> tuple[Params, State]:
        """``init`` on a real example input, without its own ``jit``."""
        rngs = {"params": key, **self._rngs(key)}
        variables = _plain(self.module.init(rngs, x, **_mode_kwargs(self, False)))
        params = variables.pop("params", {})
        variables.pop("intermediates", None)
        return params, variables

    def compute(self, params: Params, state: State, x: Any, call: Call) -> tuple[Any, State]:
        if "params" in state:
            raise self.error(
                ParamsError,
                "state has a 'params' entry; the params go in the params argument and the "
                "state holds the other Linen collections (given state keys "
                f"{sorted(state)})",
            )
        variables = {"params": params, **state} if params else dict(state)
        mutable: list[str] | bool = sorted(state) if call.train and state else False
        kwargs = {**_mode_kwargs(self, call.train), **_side_kwargs(self, call)}
        rngs = {} if call.rng is None else self._rngs(call.rng)
        with _linen_errors(self, rng_given=call.rng is not None):
            out = self.module.apply(variables, x, rngs=rngs, mutable=mutable, **kwargs)
        if mutable is False:
            return out, state
        y, updated = out
        updated = _plain(updated)
        return y, {name: updated.get(name, value) for name, value in state.items()}


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _linen_init(
    layer: FlaxLinen, treedef: Any, structs: tuple[jax.ShapeDtypeStruct, ...], key: PRNGKey
) -> tuple[Params, State]:
    """Linen's init under ``jit`` on zeros shaped like the example: XLA drops the forward pass."""
    x = jax.tree.unflatten(treedef, [jnp.zeros(s.shape, s.dtype) for s in structs])
    return layer.init_traced(key, x)


@contextlib.contextmanager
def _linen_errors(layer: FlaxLinen, *, rng_given: bool) -> Iterator[None]:
    """Re-raise Flax's errors as nn_jax's, with the layer path, expected and given."""
    try:
        yield
    except flax.errors.InvalidRngError as error:
        found = re.search(r'PRNG for "([^"]+)"', str(error))
        stream = found.group(1) if found else "?"
        if not rng_given:
            raise layer.error(
                RngError,
                f"the Flax module draws from the rng stream {stream!r} but was called with "
                "rng=None; pass rng=jax.random.key(...) (a fresh key per step), or "
                "train=False for evaluation",
            ) from error
        raise layer.error(
            RngError,
            f"the Flax module draws from the rng stream {stream!r}, which is not in "
            f"rng_streams={layer.rng_streams}; add it, e.g. rng_streams="
            f"{(*layer.rng_streams, stream)}",
        ) from error
    except flax.errors.ModifyScopeVariableError as error:
        raise layer.error(
            ConfigError,
            f"the Flax module updates a variable in evaluation (train=False), where no "
            f"collection is mutable ({error}); make it take the mode from its call, "
            "e.g. train_kwarg='train' or eval_kwarg='use_running_average'",
        ) from error
    except flax.errors.FlaxError as error:
        cls = next((c for k, c in _LINEN_ERRORS.items() if isinstance(error, k)), ConfigError)
        raise layer.error(
            cls,
            f"flax raised {type(error).__name__}: {error}; pass the params and state returned "
            "by this layer's init",
        ) from error


# --------------------------------------------------------------------------------------------
# NNX modules as nn_jax layers.


@dataclasses.dataclass(frozen=True)
class _NNXTemplate:
    """What a constructor makes, without arrays: the graph and each variable's path and type."""

    graphdef: Any
    params: tuple[tuple[tuple[Any, ...], Any], ...]
    rngs: tuple[tuple[tuple[Any, ...], Any], ...]
    state: tuple[tuple[tuple[Any, ...], Any], ...]


def _flat(state: Any) -> tuple[tuple[tuple[Any, ...], Any], ...]:
    return tuple((tuple(path), variable) for path, variable in nnx.to_flat_state(state))


def _pure(flat: tuple[tuple[tuple[Any, ...], Any], ...]) -> dict[str, Any]:
    """Flat ``(path, Variable)`` pairs as a nested dict of their values, keys as strings."""
    tree: dict[str, Any] = {}
    for path, variable in flat:
        node = tree
        for part in path[:-1]:
            node = node.setdefault(str(part), {})
        node[str(path[-1])] = variable.get_value()
    return tree


def _paths(tree: Any, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    if not isinstance(tree, Mapping):
        return {prefix: tree}
    out: dict[tuple[str, ...], Any] = {}
    for key, value in tree.items():
        out.update(_paths(value, (*prefix, str(key))))
    return out


def _split(module: Any) -> tuple[Any, Any, Any, Any]:
    """``(graphdef, params, rng state, other state)`` of an NNX module."""
    graphdef, *states = nnx.split(module, nnx.Param, nnx.RngState, ...)
    params, rngs, state = states
    return graphdef, params, rngs, state


@functools.lru_cache(maxsize=64)
def _nnx_template(layer: FlaxNNX) -> _NNXTemplate:
    abstract = nnx.eval_shape(lambda: layer._construct(jax.random.key(0)))
    graphdef, params, rngs, state = _split(abstract)
    return _NNXTemplate(graphdef, _flat(params), _flat(rngs), _flat(state))


@dataclasses.dataclass(frozen=True)
class FlaxNNX(Layer):
    """A ``flax.nnx.Module`` as an nn_jax layer, built from its constructor.

    ``init(key, x)`` calls ``make(rngs=nnx.Rngs(key))`` (under ``jit``) and splits the module with
    ``nnx.split(module, nnx.Param, nnx.RngState, ...)``: the ``nnx.Param`` values are the params,
    the other variables (``nnx.BatchStat``, caches, ...) the state, both plain nested dicts (an
    ``nnx.List`` index ``0`` becomes the key ``"0"``). The ``nnx.GraphDef`` is static data,
    derived once from the constructor with ``nnx.eval_shape``. The module is sized by its
    constructor, so ``x`` is only checked to be an example input.

    ``apply`` merges the module back (``nnx.merge``), sets its mode with ``module.train()``
    (``train=True``: ``deterministic=False``, ``use_running_average=False`` on every submodule
    that has them) or ``module.eval()``, calls ``module(x)``, and returns the output and the
    module's non-param variables after the call as the new state (the updated batch statistics
    in training).

    Randomness: the module's rng streams (``nnx.RngKey`` variables, e.g. an ``nnx.Dropout``'s
    ``rngs``) are not stored in params or state. Each call sets the stream at path ``p``
    (e.g. ``("dropout", "rngs")``) to ``jax.random.fold_in(rng, zlib.crc32("dropout/rngs/key"
    .encode()) & 0x7FFFFFFF)`` with count 0, so the masks depend only on ``rng``. Called with
    ``rng=None``, a module that draws a random number raises ``RngError``.

    Args:
        make: ``make(rngs=nnx.Rngs(key)) -> nnx.Module``, e.g. ``functools.partial(MyModel,
            4, 2)`` or ``lambda rngs: nnx.Linear(4, 2, rngs=rngs)``; called again for each
            ``init`` (the layer is hashable by ``make``'s identity).
        train_kwarg: keyword of ``module.__call__`` that also gets ``train``, or ``None``.
        eval_kwarg: keyword that also gets ``not train`` (e.g. ``"deterministic"``), or
            ``None``.
        side_kwargs: names of side inputs passed to ``module.__call__`` as keyword arguments of
            the same name when the call has them.

    Input: what ``module.__call__`` takes as its first argument; output: what it returns.

    >>> import jax, jax.numpy as jnp
    >>> from flax import nnx
    >>> layer = FlaxNNX(lambda rngs: nnx.Linear(5, 3, rngs=rngs))
    >>> params, state = layer.init(jax.random.key(0), jnp.zeros((2, 5)))
    >>> jax.tree.map(jnp.shape, (params, state))
    ({'bias': (3,), 'kernel': (5, 3)}, {})
    >>> layer(params, jnp.ones((2, 5))).shape
    (2, 3)
    """

    make: Callable[..., Any]
    _: KW_ONLY
    train_kwarg: str | None = None
    eval_kwarg: str | None = None
    side_kwargs: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        make = self.make
        if isinstance(make, nnx.Module):
            raise ConfigError(
                f"FlaxNNX: make must be a constructor make(rngs=...) of an nnx.Module, given "
                f"the module instance {type(make).__name__}; pass how to build it, e.g. "
                f"FlaxNNX(lambda rngs: {type(make).__name__}(..., rngs=rngs))"
            )
        if isinstance(make, linen.Module):
            raise ConfigError(
                f"FlaxNNX: make must be a constructor make(rngs=...) of an nnx.Module, given "
                f"the Linen module {type(make).__name__}; a Linen module goes in FlaxLinen"
            )
        if isinstance(make, type) and not issubclass(make, nnx.Module):
            raise ConfigError(
                f"FlaxNNX: make must build an nnx.Module, given the class {make.__name__}"
            )
        if not callable(make):
            raise ConfigError(
                f"FlaxNNX: make must be a constructor make(rngs=...) of an nnx.Module, given "
                f"{describe(make)}"
            )
        try:
            signature = inspect.signature(make)
        except (TypeError, ValueError):  # no signature to read: the first init will tell
            signature = None
        if signature is not None:
            try:
                signature.bind(rngs=None)
            except TypeError:
                raise ConfigError(
                    f"FlaxNNX: make is called as make(rngs=nnx.Rngs(key)), and its signature "
                    f"is {signature}; wrap it, e.g. FlaxNNX(lambda rngs: "
                    "MyModel(..., rngs=rngs))"
                ) from None
        _check_kwarg_names(self)

    def _construct(self, key: PRNGKey) -> Any:
        module = self.make(rngs=nnx.Rngs(key))
        if not isinstance(module, nnx.Module):
            raise ConfigError(
                f"{self.where()}: make(rngs=...) must return an nnx.Module, it returned "
                f"{describe(module)}"
            )
        return module

    def init(self, key: PRNGKey, x: Any) -> tuple[Params, State]:
        return _nnx_init(self, key)

    def compute(self, params: Params, state: State, x: Any, call: Call) -> tuple[Any, State]:
        template = _nnx_template(self)
        param_state = self._fill("params", template.params, params)
        other_state = self._fill("state", template.state, state)
        rng_state, counts = self._rng_state(template.rngs, call.rng)
        module = nnx.merge(template.graphdef, param_state, rng_state, other_state)
        if call.train:
            module.train()
        else:
            module.eval()
        kwargs = {**_mode_kwargs(self, call.train), **_side_kwargs(self, call)}
        y = module(x, **kwargs)
        _, _, rngs_after, state_after = _split(module)
        if call.rng is None:
            drawn = [
                "/".join(map(str, path))
                for path, variable in _flat(rngs_after)
                if path in counts and variable.get_value() is not counts[path]
            ]
            if drawn:
                raise self.error(
                    RngError,
                    f"the NNX module draws random numbers (from {drawn}) but was called with "
                    "rng=None; pass rng=jax.random.key(...) (a fresh key per step), or "
                    "train=False for evaluation",
                )
        return y, _pure(_flat(state_after))

    def _fill(self, what: str, template: tuple[tuple[tuple[Any, ...], Any], ...], tree: Any) -> Any:
        """The nnx ``State`` of ``template``'s variables holding the values of ``tree``."""
        given = _paths(tree)
        expected = {tuple(map(str, path)): variable for path, variable in template}
        missing = sorted("/".join(p) for p in expected if p not in given)
        unknown = sorted("/".join(p) for p in given if p not in expected and p)
        if missing or unknown:
            raise self.error(
                ParamsError,
                f"{what} does not match the module's variables: missing {missing}, unexpected "
                f"{unknown}; pass the {what} returned by this layer's init",
            )
        flat = []
        for path, variable in template:
            value = given[tuple(map(str, path))]
            shape = tuple(jnp.shape(value))
            if shape != tuple(variable.get_value().shape):
                raise self.error(
                    ShapeError,
                    f"{what} entry {'/'.join(map(str, path))!r} has shape {shape}, expected "
                    f"{tuple(variable.get_value().shape)}",
                )
            flat.append((path, variable.replace(value)))
        return nnx.from_flat_state(flat)

    def _rng_state(
        self, template: tuple[tuple[tuple[Any, ...], Any], ...], rng: PRNGKey | None
    ) -> tuple[Any, dict[tuple[Any, ...], Any]]:
        """The rng streams for this call, and the count arrays put in (to see which were used)."""
        base = jax.random.key(0) if rng is None else _typed_key(rng)
        flat, counts = [], {}
        for path, variable in template:
            shape = tuple(variable.get_value().shape)
            if isinstance(variable, nnx.RngKey):
                key = derive_key(base, "/".join(map(str, path)))
                if shape:
                    key = jax.random.split(key, math.prod(shape)).reshape(shape)
                flat.append((path, variable.replace(key)))
            else:
                count = jnp.zeros(shape, variable.get_value().dtype)
                counts[path] = count
                flat.append((path, variable.replace(count)))
        return nnx.from_flat_state(flat), counts


@functools.partial(jax.jit, static_argnums=0)
def _nnx_init(layer: FlaxNNX, key: PRNGKey) -> tuple[Params, State]:
    _, params, _, state = _split(layer._construct(key))
    return _pure(_flat(params)), _pure(_flat(state))


# --------------------------------------------------------------------------------------------
# nn_jax layers inside Linen.


class LinenLayer(linen.Module):
    """A Linen module running an nn_jax layer (made by :func:`to_linen`).

    ``__call__(x, train=False, side=None)`` returns the layer's output. At ``init`` it runs
    ``layer.init(self.make_rng("params"), x)`` and stores the nn_jax params tree as the one
    Linen param ``"layer"`` and the nn_jax state (if any) as the variable ``"layer"`` of
    ``state_collection``. In training (``train=True``, not during ``init``) the new state is
    written back, so ``apply(..., mutable=[state_collection])`` returns it, as with Linen's
    ``BatchNorm``. The layer's ``rng`` is ``self.make_rng(rng_stream)`` when the caller gave that
    stream (``rngs={"dropout": key}``), else ``None`` (a layer that needs it then raises
    ``RngError``).

    Attributes:
        layer: the nn_jax layer.
        state_collection: the Linen collection holding the layer's state.
        rng_stream: the Linen rng stream the layer's ``rng`` is drawn from.
    """

    layer: Layer
    state_collection: str = "batch_stats"
    rng_stream: str = "dropout"

    @linen.compact
    def __call__(self, x: Any, train: bool = False, side: Side | None = None) -> Any:
        collection = self.state_collection
        has_state = self.has_variable(collection, "layer")
        variable: linen.Variable[Any] | None = (
            self.variable(collection, "layer") if has_state else None
        )
        if self.is_initializing() and not (has_state or self.has_variable("params", "layer")):
            params0, state0 = self.layer.init(self.make_rng("params"), x)
            if params0:
                self.param("layer", lambda _: params0)
            if state0:
                variable = self.variable(collection, "layer", lambda: state0)
        params: Any = self.get_variable("params", "layer", {})
        state = {} if variable is None else variable.value
        rng = self.make_rng(self.rng_stream) if self.has_rng(self.rng_stream) else None
        y, new_state = self.layer.apply(
            _plain(params), _plain(state), x, side=side, rng=rng, train=train
        )
        if variable is not None and train and not self.is_initializing():
            variable.value = new_state
        return y


def to_linen(
    layer: Layer, *, state_collection: str = "batch_stats", rng_stream: str = "dropout"
) -> LinenLayer:
    """An nn_jax layer as a ``flax.linen.Module`` (a :class:`LinenLayer`).

    Args:
        layer: the nn_jax layer (hashable, so the Linen module is too).
        state_collection: the Linen collection for the layer's state (batch statistics).
        rng_stream: the Linen rng stream the layer's ``rng`` comes from in ``apply``.

    Returns:
        A Linen module whose ``__call__(x, train=False, side=None)`` runs ``layer``. Its
        variables: ``{"params": {"layer": <nn_jax params>}, state_collection: {"layer": <nn_jax
        state>}}`` (each present only when non-empty).

    >>> import jax, jax.numpy as jnp
    >>> from nn_jax import Dense
    >>> module = to_linen(Dense(3))
    >>> variables = module.init(jax.random.key(0), jnp.zeros((2, 5)))
    >>> jax.tree.map(jnp.shape, variables)
    {'params': {'layer': {'b': (3,), 'w': (5, 3)}}}
    >>> module.apply(variables, jnp.ones((2, 5))).shape
    (2, 3)
    """
    check_layer("to_linen", layer, "layer")
    for name, value in (("state_collection", state_collection), ("rng_stream", rng_stream)):
        if not isinstance(value, str) or not value or value == "params":
            raise ConfigError(
                f"to_linen: {name} must be a non-empty string other than 'params', given "
                f"{describe(value)}"
            )
    return LinenLayer(layer, state_collection=state_collection, rng_stream=rng_stream)

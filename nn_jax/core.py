"""The layer protocol: immutable layer descriptions with pure ``init`` and ``apply``.

A layer is a frozen dataclass of hyper-parameters (Python scalars, strings, tuples, dtypes and
functions; never arrays). It has two pure functions:

* ``init(key, x) -> (params, state)`` - ``x`` is an example input (array, ``jax.ShapeDtypeStruct``
  or a pytree of them); only its shapes and dtypes are read.
* ``apply(params, state, x, *, rng=None, train=False) -> (y, new_state)`` - one signature for every
  layer. Stateless layers return ``{}`` as state; ``layer(params, x)`` is the short form for them.

``params`` and ``state`` are plain nested dicts of arrays keyed by readable names. Composite layers
subclass :class:`Block` and write only ``forward(scope, x)``; their ``init`` is derived from it.
"""

from __future__ import annotations

import abc
import contextlib
import contextvars
import dataclasses
import functools
import zlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol, TypeAlias, TypeVar

import jax
import jax.numpy as jnp

from nn_jax.errors import NNJaxError, ParamsError, RngError, ShapeError

Array: TypeAlias = jax.Array
PRNGKey: TypeAlias = jax.Array
Params: TypeAlias = dict[str, Any]
State: TypeAlias = dict[str, Any]
Initializer: TypeAlias = Callable[..., Array]
"""``(key, shape, dtype) -> Array``, the signature of ``jax.nn.initializers``."""

E = TypeVar("E", bound=NNJaxError)


class InitFn(Protocol):
    def __call__(self, key: PRNGKey, x: Any) -> tuple[Params, State]: ...


class ApplyFn(Protocol):
    def __call__(
        self,
        params: Params,
        state: State,
        x: Any,
        *,
        rng: PRNGKey | None = None,
        train: bool = False,
    ) -> tuple[Any, State]: ...


# --------------------------------------------------------------------------------------------
# Layer paths (trace-time only: they exist to make error messages name the failing layer).

_PATH: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar("nn_jax_path", default=())


def layer_path() -> str:
    """The slash-separated path of the layer being traced, e.g. ``encoder/0`` (``""`` at top)."""
    return "/".join(_PATH.get())


def current_path() -> str:
    """:func:`layer_path` quoted for messages, ``<root>`` for the top-level layer."""
    path = layer_path()
    return f"'{path}'" if path else "<root>"


@contextlib.contextmanager
def _entered(name: str) -> Iterator[None]:
    token = _PATH.set((*_PATH.get(), name))
    try:
        yield
    finally:
        _PATH.reset(token)


def derive_key(key: PRNGKey, name: str) -> PRNGKey:
    """A child key that depends only on the parent key and the child's name (not on call order)."""
    return jax.random.fold_in(key, zlib.crc32(name.encode()) & 0x7FFFFFFF)


# --------------------------------------------------------------------------------------------
# The base class.


@dataclasses.dataclass(frozen=True)
class Layer(abc.ABC):
    """Base class of every layer: a hashable description with pure ``init`` and ``apply``."""

    @abc.abstractmethod
    def init(self, key: PRNGKey, x: Any) -> tuple[Params, State]:
        """Create ``(params, state)`` for inputs shaped like ``x`` (only shapes/dtypes are read)."""

    @abc.abstractmethod
    def apply(
        self,
        params: Params,
        state: State,
        x: Any,
        *,
        rng: PRNGKey | None = None,
        train: bool = False,
    ) -> tuple[Any, State]:
        """Run the layer: returns the output and the new state."""

    def __call__(
        self,
        params: Params,
        x: Any,
        *,
        rng: PRNGKey | None = None,
        train: bool = False,
        **kwargs: Any,
    ) -> Any:
        """Short form for stateless layers: ``apply(params, {}, x, ...)[0]``.

        A layer that needs state raises here; call ``apply`` and thread its state instead.
        """
        y, _ = self.apply(params, {}, x, rng=rng, train=train, **kwargs)
        return y

    # Helpers for subclasses: validation that names the layer path, expected and given.

    def error(self, cls: type[E], message: str) -> E:
        """An exception of type ``cls`` whose message starts with this layer's path and type."""
        return cls(f"{type(self).__name__} at {current_path()}: {message}")

    def param(self, params: Params, name: str, shape: tuple[int, ...] | None = None) -> Array:
        """``params[name]``, checked to exist (and to have ``shape`` when given)."""
        if not isinstance(params, Mapping) or name not in params:
            given = sorted(params) if isinstance(params, Mapping) else type(params).__name__
            raise self.error(
                ParamsError,
                f"missing parameter {name!r}; expected keys include {name!r}, given {given}. "
                "Pass the params returned by this layer's init.",
            )
        value = params[name]
        if shape is not None and tuple(value.shape) != tuple(shape):
            raise self.error(
                ShapeError, f"parameter {name!r} has shape {tuple(value.shape)}, expected {shape}"
            )
        return value

    def state_entry(self, state: State, name: str) -> Array:
        """``state[name]``, with an error saying to thread the state from ``init`` if absent."""
        if not isinstance(state, Mapping) or name not in state:
            given = sorted(state) if isinstance(state, Mapping) else type(state).__name__
            raise self.error(
                ParamsError,
                f"missing state {name!r} (given state keys {given}). This layer is stateful: "
                "call apply(params, state, x, ...) with the state returned by init and thread "
                "the new state it returns.",
            )
        return state[name]

    def check_rank(self, x: Any, rank: int | tuple[int, ...], what: str = "input") -> None:
        """Raise ``ShapeError`` unless ``x.ndim`` is ``rank`` (or one of the given ranks)."""
        ranks = (rank,) if isinstance(rank, int) else tuple(rank)
        if jnp.ndim(x) not in ranks:
            expected = " or ".join(str(r) for r in ranks)
            raise self.error(
                ShapeError,
                f"{what} must have rank {expected}, given rank {jnp.ndim(x)} "
                f"(shape {tuple(jnp.shape(x))})",
            )

    def require_rng(self, rng: PRNGKey | None) -> PRNGKey:
        """``rng``, or an ``RngError`` that says how to call the layer correctly."""
        if rng is None:
            raise self.error(
                RngError,
                "needs randomness in training but was called with rng=None; pass "
                "rng=jax.random.key(...) (a fresh key per step), or train=False for evaluation.",
            )
        return rng


def as_layer(layer: Layer | Callable[[Any], Any]) -> Layer:
    """A layer, or a plain function such as ``jax.nn.relu`` wrapped in :class:`Lambda`."""
    if isinstance(layer, Layer):
        return layer
    if callable(layer):
        return Lambda(layer)
    raise TypeError(f"expected a Layer or a callable, given {type(layer).__name__}: {layer!r}")


@dataclasses.dataclass(frozen=True)
class Lambda(Layer):
    """A parameter-free layer computing ``fn(x)``; plain functions in combinators become these.

    >>> import jax, jax.numpy as jnp
    >>> layer = Lambda(jnp.tanh)
    >>> params, state = layer.init(jax.random.key(0), jnp.zeros(3))
    >>> params, state
    ({}, {})
    """

    fn: Callable[[Any], Any]

    def init(self, key: PRNGKey, x: Any) -> tuple[Params, State]:
        return {}, {}

    def apply(
        self,
        params: Params,
        state: State,
        x: Any,
        *,
        rng: PRNGKey | None = None,
        train: bool = False,
    ) -> tuple[Any, State]:
        return self.fn(x), {}

    def __repr__(self) -> str:
        return f"Lambda({getattr(self.fn, '__name__', repr(self.fn))})"


# --------------------------------------------------------------------------------------------
# Blocks: composite layers whose forward is written once.

_RECORDER: contextvars.ContextVar[list[tuple[str, Layer, Any]] | None] = contextvars.ContextVar(
    "nn_jax_recorder", default=None
)


@contextlib.contextmanager
def recording() -> Iterator[list[tuple[str, Layer, Any]]]:
    """Record ``(path, layer, output)`` of every child a :class:`Scope` runs (trace time)."""
    records: list[tuple[str, Layer, Any]] = []
    token = _RECORDER.set(records)
    try:
        yield records
    finally:
        _RECORDER.reset(token)


class Scope:
    """What a :class:`Block`'s ``forward`` uses to run children and declare its own parameters.

    In init mode it creates each child's params/state the first time a name is used (reusing them
    when the same name is called again: weight sharing); in apply mode it reads them and collects
    the children's new state. ``forward`` is the same code in both modes.
    """

    def __init__(
        self,
        *,
        initializing: bool,
        params: Params,
        state: State,
        key: PRNGKey | None,
        rng: PRNGKey | None,
        train: bool,
        owner: Layer,
    ) -> None:
        self.initializing = initializing
        self.train = train
        self._params = params
        self._key = key
        self._rng = rng
        self._owner = owner
        self._children: dict[str, Layer] = {}
        self.new_params: Params = {}
        # Apply mode starts from the given state, so children a forward pass skips keep theirs.
        self.new_state: State = dict(state)

    def __call__(
        self, name: str, layer: Layer | Callable[[Any], Any], x: Any, **kwargs: Any
    ) -> Any:
        """Run child ``layer`` under ``name`` on ``x`` and return its output."""
        layer = as_layer(layer)
        first_use = name not in self._children
        self._claim(name, layer)
        with _entered(name):
            if self.initializing and first_use:
                p, s = layer.init(derive_key(self._key, name), x)
                if p:
                    self.new_params[name] = p
                if s:
                    self.new_state[name] = s
            p = (self.new_params if self.initializing else self._params).get(name, {})
            s = self.new_state.get(name, {})
            y, s_new = layer.apply(p, s, x, rng=self._child_rng(name), train=self.train, **kwargs)
            if s_new and not self.initializing:  # init returns the initial state, not one step on
                self.new_state[name] = s_new
            records = _RECORDER.get()
            if records is not None:
                records.append((layer_path(), layer, y))
        return y

    def param(
        self, name: str, init: Initializer, shape: tuple[int, ...], dtype: Any = jnp.float32
    ) -> Array:
        """The block's own parameter ``name``, made by ``init(key, shape, dtype)`` in init mode."""
        self._claim(name, None)
        if self.initializing:
            if name not in self.new_params:
                self.new_params[name] = init(derive_key(self._key, name), shape, dtype)
            return self.new_params[name]
        return self._owner.param(self._params, name, tuple(shape))

    def rng(self, name: str) -> PRNGKey:
        """A key for the block's own randomness (named, so it is independent of the children's)."""
        return derive_key(self._owner.require_rng(self._rng), name)

    def _child_rng(self, name: str) -> PRNGKey | None:
        return None if self._rng is None else derive_key(self._rng, name)

    def _claim(self, name: str, layer: Layer | None) -> None:
        if not isinstance(name, str) or not name or "/" in name:
            raise self._owner.error(
                ParamsError, f"child names must be non-empty strings without '/', given {name!r}"
            )
        seen = self._children.get(name, layer)
        if name in self._children and seen != layer:
            raise self._owner.error(
                ParamsError,
                f"name {name!r} is used for two different things ({seen!r} and {layer!r}); "
                "reuse a name only to share the same layer's parameters",
            )
        self._children[name] = layer


@dataclasses.dataclass(frozen=True)
class Block(Layer):
    """A composite layer defined by ``forward(scope, x)``; ``init`` is derived from it.

    Example::

        @dataclasses.dataclass(frozen=True)
        class TwoLayer(Block):
            hidden: int

            def forward(self, scope, x):
                h = jax.nn.relu(scope("hidden", Dense(self.hidden), x))
                return scope("out", Dense(1), h)

    ``init`` traces ``forward`` under ``jax.jit`` on zeros shaped like the example input and keeps
    only the parameters: XLA removes the forward computation, so no FLOPs are spent on data.
    """

    @abc.abstractmethod
    def forward(self, scope: Scope, x: Any) -> Any:
        """The forward pass, written once for init and apply."""

    def init(self, key: PRNGKey, x: Any) -> tuple[Params, State]:
        structs = jax.eval_shape(lambda t: t, x)
        leaves, treedef = jax.tree.flatten(structs)
        try:
            hash(self)
        except TypeError as e:
            raise self.error(
                NNJaxError,
                f"layer hyper-parameters must be hashable (use tuples, not lists): {e}",
            ) from None
        return _jit_init(self, treedef, tuple(leaves), key)

    def _init_traced(self, key: PRNGKey, x: Any) -> tuple[Params, State]:
        scope = Scope(
            initializing=True, params={}, state={}, key=key, rng=key, train=False, owner=self
        )
        self.forward(scope, x)
        return scope.new_params, scope.new_state

    def apply(
        self,
        params: Params,
        state: State,
        x: Any,
        *,
        rng: PRNGKey | None = None,
        train: bool = False,
        **kwargs: Any,
    ) -> tuple[Any, State]:
        if not isinstance(params, Mapping):
            raise self.error(ParamsError, f"params must be a dict, given {type(params).__name__}")
        scope = Scope(
            initializing=False,
            params=params,
            state=state if isinstance(state, Mapping) else {},
            key=None,
            rng=rng,
            train=train,
            owner=self,
        )
        y = self.forward(scope, x, **kwargs)
        return y, scope.new_state


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _jit_init(
    layer: Block, treedef: Any, structs: tuple[jax.ShapeDtypeStruct, ...], key: PRNGKey
) -> tuple[Params, State]:
    x = jax.tree.unflatten(treedef, [jnp.zeros(s.shape, s.dtype) for s in structs])
    return layer._init_traced(key, x)

"""The layer protocol: immutable layer descriptions with pure ``init`` and ``apply``.

A layer is a frozen dataclass of hyper-parameters (Python scalars, strings, tuples, dtypes and
picklable callables; never arrays). It has two pure functions:

* ``init(key, x) -> (params, state)`` - ``x`` is an example input (array, ``jax.ShapeDtypeStruct``
  or a pytree of them); only its shapes and dtypes are read.
* ``apply(params, state, x, *, side=None, rng=None, train=False) -> (y, new_state)`` - one
  signature for every layer, one output structure whatever the layer's flags. Stateless layers
  return ``{}`` as state; ``layer(params, x)`` is the short form for them.

**Side inputs** (masks, lengths, positions, initial carries) travel in ``side``, one mapping from
names to arrays, given to every layer of a model: combinators, :class:`Block` scopes, the train
step builders and ``fit`` pass it on unchanged, and each layer reads the names it knows
(``"lengths"``, ``"key_mask"``, ...), as optax's ``GradientTransformationExtraArgs`` do with
``extra_args``. A name that no layer reads is an error, so a misspelt mask never goes unnoticed.

**Taps** (:func:`tap`, :func:`tapping`) read and replace values at layer paths during ``apply``:
every child output of a :class:`Block` and the values layers expose by name (attention weights,
final recurrent carries). Extra outputs come out this way, never by changing what ``apply``
returns.

``params`` and ``state`` are plain nested dicts of arrays keyed by readable names. Composite layers
subclass :class:`Block` and write only ``forward(scope, x)``; parameter-free layers subclass
:class:`ParameterFree` and write only ``transform(x, call)``; other leaf layers write ``init`` and
``compute(params, state, x, call)``.
"""

from __future__ import annotations

import abc
import contextlib
import contextvars
import dataclasses
import fnmatch
import functools
import importlib
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple, Protocol, TypeAlias, TypeVar

import jax
import jax.numpy as jnp

from nn_jax import checking
from nn_jax.errors import ConfigError, NNJaxError, ParamsError, RngError, ShapeError

__all__ = [
    "ApplyFn",
    "Block",
    "Call",
    "InitFn",
    "Lambda",
    "Layer",
    "ParameterFree",
    "Params",
    "Scope",
    "Side",
    "State",
    "Taps",
    "as_layer",
    "nested",
    "tap",
    "tapping",
]

Array: TypeAlias = jax.Array
PRNGKey: TypeAlias = jax.Array
Params: TypeAlias = dict[str, Any]
State: TypeAlias = dict[str, Any]
Side: TypeAlias = Mapping[str, Any]
"""Side inputs by name (``{"lengths": (B,) ints, "key_mask": (B, T) bools, ...}``)."""
Initializer: TypeAlias = Callable[..., Array]
"""``(key, shape, dtype) -> Array``, the signature of ``jax.nn.initializers``."""

E = TypeVar("E", bound=NNJaxError)
T = TypeVar("T")


class InitFn(Protocol):
    def __call__(self, key: PRNGKey, x: Any) -> tuple[Params, State]: ...


class ApplyFn(Protocol):
    """``apply(params, state, x, *, side=None, rng=None, train=False) -> (y, new_state)``.

    ``side`` maps side-input names to arrays and reaches every layer of the model; ``rng`` is
    needed in training by layers with randomness; the structure of ``y`` depends only on the
    layer and the structure of ``x``, never on flags.
    """

    def __call__(
        self,
        params: Params,
        state: State,
        x: Any,
        *,
        side: Side | None = None,
        rng: PRNGKey | None = None,
        train: bool = False,
    ) -> tuple[Any, State]: ...


class Call(NamedTuple):
    """How a layer is being called: its side inputs, rng key and train flag, as one value.

    A layer's ``compute`` receives it; a :class:`Block` hands it on to its children (with an
    rng derived per child name).
    """

    side: Side
    rng: PRNGKey | None
    train: bool


# --------------------------------------------------------------------------------------------
# Layer paths (trace-time only: they name the failing layer in errors and address taps).

_PATH: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar("nn_jax_path", default=())


def layer_path() -> str:
    """The slash-separated path of the layer being traced, e.g. ``encoder/0`` (``""`` at top)."""
    return "/".join(_PATH.get())


def current_path() -> str:
    """:func:`layer_path` quoted for messages, ``<root>`` for the top-level layer."""
    path = layer_path()
    return f"'{path}'" if path else "<root>"


@contextlib.contextmanager
def nested(name: str) -> Iterator[None]:
    """Trace the enclosed code as child ``name`` of the current layer (errors and taps say so).

    :class:`Scope` does this for a block's children; a leaf layer that runs a sub-layer itself
    (``RNN`` running its cell inside a scan) uses it directly.
    """
    token = _PATH.set((*_PATH.get(), name))
    try:
        yield
    finally:
        _PATH.reset(token)


def derive_key(key: PRNGKey, name: str) -> PRNGKey:
    """A child key that depends only on the parent key and the child's name (not on call order)."""
    return jax.random.fold_in(key, zlib.crc32(name.encode()) & 0x7FFFFFFF)


# --------------------------------------------------------------------------------------------
# Side inputs: every name given must be read by some layer (checked once per traced call).

_SIDE_READS: contextvars.ContextVar[set[str] | None] = contextvars.ContextVar(
    "nn_jax_side_reads", default=None
)


@contextlib.contextmanager
def _checking_side(layer: Layer, side: Side) -> Iterator[None]:
    """At the outermost ``apply``: raise if a side input was given that no layer read."""
    if _SIDE_READS.get() is not None or not side:
        yield
        return
    reads: set[str] = set()
    token = _SIDE_READS.set(reads)
    try:
        yield
    finally:
        _SIDE_READS.reset(token)
    unread = sorted(set(side) - reads)
    if unread:
        raise layer.error(
            ConfigError,
            f"side inputs {unread} were given but no layer of this model reads them (given "
            f"{sorted(side)}, read {sorted(reads)}); check the names against the layers' "
            "docstrings (e.g. 'lengths', 'key_mask', 'mask', 'positions', 'initial_carry')",
        )


def _as_side(layer: Layer, side: Side | None) -> Side:
    if side is None:
        return {}
    if not isinstance(side, Mapping) or not all(isinstance(k, str) for k in side):
        raise layer.error(
            ConfigError,
            f"side must be a mapping from side-input names to arrays, e.g. "
            f"side={{'lengths': lengths}}, given {type(side).__name__}",
        )
    return side


# --------------------------------------------------------------------------------------------
# Taps: read and replace values at layer paths during apply.


@dataclasses.dataclass
class Taps:
    """What :func:`tapping` collects: tapped values (and the layers that made them) by path.

    ``values`` holds the values whose path matches one of the ``capture`` patterns (after any
    edit); ``layers`` maps each child path a :class:`Scope` ran to its layer. A path visited twice
    (a shared child called twice) keeps the last value.
    """

    capture: tuple[str, ...]
    edit: Mapping[str, Callable[[Any], Any]]
    values: dict[str, Any] = dataclasses.field(default_factory=dict)
    layers: dict[str, Layer] = dataclasses.field(default_factory=dict)

    def visit(self, path: str, value: Any) -> Any:
        for pattern, fn in self.edit.items():
            if fnmatch.fnmatchcase(path, pattern):
                value = fn(value)
        if any(fnmatch.fnmatchcase(path, p) for p in self.capture):
            self.values[path] = value
        return value


_TAPS: contextvars.ContextVar[Taps | None] = contextvars.ContextVar("nn_jax_taps", default=None)


@contextlib.contextmanager
def tapping(
    capture: str | Sequence[str] = "*",
    edit: Mapping[str, Callable[[Any], Any]] | None = None,
) -> Iterator[Taps]:
    """Collect and edit tapped values of the ``apply`` calls traced inside the ``with`` block.

    Args:
        capture: path pattern(s) (``fnmatch`` syntax, ``*`` crosses ``/``) of the values to
            keep, e.g. ``"*"``, ``"block_*/attention/weights"``, ``()`` for none.
        edit: ``{pattern: fn}``; each tapped value whose path matches is replaced by
            ``fn(value)`` (same shape and dtype) before the model goes on, e.g. to ablate a unit.

    The values are tracers when the ``with`` block is inside ``jax.jit``: return them from the
    jitted function (:func:`nn_jax.inspect.apply_with_intermediates` does), never keep them.
    """
    patterns = (capture,) if isinstance(capture, str) else tuple(capture)
    taps = Taps(patterns, dict(edit or {}))
    token = _TAPS.set(taps)
    try:
        yield taps
    finally:
        _TAPS.reset(token)


def tap(name: str, value: T) -> T:
    """Expose ``value`` at ``<layer path>/name`` to :func:`tapping`; returns it (maybe edited).

    Layers call it on values worth looking at that are not their output, e.g.
    ``weights = tap("weights", weights)`` in attention. Free when no tapping is active.
    """
    taps = _TAPS.get()
    if taps is None:
        return value
    path = f"{layer_path()}/{name}" if layer_path() else name
    return taps.visit(path, value)


# --------------------------------------------------------------------------------------------
# Readable reprs and pickling: callables are referred to by their importable names.

_PUBLIC_MODULES = ("nn_jax.activations", "nn_jax.initializers", "jax.nn", "jax.numpy")


@dataclasses.dataclass(frozen=True)
class _Ref:
    """A module-level callable pickled as ``(module, name)`` and looked up again on load."""

    module: str
    name: str

    def resolve(self) -> Any:
        return getattr(importlib.import_module(self.module), self.name)


def _importable(fn: Any) -> _Ref | None:
    """``_Ref`` to ``fn`` when ``module.name`` gives back the very same object, else ``None``."""
    module, name = getattr(fn, "__module__", None), getattr(fn, "__name__", None)
    if not isinstance(module, str) or not isinstance(name, str):
        return None
    try:
        found = getattr(importlib.import_module(module), name, None)
    except ImportError:
        return None
    return _Ref(module, name) if found is fn else None


def callable_name(fn: Any) -> str:
    """A readable name with no address: ``jax.nn.relu``, ``mod.my_fn``, ``mod.<lambda>``."""
    name = getattr(fn, "__name__", None)
    for module in _PUBLIC_MODULES:
        if name and getattr(importlib.import_module(module), name, None) is fn:
            return f"{module}.{name}"
    module = getattr(fn, "__module__", None) or "?"
    return f"{module}.{getattr(fn, '__qualname__', name or type(fn).__name__)}"


def _config_repr(value: Any) -> str:
    if isinstance(value, Layer):
        return repr(value)
    if isinstance(value, jnp.dtype) or (isinstance(value, type) and hasattr(value, "dtype")):
        return f"jnp.{jnp.dtype(value).name}"  # jnp.float32, a dtype or a scalar type
    if isinstance(value, tuple):
        items = ", ".join(_config_repr(v) for v in value)
        return f"({items},)" if len(value) == 1 else f"({items})"
    if callable(value) and not isinstance(value, type) and "0x" in repr(value):
        return callable_name(value)
    return repr(value)


def _to_picklable(value: Any) -> Any:
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        return tuple(_to_picklable(v) for v in value)
    if callable(value) and not isinstance(value, type | Layer):
        return _importable(value) or value
    return value


def _from_picklable(value: Any) -> Any:
    if isinstance(value, _Ref):
        return value.resolve()
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        return tuple(_from_picklable(v) for v in value)
    return value


def _rebuild(cls: type[Layer], fields: dict[str, Any]) -> Layer:
    """Unpickle a layer: set its (already validated) fields without running ``__init__``."""
    layer = object.__new__(cls)
    for name, value in fields.items():
        object.__setattr__(layer, name, _from_picklable(value))
    return layer


# --------------------------------------------------------------------------------------------
# The base class.


@dataclasses.dataclass(frozen=True)
class Layer(abc.ABC):
    """Base class of every layer: a hashable description with pure ``init`` and ``apply``.

    Subclasses write ``init`` and ``compute``; ``apply`` (the one public signature) checks the
    call and hands ``compute`` the :class:`Call`. Every layer prints as a readable config (the
    fields that differ from their defaults, callables by name) and pickles by value, callables
    by importable name (for worker processes; nothing nn_jax loads from disk uses pickle).
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Keep the readable repr below: dataclass() does not replace a __repr__ in the class dict.
        if "__repr__" not in cls.__dict__:
            cls.__repr__ = Layer.__repr__  # type: ignore[method-assign]

    def __repr__(self) -> str:
        shown = []
        # Positional fields first (as in the constructor), then keyword-only ones.
        for field in sorted(dataclasses.fields(self), key=lambda f: bool(f.kw_only)):
            if not field.init or field.name.startswith("_"):
                continue
            value = getattr(self, field.name)
            default = (
                field.default_factory()
                if field.default_factory is not dataclasses.MISSING
                else field.default
            )
            if default is dataclasses.MISSING or (value is not default and value != default):
                shown.append(f"{field.name}={_config_repr(value)}")
        return f"{type(self).__name__}({', '.join(shown)})"

    def __reduce__(self) -> tuple[Any, ...]:
        fields = {f.name: _to_picklable(getattr(self, f.name)) for f in dataclasses.fields(self)}
        return _rebuild, (type(self), fields)

    @abc.abstractmethod
    def init(self, key: PRNGKey, x: Any) -> tuple[Params, State]:
        """Create ``(params, state)`` for inputs shaped like ``x`` (only shapes/dtypes are read)."""

    @abc.abstractmethod
    def compute(self, params: Params, state: State, x: Any, call: Call) -> tuple[Any, State]:
        """The layer's maths: returns the output and the new state."""

    def apply(
        self,
        params: Params,
        state: State,
        x: Any,
        *,
        side: Side | None = None,
        rng: PRNGKey | None = None,
        train: bool = False,
    ) -> tuple[Any, State]:
        """Run the layer: returns the output and the new state (see :class:`ApplyFn`)."""
        if not isinstance(train, bool):
            raise self.error(ConfigError, f"train must be True or False, given {train!r}")
        call = Call(_as_side(self, side), rng, train)
        with _checking_side(self, call.side):
            return self.compute(params, state, x, call)

    def __call__(
        self,
        params: Params,
        x: Any,
        *,
        side: Side | None = None,
        rng: PRNGKey | None = None,
        train: bool = False,
    ) -> Any:
        """Short form for stateless layers: ``apply(params, {}, x, ...)[0]``.

        A layer that needs state raises here; call ``apply`` and thread its state instead.
        """
        return self.apply(params, {}, x, side=side, rng=rng, train=train)[0]

    # Helpers for subclasses: validation that names the layer path, expected and given.

    def where(self) -> str:
        """This layer's type and path as errors begin, e.g. ``Dense at 'encoder/0'``."""
        return f"{type(self).__name__} at {current_path()}"

    def error(self, cls: type[E], message: str) -> E:
        """An exception of type ``cls`` whose message starts with this layer's path and type."""
        return cls(f"{self.where()}: {message}")

    def check_range(
        self, what: str, values: Any, low: float, high: float, *, closed: bool = False
    ) -> None:
        """Value check: ``values`` in ``[low, high)`` (``[low, high]`` if ``closed``), else a
        ``ValueRangeError`` naming this layer: eagerly when concrete, under ``jit`` in checked
        mode (see :mod:`nn_jax.checking`)."""
        checking.check_in_range(self.where(), what, values, low, high, closed=closed)

    def side_input(self, call: Call, name: str) -> Any:
        """The side input ``name`` of this call, or ``None`` when it was not given."""
        reads = _SIDE_READS.get()
        if reads is not None:
            reads.add(name)
        return call.side.get(name)

    def side_array(self, name: str, value: Any, shape: tuple[int, ...], note: str = "") -> Array:
        """Side input ``name`` as an array of ``shape``: booleans for a mask (a name ending in
        ``mask``), integers otherwise (``lengths``, ``positions``); else a ``ShapeError``.

        ``note`` says what the shape is, e.g. ``"(the batch axes)"``.
        """
        value = jnp.asarray(value)
        is_mask = name.endswith("mask")
        kind_ok = value.dtype == jnp.bool_ if is_mask else jnp.issubdtype(value.dtype, jnp.integer)
        if value.shape != tuple(shape) or not kind_ok:
            kind = "booleans" if is_mask else "integers"
            raise self.error(
                ShapeError,
                f"side input {name!r} must be {kind} of shape {tuple(shape)} {note}, given dtype "
                f"{value.dtype} and shape {value.shape}".replace("  ", " "),
            )
        return value

    def param(self, params: Params, name: str, shape: tuple[int, ...] | None = None) -> Any:
        """``params[name]`` (an array, or a child's params), checked to exist (and its shape)."""
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

    def check_rank(
        self, x: Any, min_rank: int, max_rank: int | None = None, what: str = "input"
    ) -> None:
        """Raise ``ShapeError`` unless ``min_rank <= x.ndim <= max_rank`` (no upper bound if None).

        ``check_rank(x, 2, 2)`` asks for exactly rank 2; ``check_rank(x, 1)`` for rank >= 1.
        """
        rank = jnp.ndim(x)
        if rank >= min_rank and (max_rank is None or rank <= max_rank):
            return
        if max_rank is None:
            expected = f">= {min_rank}"
        elif max_rank == min_rank:
            expected = str(min_rank)
        else:
            expected = f"{min_rank} to {max_rank}"
        raise self.error(
            ShapeError,
            f"{what} must have rank {expected}, given rank {rank} (shape {tuple(jnp.shape(x))})",
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


@dataclasses.dataclass(frozen=True)
class ParameterFree(Layer):
    """A layer with no parameters and no state: subclasses write only ``transform(x, call)``.

    ``init`` returns ``({}, {})`` and ``compute`` returns ``(transform(x, call), {})``.
    """

    def init(self, key: PRNGKey, x: Any) -> tuple[Params, State]:
        return {}, {}

    @abc.abstractmethod
    def transform(self, x: Any, call: Call) -> Any:
        """The layer's maths on input ``x`` (``call`` gives the rng, train flag and side)."""

    def compute(self, params: Params, state: State, x: Any, call: Call) -> tuple[Any, State]:
        return self.transform(x, call), {}


def as_layer(layer: Layer | Callable[[Any], Any]) -> Layer:
    """A layer, or a plain function such as ``jax.nn.relu`` wrapped in :class:`Lambda`."""
    if isinstance(layer, Layer):
        return layer
    if isinstance(layer, type):
        raise ConfigError(
            f"expected a layer instance or a function, given the class {layer.__name__}; "
            f"construct it first, e.g. {layer.__name__}(...)"
        )
    if callable(layer):
        return Lambda(layer)
    raise ConfigError(f"expected a Layer or a callable, given {type(layer).__name__}: {layer!r}")


@dataclasses.dataclass(frozen=True)
class Lambda(ParameterFree):
    """A parameter-free layer computing ``fn(x)``; plain functions in combinators become these.

    >>> import jax, jax.numpy as jnp
    >>> layer = Lambda(jnp.tanh)
    >>> params, state = layer.init(jax.random.key(0), jnp.zeros(3))
    >>> params, state
    ({}, {})
    """

    fn: Callable[[Any], Any]

    def __post_init__(self) -> None:
        if not callable(self.fn):
            raise ConfigError(f"Lambda: fn must be a callable, e.g. jax.nn.relu, given {self.fn!r}")

    def transform(self, x: Any, call: Call) -> Any:
        return self.fn(x)

    def __repr__(self) -> str:
        return f"Lambda({callable_name(self.fn)})"


# --------------------------------------------------------------------------------------------
# Blocks: composite layers whose forward is written once.


class Scope:
    """What a :class:`Block`'s ``forward`` uses to run children and declare its own parameters.

    In init mode it creates each child's params/state the first time a name is used (reusing them
    when the same name is called again: weight sharing); in apply mode it reads them and collects
    the children's new state. ``forward`` is the same code in both modes. Children get the
    block's side inputs and train flag, and an rng derived from the block's by child name.
    """

    def __init__(
        self,
        *,
        initializing: bool,
        params: Params,
        state: State,
        key: PRNGKey | None,
        call: Call,
        owner: Block,
    ) -> None:
        self.initializing = initializing
        self.call = call
        self._params = params
        self._key = key
        self._owner = owner
        self._children: dict[str, Layer] = {}
        self.new_params: Params = {}
        # Apply mode starts from the given state, so children a forward pass skips keep theirs.
        self.new_state: State = dict(state)

    @property
    def train(self) -> bool:
        """The train flag of this call."""
        return self.call.train

    @property
    def side(self) -> Side:
        """All side inputs of this call (pass a changed copy to a child with ``side=``)."""
        return self.call.side

    def side_input(self, name: str) -> Any:
        """The side input ``name`` of this call, or ``None`` when it was not given."""
        return self._owner.side_input(self.call, name)

    def __call__(
        self,
        name: str,
        layer: Layer | Callable[[Any], Any],
        x: Any,
        *,
        side: Side | None = None,
    ) -> Any:
        """Run child ``layer`` under ``name`` on ``x`` and return its output.

        The child gets this block's side inputs, or ``side`` when given (it replaces them all).
        """
        layer = as_layer(layer)
        first_use = name not in self._children
        self._claim(name, layer)
        with nested(name):
            if self.initializing and first_use:
                p, s = layer.init(derive_key(self._key, name), x)  # type: ignore[arg-type]
                if p:
                    self.new_params[name] = p
                if s:
                    self.new_state[name] = s
            p = (self.new_params if self.initializing else self._params).get(name, {})
            s = self.new_state.get(name, {})
            y, s_new = layer.apply(
                p,
                s,
                x,
                side=self.call.side if side is None else side,
                rng=self._child_rng(name),
                train=self.call.train,
            )
            if s_new and not self.initializing:  # init returns the initial state, not one step on
                self.new_state[name] = s_new
            taps = _TAPS.get()
            if taps is not None:
                taps.layers[layer_path()] = layer
                y = taps.visit(layer_path(), y)
        return y

    def param(
        self, name: str, init: Initializer, shape: tuple[int, ...], dtype: Any = jnp.float32
    ) -> Array:
        """The block's own parameter ``name``, made by ``init(key, shape, dtype)`` in init mode."""
        self._claim(name, None)
        if self.initializing:
            if name not in self.new_params:
                self.new_params[name] = init(derive_key(self._key, name), shape, dtype)  # type: ignore[arg-type]
            return self.new_params[name]
        return self._owner.param(self._params, name, tuple(shape))

    def rng(self, name: str) -> PRNGKey:
        """A key for the block's own randomness (named, so it is independent of the children's)."""
        return derive_key(self._owner.require_rng(self.call.rng), name)

    def _child_rng(self, name: str) -> PRNGKey | None:
        return None if self.call.rng is None else derive_key(self.call.rng, name)

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
        self._children[name] = layer  # type: ignore[assignment]


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
    only the parameters: XLA removes the forward computation, so no FLOPs are spent on data. It
    runs with no side inputs: a layer treats an absent side input (``None``) as "not given"
    (no mask, full lengths, zero carry), which never changes parameter shapes.
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

    def init_traced(self, key: PRNGKey, x: Any) -> tuple[Params, State]:
        """``init`` without its own ``jit`` (what ``init`` traces; callable inside a trace)."""
        scope = Scope(
            initializing=True,
            params={},
            state={},
            key=key,
            call=Call({}, key, False),
            owner=self,
        )
        self.forward(scope, x)
        return scope.new_params, scope.new_state

    def compute(self, params: Params, state: State, x: Any, call: Call) -> tuple[Any, State]:
        if not isinstance(params, Mapping):
            raise self.error(ParamsError, f"params must be a dict, given {type(params).__name__}")
        scope = Scope(
            initializing=False,
            params=params,
            state=state if isinstance(state, Mapping) else {},
            key=None,
            call=call,
            owner=self,
        )
        y = self.forward(scope, x)
        return y, scope.new_state


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _jit_init(
    layer: Block, treedef: Any, structs: tuple[jax.ShapeDtypeStruct, ...], key: PRNGKey
) -> tuple[Params, State]:
    x = jax.tree.unflatten(treedef, [jnp.zeros(s.shape, s.dtype) for s in structs])
    return layer.init_traced(key, x)

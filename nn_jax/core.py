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

**Checks at the boundary.** A wrong call raises an error of :mod:`nn_jax.errors` that names the
layer, what was expected and what was given; never a raw JAX error or a wrong number:

* Constructors check every hyper-parameter by its annotation (:func:`check_fields`): ``Size``
  (an int >= 1; a NumPy integer is stored as a Python int, ``True`` is not a size), ``Sizes``,
  ``Rate``, ``NonNegative``, ``float``, ``bool``, ``str``, ``Initializer`` (an *uncalled*
  factory such as ``jax.nn.initializers.lecun_normal`` is refused), ``Activation`` (a function
  or a known name), dtypes; then the layer's own ``__post_init__`` checks what relates fields.
* ``init`` checks its key (``jax.random.key(seed)`` or a legacy ``jax.random.PRNGKey(seed)``,
  not an int or a batch of keys) and its example input (arrays or ``ShapeDtypeStruct`` s, not
  a shape tuple); ``apply`` checks that ``params`` and ``state`` are dicts (``apply(params, x)``
  without the state says so), the ``rng``, and that the input is real (not complex). Params
  entries that no layer reads are a ``ParamsError``.

All of it runs while tracing, on Python types, shapes and dtypes: nothing is added to a
compiled program.
"""

from __future__ import annotations

import abc
import contextlib
import contextvars
import dataclasses
import fnmatch
import functools
import importlib
import inspect
import math
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, ClassVar, NamedTuple, Protocol, TypeAlias, TypeVar

import jax
import jax.numpy as jnp
import numpy as np

from nn_jax.checks import check_in_range
from nn_jax.errors import (
    ArgumentError,
    ConfigError,
    NNJaxError,
    ParamsError,
    RngError,
    ShapeError,
)

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


STACKED = "<i>"
"""The path segment standing for the layer index in a scan over stacked layers
(:class:`nn_jax.repeat.Repeat` traces its block once, at ``<repeat path>/<i>``)."""

# Wraps each child a Scope runs in apply mode, given its path (nn_jax.remat.rematerializing).
_CHILD_WRAP: contextvars.ContextVar[Callable[[Layer, str], Layer] | None] = contextvars.ContextVar(
    "nn_jax_child_wrap", default=None
)


@contextlib.contextmanager
def wrapping_children(wrap: Callable[[Layer, str], Layer]) -> Iterator[None]:
    """Inside the block, every child a :class:`Scope` runs in apply mode is ``wrap(layer, path)``.

    The hook behind :func:`nn_jax.remat.rematerializing`: a wrapper chosen by layer path, with
    no change to the model's code (``wrap`` must keep the layer's params and state trees).
    """
    token = _CHILD_WRAP.set(wrap)
    try:
        yield
    finally:
        _CHILD_WRAP.reset(token)


def derive_key(key: PRNGKey, name: str) -> PRNGKey:
    """A child key that depends only on the parent key and the child's name (not on call order)."""
    return jax.random.fold_in(key, zlib.crc32(name.encode()) & 0x7FFFFFFF)


class _NotGiven:
    """The default of ``x`` in ``apply``/``__call__``: a forgotten argument, said plainly."""

    def __repr__(self) -> str:
        return "<not given>"


_NOT_GIVEN: Any = _NotGiven()

# The parameter names each params dict had read by Layer.param during the outermost apply
# (by id), so a leaf layer can tell entries it never reads (params of another model).
_PARAM_READS: contextvars.ContextVar[dict[int, set[str]] | None] = contextvars.ContextVar(
    "nn_jax_param_reads", default=None
)

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
    edit); ``layers`` maps each child path a :class:`Scope` ran to its layer, ``calls`` to the
    input and side inputs it was called with. A path visited twice
    (a shared child called twice) keeps the last value.
    """

    capture: tuple[str, ...]
    edit: Mapping[str, Callable[[Any], Any]]
    values: dict[str, Any] = dataclasses.field(default_factory=dict)
    layers: dict[str, Layer] = dataclasses.field(default_factory=dict)
    calls: dict[str, tuple[Any, Side]] = dataclasses.field(default_factory=dict)
    match: Callable[[str, str], bool | Array] = fnmatch.fnmatchcase
    """``match(path, pattern)``: a bool, or a traced boolean scalar inside a scan over stacked
    layers (:class:`nn_jax.repeat.Repeat`), where one traced body stands for several paths."""

    def visit(self, path: str, value: Any) -> Any:
        for pattern, fn in self.edit.items():
            hit = self.match(path, pattern)
            if hit is True:
                value = fn(value)
            elif hit is not False:  # the path of some of the stacked layers only
                value = jax.tree.map(functools.partial(jnp.where, hit), fn(value), value)
        if self.captures(path):
            self.values[path] = value
        return value

    def captures(self, path: str) -> bool:
        """Whether a value at ``path`` is kept (for one of the layers a traced path stands for)."""
        return any(self.match(path, p) is not False for p in self.capture)


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


def tapped(name: str) -> bool:
    """Whether ``tap(name, ...)`` here would capture or edit its value: an active
    :func:`tapping` block has a pattern matching ``<layer path>/name`` (a layer with a fused
    kernel that never materializes the value then takes its explicit path)."""
    taps = _TAPS.get()
    if taps is None:
        return False
    path = f"{layer_path()}/{name}" if layer_path() else name
    return taps.captures(path) or any(taps.match(path, p) is not False for p in taps.edit)


@contextlib.contextmanager
def tap_region() -> Iterator[Taps | None]:
    """Collect the taps of code traced inside an inner transformation on their own.

    Values tapped inside ``jax.checkpoint`` or a ``jax.lax.scan`` body are tracers of that inner
    trace: kept as they are they would leak out of it. Inside this block taps are collected in
    the :class:`Taps` it yields (``None`` when no :func:`tapping` is active), with the enclosing
    capture patterns and edits (edits apply inside); return its ``values`` as outputs of the
    transformation and hand them on with :func:`expose_taps`. Its ``match`` starts as the
    enclosing one's; a scan over stacked layers replaces it to stand for every layer's path.
    """
    outer = _TAPS.get()
    if outer is None:
        yield None
        return
    inner = Taps(outer.capture, outer.edit, match=outer.match)
    token = _TAPS.set(inner)
    try:
        yield inner
    finally:
        _TAPS.reset(token)


def expose_taps(values: Mapping[str, Any], layers: Mapping[str, Layer] | None = None) -> None:
    """Hand values collected by :func:`tap_region` (already edited) to the active tapping."""
    taps = _TAPS.get()
    if taps is None:
        return
    taps.values.update((path, v) for path, v in values.items() if taps.captures(path))
    taps.layers.update(layers or {})


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
    """A readable name with no address: ``jax.nn.relu``, ``mod.my_fn``, ``mod.<lambda>``,
    ``functools.partial(nn_jax.losses.mse, reduction='none')``."""
    if isinstance(fn, functools.partial):
        arguments = [callable_name(fn.func), *map(repr, fn.args)]
        arguments += [f"{k}={v!r}" for k, v in fn.keywords.items()]
        return f"functools.partial({', '.join(arguments)})"
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
# Describing values in messages, and checking keys and inputs at the call boundary.


def describe(value: Any) -> str:
    """``value`` as a message shows what was given: ``0``, ``True (a bool)``, ``'3'``,
    ``a float32 array of shape (2, 4)``, ``the class Dense``, ``the function jax.nn.relu``."""
    if isinstance(value, bool):
        return f"{value!r} (a bool)"
    if isinstance(value, int | float | str | complex) or value is None:
        text = repr(value)
        return text if len(text) <= 80 else text[:77] + "..."
    if isinstance(value, type):
        return f"the class {value.__name__}"
    if isinstance(value, Layer):
        return repr(value)
    if isinstance(value, np.dtype):
        return f"the dtype {value.name}"
    if isinstance(value, np.generic):
        return f"{value.item()!r} (a NumPy {value.dtype})"
    dtype, shape = getattr(value, "dtype", None), getattr(value, "shape", None)
    if dtype is not None and shape is not None:
        return f"a {dtype} array of shape {tuple(shape)}"
    if isinstance(value, Mapping):
        return f"a {type(value).__name__} with keys {sorted(map(str, value))}"
    if isinstance(value, tuple | list):
        if len(value) <= 4 and all(isinstance(v, int | float | str) for v in value):
            return f"the {type(value).__name__} {value!r}"
        return f"a {type(value).__name__} of {len(value)} items"
    if callable(value):
        return f"the function {callable_name(value)}"
    return f"a {type(value).__name__}"


@functools.cache
def _raw_key_shape() -> tuple[int, ...]:
    """The shape of a legacy ``jax.random.PRNGKey(0)`` of the default PRNG implementation."""
    return tuple(jax.eval_shape(lambda: jax.random.key_data(jax.random.key(0))).shape)


def check_key(key: Any, where: str, name: str = "key", *, optional: bool = False) -> None:
    """Raise an ``RngError`` unless ``key`` is one PRNG key (trace-time: reads the type only).

    A key is ``jax.random.key(seed)`` (shape ``()``), or a legacy ``jax.random.PRNGKey(seed)``
    (``uint32`` of shape ``(2,)``). Not an int, a float array, or a batch of keys. With
    ``optional``, ``None`` is accepted too.
    """
    if key is None and optional:
        return
    fix = "pass one key, e.g. jax.random.key(0)"
    dtype, shape = getattr(key, "dtype", None), getattr(key, "shape", None)
    if dtype is None or shape is None or isinstance(key, np.generic):
        given = describe(key)
        if isinstance(key, int | np.integer) and not isinstance(key, bool):
            given, fix = f"the int {key}", f"pass jax.random.key({key}) instead of the seed"
        raise RngError(f"{where}: {name} must be a PRNG key, given {given}; {fix}")
    shape = tuple(shape)
    if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        if shape == ():
            return
        batch = shape
    elif dtype == jnp.uint32 and shape[-1:] == _raw_key_shape()[-1:]:
        if len(shape) == 1:
            return
        batch = shape[:-1]
    else:
        raise RngError(f"{where}: {name} must be a PRNG key, given {describe(key)}; {fix}")
    raise RngError(
        f"{where}: {name} must be one PRNG key, given a batch of keys of shape {batch}; {fix} "
        "(take one entry of jax.random.split(key, n), or map over the keys with jax.vmap)"
    )


def check_layer(where: str, value: Any, name: str = "model") -> None:
    """Raise an ``ArgumentError`` unless ``value`` is a layer instance (not its class)."""
    if isinstance(value, Layer):
        return
    hint = ""
    if isinstance(value, type):
        hint = f"; construct it first, e.g. {value.__name__}(...)"
    raise ArgumentError(
        f"{where}: {name} must be a layer instance, e.g. Dense(3), given {describe(value)}{hint}"
    )


def check_input(where: str, x: Any, *, example: bool = False, call: str = "init(key, x)") -> None:
    """Raise unless ``x`` is an array or a pytree of arrays with real (not complex) dtypes.

    ``example``: ``x`` is ``init``'s example input, read for its shapes and dtypes only: arrays
    or ``jax.ShapeDtypeStruct`` s (a tuple of ints, a shape, is an ``ArgumentError``).
    Trace-time only: reads types, shapes and dtypes.
    """
    if (
        example
        and isinstance(x, tuple | list)
        and x
        and all(isinstance(d, int) and not isinstance(d, bool) for d in x)
    ):
        raise ArgumentError(
            f"{where}: {call} takes an example input (an array or a "
            f"jax.ShapeDtypeStruct), given the {type(x).__name__} {tuple(x)!r}, which looks "
            f"like a shape; pass jnp.zeros({tuple(x)!r}) or "
            f"jax.ShapeDtypeStruct({tuple(x)!r}, jnp.float32)"
        )
    for leaf in jax.tree.leaves(x):
        dtype = getattr(leaf, "dtype", None)
        if dtype is None:
            if isinstance(leaf, bool | int | float) and not example:
                continue
            if not isinstance(leaf, complex):
                expected = "arrays or jax.ShapeDtypeStructs" if example else "arrays"
                raise ArgumentError(
                    f"{where}: the input x must be an array or a pytree (tuple, dict) of "
                    f"{expected}, given {describe(leaf)}" + (" in it" if leaf is not x else "")
                )
            dtype = jnp.result_type(leaf)
        if jnp.issubdtype(dtype, jnp.complexfloating):
            shape = tuple(getattr(leaf, "shape", ()))
            raise ShapeError(
                f"{where}: the input is complex ({jnp.dtype(dtype).name}, shape {shape}) and "
                "this layer computes on real numbers; pass jnp.real(x) and jnp.imag(x) as "
                "features (e.g. concatenated on the last axis), or jnp.abs(x)"
            )


# --------------------------------------------------------------------------------------------
# Hyper-parameter checks: one rule per field annotation, before the layer's own __post_init__.
#
# A field's annotation, as written, picks its rule: ``int`` (an int or NumPy integer, not a
# bool; stored as a Python int), ``Size`` (an int >= 1), ``float`` (a finite number),
# ``NonNegative``, ``Rate`` ([0, 1]), ``bool``, ``str``, ``tuple[int, ...]``, ``Sizes``,
# ``Initializer``, ``Activation``, ``Layer``, unions of these and ``None``. Other annotations
# (``Any``, a layer type, ...) are left to the layer's own ``__post_init__``; ``dtype`` and
# ``param_dtype`` fields must be real dtypes.

Size: TypeAlias = int
"""An ``int`` that counts something (features, heads, groups, classes): ``>= 1``."""
Sizes: TypeAlias = tuple[int, ...]
"""A non-empty tuple of :data:`Size` s (the widths of layers, blocks per stage)."""
NonNegative: TypeAlias = float
"""A finite number ``>= 0`` (an epsilon)."""
Rate: TypeAlias = float
"""A number in ``[0, 1]`` (a probability, a momentum)."""
Activation: TypeAlias = Callable[[Any], Any] | str
"""A function such as ``jax.nn.relu``, or a name :func:`nn_jax.activations.get_activation`
knows (``"relu"``)."""


class _Reject(Exception):
    """A value does not fit one member of a field's annotation (internal to the checks)."""

    def __init__(self, expected: str, hint: str = "") -> None:
        super().__init__(expected)
        self.expected, self.hint = expected, hint


def _as_int(value: Any, expected: str) -> int:
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer):
        raise _Reject(expected)
    return int(value)


def _as_number(value: Any, expected: str) -> int | float:
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | float | np.number):
        raise _Reject(expected)
    if isinstance(value, np.complexfloating):
        raise _Reject(expected)
    value = value.item() if isinstance(value, np.generic) else value
    if not math.isfinite(value):
        raise _Reject(expected)
    return value


def _size(value: Any) -> int:
    value = _as_int(value, "a positive int")
    if value < 1:
        raise _Reject("a positive int")
    return value


def _non_negative(value: Any) -> int | float:
    value = _as_number(value, "a number >= 0")
    if value < 0:
        raise _Reject("a number >= 0")
    return value


def _rate(value: Any) -> int | float:
    value = _as_number(value, "in [0, 1]")
    if not 0 <= value <= 1:
        raise _Reject("in [0, 1]")
    return value


def _bool(value: Any) -> bool:
    if not isinstance(value, bool | np.bool_):
        raise _Reject("True or False")
    return bool(value)


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise _Reject("a string")
    return str(value)


def _none(value: Any) -> None:
    if value is not None:
        raise _Reject("None")


def _tuple_of(item: Callable[[Any], Any], expected: str, *, non_empty: bool = False) -> Any:
    def check(value: Any) -> tuple[Any, ...]:
        if not isinstance(value, tuple | list) or (non_empty and not value):
            raise _Reject(expected)
        try:
            return tuple(item(v) for v in value)
        except _Reject:
            raise _Reject(expected) from None

    return check


@functools.cache
def _initializer_factories() -> dict[Any, str]:
    """JAX's and nn_jax's initializer *factories* (``lecun_normal``, not ``lecun_normal()``)."""
    from nn_jax import initializers

    found: dict[Any, str] = {}
    modules = {"jax.nn.initializers": dir(jax.nn.initializers), initializers.__name__: []}
    modules[initializers.__name__] = list(initializers.__all__)
    for prefix, names in modules.items():
        module = importlib.import_module(prefix)
        for name in names:
            fn = getattr(module, name)
            if (
                not name.startswith("_")
                and name not in ("zeros", "ones", "initialize")
                and callable(fn)
                and not isinstance(fn, type)
            ):
                found.setdefault(fn, f"{prefix}.{name}")
    return found


def _makes_functions(init: Any) -> bool:
    """Whether ``init(key, (2, 2), float32)`` returns a function (``init`` is a factory).

    Traced with ``jax.eval_shape`` (no computation); an initializer that cannot draw that
    shape (``orthogonal`` on a 3-D kernel, ...) raises, and is given the benefit of the doubt.
    """
    from nn_jax import initializers

    made: list[Any] = []

    def probe(key: PRNGKey) -> Array:
        made.append(initializers.initialize(init, key, (2, 2), jnp.float32, fan_in=2))
        return jnp.zeros(())

    try:
        jax.eval_shape(probe, jax.eval_shape(lambda: jax.random.key(0)))
    except Exception:
        return False
    return bool(made) and callable(made[0]) and not hasattr(made[0], "shape")


_makes_functions_cached = functools.lru_cache(maxsize=1024)(_makes_functions)

_INITIALIZER = "an initializer, a function (key, shape, dtype) -> array"


def _initializer(value: Any) -> Any:
    from nn_jax import initializers

    known = (initializers.JaxInitializer, initializers.UniformFanIn, initializers.UniformSymmetric)
    if isinstance(value, known) or value is initializers.zeros or value is initializers.ones:
        return value
    if isinstance(value, type | Layer) or not callable(value):
        raise _Reject(_INITIALIZER, _construct_hint(value))
    try:
        factory = _initializer_factories().get(value)
    except TypeError:  # unhashable
        factory = None
    if factory is not None:
        raise _Reject(_INITIALIZER, f"{factory} makes initializers; call it: {{field}}={factory}()")
    try:
        signature = inspect.signature(value)
    except (TypeError, ValueError):  # no signature to read (a builtin): go on to the probe
        signature = None
    if signature is not None:
        try:
            signature.bind(0, 1, 2)
        except TypeError:
            raise _Reject(
                _INITIALIZER,
                f"its signature is {signature}; if it makes initializers, call it to get one",
            ) from None
    try:
        makes = _makes_functions_cached(value)
    except TypeError:  # unhashable
        makes = _makes_functions(value)
    if makes:
        raise _Reject(
            _INITIALIZER,
            "called with (key, shape, dtype) it returns a function, so it is a factory of "
            "initializers: call it to get the initializer",
        )
    return value


def _activation(value: Any) -> Any:
    from nn_jax import activations

    names = [n for n in activations.__all__ if n != "get_activation"]
    expected = "a function or an activation name"
    if isinstance(value, str):
        if value not in names:
            raise _Reject(expected, f"known names: {', '.join(sorted(names))}")
    elif isinstance(value, Layer):
        raise _Reject(expected, "a layer goes in a combinator, e.g. Sequential(..., layer)")
    elif isinstance(value, type) or not callable(value):
        raise _Reject(expected, _construct_hint(value))
    return value


def _construct_hint(value: Any) -> str:
    """What to say when a class was given where an instance belongs."""
    if not isinstance(value, type):
        return ""
    return f"construct it first, e.g. {{field}}={value.__name__}(...)"


def _function(value: Any) -> Any:
    if isinstance(value, type) or not callable(value):
        raise _Reject("a function", _construct_hint(value))
    return value


def _layer(value: Any) -> Any:
    if not isinstance(value, Layer):
        raise _Reject("a layer instance", _construct_hint(value))
    return value


def _layer_like(value: Any) -> Any:
    if isinstance(value, type) or not (isinstance(value, Layer) or callable(value)):
        raise _Reject("a layer instance or a function", _construct_hint(value))
    return value


_RULES: dict[str, Callable[[Any], Any]] = {
    "None": _none,
    "int": lambda v: _as_int(v, "an int"),
    "Size": _size,
    "float": lambda v: _as_number(v, "a finite number"),
    "NonNegative": _non_negative,
    "Rate": _rate,
    "bool": _bool,
    "str": _str,
    "tuple[int, ...]": _tuple_of(lambda v: _as_int(v, ""), "a tuple of ints"),
    "tuple[float, ...]": _tuple_of(lambda v: _as_number(v, ""), "a tuple of numbers"),
    "tuple[str, ...]": _tuple_of(_str, "a tuple of strings"),
    "Sizes": _tuple_of(_size, "a non-empty tuple of positive ints", non_empty=True),
    "Initializer": _initializer,
    "Activation": _activation,
    "Callable[[Any], Any] | str": _activation,
    "Callable[[Any], Any]": _function,
    "Layer": _layer,
    "LayerLike": _layer_like,
}


def _members(annotation: str) -> list[str]:
    """The members of a union written ``A | B[C | D] | None`` (top-level ``|`` only)."""
    members, depth, start = [], 0, 0
    for i, char in enumerate(annotation):
        if char in "[(":
            depth += 1
        elif char in "])":
            depth -= 1
        if char == "|" and depth == 0:
            members.append(annotation[start:i].strip())
            start = i + 1
    return [*members, annotation[start:].strip()]


def _dtype_rule(optional: bool) -> Callable[[Any], Any]:
    expected = "a real dtype such as jnp.float32 or 'bfloat16'" + (" or None" * optional)

    def check(value: Any) -> Any:
        if value is None and optional:
            return value
        if value is None or isinstance(value, np.ndarray | jax.Array):
            raise _Reject(expected)
        try:
            dtype = jnp.dtype(value)
        except TypeError:
            raise _Reject(expected) from None
        if not (
            jnp.issubdtype(dtype, jnp.floating)
            or jnp.issubdtype(dtype, jnp.integer)
            or dtype == jnp.bool_
        ):
            raise _Reject(expected)
        return value

    return check


def _field_rule(name: str, annotation: Any) -> Callable[[Any], Any] | None:
    """The check of a field from its annotation as written (``None``: not checked here)."""
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    text = text or str(annotation)
    if name in ("dtype", "param_dtype") and text == "Any":
        return _dtype_rule(optional=name == "dtype")
    if text in _RULES:
        return _RULES[text]
    members = _members(text)
    if len(members) < 2 or any(m not in _RULES for m in members):
        return None
    rules = [_RULES[m] for m in members]

    def union(value: Any) -> Any:
        rejects = []
        for rule in rules:
            try:
                return rule(value)
            except _Reject as e:
                rejects.append(e)
        hints = [e.hint for e in rejects if e.hint]
        raise _Reject(" or ".join(e.expected for e in rejects), hints[0] if hints else "")

    return union


_FIELD_RULES: dict[type, tuple[tuple[str, Callable[[Any], Any]], ...]] = {}


def check_fields(layer: Layer) -> None:
    """Check and normalize every hyper-parameter of ``layer`` by its annotation, in place.

    Raises a ``ConfigError`` naming the layer type, the field, what it must be and what was
    given. Runs once per construction, before the layer's own ``__post_init__``. A layer's
    ``field_notes`` (``{"rate": "the drop probability"}``) say in messages what a field means.
    """
    cls = type(layer)
    plan = _FIELD_RULES.get(cls)
    if plan is None:
        found = [
            (f.name, _field_rule(f.name, f.type))
            for f in dataclasses.fields(cls)
            if f.init and not f.name.startswith("_")
        ]
        plan = _FIELD_RULES[cls] = tuple((n, r) for n, r in found if r is not None)
    for name, rule in plan:
        value = getattr(layer, name)
        try:
            checked = rule(value)
        except _Reject as e:
            hint = f"; {e.hint.format(field=name)}" if e.hint else ""
            note = layer.field_notes.get(name)
            shown = f"{name} ({note})" if note else name
            raise ConfigError(
                f"{cls.__name__}: {shown} must be {e.expected}, given {describe(value)}{hint}"
            ) from None
        if checked is not value:
            object.__setattr__(layer, name, checked)


def _validating(post_init: Callable[[Any], None]) -> Callable[[Any], None]:
    """``post_init`` preceded by :func:`check_fields`, once per construction (the outermost
    ``__post_init__`` checks; those reached through ``super()`` do not check again)."""

    @functools.wraps(post_init)
    def __post_init__(self: Layer) -> None:
        if type(self).__post_init__ is __post_init__:
            check_fields(self)
        post_init(self)

    __post_init__._nn_jax_checks_fields = True  # type: ignore[attr-defined]
    return __post_init__


def _checked_init(init: Callable[..., tuple[Params, State]]) -> Callable[..., Any]:
    """``init`` that checks its key and example input when called from outside any layer."""

    @functools.wraps(init)
    def checked(self: Layer, key: PRNGKey, x: Any) -> tuple[Params, State]:
        if not _PATH.get():
            check_key(key, self.where(), "key")
            check_input(self.where(), x, example=True)
        return init(self, key, x)

    checked._nn_jax_checks_call = True  # type: ignore[attr-defined]
    return checked


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
        # Every constructor checks the hyper-parameters by annotation (check_fields) before the
        # class's own __post_init__, and every init checks its key and example input.
        post_init = cls.__dict__.get("__post_init__")
        if post_init is not None and not hasattr(post_init, "_nn_jax_checks_fields"):
            cls.__post_init__ = _validating(post_init)  # type: ignore[method-assign,assignment]
        init = cls.__dict__.get("init")
        if (
            init is not None
            and not getattr(init, "__isabstractmethod__", False)
            and not hasattr(init, "_nn_jax_checks_call")
        ):
            cls.init = _checked_init(init)  # type: ignore[method-assign]

    field_notes: ClassVar[Mapping[str, str]] = {}
    """What a field means, for messages: ``{"rate": "the drop probability"}``."""

    def __post_init__(self) -> None:
        """Check the hyper-parameters by their annotations (see :func:`check_fields`)."""
        if type(self).__post_init__ is Layer.__post_init__:  # no subclass __post_init__
            check_fields(self)

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
        x: Any = _NOT_GIVEN,
        *,
        side: Side | None = None,
        rng: PRNGKey | None = None,
        train: bool = False,
    ) -> tuple[Any, State]:
        """Run the layer: returns the output and the new state (see :class:`ApplyFn`).

        The call is checked before any maths, at trace time only (Python types, shapes and
        dtypes; nothing is added to a compiled program): ``params`` and ``state`` are dicts,
        ``rng`` is ``None`` or one PRNG key, ``train`` a bool, ``side`` a mapping, and the input
        an array or a pytree of real arrays. Params entries that the layer does not read are a
        ``ParamsError`` (params of another model, or nested one level too deep).
        """
        if x is _NOT_GIVEN:
            raise self.error(
                ArgumentError,
                f"apply(params, state, x) was called with two arguments, params and "
                f"{describe(state)}; pass the state returned by init too (or {{}} for a "
                "stateless layer), or use model(params, x) for stateless layers",
            )
        if not isinstance(train, bool):
            raise self.error(ConfigError, f"train must be True or False, given {train!r}")
        self._check_tree("params", params)
        self._check_tree("state", state)
        reads = _PARAM_READS.get()
        token = None
        if reads is None:  # the outermost apply: check what the caller gave
            check_key(rng, self.where(), "rng", optional=True)
            check_input(self.where(), x)
            reads = {}
            token = _PARAM_READS.set(reads)
        try:
            call = Call(_as_side(self, side), rng, train)
            with _checking_side(self, call.side):
                y, new_state = self.compute(params, state, x, call)
        finally:
            if token is not None:
                _PARAM_READS.reset(token)
        used = reads.pop(id(params), None)
        if used is not None and len(used) < len(params) and not isinstance(self, Block):
            unused = sorted(set(params) - used)
            raise self.error(
                ParamsError,
                f"params has entries {unused} that this layer does not use (it reads "
                f"{sorted(used)}); pass the params returned by this layer's init",
            )
        return y, new_state

    def __call__(
        self,
        params: Params,
        x: Any = _NOT_GIVEN,
        *extra: Any,
        side: Side | None = None,
        rng: PRNGKey | None = None,
        train: bool = False,
    ) -> Any:
        """Short form for stateless layers: ``apply(params, {}, x, ...)[0]``.

        A layer that needs state raises here; call ``apply`` and thread its state instead.
        """
        if x is _NOT_GIVEN or extra:
            given = 1 + (x is not _NOT_GIVEN) + len(extra)
            raise self.error(
                ArgumentError,
                f"layer(params, x) takes 2 positional arguments, given {given}; call "
                "layer(params, x) with the params returned by init, or "
                "layer.apply(params, state, x) to pass a state",
            )
        return self.apply(params, {}, x, side=side, rng=rng, train=train)[0]

    def _check_tree(self, what: str, tree: Any) -> None:
        """``params``/``state`` must be dicts; a ``ParamsError`` that says which they were."""
        if isinstance(tree, Mapping):
            return
        hint = f"pass the {what} returned by this layer's init"
        if isinstance(tree, tuple) and len(tree) == 2 and all(isinstance(t, Mapping) for t in tree):
            hint = "init returns the pair (params, state): unpack it, params, state = init(key, x)"
        elif what == "state":
            hint += " ({} for a stateless layer)"
        given = (
            f"{type(tree).__name__} of {len(tree)} items"
            if isinstance(tree, tuple | list)
            else describe(tree)
        )
        raise self.error(ParamsError, f"{what} must be a dict, given {given}; {hint}")

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
        mode (see :mod:`nn_jax.checks`)."""
        check_in_range(self.where(), what, values, low, high, closed=closed)

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
        reads = _PARAM_READS.get()
        if reads is not None:
            reads.setdefault(id(params), set()).add(name)
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
        if params:
            raise self.error(
                ParamsError,
                f"this layer has no parameters, given params with keys {sorted(params)}; pass "
                "{} (or the params its init returns)",
            )
        return self.transform(x, call), {}


def as_layer(layer: Layer | Callable[[Any], Any], where: str = "") -> Layer:
    """A layer, or a plain function such as ``jax.nn.relu`` wrapped in :class:`Lambda`.

    ``where`` starts the message of the ``ConfigError`` raised for anything else (e.g.
    ``"Sequential: child '1'"``).
    """
    if isinstance(layer, Layer):
        return layer
    prefix = f"{where}: " if where else ""
    if isinstance(layer, type):
        raise ConfigError(
            f"{prefix}expected a layer instance or a function, given the class "
            f"{layer.__name__}; construct it first, e.g. {layer.__name__}(...)"
        )
    if callable(layer):
        return Lambda(layer)
    raise ConfigError(
        f"{prefix}expected a layer instance or a function such as jax.nn.relu, given "
        f"{describe(layer)}"
    )


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
                p, s = _init_child(layer, derive_key(self._key, name), x)  # type: ignore[arg-type]
                if p:
                    self.new_params[name] = p
                if s:
                    self.new_state[name] = s
            p = (self.new_params if self.initializing else self._params).get(name, {})
            s = self.new_state.get(name, {})
            wrap = _CHILD_WRAP.get()
            run = layer if wrap is None or self.initializing else wrap(layer, layer_path())
            y, s_new = run.apply(
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
                taps.calls[layer_path()] = (x, self.call.side if side is None else side)
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
                recording = _INIT_RECORDING.get()
                if recording is not None:
                    recording.add(("param", init, tuple(shape), dtype), name)
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

    ``init`` traces ``forward`` abstractly on the example input's shapes (no FLOPs are spent on
    data) and records what makes each parameter; each distinct part (a leaf layer's ``init``, a
    ``scope.param`` initializer, on given shapes) is then compiled once and run with the key of
    its path, so a stack of identical blocks compiles one block's init (see "Init by parts"
    below). Called inside a trace (``jit``, ``vmap``), it traces ``forward`` on zeros instead.
    It runs with no side inputs: a layer treats an absent side input (``None``) as "not given"
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
        if _INIT_RECORDING.get() is not None:  # a child block while its parent is recorded
            return self.init_traced(key, x)
        if not _is_traced((key, x)):
            made = _init_by_parts(self, treedef, tuple(leaves), key)
            if made is not None:
                return made
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
        scope = Scope(
            initializing=False,
            params=params,
            state=state,
            key=None,
            call=call,
            owner=self,
        )
        y = self.forward(scope, x)
        unused = sorted(set(params) - set(scope._children))
        if unused:
            raise self.error(
                ParamsError,
                f"params has entries {unused} that no child or parameter of this block uses "
                f"(it uses {sorted(scope._children)}); pass the params returned by this "
                "model's init",
            )
        return y, scope.new_state


def _init_on_zeros(
    layer: Layer, treedef: Any, structs: tuple[jax.ShapeDtypeStruct, ...], key: PRNGKey
) -> tuple[Params, State]:
    x = jax.tree.unflatten(treedef, [jnp.zeros(s.shape, s.dtype) for s in structs])
    return layer.init_traced(key, x) if isinstance(layer, Block) else layer.init(key, x)


_jit_init = jax.jit(_init_on_zeros, static_argnums=(0, 1, 2))


# --------------------------------------------------------------------------------------------
# Init by parts: a block's init compiled with each distinct part once.
#
# Compiling a whole model's init as one XLA program costs seconds on CPU, paid again after every
# kernel restart: each parameter's random draw, and each child key's ``fold_in`` on the way to
# it, is its own threefry kernel (10 s for a 12-layer transformer on a 2-core CPU). So
# ``Block.init`` traces the forward pass abstractly (``jax.eval_shape``: no FLOPs, no
# compilation) and records what makes each parameter: every leaf layer's ``init`` on its input
# shapes and every ``scope.param`` initializer. The keys are derived outside any program (the
# eager ``fold_in`` compiles once), the parts made once run in one program, and a part made n
# times (the same layer on the same shapes: a stack of identical blocks) gets a program of its
# own, compiled once and run n times. The parameters are bit for bit those of the one-program
# init (tests/test_core.py).

Part = tuple[Any, ...]
"""What makes one part: ``("layer", layer, treedef, input structs)`` (its ``init`` on zeros
of those shapes) or ``("param", initializer, shape, dtype)`` (a ``scope.param``)."""


@dataclasses.dataclass
class _InitRecording:
    """The parts of a block's init by path relative to the block (filled while tracing)."""

    prefix: tuple[str, ...]
    parts: list[tuple[tuple[str, ...], Part]] = dataclasses.field(default_factory=list)

    def add(self, part: Part, *names: str) -> None:
        self.parts.append(((*_PATH.get()[len(self.prefix) :], *names), part))


_INIT_RECORDING: contextvars.ContextVar[_InitRecording | None] = contextvars.ContextVar(
    "nn_jax_init_recording", default=None
)


def _is_traced(tree: Any) -> bool:
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(tree))


def _splits_into_parts(layer: Layer) -> bool:
    """Whether ``layer.init`` is the derived one of :class:`Block` (its children are recorded)."""
    return (
        isinstance(layer, Block)
        and type(layer).init is Block.init
        and type(layer).init_traced is Block.init_traced
    )


def _init_child(layer: Layer, key: PRNGKey, x: Any) -> tuple[Params, State]:
    """A :class:`Scope` child's init; a leaf's is recorded while a block's init is recorded."""
    recording = _INIT_RECORDING.get()
    if recording is None or _splits_into_parts(layer):
        return layer.init(key, x)
    if type(layer).init is ParameterFree.init:
        return {}, {}
    leaves, treedef = jax.tree.flatten(jax.eval_shape(lambda t: t, x))
    recording.add(("layer", layer, treedef, tuple(leaves)))
    token = _INIT_RECORDING.set(None)  # a leaf's own init (Repeat, Remat) is one part
    try:
        return layer.init(key, x)
    finally:
        _INIT_RECORDING.reset(token)


def _make_part(part: Part, key: PRNGKey) -> Any:
    if part[0] == "layer":
        _, layer, treedef, structs = part
        return _init_on_zeros(layer, treedef, structs, key)
    _, init, shape, dtype = part
    return init(key, shape, dtype)


@functools.lru_cache(maxsize=256)
def _recorded_init(
    block: Block,
    treedef: Any,
    structs: tuple[jax.ShapeDtypeStruct, ...],
    key: jax.ShapeDtypeStruct,
    x64: bool,
) -> tuple[tuple[tuple[Part, tuple[tuple[str, ...], ...]], ...], Any]:
    """``block``'s init parts grouped (equal parts together, with their paths), and the
    abstract ``(params, state)`` the init gives. Cached by everything the trace depends on
    (``x64``: JAX's default dtypes)."""
    del x64
    recording = _InitRecording(prefix=_PATH.get())
    token = _INIT_RECORDING.set(recording)
    try:
        expected = jax.eval_shape(
            lambda k: block.init_traced(
                k, jax.tree.unflatten(treedef, [jnp.zeros(s.shape, s.dtype) for s in structs])
            ),
            key,
        )
    finally:
        _INIT_RECORDING.reset(token)
    groups: dict[Part, list[tuple[str, ...]]] = {}
    for path, part in recording.parts:
        groups.setdefault(part, []).append(path)
    return tuple((part, tuple(paths)) for part, paths in groups.items()), expected


@functools.partial(jax.jit, static_argnums=0)
def _run_parts(parts: tuple[Part, ...], keys: tuple[PRNGKey, ...]) -> list[Any]:
    """Each part's output for its key, in one program."""
    return [_make_part(part, key) for part, key in zip(parts, keys, strict=True)]


def _nest(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for name in path[:-1]:
        tree = tree.setdefault(name, {})
    tree[path[-1]] = value


def _init_by_parts(
    block: Block, treedef: Any, structs: tuple[jax.ShapeDtypeStruct, ...], key: PRNGKey
) -> tuple[Params, State] | None:
    """``block``'s init run by parts (see above), or ``None`` when it cannot be.

    It cannot when a part is not hashable (the program's cache key) or when the parts do not
    rebuild the abstract result (a block that makes parameters other than through children and
    ``scope.param``); the caller then compiles the whole init as one program.
    """
    key_struct = jax.ShapeDtypeStruct(jnp.shape(key), jnp.asarray(key).dtype)
    x64 = jax.dtypes.canonicalize_dtype(jnp.float64) == jnp.float64  # the default dtypes
    groups, expected = _recorded_init(block, treedef, structs, key_struct, x64)
    try:
        hash(groups)
    except TypeError:
        return None
    keys: dict[tuple[str, ...], PRNGKey] = {(): key}

    def key_at(path: tuple[str, ...]) -> PRNGKey:  # eager: fold_in compiles once, not per path
        if path not in keys:
            keys[path] = derive_key(key_at(path[:-1]), path[-1])
        return keys[path]

    # The parts made once go in one program; a part made n times has its own, run n times.
    single = tuple(part for part, paths in groups if len(paths) == 1)
    made_once = iter(
        _run_parts(single, tuple(key_at(paths[0]) for _, paths in groups if len(paths) == 1))
    )
    params: dict[str, Any] = {}
    state: dict[str, Any] = {}
    for part, paths in groups:
        for path in paths:
            made = next(made_once) if len(paths) == 1 else _run_parts((part,), (key_at(path),))[0]
            if part[0] == "param":
                _nest(params, path, made)
                continue
            p, s = made
            if p:
                _nest(params, path, p)
            if s:
                _nest(state, path, s)
    made = (params, state)
    if jax.tree.structure(made) != jax.tree.structure(expected) or any(  # type: ignore[operator]
        (a.shape, a.dtype) != (b.shape, b.dtype)
        for a, b in zip(jax.tree.leaves(made), jax.tree.leaves(expected), strict=True)
    ):
        return None
    return jax.tree.unflatten(jax.tree.structure(expected), jax.tree.leaves(made))

"""Model descriptions as data: layers to JSON-able config dicts and back, by value.

A layer is a frozen dataclass of hyper-parameters, so its description is data: :func:`to_config`
writes it as a plain dict (only ``dict``, ``list``, ``str``, ``int``, ``float``, ``bool`` and
``None``), :func:`from_config` builds an equal layer from one, and :func:`to_json` /
:func:`from_json` do the same through JSON text. Use it to store a model's architecture next to
its checkpoint, diff two experiments' models, or write a model by hand in a config file.

The format: every layer is a dict with its registered name under ``"type"`` and the fields that
differ from their defaults (as ``repr`` shows them), so a config reads like the constructor call
and records the model relative to this version's defaults. Other values are tagged by their key:

- a layer: ``{"type": "Dense", "features": 4}`` (a combinator's children: ``"layers"``, a list
  of ``[name, layer]`` pairs);
- a tuple: a list (read back as a tuple; layers hold tuples, never lists);
- a function: ``{"function": "relu"}`` for a name of :mod:`nn_jax.activations`,
  ``{"function": "jax.numpy:cos"}`` for another function of nn_jax, jax or optax;
- an initializer: ``{"initializer": "normal", "stddev": 0.02}`` for the factories of
  :mod:`nn_jax.initializers`, ``{"initializer": "zeros"}`` (or ``"ones"``);
- a dtype: ``{"dtype": "bfloat16"}`` (read back as ``jnp.bfloat16``, equal to
  ``jnp.dtype("bfloat16")``);
- an enum: ``{"enum": "jax.lax:Precision", "member": "HIGHEST"}``.

Strings always stay strings (``MLP(activation="relu")`` and ``MLP(activation=jax.nn.relu)`` are
different layers), which is why functions are tagged. Reading a config never uses ``eval`` or
pickle: layer types come from the registry (every public layer of nn_jax and ``nn_jax.models``,
plus the classes given to :func:`register_layer`), and functions only from modules under
``nn_jax``, ``jax`` and ``optax`` that are already imported (reading a config never imports a
module, so it runs no module's code). A value with no such description (a lambda, a closure, one of
JAX's own initializer closures) raises :class:`~nn_jax.errors.ConfigError` naming where it is.

>>> import jax
>>> from nn_jax import Dense, Sequential
>>> model = Sequential(Dense(4), jax.nn.relu, Dense(2))
>>> config = to_config(model)
>>> for name, child in config["layers"]:
...     print(name, child)
0 {'type': 'Dense', 'features': 4}
1 {'type': 'Lambda', 'fn': {'function': 'relu'}}
2 {'type': 'Dense', 'features': 2}
>>> from_config(config) == model
True
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import importlib
import inspect
import json
import math
import pkgutil
import reprlib
import sys
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, overload

import jax.numpy as jnp
import numpy as np

from nn_jax import activations, initializers
from nn_jax.core import Layer
from nn_jax.errors import ArgumentError, ConfigError, FileFormatError

__all__ = ["from_config", "from_json", "register_layer", "to_config", "to_json"]

L = TypeVar("L", bound=type[Layer])

_TAGS = ("type", "initializer", "function", "dtype", "enum")
_ALLOWED_ROOTS = ("nn_jax", "jax", "optax")
_PLAIN_INITIALIZERS = {"zeros": initializers.zeros, "ones": initializers.ones}

# --------------------------------------------------------------------------------------------
# The registry: layer classes by name.

_BY_NAME: dict[str, type[Layer]] = {}
_BY_CLASS: dict[type[Layer], str] = {}
_builtins_loaded = False


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _check_registrable(cls: Any) -> None:
    if not (isinstance(cls, type) and issubclass(cls, Layer)):
        raise ConfigError(f"register_layer: expected a Layer subclass, given {cls!r}")
    if not dataclasses.is_dataclass(cls):
        raise ConfigError(
            f"register_layer: {cls.__name__} is not a dataclass; decorate it with "
            "@dataclasses.dataclass(frozen=True) first (below @register_layer)"
        )
    if not _init_takes_fields(cls) and not _is_children(cls):
        raise ConfigError(
            f"register_layer: {cls.__name__} has its own __init__, so its fields cannot be given "
            "back as keywords; let dataclass() write __init__ and convert values in __post_init__"
        )
    if any(f.name == "type" for f in dataclasses.fields(cls) if f.init):
        raise ConfigError(
            f"register_layer: {cls.__name__} has a field named 'type', the key configs use for "
            "the layer's name; rename the field"
        )


def _add(cls: type[Layer], name: str) -> None:
    taken = _BY_NAME.get(name)
    if taken is not None and taken is not cls:
        raise ConfigError(
            f"register_layer: name {name!r} is already taken by {_qualified(taken)}; register "
            f"{_qualified(cls)} under another name, e.g. name={_qualified(cls)!r}"
        )
    known = _BY_CLASS.get(cls)
    if known is not None and known != name:
        raise ConfigError(
            f"register_layer: {_qualified(cls)} is already registered as {known!r}; a class has "
            "one name (configs must read back the same)"
        )
    _BY_NAME[name] = cls
    _BY_CLASS[cls] = name


def _public_layer_classes() -> list[type[Layer]]:
    """Every concrete Layer subclass in the ``__all__`` of nn_jax's public modules and models."""
    import nn_jax
    import nn_jax.models

    modules: list[Any] = [nn_jax, nn_jax.models]
    for package in (nn_jax, nn_jax.models):
        for info in pkgutil.iter_modules(package.__path__):
            if not info.ispkg and not info.name.startswith("_") and info.name != "config":
                try:
                    modules.append(importlib.import_module(f"{package.__name__}.{info.name}"))
                except ImportError:  # a module needing an optional dependency that is absent
                    continue
    found: dict[type[Layer], None] = {}
    for module in modules:
        for name in getattr(module, "__all__", ()):
            value = getattr(module, name, None)
            if (
                isinstance(value, type)
                and issubclass(value, Layer)
                and not getattr(value, "__abstractmethods__", None)
            ):
                found[value] = None
    return list(found)


def _registry() -> tuple[dict[str, type[Layer]], dict[type[Layer], str]]:
    """The registry, with nn_jax's own layers added on first use (nn_jax imports this module)."""
    global _builtins_loaded
    if not _builtins_loaded:
        classes = _public_layer_classes()
        counts: dict[str, int] = {}
        for cls in classes:
            counts[cls.__name__] = counts.get(cls.__name__, 0) + 1
        for cls in classes:
            if cls not in _BY_CLASS:
                _add(cls, cls.__name__ if counts[cls.__name__] == 1 else _qualified(cls))
        _builtins_loaded = True
    return _BY_NAME, _BY_CLASS


@overload
def register_layer(cls: L, name: str | None = None) -> L: ...
@overload
def register_layer(cls: None = None, name: str | None = None) -> Callable[[L], L]: ...
def register_layer(cls: L | None = None, name: str | None = None) -> L | Callable[[L], L]:
    """Register a Layer subclass so :func:`to_config` and :func:`from_config` know it by name.

    Use it as ``@register_layer`` or ``@register_layer(name="mypkg.Scale")`` above
    ``@dataclasses.dataclass(frozen=True)``, or call ``register_layer(Scale)``. The name (the
    class name by default) is what configs write under ``"type"``; one name per class, one class
    per name (a :class:`~nn_jax.errors.ConfigError` otherwise). Returns the class unchanged.
    """

    def register(cls: L) -> L:
        _check_registrable(cls)
        _registry()
        key = cls.__name__ if name is None else name
        if not isinstance(key, str) or not key:
            raise ConfigError(f"register_layer: name must be a non-empty string, given {key!r}")
        _add(cls, key)
        return cls

    return register if cls is None else register(cls)


# --------------------------------------------------------------------------------------------
# Class construction: dataclass fields as keywords (combinators: their children as a mapping).


def _init_takes_fields(cls: type) -> bool:
    """Whether ``cls.__init__`` is one that ``dataclass()`` wrote (it takes the fields)."""
    for klass in cls.__mro__:
        if "__init__" in klass.__dict__:
            params = klass.__dict__.get("__dataclass_params__")
            return bool(params is not None and params.init)
    return False


def _is_children(cls: type) -> bool:
    from nn_jax.combinators import Branch, Parallel, Sequential

    return issubclass(cls, Branch | Parallel | Sequential)


def _init_fields(cls: type) -> list[dataclasses.Field[Any]]:
    return [f for f in dataclasses.fields(cls) if f.init]


def _default(field: dataclasses.Field[Any]) -> Any:
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


def _is_default(value: Any, field: dataclasses.Field[Any]) -> bool:
    default = _default(field)
    if default is dataclasses.MISSING:
        return False
    try:
        return value is default or bool(value == default and type(value) is type(default))
    except Exception:  # a comparison that does not give a bool: write the value
        return False


# --------------------------------------------------------------------------------------------
# Writing.


def _join(path: str, name: str) -> str:
    return f"{path}/{name}" if path else name


def _describe(value: Any) -> str:
    """``value``'s type and a readable name (no memory address for functions)."""
    if callable(value) and hasattr(value, "__qualname__"):
        module = getattr(value, "__module__", None) or "?"
        return f"{type(value).__name__} {module}.{value.__qualname__}"
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 80 else text[:77] + '...'}"


def _cannot(where: str, value: Any, what: str) -> ConfigError:
    return ConfigError(
        f"to_config: {where!r} holds a {_describe(value)}, which has no config description; {what}"
    )


def _within_allowed(module: str) -> bool:
    return any(module == root or module.startswith(f"{root}.") for root in _ALLOWED_ROOTS)


def _activation_names() -> dict[int, str]:
    names: dict[int, str] = {}
    for name in activations.__all__:
        fn = getattr(activations, name)
        if name != "get_activation":
            names.setdefault(id(fn), name)
    return names


def _function_reference(fn: Any) -> str | None:
    """``"relu"`` for the activation table, ``"module:qualname"`` when importable, else None."""
    name = _activation_names().get(id(fn))
    if name is not None:
        return name
    short = getattr(fn, "__name__", None)
    for module in ("nn_jax.activations", "nn_jax.initializers", "jax.nn", "jax.numpy", "jax.lax"):
        if isinstance(short, str) and getattr(importlib.import_module(module), short, None) is fn:
            return f"{module}:{short}"
    home, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", None)
    if isinstance(home, str) and isinstance(qualname, str) and _within_allowed(home):
        try:
            if _resolve(home, qualname) is fn:
                return f"{home}:{qualname}"
        except ConfigError:
            return None
    return None


def _is_initializer_value(value: Any) -> bool:
    """A :class:`JaxInitializer`, or an instance of another initializer dataclass of
    :mod:`nn_jax.initializers` (such as the fan-in initializers)."""
    cls = type(value)
    return isinstance(value, initializers.JaxInitializer) or (
        dataclasses.is_dataclass(value)
        and cls.__module__ == initializers.__name__
        and getattr(initializers, cls.__name__, None) is cls
        and callable(value)
    )


def _snake_case(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


def _initializer_factories() -> list[str]:
    """The names :func:`from_config` calls to make an initializer: the public functions of
    :mod:`nn_jax.initializers` (``normal``, ``uniform_fan_in``, ...), ``initialize`` aside."""
    names = []
    for name, value in vars(initializers).items():
        if (
            not name.startswith("_")
            and name != "initialize"  # calls an initializer; does not make one
            and inspect.isfunction(value)
            and value.__module__ == initializers.__name__
        ):
            names.append(name)
    return sorted(names)


def _encode_initializer_value(value: Any, path: str, where: str) -> dict[str, Any]:
    """An initializer dataclass (``UniformFanIn(scale=2.0)``) by the factory named after its
    class (``{"initializer": "uniform_fan_in", "scale": 2.0}``), checked to give it back."""
    factory = _snake_case(type(value).__name__)
    args = {
        f.name: getattr(value, f.name)
        for f in _init_fields(type(value))
        if not _is_default(getattr(value, f.name), f)
    }
    make = getattr(initializers, factory, None)
    try:
        same = make is not None and make(**args) == value
    except (TypeError, ValueError):
        same = False
    if not same:
        raise _cannot(
            where,
            value,
            f"nn_jax.initializers has no factory {factory}(**fields) that makes it again",
        )
    return {
        "initializer": factory,
        **{k: _encode(v, path, f"{where}.{k}") for k, v in args.items()},
    }


def _encode(value: Any, path: str, where: str) -> Any:
    """``value`` (found at ``where``, inside the layer at ``path``) as a JSON-able value."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if math.isnan(value):
            raise _cannot(where, value, "NaN does not compare equal to itself; give a number")
        return value
    if isinstance(value, Layer):
        return _encode_layer(value, path)
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        if value and all(
            isinstance(v, tuple)
            and len(v) == 2
            and isinstance(v[0], str)
            and isinstance(v[1], Layer)
            for v in value
        ):  # named children, e.g. a Sequential's: their paths are their names
            return [[k, _encode_layer(v, _join(path, k))] for k, v in value]
        return [
            _encode(v, _join(path, f"{where.rsplit('.', 1)[-1]}/{i}"), f"{where}[{i}]")
            for i, v in enumerate(value)
        ]
    if isinstance(value, initializers.JaxInitializer):
        args = {k: _encode(v, path, f"{where}.{k}") for k, v in value.arguments}
        return {"initializer": value.factory, **args}
    if _is_initializer_value(value):
        return _encode_initializer_value(value, path, where)
    for name, init in _PLAIN_INITIALIZERS.items():
        if value is init:
            return {"initializer": name}
    if isinstance(value, np.dtype) or (isinstance(value, type) and hasattr(value, "dtype")):
        return {"dtype": jnp.dtype(value).name}
    if isinstance(value, np.generic) and not isinstance(value, np.datetime64 | np.timedelta64):
        return _encode(value.item(), path, where)
    if isinstance(value, enum.Enum):
        cls = type(value)
        ref = _function_reference(cls) if _within_allowed(cls.__module__) else None
        if ref is None:
            raise _cannot(where, value, "use an enum of nn_jax, jax or optax, or its name")
        return {"enum": ref, "member": value.name}
    if isinstance(value, list | dict | set):
        raise _cannot(
            where, value, "layer hyper-parameters are hashable: use a tuple (of pairs for a dict)"
        )
    if callable(value) and not isinstance(value, type):
        ref = _function_reference(value)
        if ref is not None:
            return {"function": ref}
        raise _cannot(
            where,
            value,
            "only named functions of nn_jax, jax or optax can be written (an activation such as "
            "jax.nn.relu, an initializer of nn_jax.initializers such as normal(stddev=0.02)); "
            "replace a lambda, closure or functools.partial by one of those, or by a registered "
            "layer (register_layer) that holds its settings as fields",
        )
    raise _cannot(where, value, "use Python scalars, strings, tuples, dtypes or layers")


def _encode_layer(layer: Layer, path: str) -> dict[str, Any]:
    _, by_class = _registry()
    name = by_class.get(type(layer))
    if name is None:
        raise ConfigError(
            f"to_config: {type(layer).__name__} at {repr(path) if path else '<root>'} "
            f"({_qualified(type(layer))}) "
            "is not a registered layer; decorate the class with @nn_jax.config.register_layer"
        )
    config: dict[str, Any] = {"type": name}
    # Positional fields first, as in the constructor (and repr), then keyword-only ones.
    for field in sorted(_init_fields(type(layer)), key=lambda f: bool(f.kw_only)):
        value = getattr(layer, field.name)
        if not _is_default(value, field):
            where = f"{path}.{field.name}" if path else field.name
            child_path = _join(path, field.name)
            if isinstance(value, Layer):
                config[field.name] = _encode_layer(value, child_path)
            else:
                config[field.name] = _encode(value, path, where)
    return config


def to_config(layer: Layer) -> dict[str, Any]:
    """The layer as a JSON-able dict: ``{"type": <registered name>, <non-default fields>...}``.

    Only dicts, lists, strings, numbers, booleans and ``None`` appear (see the module docstring
    for how functions, initializers and dtypes are written), so ``json.dumps`` always works and
    :func:`from_config` gives back an equal layer.

    Raises:
        ConfigError: for a value with no description (a lambda, a closure, an unregistered
            layer class), naming its place, e.g. ``'encoder/0.w_init'``, and what to use instead.

    >>> from nn_jax import Dense, initializers
    >>> to_config(Dense(3, w_init=initializers.normal(stddev=0.02)))
    {'type': 'Dense', 'features': 3, 'w_init': {'initializer': 'normal', 'stddev': 0.02}}
    """
    if not isinstance(layer, Layer):
        raise ConfigError(f"to_config: expected a Layer, given {type(layer).__name__}: {layer!r}")
    return _encode_layer(layer, "")


def to_json(layer: Layer, indent: int | None = 2) -> str:
    """:func:`to_config` as JSON text (``indent`` as in ``json.dumps``; ``None``: one line)."""
    return json.dumps(to_config(layer), indent=indent)


# --------------------------------------------------------------------------------------------
# Reading.


def _preview(value: Any) -> str:
    """A short ``repr`` of a value read from a config (which may be large or deeply nested)."""
    return _PREVIEW.repr(value)


_PREVIEW = reprlib.Repr()
_PREVIEW.maxlevel, _PREVIEW.maxstring, _PREVIEW.maxother = 3, 60, 60
_PREVIEW.maxlist = _PREVIEW.maxdict = _PREVIEW.maxtuple = 4


def _resolve(module: str, qualname: str) -> Any:
    """``module.qualname``, only for modules under nn_jax, jax and optax that are already
    imported, and public-ish names."""
    if not _within_allowed(module):
        raise ConfigError(
            f"functions are read only from modules under {', '.join(_ALLOWED_ROOTS)}; given "
            f"{module!r}"
        )
    parts = qualname.split(".")
    if not all(p.isidentifier() and not p.startswith("__") for p in parts + module.split(".")):
        raise ConfigError(f"{module}:{qualname} is not a module path and attribute name")
    value: Any = sys.modules.get(module)
    if value is None:  # importing runs the module's code: a config never does that
        raise ConfigError(
            f"module {module!r} is not imported; import it before reading a config that "
            "names its functions"
        )
    for part in parts:
        try:
            value = getattr(value, part, None)
        except Exception:  # a property that fails
            value = None
        if value is None:
            raise ConfigError(f"module {module!r} has no attribute {qualname!r}")
    if not _within_allowed(getattr(value, "__module__", None) or ""):
        raise ConfigError(
            f"{module}:{qualname} is defined in {getattr(value, '__module__', None)!r}, outside "
            f"{', '.join(_ALLOWED_ROOTS)}"
        )
    return value


def _close(name: str, options: Any) -> str:
    matches = difflib.get_close_matches(name, list(options), n=3)
    return f" (did you mean {', '.join(repr(m) for m in matches)}?)" if matches else ""


def _decode(value: Any, path: str, where: str) -> Any:
    """A config value (found at ``where``, inside the layer at ``path``) as a Python value."""
    at = repr(where) if where else "<root>"
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        if value and all(
            isinstance(v, list | tuple)
            and len(v) == 2
            and isinstance(v[0], str)
            and isinstance(v[1], Mapping)
            and "type" in v[1]
            for v in value
        ):  # named children
            return tuple((k, _decode_layer(v, _join(path, k))) for k, v in value)
        field = where.rsplit(".", 1)[-1]
        return tuple(
            _decode(v, _join(path, f"{field}/{i}"), f"{where}[{i}]") for i, v in enumerate(value)
        )
    if not isinstance(value, Mapping):
        raise ConfigError(
            f"from_config: {at} holds a {type(value).__name__}; config values are dicts, lists, "
            "strings, numbers, booleans and null"
        )
    if "type" in value:  # a layer (its fields may be named like the tags below, e.g. dtype)
        return _decode_layer(value, path)
    if "initializer" in value:  # its arguments may be, too
        return _decode_initializer(value, path, where)
    tags = [t for t in _TAGS if t in value]
    if len(tags) != 1:
        raise ConfigError(
            f"from_config: {at} is a dict with keys {sorted(value)}; a config dict has one of "
            f"the keys {', '.join(map(repr, _TAGS))}"
        )
    tag = tags[0]
    extra = sorted(set(value) - {tag, "member"} if tag == "enum" else set(value) - {tag})
    if extra:
        raise ConfigError(f"from_config: {at}: unexpected keys {extra} next to {tag!r}")
    name = value[tag]
    if not isinstance(name, str):
        raise ConfigError(f"from_config: {at}: {tag!r} must be a string, given {_preview(name)}")
    try:
        if tag == "dtype":
            return _decode_dtype(name)
        if tag == "function":
            return _decode_function(name)
        return _decode_enum(name, value.get("member"))
    except ConfigError as e:
        raise ConfigError(f"from_config: {at}: {e}") from None


def _decode_dtype(name: str) -> Any:
    try:
        dtype = jnp.dtype(name)
        numeric = jnp.issubdtype(dtype, jnp.number) or jnp.issubdtype(dtype, jnp.bool_)
    except Exception:  # numpy's parser raises TypeError, ValueError, SyntaxError, ...
        numeric = False
    if not numeric or not name.isidentifier():
        raise ConfigError(
            f"unknown dtype {_preview(name)}; give a numeric dtype's name, e.g. 'float32' or "
            "'bfloat16'"
        ) from None
    canonical = dtype.name
    return getattr(jnp, canonical, None) or jnp.dtype(canonical)


def _decode_function(name: str) -> Any:
    if ":" not in name:
        table = [n for n in activations.__all__ if n != "get_activation"]
        if name not in table:
            raise ConfigError(
                f"unknown function {name!r}{_close(name, table)}; give an activation name "
                f"({', '.join(table)}) or 'module:name' under {', '.join(_ALLOWED_ROOTS)}"
            )
        return getattr(activations, name)
    module, _, qualname = name.partition(":")
    fn = _resolve(module, qualname)
    if not callable(fn) or isinstance(fn, type):
        raise ConfigError(f"{name!r} is not a function")
    return fn


def _decode_enum(name: str, member: Any) -> Any:
    module, _, qualname = name.partition(":")
    cls = _resolve(module, qualname)
    if not (isinstance(cls, type) and issubclass(cls, enum.Enum)):
        raise ConfigError(f"{name!r} is not an enum")
    if not isinstance(member, str) or member not in cls.__members__:
        raise ConfigError(
            f"{name} has no member {_preview(member)}; one of {', '.join(cls.__members__)}"
        )
    return cls[member]


def _decode_initializer(config: Mapping[str, Any], path: str, where: str) -> Any:
    at = repr(where) if where else "<root>"
    name = config["initializer"]
    args = {k: v for k, v in config.items() if k != "initializer"}
    if isinstance(name, str) and name in _PLAIN_INITIALIZERS:
        if args:
            raise ConfigError(
                f"from_config: {at}: {name!r} takes no arguments, given {sorted(args)}"
            )
        return _PLAIN_INITIALIZERS[name]
    known = _initializer_factories()
    if not isinstance(name, str) or name not in known:
        options = ["zeros", "ones", *known]
        raise ConfigError(
            f"from_config: {at}: unknown initializer {_preview(name)}"
            f"{_close(str(name), options)}; one of {', '.join(options)}"
        )
    decoded = {k: _decode(v, path, f"{where}.{k}") for k, v in args.items()}
    try:
        init = getattr(initializers, name)(**decoded)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"from_config: {at}: initializer {name!r}: {e}") from None
    if not _is_initializer_value(init):
        raise ConfigError(f"from_config: {at}: {name!r} does not make an initializer")
    return init


def _decode_layer(config: Mapping[str, Any], path: str) -> Layer:
    at = repr(path) if path else "<root>"
    by_name, _ = _registry()
    name = config.get("type")
    if not isinstance(name, str) or name not in by_name:
        raise ConfigError(
            f"from_config: unknown layer type {_preview(name)} at {at}"
            f"{_close(str(name), by_name)}; "
            "register your own layers with nn_jax.config.register_layer"
        )
    cls = by_name[name]
    fields = {f.name: f for f in sorted(_init_fields(cls), key=lambda f: bool(f.kw_only))}
    given = {k: v for k, v in config.items() if k != "type"}
    unknown = [k for k in given if k not in fields]
    if unknown:
        hints = "".join(_close(k, fields) for k in unknown)
        raise ConfigError(
            f"from_config: {name} at {at}: unknown field(s) {unknown}{hints}; its fields are "
            f"{', '.join(fields)}"
        )
    missing = [
        k for k, f in fields.items() if _default(f) is dataclasses.MISSING and k not in given
    ]
    if missing:
        raise ConfigError(f"from_config: {name} at {at}: missing required field(s) {missing}")
    values = {}
    for key, value in given.items():
        where = f"{path}.{key}" if path else key
        if isinstance(value, Mapping) and "type" in value:
            values[key] = _decode_layer(value, _join(path, key))
        else:
            values[key] = _decode(value, path, where)
    try:
        if _is_children(cls):
            return _build_children(cls, values)
        return cls(**values)
    except ConfigError as e:
        raise ConfigError(f"from_config: {name} at {at}: {e}") from None
    except (TypeError, ValueError) as e:
        raise ConfigError(f"from_config: {name} at {at}: invalid fields: {e}") from None


def _build_children(cls: type[Layer], values: dict[str, Any]) -> Layer:
    children = values.get("layers", ())
    if not isinstance(children, tuple) or not all(
        isinstance(c, tuple) and len(c) == 2 and isinstance(c[0], str) and isinstance(c[1], Layer)
        for c in children
    ):
        raise ConfigError("'layers' must be a list of [name, layer config] pairs")
    names = [k for k, _ in children]
    if len(set(names)) != len(names):
        raise ConfigError(f"child names repeat: {names}")
    return cls(dict(children))  # type: ignore[call-arg]


def from_config(config: Mapping[str, Any]) -> Layer:
    """The layer a :func:`to_config` dict describes (equal to the one it was written from).

    Fields left out take their defaults; the layer's own checks run as in its constructor.

    Raises:
        ConfigError: for an unknown layer type or field (with close matches), a missing
            required field, a value of the wrong shape, or a function outside nn_jax, jax and
            optax; the message names the layer path.
    """
    if not isinstance(config, Mapping) or "type" not in config:
        raise ConfigError(
            f"from_config: expected a layer config, a dict with a 'type' key, given "
            f"{type(config).__name__}: {_preview(config)}"
        )
    try:
        return _decode_layer(config, "")
    except RecursionError:
        raise ConfigError("from_config: the config is nested too deeply") from None


def from_json(text: str | bytes) -> Layer:
    """:func:`from_config` of JSON text (as written by :func:`to_json`).

    Raises:
        FileFormatError: ``text`` is not JSON (or not UTF-8).
        ConfigError: the JSON is not a valid layer config.
        ArgumentError: ``text`` is neither ``str`` nor ``bytes``.
    """
    if not isinstance(text, str | bytes | bytearray):
        raise ArgumentError(f"from_json: expected JSON text, given {type(text).__name__}")
    try:
        config = json.loads(text)
    except json.JSONDecodeError as e:
        raise FileFormatError(f"from_json: not valid JSON: {e}") from None
    except UnicodeDecodeError as e:
        raise FileFormatError(
            f"from_json: not valid JSON: byte {e.start} is not UTF-8 text"
        ) from None
    except (ValueError, RecursionError) as e:  # a 5,000-digit number; [[[[...]]]]
        why = str(e) or "nested too deeply"
        raise FileFormatError(f"from_json: not valid JSON: {why}") from None
    return from_config(config)

"""stax bridges: ``jax.example_libraries.stax`` layers as nn_jax layers, and the reverse.

A stax layer is a pair ``(init_fun, apply_fun)``: ``init_fun(rng, input_shape) -> (output_shape,
params)`` with params as nested tuples/lists, ``apply_fun(params, inputs, **kwargs)``.

* :func:`from_stax` makes any such pair an nn_jax layer (:class:`StaxLayer`); its params are the
  stax params as a plain nested dict keyed ``"0"``, ``"1"``, ... (tuple and list positions).
* :func:`to_stax` makes an nn_jax layer such a pair; its params are nn_jax's dict (stax code,
  ``stax.serial`` and ``stax.parallel`` included, only passes params through).
* The rest of this module mirrors the names old stax code imports (``Dense``, ``Conv``,
  ``Relu``, ``serial``, ``parallel``, ``FanOut``, ``FanInSum``, ``FanInConcat``, ``Flatten``,
  ``MaxPool``, ``AvgPool``, ``Dropout``, ...) as stax pairs that run nn_jax layers, so
  ``from nn_jax.compat import stax`` in place of ``from jax.example_libraries import stax`` runs
  old code on nn_jax blocks. Their params are nn_jax's dicts (``{"w": ..., "b": ...}``), not
  stax's tuples: code that unpacks ``W, b = params`` must index ``params["w"]`` instead.
  stax's ``BatchNorm`` (batch statistics always, no running statistics), ``SumPool`` and
  ``ConvTranspose`` (``lax.conv_transpose``: unflipped kernel, its own padding rule; nn_jax's
  ``ConvTranspose`` is PyTorch's adjoint of ``Conv``) have no counterpart here: keep stax's
  own, or wrap nn_jax's layer with :func:`to_stax` knowing its meaning.

stax layers have no train flag (stax's ``Dropout`` fixes its mode when built), nn_jax's have
one: a pair made by :func:`to_stax` takes ``train=`` as a keyword of its ``apply_fun`` (default
``False``, evaluation), which ``stax.serial`` and ``stax.parallel`` pass on to every child, and
stax's own layers ignore.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from nn_jax.combinators import Parallel, Sequential
from nn_jax.compat._foreign import foreign_errors, takes_keyword
from nn_jax.conv import Conv as _Conv
from nn_jax.core import Call, Lambda, Layer, Params, State
from nn_jax.dense import Dense as _Dense
from nn_jax.dense import Flatten as _Flatten
from nn_jax.errors import ArgumentError, ConfigError, ParamsError, ShapeError
from nn_jax.pooling import AvgPool as _AvgPool
from nn_jax.pooling import MaxPool as _MaxPool
from nn_jax.regularization import Dropout as _Dropout

__all__ = [
    "AvgPool",
    "Conv",
    "Dense",
    "Dropout",
    "Elu",
    "Exp",
    "FanInConcat",
    "FanInSum",
    "FanOut",
    "Flatten",
    "Gelu",
    "Identity",
    "LeakyRelu",
    "LogSoftmax",
    "MaxPool",
    "Relu",
    "Selu",
    "Sigmoid",
    "Softmax",
    "Softplus",
    "StaxLayer",
    "StaxPair",
    "Tanh",
    "elementwise",
    "from_stax",
    "parallel",
    "serial",
    "to_stax",
]

PRNGKey = jax.Array
Shape = Any
"""A stax shape: a tuple of ints, or a list/tuple of such tuples for several inputs."""


class StaxPair(NamedTuple):
    """A stax layer: ``(init_fun, apply_fun)``; a tuple, so ``init_fun, apply_fun = pair``."""

    init_fun: Callable[..., tuple[Shape, Any]]
    apply_fun: Callable[..., Any]


# --------------------------------------------------------------------------------------------
# stax params (nested tuples/lists) <-> nn_jax params (nested dicts keyed "0", "1", ...).


def _to_dict(tree: Any) -> Any:
    """stax params as nested dicts: a tuple/list becomes ``{"0": ..., "1": ...}`` (``()``:
    ``{}``); arrays stay leaves."""
    if isinstance(tree, tuple | list):
        return {str(i): _to_dict(v) for i, v in enumerate(tree)}
    return tree


def _from_dict(layer: Layer, tree: Any, template: Any, x_shape: Shape, path: str = "") -> Any:
    """``tree`` rebuilt into the tuples/lists of ``template`` (stax's params, as structs),
    checking each entry's presence and shape."""
    if isinstance(template, tuple | list):
        if not isinstance(tree, dict) or set(tree) != {str(i) for i in range(len(template))}:
            given = sorted(tree) if isinstance(tree, dict) else type(tree).__name__
            raise layer.error(
                ParamsError,
                f"params{' at ' + repr(path) if path else ''} must have keys "
                f"{[str(i) for i in range(len(template))]} (the stax layer's params), given "
                f"{given}; pass the params returned by this layer's init",
            )
        items = [
            _from_dict(layer, tree[str(i)], t, x_shape, f"{path}/{i}" if path else str(i))
            for i, t in enumerate(template)
        ]
        return type(template)(items)
    shape = getattr(template, "shape", None)
    if shape is not None and tuple(getattr(tree, "shape", ())) != tuple(shape):
        raise layer.error(
            ShapeError,
            f"parameter {path!r} has shape {tuple(getattr(tree, 'shape', ()))}, expected "
            f"{tuple(shape)}, the shape the stax init_fun gives for inputs of shape {x_shape}; "
            "check the input's shape, and pass the params this layer's init returned",
        )
    return tree


def _shape_of(x: Any) -> Shape:
    """stax's input shape for ``x``: a tuple of ints, or a list of them for a sequence."""
    if isinstance(x, tuple | list):
        return [_shape_of(v) for v in x]
    return tuple(int(d) for d in jnp.shape(x))


# --------------------------------------------------------------------------------------------
# stax -> nn_jax.


def _stax_promotes() -> Any:
    """A fresh ``jax.numpy_rank_promotion("allow")`` context (stax relies on promotion)."""
    return jax.numpy_rank_promotion("allow")


@dataclasses.dataclass(frozen=True)
class StaxLayer(Layer):
    """A stax ``(init_fun, apply_fun)`` pair as an nn_jax layer (see :func:`from_stax`).

    Args:
        init_fun: ``init_fun(rng, input_shape) -> (output_shape, params)``.
        apply_fun: ``apply_fun(params, inputs, **kwargs) -> outputs``.

    ``init(key, x)`` calls ``init_fun(key, x.shape)`` (a list of shapes for a tuple/list
    input) and returns the params as nested dicts keyed ``"0"``, ``"1"``, ... (a layer without
    params, stax's ``()``, gives ``{}``); the state is always ``{}``. ``apply`` rebuilds the
    tuples (checked against ``init_fun``'s params for this input, traced with
    ``jax.eval_shape``) and calls ``apply_fun(params, x, rng=rng)``, plus ``train=train`` when
    ``apply_fun`` takes a ``train`` keyword or ``**kwargs`` (stax's layers ignore it).
    stax's own layers rely on NumPy rank promotion (``Dense`` adds a ``(F,)`` bias to
    ``(B, F)``), so the wrapped functions run with ``jax.numpy_rank_promotion("allow")``, also
    where a strict ``"raise"`` is set globally.
    """

    init_fun: Callable[[Any], Any]
    apply_fun: Callable[[Any], Any]

    def init(self, key: PRNGKey, x: Any) -> tuple[Params, State]:
        init_fun: Callable[..., Any] = self.init_fun
        with foreign_errors(self, "stax init_fun", x), _stax_promotes():
            _, params = init_fun(key, _shape_of(x))
        return self._as_params(params), {}

    def _as_params(self, params: Any) -> Params:
        converted = _to_dict(params)
        if not isinstance(converted, dict):
            raise self.error(
                ParamsError,
                f"init_fun must return params as a tuple or list, given {type(params).__name__}",
            )
        return converted

    def compute(self, params: Params, state: State, x: Any, call: Call) -> tuple[Any, State]:
        shape = _shape_of(x)
        init_fun: Callable[..., Any] = self.init_fun
        apply_fun: Callable[..., Any] = self.apply_fun
        with foreign_errors(self, "stax init_fun", x), _stax_promotes():
            template = jax.eval_shape(lambda k: init_fun(k, shape)[1], jax.random.key(0))
        stax_params = _from_dict(self, params, template, shape)
        kwargs: dict[str, Any] = {}
        if takes_keyword(apply_fun, "rng", if_unknown=False):
            kwargs["rng"] = call.rng
        if takes_keyword(apply_fun, "train", if_unknown=False):
            kwargs["train"] = call.train
        with foreign_errors(self, "stax apply_fun", x), _stax_promotes():
            return apply_fun(stax_params, x, **kwargs), {}


def from_stax(pair: tuple[Callable[..., Any], Callable[..., Any]]) -> Layer:
    """A stax layer ``(init_fun, apply_fun)`` as an nn_jax layer.

    A pair made by :func:`to_stax` (without a fixed state) gives back its nn_jax layer itself;
    any other pair gives a :class:`StaxLayer`.

    >>> import jax, jax.numpy as jnp
    >>> from jax.example_libraries import stax
    >>> layer = from_stax(stax.serial(stax.Dense(4), stax.Relu, stax.Dense(2)))
    >>> params, _ = layer.init(jax.random.key(0), jnp.zeros((3, 5)))
    >>> jax.tree.map(jnp.shape, params)
    {'0': {'0': (5, 4), '1': (4,)}, '1': {}, '2': {'0': (4, 2), '1': (2,)}}
    >>> layer(params, jnp.ones((3, 5))).shape
    (3, 2)
    """
    if not (isinstance(pair, tuple | list) and len(pair) == 2 and all(map(callable, pair))):
        raise ArgumentError(
            "from_stax: expected a stax layer, a pair (init_fun, apply_fun) of functions, "
            f"given {type(pair).__name__}"
        )
    inner = getattr(pair[1], "_nn_jax_layer", None)
    if isinstance(inner, Layer):
        return inner
    return StaxLayer(pair[0], pair[1])


# --------------------------------------------------------------------------------------------
# nn_jax -> stax.


def _structs(input_shape: Shape, dtype: Any) -> Any:
    if isinstance(input_shape, tuple | list) and all(
        isinstance(d, int) and not isinstance(d, bool) for d in input_shape
    ):
        return jax.ShapeDtypeStruct(tuple(input_shape), dtype)
    if isinstance(input_shape, tuple | list):
        return tuple(_structs(s, dtype) for s in input_shape)
    raise ArgumentError(
        f"to_stax: init_fun takes an input shape (a tuple of ints, or a list of such tuples "
        f"for several inputs), given {input_shape!r}"
    )


def _out_shape(tree: Any) -> Shape:
    if isinstance(tree, tuple | list):
        return [_out_shape(v) for v in tree]
    return tuple(tree.shape)


def to_stax(layer: Layer, *, state: State | None = None, dtype: Any = jnp.float32) -> StaxPair:
    """An nn_jax layer as a stax pair ``(init_fun, apply_fun)``.

    Args:
        layer: the nn_jax layer.
        state: for a stateful layer (``BatchNorm``), its state, held fixed: stax has no state,
            so such a layer runs in evaluation mode only (``train=True`` is an error). Without
            it, a stateful layer's ``init_fun`` raises a ``ConfigError``.
        dtype: the input dtype ``init_fun`` assumes (stax shapes carry no dtype).

    Returns:
        ``init_fun(rng, input_shape) -> (output_shape, params)``: ``params`` as
        ``layer.init`` makes them; ``output_shape`` from ``jax.eval_shape`` of the apply (a
        tuple of ints, or a list of them for a tuple output). ``apply_fun(params, inputs, *,
        rng=None, train=False, **kwargs)`` is ``layer.apply(params, state, inputs, rng=rng,
        train=train)[0]`` (other keywords, which ``stax.serial`` passes to every child, are
        ignored).

    >>> import jax, jax.numpy as jnp
    >>> from jax.example_libraries import stax as jax_stax
    >>> from nn_jax import Dense
    >>> init_fun, apply_fun = jax_stax.serial(to_stax(Dense(4)), jax_stax.Relu)
    >>> out_shape, params = init_fun(jax.random.key(0), (3, 5))
    >>> out_shape, jax.tree.map(jnp.shape, params)
    ((3, 4), [{'b': (4,), 'w': (5, 4)}, ()])
    """
    if not isinstance(layer, Layer):
        raise ArgumentError(
            f"to_stax: layer must be an nn_jax layer instance, given {type(layer).__name__}"
        )
    fixed = state

    def init_fun(rng: PRNGKey, input_shape: Shape) -> tuple[Shape, Params]:
        x = _structs(input_shape, dtype)
        params, init_state = layer.init(rng, x)
        if jax.tree.leaves(init_state) and fixed is None:
            raise layer.error(
                ConfigError,
                "this layer has state, which stax cannot carry; pass the state to "
                "to_stax(layer, state=...) to run it in evaluation mode, or train it with "
                "nn_jax's own steps",
            )
        run_state = init_state if fixed is None else fixed
        y = jax.eval_shape(lambda p, s, v: layer.apply(p, s, v)[0], params, run_state, x)
        return _out_shape(y), params

    def apply_fun(
        params: Params,
        inputs: Any,
        *,
        rng: PRNGKey | None = None,
        train: bool = False,
        **kwargs: Any,
    ) -> Any:
        del kwargs  # stax passes every keyword to every layer; unknown ones are ignored
        if fixed is not None and train:
            raise layer.error(
                ConfigError,
                "a stateful layer under stax runs in evaluation mode only (its state is "
                "fixed); call apply_fun with train=False",
            )
        if isinstance(inputs, list):
            inputs = tuple(inputs)
        return layer.apply(params, fixed or {}, inputs, rng=rng, train=train)[0]

    if fixed is None:
        apply_fun._nn_jax_layer = layer  # type: ignore[attr-defined]
    return StaxPair(init_fun, apply_fun)


# --------------------------------------------------------------------------------------------
# What old stax code imports, on nn_jax blocks.


def _glorot(in_axis: int = -2, out_axis: int = -1) -> Callable[..., jax.Array]:
    return jax.nn.initializers.glorot_normal(in_axis=in_axis, out_axis=out_axis)


def Dense(
    out_dim: int,
    W_init: Callable[..., jax.Array] | None = None,
    b_init: Callable[..., jax.Array] | None = None,
) -> StaxPair:
    """stax's ``Dense``: nn_jax's :class:`~nn_jax.Dense`, with stax's initializers (Glorot
    normal ``w``, normal(0.01) ``b``). Params ``{"w": (in, out_dim), "b": (out_dim,)}``."""
    return to_stax(
        _Dense(
            out_dim,
            w_init=W_init or _glorot(),
            b_init=b_init or jax.nn.initializers.normal(),
        )
    )


def Conv(
    out_chan: int,
    filter_shape: tuple[int, ...],
    strides: tuple[int, ...] | None = None,
    padding: str | Sequence[tuple[int, int]] = "VALID",
    W_init: Callable[..., jax.Array] | None = None,
    b_init: Callable[..., jax.Array] | None = None,
) -> StaxPair:
    """stax's ``Conv`` (NHWC input, HWIO kernel): nn_jax's :class:`~nn_jax.Conv` with stax's
    defaults (``VALID``, Glorot normal kernel, normal(1e-6) bias). Params
    ``{"w": filter_shape + (in, out_chan), "b": (out_chan,)}`` (stax's bias is
    ``(1, 1, 1, out_chan)``)."""
    return to_stax(
        _Conv(
            out_chan,
            tuple(filter_shape),
            strides=tuple(strides or (1,) * len(filter_shape)),
            padding=padding if isinstance(padding, str) else tuple(map(tuple, padding)),
            w_init=W_init or _glorot(),
            b_init=b_init or jax.nn.initializers.normal(1e-6),
        )
    )


def _check_spec(name: str, spec: str | None) -> None:
    if spec is not None and (spec[0] != "N" or spec[-1] != "C"):
        raise ConfigError(
            f"stax {name}: only channels-last layouts ('NHWC', spec=None) are supported, given "
            f"spec={spec!r}; transpose the input"
        )


def MaxPool(
    window_shape: tuple[int, ...],
    strides: tuple[int, ...] | None = None,
    padding: str = "VALID",
    spec: str | None = None,
) -> StaxPair:
    """stax's ``MaxPool`` (channels last): nn_jax's :class:`~nn_jax.MaxPool`."""
    _check_spec("MaxPool", spec)
    return to_stax(
        _MaxPool(
            tuple(window_shape),
            strides=tuple(strides or (1,) * len(window_shape)),
            padding=padding,
        )
    )


def AvgPool(
    window_shape: tuple[int, ...],
    strides: tuple[int, ...] | None = None,
    padding: str = "VALID",
    spec: str | None = None,
) -> StaxPair:
    """stax's ``AvgPool`` (channels last): nn_jax's :class:`~nn_jax.AvgPool` with
    ``count_include_pad=False``: stax divides each window's sum by the number of input
    elements in it, padding excluded (PyTorch: ``nn.AvgPool2d(count_include_pad=False)``)."""
    _check_spec("AvgPool", spec)
    return to_stax(
        _AvgPool(
            tuple(window_shape),
            strides=tuple(strides or (1,) * len(window_shape)),
            padding=padding,
            count_include_pad=False,
        )
    )


def elementwise(fun: Callable[..., Any], **fun_kwargs: Any) -> StaxPair:
    """stax's ``elementwise``: ``fun(x, **fun_kwargs)`` as a parameter-free nn_jax
    :class:`~nn_jax.core.Lambda` layer."""
    return to_stax(Lambda(functools.partial(fun, **fun_kwargs) if fun_kwargs else fun))


Tanh = elementwise(jnp.tanh)
Relu = elementwise(jax.nn.relu)
Exp = elementwise(jnp.exp)
LogSoftmax = elementwise(jax.nn.log_softmax, axis=-1)
Softmax = elementwise(jax.nn.softmax, axis=-1)
Softplus = elementwise(jax.nn.softplus)
Sigmoid = elementwise(jax.nn.sigmoid)
Elu = elementwise(jax.nn.elu)
LeakyRelu = elementwise(jax.nn.leaky_relu)
Selu = elementwise(jax.nn.selu)
Gelu = elementwise(jax.nn.gelu)

Flatten = to_stax(_Flatten())
"""stax's ``Flatten`` (a pair, not a constructor): nn_jax's :class:`~nn_jax.Flatten`."""


def _identity(x: Any) -> Any:
    return x


Identity = elementwise(_identity)
"""stax's ``Identity`` (a pair)."""


def _fan_out(x: Any, num: int) -> tuple[Any, ...]:
    return (x,) * num


def FanOut(num: int) -> StaxPair:
    """stax's ``FanOut(num)``: the input repeated ``num`` times (a tuple; its shape a list)."""
    return to_stax(Lambda(functools.partial(_fan_out, num=num)))


def _fan_in_sum(xs: Sequence[Any]) -> Any:
    return functools.reduce(jnp.add, xs)


FanInSum = elementwise(_fan_in_sum)
"""stax's ``FanInSum`` (a pair): the sum of a sequence of inputs of one shape."""


def _concatenate(xs: Sequence[Any], axis: int) -> Any:
    return jnp.concatenate(xs, axis)


def FanInConcat(axis: int = -1) -> StaxPair:
    """stax's ``FanInConcat(axis)``: a sequence of inputs concatenated along ``axis``."""
    return to_stax(Lambda(functools.partial(_concatenate, axis=axis)))


def _dropout_pair(rate: float, mode: str) -> StaxPair:
    layer = _Dropout(1.0 - rate)
    init_fun, _ = to_stax(layer)
    train = mode == "train"

    def apply_fun(params: Params, inputs: Any, *, rng: PRNGKey | None = None, **kwargs: Any) -> Any:
        del kwargs  # the mode is fixed when built, as in stax
        return layer.apply(params, {}, inputs, rng=rng, train=train)[0]

    return StaxPair(init_fun, apply_fun)


def Dropout(rate: float, mode: str = "train") -> StaxPair:
    """stax's ``Dropout``, with stax's meanings kept for old code: ``rate`` is the *keep*
    probability (jax-ml/jax#849) and ``mode`` (``"train"`` or ``"test"``) is fixed when built.
    Runs nn_jax's :class:`~nn_jax.Dropout` with drop probability ``1 - rate``; in
    ``"train"`` mode ``apply_fun`` needs ``rng=``. In new code use ``to_stax(nn_jax.Dropout(p))``
    (``p`` = drop probability, mode from ``apply_fun``'s ``train=``)."""
    if mode not in ("train", "test"):
        raise ConfigError(f"stax Dropout: mode must be 'train' or 'test', given {mode!r}")
    return _dropout_pair(rate, mode)


def serial(*layers: tuple[Callable[..., Any], Callable[..., Any]]) -> StaxPair:
    """stax's ``serial``: an nn_jax :class:`~nn_jax.Sequential` of the layers (each made an
    nn_jax layer by :func:`from_stax`); params keyed by slot ``"0"``, ``"1"``, ... (children
    without params are left out, as in ``Sequential``)."""
    return to_stax(Sequential(*(from_stax(pair) for pair in layers)))


def parallel(*layers: tuple[Callable[..., Any], Callable[..., Any]]) -> StaxPair:
    """stax's ``parallel``: an nn_jax :class:`~nn_jax.Parallel` of the layers; the i-th layer
    gets the i-th input of a sequence, and the outputs come as a tuple."""
    return to_stax(Parallel(*(from_stax(pair) for pair in layers)))

"""Initialization presets: initialize any model the way PyTorch does by default.

A port of a PyTorch experiment reproduces only if the parameters start from the same
distributions. :func:`pytorch_defaults` returns a copy of a model whose layers draw their
parameters as PyTorch's modules do in ``reset_parameters``; the params it makes have the same
tree, so they train and apply with the original model too::

    params, state = pytorch_defaults(model).init(key, x)

What each layer gets (``fan_in`` as the layer passes it, see :mod:`nn_jax.initializers`):

- ``Dense`` (``nn.Linear``), ``Conv`` (``nn.Conv*d``), ``ConvTranspose``
  (``nn.ConvTranspose*d``): ``w`` by ``kaiming_uniform_(a=sqrt(5))``, that is
  ``U(±1/sqrt(fan_in))`` = ``variance_scaling(1/3, "fan_in", "uniform")``; ``b`` by
  ``uniform_fan_in()``, ``U(±1/sqrt(fan_in))``. For ``ConvTranspose`` both use PyTorch's fan-in
  ``prod(kernel_size) * F / groups``.
- ``SimpleRNNCell``, ``LSTMCell``, ``GRUCell`` (``nn.RNN``, ``nn.LSTM``, ``nn.GRU``): every
  weight and bias ``U(±1/sqrt(H))`` (``uniform_symmetric``). nn_jax's ``b`` is PyTorch's
  ``bias_ih + bias_hh``, a sum of two draws (``terms=2``); a GRU's ``n`` block of ``b`` is
  ``bias_ih`` alone and its ``b_hn`` is ``bias_hh``'s ``n`` block (``terms=(2, 2, 1)``, one
  draw). ``LSTMCell``'s ``forget_bias`` becomes 0.
- ``Embedding`` (``nn.Embedding``): ``normal(stddev=1.0)``.
- ``MultiHeadAttention`` (``nn.MultiheadAttention``): ``w_q``, ``w_k``, ``w_v`` by
  ``xavier_uniform_`` of the packed ``(3E, E)`` in-projection, ``U(±sqrt(6 / 4E))`` =
  ``variance_scaling(0.5, "fan_avg", "uniform")`` on each ``(E, E)`` view; ``w_o`` as an
  ``nn.Linear`` weight (``w_o_init``); every bias zero.

Normalization layers already start as PyTorch's (scale 1, bias 0); other layers are kept.

How the copy is made: :func:`map_layers` rebuilds every layer reachable through dataclass fields
(combinators' ``layers``, an ``RNN``'s ``cell``, ``Bidirectional``'s directions) with
``dataclasses.replace``. Many :class:`~nn_jax.core.Block` layers (the model zoo, the transformer
blocks) build their children inside ``forward`` from hyper-parameters (``MLP`` makes
``Dense(width)`` there), out of reach of a copy; so a ``Block`` comes back wrapped in
:class:`MapLayers`, whose ``forward`` runs the block's own ``forward`` and maps each child as it
is called. The wrapper adds no level to the params tree.

Limits: PyTorch's ``nn.MultiheadAttention`` with ``kdim``/``vdim`` different from ``embed_dim``
draws ``q``, ``k``, ``v`` as three separate ``xavier_uniform_`` matrices; the preset always uses
the packed bound. Children of a non-``Block`` layer that the layer makes itself (not a field) and
a ``Block``'s own parameters (``scope.param``, as in the graph layers) are not mapped.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable
from typing import Any

from nn_jax import initializers
from nn_jax.attention import MultiHeadAttention
from nn_jax.conv import Conv, ConvTranspose
from nn_jax.core import Block, Layer, Scope, as_layer
from nn_jax.dense import Dense
from nn_jax.embedding import Embedding
from nn_jax.recurrent import GRUCell, LSTMCell, SimpleRNNCell

__all__ = ["MapLayers", "map_layers", "pytorch_defaults", "pytorch_layer_defaults"]

LayerMap = Callable[[Layer], Layer]

_TORCH_WEIGHT = initializers.variance_scaling(1 / 3, "fan_in", "uniform")
"""``kaiming_uniform_(a=sqrt(5))``: gain ``sqrt(2 / (1 + 5))``, bound ``gain * sqrt(3 / fan_in)
= 1 / sqrt(fan_in)``, variance ``1 / (3 fan_in)``."""
_TORCH_PACKED_QKV = initializers.variance_scaling(0.5, "fan_avg", "uniform")
"""``xavier_uniform_`` of the packed ``(3E, E)`` matrix, bound ``sqrt(6 / (E + 3E))``, drawn on
each ``(E, E)`` view (whose ``fan_avg`` is ``E``): variance ``0.5 / E``."""


def pytorch_layer_defaults(layer: Layer) -> Layer:
    """``layer`` with PyTorch's default initializers, if it is a layer PyTorch has (see the
    module docstring); any other layer unchanged. Does not look into children.

    >>> pytorch_layer_defaults(Dense(3))
    Dense(features=3, w_init=variance_scaling(scale=0.3333333333333333, mode='fan_in', \
distribution='uniform'), b_init=uniform_fan_in())
    """
    replace = dataclasses.replace
    if isinstance(layer, Dense | Conv | ConvTranspose):
        return replace(layer, w_init=_TORCH_WEIGHT, b_init=initializers.uniform_fan_in())
    if isinstance(layer, SimpleRNNCell | LSTMCell | GRUCell):
        bound = 1 / math.sqrt(layer.hidden)
        weight = initializers.uniform_symmetric(bound)
        cell: Any = replace(layer, w_i_init=weight, w_h_init=weight)
        if isinstance(layer, GRUCell):
            bias = initializers.uniform_symmetric(bound, terms=(2, 2, 1))
            return replace(cell, b_init=bias, b_hn_init=weight)
        cell = replace(cell, b_init=initializers.uniform_symmetric(bound, terms=2))
        return replace(cell, forget_bias=0.0) if isinstance(layer, LSTMCell) else cell
    if isinstance(layer, Embedding):
        return replace(layer, table_init=initializers.normal(1.0))
    if isinstance(layer, MultiHeadAttention):
        return replace(
            layer,
            w_init=_TORCH_PACKED_QKV,
            w_o_init=_TORCH_WEIGHT,
            b_init=initializers.zeros,
        )
    return layer


def _map_value(value: Any, fn: LayerMap) -> Any:
    """``value`` with every layer in it (itself, or inside tuples and lists) rebuilt."""
    if isinstance(value, Layer):
        return _map_fields(value, fn)
    if type(value) in (tuple, list):
        mapped = [_map_value(v, fn) for v in value]
        if any(m is not v for m, v in zip(mapped, value, strict=True)):
            return type(value)(mapped)
    return value


def _map_fields(layer: Layer, fn: LayerMap) -> Layer:
    """``fn`` of ``layer`` rebuilt with its fields mapped (no ``Block`` wrapping)."""
    if dataclasses.is_dataclass(layer) and not isinstance(layer, MapLayers):
        changes = {}
        for field in dataclasses.fields(layer):
            old = getattr(layer, field.name)
            new = _map_value(old, fn)
            if new is not old:
                changes[field.name] = new
        if changes:
            # A copy with the new children, set as unpickling does: some layers have their own
            # __init__ (the combinators take children positionally), so replace() cannot
            # rebuild them; the children were validated when the layer was made.
            layer = copy.copy(layer)
            for name, value in changes.items():
                object.__setattr__(layer, name, value)
    return fn(layer)


def map_layers(layer: Layer, fn: LayerMap) -> Layer:
    """``layer`` with ``fn`` applied to every layer in it, the children that blocks build in
    ``forward`` included.

    Layers reachable through dataclass fields are rebuilt with ``dataclasses.replace`` (inner
    ones first); a :class:`~nn_jax.core.Block` comes back wrapped in :class:`MapLayers`, which
    maps the children its ``forward`` calls as it runs. The params tree is unchanged.

    Args:
        layer: the model.
        fn: ``fn(layer) -> layer`` for one layer, not looking into children (it is called on
            each); it must keep the params' tree and should return ``layer`` itself for layers
            it does not change. A module-level function, so the result stays hashable and
            picklable.

    Returns:
        The mapped model (a :class:`MapLayers` when ``layer`` is a ``Block``).
    """
    if isinstance(layer, MapLayers) and layer.fn == fn:
        return layer
    mapped = _map_fields(layer, fn)
    return MapLayers(mapped, fn) if isinstance(mapped, Block) else mapped


def pytorch_defaults(layer: Layer) -> Layer:
    """``layer`` initialized as PyTorch initializes its modules by default (module docstring).

    ``map_layers(layer, pytorch_layer_defaults)``. The returned layer's params have the tree of
    ``layer``'s and work with it; only ``init`` differs.

    >>> import jax, jax.numpy as jnp
    >>> from nn_jax import Sequential
    >>> model = pytorch_defaults(Sequential(Dense(100), jax.nn.relu, Dense(10)))
    >>> params, _ = model.init(jax.random.key(0), jnp.zeros((1, 40)))
    >>> bool(jnp.abs(params["0"]["b"]).max() <= 1 / jnp.sqrt(40))
    True
    """
    return map_layers(layer, pytorch_layer_defaults)


class _MappingScope:
    """A :class:`~nn_jax.core.Scope` that maps each child layer before running it."""

    def __init__(self, scope: Scope, fn: LayerMap) -> None:
        self._scope = scope
        self._fn = fn

    def __call__(self, name: str, layer: Any, x: Any, *, side: Any = None) -> Any:
        return self._scope(name, map_layers(as_layer(layer), self._fn), x, side=side)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._scope, name)


@dataclasses.dataclass(frozen=True)
class MapLayers(Block):
    """``layer`` (a :class:`~nn_jax.core.Block`) with ``fn`` applied to each child it calls.

    Made by :func:`map_layers`. Its ``forward`` is ``layer``'s, run with a scope that replaces
    each child ``c`` by ``map_layers(c, fn)``; children keep their names, so the params tree is
    ``layer``'s.

    Args:
        layer: the block.
        fn: the per-layer map (see :func:`map_layers`).
    """

    layer: Block
    fn: LayerMap

    def forward(self, scope: Scope, x: Any) -> Any:
        return self.layer.forward(_MappingScope(scope, self.fn), x)  # type: ignore[arg-type]

"""Graph models: a node classifier (``GCN``) and a graph classifier (``GraphClassifier``).

Both take a :class:`~nn_jax.data.GraphBatch` (see :func:`~nn_jax.data.batch_graphs`).

>>> import jax, numpy as np
>>> from nn_jax.data import Graph, batch_graphs
>>> g = batch_graphs([Graph(np.ones((3, 5)), np.array([0, 1]), np.array([1, 2]))], max_nodes=4)
>>> model = GCN((16, 2))
>>> params, _ = model.init(jax.random.key(0), g)
>>> jax.tree.map(np.shape, params)
{'conv_0': {'b': (16,), 'linear': {'w': (5, 16)}}, 'conv_1': {'b': (2,), 'linear': {'w': (16, 2)}}}
>>> model(params, g).shape
(4, 2)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import KW_ONLY
from typing import Any

from nn_jax.activations import get_activation
from nn_jax.core import Activation, Array, Block, Layer, Scope, Size, Sizes
from nn_jax.data.graph_batch import GraphBatch
from nn_jax.dense import Dense
from nn_jax.errors import ConfigError
from nn_jax.graph import GCNConv, GraphPool

__all__ = ["GCN", "GraphClassifier"]


def _convolve(
    scope: Scope,
    g: GraphBatch,
    convs: tuple[Layer, ...],
    activation: Callable[[Array], Array],
    activate_last: bool,
) -> Array:
    """Run ``convs`` as children ``conv_0, conv_1, ...``; the activation between them."""
    h: Any = None
    for i, conv in enumerate(convs):
        # conv_0 gets the input as given: a wrong input fails there, with the layer's error.
        h = scope(f"conv_{i}", conv, g if i == 0 else g._replace(nodes=h))
        if activate_last or i < len(convs) - 1:
            h = activation(h)
    return h


@dataclasses.dataclass(frozen=True)
class GCN(Block):
    """A graph convolutional network for node classification (Kipf & Welling, 2017).

    ``GCNConv(widths[0])``, activation, ..., ``GCNConv(widths[-1])``: the last width is the number
    of classes and the output is per-node logits. ``GCN((16, C))`` is the paper's two-layer model.

    Args:
        widths: output sizes of the graph convolutions.
        activation: between them (a callable or a name such as ``"relu"``).

    Input: a :class:`~nn_jax.data.GraphBatch` with ``nodes (N, F)``. Output ``(N, widths[-1])``
    (0 on padding nodes). Params (see :class:`~nn_jax.graph.GCNConv`):
    ``{"conv_0": {"linear": {"w": (F, widths[0])}, "b": (widths[0],)}, ...}``.
    """

    widths: Sizes
    _: KW_ONLY
    activation: Activation = "relu"

    def forward(self, scope: Scope, x: Any) -> Array:
        convs = tuple(GCNConv(width) for width in self.widths)
        return _convolve(scope, x, convs, get_activation(self.activation), activate_last=False)


@dataclasses.dataclass(frozen=True)
class GraphClassifier(Block):
    """Graph classification: graph layers, a readout per graph, a linear head.

    ``convs[0]``, activation, ..., ``convs[-1]``, activation, then ``GraphPool(readout)`` and
    ``Dense(num_classes)``.

    Args:
        convs: the graph layers, run in order, each mapping a ``GraphBatch`` to node features
            (the next one gets them as ``nodes``): e.g. ``(GCNConv(32), GCNConv(32))``,
            ``(GATConv(8, heads=4), GATConv(8, heads=4))``, ``SAGEConv`` or ``MessagePassing``.
        num_classes: output size (logits).
        readout: ``"sum"``, ``"mean"`` or ``"max"`` over each graph's nodes.
        activation: after each graph layer (a callable or a name).

    Input: a :class:`~nn_jax.data.GraphBatch` with ``nodes (N, F)`` and ``G`` graph slots.
    Output ``(G, num_classes)`` logits (padding graph slots give the head's bias: mask them in
    the loss with ``graph_mask``). Params:
    ``{"conv_0": <convs[0]'s params>, ..., "head": {"w": (F', num_classes), "b": (num_classes,)}}``.

    >>> import jax, numpy as np
    >>> from nn_jax.data import Graph, batch_graphs
    >>> from nn_jax.graph import SAGEConv
    >>> g = batch_graphs([Graph(np.ones((3, 5)), np.array([0, 1]), np.array([1, 2]))])
    >>> model = GraphClassifier((SAGEConv(8), SAGEConv(8)), 2, readout="max")
    >>> params, _ = model.init(jax.random.key(0), g)
    >>> jax.tree.map(np.shape, params["conv_1"]), jax.tree.map(np.shape, params["head"])
    ({'neighbours': {'b': (8,), 'w': (8, 8)}, 'self': {'w': (8, 8)}}, {'b': (2,), 'w': (8, 2)})
    >>> model(params, g).shape
    (1, 2)
    """

    convs: tuple[Layer, ...]
    num_classes: Size
    _: KW_ONLY
    readout: str = "mean"
    activation: Activation = "relu"

    def __post_init__(self) -> None:
        convs = tuple(self.convs) if isinstance(self.convs, list | tuple) else None
        if not convs or not all(isinstance(c, Layer) for c in convs):
            raise ConfigError(
                "GraphClassifier: convs must be a non-empty tuple of graph layers, e.g. "
                f"(GCNConv(32), GCNConv(32)), given {self.convs!r}"
            )
        object.__setattr__(self, "convs", convs)
        GraphPool(self.readout)

    def forward(self, scope: Scope, x: Any) -> Array:
        act = get_activation(self.activation)
        h = _convolve(scope, x, self.convs, act, activate_last=True)
        pooled = scope("readout", GraphPool(self.readout), x._replace(nodes=h))
        return scope("head", Dense(self.num_classes), pooled)

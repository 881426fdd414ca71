"""Graph neural-network layers: message passing and readout over a padded ``GraphBatch``.

The input of every layer here is a :class:`~nn_jax.data.GraphBatch`: graphs packed into
fixed-size arrays with masks by :func:`~nn_jax.data.batch_graphs`. The format is described in
:mod:`nn_jax.data.graph_batch`; ``Graph``, ``GraphBatch`` and ``batch_graphs`` are re-exported
here and at the top level. The graph travels as the layer's input ``x``, not as a side input:
it *is* what the layer computes on.

**Layers** return new node features ``(N, F')`` (not a new batch: the graph structure does not
change, and the features are what the next step needs). Padding nodes' outputs are 0, and
padding edges never reach a real node. To chain layers, put the features back:
``g = g._replace(nodes=h)``; the models in :mod:`nn_jax.models.gnn` do this. :class:`GraphPool`
reads out one vector per graph, ``(G, F)``.

**Index values are checked**: the senders and receivers of the real edges must lie in
``[0, N)`` and the graph of each real node in ``[0, G)`` (padding slots may point anywhere). A
wrong index would otherwise gather a clamped node or be dropped by the scatter, silently; here it
is a :class:`~nn_jax.errors.ValueRangeError` naming the layer path, the range and the values
given - at once for a concrete batch, under ``jax.jit`` in checked mode (:func:`nn_jax.checked`).
:func:`~nn_jax.data.batch_graphs` already checks each graph's indices on the host.

The convolutions build their projections on :class:`~nn_jax.dense.Dense` children, so they take
``Dense``'s ``dtype`` (computation), ``param_dtype`` (storage) and ``precision`` options and pass
them on.

>>> import jax, numpy as np
>>> from nn_jax.data import Graph, batch_graphs
>>> triangle = Graph(np.ones((3, 2)), senders=np.array([0, 1, 2]), receivers=np.array([1, 2, 0]))
>>> g = batch_graphs([triangle], max_nodes=4, max_edges=4)
>>> params, _ = GCNConv(4).init(jax.random.key(0), g)
>>> jax.tree.map(np.shape, params)
{'b': (4,), 'linear': {'w': (2, 4)}}
>>> GCNConv(4)(params, g).shape
(4, 4)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import KW_ONLY
from typing import Any

import jax
import jax.numpy as jnp

from nn_jax import initializers
from nn_jax._options import DtypeOptions
from nn_jax.checks import check_in_range
from nn_jax.core import (
    Array,
    Block,
    Call,
    Initializer,
    Layer,
    NonNegative,
    ParameterFree,
    Scope,
    Size,
    tap,
)
from nn_jax.data.graph_batch import Graph, GraphBatch, batch_graphs
from nn_jax.dense import Dense, add_bias
from nn_jax.errors import ConfigError, ShapeError
from nn_jax.segment import segment_max, segment_mean, segment_softmax, segment_sum

# Graph, GraphBatch and batch_graphs are defined in nn_jax.data.graph_batch (host-side data, no
# layers); the layer family re-exports them, as its input format, for the top-level namespace.
__all__ = [
    "GATConv",
    "GCNConv",
    "Graph",
    "GraphBatch",
    "GraphPool",
    "MessagePassing",
    "SAGEConv",
    "batch_graphs",
]

default_graph_init: Initializer = initializers.glorot_uniform()
"""Glorot uniform, the initializer of the GCN and GAT papers (and PyTorch Geometric)."""

_REDUCERS: dict[str, Callable[..., Array]] = {
    "sum": segment_sum,
    "mean": segment_mean,
    "max": segment_max,
}


# --------------------------------------------------------------------------------------------
# Helpers shared by the layers.


_INDICES: dict[str, tuple[str, str, str]] = {
    # index field: (mask field, the real slots it is read in, the slots it indexes)
    "senders": ("edge_mask", "real edges", "node"),
    "receivers": ("edge_mask", "real edges", "node"),
    "node_graph": ("node_mask", "real nodes", "graph"),
}


def _check_graph(
    layer: Layer, g: Any, indices: tuple[str, ...] = ("senders", "receivers")
) -> GraphBatch:
    """``g`` with its shapes and dtypes checked (errors name ``layer``), leaves as JAX arrays.

    The values of the index fields ``indices`` are checked too, in their real slots (see the
    module docstring). ``jax.ShapeDtypeStruct`` leaves (an ``init`` from shapes) are kept as
    they are, and not value-checked.
    """
    if not isinstance(g, GraphBatch):
        given = f"an array of shape {tuple(g.shape)}" if hasattr(g, "shape") else type(g).__name__
        raise layer.error(
            ShapeError,
            f"expected a GraphBatch as input (pack graphs with nn_jax.data.batch_graphs), given "
            f"{given}",
        )
    layer.check_rank(g.nodes, 2, 2, what="GraphBatch.nodes (N, F)")
    kinds = {
        "senders": "int",
        "receivers": "int",
        "node_graph": "int",
        "edge_mask": "bool",
        "node_mask": "bool",
        "graph_mask": "bool",
    }
    for name, kind in kinds.items():
        a = getattr(g, name)
        dtype = jnp.result_type(a)
        ok = jnp.issubdtype(dtype, jnp.integer) if kind == "int" else dtype == jnp.bool_
        if jnp.ndim(a) != 1 or not ok:
            raise layer.error(
                ShapeError,
                f"GraphBatch.{name} must be a 1-D {kind} array, given shape {jnp.shape(a)} and "
                f"dtype {dtype}",
            )
    n, e = g.num_nodes, g.num_edges
    lengths = {"receivers": e, "edge_mask": e, "node_graph": n, "node_mask": n}
    for name, size in lengths.items():
        length = jnp.shape(getattr(g, name))[0]
        if length != size:
            slots = "edge slots (len(senders))" if size == e else "node slots (len(nodes))"
            raise layer.error(
                ShapeError, f"GraphBatch.{name} has length {length}, expected {size}, the {slots}"
            )
    if g.edges is not None and (jnp.ndim(g.edges) != 2 or jnp.shape(g.edges)[0] != e):
        raise layer.error(
            ShapeError, f"GraphBatch.edges must have shape ({e}, Fe), given {jnp.shape(g.edges)}"
        )
    g = jax.tree.map(lambda a: a if isinstance(a, jax.ShapeDtypeStruct) else jnp.asarray(a), g)
    sizes = {"node": n, "graph": g.num_graphs}
    for name in indices:
        mask_name, slots, target = _INDICES[name]
        values, mask = getattr(g, name), getattr(g, mask_name)
        if not isinstance(values, jax.ShapeDtypeStruct) and not isinstance(
            mask, jax.ShapeDtypeStruct
        ):
            size = sizes[target]
            what = f"GraphBatch.{name} of the {slots} (indices into the {size} {target} slots)"
            check_in_range(layer.where(), what, values, 0, size, mask=mask)
    return g


def _zero_padding(y: Array, node_mask: Array) -> Array:
    """Rows of padding nodes set to 0 (``y`` is ``(N, ...)``)."""
    keep = node_mask.reshape(node_mask.shape + (1,) * (y.ndim - 1))
    return jnp.where(keep, y, jnp.zeros_like(y))


def _check_reduction(cls: str, argument: str, value: str) -> None:
    if value not in _REDUCERS:
        raise ConfigError(f"{cls}: {argument} must be one of {sorted(_REDUCERS)}, given {value!r}")


# --------------------------------------------------------------------------------------------
# Graph convolutions.


@dataclasses.dataclass(frozen=True)
class _GraphConv(Block, DtypeOptions):
    """What the graph convolutions share: the output size and the options of their ``Dense``."""

    features: Size
    _: KW_ONLY
    use_bias: bool = True
    w_init: Initializer = default_graph_init
    b_init: Initializer = initializers.zeros

    def _linear(self, features: int, *, use_bias: bool = False) -> Dense:
        """The ``Dense`` projection this layer runs, with its dtype, precision and initializers."""
        return Dense(
            features,
            use_bias=use_bias,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            precision=self.precision,
            w_init=self.w_init,
            b_init=self.b_init,
        )

    def _output(self, scope: Scope, y: Array, g: GraphBatch, size: int) -> Array:
        """``y`` plus the bias ``b`` of shape ``(size,)`` (when ``use_bias``), 0 on padding."""
        if self.use_bias:
            b = scope.param("b", self.b_init, (size,), self.param_dtype)
            y = add_bias(y, b.astype(y.dtype))
        return _zero_padding(y, g.node_mask)


@dataclasses.dataclass(frozen=True)
class GCNConv(_GraphConv):
    """Graph convolution of Kipf & Welling (2017): ``H = D^-1/2 (A + I) D^-1/2 X W + b``.

    ``A[i, j]`` counts the edges ``j -> i`` and ``D`` is the degree matrix of ``A + I``
    (``D_ii = 1 + in-degree of i``), so node ``i`` gets
    ``h_i = sum_{j -> i} x_j W / sqrt(d_i d_j) + x_i W / d_i + b``. Self loops are added here: pass
    graphs without them. Edge features are not used. ``X W`` is a ``Dense`` child ``"linear"``
    (no bias); ``b`` is added after the aggregation, as in the paper and PyTorch Geometric.

    Args:
        features: output size ``F'``.
        use_bias: add ``b``.
        dtype: computation dtype; ``None`` uses the promoted dtype of node features and params.
        param_dtype: storage dtype of the params.
        precision: of the projection (``jax.lax.dot_general``'s ``precision``).
        w_init, b_init: initializers ``(key, shape, dtype)`` of the projection and ``b``.

    Input: a :class:`~nn_jax.data.GraphBatch` with ``nodes (N, F)``. Output: ``(N, F')`` (0 on
    padding nodes). Params: ``{"linear": {"w": (F, F')}, "b": (F',)}``.

    >>> import jax, numpy as np
    >>> from nn_jax.data import Graph, batch_graphs
    >>> g = batch_graphs([Graph(np.ones((3, 5)), np.array([0, 1]), np.array([1, 2]))])
    >>> params, _ = GCNConv(4).init(jax.random.key(0), g)
    >>> jax.tree.map(np.shape, params)
    {'b': (4,), 'linear': {'w': (5, 4)}}

    Reference: T. Kipf, M. Welling, "Semi-Supervised Classification with Graph Convolutional
    Networks", ICLR 2017, eq. (2).
    """

    def forward(self, scope: Scope, x: Any) -> Array:
        g = _check_graph(self, x)
        n = g.num_nodes
        h = scope("linear", self._linear(self.features), g.nodes)
        ones = jnp.ones(g.senders.shape, h.dtype)
        degree = 1 + segment_sum(ones, g.receivers, n, mask=g.edge_mask)
        inv_sqrt = jax.lax.rsqrt(degree)
        norm = (inv_sqrt[g.senders] * inv_sqrt[g.receivers])[:, None]
        y = segment_sum(h[g.senders] * norm, g.receivers, n, mask=g.edge_mask)
        y = y + h * (1 / degree)[:, None]
        return self._output(scope, y, g, self.features)


@dataclasses.dataclass(frozen=True)
class GATConv(_GraphConv):
    """Graph attention of Veličković et al. (2018), multi-head, with a masked segment softmax.

    Per head ``k``: ``z_i = x_i W_k``; for each edge ``j -> i`` (and a self loop ``i -> i``)
    ``e_ij = LeakyReLU(a_src_k . z_j + a_dst_k . z_i)``; ``alpha_ij = softmax_j(e_ij)`` over the
    edges into ``i``; ``h_i = sum_j alpha_ij z_j``. Heads are concatenated (``concat=True``) or
    averaged, then ``b`` is added. ``x W`` (all heads at once) is a ``Dense`` child ``"linear"``
    (no bias).

    Args:
        features: output size ``F'`` per head.
        use_bias: add ``b``.
        dtype: computation dtype; ``None`` uses the promoted dtype of node features and params.
        param_dtype: storage dtype of the params.
        precision: of the projection (``jax.lax.dot_general``'s ``precision``).
        w_init, b_init: initializers ``(key, shape, dtype)`` of the projection and ``b``.
        heads: number of heads ``H``.
        concat: concatenate heads (output ``H * F'``) or average them (output ``F'``).
        negative_slope: of the LeakyReLU.
        add_self_loops: attend to each node itself too (pass graphs without self loops).
        att_init: initializer of ``att_src`` and ``att_dst``.

    Input: a :class:`~nn_jax.data.GraphBatch` with ``nodes (N, F)``. Output ``(N, H * F')`` or
    ``(N, F')`` (0 on padding nodes). Params: ``{"linear": {"w": (F, H * F')},
    "att_src": (H, F'), "att_dst": (H, F'), "b": (H * F',) or (F',)}``.

    Taps: ``weights``, the attention coefficients ``alpha`` of shape ``(E + N, H)`` (``(E, H)``
    without self loops): row ``k < E`` is edge ``k`` of the batch; with ``add_self_loops`` row
    ``E + i`` is node ``i``'s self loop. Over the real edges into a real node each head's
    coefficients sum to 1; masked rows are 0. Read them with
    ``nn_jax.inspect.apply_with_intermediates(..., capture="*weights")``.

    >>> import jax, numpy as np
    >>> from nn_jax.data import Graph, batch_graphs
    >>> from nn_jax.inspect import apply_with_intermediates
    >>> g = batch_graphs([Graph(np.ones((3, 5)), np.array([0, 1]), np.array([1, 2]))])
    >>> layer = GATConv(4, heads=2)
    >>> params, _ = layer.init(jax.random.key(0), g)
    >>> jax.tree.map(np.shape, params)
    {'att_dst': (2, 4), 'att_src': (2, 4), 'b': (8,), 'linear': {'w': (5, 8)}}
    >>> y, _, taps = apply_with_intermediates(layer, params, {}, g, capture="weights")
    >>> y.shape, taps["weights"].shape
    ((3, 8), (5, 2))

    Reference: P. Veličković et al., "Graph Attention Networks", ICLR 2018, eqs. (1)-(5).
    """

    _: KW_ONLY
    heads: Size = 1
    concat: bool = True
    negative_slope: NonNegative = 0.2
    add_self_loops: bool = True
    att_init: Initializer = default_graph_init

    @property
    def out_features(self) -> int:
        """The output size: ``heads * features`` when concatenating, else ``features``."""
        return self.heads * self.features if self.concat else self.features

    def forward(self, scope: Scope, x: Any) -> Array:
        g = _check_graph(self, x)
        n, hf = g.num_nodes, (self.heads, self.features)
        z = scope("linear", self._linear(self.heads * self.features), g.nodes).reshape(n, *hf)
        a_src = scope.param("att_src", self.att_init, hf, self.param_dtype).astype(z.dtype)
        a_dst = scope.param("att_dst", self.att_init, hf, self.param_dtype).astype(z.dtype)
        senders, receivers, mask = g.senders, g.receivers, g.edge_mask
        if self.add_self_loops:
            loops = jnp.arange(n, dtype=senders.dtype)
            senders = jnp.concatenate([senders, loops])
            receivers = jnp.concatenate([receivers, loops])
            mask = jnp.concatenate([mask, g.node_mask])
        score_src = jnp.sum(z * a_src[None], axis=-1)
        score_dst = jnp.sum(z * a_dst[None], axis=-1)
        logits = jax.nn.leaky_relu(score_src[senders] + score_dst[receivers], self.negative_slope)
        alpha = tap("weights", segment_softmax(logits, receivers, n, mask=mask))
        y = segment_sum(z[senders] * alpha[..., None], receivers, n, mask=mask)
        y = y.reshape(n, -1) if self.concat else jnp.mean(y, axis=1)
        return self._output(scope, y, g, self.out_features)


@dataclasses.dataclass(frozen=True)
class SAGEConv(_GraphConv):
    """GraphSAGE with the mean aggregator: ``h_i = x_i W_self + mean_{j -> i} x_j W_neigh + b``.

    A node without incoming edges aggregates 0. With ``normalize`` the output rows are scaled to
    unit L2 norm (``h / max(|h|, 1e-12)``). The two maps are ``Dense`` children: ``"self"``
    (``W_self``, no bias) and ``"neighbours"`` (``W_neigh`` and ``b``), as ``lin_r`` and
    ``lin_l`` in PyTorch Geometric. (The paper's name for this layer is GraphSAGE.)

    Args:
        features: output size ``F'``.
        use_bias: add ``b``.
        dtype: computation dtype; ``None`` uses the promoted dtype of node features and params.
        param_dtype: storage dtype of the params.
        precision: of the projections (``jax.lax.dot_general``'s ``precision``).
        w_init, b_init: initializers ``(key, shape, dtype)`` of the projections and ``b``.
        normalize: L2-normalize each output row.

    Input: a :class:`~nn_jax.data.GraphBatch` with ``nodes (N, F)``. Output ``(N, F')`` (0 on
    padding nodes). Params: ``{"self": {"w": (F, F')}, "neighbours": {"w": (F, F'),
    "b": (F',)}}``.

    >>> import jax, numpy as np
    >>> from nn_jax.data import Graph, batch_graphs
    >>> g = batch_graphs([Graph(np.ones((3, 5)), np.array([0, 1]), np.array([1, 2]))])
    >>> params, _ = SAGEConv(4).init(jax.random.key(0), g)
    >>> jax.tree.map(np.shape, params)
    {'neighbours': {'b': (4,), 'w': (5, 4)}, 'self': {'w': (5, 4)}}

    Reference: W. Hamilton, R. Ying, J. Leskovec, "Inductive Representation Learning on Large
    Graphs", NeurIPS 2017, Algorithm 1 (the concatenation there equals this sum of two maps).
    """

    _: KW_ONLY
    normalize: bool = False

    def forward(self, scope: Scope, x: Any) -> Array:
        g = _check_graph(self, x)
        neighbours = segment_mean(g.nodes[g.senders], g.receivers, g.num_nodes, mask=g.edge_mask)
        y = scope("self", self._linear(self.features), g.nodes) + scope(
            "neighbours", self._linear(self.features, use_bias=self.use_bias), neighbours
        )
        if self.normalize:
            # max inside the sqrt: finite gradient for all-zero rows.
            sq = jnp.maximum(jnp.sum(y * y, axis=-1, keepdims=True), 1e-24)
            y = y * jax.lax.rsqrt(sq)
        return _zero_padding(y, g.node_mask)


# --------------------------------------------------------------------------------------------
# Generic message passing and readout.


@dataclasses.dataclass(frozen=True)
class MessagePassing(Block):
    """A generic message-passing layer built from two layers you choose.

    ``m_k = message([x_{s_k}, x_{r_k}, e_k])`` for each edge ``k`` (``e_k`` only when the batch
    has edge features), ``a_i = aggregate_{k: r_k = i} m_k`` (sum, mean or max over the real
    edges; 0 for a node with none), ``h_i = update([x_i, a_i])``. Brackets are concatenation
    along the feature axis. This is the message-passing neural network of Gilmer et al. (2017)
    and the "interaction network" edge/node update of Battaglia et al. (2018).

    Args:
        message: a layer mapping ``(E, 2F [+ Fe])`` to messages ``(E, M)``, e.g. ``MLP((32,))``.
        update: a layer mapping ``(N, F + M)`` to ``(N, F')``.
        aggregate: ``"sum"``, ``"mean"`` or ``"max"``.

    Input: a :class:`~nn_jax.data.GraphBatch`. Output ``(N, F')`` (0 on padding nodes).
    Params: ``{"message": <message's params>, "update": <update's params>}``.

    >>> import jax, numpy as np
    >>> from nn_jax.data import Graph, batch_graphs
    >>> g = batch_graphs([Graph(np.ones((3, 5)), np.array([0, 1]), np.array([1, 2]))])
    >>> params, _ = MessagePassing(Dense(4), Dense(2)).init(jax.random.key(0), g)
    >>> jax.tree.map(np.shape, params)
    {'message': {'b': (4,), 'w': (10, 4)}, 'update': {'b': (2,), 'w': (9, 2)}}
    """

    message: Layer | Callable[[Any], Any]
    update: Layer | Callable[[Any], Any]
    _: KW_ONLY
    aggregate: str = "sum"

    def __post_init__(self) -> None:
        _check_reduction("MessagePassing", "aggregate", self.aggregate)

    def forward(self, scope: Scope, x: Any) -> Array:
        g = _check_graph(self, x)
        inputs = [g.nodes[g.senders], g.nodes[g.receivers]]
        if g.edges is not None:
            inputs.append(g.edges.astype(g.nodes.dtype))
        messages = scope("message", self.message, jnp.concatenate(inputs, axis=-1))
        if jnp.ndim(messages) != 2 or jnp.shape(messages)[0] != g.num_edges:
            raise self.error(
                ShapeError,
                f"the message layer must return (E, M) = ({g.num_edges}, M), given shape "
                f"{jnp.shape(messages)}",
            )
        reduce = _REDUCERS[self.aggregate]
        aggregated = reduce(messages, g.receivers, g.num_nodes, mask=g.edge_mask)
        aggregated = aggregated.astype(g.nodes.dtype)
        y = scope("update", self.update, jnp.concatenate([g.nodes, aggregated], axis=-1))
        return _zero_padding(y, g.node_mask)


@dataclasses.dataclass(frozen=True)
class GraphPool(ParameterFree):
    """Graph-level readout: reduce each graph's real node features to one vector.

    Args:
        reduction: ``"sum"``, ``"mean"`` or ``"max"`` over the nodes of each graph.

    Input: a :class:`~nn_jax.data.GraphBatch` with ``nodes (N, F)``. Output ``(G, F)``; a graph
    slot with no real node (padding) gives 0. No params.
    """

    reduction: str = "mean"

    def __post_init__(self) -> None:
        _check_reduction("GraphPool", "reduction", self.reduction)

    def transform(self, x: Any, call: Call) -> Array:
        g = _check_graph(self, x, indices=("node_graph",))
        reduce = _REDUCERS[self.reduction]
        return reduce(g.nodes, g.node_graph, g.num_graphs, mask=g.node_mask)

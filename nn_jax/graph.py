"""Graph neural networks: a padded graph batch format, message-passing layers and readout.

**The batch format.** Many graphs of different sizes are packed into one :class:`GraphBatch` of
fixed sizes (``N`` node slots, ``E`` edge slots, ``G`` graph slots) by :func:`batch_graphs`, so a
jitted step compiles once for every batch. Node ``i``'s features are ``nodes[i]``; edge ``k``
goes from ``senders[k]`` to ``receivers[k]`` (messages flow sender -> receiver; an undirected
graph lists each edge in both directions); ``node_graph[i]`` is the graph node ``i`` belongs to.
``node_mask``, ``edge_mask`` and ``graph_mask`` say which slots are real: **the masks are the
source of truth**, and every layer here honours them. :func:`batch_graphs` also points padding
edges at node ``N`` and padding nodes at graph ``G`` (one past the end), so even a raw
``jax.ops.segment_sum`` drops them.

**Layers** take a ``GraphBatch`` as ``x`` and return new node features ``(N, F')`` (not a new
batch: the graph structure does not change, and the features are what the next step needs).
Padding nodes' outputs are 0. To chain layers, put the features back:
``g = g._replace(nodes=h)``; the models in :mod:`nn_jax.models.gnn` do this.
:class:`GraphPool` reads out one vector per graph, ``(G, F)``.

>>> import jax, numpy as np
>>> triangle = Graph(np.ones((3, 2)), senders=np.array([0, 1, 2]), receivers=np.array([1, 2, 0]))
>>> edge = Graph(np.ones((2, 2)), senders=np.array([0, 1]), receivers=np.array([1, 0]))
>>> g = batch_graphs([triangle, edge], max_nodes=8, max_edges=8, max_graphs=3)
>>> g.nodes.shape, g.senders.tolist(), g.node_graph.tolist()
((8, 2), [0, 1, 2, 3, 4, 8, 8, 8], [0, 0, 0, 1, 1, 3, 3, 3])
>>> params, _ = GCNConv(4).init(jax.random.key(0), g)
>>> jax.tree.map(np.shape, params)
{'b': (4,), 'w': (2, 4)}
>>> GCNConv(4)(params, g).shape
(8, 4)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import KW_ONLY
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from nn_jax import initializers
from nn_jax.core import Array, Block, Call, Initializer, Layer, Params, PRNGKey, Scope, State
from nn_jax.dense import add_bias
from nn_jax.errors import ConfigError, ShapeError
from nn_jax.segment import segment_max, segment_mean, segment_softmax, segment_sum

__all__ = [
    "GATConv",
    "GCNConv",
    "Graph",
    "GraphBatch",
    "GraphPool",
    "GraphSAGE",
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


class Graph(NamedTuple):
    """One graph as host arrays: the unit :func:`batch_graphs` packs.

    Args:
        nodes: ``(n, F)`` node features.
        senders: ``(e,)`` integer source node of each edge, in ``[0, n)``.
        receivers: ``(e,)`` integer target node of each edge, in ``[0, n)``.
        edges: ``(e, Fe)`` edge features, or ``None``.
    """

    nodes: Any
    senders: Any
    receivers: Any
    edges: Any = None


class GraphBatch(NamedTuple):
    """Graphs padded into fixed-size arrays (a pytree: pass it through ``jit``/``vmap``/``grad``).

    Fields (``N`` node, ``E`` edge and ``G`` graph slots):
        nodes: ``(N, F)`` float node features (0 in padding slots).
        edges: ``(E, Fe)`` float edge features, or ``None``.
        senders: ``(E,)`` int32 source node of each edge.
        receivers: ``(E,)`` int32 target node of each edge.
        node_graph: ``(N,)`` int32 graph of each node.
        node_mask: ``(N,)`` bool, ``True`` for real nodes.
        edge_mask: ``(E,)`` bool, ``True`` for real edges.
        graph_mask: ``(G,)`` bool, ``True`` for real graphs.
    """

    nodes: Any
    edges: Any
    senders: Any
    receivers: Any
    node_graph: Any
    node_mask: Any
    edge_mask: Any
    graph_mask: Any

    @property
    def num_nodes(self) -> int:
        """``N``, the number of node slots (static)."""
        return int(np.shape(self.nodes)[0])

    @property
    def num_edges(self) -> int:
        """``E``, the number of edge slots (static)."""
        return int(np.shape(self.senders)[0])

    @property
    def num_graphs(self) -> int:
        """``G``, the number of graph slots (static)."""
        return int(np.shape(self.graph_mask)[0])


def batch_graphs(
    graphs: Sequence[Graph],
    max_nodes: int | None = None,
    max_edges: int | None = None,
    max_graphs: int | None = None,
) -> GraphBatch:
    """Pack ``graphs`` into one :class:`GraphBatch` padded to fixed sizes (NumPy, on the host).

    Graph ``k``'s nodes follow those of graphs ``0..k-1``; its edge indices are shifted to match.
    Padding slots have zero features and ``False`` masks; padding edges point at node
    ``max_nodes`` and padding nodes at graph ``max_graphs`` (one past the end). Keep the three
    sizes fixed across batches and a jitted step compiles once.

    Args:
        graphs: a sequence of :class:`Graph` (the same feature sizes; all or none with edges).
        max_nodes: node slots ``N`` (``None``: the total node count, no padding).
        max_edges: edge slots ``E`` (``None``: the total edge count).
        max_graphs: graph slots ``G`` (``None``: ``len(graphs)``).

    Returns:
        A ``GraphBatch`` of NumPy arrays; floating features keep their dtype.

    Raises:
        ShapeError: the graphs do not fit the sizes, or their arrays are inconsistent.
    """
    graphs = [Graph(*g) for g in graphs]
    if not graphs:
        raise ShapeError("batch_graphs: expected at least one graph, given none")
    nodes = [np.asarray(g.nodes) for g in graphs]
    senders = [_indices(g.senders) for g in graphs]
    receivers = [_indices(g.receivers) for g in graphs]
    has_edges = [g.edges is not None for g in graphs]
    if any(has_edges) and not all(has_edges):
        raise ShapeError("batch_graphs: either every graph has edge features or none has")
    edges = [np.asarray(g.edges) for g in graphs] if all(has_edges) else None
    for k, (x, s, r) in enumerate(zip(nodes, senders, receivers, strict=True)):
        _check_one_graph(k, x, s, r, None if edges is None else edges[k], graphs[0])
    sizes = {
        "max_nodes": (max_nodes, sum(len(x) for x in nodes)),
        "max_edges": (max_edges, sum(len(s) for s in senders)),
        "max_graphs": (max_graphs, len(graphs)),
    }
    for name, (limit, needed) in sizes.items():
        if limit is not None and (not isinstance(limit, int) or limit < needed):
            raise ShapeError(
                f"batch_graphs: {name} must be an int >= {needed} (what these graphs need), "
                f"given {limit!r}"
            )
    n_max, e_max, g_max = (needed if limit is None else limit for limit, needed in sizes.values())

    n_node = np.array([len(x) for x in nodes])
    n_edge = np.array([len(s) for s in senders])
    n_total, e_total = int(n_node.sum()), int(n_edge.sum())
    offsets = np.repeat(np.cumsum(n_node) - n_node, n_edge)

    def padded(parts: list[np.ndarray], slots: int, fill: float) -> np.ndarray:
        joined = np.concatenate(parts)
        out = np.full((slots, *joined.shape[1:]), fill, joined.dtype)
        out[: len(joined)] = joined
        return out

    def mask(count: int, slots: int) -> np.ndarray:
        return np.arange(slots) < count

    return GraphBatch(
        nodes=padded(nodes, n_max, 0),
        edges=None if edges is None else padded(edges, e_max, 0),
        senders=padded([np.concatenate(senders) + offsets], e_max, n_max).astype(np.int32),
        receivers=padded([np.concatenate(receivers) + offsets], e_max, n_max).astype(np.int32),
        node_graph=padded([np.repeat(np.arange(len(graphs)), n_node)], n_max, g_max).astype(
            np.int32
        ),
        node_mask=mask(n_total, n_max),
        edge_mask=mask(e_total, e_max),
        graph_mask=mask(len(graphs), g_max),
    )


def _indices(a: Any) -> np.ndarray:
    """An index array; an empty one (e.g. ``[]``, a graph without edges) becomes int32."""
    a = np.asarray(a)
    return a.astype(np.int32) if a.size == 0 else a


def _check_one_graph(
    k: int, x: np.ndarray, s: np.ndarray, r: np.ndarray, e: np.ndarray | None, like: Graph
) -> None:
    """Graph ``k``'s arrays are consistent, and their feature sizes are those of ``like``."""
    where = f"batch_graphs: graph {k}"
    features = np.shape(like.nodes)[1:]
    if x.ndim != 2 or x.shape[1:] != features:
        expected = f"(n, {features[0]}) like graph 0's" if len(features) == 1 else "(n, F)"
        raise ShapeError(f"{where}: nodes must have shape {expected}, given {x.shape}")
    for name, idx in (("senders", s), ("receivers", r)):
        if idx.shape != s.shape or idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
            raise ShapeError(
                f"{where}: {name} must be a 1-D integer array of shape {s.shape[:1]}, given "
                f"shape {idx.shape} and dtype {idx.dtype}"
            )
        if idx.size and (idx.min() < 0 or idx.max() >= len(x)):
            raise ShapeError(
                f"{where}: {name} must index its {len(x)} nodes (0..{len(x) - 1}), given values "
                f"in {idx.min()}..{idx.max()}"
            )
    if e is not None:
        expected_edges = (len(s), *np.shape(like.edges)[1:])
        if e.ndim != 2 or e.shape != expected_edges:
            raise ShapeError(f"{where}: edges must have shape {expected_edges}, given {e.shape}")


# --------------------------------------------------------------------------------------------
# Helpers shared by the layers.


def _check_graph(layer: Layer, g: Any) -> GraphBatch:
    """``g`` with its shapes and dtypes checked (errors name ``layer``), leaves as JAX arrays.

    ``jax.ShapeDtypeStruct`` leaves (an ``init`` from shapes) are kept as they are.
    """
    if not isinstance(g, GraphBatch):
        raise layer.error(
            ShapeError,
            "expected a GraphBatch as input (see nn_jax.graph.batch_graphs), given "
            f"{type(g).__name__}",
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
        given = jnp.shape(getattr(g, name))[0]
        if given != size:
            slots = "edge slots (len(senders))" if size == e else "node slots (len(nodes))"
            raise layer.error(
                ShapeError, f"GraphBatch.{name} has length {given}, expected {size}, the {slots}"
            )
    if g.edges is not None and (jnp.ndim(g.edges) != 2 or jnp.shape(g.edges)[0] != e):
        raise layer.error(
            ShapeError, f"GraphBatch.edges must have shape ({e}, Fe), given {jnp.shape(g.edges)}"
        )
    return jax.tree.map(lambda a: a if isinstance(a, jax.ShapeDtypeStruct) else jnp.asarray(a), g)


def _project(layer: Layer, params: Params, name: str, x: Array, features: int) -> Array:
    """``x @ params[name]``, checking the weight is ``(x.shape[-1], features)``."""
    w = layer.param(params, name)
    if tuple(w.shape) != (x.shape[-1], features):
        raise layer.error(
            ShapeError,
            f"node features have size {x.shape[-1]} and parameter {name!r} has shape "
            f"{tuple(w.shape)}; expected {name!r} of shape ({x.shape[-1]}, {features}) (pass "
            "graphs with the feature size this layer was initialized with)",
        )
    dtype = jnp.result_type(x.dtype, w.dtype)
    return jnp.dot(x.astype(dtype), w.astype(dtype))


def _bias(layer: Layer, params: Params, y: Array, size: int) -> Array:
    return add_bias(y, layer.param(params, "b", (size,)).astype(y.dtype))


def _zero_padding(y: Array, node_mask: Array) -> Array:
    """Rows of padding nodes set to 0 (``y`` is ``(N, ...)``)."""
    keep = node_mask.reshape(node_mask.shape + (1,) * (y.ndim - 1))
    return jnp.where(keep, y, jnp.zeros_like(y))


def _check_features(cls: str, features: int) -> None:
    if not isinstance(features, int) or features <= 0:
        raise ConfigError(f"{cls}: features must be a positive int, given {features!r}")


# --------------------------------------------------------------------------------------------
# Layers.


@dataclasses.dataclass(frozen=True)
class GCNConv(Layer):
    """Graph convolution of Kipf & Welling (2017): ``H = D^-1/2 (A + I) D^-1/2 X W + b``.

    ``A[i, j]`` counts the edges ``j -> i`` and ``D`` is the degree matrix of ``A + I``
    (``D_ii = 1 + in-degree of i``), so node ``i`` gets
    ``h_i = sum_{j -> i} x_j W / sqrt(d_i d_j) + x_i W / d_i + b``. Self loops are added here: pass
    graphs without them. Edge features are not used.

    Args:
        features: output size ``F'``.
        use_bias: add ``b`` after the aggregation.
        w_init, b_init: initializers ``(key, shape, dtype)``.
        param_dtype: storage dtype of the params.

    Input: a :class:`GraphBatch` with ``nodes (N, F)``. Output: ``(N, F')`` (0 on padding nodes).
    Params: ``w: (F, F')``, ``b: (F',)``.

    Reference: T. Kipf, M. Welling, "Semi-Supervised Classification with Graph Convolutional
    Networks", ICLR 2017, eq. (2).
    """

    features: int
    _: KW_ONLY
    use_bias: bool = True
    w_init: Initializer = default_graph_init
    b_init: Initializer = initializers.zeros
    param_dtype: Any = jnp.float32

    def __post_init__(self) -> None:
        _check_features("GCNConv", self.features)

    def init(self, key: PRNGKey, x: Any) -> tuple[Params, State]:
        g = _check_graph(self, x)
        w_key, b_key = jax.random.split(key)
        params = {"w": self.w_init(w_key, (g.nodes.shape[1], self.features), self.param_dtype)}
        if self.use_bias:
            params["b"] = self.b_init(b_key, (self.features,), self.param_dtype)
        return params, {}

    def compute(self, params: Params, state: State, x: Any, call: Call) -> tuple[Array, State]:
        g = _check_graph(self, x)
        n = g.num_nodes
        h = _project(self, params, "w", g.nodes, self.features)
        ones = jnp.ones(g.senders.shape, h.dtype)
        degree = 1 + segment_sum(ones, g.receivers, n, mask=g.edge_mask)
        inv_sqrt = jax.lax.rsqrt(degree)
        norm = (inv_sqrt[g.senders] * inv_sqrt[g.receivers])[:, None]
        y = segment_sum(h[g.senders] * norm, g.receivers, n, mask=g.edge_mask)
        y = y + h * (1 / degree)[:, None]
        if self.use_bias:
            y = _bias(self, params, y, self.features)
        return _zero_padding(y, g.node_mask), {}


@dataclasses.dataclass(frozen=True)
class GATConv(Layer):
    """Graph attention of Veličković et al. (2018), multi-head, with a masked segment softmax.

    Per head ``k``: ``z_i = x_i W_k``; for each edge ``j -> i`` (and a self loop ``i -> i``)
    ``e_ij = LeakyReLU(a_src_k . z_j + a_dst_k . z_i)``; ``alpha_ij = softmax_j(e_ij)`` over the
    edges into ``i``; ``h_i = sum_j alpha_ij z_j``. Heads are concatenated (``concat=True``) or
    averaged, then ``b`` is added. :meth:`attention` returns the coefficients ``alpha``.

    Args:
        features: output size per head ``F'``.
        heads: number of heads ``H``.
        concat: concatenate heads (output ``H * F'``) or average them (output ``F'``).
        negative_slope: of the LeakyReLU.
        add_self_loops: attend to each node itself too (pass graphs without self loops).
        use_bias: add ``b``.
        w_init, att_init, b_init: initializers ``(key, shape, dtype)``.
        param_dtype: storage dtype of the params.

    Input: a :class:`GraphBatch` with ``nodes (N, F)``. Output ``(N, H * F')`` or ``(N, F')``
    (0 on padding nodes). Params: ``w: (F, H * F')``, ``att_src: (H, F')``, ``att_dst: (H, F')``,
    ``b: (H * F',)`` or ``(F',)``.

    Reference: P. Veličković et al., "Graph Attention Networks", ICLR 2018, eqs. (1)-(5).
    """

    features: int
    _: KW_ONLY
    heads: int = 1
    concat: bool = True
    negative_slope: float = 0.2
    add_self_loops: bool = True
    use_bias: bool = True
    w_init: Initializer = default_graph_init
    att_init: Initializer = default_graph_init
    b_init: Initializer = initializers.zeros
    param_dtype: Any = jnp.float32

    def __post_init__(self) -> None:
        _check_features("GATConv", self.features)
        if not isinstance(self.heads, int) or self.heads <= 0:
            raise ConfigError(f"GATConv: heads must be a positive int, given {self.heads!r}")
        if not self.negative_slope >= 0:
            raise ConfigError(
                f"GATConv: negative_slope must be >= 0, given {self.negative_slope!r}"
            )

    @property
    def out_features(self) -> int:
        """The output size: ``heads * features`` when concatenating, else ``features``."""
        return self.heads * self.features if self.concat else self.features

    def init(self, key: PRNGKey, x: Any) -> tuple[Params, State]:
        g = _check_graph(self, x)
        keys = jax.random.split(key, 4)
        hf = (self.heads, self.features)
        params = {
            "w": self.w_init(
                keys[0], (g.nodes.shape[1], self.heads * self.features), self.param_dtype
            ),
            "att_src": self.att_init(keys[1], hf, self.param_dtype),
            "att_dst": self.att_init(keys[2], hf, self.param_dtype),
        }
        if self.use_bias:
            params["b"] = self.b_init(keys[3], (self.out_features,), self.param_dtype)
        return params, {}

    def _attend(self, params: Params, g: GraphBatch) -> tuple[Array, Array, Array, Array, Array]:
        """``z (N, H, F')``, ``alpha (E', H)`` and the edge list ``senders, receivers, mask``."""
        n = g.num_nodes
        z = _project(self, params, "w", g.nodes, self.heads * self.features)
        z = z.reshape(n, self.heads, self.features)
        hf = (self.heads, self.features)
        a_src = self.param(params, "att_src", hf).astype(z.dtype)
        a_dst = self.param(params, "att_dst", hf).astype(z.dtype)
        senders, receivers, mask = g.senders, g.receivers, g.edge_mask
        if self.add_self_loops:
            loops = jnp.arange(n, dtype=senders.dtype)
            senders = jnp.concatenate([senders, loops])
            receivers = jnp.concatenate([receivers, loops])
            mask = jnp.concatenate([mask, g.node_mask])
        score_src = jnp.sum(z * a_src[None], axis=-1)
        score_dst = jnp.sum(z * a_dst[None], axis=-1)
        logits = jax.nn.leaky_relu(score_src[senders] + score_dst[receivers], self.negative_slope)
        alpha = segment_softmax(logits, receivers, n, mask=mask)
        return z, alpha, senders, receivers, mask

    def attention(self, params: Params, x: GraphBatch) -> Array:
        """The attention coefficients ``alpha``, shape ``(E + N, H)`` (``(E, H)`` without loops).

        Row ``k < E`` is edge ``k`` of the batch; with ``add_self_loops`` row ``E + i`` is node
        ``i``'s self loop. Over the real edges into a real node, each head's coefficients sum
        to 1; masked rows are 0.
        """
        return self._attend(params, _check_graph(self, x))[1]

    def compute(self, params: Params, state: State, x: Any, call: Call) -> tuple[Array, State]:
        g = _check_graph(self, x)
        z, alpha, senders, receivers, mask = self._attend(params, g)
        y = segment_sum(z[senders] * alpha[..., None], receivers, g.num_nodes, mask=mask)
        y = y.reshape(g.num_nodes, -1) if self.concat else jnp.mean(y, axis=1)
        if self.use_bias:
            y = _bias(self, params, y, self.out_features)
        return _zero_padding(y, g.node_mask), {}


@dataclasses.dataclass(frozen=True)
class SAGEConv(Layer):
    """GraphSAGE with the mean aggregator: ``h_i = x_i W_self + mean_{j -> i} x_j W_neigh + b``.

    A node without incoming edges aggregates 0. With ``normalize`` the output rows are scaled to
    unit L2 norm (``h / max(|h|, 1e-12)``).

    Args:
        features: output size ``F'``.
        use_bias: add ``b``.
        normalize: L2-normalize each output row.
        w_init, b_init: initializers ``(key, shape, dtype)``.
        param_dtype: storage dtype of the params.

    Input: a :class:`GraphBatch` with ``nodes (N, F)``. Output ``(N, F')`` (0 on padding nodes).
    Params: ``w_self: (F, F')``, ``w_neigh: (F, F')``, ``b: (F',)``.

    Reference: W. Hamilton, R. Ying, J. Leskovec, "Inductive Representation Learning on Large
    Graphs", NeurIPS 2017, Algorithm 1 (the concatenation there equals this sum of two maps).
    """

    features: int
    _: KW_ONLY
    use_bias: bool = True
    normalize: bool = False
    w_init: Initializer = default_graph_init
    b_init: Initializer = initializers.zeros
    param_dtype: Any = jnp.float32

    def __post_init__(self) -> None:
        _check_features("SAGEConv", self.features)

    def init(self, key: PRNGKey, x: Any) -> tuple[Params, State]:
        g = _check_graph(self, x)
        keys = jax.random.split(key, 3)
        shape = (g.nodes.shape[1], self.features)
        params = {
            "w_self": self.w_init(keys[0], shape, self.param_dtype),
            "w_neigh": self.w_init(keys[1], shape, self.param_dtype),
        }
        if self.use_bias:
            params["b"] = self.b_init(keys[2], (self.features,), self.param_dtype)
        return params, {}

    def compute(self, params: Params, state: State, x: Any, call: Call) -> tuple[Array, State]:
        g = _check_graph(self, x)
        neighbours = segment_mean(g.nodes[g.senders], g.receivers, g.num_nodes, mask=g.edge_mask)
        y = _project(self, params, "w_self", g.nodes, self.features) + _project(
            self, params, "w_neigh", neighbours, self.features
        )
        if self.use_bias:
            y = _bias(self, params, y, self.features)
        if self.normalize:
            # max inside the sqrt: finite gradient for all-zero rows.
            sq = jnp.maximum(jnp.sum(y * y, axis=-1, keepdims=True), 1e-24)
            y = y * jax.lax.rsqrt(sq)
        return _zero_padding(y, g.node_mask), {}


GraphSAGE = SAGEConv
"""The paper's name for :class:`SAGEConv`."""


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

    Input: a :class:`GraphBatch`. Output ``(N, F')`` (0 on padding nodes).
    Params: ``{"message": <message's params>, "update": <update's params>}``.
    """

    message: Layer | Callable[[Any], Any]
    update: Layer | Callable[[Any], Any]
    _: KW_ONLY
    aggregate: str = "sum"

    def __post_init__(self) -> None:
        if self.aggregate not in _REDUCERS:
            raise ConfigError(
                f"MessagePassing: aggregate must be one of {sorted(_REDUCERS)}, given "
                f"{self.aggregate!r}"
            )

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
class GraphPool(Layer):
    """Graph-level readout: reduce each graph's real node features to one vector.

    Args:
        reduction: ``"sum"``, ``"mean"`` or ``"max"`` over the nodes of each graph.

    Input: a :class:`GraphBatch` with ``nodes (N, F)``. Output ``(G, F)``; a graph slot with no
    real node (padding) gives 0. No params.
    """

    reduction: str = "mean"

    def __post_init__(self) -> None:
        if self.reduction not in _REDUCERS:
            raise ConfigError(
                f"GraphPool: reduction must be one of {sorted(_REDUCERS)}, given {self.reduction!r}"
            )

    def init(self, key: PRNGKey, x: Any) -> tuple[Params, State]:
        _check_graph(self, x)
        return {}, {}

    def compute(self, params: Params, state: State, x: Any, call: Call) -> tuple[Array, State]:
        g = _check_graph(self, x)
        reduce = _REDUCERS[self.reduction]
        return reduce(g.nodes, g.node_graph, g.num_graphs, mask=g.node_mask), {}

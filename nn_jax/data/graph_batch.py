"""Graph containers and their batching on the host (NumPy): a graph, a padded batch, packing.

**The batch format.** Many graphs of different sizes are packed into one :class:`GraphBatch` of
fixed sizes (``N`` node slots, ``E`` edge slots, ``G`` graph slots) by :func:`batch_graphs`, so a
jitted step compiles once for every batch. Node ``i``'s features are ``nodes[i]``; edge ``k``
goes from ``senders[k]`` to ``receivers[k]`` (messages flow sender -> receiver; an undirected
graph lists each edge in both directions); ``node_graph[i]`` is the graph node ``i`` belongs to.
``node_mask``, ``edge_mask`` and ``graph_mask`` say which slots are real: **the masks are the
source of truth**, and every layer of :mod:`nn_jax.graph` honours them. :func:`batch_graphs` also
points padding edges at node ``N`` and padding nodes at graph ``G`` (one past the end), so even a
raw ``jax.ops.segment_sum`` drops them.

>>> import numpy as np
>>> triangle = Graph(np.ones((3, 2)), senders=np.array([0, 1, 2]), receivers=np.array([1, 2, 0]))
>>> edge = Graph(np.ones((2, 2)), senders=np.array([0, 1]), receivers=np.array([1, 0]))
>>> g = batch_graphs([triangle, edge], max_nodes=8, max_edges=8, max_graphs=3)
>>> g.nodes.shape, g.senders.tolist(), g.node_graph.tolist()
((8, 2), [0, 1, 2, 3, 4, 8, 8, 8], [0, 0, 0, 1, 1, 3, 3, 3])
>>> g.node_mask.tolist()
[True, True, True, True, True, False, False, False]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from nn_jax.errors import ArgumentError, ShapeError

__all__ = ["Graph", "GraphBatch", "batch_graphs"]


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
        ArgumentError: ``graphs`` is not a sequence of graphs (e.g. one graph alone).
        ShapeError: the graphs do not fit the sizes, or their arrays are inconsistent.
    """
    if isinstance(graphs, Graph | GraphBatch) or not isinstance(graphs, Sequence):
        raise ArgumentError(
            f"batch_graphs: expected a list of Graph, given a {type(graphs).__name__}; for one "
            "graph pass [graph]"
        )
    for k, g in enumerate(graphs):
        if not isinstance(g, tuple) or len(g) not in (3, 4):
            raise ArgumentError(
                f"batch_graphs: graph {k} must be a Graph(nodes, senders, receivers[, edges]), "
                f"given a {type(g).__name__}"
            )
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
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int | np.integer) or limit < needed
        ):
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

"""Graph datasets: Zachary's karate club (bundled with networkx) and synthetic graph sets.

Graphs come as :class:`~nn_jax.data.Graph` (host NumPy arrays, undirected edges listed in both
directions); pack them with :func:`~nn_jax.data.batch_graphs`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from nn_jax.data.graph_batch import Graph
from nn_jax.errors import ConfigError, ShapeError

__all__ = [
    "KARATE_SEEDS",
    "GraphSet",
    "KarateClub",
    "from_networkx",
    "load_karate_club",
    "make_cycles_and_paths",
]

KARATE_SEEDS: tuple[int, ...] = (0, 1, 32, 33)
"""The labelled nodes of the 4-seed protocol: the two leaders, Mr. Hi (0) and the Officer (33),
and each one's highest-degree follower besides the other leader (1, degree 9, with Mr. Hi; 32,
degree 12, with the Officer). Every other node (30) is a test node."""


def _networkx() -> Any:
    try:
        import networkx
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("graph datasets need networkx: pip install 'nn-jax[examples]'") from e
    return networkx


def from_networkx(graph: Any, node_features: np.ndarray | None = None) -> Graph:
    """A :class:`~nn_jax.data.Graph` from a networkx graph (nodes renumbered ``0..n-1``).

    An undirected graph's edges are listed in both directions (``2m`` edges), a directed graph's
    once. Edge attributes are not read.

    Args:
        graph: a ``networkx.Graph`` or ``DiGraph`` with ``n`` nodes and ``m`` edges.
        node_features: ``(n, F)`` in ``graph.nodes`` order; default: ones ``(n, 1)``.
    """
    index = {node: i for i, node in enumerate(graph.nodes)}
    pairs = np.array([(index[u], index[v]) for u, v in graph.edges], np.int32).reshape(-1, 2)
    if not graph.is_directed():
        pairs = np.concatenate([pairs, pairs[:, ::-1]])
    n = len(index)
    x = np.ones((n, 1), np.float32) if node_features is None else np.asarray(node_features)
    if x.ndim != 2 or len(x) != n:
        raise ShapeError(f"from_networkx: node_features must have shape ({n}, F), given {x.shape}")
    return Graph(x, senders=pairs[:, 0].copy(), receivers=pairs[:, 1].copy())


class KarateClub(NamedTuple):
    """Zachary's karate club: one graph, a club label per node.

    Fields:
        graph: 34 nodes with one-hot identity features ``(34, 34)`` (no other information, as in
            Kipf & Welling's karate example), 156 directed edges (78 undirected).
        labels: ``(34,)`` int32, 0 for ``"Mr. Hi"`` and 1 for ``"Officer"`` (networkx's
            ``'club'`` node attribute: the faction each member joined after the split).
        class_names: ``("Mr. Hi", "Officer")``.
    """

    graph: Graph
    labels: np.ndarray
    class_names: tuple[str, ...]


def load_karate_club() -> KarateClub:
    """Zachary's karate club from ``networkx.karate_club_graph()`` (bundled, no download).

    The classic task: from a few labelled members (:data:`KARATE_SEEDS`), predict the club of
    every other member.

    Reference: W. Zachary, "An Information Flow Model for Conflict and Fission in Small Groups",
    J. Anthropological Research 33 (1977).
    """
    g = _networkx().karate_club_graph()
    class_names = ("Mr. Hi", "Officer")
    labels = np.array([class_names.index(g.nodes[i]["club"]) for i in g.nodes], np.int32)
    graph = from_networkx(g, np.eye(g.number_of_nodes(), dtype=np.float32))
    return KarateClub(graph, labels, class_names)


class GraphSet(NamedTuple):
    """A graph-classification set: ``graphs[k]`` has label ``labels[k]``."""

    graphs: tuple[Graph, ...]
    labels: np.ndarray


def make_cycles_and_paths(
    num_graphs: int, *, min_nodes: int = 4, max_nodes: int = 12, seed: int = 0
) -> GraphSet:
    """Cycles (label 1) and paths (label 0) of random sizes, with uninformative node features.

    Each graph has ``n`` nodes, ``n`` uniform in ``[min_nodes, max_nodes]``, features ones
    ``(n, 1)`` and shuffled node numbering; the label is a coin flip. A cycle has ``n`` edges and
    every degree 2; a path of the same size has ``n - 1`` edges and two ends of degree 1, so a
    model must read the structure (not the size) to tell them apart.

    Args:
        num_graphs: how many graphs.
        min_nodes, max_nodes: the size range (``3 <= min_nodes <= max_nodes``).
        seed: seed of the sizes, labels and numbering.
    """
    for name, value in (
        ("num_graphs", num_graphs),
        ("min_nodes", min_nodes),
        ("max_nodes", max_nodes),
    ):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
            raise ConfigError(f"make_cycles_and_paths: {name} must be an int >= 0, given {value!r}")
    if not 3 <= min_nodes <= max_nodes:
        raise ConfigError(
            "make_cycles_and_paths: need 3 <= min_nodes <= max_nodes, given "
            f"min_nodes={min_nodes}, max_nodes={max_nodes}"
        )
    nx = _networkx()
    rng = np.random.default_rng(seed)
    graphs, labels = [], []
    for _ in range(num_graphs):
        n = int(rng.integers(min_nodes, max_nodes + 1))
        label = int(rng.integers(2))
        g = nx.cycle_graph(n) if label else nx.path_graph(n)
        g = nx.relabel_nodes(g, dict(enumerate(rng.permutation(n).tolist())))
        graphs.append(from_networkx(nx.convert_node_labels_to_integers(g, ordering="sorted")))
        labels.append(label)
    return GraphSet(tuple(graphs), np.array(labels, np.int32))

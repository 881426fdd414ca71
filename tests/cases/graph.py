"""Graph layers and models; inputs are padded GraphBatches (two graphs, padding in every slot).

``grad_input=False`` everywhere: a GraphBatch holds integer indices and boolean masks, which the
conformance suite's input-gradient check cannot differentiate; tests/test_graph.py checks the
gradient with respect to the node features by finite differences instead.
"""

import jax
import numpy as np

from nn_jax.data import Graph, GraphBatch, batch_graphs
from nn_jax.dense import Dense
from nn_jax.graph import GATConv, GCNConv, GraphPool, MessagePassing, SAGEConv
from nn_jax.models.gnn import GCN, GraphClassifier
from nn_jax.models.mlp import MLP
from tests.cases import Case


def random_graph(
    g: np.random.Generator, num_nodes: int, num_edges: int, features: int, edge_features: int = 0
) -> Graph:
    """A random directed graph without self loops (edges may repeat), standard normal features."""
    senders = g.integers(0, num_nodes, num_edges)
    receivers = (senders + g.integers(1, num_nodes, num_edges)) % num_nodes
    edges = g.standard_normal((num_edges, edge_features)) if edge_features else None
    return Graph(g.standard_normal((num_nodes, features)), senders, receivers, edges)


def random_batch(features: int = 3, edge_features: int = 0):
    """An input maker: graphs of 3 and 4 nodes padded to 9 node, 12 edge and 3 graph slots."""

    def make(g: np.random.Generator) -> GraphBatch:
        graphs = [
            random_graph(g, 3, 4, features, edge_features),
            random_graph(g, 4, 6, features, edge_features),
        ]
        return batch_graphs(graphs, max_nodes=9, max_edges=12, max_graphs=3)

    return make


def _case(id: str, layer, make_input=None, **kw) -> Case:
    return Case(id, layer, make_input or random_batch(), grad_input=False, **kw)


CASES = [
    _case("gcn_conv", GCNConv(4)),
    _case("gcn_conv_no_bias", GCNConv(2, use_bias=False)),
    _case("gat_conv", GATConv(3, heads=2)),
    _case("gat_conv_mean_no_loops", GATConv(3, heads=2, concat=False, add_self_loops=False)),
    _case("gat_conv_highest_precision", GATConv(2, precision="highest", use_bias=False)),
    _case("sage_conv", SAGEConv(4)),
    _case("sage_conv_normalize", SAGEConv(3, normalize=True)),
    _case("sage_conv_no_bias", SAGEConv(2, use_bias=False)),
    _case(
        "message_passing_edges",
        MessagePassing(MLP((5,), activation="tanh"), Dense(4), aggregate="mean"),
        random_batch(edge_features=2),
    ),
    _case("message_passing_sum", MessagePassing(Dense(4), jax.nn.tanh)),
    _case("message_passing_max", MessagePassing(Dense(4), Dense(2), aggregate="max")),
    _case("graph_pool_sum", GraphPool("sum")),
    _case("graph_pool_mean", GraphPool("mean")),
    _case("graph_pool_max", GraphPool("max")),
    _case("gcn", GCN((5, 2), activation="tanh")),
    _case("graph_classifier", GraphClassifier((GCNConv(4),), 3, activation="tanh", readout="sum")),
    _case(
        "graph_classifier_gat",
        GraphClassifier((GATConv(4, heads=2), GATConv(4, heads=2)), 2, readout="max"),
    ),
]

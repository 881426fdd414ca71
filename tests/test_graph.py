"""Graph batches and layers: NumPy references (dense GCN formula, GAT/SAGE/message-passing loops),
padding invariance, attention normalization, input gradients, errors, single compilation."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nn_jax import initializers, losses
from nn_jax.data import Graph, GraphBatch, batch_graphs
from nn_jax.dense import Dense
from nn_jax.errors import ConfigError, ParamsError, ShapeError
from nn_jax.graph import GATConv, GCNConv, GraphPool, MessagePassing, SAGEConv
from nn_jax.inspect import apply_with_intermediates
from nn_jax.models.gnn import GCN, GraphClassifier
from nn_jax.train import make_train_step
from tests.cases.graph import random_graph

KEY = jax.random.key(0)


def _graphs(seed=0, sizes=((5, 9), (3, 4), (6, 12)), features=4, edge_features=0):
    g = np.random.default_rng(seed)
    return [random_graph(g, n, e, features, edge_features) for n, e in sizes]


def _undirected(graph: Graph) -> Graph:
    return Graph(
        graph.nodes,
        np.concatenate([graph.senders, graph.receivers]),
        np.concatenate([graph.receivers, graph.senders]),
    )


def _adjacency(graph: Graph) -> np.ndarray:
    """``A[r, s]`` = number of edges ``s -> r`` (an independent NumPy construction)."""
    n = len(graph.nodes)
    a = np.zeros((n, n))
    for s, r in zip(graph.senders, graph.receivers, strict=True):
        a[r, s] += 1
    return a


def _f64(tree):
    return jax.tree.map(lambda a: np.asarray(a, np.float64), tree)


# --------------------------------------------------------------------------------------------
# batch_graphs


def test_batch_graphs_layout():
    a = Graph(np.arange(6.0).reshape(3, 2), np.array([0, 1]), np.array([1, 2]), np.ones((2, 1)))
    b = Graph(np.full((2, 2), 7.0), np.array([1]), np.array([0]), np.full((1, 1), 3.0))
    g = batch_graphs([a, b], max_nodes=7, max_edges=5, max_graphs=4)
    assert isinstance(g, GraphBatch)
    assert (g.num_nodes, g.num_edges, g.num_graphs) == (7, 5, 4)
    np.testing.assert_array_equal(g.nodes[:5], np.concatenate([a.nodes, b.nodes]))
    np.testing.assert_array_equal(g.nodes[5:], 0)
    np.testing.assert_array_equal(g.senders, [0, 1, 4, 7, 7])  # b's edge 1 -> 0 becomes 4 -> 3
    np.testing.assert_array_equal(g.receivers, [1, 2, 3, 7, 7])
    np.testing.assert_array_equal(g.edges[:, 0], [1, 1, 3, 0, 0])
    np.testing.assert_array_equal(g.node_graph, [0, 0, 0, 1, 1, 4, 4])
    np.testing.assert_array_equal(g.node_mask, [1, 1, 1, 1, 1, 0, 0])
    np.testing.assert_array_equal(g.edge_mask, [1, 1, 1, 0, 0])
    np.testing.assert_array_equal(g.graph_mask, [1, 1, 0, 0])
    assert g.senders.dtype == g.node_graph.dtype == np.int32 and g.node_mask.dtype == bool
    tight = batch_graphs([a, b])
    assert (tight.num_nodes, tight.num_edges, tight.num_graphs) == (5, 3, 2)
    assert batch_graphs([a._replace(edges=None)]).edges is None
    isolated = batch_graphs([Graph(np.ones((2, 2)), [], []), a._replace(edges=None)])
    np.testing.assert_array_equal(isolated.senders, [2, 3])
    np.testing.assert_array_equal(isolated.node_graph, [0, 0, 1, 1, 1])


def test_batch_graphs_errors():
    a = Graph(np.ones((3, 2)), np.array([0, 1]), np.array([1, 2]))
    with pytest.raises(ShapeError, match=r"max_nodes must be an int >= 6.*given 5"):
        batch_graphs([a, a], max_nodes=5)
    with pytest.raises(ShapeError, match=r"max_edges must be an int >= 4.*given 3"):
        batch_graphs([a, a], max_edges=3)
    with pytest.raises(ShapeError, match=r"max_graphs must be an int >= 2.*given 1"):
        batch_graphs([a, a], max_graphs=1)
    with pytest.raises(
        ShapeError, match=r"graph 1: nodes must have shape \(n, 2\).*given \(3, 4\)"
    ):
        batch_graphs([a, a._replace(nodes=np.ones((3, 4)))])
    with pytest.raises(ShapeError, match=r"graph 0: receivers must index its 3 nodes.*0\.\.3"):
        batch_graphs([a._replace(receivers=np.array([0, 3]))])
    with pytest.raises(ShapeError, match="every graph has edge features or none"):
        batch_graphs([a, a._replace(edges=np.ones((2, 1)))])
    with pytest.raises(ShapeError, match="at least one graph"):
        batch_graphs([])


# --------------------------------------------------------------------------------------------
# Layers against NumPy references (float64)


@pytest.mark.parametrize("directed", [False, True])
def test_gcn_equals_dense_formula(directed):
    graphs = _graphs(seed=1)
    if not directed:
        graphs = [_undirected(g) for g in graphs]
    layer = GCNConv(3, b_init=initializers.normal(1.0))
    with jax.enable_x64(True):
        for graph in graphs:
            g = batch_graphs([graph], max_nodes=len(graph.nodes) + 2, max_edges=40)
            params = _f64(layer.init(KEY, g)[0])
            got = np.asarray(layer(params, g))
            a_hat = _adjacency(graph) + np.eye(len(graph.nodes))
            d_inv_sqrt = np.diag(a_hat.sum(axis=1) ** -0.5)
            w, b = params["linear"]["w"], params["b"]
            expected = d_inv_sqrt @ a_hat @ d_inv_sqrt @ graph.nodes @ w + b
            np.testing.assert_allclose(got[: len(graph.nodes)], expected, rtol=1e-12, atol=1e-12)
            np.testing.assert_array_equal(got[len(graph.nodes) :], 0)


def _leaky_relu(x, slope):
    return np.where(x > 0, x, slope * x)


def _gat_reference(layer: GATConv, params, graph: Graph):
    """A per-node loop over incoming edges: Veličković et al. (2018), eqs. (1)-(4)."""
    n, h, f = len(graph.nodes), layer.heads, layer.features
    z = (graph.nodes @ params["linear"]["w"]).reshape(n, h, f)
    out = np.zeros((n, h, f))
    alphas = np.zeros((len(graph.senders) + n, h))
    for i in range(n):
        edge_ids = list(np.flatnonzero(graph.receivers == i))
        sources = [graph.senders[k] for k in edge_ids]
        if layer.add_self_loops:
            edge_ids.append(len(graph.senders) + i)
            sources.append(i)
        if not sources:
            continue
        for k in range(h):
            e = np.array(
                [params["att_src"][k] @ z[j, k] + params["att_dst"][k] @ z[i, k] for j in sources]
            )
            e = _leaky_relu(e, layer.negative_slope)
            alpha = np.exp(e - e.max()) / np.exp(e - e.max()).sum()
            alphas[edge_ids, k] = alpha
            out[i, k] = alpha @ z[sources, k]
    out = out.reshape(n, h * f) if layer.concat else out.mean(axis=1)
    return out + params["b"], alphas


@pytest.mark.parametrize(
    "layer",
    [GATConv(3, heads=2), GATConv(2, heads=3, concat=False, add_self_loops=False)],
    ids=["concat_loops", "mean_no_loops"],
)
def test_gat_matches_reference_and_attention_sums_to_one(layer):
    layer = dataclasses.replace(layer, b_init=initializers.normal(1.0))
    graph = _graphs(seed=2, sizes=((7, 14),))[0]
    n, e = len(graph.nodes), len(graph.senders)
    with jax.enable_x64(True):
        g = batch_graphs([graph], max_nodes=n + 3, max_edges=e + 5)
        params = _f64(layer.init(KEY, g)[0])
        y, _, taps = apply_with_intermediates(layer, params, {}, g, capture="weights")
        got, alpha = np.asarray(y), np.asarray(taps["weights"])
    expected, expected_alpha = _gat_reference(layer, params, graph)
    np.testing.assert_allclose(got[:n], expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(got[n:], 0)
    # Rows: E edge slots (e real), then N self-loop slots (n real) when add_self_loops.
    real_rows = np.r_[:e, (e + 5) + np.arange(n)] if layer.add_self_loops else np.arange(e)
    np.testing.assert_allclose(alpha[real_rows], expected_alpha[: len(real_rows)], rtol=1e-10)
    padding_rows = np.setdiff1d(np.arange(len(alpha)), real_rows)
    np.testing.assert_array_equal(alpha[padding_rows], 0)
    receivers = np.r_[graph.receivers, np.arange(n)] if layer.add_self_loops else graph.receivers
    sums = np.stack([alpha[real_rows][receivers == i].sum(axis=0) for i in range(n)])
    has_input = np.array([np.any(receivers == i) for i in range(n)])
    np.testing.assert_allclose(sums[has_input], 1.0, rtol=1e-12)
    np.testing.assert_array_equal(sums[~has_input], 0)


def test_sage_matches_mean_aggregator_reference():
    layer = SAGEConv(3, b_init=initializers.normal(1.0))
    graph = _graphs(seed=3, sizes=((6, 7),))[0]
    n = len(graph.nodes)
    with jax.enable_x64(True):
        g = batch_graphs([graph], max_nodes=n + 2, max_edges=10)
        params = _f64(layer.init(KEY, g)[0])
        got = np.asarray(layer(params, g))
        normalized = np.asarray(dataclasses.replace(layer, normalize=True)(params, g))
    neighbours = np.zeros_like(graph.nodes)
    for i in range(n):
        sources = graph.senders[graph.receivers == i]
        if len(sources):
            neighbours[i] = graph.nodes[sources].mean(axis=0)
    assert np.any(np.all(neighbours == 0, axis=1))  # the case "no in-neighbour" is covered
    p_self, p_neigh = params["self"], params["neighbours"]
    expected = graph.nodes @ p_self["w"] + neighbours @ p_neigh["w"] + p_neigh["b"]
    np.testing.assert_allclose(got[:n], expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(
        normalized[:n], expected / np.linalg.norm(expected, axis=1, keepdims=True), rtol=1e-12
    )


@pytest.mark.parametrize("aggregate", ["sum", "mean", "max"])
def test_message_passing_matches_reference(aggregate):
    layer = MessagePassing(Dense(4), Dense(3), aggregate=aggregate)
    graph = _graphs(seed=4, sizes=((5, 8),), edge_features=2)[0]
    n = len(graph.nodes)
    with jax.enable_x64(True):
        g = batch_graphs([graph], max_nodes=n + 2, max_edges=11)
        params = _f64(layer.init(KEY, g)[0])
        got = np.asarray(layer(params, g))
    pm, pu = params["message"], params["update"]
    inputs = np.concatenate(
        [graph.nodes[graph.senders], graph.nodes[graph.receivers], graph.edges], 1
    )
    messages = inputs @ pm["w"] + pm["b"]
    reduce = {"sum": np.sum, "mean": np.mean, "max": np.max}[aggregate]
    aggregated = np.zeros((n, 4))
    for i in range(n):
        if np.any(graph.receivers == i):
            aggregated[i] = reduce(messages[graph.receivers == i], axis=0)
    expected = np.concatenate([graph.nodes, aggregated], 1) @ pu["w"] + pu["b"]
    np.testing.assert_allclose(got[:n], expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("reduction", ["sum", "mean", "max"])
def test_graph_pool_matches_per_graph_reduction(reduction):
    graphs = _graphs(seed=5)
    g = batch_graphs(graphs, max_nodes=20, max_edges=30, max_graphs=5)
    got = np.asarray(GraphPool(reduction)({}, g))
    reduce = {"sum": np.sum, "mean": np.mean, "max": np.max}[reduction]
    expected = np.stack([reduce(graph.nodes, axis=0) for graph in graphs])
    np.testing.assert_allclose(got[:3], expected, rtol=1e-6)
    np.testing.assert_array_equal(got[3:], 0)  # padding graph slots


@pytest.mark.parametrize(
    "make",
    [GCNConv, functools.partial(GATConv, heads=2), SAGEConv],
    ids=["gcn_conv", "gat_conv", "sage_conv"],
)
def test_conv_passes_dense_options_to_its_projections(make):
    g = batch_graphs(_graphs(seed=10))
    layer = make(
        3, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16, precision=jax.lax.Precision.HIGHEST
    )
    params, _ = layer.init(KEY, g)
    assert {a.dtype for a in jax.tree.leaves(params)} == {jnp.dtype(jnp.bfloat16)}
    assert layer(params, g).dtype == jnp.bfloat16
    jaxpr = str(jax.make_jaxpr(layer.__call__)(params, g))
    dots = jaxpr.count("dot_general[")
    assert dots >= 1 and jaxpr.count("precision=(Precision.HIGHEST, Precision.HIGHEST)") == dots


# --------------------------------------------------------------------------------------------
# Padding never changes real outputs


LAYERS = {
    "gcn_conv": GCNConv(3),
    "gat_conv": GATConv(2, heads=2),
    "sage_conv": SAGEConv(3, normalize=True),
    "message_passing": MessagePassing(Dense(3), Dense(2), aggregate="max"),
    "graph_pool_max": GraphPool("max"),
    "gcn": GCN((4, 2)),
    "graph_classifier": GraphClassifier((SAGEConv(4),), 2, readout="mean"),
}
GRAPH_LEVEL = {"graph_pool_max", "graph_classifier"}


def _corrupt_padding(g: GraphBatch, seed: int) -> GraphBatch:
    """Fill every padding slot with large values and indices into real nodes and graphs."""
    rng = np.random.default_rng(seed)
    real_nodes, real_edges = int(g.node_mask.sum()), int(g.edge_mask.sum())
    pad_n, pad_e = ~g.node_mask, ~g.edge_mask
    nodes, edges = g.nodes.copy(), g.edges.copy()
    senders, receivers, node_graph = g.senders.copy(), g.receivers.copy(), g.node_graph.copy()
    nodes[pad_n] = 100 * rng.standard_normal((pad_n.sum(), nodes.shape[1]))
    edges[pad_e] = 100 * rng.standard_normal((pad_e.sum(), edges.shape[1]))
    senders[pad_e] = rng.integers(0, real_nodes, pad_e.sum())
    receivers[pad_e] = rng.integers(0, real_nodes, pad_e.sum())
    node_graph[pad_n] = 0
    assert real_edges < len(senders)
    return g._replace(
        nodes=nodes, edges=edges, senders=senders, receivers=receivers, node_graph=node_graph
    )


@pytest.mark.parametrize("name", LAYERS)
def test_padding_never_changes_real_outputs(name):
    layer = LAYERS[name]
    graphs = _graphs(seed=6, edge_features=2)
    batch = _corrupt_padding(batch_graphs(graphs, max_nodes=20, max_edges=32, max_graphs=4), 0)
    params, _ = layer.init(KEY, batch)
    together = np.asarray(jax.jit(layer.__call__)(params, batch))
    start = 0
    for k, graph in enumerate(graphs):
        alone = np.asarray(layer(params, batch_graphs([graph])))
        n = len(graph.nodes)
        part = together[k : k + 1] if name in GRAPH_LEVEL else together[start : start + n]
        np.testing.assert_allclose(part, alone, rtol=2e-5, atol=2e-5)
        start += n
    if name not in GRAPH_LEVEL:
        np.testing.assert_array_equal(together[start:], 0)


# --------------------------------------------------------------------------------------------
# Gradients with respect to node features (the conformance suite checks params only)


@pytest.mark.parametrize("name", ["gcn_conv", "gat_conv", "sage_conv", "gcn"])
def test_node_feature_gradients_match_finite_differences(name):
    layer = LAYERS[name]
    with jax.enable_x64(True):
        g = batch_graphs(_graphs(seed=7), max_nodes=16, max_edges=28)
        g = g._replace(nodes=g.nodes.astype(np.float64))
        params = _f64(layer.init(KEY, g)[0])

        @jax.jit
        def loss(nodes):
            y = layer(params, g._replace(nodes=nodes))
            return jnp.sum(jnp.sin(y) * jnp.cos(jnp.arange(y.size).reshape(y.shape)))

        nodes = jnp.asarray(g.nodes)
        direction = np.random.default_rng(0).standard_normal(nodes.shape) * g.node_mask[:, None]
        analytic = np.vdot(np.asarray(jax.grad(loss)(nodes)), direction)
        eps = 1e-6
        numeric = (float(loss(nodes + eps * direction)) - float(loss(nodes - eps * direction))) / (
            2 * eps
        )
        assert abs(analytic - numeric) <= 1e-6 * max(1.0, abs(numeric))


# --------------------------------------------------------------------------------------------
# Errors


def test_errors_name_layer_expected_and_given():
    g = batch_graphs(_graphs(seed=8))
    params, _ = GCNConv(3).init(KEY, g)
    with pytest.raises(
        ShapeError,
        match=r"GCNConv at <root>: expected a GraphBatch.*given an array of shape \(14, 4\)",
    ):
        GCNConv(3)(params, g.nodes)
    wider = g._replace(nodes=np.ones((g.num_nodes, 5), np.float32))
    with pytest.raises(
        ShapeError, match=r"Dense at 'linear': input last axis has size 5.*expected 4"
    ):
        GCNConv(3)(params, wider)
    with pytest.raises(ShapeError, match=r"GraphBatch.node_mask must be a 1-D bool array.*int"):
        GCNConv(3)(params, g._replace(node_mask=g.node_mask.astype(int)))
    with pytest.raises(ShapeError, match=r"GraphBatch.receivers has length 3, expected 25"):
        GCNConv(3)(params, g._replace(receivers=g.receivers[:3]))
    with pytest.raises(
        ShapeError, match=r"GraphBatch.nodes \(N, F\) must have rank 2, given rank 1"
    ):
        GCNConv(3)(params, g._replace(nodes=g.nodes[:, 0]))
    with pytest.raises(ParamsError, match="GATConv at <root>: missing parameter 'att_src'"):
        GATConv(3)(params, g)
    with pytest.raises(ShapeError, match=r"GCNConv at 'conv_0': expected a GraphBatch"):
        GCN((2,)).init(KEY, g.nodes)
    for make, match in [
        (lambda: GCNConv(0), "GCNConv: features must be a positive int, given 0"),
        (lambda: GATConv(2, heads=0), "GATConv: heads must be a positive int, given 0"),
        (lambda: GraphPool("median"), r"reduction must be one of \['max', 'mean', 'sum'\]"),
        (lambda: MessagePassing(Dense(2), Dense(2), aggregate="min"), "aggregate must be one of"),
        (lambda: GCN(()), "GCN: widths must be a non-empty tuple"),
        (lambda: GraphClassifier((GCNConv(2),), 2, readout="x"), "reduction must be one of"),
        (lambda: GraphClassifier((2,), 2), "convs must be a non-empty tuple of graph layers"),
    ]:
        with pytest.raises(ConfigError, match=match):
            make()


def test_message_layer_must_keep_the_edge_axis():
    g = batch_graphs(_graphs(seed=9))
    layer = MessagePassing(lambda m: m.sum(axis=0), Dense(2))
    with pytest.raises(
        ShapeError, match=r"message layer must return \(E, M\) = \(25, M\), given shape \(8,\)"
    ):
        layer.init(KEY, g)


# --------------------------------------------------------------------------------------------
# A training step from the public API compiles once for every padded batch


def test_graph_classifier_train_step_compiles_once():
    model = GraphClassifier((GATConv(8, heads=2),), 2)
    optimizer = optax.adam(1e-2)

    def loss_fn(logits, targets):
        labels, mask = targets
        return losses.softmax_cross_entropy_with_integer_labels(logits, labels, mask=mask)

    sizes = dict(max_nodes=24, max_edges=40, max_graphs=4)
    batches = []
    for seed, shape in enumerate([((5, 9), (3, 4)), ((6, 12), (4, 5), (2, 1))]):
        g = batch_graphs(_graphs(seed=seed, sizes=shape), **sizes)
        labels = np.zeros(4, np.int32)
        batches.append((g, (labels, g.graph_mask)))
    params, _ = model.init(KEY, batches[0][0])
    step = make_train_step(model, loss_fn, optimizer)
    opt_state = optimizer.init(params)
    for batch in batches * 2:
        params, opt_state, loss = step(params, opt_state, batch)
        assert np.isfinite(float(loss))
    assert step._cache_size() == 1

"""Value checks (issue 13): a wrong *value* - a label past the class count, a probability outside
[0, 1], an edge index past the node count, a length past the sequence, a position past the
table, a decode-cache index past its end - is a named ``ValueRangeError``, never a wrong number.

Each check is exercised eagerly (concrete inputs: the error names the layer path or the function,
the allowed range and the values given); a few representative ones also under ``jax.jit`` in
checked mode (``nj.checked``). Valid inputs pass and give the unchecked numbers (NumPy references
for two), masked-out entries are not checked, and outside checked mode a traced check traces
nothing at all.
"""

from __future__ import annotations

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nn_jax as nj
from nn_jax import losses as L
from nn_jax import metrics as M
from nn_jax.data import Graph, batch_graphs
from nn_jax.errors import ConfigError, ShapeError, ValueRangeError

KEY = jax.random.key(0)


def raises(*fragments: str):
    """``pytest.raises(ValueRangeError)`` whose message holds every fragment, in order."""
    return pytest.raises(ValueRangeError, match=".*".join(map(re.escape, fragments)))


# --------------------------------------------------------------------------------------------
# Losses and metrics: functions, so messages start with the function's name.

LOGITS = jnp.array([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [1.0, -2.0, 0.0], [0.0, 0.0, 3.0]])
LABELS = jnp.array([0, 2, 1, 2])


@pytest.mark.parametrize(
    ("fn_name", "fn", "name"),
    [
        ("softmax_cross_entropy_with_integer_labels", L.softmax_cross_entropy_with_integer_labels,
         "logits"),
        ("accuracy", M.accuracy, "logits_or_probs"),
        ("top_k_accuracy", functools.partial(M.top_k_accuracy, k=2), "logits"),
    ],
    ids=["cross_entropy", "accuracy", "top_k_accuracy"],
)  # fmt: skip
def test_integer_labels_past_the_classes(fn_name, fn, name):
    for bad, given in (([0, 3, 1, 2], "[0, 3]"), ([0, -1, 1, 2], "[-1, 2]")):
        with raises(
            f"{fn_name}: labels (class indices for {name} of shape (4, 3)) must lie in [0, 3), "
            f"given values in {given}"
        ):
            fn(LOGITS, jnp.array(bad))
    # A masked-out label is padding: it may hold anything (here -100, PyTorch's ignore_index).
    mask = jnp.array([True, False, True, True])
    padded = jnp.array([0, -100, 1, 2])
    np.testing.assert_allclose(fn(LOGITS, padded, mask=mask), fn(LOGITS, LABELS, mask=mask))


def test_single_column_accuracy_takes_binary_labels():
    probs = jnp.array([[0.7], [0.2]])
    assert float(M.accuracy(probs, jnp.array([1, 0]))) == 1.0
    with raises("accuracy: labels", "[0, 2)", "given values in [0, 2]"):
        M.accuracy(probs, jnp.array([2, 0]))


def test_top_k_larger_than_the_class_count_is_a_config_error():
    assert float(M.top_k_accuracy(LOGITS, LABELS, 3)) == 1.0  # k == C: every label is in
    with pytest.raises(ConfigError, match=r"top_k_accuracy: k=4 is more than the 3 classes"):
        M.top_k_accuracy(LOGITS, LABELS, 4)


def test_probabilities_and_targets_outside_the_unit_interval():
    p, t = jnp.array([0.2, 0.9, 0.5]), jnp.array([0.0, 1.0, 0.5])
    with raises("binary_cross_entropy: probs must lie in [0, 1], given values in [0.2, 1.5]"):
        L.binary_cross_entropy(jnp.array([0.2, 1.5, 0.5]), t)
    with raises("binary_cross_entropy: targets must lie in [0, 1], given values in [-1.0, 1.0]"):
        L.binary_cross_entropy(p, jnp.array([-1.0, 1.0, 0.5]))
    with raises("binary_cross_entropy_with_logits: targets", "[0, 1]", "[0.0, 2.0]"):
        L.binary_cross_entropy_with_logits(p, jnp.array([0.0, 2.0, 0.5]))
    with raises("binary_accuracy: targets must lie in [0, 1], given values in [0, 2]"):
        M.binary_accuracy(p, jnp.array([0, 2, 1]))
    with raises("softmax_cross_entropy: labels (target probabilities)", "[1.0, 2.0]"):
        L.softmax_cross_entropy(LOGITS, jnp.full(LOGITS.shape, 2.0).at[0, 0].set(1.0))
    log_q = jax.nn.log_softmax(LOGITS)
    with raises("kl_divergence: log_predictions (log-probabilities) must lie in [-inf, 0]"):
        L.kl_divergence(jax.nn.softmax(LOGITS), jax.nn.softmax(LOGITS))  # probs, not logs
    with raises("kl_divergence: targets (probabilities)", "[0, 1]"):
        L.kl_divergence(log_q, LOGITS)
    with raises("mse: mask weights must lie in [0, inf], given values in [-1.0, 1.0]"):
        L.mse(p, t, mask=jnp.array([1.0, -1.0, 1.0]))
    # Masked-out entries are not checked: a probability of 7 where the mask is False passes.
    mask = jnp.array([True, True, False])
    np.testing.assert_allclose(
        L.binary_cross_entropy(p.at[2].set(7.0), t, mask=mask),
        L.binary_cross_entropy(p, t, mask=mask),
    )
    with pytest.raises(ConfigError, match=r"huber: delta must be positive; got -1.0"):
        L.huber(p, t, delta=-1.0)


def test_valid_labels_give_the_numpy_cross_entropy():
    z, y = np.asarray(LOGITS, np.float64), np.asarray(LABELS)
    mask = np.array([True, True, False, True])
    lse = np.log(np.exp(z).sum(-1))
    per_example = lse - z[np.arange(4), y]
    got = L.softmax_cross_entropy_with_integer_labels(LOGITS, LABELS, mask=mask)
    np.testing.assert_allclose(float(got), per_example[mask].mean(), rtol=1e-6)
    np.testing.assert_allclose(
        float(M.accuracy(LOGITS, LABELS)), np.mean(z.argmax(-1) == y), rtol=1e-6
    )


# --------------------------------------------------------------------------------------------
# Segments and graphs.

SEGMENT_FNS = [nj.segment_sum, nj.segment_mean, nj.segment_max, nj.segment_softmax]


@pytest.mark.parametrize("fn", SEGMENT_FNS, ids=lambda f: f.__name__)
def test_segment_ids_past_the_segments(fn):
    data = jnp.array([1.0, 2.0, 3.0, 4.0])
    with raises(f"{fn.__name__}: segment_ids must lie in [0, 3), given values in [0, 3]"):
        fn(data, jnp.array([0, 1, 3, 2]), 3)
    with raises(f"{fn.__name__}: segment_ids", "given values in [-1, 2]"):
        fn(data, jnp.array([0, -1, 1, 2]), 3)
    # A masked row's id is not checked (padding may point anywhere).
    mask = jnp.array([True, True, False, True])
    fn(data, jnp.array([0, 1, 99, 2]), 3, mask=mask)
    with raises(f"{fn.__name__}: segment_ids of the unmasked rows", "[0, 5]"):
        fn(data, jnp.array([0, 1, 99, 5]), 3, mask=mask)


def test_segment_count_and_numpy_reference():
    with raises("segment_count: segment_ids must lie in [0, 2)"):
        nj.segment_count(jnp.array([0, 2]), 2)
    data = np.array([1.0, 2.0, 4.0, 8.0, 16.0])
    ids = np.array([0, 2, 2, 7, 0])
    mask = np.array([True, True, True, False, True])
    want = [data[(ids == s) & mask].sum() for s in range(3)]
    got = nj.segment_sum(data.astype(np.float32), ids, 3, mask=mask)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6)


@pytest.fixture(scope="module")
def graph():
    """Two triangles packed into 8 node, 8 edge and 3 graph slots (padding points past them)."""
    tri = Graph(np.ones((3, 2), np.float32), np.array([0, 1, 2]), np.array([1, 2, 0]))
    g = batch_graphs([tri, tri], max_nodes=8, max_edges=8, max_graphs=3)
    assert g.senders[-1] == 8 and g.node_graph[-1] == 3  # padding is out of range, and passes
    return g


def _with(g, name, index, value):
    array = np.array(getattr(g, name))
    array[index] = value
    return g._replace(**{name: array})


GRAPH_LAYERS = {
    "GCNConv": nj.GCNConv(4),
    "GATConv": nj.GATConv(2, heads=2),
    "SAGEConv": nj.SAGEConv(3),
    "MessagePassing": nj.MessagePassing(nj.Dense(4), nj.Dense(3), aggregate="max"),
}


@pytest.mark.parametrize(
    ("name", "field", "value", "given"),
    [
        ("GCNConv", "senders", 8, "[0, 8]"),
        ("GCNConv", "receivers", -2, "[-2, 5]"),
        ("GATConv", "receivers", 8, "[0, 8]"),
        ("SAGEConv", "senders", -1, "[-1, 5]"),
        ("MessagePassing", "receivers", 9, "[0, 9]"),
    ],
)
def test_edge_indices_past_the_nodes(graph, name, field, value, given):
    model = nj.Sequential(gnn=GRAPH_LAYERS[name])
    params, _ = model.init(KEY, graph)
    with raises(
        f"{name} at 'gnn': GraphBatch.{field} of the real edges (indices into the 8 node slots) "
        f"must lie in [0, 8), given values in {given}"
    ):
        model(params, _with(graph, field, 1, value))


def test_graph_pool_graph_ids_past_the_graphs(graph):
    pool = nj.Sequential(readout=nj.GraphPool("sum"))
    with raises("GraphPool at 'readout': GraphBatch.node_graph of the real nodes", "[0, 3)", "5]"):
        pool({}, _with(graph, "node_graph", 0, 5))
    np.testing.assert_allclose(pool({}, graph), [[3.0, 3.0], [3.0, 3.0], [0.0, 0.0]])


# --------------------------------------------------------------------------------------------
# Lengths, positions, the decode cache.


@pytest.fixture(scope="module")
def rnns():
    x = jnp.ones((2, 5, 3))
    models = {
        "rnn": nj.Sequential(rnn=nj.RNN(nj.GRUCell(4))),
        "bidirectional": nj.Sequential(bi=nj.Bidirectional(nj.RNN(nj.GRUCell(4)))),
        "stacked": nj.StackedRNN((nj.RNN(nj.GRUCell(4)), nj.RNN(nj.GRUCell(4)))),
    }
    return x, {k: (m, m.init(KEY, x)[0]) for k, m in models.items()}


@pytest.mark.parametrize(
    ("kind", "path"), [("rnn", "'rnn'"), ("bidirectional", "'bi/forward'"), ("stacked", "'0'")]
)
def test_lengths_past_the_sequence(rnns, kind, path):
    x, models = rnns
    model, params = models[kind]
    for lengths, given in (([5, 6], "[5, 6]"), ([-1, 2], "[-1, 2]")):
        with raises(f"RNN at {path}: side input 'lengths' must lie in [0, 5]", given):
            model(params, x, side={"lengths": jnp.array(lengths)})
    model(params, x, side={"lengths": jnp.array([5, 0])})  # both ends are valid


def test_lengths_in_masks_and_attention():
    with raises("sequence_mask: lengths must lie in [0, 4], given values in [1, 5]"):
        nj.sequence_mask(jnp.array([1, 5]), 4)
    np.testing.assert_array_equal(
        nj.sequence_mask(jnp.array([0, 2, 4]), 4), np.arange(4)[None] < np.array([[0], [2], [4]])
    )
    with raises("masked_mean_over_time: lengths must lie in [0, 3], given values in [-1, 3]"):
        nj.masked_mean_over_time(jnp.ones((2, 3, 2)), jnp.array([-1, 3]))
    mha = nj.Sequential(attn=nj.MultiHeadAttention(2))
    x = jnp.ones((2, 3, 4))
    params, _ = mha.init(KEY, x)
    with raises("MultiHeadAttention at 'attn': side input 'lengths' must lie in [0, 3]", "4]"):
        mha(params, x, side={"lengths": jnp.array([2, 4])})


def test_learned_positions_past_the_table():
    model = nj.Sequential(pos=nj.LearnedPositionalEmbedding(4))
    x = jnp.ones((1, 3, 2))
    params, _ = model.init(KEY, x)
    with raises("LearnedPositionalEmbedding at 'pos': side input 'positions'", "[0, 4)", "4]"):
        model(params, x, side={"positions": jnp.array([0, 1, 4])})
    decoder = nj.LearnedPositionalEmbedding(4, decode=True)
    params, state = decoder.init(KEY, jnp.ones((1, 4, 2)))
    _, state = decoder.apply(params, state, x)
    with raises("positions (decode state 'index' + 0..T-1) must lie in [0, 4)", "[3, 4]"):
        decoder.apply(params, state, jnp.ones((1, 2, 2)))


def test_attention_errors_name_the_layer():
    mha = nj.Sequential(attn=nj.MultiHeadAttention(2))
    x = jnp.ones((2, 3, 4))
    params, _ = mha.init(KEY, x)
    with pytest.raises(ShapeError, match=r"^MultiHeadAttention at 'attn': side input 'mask' of"):
        mha(params, x, side={"mask": jnp.ones((4, 3), bool)})
    q = jnp.ones((1, 3, 2, 4))
    with pytest.raises(ShapeError, match=r"^dot_product_attention: mask of shape \(4, 3\)"):
        nj.dot_product_attention(q, q, q, mask=jnp.ones((4, 3), bool))
    with pytest.raises(ShapeError, match=r"^attention_weights: mask of shape \(4, 3\)"):
        nj.attention_weights(q, q, mask=jnp.ones((4, 3), bool))


# --------------------------------------------------------------------------------------------
# Checked mode: the same errors inside jit; nothing traced outside it.


def test_decode_cache_index_overflow_eagerly_and_in_checked_mode():
    decoder = nj.MultiHeadAttention(2, causal=True, decode=True)
    params, cache = decoder.init(KEY, jnp.zeros((1, 3, 4)))
    _, cache = decoder.apply(params, cache, jnp.ones((1, 2, 4)))  # index 2 of 3
    message = ("MultiHeadAttention at <root>: decode cache holds 3 steps; 2 new step(s) at cache "
               "index 2 do not fit (the index must lie in [0, 1])")  # fmt: skip
    with raises(message):
        decoder.apply(params, cache, jnp.ones((1, 2, 4)))
    step = nj.checked(decoder.apply)
    with raises(message):
        step(params, cache, jnp.ones((1, 2, 4)))
    _, full = step(params, cache, jnp.ones((1, 1, 4)))  # fills the cache exactly
    assert int(full["cache_index"]) == 3
    with pytest.raises(ShapeError, match=r"cache holds 3 steps; 4 new step\(s\) do not fit"):
        decoder.apply(params, cache, jnp.ones((1, 4, 4)))


def test_checked_train_step_catches_labels_and_matches_the_unchecked_step():
    """A jitted train step: the same numbers checked and unchecked for valid labels; a label
    past the classes raises in checked mode only (the unchecked step cannot see it)."""
    model = nj.Sequential(embed=nj.Embedding(7, 4), pool=nj.Flatten(), head=nj.Dense(3))
    tokens = jnp.array([[1, 2], [3, 4], [5, 6]])
    params, _ = model.init(KEY, tokens)

    def step(params, tokens, labels, lengths):
        def loss(p):
            z = model(p, tokens)
            return L.softmax_cross_entropy_with_integer_labels(z, labels) + jnp.sum(
                nj.sequence_mask(lengths, 2)
            )

        return jax.value_and_grad(loss)(params)

    plain, checked = jax.jit(step), nj.checked(step)
    good = (params, tokens, jnp.array([0, 2, 1]), jnp.array([2, 0, 1]))
    want, got = plain(*good), checked(*good)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), want, got)
    with raises("softmax_cross_entropy_with_integer_labels: labels", "[0, 3)", "[0, 3]"):
        checked(params, tokens, jnp.array([0, 3, 1]), good[3])
    with raises("Embedding at 'embed': indices must lie in [0, 7), given values in [2, 9]"):
        checked(params, tokens.at[0, 0].set(9), good[2], good[3])
    with raises("sequence_mask: lengths must lie in [0, 2], given values in [0, 3]"):
        checked(params, tokens, good[2], jnp.array([2, 0, 3]))
    plain(params, tokens, jnp.array([0, 3, 1]), good[3])  # unchecked: no error, no cost


def test_checked_graph_layer(graph):
    model = nj.Sequential(gnn=nj.GCNConv(4))
    params, _ = model.init(KEY, graph)
    run = nj.checked(model.__call__)
    np.testing.assert_allclose(run(params, graph), model(params, graph), rtol=1e-6)
    with raises("GCNConv at 'gnn': GraphBatch.senders of the real edges", "[0, 8)", "[0, 9]"):
        run(params, _with(graph, "senders", 2, 9))


def test_outside_checked_mode_a_traced_check_traces_nothing():
    """Unchecked, the checks add no operation to the program (not even a min/max left for XLA
    to remove); under ``nj.checking()`` they do."""
    emb, rnn = nj.Embedding(5, 2), nj.RNN(nj.GRUCell(2))
    ep, _ = emb.init(KEY, jnp.zeros((2, 3), jnp.int32))
    rp, _ = rnn.init(KEY, jnp.zeros((2, 3, 2)))

    def f(ids, lengths, data, seg, labels):
        h = rnn(rp, emb(ep, ids), side={"lengths": lengths})
        return (
            nj.segment_sum(data, seg, 3, mask=seg >= 0),
            M.top_k_accuracy(h[:, 0], labels, 1),
            L.binary_cross_entropy(jax.nn.sigmoid(h), jnp.zeros_like(h)),
        )

    args = (
        jnp.zeros((2, 3), jnp.int32),
        jnp.array([3, 1]),
        jnp.ones(4),
        jnp.array([0, 1, 2, -1]),
        jnp.array([0, 1]),
    )

    def reductions(jaxpr):
        return sum(str(jaxpr).count(p) for p in ("reduce_min", "reduce_max", "check["))

    # Only the ops of the maths itself: BCE's and top-k's have no min/max reduction.
    assert reductions(jax.make_jaxpr(f)(*args)) == 0
    with nj.checking():
        assert reductions(jax.make_jaxpr(lambda *a: f(*a))(*args)) > 0

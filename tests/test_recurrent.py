"""Recurrent cells against NumPy transcriptions of the published equations; RNN == a loop of the
cell; padding and masks change nothing; the input projection is hoisted out of the scan."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nn_jax.errors import ConfigError, ParamsError, ShapeError
from nn_jax.models.rnn import RNNClassifier
from nn_jax.recurrent import (
    RNN,
    Bidirectional,
    GRUCell,
    LSTMCell,
    SimpleRNNCell,
    StackedRNN,
    sequence_mask,
)

KEY = jax.random.key(0)


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


# --------------------------------------------------------------------------------------------
# NumPy references, gate by gate, as the equations are published (PyTorch's documentation for
# nn.LSTM / nn.GRU, whose gate order and bias placement the cells follow).


def np_lstm_step(p, h, c, x):
    H = h.shape[-1]
    wi, wh, b = p["w_i"], p["w_h"], p["b"]

    def gate(k):
        cols = slice(k * H, (k + 1) * H)
        return x @ wi[:, cols] + h @ wh[:, cols] + b[cols]

    i, f, g, o = sigmoid(gate(0)), sigmoid(gate(1)), np.tanh(gate(2)), sigmoid(gate(3))
    c_new = f * c + i * g
    h_new = o * np.tanh(c_new)
    return (h_new, c_new), h_new


def np_gru_step(p, h, x):
    H = h.shape[-1]
    wi, wh, b, b_hn = p["w_i"], p["w_h"], p["b"], p["b_hn"]
    W = lambda w, k: w[:, k * H : (k + 1) * H]  # noqa: E731
    r = sigmoid(x @ W(wi, 0) + b[:H] + h @ W(wh, 0))
    z = sigmoid(x @ W(wi, 1) + b[H : 2 * H] + h @ W(wh, 1))
    n = np.tanh(x @ W(wi, 2) + b[2 * H :] + r * (h @ W(wh, 2) + b_hn))
    h_new = (1 - z) * n + z * h
    return h_new, h_new


def np_simple_step(p, h, x):
    h_new = np.tanh(x @ p["w_i"] + h @ p["w_h"] + p["b"])
    return h_new, h_new


def np_run(step, p, carry, xs, reverse=False):
    """A Python loop over time of a NumPy step; xs (B, T, F) -> ys (B, T, H), final carry."""
    T = xs.shape[1]
    ys = [None] * T
    for t in reversed(range(T)) if reverse else range(T):
        carry, ys[t] = step(p, *(carry if isinstance(carry, tuple) else (carry,)), xs[:, t])
    return np.stack(ys, 1), carry


def random_params(params, rng, scale=0.5):
    return jax.tree.map(lambda a: (scale * rng.standard_normal(a.shape)).astype(a.dtype), params)


CELLS = {
    "lstm": (LSTMCell, np_lstm_step),
    "gru": (GRUCell, np_gru_step),
    "simple": (SimpleRNNCell, np_simple_step),
}


def init_cell(cell, batch, features, dtype=jnp.float32):
    x = jax.ShapeDtypeStruct((batch, features), dtype)
    return cell.init(KEY, (cell.initial_carry((batch,), dtype), x))[0]


@pytest.mark.parametrize("name", list(CELLS))
def test_cell_matches_numpy_equations_float64(name):
    cls, np_step = CELLS[name]
    rng = np.random.default_rng(0)
    with jax.enable_x64(True):
        cell = cls(5, param_dtype=jnp.float64)
        params = random_params(init_cell(cell, 3, 4, jnp.float64), rng)
        x = rng.standard_normal((3, 4))
        carry = jax.tree.map(lambda s: rng.standard_normal(s.shape), cell.initial_carry((3,)))
        (new_carry, y), state = cell.apply(params, {}, (carry, x))
        np_carry, np_y = np_step(params, *(carry if isinstance(carry, tuple) else (carry,)), x)
    assert state == {}
    np.testing.assert_allclose(y, np_y, rtol=1e-12, atol=1e-12)
    for a, b in zip(jax.tree.leaves(new_carry), jax.tree.leaves(np_carry), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_lstm_forget_bias_and_per_gate_orthogonal_init():
    params = init_cell(LSTMCell(6), 2, 3)
    b = np.asarray(params["b"])
    np.testing.assert_array_equal(b[6:12], 1.0)
    np.testing.assert_array_equal(np.delete(b, np.s_[6:12]), 0.0)
    assert np.all(np.asarray(init_cell(LSTMCell(6, forget_bias=0.0), 2, 3)["b"]) == 0)
    w_h = np.asarray(params["w_h"])
    for g in range(4):
        block = w_h[:, g * 6 : (g + 1) * 6]
        np.testing.assert_allclose(block.T @ block, np.eye(6), atol=1e-5)


def test_cells_start_from_zeros_and_accept_any_batch_shape():
    cell = LSTMCell(3)
    h, c = cell.initial_carry((2, 4))
    assert h.shape == c.shape == (2, 4, 3) and not np.any(h) and not np.any(c)
    params = init_cell(cell, 1, 2)
    (_, y), _ = cell.apply(params, {}, (cell.initial_carry((2, 4)), jnp.ones((2, 4, 2))))
    assert y.shape == (2, 4, 3)


# --------------------------------------------------------------------------------------------
# RNN == a Python loop of the cell.


def cell_loop(cell, cell_params, xs, reverse=False, carry=None):
    """Run ``cell.apply`` step by step (batch-major input) - the definition RNN must match."""
    carry = cell.initial_carry(xs.shape[:1]) if carry is None else carry
    T = xs.shape[1]
    ys = [None] * T
    for t in reversed(range(T)) if reverse else range(T):
        (carry, ys[t]), _ = cell.apply(cell_params, {}, (carry, xs[:, t]))
    return jnp.stack(ys, 1), carry


@pytest.mark.parametrize("name", list(CELLS))
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("hoist", [False, True], ids=["per_step", "hoisted"])
def test_rnn_equals_a_python_loop_of_the_cell(name, reverse, hoist):
    cls, _ = CELLS[name]
    rnn = RNN(cls(4), reverse=reverse, return_carry=True, unroll=3, hoist_input_projection=hoist)
    xs = np.random.default_rng(1).standard_normal((3, 7, 2)).astype(np.float32)
    params, _ = rnn.init(KEY, xs)
    params = random_params(params, np.random.default_rng(2))
    (ys, carry), _ = jax.jit(rnn.apply)(params, {}, xs)
    ys_loop, carry_loop = cell_loop(rnn.cell, params["cell"], xs, reverse)
    np.testing.assert_allclose(ys, ys_loop, rtol=1e-5, atol=1e-6)
    for a, b in zip(jax.tree.leaves(carry), jax.tree.leaves(carry_loop), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    last = RNN(rnn.cell, reverse=reverse, return_sequences=False)(params, xs)
    np.testing.assert_allclose(last, ys_loop[:, 0 if reverse else -1], rtol=1e-5, atol=1e-6)


def test_rnn_matches_numpy_lstm_over_time_float64():
    rng = np.random.default_rng(3)
    with jax.enable_x64(True):
        rnn = RNN(LSTMCell(3, param_dtype=jnp.float64))
        xs = rng.standard_normal((2, 6, 4))
        params = random_params(rnn.init(KEY, xs)[0], rng)
        ys = rnn(params, xs)
        zeros = np.zeros((2, 3))
        ys_np, _ = np_run(np_lstm_step, params["cell"], (zeros, zeros), xs)
    np.testing.assert_allclose(ys, ys_np, rtol=1e-12, atol=1e-12)


def test_time_major_equals_batch_major_and_initial_carry_is_used():
    rnn = RNN(GRUCell(4), return_carry=True)
    xs = np.random.default_rng(4).standard_normal((2, 5, 3)).astype(np.float32)
    params, _ = rnn.init(KEY, xs)
    h0 = jnp.asarray(np.random.default_rng(5).standard_normal((2, 4)), jnp.float32)
    (ys, carry), _ = rnn.apply(params, {}, xs, initial_carry=h0)
    ys_loop, carry_loop = cell_loop(rnn.cell, params["cell"], xs, carry=h0)
    np.testing.assert_allclose(ys, ys_loop, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(carry, carry_loop, rtol=1e-5, atol=1e-6)
    tm = dataclasses.replace(rnn, time_major=True)
    (ys_tm, carry_tm), _ = tm.apply(params, {}, xs.transpose(1, 0, 2), initial_carry=h0)
    np.testing.assert_allclose(ys_tm.transpose(1, 0, 2), ys, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(carry_tm, carry, rtol=1e-6, atol=1e-6)


def test_hoisting_moves_the_input_projection_out_of_the_scan():
    """Hoisted: x @ w_i is one matmul over all steps outside the scan, only h @ w_h inside."""
    xs = jnp.zeros((2, 5, 3))
    params, _ = RNN(LSTMCell(8)).init(KEY, xs)

    def matmuls(rnn):
        jaxpr = jax.make_jaxpr(rnn.apply)(params, {}, xs).jaxpr
        (scan,) = [e for e in jaxpr.eqns if e.primitive.name == "scan"]
        inner = scan.params["jaxpr"].jaxpr.eqns
        return [
            [e.outvars[0].aval.shape for e in eqns if e.primitive.name == "dot_general"]
            for eqns in (jaxpr.eqns, inner)
        ]

    assert matmuls(RNN(LSTMCell(8), hoist_input_projection=True)) == [[(5, 2, 32)], [(2, 32)]]
    assert matmuls(RNN(LSTMCell(8))) == [[], [(2, 32), (2, 32)]]


# --------------------------------------------------------------------------------------------
# Padding and masks change nothing.


def padded_batch(rng, lengths, steps, features):
    """Sequences of the given lengths padded with large garbage values to ``steps``."""
    xs = rng.standard_normal((len(lengths), steps, features)).astype(np.float32)
    for i, n in enumerate(lengths):
        xs[i, n:] = 100.0 * rng.standard_normal((steps - n, features))
    return xs


LENGTHS = np.array([6, 3, 1, 0, 4])


@pytest.fixture(scope="module")
def padded():
    return padded_batch(np.random.default_rng(6), LENGTHS, 6, 2)


@pytest.mark.parametrize("name", ["lstm", "gru"])
@pytest.mark.parametrize("reverse", [False, True])
def test_padded_batch_equals_each_sequence_alone(padded, name, reverse):
    rnn = RNN(CELLS[name][0](3), reverse=reverse, return_carry=True)
    params, _ = rnn.init(KEY, padded)
    (ys, carry), _ = rnn.apply(params, {}, padded, lengths=LENGTHS)
    last = RNN(rnn.cell, reverse=reverse, return_sequences=False)(params, padded, lengths=LENGTHS)
    for i, n in enumerate(LENGTHS):
        np.testing.assert_array_equal(ys[i, n:], 0.0)
        if n == 0:
            np.testing.assert_array_equal(last[i], 0.0)
            for leaf in jax.tree.leaves(carry):
                np.testing.assert_array_equal(leaf[i], 0.0)
            continue
        (alone, alone_carry), _ = rnn.apply(params, {}, padded[i : i + 1, :n])
        np.testing.assert_allclose(ys[i, :n], alone[0], rtol=1e-5, atol=1e-6)
        for a, b in zip(jax.tree.leaves(carry), jax.tree.leaves(alone_carry), strict=True):
            np.testing.assert_allclose(a[i], b[0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(last[i], alone[0, 0 if reverse else n - 1], rtol=1e-5, atol=1e-6)


def test_mask_equals_lengths_and_skips_arbitrary_steps(padded):
    rnn = RNN(GRUCell(3))
    params, _ = rnn.init(KEY, padded)
    mask = sequence_mask(LENGTHS, 6)
    np.testing.assert_array_equal(mask, np.arange(6)[None] < LENGTHS[:, None])
    np.testing.assert_array_equal(
        rnn(params, padded, mask=mask), rnn(params, padded, lengths=LENGTHS)
    )
    # A non-prefix mask holds the carry over masked steps: the same as deleting them.
    holes = np.array([True, False, True, True, False, True])
    ys = rnn(params, padded[:1], mask=holes[None])
    compact = rnn(params, padded[:1, holes])
    np.testing.assert_allclose(ys[0, holes], compact[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(ys[0, ~holes], 0.0)


def test_bidirectional_and_stack_padded_equals_alone(padded):
    bi = Bidirectional(RNN(LSTMCell(3), return_sequences=False))
    stack = StackedRNN((Bidirectional(RNN(GRUCell(3)), merge="sum"), RNN(LSTMCell(2))))
    for layer in (bi, stack):
        params, _ = layer.init(KEY, padded)
        y = jax.jit(lambda p, x, n, layer=layer: layer(p, x, lengths=n))(params, padded, LENGTHS)
        for i, n in enumerate(LENGTHS):
            if n == 0:
                continue
            alone = layer(params, padded[i : i + 1, :n])
            got = y[i] if layer is bi else y[i, :n]
            np.testing.assert_allclose(got, alone[0], rtol=1e-5, atol=1e-6)


def test_bidirectional_concat_is_forward_then_reversed_outputs():
    xs = np.random.default_rng(7).standard_normal((2, 4, 3)).astype(np.float32)
    bi = Bidirectional(RNN(GRUCell(2)))
    params, _ = bi.init(KEY, xs)
    fwd = cell_loop(bi.layer.cell, params["forward"]["cell"], xs)[0]
    bwd = cell_loop(bi.layer.cell, params["backward"]["cell"], xs, reverse=True)[0]
    np.testing.assert_allclose(bi(params, xs), np.concatenate([fwd, bwd], -1), rtol=1e-5, atol=1e-6)
    summed = Bidirectional(RNN(GRUCell(2)), merge="sum")
    np.testing.assert_allclose(summed(params, xs), fwd + bwd, rtol=1e-5, atol=1e-6)


def test_masked_rnn_gradient_matches_finite_differences_and_ignores_padding():
    rng = np.random.default_rng(8)
    lengths = np.array([4, 2])
    with jax.enable_x64(True):
        rnn = RNN(LSTMCell(3, param_dtype=jnp.float64), reverse=True)
        xs = rng.standard_normal((2, 4, 2))
        params, _ = rnn.init(KEY, xs)
        weights = rng.standard_normal((2, 4, 3))
        loss = jax.jit(lambda x: jnp.sum(jnp.sin(rnn(params, x, lengths=lengths)) * weights))
        g = np.asarray(jax.grad(loss)(xs))
        np.testing.assert_array_equal(g[1, 2:], 0.0)  # padding does not influence the output
        v = rng.standard_normal(xs.shape)
        eps = 1e-6
        numeric = (loss(xs + eps * v) - loss(xs - eps * v)) / (2 * eps)
        np.testing.assert_allclose(np.vdot(g, v), numeric, rtol=1e-6)


def test_classifier_lengths_as_pair_or_keyword_and_padding_invariance(padded):
    model = RNNClassifier(4, cell="gru", hidden=3, bidirectional=True, pooling="mean")
    params, _ = model.init(KEY, padded)
    by_pair = model(params, (padded, LENGTHS))
    np.testing.assert_array_equal(by_pair, model(params, padded, lengths=LENGTHS))
    np.testing.assert_allclose(model(params, padded[:1]), by_pair[:1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model(params, padded[1:2, :3]), by_pair[1:2], rtol=1e-5, atol=1e-6)
    with pytest.raises(ShapeError, match="lengths= only with a plain x"):
        model(params, (padded, LENGTHS), lengths=LENGTHS)


# --------------------------------------------------------------------------------------------
# Errors name the layer, expected and given.


def test_errors_name_expected_and_given():
    cell = GRUCell(3)
    params = init_cell(cell, 2, 4)
    with pytest.raises(ShapeError, match=r"GRUCell at <root>: expected the pair \(carry, x_t\)"):
        cell(params, jnp.zeros((2, 4)))
    with pytest.raises(ShapeError, match=r"carry has shapes \(2, 5\), expected \(2, 3\)"):
        cell(params, (jnp.zeros((2, 5)), jnp.zeros((2, 4))))
    rnn = RNN(cell)
    rnn_params, _ = rnn.init(KEY, jnp.zeros((2, 5, 4)))
    with pytest.raises(
        ShapeError, match=r"GRUCell at 'cell': input last axis has size 3 .* expected 4"
    ):
        rnn(rnn_params, jnp.zeros((2, 5, 3)))
    with pytest.raises(ShapeError, match=r"RNN at <root>: input \(\*batch, T, F\) must have rank"):
        rnn(rnn_params, jnp.zeros((5,)))
    with pytest.raises(ShapeError, match=r"lengths must be integers of shape \(2,\)"):
        rnn(rnn_params, jnp.zeros((2, 5, 4)), lengths=jnp.array([1, 2, 3]))
    with pytest.raises(ShapeError, match=r"mask must be booleans of shape \(2, 5\)"):
        rnn(rnn_params, jnp.zeros((2, 5, 4)), mask=jnp.ones((2, 5)))
    with pytest.raises(ShapeError, match="give lengths= or mask=, not both"):
        rnn(
            rnn_params, jnp.zeros((2, 5, 4)), lengths=jnp.array([1, 2]), mask=jnp.ones((2, 5), bool)
        )
    with pytest.raises(ParamsError, match=r"RNN at <root>: missing parameter 'cell'"):
        rnn({}, jnp.zeros((2, 5, 4)))


def test_config_errors():
    with pytest.raises(ConfigError, match="hidden must be a positive int, given 0"):
        LSTMCell(0)
    with pytest.raises(ConfigError, match="cell must be a RecurrentCell"):
        RNN(jax.nn.relu)
    with pytest.raises(ConfigError, match="unroll must be a positive int, given 0"):
        RNN(GRUCell(2), unroll=0)
    with pytest.raises(ConfigError, match="merge must be one of"):
        Bidirectional(RNN(GRUCell(2)), merge="mean")
    with pytest.raises(ConfigError, match="return_sequences differs"):
        Bidirectional(RNN(GRUCell(2)), backward=RNN(GRUCell(2), return_sequences=False))
    with pytest.raises(ConfigError, match="layer 0 must return sequences"):
        StackedRNN((RNN(GRUCell(2), return_sequences=False), RNN(GRUCell(2))))
    with pytest.raises(ConfigError, match="rate"):
        StackedRNN((RNN(GRUCell(2)),), dropout_rate=1.5)
    with pytest.raises(ConfigError, match="cell must be one of"):
        RNNClassifier(3, cell="transformer")

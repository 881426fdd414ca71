"""Recurrent cells against NumPy transcriptions of the published equations; RNN == a loop of the
cell; the final carry (a tap) == a hand-written scan; padding and masks change nothing; initial
carries per layer of a stack; the input projection is hoisted out of the scan."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nn_jax.errors import ConfigError, ParamsError, ShapeError
from nn_jax.inspect import apply_with_intermediates
from nn_jax.masks import sequence_mask
from nn_jax.models.rnn import RNNClassifier
from nn_jax.recurrent import (
    RNN,
    Bidirectional,
    GRUCell,
    LSTMCell,
    RecurrentCell,
    SimpleRNNCell,
    StackedRNN,
)

KEY = jax.random.key(0)


def with_carries(layer, params, x, side=None):
    """``(output, {tap path: final carry})``: the carries read through the ``*carry`` taps."""
    y, _, carries = apply_with_intermediates(layer, params, {}, x, side=side, capture="*carry")
    return y, carries


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
    rnn = RNN(cls(4), reverse=reverse, unroll=3, hoist_input_projection=hoist)
    xs = np.random.default_rng(1).standard_normal((3, 7, 2)).astype(np.float32)
    params, _ = rnn.init(KEY, xs)
    params = random_params(params, np.random.default_rng(2))
    ys, carries = jax.jit(lambda p, x: with_carries(rnn, p, x))(params, xs)
    carry = carries["carry"]
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
    rnn = RNN(GRUCell(4))
    xs = np.random.default_rng(4).standard_normal((2, 5, 3)).astype(np.float32)
    params, _ = rnn.init(KEY, xs)
    h0 = jnp.asarray(np.random.default_rng(5).standard_normal((2, 4)), jnp.float32)
    ys, carries = with_carries(rnn, params, xs, side={"initial_carry": h0})
    ys_loop, carry_loop = cell_loop(rnn.cell, params["cell"], xs, carry=h0)
    np.testing.assert_allclose(ys, ys_loop, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(carries["carry"], carry_loop, rtol=1e-5, atol=1e-6)
    tm = dataclasses.replace(rnn, time_major=True)
    ys_tm, carries_tm = with_carries(tm, params, xs.transpose(1, 0, 2), {"initial_carry": h0})
    np.testing.assert_allclose(ys_tm.transpose(1, 0, 2), ys, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(carries_tm["carry"], carries["carry"], rtol=1e-6, atol=1e-6)


def test_final_carry_tap_equals_a_hand_written_scan_and_numpy_float64():
    """The ``carry`` tap == ``jax.lax.scan`` of ``cell.apply`` == a NumPy loop of the equations,
    from a given initial carry; with lengths, == the NumPy loop over each real prefix alone."""
    rng = np.random.default_rng(11)
    lengths = np.array([5, 2, 0])
    with jax.enable_x64(True):
        cell = LSTMCell(3, param_dtype=jnp.float64)
        rnn = RNN(cell)
        xs = rng.standard_normal((3, 5, 2))
        params = random_params(rnn.init(KEY, xs)[0], rng)
        h0, c0 = rng.standard_normal((3, 3)), rng.standard_normal((3, 3))

        def scan_step(carry, x_t):
            (carry, y), _ = cell.apply(params["cell"], {}, (carry, x_t))
            return carry, y

        scan_carry, _ = jax.lax.scan(scan_step, (h0, c0), jnp.swapaxes(xs, 0, 1))
        _, carries = with_carries(rnn, params, xs, side={"initial_carry": (h0, c0)})
        _, np_carry = np_run(np_lstm_step, params["cell"], (h0, c0), xs)
        _, padded = with_carries(
            rnn, params, xs, side={"initial_carry": (h0, c0), "lengths": lengths}
        )
    for got, scanned, ref in zip(carries["carry"], scan_carry, np_carry, strict=True):
        np.testing.assert_allclose(got, scanned, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)
    for i, n in enumerate(lengths):
        ref = (h0[i : i + 1], c0[i : i + 1])  # a sequence with no real step keeps its carry
        if n > 0:
            _, ref = np_run(np_lstm_step, params["cell"], ref, xs[i : i + 1, :n])
        for got, r in zip(padded["carry"], ref, strict=True):
            np.testing.assert_allclose(got[i], r[0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "make", [lambda **kw: RNN(GRUCell(3), **kw), lambda **kw: Bidirectional(RNN(LSTMCell(3), **kw))]
)
def test_output_structure_depends_only_on_the_time_axis(make):
    """One array out whatever the flags: return_sequences only drops the time axis."""
    x = jax.ShapeDtypeStruct((2, 5, 4), jnp.float32)
    outs = []
    for return_sequences in (True, False):
        layer = make(return_sequences=return_sequences)
        params = jax.eval_shape(lambda layer=layer: layer.init(KEY, x)[0])
        outs.append(jax.eval_shape(lambda p, x, layer=layer: layer(p, x), params, x))
    seq, last = outs
    assert jax.tree.structure(seq) == jax.tree.structure(last) == jax.tree.structure(0)
    assert seq.shape[:1] + seq.shape[2:] == last.shape and seq.shape[1] == 5


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
    rnn = RNN(CELLS[name][0](3), reverse=reverse)
    params, _ = rnn.init(KEY, padded)
    ys, carries = with_carries(rnn, params, padded, side={"lengths": LENGTHS})
    carry = carries["carry"]
    last = RNN(rnn.cell, reverse=reverse, return_sequences=False)(
        params, padded, side={"lengths": LENGTHS}
    )
    for i, n in enumerate(LENGTHS):
        np.testing.assert_array_equal(ys[i, n:], 0.0)
        if n == 0:
            np.testing.assert_array_equal(last[i], 0.0)
            for leaf in jax.tree.leaves(carry):
                np.testing.assert_array_equal(leaf[i], 0.0)
            continue
        alone, alone_carries = with_carries(rnn, params, padded[i : i + 1, :n])
        alone_carry = alone_carries["carry"]
        np.testing.assert_allclose(ys[i, :n], alone[0], rtol=1e-5, atol=1e-6)
        for a, b in zip(jax.tree.leaves(carry), jax.tree.leaves(alone_carry), strict=True):
            np.testing.assert_allclose(a[i], b[0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(last[i], alone[0, 0 if reverse else n - 1], rtol=1e-5, atol=1e-6)


@dataclasses.dataclass(frozen=True)
class SumTimesInputCell(RecurrentCell):
    """A cell whose output is not in its carry: ``s' = s + x_t``, ``y_t = s' * x_t``."""

    def initial_carry(self, batch_shape, dtype=jnp.float32):
        return jnp.zeros((*batch_shape, 2), dtype)

    def init(self, key, x):
        return {}, {}

    def step(self, params, carry, projected):
        s = carry + projected
        return s, s * projected


@pytest.mark.parametrize("cell", [GRUCell(2), SumTimesInputCell()], ids=["gru", "custom"])
def test_last_output_from_a_given_initial_carry_with_padding(padded, cell):
    """``return_sequences=False`` from a given carry: the sequence's output at the last real step
    (read from the final carry, or carried beside it when the cell's output is not in its
    carry), and zeros for a sequence with no real step (not the output the initial carry holds)."""
    rnn = RNN(cell)
    params, _ = rnn.init(KEY, padded)
    h0 = jnp.asarray(np.random.default_rng(7).standard_normal((5, 2)), jnp.float32)
    side = {"lengths": LENGTHS, "initial_carry": h0}
    ys = rnn(params, padded, side=side)
    last = RNN(cell, return_sequences=False)(params, padded, side=side)
    for i, n in enumerate(LENGTHS):
        np.testing.assert_array_equal(last[i], ys[i, n - 1] if n else 0.0)


def test_mask_equals_lengths_and_skips_arbitrary_steps(padded):
    rnn = RNN(GRUCell(3))
    params, _ = rnn.init(KEY, padded)
    mask = sequence_mask(LENGTHS, 6)
    np.testing.assert_array_equal(mask, np.arange(6)[None] < LENGTHS[:, None])
    by_lengths = rnn(params, padded, side={"lengths": LENGTHS})
    np.testing.assert_array_equal(rnn(params, padded, side={"mask": mask}), by_lengths)
    # A non-prefix mask holds the carry over masked steps: the same as deleting them.
    holes = np.array([True, False, True, True, False, True])
    ys = rnn(params, padded[:1], side={"mask": holes[None]})
    compact = rnn(params, padded[:1, holes])
    np.testing.assert_allclose(ys[0, holes], compact[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(ys[0, ~holes], 0.0)
    # Both given: a step is real when both say so.
    both = rnn(params, padded, side={"lengths": LENGTHS, "mask": np.ones((5, 6), bool)})
    np.testing.assert_array_equal(both, by_lengths)
    both = rnn(params, padded[:1], side={"lengths": np.array([4]), "mask": holes[None]})
    np.testing.assert_allclose(both[0, :4][holes[:4]], compact[0, :3], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(both[0, 4:], 0.0)


def test_bidirectional_and_stack_padded_equals_alone(padded):
    bi = Bidirectional(RNN(LSTMCell(3), return_sequences=False))
    stack = StackedRNN((Bidirectional(RNN(GRUCell(3)), merge="sum"), RNN(LSTMCell(2))))
    for layer in (bi, stack):
        params, _ = layer.init(KEY, padded)
        y = jax.jit(lambda p, x, n, layer=layer: layer(p, x, side={"lengths": n}))(
            params, padded, LENGTHS
        )
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
        loss = jax.jit(
            lambda x: jnp.sum(jnp.sin(rnn(params, x, side={"lengths": lengths})) * weights)
        )
        g = np.asarray(jax.grad(loss)(xs))
        np.testing.assert_array_equal(g[1, 2:], 0.0)  # padding does not influence the output
        v = rng.standard_normal(xs.shape)
        eps = 1e-6
        numeric = (loss(xs + eps * v) - loss(xs - eps * v)) / (2 * eps)
        np.testing.assert_allclose(np.vdot(g, v), numeric, rtol=1e-6)


def test_initial_carry_per_layer_of_a_stack_and_direction():
    """A stack gives each layer its own entry of ``{"0": ..., "1": {"forward": ...}}``; layers
    without one start from zeros - checked against loops of the cells."""
    rng = np.random.default_rng(12)
    xs = rng.standard_normal((2, 4, 3)).astype(np.float32)
    stack = StackedRNN((RNN(GRUCell(3)), Bidirectional(RNN(GRUCell(2)))))
    params, _ = stack.init(KEY, xs)
    h0 = jnp.asarray(rng.standard_normal((2, 3)), jnp.float32)
    b0 = jnp.asarray(rng.standard_normal((2, 2)), jnp.float32)
    side = {"initial_carry": {"0": h0, "1": {"backward": b0}}}
    y, carries = with_carries(stack, params, xs, side=side)
    h, h_last = cell_loop(GRUCell(3), params["0"]["cell"], xs, carry=h0)
    fwd, fwd_last = cell_loop(GRUCell(2), params["1"]["forward"]["cell"], h)
    bwd, bwd_last = cell_loop(GRUCell(2), params["1"]["backward"]["cell"], h, True, b0)
    np.testing.assert_allclose(y, np.concatenate([fwd, bwd], -1), rtol=1e-5, atol=1e-6)
    assert sorted(carries) == ["0/carry", "1/backward/carry", "1/forward/carry"]
    for path, ref in [
        ("0/carry", h_last),
        ("1/forward/carry", fwd_last),
        ("1/backward/carry", bwd_last),
    ]:
        np.testing.assert_allclose(carries[path], ref, rtol=1e-5, atol=1e-6)
    with pytest.raises(
        ConfigError, match=r"StackedRNN at <root>: side input 'initial_carry' must be a dict"
    ):
        stack(params, xs, side={"initial_carry": h0})
    with pytest.raises(ConfigError, match=r"Bidirectional at '1': .*given \['fwd'\]"):
        stack(params, xs, side={"initial_carry": {"1": {"fwd": b0}}})


def test_classifier_reads_lengths_and_mask_from_side(padded):
    model = RNNClassifier(4, cell="gru", hidden=3, bidirectional=True, pooling="mean")
    params, _ = model.init(KEY, padded)
    by_lengths = model(params, padded, side={"lengths": LENGTHS})
    np.testing.assert_allclose(model(params, padded[:1]), by_lengths[:1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        model(params, padded[1:2, :3]), by_lengths[1:2], rtol=1e-5, atol=1e-6
    )
    mask = np.asarray(sequence_mask(LENGTHS, 6))
    np.testing.assert_allclose(
        model(params, padded, side={"mask": mask}), by_lengths, rtol=1e-6, atol=1e-7
    )
    with pytest.raises(ShapeError, match=r"RNN at 'rnn/0/forward': input must be one array"):
        model(params, (padded, LENGTHS))


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
    x = jnp.zeros((2, 5, 4))
    with pytest.raises(ShapeError, match=r"'lengths' must be integers of shape \(2,\)"):
        rnn(rnn_params, x, side={"lengths": jnp.array([1, 2, 3])})
    with pytest.raises(ShapeError, match=r"'mask' must be booleans of shape \(2, 5\)"):
        rnn(rnn_params, x, side={"mask": jnp.ones((2, 5))})
    with pytest.raises(
        ShapeError,
        match=r"GRUCell at 'cell': side input 'initial_carry' has shapes \(2, 4\), expected "
        r"\(2, 3\)",
    ):
        rnn(rnn_params, x, side={"initial_carry": jnp.zeros((2, 4))})
    with pytest.raises(ConfigError, match=r"\['lenghts'\] were given but no layer"):
        rnn(rnn_params, x, side={"lenghts": jnp.array([1, 2])})
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

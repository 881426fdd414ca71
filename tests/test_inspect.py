"""param_count, summary, param paths and intermediates."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nn_jax import (
    RNN,
    Bidirectional,
    Dense,
    GRUCell,
    LSTMCell,
    Sequential,
    apply_with_intermediates,
    flatten_params,
    param_count,
    summary,
    unflatten_params,
)
from nn_jax.errors import ArgumentError
from nn_jax.inspect import param_bytes, render_array, render_tree, summary_rows, use_treescope
from nn_jax.models import MLP

KEY = jax.random.key(0)


def test_param_count_matches_formula():
    params, _ = MLP((512, 512, 10)).init(KEY, jax.ShapeDtypeStruct((1, 784), jnp.float32))
    assert param_count(params) == 784 * 512 + 512 + 512 * 512 + 512 + 512 * 10 + 10


def test_flatten_unflatten_round_trip():
    params, _ = Sequential({"encoder": Sequential(Dense(3), jnp.tanh), "head": Dense(1)}).init(
        KEY, jnp.zeros((1, 2))
    )
    flat = flatten_params(params)
    assert list(flat) == ["encoder/0/b", "encoder/0/w", "head/b", "head/w"]
    assert flat["encoder/0/w"].shape == (2, 3)
    back = unflatten_params(flat)
    assert jax.tree.structure(back) == jax.tree.structure(params)
    with pytest.raises(ValueError, match="goes through a leaf"):
        unflatten_params({"a": 1, "a/b": 2})


def _dense_flops(m, k, n):
    """XLA's count for ``x @ w + b`` on ``(m, k) @ (k, n)``: a multiply and an add per term of
    the matmul (``2 m k n``) and the bias add (``m n``)."""
    return 2 * m * k * n + m * n


def test_summary_lists_every_layer_with_shapes_counts_bytes_and_flops():
    table = summary(MLP((32, 16, 1)), jax.ShapeDtypeStruct((8, 10), jnp.float32))
    lines = table.splitlines()
    assert lines[0].split() == ["path", "type", "output", "params", "count", "bytes", "flops"]
    # The root's FLOPs: three affine maps and two relus (one max per element, 8 x 32 + 8 x 16).
    root_flops = _dense_flops(8, 10, 32) + _dense_flops(8, 32, 16) + _dense_flops(8, 16, 1) + 8 * 48
    root = ["(root)", "MLP", "float32[8,", "1]", "897", str(897 * 4), f"{root_flops:,}"]
    assert lines[2].split() == root
    row = next(line for line in lines if line.startswith("dense_0 "))
    assert "Dense" in row and "float32[8, 32]" in row and "w: [10, 32]" in row
    assert row.split()[-3:] == ["352", str(352 * 4), f"{_dense_flops(8, 10, 32):,}"]
    assert lines[-3:] == [
        "Total parameters: 897",
        f"Parameter bytes: {897 * 4:,}",
        f"FLOPs of one apply: {root_flops:,}",
    ]
    assert summary(MLP((32, 16, 1)), jnp.zeros((8, 10)), flops=False).splitlines()[-1] == (
        "Parameter bytes: 3,588"
    )


@pytest.mark.parametrize(("m", "k", "n"), [(2, 4, 3), (8, 16, 5)])
def test_dense_flops_are_xlas_count_of_matmul_and_bias(m, k, n):
    (root,) = summary_rows(Dense(n), jax.ShapeDtypeStruct((m, k), jnp.float32))
    assert root.flops == _dense_flops(m, k, n)
    model = Sequential(Dense(n), jnp.tanh)
    rows = {r.path: r for r in summary_rows(model, jax.ShapeDtypeStruct((m, k), jnp.float32))}
    assert rows["0"].flops == _dense_flops(m, k, n)  # the child compiled on the shape it sees


def test_param_bytes_is_size_times_itemsize():
    tree = {
        "a": jnp.zeros((3, 5), jnp.float32),
        "b": {"c": jnp.zeros((7,), jnp.bfloat16), "d": jnp.zeros((2, 2), jnp.int8)},
    }
    assert param_bytes(tree) == 15 * 4 + 7 * 2 + 4 * 1
    model = Sequential(Dense(3, param_dtype=jnp.bfloat16), Dense(2))
    rows = {r.path: r for r in summary_rows(model, jnp.zeros((1, 4)), flops=False)}
    assert rows["0"].bytes == (4 * 3 + 3) * 2 and rows["1"].bytes == (3 * 2 + 2) * 4
    assert rows[""].bytes == rows["0"].bytes + rows["1"].bytes


def _lstm_step_matmul_flops(batch, features, hidden):
    """The LSTM cell's two matmuls per step: ``x_t @ w_i`` and ``h @ w_h`` into 4 gates."""
    return 2 * batch * features * 4 * hidden + 2 * batch * hidden * 4 * hidden


def test_scanned_rnn_flops_count_every_step():
    batch, features, hidden = 2, 3, 4
    flops = {
        t: summary_rows(
            RNN(LSTMCell(hidden)), jax.ShapeDtypeStruct((batch, t, features), jnp.float32)
        )[0].flops
        for t in (5, 9, 13)
    }
    step = (flops[9] - flops[5]) / 4
    assert flops[13] - flops[9] == pytest.approx(4 * step)  # linear in T: each step counted
    matmuls = _lstm_step_matmul_flops(batch, features, hidden)
    # A step is its two matmuls plus elementwise gate work (bias, sums, products: fewer than
    # 8 operations per gate unit), so it lies between the matmuls and the matmuls + 8 * B * 4H.
    assert matmuls <= step <= matmuls + 8 * batch * 4 * hidden
    assert flops[13] >= 13 * matmuls  # XLA alone counts the scan body once: about 1 step


def test_rnn_and_bidirectional_rows_show_their_params():
    model = Sequential(RNN(LSTMCell(4)), Bidirectional(RNN(GRUCell(3))))
    rows = {r.path: r for r in summary_rows(model, jnp.zeros((2, 5, 3)), flops=False)}
    assert rows["0"].params == {"cell/b": (16,), "cell/w_h": (4, 16), "cell/w_i": (3, 16)}
    gru = {"cell/b": (9,), "cell/b_hn": (3,), "cell/w_h": (3, 9), "cell/w_i": (4, 9)}
    assert rows["1/forward"].params == gru and rows["1/backward"].params == gru
    assert rows["1"].params == {}  # all of them are shown on its two children's rows
    assert rows["1"].count == 2 * (9 + 3 + 3 * 9 + 4 * 9)
    table = summary(model, jnp.zeros((2, 5, 3)), flops=False)
    assert "cell/w_h: [4, 16]" in table and "cell/b_hn: [3]" in table


def test_summary_compiles_each_distinct_layer_once(monkeypatch):
    import nn_jax.inspect as inspect_module

    calls = []
    real = inspect_module.step_flops
    monkeypatch.setattr(inspect_module, "step_flops", lambda *a: calls.append(1) or real(*a))
    model = Sequential(Dense(4), jnp.tanh, Dense(4), jnp.tanh, Dense(4))  # Dense(4) on (3, 4)
    rows = summary_rows(model, jnp.zeros((3, 4)))
    # root, Dense(4) on (3, 4) once for the three, tanh once for the two
    assert len(calls) == 3
    assert rows[1].flops == rows[3].flops == rows[5].flops == _dense_flops(3, 4, 4)


def test_treescope_renders_without_a_display():
    params, _ = MLP((4, 2)).init(KEY, jnp.zeros((1, 3)))
    html = render_tree(params)
    assert "dense_0" in html and "<script" in html
    fig = render_array(
        jnp.arange(6.0).reshape(2, 3), ("example", "unit"), item_labels={"unit": ["u0", "u1", "u2"]}
    )
    import treescope

    html = treescope.render_to_html(fig, compressed=False)
    assert "example" in html and "u2" in html
    with pytest.raises(ArgumentError, match="one axis name per axis"):
        render_array(jnp.ones((2, 3)), ("example",))
    with pytest.raises(ArgumentError, match="has 3 entries, given 2 item labels"):
        render_array(jnp.ones((2, 3)), ("example", "unit"), item_labels={"unit": ["a", "b"]})
    with pytest.raises(RuntimeError, match="no IPython shell is running"):
        use_treescope()  # (run in a notebook by notebooks/10_benchmarks.ipynb)


def test_intermediates_are_real_activations_under_jit():
    model = Sequential(Dense(4), jax.nn.relu, Dense(2))
    x = np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32)
    params, state = model.init(KEY, x)
    y, _, acts = jax.jit(lambda p, x: apply_with_intermediates(model, p, state, x))(params, x)
    h = x @ np.asarray(params["0"]["w"]) + np.asarray(params["0"]["b"])
    np.testing.assert_allclose(acts["0"], h, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(acts["1"], np.maximum(h, 0), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(acts["2"], y)


def test_flops_of_a_child_that_reads_none_of_the_side_inputs():
    # Dense compiled alone with {"lengths"} would fail the "side input read by no layer"
    # check; its row still gets XLA's count on the (2, 5, 4) input it sees.
    model = Sequential(Dense(3), RNN(GRUCell(2)))
    side = {"lengths": jnp.array([5, 2])}
    rows = {r.path: r for r in summary_rows(model, jnp.zeros((2, 5, 4)), side=side)}
    assert rows["0"].flops == _dense_flops(2 * 5, 4, 3)
    assert rows["1"].flops is not None and rows["1"].flops > 0

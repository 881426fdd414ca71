"""PyTorch parity, in float64, against NumPy transcriptions of PyTorch's documented rules.

* BatchNorm: running statistics after one and two training steps (PyTorch's unbiased running
  variance, the biased one, and ``momentum=None``'s cumulative average) and the eval output.
* GroupNorm / InstanceNorm with ``channel_axis=1`` on PyTorch's ``(N, C, H, W)`` layout.
* ``nn.LSTM`` / ``nn.GRU`` with ``num_layers=2, bidirectional=True, batch_first=True``, initial
  states and packed sequences (``pack_padded_sequence`` -> ``pad_packed_sequence``), written as
  ``StackedRNN((Bidirectional(RNN(cell)),) * 2)`` with PyTorch's weights mapped onto nn_jax's
  params; outputs and ``h_n``/``c_n`` compared, and one gradient against finite differences of
  the NumPy reference.

No PyTorch is needed: the references are loops over examples, steps and groups written from
PyTorch's documentation (``torch.nn.BatchNorm2d``, ``GroupNorm``, ``LSTM``, ``GRU``).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nn_jax.errors import ConfigError, ParamsError, ShapeError
from nn_jax.inspect import apply_with_intermediates
from nn_jax.normalization import BatchNorm, GroupNorm, InstanceNorm
from nn_jax.recurrent import RNN, Bidirectional, GRUCell, LSTMCell, StackedRNN

KEY = jax.random.key(0)
EPS = 1e-5


# --------------------------------------------------------------------------------------------
# BatchNorm: PyTorch's nn.BatchNorm2d(C, momentum=p) on (N, C, H, W) in training mode:
#   y = (x - mean_B) / sqrt(var_B + eps) * weight + bias         (var_B biased, divided by n)
#   running = (1 - p) * running + p * stat,  stat = mean_B or var_B * n / (n - 1)
#   momentum=None: p = 1 / num_batches_tracked (after incrementing it).
# nn_jax's momentum is 1 - p.


def _np_batch_norm_steps(batches, momentum, unbiased):
    """Running (mean, var, count) after each batch, and each training output standardized."""
    channels = batches[0].shape[1]
    mean, var = np.zeros(channels), np.ones(channels)
    after, outputs = [], []
    for count, x in enumerate(batches, start=1):
        n = x.size // channels
        per_channel = np.moveaxis(x, 1, 0).reshape(channels, n)
        mu = per_channel.sum(1) / n
        biased = ((per_channel - mu[:, None]) ** 2).sum(1) / n
        stat_var = biased * n / (n - 1) if unbiased else biased
        p = 1.0 / count if momentum is None else 1.0 - momentum
        mean = (1 - p) * mean + p * mu
        var = (1 - p) * var + p * stat_var
        after.append((mean.copy(), var.copy(), count))
        shape = (1, channels, 1, 1)
        outputs.append((x - mu.reshape(shape)) / np.sqrt(biased.reshape(shape) + EPS))
    return after, outputs


@pytest.mark.parametrize(
    "momentum, unbiased",
    [(0.9, True), (0.9, False), (None, True)],
    ids=["torch_default_unbiased", "biased", "cumulative_unbiased"],
)
def test_batch_norm_running_stats_after_one_and_two_steps_and_eval(momentum, unbiased):
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        batches = [2.0 * rng.standard_normal((3, 2, 2, 2)) + 1.0, rng.standard_normal((3, 2, 2, 2))]
        bn = BatchNorm(
            axis=1, momentum=momentum, unbiased_running_var=unbiased, param_dtype=jnp.float64
        )
        params, state = bn.init(KEY, batches[0])
        assert ("num_batches_tracked" in state) == (momentum is None)
        weight, bias = rng.standard_normal(2), rng.standard_normal(2)
        params = {"scale": jnp.asarray(weight), "b": jnp.asarray(bias)}
        affine = lambda y: y * weight.reshape(1, 2, 1, 1) + bias.reshape(1, 2, 1, 1)  # noqa: E731
        after, outputs = _np_batch_norm_steps(batches, momentum, unbiased)
        step = jax.jit(lambda p, s, x: bn.apply(p, s, x, train=True))
        for x, (mean, var, count), y_ref in zip(batches, after, outputs, strict=True):
            y, state = step(params, state, x)
            np.testing.assert_allclose(y, affine(y_ref), rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(state["mean"], mean, rtol=1e-12, atol=1e-14)
            np.testing.assert_allclose(state["var"], var, rtol=1e-12)
            if momentum is None:
                assert state["num_batches_tracked"].dtype == jnp.int32
                assert int(state["num_batches_tracked"]) == count
        # Eval: the running statistics after two steps, and the state unchanged.
        x = rng.standard_normal((2, 2, 2, 2))
        y, new_state = bn.apply(params, state, x, train=False)
        mean, var, _ = after[-1]
        shape = (1, 2, 1, 1)
        expected = affine((x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + EPS))
        np.testing.assert_allclose(y, expected, rtol=1e-10, atol=1e-12)
        jax.tree.map(np.testing.assert_array_equal, new_state, state)


def test_batch_norm_unbiased_count_spans_the_replicas_of_axis_name():
    """With ``axis_name``, ``n`` in ``n / (n - 1)`` is the global element count per feature."""
    with jax.enable_x64(True):
        x = np.random.default_rng(1).standard_normal((2, 3, 4))  # 2 shards of (3, 4)
        sharded = BatchNorm(momentum=0.0, unbiased_running_var=True, axis_name="shards")
        params, state = sharded.init(KEY, x[0])
        _, states = jax.vmap(
            lambda s: sharded.apply(params, state, s, train=True), axis_name="shards"
        )(x)
        # momentum=0: the running variance is the global batch's unbiased variance (n = 6).
        np.testing.assert_allclose(states["var"][0], x.reshape(6, 4).var(0, ddof=1), rtol=1e-6)


def test_batch_norm_counter_state_is_checked():
    bn = BatchNorm(momentum=None)
    params, state = bn.init(KEY, jnp.zeros((4, 3)))
    with pytest.raises(
        ParamsError, match=r"BatchNorm at <root>: missing state 'num_batches_tracked'"
    ):
        bn.apply(params, {"mean": state["mean"], "var": state["var"]}, jnp.ones((4, 3)))
    with pytest.raises(
        ShapeError, match=r"state 'num_batches_tracked' has shape \(3,\), expected \(\)"
    ):
        bn.apply(
            params, {**state, "num_batches_tracked": jnp.zeros(3, jnp.int32)}, jnp.ones((4, 3))
        )
    # The default momentum keeps the state tree it always had.
    assert set(BatchNorm().init(KEY, jnp.zeros((4, 3)))[1]) == {"mean", "var"}


# --------------------------------------------------------------------------------------------
# GroupNorm / InstanceNorm on PyTorch's (N, C, H, W) layout.


def _np_group_norm_nchw(x, groups, weight, bias):
    """PyTorch's nn.GroupNorm: per example and group of C/G consecutive channels, a loop."""
    n, c = x.shape[:2]
    size = c // groups
    y = np.empty_like(x)
    for i in range(n):
        for g in range(groups):
            block = x[i, g * size : (g + 1) * size]
            y[i, g * size : (g + 1) * size] = (block - block.mean()) / np.sqrt(block.var() + EPS)
    return y * weight.reshape(1, c, 1, 1) + bias.reshape(1, c, 1, 1)


@pytest.mark.parametrize("channel_axis", [1, -3])
@pytest.mark.parametrize("groups", [2, 4], ids=["group", "instance"])
def test_group_and_instance_norm_channels_first_match_numpy(groups, channel_axis):
    with jax.enable_x64(True):
        rng = np.random.default_rng(groups)
        x = 3.0 * rng.standard_normal((2, 4, 3, 2)) - 1.0
        weight, bias = rng.standard_normal(4), rng.standard_normal(4)
        layer = (
            InstanceNorm(channel_axis=channel_axis, param_dtype=jnp.float64)
            if groups == 4
            else GroupNorm(groups, channel_axis=channel_axis, param_dtype=jnp.float64)
        )
        params, _ = layer.init(KEY, x)
        assert jax.tree.map(jnp.shape, params) == {"scale": (4,), "b": (4,)}
        params = {"scale": jnp.asarray(weight), "b": jnp.asarray(bias)}
        expected = _np_group_norm_nchw(x, groups, weight, bias)
        np.testing.assert_allclose(layer(params, x), expected, rtol=1e-10, atol=1e-12)


def test_channel_axis_positive_last_equals_default_and_pytorch_instance_norm_default():
    x = np.random.default_rng(3).standard_normal((2, 3, 2, 4)).astype(np.float32)
    params, _ = GroupNorm(2).init(KEY, x)
    np.testing.assert_array_equal(GroupNorm(2, channel_axis=3)(params, x), GroupNorm(2)(params, x))
    # PyTorch's nn.InstanceNorm2d(C) default (affine=False): no params at all.
    torch_default = InstanceNorm(channel_axis=1, use_scale=False, use_bias=False)
    assert torch_default.init(KEY, x)[0] == {}
    expected = _np_group_norm_nchw(x.astype(np.float64), 3, np.ones(3), np.zeros(3))
    np.testing.assert_allclose(torch_default({}, x), expected, rtol=1e-4, atol=1e-5)


def test_channel_axis_errors_name_the_layer():
    with pytest.raises(ConfigError, match=r"GroupNorm: channel_axis must not be 0, the batch"):
        GroupNorm(2, channel_axis=0)
    with pytest.raises(ConfigError, match=r"InstanceNorm: channel_axis must be an int"):
        InstanceNorm(channel_axis=1.0)
    x = jnp.zeros((2, 4, 3, 3))
    with pytest.raises(
        ShapeError,
        match=r"GroupNorm at <root>: channel_axis=4 is out of range for an input of rank 4 "
        r"\(input shape \(2, 4, 3, 3\)\); expected an axis in \[1, 4\) or \[-3, -1\]",
    ):
        GroupNorm(2, channel_axis=4).init(KEY, x)
    with pytest.raises(ShapeError, match=r"InstanceNorm at <root>: channel_axis=-4 is axis 0"):
        InstanceNorm(channel_axis=-4)({}, x)
    with pytest.raises(
        ShapeError,
        match=r"GroupNorm at <root>: input channels 3 \(axis 2 of input shape \(2, 4, 3, 3\)\) "
        r"must be divisible by num_groups=2",
    ):
        GroupNorm(2, channel_axis=2).init(KEY, x)
    with pytest.raises(
        ShapeError, match=r"InstanceNorm at <root>: input \(N, C, \*spatial\) must have rank >= 3"
    ):
        InstanceNorm(channel_axis=1)({}, jnp.zeros((2, 4)))


# --------------------------------------------------------------------------------------------
# nn.LSTM / nn.GRU(num_layers=2, bidirectional=True, batch_first=True) on packed sequences.

B, T, F, H, LAYERS = 2, 4, 3, 2, 2
LENGTHS = np.array([4, 2])


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def np_torch_lstm_cell(w, x, state):
    """PyTorch's LSTM step: gates ``[i | f | g | o]`` of ``W_ih x + b_ih + W_hh h + b_hh``."""
    h, c = state
    gates = w["weight_ih"] @ x + w["bias_ih"] + w["weight_hh"] @ h + w["bias_hh"]
    i, f, g, o = np.split(gates, 4)
    c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
    return sigmoid(o) * np.tanh(c), c


def np_torch_gru_cell(w, x, state):
    """PyTorch's GRU step: ``[r | z | n]``, ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))``."""
    (h,) = state
    gi = np.split(w["weight_ih"] @ x + w["bias_ih"], 3)
    gh = np.split(w["weight_hh"] @ h + w["bias_hh"], 3)
    r, z = sigmoid(gi[0] + gh[0]), sigmoid(gi[1] + gh[1])
    n = np.tanh(gi[2] + r * gh[2])
    return ((1 - z) * n + z * h,)


def np_torch_rnn(kind, weights, x, lengths, initial):
    """PyTorch's multi-layer bidirectional LSTM/GRU over packed sequences, one example at a time.

    ``weights[(layer, direction)]``: ``weight_ih (G*H, in)``, ``weight_hh (G*H, H)``,
    ``bias_ih``, ``bias_hh (G*H,)``. ``initial``: ``(h0, c0)`` (LSTM) or ``(h0,)`` (GRU), each
    ``(num_layers * 2, B, H)``. Returns the padded output ``(B, T, 2H)`` (zeros past each
    length, as ``pad_packed_sequence``) and the final states, each ``(num_layers * 2, B, H)``
    (after each sequence's last real step; the backward direction ends at ``t = 0``).
    """
    cell = np_torch_lstm_cell if kind == "lstm" else np_torch_gru_cell
    finals = [np.zeros_like(s) for s in initial]
    out = np.zeros((x.shape[0], x.shape[1], 2 * H))
    layer_input = x
    for layer in range(LAYERS):
        out = np.zeros((x.shape[0], x.shape[1], 2 * H))
        for b, length in enumerate(lengths):
            for direction, steps in ((0, range(length)), (1, reversed(range(length)))):
                index = layer * 2 + direction
                state = tuple(s[index, b] for s in initial)
                for t in steps:
                    state = cell(weights[(layer, direction)], layer_input[b, t], state)
                    out[b, t, direction * H : (direction + 1) * H] = state[0]
                for final, s in zip(finals, state, strict=True):
                    final[index, b] = s
        layer_input = out
    return out, finals


def torch_weights(kind, rng, scale=0.6):
    gates = 4 if kind == "lstm" else 3
    weights = {}
    for layer in range(LAYERS):
        fan_in = F if layer == 0 else 2 * H
        for direction in range(2):
            weights[(layer, direction)] = {
                "weight_ih": scale * rng.standard_normal((gates * H, fan_in)),
                "weight_hh": scale * rng.standard_normal((gates * H, H)),
                "bias_ih": scale * rng.standard_normal(gates * H),
                "bias_hh": scale * rng.standard_normal(gates * H),
            }
    return weights


def to_nn_jax_params(kind, weights):
    """PyTorch's ``weight_ih_l{k}{_reverse}``, ... -> StackedRNN params (works on jnp arrays).

    LSTM: ``w_i = W_ih.T``, ``w_h = W_hh.T``, ``b = b_ih + b_hh``. GRU: the same, except that
    ``b_hh``'s ``n`` slice stays inside ``r * (...)``: it is ``b_hn``, and ``b`` gets only the
    ``r`` and ``z`` slices of ``b_hh``.
    """
    params = {}
    for (layer, direction), w in weights.items():
        cell = {"w_i": w["weight_ih"].T, "w_h": w["weight_hh"].T}
        if kind == "lstm":
            cell["b"] = w["bias_ih"] + w["bias_hh"]
        else:
            b_hh = w["bias_hh"]
            cell["b"] = w["bias_ih"] + jnp.concatenate([b_hh[: 2 * H], jnp.zeros_like(b_hh[:H])])
            cell["b_hn"] = b_hh[2 * H :]
        name = "forward" if direction == 0 else "backward"
        params.setdefault(str(layer), {})[name] = {"cell": cell}
    return params


def to_initial_carry(kind, initial):
    """``h0``/``c0`` ``(num_layers * 2, B, H)`` -> ``{"<layer>": {"forward"|"backward": carry}}``.

    Row ``layer * 2 + direction`` (PyTorch's order) is that layer's direction.
    """
    carry = {}
    for layer in range(LAYERS):
        for direction, name in enumerate(("forward", "backward")):
            rows = tuple(s[layer * 2 + direction] for s in initial)
            carry.setdefault(str(layer), {})[name] = rows if kind == "lstm" else rows[0]
    return carry


def from_final_carries(kind, taps):
    """The ``*carry`` taps -> PyTorch's ``(h_n, c_n)`` / ``(h_n,)``, ``(num_layers * 2, B, H)``."""
    rows = [
        taps[f"{layer}/{name}/carry"] for layer in range(LAYERS) for name in ("forward", "backward")
    ]
    if kind == "gru":
        return (jnp.stack(rows),)
    return jnp.stack([h for h, _ in rows]), jnp.stack([c for _, c in rows])


def stacked(kind):
    cell = LSTMCell(H) if kind == "lstm" else GRUCell(H)
    return StackedRNN((Bidirectional(RNN(cell)), Bidirectional(RNN(cell))))


def _problem(kind, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, T, F))
    x[1, LENGTHS[1] :] = 100.0  # padding: must change nothing
    initial = tuple(
        rng.standard_normal((LAYERS * 2, B, H)) for _ in range(2 if kind == "lstm" else 1)
    )
    return x, torch_weights(kind, rng), initial


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_two_layer_bidirectional_packed_rnn_matches_pytorch_reference(kind):
    with jax.enable_x64(True):
        x, weights, initial = _problem(kind, seed=5 if kind == "lstm" else 6)
        model = stacked(kind)
        jparams = jax.tree.map(jnp.asarray, to_nn_jax_params(kind, weights))
        # The mapped tree is exactly the tree init makes (names and shapes).
        made, _ = model.init(KEY, x)
        assert jax.tree.map(jnp.shape, made) == jax.tree.map(jnp.shape, jparams)
        side = {"lengths": jnp.asarray(LENGTHS), "initial_carry": to_initial_carry(kind, initial)}
        run = jax.jit(
            lambda p, x, side: apply_with_intermediates(
                model, p, {}, x, side=side, capture="*carry"
            )
        )
        y, _, taps = run(jparams, jnp.asarray(x), side)
        y_ref, finals_ref = np_torch_rnn(kind, weights, x, LENGTHS, initial)
        assert y.shape == (B, T, 2 * H)
        np.testing.assert_allclose(y, y_ref, rtol=1e-10, atol=1e-12)
        np.testing.assert_array_equal(np.asarray(y)[1, LENGTHS[1] :], 0.0)
        for got, ref in zip(from_final_carries(kind, taps), finals_ref, strict=True):
            np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-12)


def test_packed_bidirectional_gru_gradient_matches_finite_differences_of_the_reference():
    """d(loss)/d(PyTorch weights) through the mapping and nn_jax vs central differences of
    the NumPy PyTorch reference, along a random direction (float64)."""
    kind = "gru"
    with jax.enable_x64(True):
        x, weights, initial = _problem(kind, seed=7)
        rng = np.random.default_rng(8)
        y_weights = rng.standard_normal((B, T, 2 * H))
        h_weights = rng.standard_normal((LAYERS * 2, B, H))
        model = stacked(kind)
        side = {"lengths": jnp.asarray(LENGTHS), "initial_carry": to_initial_carry(kind, initial)}

        def loss(w):
            y, _, taps = apply_with_intermediates(
                model, to_nn_jax_params(kind, w), {}, jnp.asarray(x), side=side, capture="*carry"
            )
            (h_n,) = from_final_carries(kind, taps)
            return jnp.sum(y * y_weights) + jnp.sum(h_n * h_weights)

        def ref_loss(w):
            y, (h_n,) = np_torch_rnn(kind, w, x, LENGTHS, initial)
            return np.sum(y * y_weights) + np.sum(h_n * h_weights)

        jw = jax.tree.map(jnp.asarray, weights)
        value, grads = jax.jit(jax.value_and_grad(loss))(jw)
        np.testing.assert_allclose(value, ref_loss(weights), rtol=1e-10)
        v = jax.tree.map(lambda a: rng.standard_normal(a.shape), weights)
        step = 1e-6
        plus = jax.tree.map(lambda a, d: a + step * d, weights, v)
        minus = jax.tree.map(lambda a, d: a - step * d, weights, v)
        numeric = (ref_loss(plus) - ref_loss(minus)) / (2 * step)
        analytic = sum(
            np.vdot(g, d) for g, d in zip(jax.tree.leaves(grads), jax.tree.leaves(v), strict=True)
        )
        np.testing.assert_allclose(analytic, numeric, rtol=1e-6)

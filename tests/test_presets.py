"""PyTorch's default initialization (``nn_jax.presets``) and the fan-in initializers.

The distributions are checked from first principles: ``U(-b, b)`` has support ``[-b, b]`` and
variance ``b^2 / 3``; the sample variance of ``n`` draws has standard error
``sqrt(var(X^2) / n)``, with ``var(X^2) = E[X^4] - E[X^2]^2 = b^4 / 5 - b^4 / 9 = 4 b^4 / 45``.
Variance tolerances are 5 standard errors (a false alarm about once in 3.5 million runs).
"""

import dataclasses
import math
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nn_jax import initializers as I
from nn_jax.attention import MultiHeadAttention
from nn_jax.combinators import Sequential
from nn_jax.conv import Conv, ConvTranspose
from nn_jax.dense import Dense
from nn_jax.embedding import Embedding
from nn_jax.errors import ConfigError
from nn_jax.models import MLP
from nn_jax.presets import MapLayers, map_layers, pytorch_defaults, pytorch_layer_defaults
from nn_jax.recurrent import RNN, GRUCell, LSTMCell, SimpleRNNCell

KEY = jax.random.key(0)


def assert_uniform(a, bound):
    """``a`` looks like i.i.d. ``U(-bound, bound)``: support and variance."""
    a = np.asarray(a, np.float64).ravel()
    assert np.abs(a).max() <= bound * (1 + 1e-6)
    assert np.abs(a).max() > 0.9 * bound  # fills the interval (for a few hundred draws or more)
    se = math.sqrt(4 * bound**4 / 45 / a.size)
    assert abs(np.mean(a**2) - bound**2 / 3) < 5 * se, (np.mean(a**2), bound**2 / 3, se)


def assert_sum_of_two_uniforms(a, bound):
    """``a`` looks like the sum of two i.i.d. ``U(-bound, bound)``: variance ``2 bound^2 / 3``."""
    a = np.asarray(a, np.float64).ravel()
    assert np.abs(a).max() <= 2 * bound * (1 + 1e-6)
    assert np.abs(a).max() > bound  # a single uniform never leaves [-bound, bound]
    # E[S^4] for S = X + Y: 2 E[X^4] + 6 E[X^2]^2 = 2 b^4 / 5 + 6 b^4 / 9.
    var_s2 = 2 / 5 + 6 / 9 - (2 / 3) ** 2
    se = math.sqrt(var_s2 * bound**4 / a.size)
    assert abs(np.mean(a**2) - 2 * bound**2 / 3) < 5 * se


# --- the fan-in initializers ------------------------------------------------------------------


def test_uniform_fan_in_bound_and_variance():
    a = I.uniform_fan_in()(KEY, (50_000,), fan_in=64)
    assert a.dtype == jnp.float32
    assert_uniform(a, 1 / 8)
    assert_uniform(I.uniform_fan_in(2.0)(KEY, (20_000,), jnp.float32, fan_in=16), 0.5)


def test_uniform_fan_in_without_fan_in_says_where_to_use_it():
    with pytest.raises(ConfigError, match=r"uniform_fan_in\(\) needs the fan-in"):
        I.uniform_fan_in()(KEY, (3,))
    with pytest.raises(ConfigError, match="needs the fan-in"):
        Embedding(10, 4, table_init=I.uniform_fan_in()).init(KEY, jnp.zeros((2,), jnp.int32))


def test_uniform_symmetric_terms():
    assert_uniform(I.uniform_symmetric(0.3)(KEY, (50_000,)), 0.3)
    assert_sum_of_two_uniforms(I.uniform_symmetric(0.3, terms=2)(KEY, (50_000,)), 0.3)
    blocks = np.asarray(I.uniform_symmetric(0.3, terms=(2, 1))(KEY, (4, 20_000))).reshape(4, 2, -1)
    assert_sum_of_two_uniforms(blocks[:, 0], 0.3)
    assert_uniform(blocks[:, 1], 0.3)
    with pytest.raises(ConfigError, match="3 equal blocks"):
        I.uniform_symmetric(0.3, terms=(2, 2, 1))(KEY, (4,))
    with pytest.raises(ConfigError, match="terms must be"):
        I.uniform_symmetric(0.3, terms=0)
    with pytest.raises(ConfigError, match="bound must be"):
        I.uniform_symmetric(-1.0)


@pytest.mark.parametrize(
    "init",
    [I.uniform_fan_in(), I.uniform_fan_in(scale=0.5), I.uniform_symmetric(0.25, terms=(2, 2, 1))],
)
def test_new_initializers_print_compare_and_pickle(init):
    text = repr(init)
    assert "0x" not in text and "<" not in text
    assert eval(text, vars(I)) == init
    assert pickle.loads(pickle.dumps(init)) == init
    assert hash(init) == hash(pickle.loads(pickle.dumps(init)))


def test_reprs():
    assert repr(I.uniform_fan_in()) == "uniform_fan_in()"
    assert repr(I.uniform_symmetric(0.5, terms=2)) == "uniform_symmetric(bound=0.5, terms=2)"
    assert repr(I.uniform_symmetric(np.float32(0.5))) == "uniform_symmetric(bound=0.5)"


def test_initialize_passes_fan_in_only_to_initializers_that_take_it():
    def plain(key, shape, dtype=jnp.float32):  # a JAX-style initializer knows no fan_in
        return jnp.full(shape, 3.0, dtype)

    assert isinstance(I.uniform_fan_in(), I.FanInInitializer)
    assert not isinstance(I.normal(), I.FanInInitializer)
    np.testing.assert_array_equal(I.initialize(plain, KEY, (2,), fan_in=5), [3.0, 3.0])
    jax_init = jax.nn.initializers.lecun_normal()
    np.testing.assert_array_equal(
        I.initialize(jax_init, KEY, (4, 3), jnp.float32, fan_in=99), jax_init(KEY, (4, 3))
    )


def test_jax_initializers_still_work_in_layers():
    layer = Dense(
        3, w_init=jax.nn.initializers.he_uniform(), b_init=jax.nn.initializers.constant(0.5)
    )
    params, _ = layer.init(KEY, jnp.zeros((2, 4)))
    np.testing.assert_array_equal(params["b"], [0.5, 0.5, 0.5])
    cell = GRUCell(4, b_init=jax.nn.initializers.ones)
    params, _ = cell.init(KEY, (cell.initial_carry((2,)), jnp.zeros((2, 3))))
    np.testing.assert_array_equal(params["b_hn"], jnp.ones(4))


# --- each layer under the preset: PyTorch's bounds --------------------------------------------


def test_dense_is_torch_linear():
    params, _ = pytorch_defaults(Dense(400)).init(KEY, jnp.zeros((1, 256)))
    assert_uniform(params["w"], 1 / 16)
    assert_uniform(params["b"], 1 / 16)


def test_conv2d_is_torch_conv2d():
    # fan_in = 3 * 3 * 8 / 2 = 36 with groups=2.
    layer = pytorch_defaults(Conv(128, (3, 3), feature_group_count=2))
    params, _ = layer.init(KEY, jnp.zeros((1, 6, 6, 8)))
    assert params["w"].shape == (3, 3, 4, 128)
    assert_uniform(params["w"], 1 / 6)
    assert_uniform(params["b"], 1 / 6)


def test_conv_transpose_uses_torchs_fan_in():
    # PyTorch's ConvTranspose2d(C_in=16, F=8, k=2) weight is (16, 8, 2, 2); fan_in = 8 * 2 * 2 = 32.
    layer = pytorch_defaults(ConvTranspose(8, (2, 2), strides=2))
    params, _ = layer.init(KEY, jnp.zeros((1, 4, 4, 256)))
    bound = 1 / math.sqrt(32)
    assert_uniform(params["w"], bound)
    assert np.abs(params["b"]).max() <= bound


@pytest.mark.parametrize("cell_type", [SimpleRNNCell, LSTMCell, GRUCell])
def test_recurrent_cells_are_torch_cells(cell_type):
    hidden = 128
    cell = pytorch_defaults(cell_type(hidden))
    p, _ = cell.init(KEY, (cell.initial_carry((1,)), jnp.zeros((1, 32))))
    bound = 1 / math.sqrt(hidden)
    assert_uniform(p["w_i"], bound)
    assert_uniform(p["w_h"], bound)
    # b = bias_ih + bias_hh: two draws per entry, but bias_ih alone on a GRU's n block.
    if cell_type is GRUCell:
        assert_sum_of_two_uniforms(p["b"][: 2 * hidden], bound)
        assert_uniform(jnp.concatenate([p["b"][2 * hidden :], p["b_hn"]]), bound)
    else:
        assert_sum_of_two_uniforms(p["b"], bound)
    if cell_type is LSTMCell:
        assert cell.forget_bias == 0.0


def test_embedding_is_standard_normal():
    params, _ = pytorch_defaults(Embedding(1000, 50)).init(KEY, jnp.zeros((2,), jnp.int32))
    table = np.asarray(params["table"], np.float64)
    se = math.sqrt(2 / table.size)  # var of a sample variance of N(0, 1)
    assert abs(np.mean(table**2) - 1) < 5 * se


def test_attention_is_torch_multihead_attention():
    e = 64
    layer = pytorch_defaults(MultiHeadAttention(4))
    params, _ = layer.init(KEY, jnp.zeros((1, 3, e)))
    packed = jnp.concatenate([params[k].reshape(e, e) for k in ("w_q", "w_k", "w_v")])
    assert_uniform(packed, math.sqrt(6 / (e + 3 * e)))
    assert_uniform(params["w_o"], 1 / math.sqrt(e))
    for name in ("b_q", "b_k", "b_v", "b_o"):
        np.testing.assert_array_equal(params[name], 0)


# --- the walk ---------------------------------------------------------------------------------


def test_walks_into_sequential_and_keeps_the_params_tree():
    model = Sequential(Dense(300), jax.nn.relu, Sequential(Dense(200)))
    torch_model = pytorch_defaults(model)
    x = jnp.zeros((1, 100))
    params, _ = torch_model.init(KEY, x)
    assert jax.tree.structure(params) == jax.tree.structure(jax.eval_shape(model.init, KEY, x)[0])
    assert_uniform(params["0"]["b"], 1 / 10)
    assert_uniform(params["2"]["0"]["w"], 1 / math.sqrt(300))
    # The params work with the original model: only init differs.
    np.testing.assert_array_equal(model(params, x + 1), torch_model(params, x + 1))


def test_walks_into_fields_of_layers_that_are_not_blocks():
    rnn = pytorch_defaults(RNN(GRUCell(5), reverse=True))
    assert type(rnn) is RNN and rnn.reverse
    assert rnn.cell == pytorch_layer_defaults(GRUCell(5))


def test_walks_into_zoo_models_that_build_children_in_forward():
    torch_model = pytorch_defaults(MLP((500, 300)))
    assert isinstance(torch_model, MapLayers)
    params, _ = torch_model.init(KEY, jnp.zeros((1, 100)))
    assert_uniform(params["dense_0"]["w"], 1 / 10)
    assert_uniform(params["dense_1"]["b"], 1 / math.sqrt(500))


def test_preset_is_idempotent_hashable_and_picklable():
    model = pytorch_defaults(MLP((4, 2)))
    assert pytorch_defaults(model) == model
    assert hash(model) == hash(pytorch_defaults(MLP((4, 2))))
    assert pickle.loads(pickle.dumps(model)) == model
    dense = pytorch_defaults(Dense(3))
    assert type(dense) is Dense and pytorch_defaults(dense) == dense


def test_other_layers_are_left_alone_and_defaults_unchanged():
    assert pytorch_layer_defaults(jax.nn.relu) is jax.nn.relu  # not a layer PyTorch has
    assert Dense(3).b_init is I.zeros and GRUCell(3).b_hn_init is None
    assert MultiHeadAttention(2).w_o_init is None


def test_map_layers_with_a_custom_map():
    model = map_layers(Sequential(Dense(3), MLP((2,))), _bias_one)
    params, _ = model.init(KEY, jnp.zeros((1, 4)))
    np.testing.assert_array_equal(params["0"]["b"], jnp.ones(3))
    np.testing.assert_array_equal(params["1"]["dense_0"]["b"], jnp.ones(2))


def _bias_one(layer):
    return dataclasses.replace(layer, b_init=I.ones) if isinstance(layer, Dense) else layer

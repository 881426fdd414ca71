"""Dense, Flatten, Reshape against NumPy; their errors name the layer path, expected and given."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nn_jax import (
    ConfigError,
    Dense,
    Flatten,
    Linear,
    ParameterFree,
    ParamsError,
    Reshape,
    Sequential,
    ShapeError,
)

KEY = jax.random.key(0)


def test_dense_matches_numpy_with_leading_axes():
    x = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)
    layer = Dense(5)
    params, state = layer.init(KEY, x)
    assert state == {}
    w, b = np.asarray(params["w"]), np.asarray(params["b"])
    expected = np.einsum("btd,df->btf", x, w) + b
    np.testing.assert_allclose(layer(params, x), expected, rtol=1e-5, atol=1e-6)


def test_dense_without_bias_and_dtypes():
    x = jnp.ones((2, 3), jnp.bfloat16)
    layer = Dense(4, use_bias=False, param_dtype=jnp.float32, dtype=jnp.bfloat16)
    params, _ = layer.init(KEY, x)
    assert set(params) == {"w"} and params["w"].dtype == jnp.float32
    y = layer(params, x)
    assert y.dtype == jnp.bfloat16
    np.testing.assert_allclose(
        np.asarray(y, np.float32), np.asarray(params["w"]).sum(0)[None].repeat(2, 0), rtol=2e-2
    )


def test_dense_default_init_is_lecun_normal():
    params, _ = Dense(256).init(KEY, jnp.zeros((1, 512)))
    assert abs(float(jnp.var(params["w"])) / (1 / 512) - 1) < 0.05
    np.testing.assert_array_equal(params["b"], 0)


def test_dense_rejects_bad_config():
    with pytest.raises(ConfigError, match="features must be a positive int, given 0"):
        Dense(0)


def test_wrong_last_axis_names_layer_path_expected_and_given():
    model = Sequential({"encoder": Sequential(Dense(4), jax.nn.relu), "head": Dense(1)})
    params, _ = model.init(KEY, jnp.zeros((2, 10)))
    with pytest.raises(
        ShapeError, match=r"Dense at 'encoder/0': input last axis has size 7 .* expected 10"
    ):
        model(params, jnp.zeros((2, 7)))


def test_missing_param_names_layer_path_and_keys():
    model = Sequential({"encoder": Dense(4), "head": Dense(1)})
    params, _ = model.init(KEY, jnp.zeros((2, 3)))
    del params["head"]["w"]
    with pytest.raises(ParamsError, match=r"Dense at 'head': missing parameter 'w'.*given \['b'\]"):
        model(params, jnp.zeros((2, 3)))
    del params["head"]
    with pytest.raises(ParamsError, match=r"Dense at 'head': missing parameter 'w'.*given \[\]"):
        model(params, jnp.zeros((2, 3)))


def test_wrong_rank_names_layer_path():
    model = Sequential(Dense(4))
    params, _ = model.init(KEY, jnp.zeros((2, 3)))
    with pytest.raises(ShapeError, match=r"Dense at '0': input must have rank >= 1, given rank 0"):
        model(params, jnp.float32(1.0))
    with pytest.raises(
        ShapeError, match=r"Reshape at <root>: cannot reshape per-example shape \(5,\)"
    ):
        Reshape((2, 2))({}, jnp.zeros((3, 5)))


def test_flatten_and_reshape_match_numpy():
    x = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    np.testing.assert_array_equal(Flatten()({}, x), x.reshape(2, 12))
    np.testing.assert_array_equal(Flatten(batch_dims=2)({}, x), x)
    np.testing.assert_array_equal(Reshape((4, -1))({}, x.reshape(2, 12)), x.reshape(2, 4, 3))


def test_flatten_and_reshape_are_parameter_free():
    for layer in (Flatten(), Reshape((4, 3))):
        assert isinstance(layer, ParameterFree)
        assert layer.init(KEY, jnp.zeros((2, 12))) == ({}, {})


def test_linear_is_the_pytorch_name_of_dense():
    assert Linear is Dense and Linear(3) == Dense(3)

"""nn_jax.compat.stax: stax pairs as nn_jax layers, nn_jax layers as stax pairs, stax's names.

Modelled on jax's own ``tests/stax_test.py``: the shape ``init_fun`` predicts must be the shape
``apply_fun`` returns; and the numbers must equal stax's own layers given the same params.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.example_libraries import stax as jax_stax

from nn_jax import BatchNorm, Dense, Dropout, Sequential
from nn_jax.compat import stax
from nn_jax.errors import ConfigError, ParamsError, RngError, ShapeError

KEY = jax.random.key(0)


# stax's own Dense adds a (F,) bias to (B, F) outputs: rank promotion, which the suite's strict
# setting refuses. Only the calls that run stax's own layers are allowed to promote.
def stax_promotes():
    return jax.numpy_rank_promotion("allow")


def _inputs(shape):
    if isinstance(shape, list):
        return [_inputs(s) for s in shape]
    return jax.random.normal(jax.random.key(1), shape)


def _check_shape_agreement(init_fun, apply_fun, input_shape):
    """stax_test's check: init's output shape is apply's output shape."""
    out_shape, params = init_fun(KEY, input_shape)
    y = apply_fun(params, _inputs(input_shape), rng=jax.random.key(2))
    shapes = [jnp.shape(v) for v in y] if isinstance(y, tuple | list) else jnp.shape(y)
    assert shapes == (list(out_shape) if isinstance(out_shape, list) else tuple(out_shape))
    return params, y


def _stax_conv_params(p):
    return p["w"], p["b"].reshape(1, 1, 1, -1)


# ---- stax's names on nn_jax blocks: shapes, and numbers equal to stax's own layers ----------


@pytest.mark.parametrize(
    ("ours", "theirs", "input_shape", "convert"),
    [
        (stax.Dense(3), jax_stax.Dense(3), (2, 5), lambda p: (p["w"], p["b"])),
        (
            stax.Conv(4, (3, 2), (2, 1), "SAME"),
            jax_stax.Conv(4, (3, 2), (2, 1), "SAME"),
            (2, 7, 5, 3),
            _stax_conv_params,
        ),
        (stax.Conv(2, (2, 2)), jax_stax.Conv(2, (2, 2)), (1, 4, 4, 1), _stax_conv_params),
        (stax.MaxPool((2, 2), (2, 2)), jax_stax.MaxPool((2, 2), (2, 2)), (2, 5, 5, 3), None),
        (
            stax.AvgPool((3, 3), (2, 2), "SAME"),
            jax_stax.AvgPool((3, 3), (2, 2), "SAME"),
            (2, 5, 6, 2),
            None,
        ),
        (stax.Flatten, jax_stax.Flatten, (2, 3, 4), None),
        (stax.Relu, jax_stax.Relu, (3, 4), None),
        (stax.LogSoftmax, jax_stax.LogSoftmax, (3, 4), None),
    ],
    ids=["dense", "conv-same", "conv-valid", "maxpool", "avgpool-same", "flatten", "relu", "lsm"],
)
def test_stax_names_match_stax_layers(ours, theirs, input_shape, convert):
    params, y = _check_shape_agreement(*ours, input_shape)
    their_shape, _ = theirs[0](KEY, input_shape)
    assert ours[0](KEY, input_shape)[0] == tuple(their_shape)
    their_params = convert(params) if convert else ()
    with stax_promotes():
        expected = theirs[1](their_params, _inputs(input_shape))
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)


def test_avgpool_excludes_padding_like_stax():
    # Independent reference: a 1x3 window, stride 1, SAME on a row [1, 2, 3]: edges average
    # two elements (padding excluded), the middle three.
    init_fun, apply_fun = stax.AvgPool((1, 3), (1, 1), "SAME")
    x = jnp.array([1.0, 2.0, 3.0]).reshape(1, 1, 3, 1)
    y = apply_fun(init_fun(KEY, x.shape)[1], x)
    np.testing.assert_allclose(y.ravel(), [1.5, 2.0, 2.5], rtol=1e-6)


def test_serial_parallel_fan_layers_match_stax():
    def net(s):
        return s.serial(
            s.Dense(4),
            s.Relu,
            s.FanOut(3),
            s.parallel(s.Dense(2), s.Identity, s.Dense(2)),
            s.parallel(s.Identity, s.Dense(2), s.Identity),
            s.FanInSum if s is stax else jax_stax.FanInSum,
        )

    ours = net(stax)
    params, y = _check_shape_agreement(*ours, (3, 5))
    assert sorted(params) == ["0", "3", "4"]  # slots without params are left out
    theirs = net(jax_stax)
    their_params = [
        (params["0"]["w"], params["0"]["b"]),
        (),
        (),
        [
            (params["3"]["0"]["w"], params["3"]["0"]["b"]),
            (),
            (params["3"]["2"]["w"], params["3"]["2"]["b"]),
        ],
        [(), (params["4"]["1"]["w"], params["4"]["1"]["b"]), ()],
        (),
    ]
    with stax_promotes():
        expected = theirs[1](their_params, _inputs((3, 5)))
    np.testing.assert_allclose(y, expected, rtol=1e-5)


def test_fan_in_concat_shapes_and_values():
    init_fun, apply_fun = stax.serial(
        stax.FanOut(2), stax.parallel(stax.Dense(3), stax.Dense(1)), stax.FanInConcat(axis=-1)
    )
    params, y = _check_shape_agreement(init_fun, apply_fun, (2, 4))
    x = np.asarray(_inputs((2, 4)), np.float64)
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params["1"])
    expected = np.concatenate([x @ p["0"]["w"] + p["0"]["b"], x @ p["1"]["w"] + p["1"]["b"]], -1)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)


def test_stax_dropout_keeps_stax_meanings():
    # stax's rate is the keep probability, and its mode is fixed when built.
    init_fun, apply_fun = stax.Dropout(1.0)
    x = _inputs((4, 6))
    np.testing.assert_allclose(apply_fun(init_fun(KEY, x.shape)[1], x, rng=KEY), x)
    init_fun, apply_fun = stax.Dropout(0.5, mode="test")
    np.testing.assert_allclose(apply_fun({}, x), x)
    init_fun, apply_fun = stax.Dropout(0.5)
    y = apply_fun({}, x, rng=KEY)
    kept = y != 0
    assert 0 < int(kept.sum()) < x.size
    np.testing.assert_allclose(y[kept], 2 * x[kept], rtol=1e-6)
    with pytest.raises(RngError, match="rng"):
        apply_fun({}, x)


# ---- nn_jax layers inside stax's own combinators ---------------------------------------------


def test_nn_jax_layers_inside_stax_serial_and_parallel():
    init_fun, apply_fun = jax_stax.serial(
        stax.to_stax(Dense(4)),
        jax_stax.Relu,
        jax_stax.FanOut(2),
        jax_stax.parallel(stax.to_stax(Dense(3)), jax_stax.Dense(3)),
        jax_stax.FanInSum,
    )
    with stax_promotes():
        params, y = _check_shape_agreement(init_fun, apply_fun, (2, 5))
    assert set(params[0]) == {"w", "b"} and isinstance(params[3][1], tuple)
    x = np.asarray(_inputs((2, 5)), np.float64)
    f64 = lambda a: np.asarray(a, np.float64)  # noqa: E731
    h = np.maximum(x @ f64(params[0]["w"]) + f64(params[0]["b"]), 0)
    a = h @ f64(params[3][0]["w"]) + f64(params[3][0]["b"])
    b = h @ f64(params[3][1][0]) + f64(params[3][1][1])
    np.testing.assert_allclose(y, a + b, rtol=1e-5, atol=1e-6)


def test_train_flag_reaches_nn_jax_layers_through_stax_serial():
    init_fun, apply_fun = jax_stax.serial(stax.to_stax(Dropout(0.5)), jax_stax.Identity)
    _, params = init_fun(KEY, (4, 8))
    x = jnp.ones((4, 8))
    np.testing.assert_allclose(apply_fun(params, x, rng=KEY), x)  # train=False by default
    y = apply_fun(params, x, rng=KEY, train=True)
    assert set(np.unique(np.asarray(y))) == {0.0, 2.0}


def test_stateful_layer_needs_its_state_and_runs_in_eval_mode():
    with pytest.raises(ConfigError, match="state"):
        stax.to_stax(BatchNorm())[0](KEY, (4, 3))
    _, bn_state = BatchNorm().init(KEY, jnp.zeros((4, 3)))
    bn_state = {"mean": jnp.full((3,), 1.0), "var": jnp.full((3,), 4.0)}
    init_fun, apply_fun = stax.to_stax(BatchNorm(), state=bn_state)
    _, params = init_fun(KEY, (4, 3))
    x = _inputs((4, 3))
    np.testing.assert_allclose(apply_fun(params, x), (x - 1.0) / np.sqrt(4.0 + 1e-5), rtol=1e-5)
    with pytest.raises(ConfigError, match="evaluation mode"):
        apply_fun(params, x, train=True)


# ---- stax layers inside nn_jax -----------------------------------------------------------


def test_from_stax_params_are_dicts_and_values_match_stax():
    pair = jax_stax.serial(jax_stax.Dense(4), jax_stax.Tanh, jax_stax.Dense(2))
    layer = stax.from_stax(pair)
    params, state = layer.init(KEY, jnp.zeros((3, 5)))
    assert state == {}
    assert jax.tree.map(jnp.shape, params) == {
        "0": {"0": (5, 4), "1": (4,)},
        "1": {},
        "2": {"0": (4, 2), "1": (2,)},
    }
    x = _inputs((3, 5))
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    expected = np.tanh(np.asarray(x, np.float64) @ p["0"]["0"] + p["0"]["1"]) @ p["2"]["0"]
    y = layer(params, x)  # under the suite's strict rank promotion: the layer allows it
    with stax_promotes():
        stax_params = [
            (params["0"]["0"], params["0"]["1"]),
            (),
            (params["2"]["0"], params["2"]["1"]),
        ]
        reference = pair[1](stax_params, x)
    np.testing.assert_allclose(y, expected + p["2"]["1"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(y, reference, rtol=1e-6)


def test_stax_layers_compose_in_nn_jax_sequential():
    model = Sequential(
        stax.from_stax(jax_stax.Conv(3, (2, 2), padding="SAME")),
        stax.from_stax(jax_stax.MaxPool((2, 2), (2, 2))),
        stax.from_stax(jax_stax.Flatten),
        Dense(2),
    )
    x = _inputs((2, 4, 4, 1))
    params, _ = model.init(KEY, x)
    y = model(params, x)
    assert y.shape == jax.eval_shape(lambda v: model(params, v), x).shape == (2, 2)
    w, b = params["0"]["0"], params["0"]["1"]
    h = (
        jax.lax.conv_general_dilated(
            x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        + b
    )
    h = np.asarray(h).reshape(2, 2, 2, 2, 2, 3).max(axis=(2, 4)).reshape(2, -1)
    np.testing.assert_allclose(
        y, h @ np.asarray(params["3"]["w"]) + np.asarray(params["3"]["b"]), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(jax.jit(model.__call__)(params, x), y, rtol=1e-6)


def test_from_stax_fan_layers_in_nn_jax():
    layer = stax.from_stax(
        jax_stax.serial(
            jax_stax.FanOut(2),
            jax_stax.parallel(jax_stax.Dense(2), jax_stax.Dense(3)),
            jax_stax.FanInConcat(),
        )
    )
    params, _ = layer.init(KEY, jnp.zeros((2, 4)))
    assert layer(params, _inputs((2, 4))).shape == (2, 5)


def test_from_stax_rng_reaches_stax_dropout():
    layer = stax.from_stax(jax_stax.Dropout(0.5))
    x = jnp.ones((4, 8))
    y = layer.apply({}, {}, x, rng=KEY)[0]
    assert set(np.unique(np.asarray(y))) == {0.0, 2.0}


def test_round_trip_and_bad_params():
    dense = Dense(3)
    assert stax.from_stax(stax.to_stax(dense)) is dense
    layer = stax.from_stax(jax_stax.Dense(3))
    params, _ = layer.init(KEY, jnp.zeros((2, 4)))
    with pytest.raises(ShapeError, match=r"StaxLayer at <root>: parameter '0' has shape \(5, 3\)"):
        layer({"0": jnp.zeros((5, 3)), "1": params["1"]}, jnp.zeros((2, 4)))
    with pytest.raises(ShapeError, match=r"for inputs of shape \(2, 5\)"):
        layer(params, jnp.zeros((2, 5)))
    conv = stax.from_stax(jax_stax.Conv(2, (3, 3)))
    with pytest.raises(ShapeError, match=r"StaxLayer at <root>: the wrapped stax init_fun failed"):
        conv.init(KEY, jnp.zeros((2, 4)))
    with pytest.raises(ParamsError, match=r"must have keys \['0', '1'\].*given \['w'\]"):
        layer({"w": params["0"]}, jnp.zeros((2, 4)))

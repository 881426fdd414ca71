"""nn_jax.compat.equinox: Equinox modules as nn_jax layers, and nn_jax layers as Modules.

References are Equinox's own calls (``jax.vmap(module)(x)``, ``eqx.filter_grad``) and NumPy
formulas written here; none compares the bridge with itself.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nn_jax import Dense, Sequential, losses
from nn_jax.compat.equinox import EquinoxModule, NNJaxModule, to_equinox
from nn_jax.errors import ConfigError, ParamsError, RngError, ShapeError
from nn_jax.train import make_train_step

KEY = jax.random.key(0)
X = jax.random.normal(jax.random.key(1), (5, 3))


def make_mlp(key):
    return eqx.nn.MLP(3, 2, 4, 1, activation=jnp.tanh, key=key)


def make_dropout(key):
    return eqx.nn.Dropout(0.5)


def make_batch_norm(key):
    return eqx.nn.make_with_state(eqx.nn.BatchNorm)(3, "batch", mode="batch")


@pytest.fixture(scope="module")
def mlp():
    layer = EquinoxModule(make_mlp)
    params, state = layer.init(KEY, X)
    return layer, params, state, make_mlp(KEY)


def test_params_are_the_modules_arrays_by_attribute_path(mlp):
    _, params, state, module = mlp
    assert state == {}
    assert jax.tree.map(jnp.shape, params) == {
        "layers": {"0": {"weight": (4, 3), "bias": (4,)}, "1": {"weight": (2, 4), "bias": (2,)}}
    }
    np.testing.assert_array_equal(params["layers"]["1"]["weight"], module.layers[1].weight)


def test_outputs_match_equinox_and_numpy(mlp):
    layer, params, state, module = mlp
    y, new_state = layer.apply(params, state, X)
    assert new_state == {}
    np.testing.assert_allclose(y, jax.vmap(module)(X), rtol=1e-6, atol=1e-7)
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params["layers"])
    h = np.tanh(np.asarray(X, np.float64) @ p["0"]["weight"].T + p["0"]["bias"])
    np.testing.assert_allclose(y, h @ p["1"]["weight"].T + p["1"]["bias"], rtol=1e-5, atol=1e-6)


def test_gradients_match_equinox_filter_grad(mlp):
    layer, params, _, module = mlp
    target = jnp.ones((5, 2))

    def ours(p):
        return jnp.mean((layer(p, X) - target) ** 2)

    def theirs(m):
        return jnp.mean((jax.vmap(m)(X) - target) ** 2)

    grads = jax.grad(ours)(params)
    expected = eqx.filter_grad(theirs)(module)
    for i in ("0", "1"):
        for name in ("weight", "bias"):
            np.testing.assert_allclose(
                grads["layers"][i][name],
                getattr(expected.layers[int(i)], name),
                rtol=1e-5,
                atol=1e-7,
            )


def test_composes_in_sequential_and_trains():
    model = Sequential(Dense(3), EquinoxModule(make_mlp), Dense(1))
    params, _ = model.init(KEY, X)
    assert sorted(params) == ["0", "1", "2"]
    h = X @ params["0"]["w"] + params["0"]["b"][None, :]
    p = params["1"]["layers"]
    inner = eqx.tree_at(
        lambda m: [m.layers[0].weight, m.layers[0].bias, m.layers[1].weight, m.layers[1].bias],
        make_mlp(jax.random.key(9)),
        [p["0"]["weight"], p["0"]["bias"], p["1"]["weight"], p["1"]["bias"]],
    )
    expected = jax.vmap(inner)(h) @ params["2"]["w"] + params["2"]["b"][None, :]
    np.testing.assert_allclose(model(params, X), expected, rtol=1e-5, atol=1e-6)

    targets = jnp.sin(X.sum(axis=1, keepdims=True))
    optimizer = optax.adam(0.05)
    step = make_train_step(model, losses.mse, optimizer)
    opt_state, history = optimizer.init(params), []
    for _ in range(20):
        params, opt_state, loss = step(params, opt_state, (X, targets))
        history.append(float(loss))
    assert history[-1] < 0.3 * history[0], history


def test_dropout_gets_the_rng_and_the_train_flag():
    layer = EquinoxModule(make_dropout)
    params, state = layer.init(KEY, X)
    assert params == {} and state == {}
    x = jnp.ones((6, 10))
    np.testing.assert_array_equal(layer.apply(params, state, x)[0], x)  # train=False
    rng = jax.random.key(3)
    y = layer.apply(params, state, x, rng=rng, train=True)[0]
    assert set(np.unique(np.asarray(y))) == {0.0, 2.0}  # p = 0.5: kept values scaled by 2
    # Equinox's own call, one key per example (the split the layer documents).
    expected = jax.vmap(lambda v, k: make_dropout(None)(v, key=k))(x, jax.random.split(rng, 6))
    np.testing.assert_array_equal(y, expected)
    assert not np.array_equal(y[0], y[1])  # examples get different masks
    with pytest.raises(RngError, match="EquinoxModule at <root>: needs randomness"):
        layer.apply(params, state, x, train=True)


def test_batch_norm_state_threads_like_equinox():
    layer = EquinoxModule(make_batch_norm)
    params, state = layer.init(KEY, X)
    assert sorted(params) == ["bias", "weight"]
    module, eqx_state = make_batch_norm(KEY)
    x = 3.0 + 2.0 * X

    def run_eqx(m, s):
        return jax.vmap(m, axis_name="batch", in_axes=(0, None), out_axes=(0, None))(x, s)

    y, new_state = layer.apply(params, state, x, train=True)
    y_eqx, s_eqx = run_eqx(module, eqx_state)
    np.testing.assert_allclose(y, y_eqx, rtol=1e-5, atol=1e-6)
    xs = np.asarray(x, np.float64)
    np.testing.assert_allclose(
        y, (xs - xs.mean(0)) / np.sqrt(xs.var(0) + 1e-5), rtol=1e-4, atol=1e-5
    )
    for ours, theirs in zip(jax.tree.leaves(new_state), jax.tree.leaves(s_eqx), strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-6)
    y_eval, _ = layer.apply(params, new_state, x, train=False)
    y_eqx_eval, _ = run_eqx(eqx.nn.inference_mode(module), s_eqx)
    np.testing.assert_allclose(y_eval, y_eqx_eval, rtol=1e-5, atol=1e-6)


def test_bad_params_name_the_entry(mlp):
    layer, params, state, _ = mlp
    bad = jax.tree.map(lambda a: a, params)
    bad["layers"]["0"]["weight"] = jnp.zeros((4, 2))
    with pytest.raises(ShapeError, match=r"'layers/0/weight' has shape \(4, 2\), expected"):
        layer.apply(bad, state, X)
    bad["layers"]["0"]["weight"] = params["layers"]["0"]["weight"]
    del bad["layers"]["1"]
    with pytest.raises(ParamsError, match=r"missing params entry 'layers/1'"):
        layer.apply(bad, state, X)
    with pytest.raises(ConfigError, match="make must be a function of one PRNG key"):
        EquinoxModule(lambda: None)
    # Equinox's own error on an input the module cannot take names the layer and the shapes.
    with pytest.raises(
        ShapeError,
        match=r"EquinoxModule at <root>: the wrapped Equinox module "
        r"MLP failed on inputs of shape \(5, 4\)",
    ):
        layer.init(KEY, jnp.zeros((5, 4)))


def test_to_equinox_output_and_filter_grad():
    model = Sequential(Dense(4), jnp.tanh, Dense(2))
    params, _ = model.init(KEY, X)
    module = to_equinox(model, params)
    assert isinstance(module, NNJaxModule)
    np.testing.assert_allclose(module(X), model(params, X), rtol=1e-6)
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    expected = np.tanh(np.asarray(X, np.float64) @ p["0"]["w"] + p["0"]["b"]) @ p["2"]["w"]
    np.testing.assert_allclose(module(X), expected + p["2"]["b"], rtol=1e-5, atol=1e-6)

    def loss(m, x):
        return jnp.sum(m(x) ** 2)

    grads = eqx.filter_jit(eqx.filter_grad(loss))(module, X)
    expected_grads = jax.grad(lambda q: jnp.sum(model(q, X) ** 2))(params)
    for g, e in zip(jax.tree.leaves(grads.params), jax.tree.leaves(expected_grads), strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6)
    assert eqx.nn.inference_mode(module).inference is True


def test_to_equinox_dropout_and_state():
    from nn_jax import BatchNorm, Dropout

    module = to_equinox(Dropout(0.5), {})
    x = jnp.ones((4, 8))
    assert set(np.unique(np.asarray(module(x, key=KEY)))) == {0.0, 2.0}
    np.testing.assert_array_equal(eqx.nn.inference_mode(module)(x), x)
    params, state = BatchNorm().init(KEY, jnp.zeros((4, 3)))
    state = {"mean": jnp.full((3,), 1.0), "var": jnp.full((3,), 4.0)}
    bn = to_equinox(BatchNorm(), params, state)
    with pytest.raises(ConfigError, match="inference_mode"):
        bn(jnp.ones((4, 3)))
    y = eqx.nn.inference_mode(bn)(jnp.full((4, 3), 3.0))
    np.testing.assert_allclose(y, np.full((4, 3), 2.0 / np.sqrt(4.0 + 1e-5)), rtol=1e-5)


def test_vmap_false_calls_the_module_as_given(mlp):
    _, params, state, module = mlp
    layer = EquinoxModule(make_mlp, vmap=False)
    y, _ = layer.apply(params, state, X[0])
    np.testing.assert_allclose(y, module(X[0]), rtol=1e-6)
    with pytest.raises(ShapeError, match="with vmap=True the input needs one leading batch axis"):
        EquinoxModule(make_mlp).apply(params, state, jnp.zeros(()))

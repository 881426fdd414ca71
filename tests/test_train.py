"""The seed's network trained with jax.grad + optax; step builders; fit."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nn_jax import (
    ConfigError,
    Dense,
    ParameterFree,
    Sequential,
    TrainState,
    losses,
    make_predict,
    make_stateful_train_step,
    make_train_step,
    param_count,
)
from nn_jax.models import SimpleNetwork

KEY = jax.random.key(42)


class _Weighted(ParameterFree):
    """Scales each example by the side input "example_weight" (when given)."""

    def transform(self, x, call):
        weight = self.side_input(call, "example_weight")
        return x if weight is None else x * weight[:, None]


def _toy_problem():
    """8 examples, 10 features; label = whether a fixed linear score is positive (learnable)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 10)).astype(np.float32)
    y = (x @ rng.standard_normal(10) > 0).astype(np.float32)[:, None]
    return x, y


def _numpy_forward(params, x):
    p = params["layers"]
    relu = lambda z: np.maximum(z, 0)  # noqa: E731
    h = relu(x @ np.asarray(p["0"]["w"]) + np.asarray(p["0"]["b"]))
    h = relu(h @ np.asarray(p["2"]["w"]) + np.asarray(p["2"]["b"]))
    z = h @ np.asarray(p["4"]["w"]) + np.asarray(p["4"]["b"])
    return 1 / (1 + np.exp(-z))


def test_seed_network_shapes_and_forward():
    x, _ = _toy_problem()
    model = SimpleNetwork()
    params, state = model.init(KEY, jax.ShapeDtypeStruct((8, 10), jnp.float32))
    assert state == {}
    assert jax.tree.map(jnp.shape, params) == {
        "layers": {
            "0": {"w": (10, 32), "b": (32,)},
            "2": {"w": (32, 16), "b": (16,)},
            "4": {"w": (16, 1), "b": (1,)},
        }
    }
    assert param_count(params) == 10 * 32 + 32 + 32 * 16 + 16 + 16 + 1
    np.testing.assert_allclose(model(params, x), _numpy_forward(params, x), rtol=1e-5, atol=1e-6)


def _train_seed(steps=100):
    x, y = _toy_problem()
    model, opt = SimpleNetwork(), optax.adam(0.01)
    params, _ = model.init(KEY, x)
    opt_state = opt.init(params)
    step = make_train_step(model, losses.binary_cross_entropy, opt)
    history = []
    for _ in range(steps):
        params, opt_state, loss = step(params, opt_state, (x, y))
        history.append(loss)
    return params, np.asarray(jnp.stack(history)), step


def test_seed_network_learns_and_is_reproducible():
    params, history, step = _train_seed()
    x, y = _toy_problem()
    p = _numpy_forward(params, x)
    bce = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    assert history[0] > 0.5 and history[-1] < 0.1 * history[0]
    np.testing.assert_allclose(history[-1], bce, rtol=0.05)  # after 99 updates vs after 100
    assert step._cache_size() == 1
    params2, history2, _ = _train_seed()
    np.testing.assert_array_equal(history, history2)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(params2), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_seed_step_matches_hand_written_adam_update():
    """One step equals the first Adam update computed from jax.grad by hand."""
    x, y = _toy_problem()
    model, opt = SimpleNetwork(), optax.adam(0.01)
    params, _ = model.init(KEY, x)
    new_params, _, loss = make_train_step(model, losses.binary_cross_entropy, opt)(
        params, opt.init(params), (x, y)
    )
    p = _numpy_forward(params, x)
    expected_loss = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-5)
    grads = jax.grad(lambda q: losses.binary_cross_entropy(model(q, x), y))(params)
    # Adam's first step with bias correction: -lr * g / (|g| + eps) elementwise.
    for g, p0, p1 in zip(*(jax.tree.leaves(t) for t in (grads, params, new_params)), strict=True):
        g = np.asarray(g, np.float64)
        np.testing.assert_allclose(p1, np.asarray(p0) - 0.01 * g / (np.abs(g) + 1e-8), atol=1e-6)


@pytest.mark.parametrize(
    "optimizer",
    [
        optax.sgd(0.1, momentum=0.9),
        optax.adamw(1e-2),
        optax.chain(optax.clip_by_global_norm(1.0), optax.rmsprop(1e-2)),
    ],
    ids=["sgd_momentum", "adamw", "clip_rmsprop"],
)
def test_train_step_works_with_any_gradient_transformation(optimizer):
    x, y = _toy_problem()
    model = Sequential(Dense(8), jax.nn.tanh, Dense(1))
    params, _ = model.init(KEY, x)
    opt_state = optimizer.init(params)
    step = make_train_step(model, losses.binary_cross_entropy_with_logits, optimizer)
    first = None
    for _ in range(30):
        params, opt_state, loss = step(params, opt_state, (x, y))
        first = loss if first is None else first
    assert float(loss) < float(first)


def test_stateful_step_and_predict_agree_with_plain_step():
    x, y = _toy_problem()
    model, opt = SimpleNetwork(), optax.adam(0.01)
    ts = TrainState.create(model, opt, KEY, x)
    params, opt_state = ts.params, ts.opt_state
    plain = make_train_step(model, losses.binary_cross_entropy, opt)
    stateful = make_stateful_train_step(model, losses.binary_cross_entropy, opt)
    for _ in range(3):
        params, opt_state, loss_a = plain(params, opt_state, (x, y))
        ts, logs = stateful(ts, (x, y))
        loss_b = logs["loss"]
        np.testing.assert_array_equal(loss_a, loss_b)
    assert int(ts.step) == 3
    predict = make_predict(model)
    np.testing.assert_allclose(
        predict(ts.params, ts.state, x), _numpy_forward(ts.params, x), rtol=1e-5
    )


def test_batches_carry_side_inputs_and_are_checked():
    """A (x, y, side) batch reaches the model's side input; the loss equals a NumPy forward."""
    x, y = _toy_problem()
    weights = np.linspace(0.5, 1.5, 8).astype(np.float32)
    model = Sequential(SimpleNetwork(), _Weighted())
    opt = optax.sgd(0.0)
    params, _ = model.init(KEY, x)
    step = make_train_step(model, losses.mse, opt)
    _, _, loss = step(params, opt.init(params), (x, y, {"example_weight": weights}))
    expected = np.mean((_numpy_forward(params["0"], x) * weights[:, None] - y) ** 2)
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    with pytest.raises(ConfigError, match=r"batch must be \(inputs, targets\).*given a 4-tuple"):
        step(params, opt.init(params), (x, y, {}, None))
    with pytest.raises(ConfigError, match=r"side inputs \['weight'\] were given but no layer"):
        step(params, opt.init(params), (x, y, {"weight": weights}))

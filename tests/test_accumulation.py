"""Gradient accumulation over micro-batches: ``make_step(..., micro_batches=k)``.

* One SGD step with ``k = 4`` micro-batches equals one big-batch step (float32 tolerance) and
  a NumPy float64 reference: the mean-squared-error gradient of a two-layer relu network
  written out by hand (``dL/dy = 2 (y - t) / (B * O)``, backpropagated through both layers).
* The layer state is threaded through the micro-batches: BatchNorm's running statistics after
  a ``k = 2`` step equal those of applying the model to the two halves one after the other.
* The compiled step's temporary memory shrinks with ``k`` (the activations of one
  micro-batch), read from XLA's ``memory_analysis`` (a compile-time quantity, not a timing).
* A batch size that ``k`` does not divide is a ``ConfigError`` naming both numbers.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nn_jax import BatchNorm, Dense, Sequential, losses
from nn_jax.errors import ConfigError, ShapeError
from nn_jax.train import Supervised, TrainState, make_stateful_train_step, make_step

KEY = jax.random.key(0)
LR = 0.1
MODEL = Sequential(Dense(8), jax.nn.relu, Dense(3))


def _batch(n=16, seed=0):
    g = np.random.default_rng(seed)
    return g.standard_normal((n, 5)).astype(np.float32), g.standard_normal((n, 3)).astype(
        np.float32
    )


@pytest.fixture(scope="module")
def start():
    return TrainState.create(MODEL, optax.sgd(LR), KEY, _batch()[0])


def _numpy_sgd_step(params, x, t):
    """One SGD step of the big-batch MSE gradient, by hand in float64."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    x, t = np.asarray(x, np.float64), np.asarray(t, np.float64)
    pre = x @ p["0"]["w"] + p["0"]["b"]
    h = np.maximum(pre, 0)
    y = h @ p["2"]["w"] + p["2"]["b"]
    dy = 2 * (y - t) / y.size
    dh = (dy @ p["2"]["w"].T) * (pre > 0)
    grads = {
        "0": {"w": x.T @ dh, "b": dh.sum(0)},
        "2": {"w": h.T @ dy, "b": dy.sum(0)},
    }
    loss = np.mean((y - t) ** 2)
    return jax.tree.map(lambda a, g: a - LR * g, p, grads), loss


def test_micro_batches_equal_the_big_batch_step(start):
    batch = _batch()
    big = make_stateful_train_step(MODEL, losses.mse, optax.sgd(LR))
    micro = make_stateful_train_step(MODEL, losses.mse, optax.sgd(LR), micro_batches=4)
    big_ts, big_logs = big(start, batch)
    micro_ts, micro_logs = micro(start, batch)
    reference, loss = _numpy_sgd_step(start.params, *batch)
    for got, want in [(micro_ts.params, big_ts.params), (micro_ts.params, reference)]:
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(micro_logs["loss"], loss, rtol=1e-5)
    np.testing.assert_allclose(micro_logs["grad_norm"], big_logs["grad_norm"], rtol=1e-5)
    assert int(micro_ts.step) == 1


def test_layer_state_is_threaded_through_the_micro_batches():
    model = Sequential(Dense(4), BatchNorm(momentum=0.5), Dense(1))
    x, _ = _batch(8, seed=1)
    t = x[:, :1]
    ts = TrainState.create(model, optax.sgd(LR), KEY, x)
    step = make_stateful_train_step(model, losses.mse, optax.sgd(LR), micro_batches=2)
    new, _ = step(ts, (x, t))
    apply = jax.jit(lambda p, s, x: model.apply(p, s, x, train=True)[1])
    state = ts.state
    for half in (x[:4], x[4:]):  # the model applied to each micro-batch in turn
        state = apply(ts.params, state, half)
    for a, b in zip(jax.tree.leaves(new.state), jax.tree.leaves(state), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_micro_batches_keep_the_memory_of_one():
    model = Sequential(Dense(256), jax.nn.relu, Dense(256), jax.nn.relu, Dense(1))
    x = jax.ShapeDtypeStruct((512, 64), jnp.float32)
    batch = (x, jax.ShapeDtypeStruct((512, 1), jnp.float32))
    opt = optax.sgd(LR)
    ts = jax.eval_shape(lambda k: TrainState.create(model, opt, k, x), KEY)

    def temp_bytes(k):
        step = make_step(Supervised(model, losses.mse), opt, micro_batches=k)
        return step.lower(ts, batch).compile().memory_analysis().temp_size_in_bytes

    one, eight = temp_bytes(1), temp_bytes(8)
    # Activations of 512 rows x 2 hidden layers x 256 floats dominate; 1/8 of the rows with k=8.
    assert eight * 3 < one, (one, eight)


def test_bad_micro_batches_are_errors(start):
    step = make_stateful_train_step(MODEL, losses.mse, optax.sgd(LR), micro_batches=3)
    with pytest.raises(ConfigError, match="micro_batches=3 does not divide the batch size 16"):
        step(start, _batch())
    x, y = _batch()
    step = make_stateful_train_step(MODEL, losses.mse, optax.sgd(LR), micro_batches=2)
    with pytest.raises(ShapeError, match=r"shapes \[\(16, 5\), \(8, 3\)\]"):
        step(start, (x, y[:8]))
    with pytest.raises(ConfigError, match="micro_batches must be a positive int, given 0"):
        make_stateful_train_step(MODEL, losses.mse, optax.sgd(LR), micro_batches=0)


def test_fit_passes_micro_batches_and_loss_scale_to_its_steps():
    """``fit(micro_batches=2)`` follows the same SGD path as ``fit()`` (a mean loss over equal
    halves has the same gradient), and ``fit(loss_scale=...)`` in float32, where a power-of-two
    scale is exact, gives the same params while carrying the scale in its optimizer state."""
    from nn_jax import DynamicLossScale, LossScaledState, fit

    x, t = _batch(64, seed=3)
    common = dict(key=KEY, steps=6, batch_size=16, progress=False, log_every=3)
    plain, _ = fit(MODEL, losses.mse, optax.sgd(LR), (x, t), **common)
    micro, _ = fit(MODEL, losses.mse, optax.sgd(LR), (x, t), micro_batches=2, **common)
    scaled, history = fit(
        MODEL, losses.mse, optax.sgd(LR), (x, t), loss_scale=DynamicLossScale(2.0**10), **common
    )
    for ts in (micro, scaled):
        for a, b in zip(jax.tree.leaves(ts.params), jax.tree.leaves(plain.params), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert not np.allclose(plain.params["0"]["w"], start_params()["0"]["w"])
    assert isinstance(scaled.opt_state, LossScaledState)
    assert float(scaled.opt_state.loss_scale.scale) == 2.0**10
    assert history.train[-1]["loss_scale"] == 2.0**10
    with pytest.raises(ConfigError, match=r"16.*3|3.*16"):  # reached the step: not ignored
        fit(MODEL, losses.mse, optax.sgd(LR), (x, t), micro_batches=3, **common)


def start_params():
    return TrainState.create(MODEL, optax.sgd(LR), KEY, _batch()[0]).params

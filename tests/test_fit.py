"""fit: in-order and shuffled batches, validation, early stopping, resume, several steps per
dispatch, callbacks, and the monitoring of non-finite steps, gradients and activations."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nn_jax import (
    ConfigError,
    Dense,
    EarlyStopping,
    Monitor,
    ParameterFree,
    Sequential,
    Supervised,
    fit,
    initializers,
    losses,
    metrics,
    relu,
    tanh,
)

KEY = jax.random.key(0)
LOSS = losses.softmax_cross_entropy_with_integer_labels


class _Poison(ParameterFree):
    """Multiplies each example by the side input "poison" (NaN rows poison a step)."""

    def transform(self, x, call):
        poison = self.side_input(call, "poison")  # None when init traces the model
        return x if poison is None else x * poison[:, None]


def _blobs(n=240, seed=1):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((3, 5)) * 4
    labels = rng.integers(0, 3, n).astype(np.int32)
    x = (centers[labels] + rng.standard_normal((n, 5))).astype(np.float32)
    return x, labels


X, Y = _blobs()
XV, YV = _blobs(90, seed=2)
MODEL = Sequential(Dense(16), relu, Dense(3))


def _fit(**kwargs):
    defaults = dict(key=KEY, batch_size=24, progress=False, log_every=5)
    return fit(MODEL, LOSS, optax.adam(1e-2), (X, Y), **{**defaults, **kwargs})


def _equal(a, b):
    return all(
        np.array_equal(u, v) for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def test_validation_metrics_gap_and_history():
    ts, history = _fit(
        epochs=3, metrics={"accuracy": metrics.accuracy}, validation=(XV, YV), val_batch_size=32
    )
    assert [r["step"] for r in history.train] == [5, 10, 15, 20, 25, 30]
    assert [r["step"] for r in history.validation] == [10, 20, 30]  # each epoch (10 steps)
    # The final validation record is the mean over all 90 examples (batches 32, 32, 26).
    logits = np.asarray(MODEL.apply(ts.params, ts.state, XV)[0])
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    last = history.validation[-1]
    np.testing.assert_allclose(last["loss"], -np.mean(log_probs[np.arange(90), YV]), rtol=1e-5)
    assert last["accuracy"] == pytest.approx(np.mean(logits.argmax(-1) == YV))
    train_mean = np.mean([r["loss"] for r in history.train if 20 < r["step"] <= 30])
    assert last["gap"] == pytest.approx(last["loss"] - train_mean)
    assert history.train[-1]["loss"] < 0.5 * history.train[0]["loss"]
    steps, values = history.series("accuracy", "validation")
    assert list(steps) == [10, 20, 30] and values[-1] > 0.6  # chance: 0.33


def test_in_order_batches_follow_the_data_and_shuffles_are_seeded():
    """shuffle=False takes rows 0..23, 24..47, ...: the same as a hand loop over the steps."""
    from nn_jax import TrainState, make_stateful_train_step

    opt = optax.adam(1e-2)
    ts, _ = fit(
        MODEL, LOSS, opt, (X, Y), key=KEY, steps=12, batch_size=24, shuffle=False, progress=False
    )
    hand = TrainState.create(MODEL, opt, jax.random.split(KEY)[0], X[:24])
    step = make_stateful_train_step(MODEL, LOSS, opt)
    for i in range(12):
        j = i % 10
        hand, _ = step(hand, (X[24 * j : 24 * (j + 1)], Y[24 * j : 24 * (j + 1)]))
    np.testing.assert_allclose(ts.params["0"]["w"], hand.params["0"]["w"], rtol=1e-6)
    a, _ = _fit(steps=12)
    b, _ = _fit(steps=12)
    c, _ = _fit(steps=12, key=jax.random.key(1))
    assert _equal(a.params, b.params) and not _equal(a.params, c.params)


def test_resume_from_a_train_state_is_bit_identical():
    full, _ = _fit(epochs=4)
    half, _ = _fit(epochs=2)
    resumed, rest = _fit(epochs=4, init=half)
    assert int(resumed.step) == 40 and rest.train[0]["step"] == 25
    assert _equal(full.params, resumed.params) and _equal(full.opt_state, resumed.opt_state)


def test_resume_from_a_checkpoint_folder_is_bit_identical(tmp_path):
    """One epoch into a Checkpointer, then a new fit on the same folder continues to two."""
    from nn_jax import Checkpointer

    full, full_history = _fit(epochs=2, validation=(XV, YV))
    with Checkpointer(tmp_path / "run") as checkpoint:
        _fit(epochs=1, validation=(XV, YV), checkpoint=checkpoint)
        assert checkpoint.steps() == [10]
    with Checkpointer(tmp_path / "run") as checkpoint:
        resumed, history = _fit(epochs=2, validation=(XV, YV), checkpoint=checkpoint)
        assert checkpoint.steps() == [10, 20]
    assert _equal(full.params, resumed.params) and _equal(full.opt_state, resumed.opt_state)
    assert history.train == full_history.train and history.validation == full_history.validation


def test_several_steps_per_dispatch_give_the_same_run():
    one, h1 = _fit(epochs=2, log_every=10)
    many, h8 = _fit(epochs=2, log_every=10, steps_per_dispatch=4)
    for a, b in zip(jax.tree.leaves(one.params), jax.tree.leaves(many.params), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(h1.series("loss")[1], h8.series("loss")[1], rtol=1e-5)


def test_early_stopping_stops_after_patience_and_restores_the_best(tmp_path):
    from nn_jax import Checkpointer

    def run():
        with Checkpointer(tmp_path, keep=1, best="validation/loss") as checkpoint:
            return fit(
                MODEL,
                LOSS,
                optax.adam(0.3),
                (X, Y),
                key=KEY,
                epochs=60,
                batch_size=24,
                validation=(XV, YV),
                val_every=5,
                progress=False,
                checkpoint=checkpoint,
                early_stopping=EarlyStopping("loss", patience=3),
            )

    ts, history = run()
    losses_v = [r["loss"] for r in history.validation]
    best = int(np.argmin(losses_v))
    stop = history.events[-1]
    assert stop["kind"] == "early_stop" and stop["step"] == history.validation[-1]["step"]
    assert stop["best_step"] == history.validation[best]["step"]
    assert len(losses_v) == best + 4  # three validations after the best, none better
    assert all(v >= losses_v[best] for v in losses_v[best + 1 :])
    assert int(ts.step) == history.validation[best]["step"]
    logits = MODEL.apply(ts.params, ts.state, XV)[0]
    np.testing.assert_allclose(LOSS(logits, YV), losses_v[best], rtol=1e-5)
    # Run again on the folder: it has already stopped, so nothing trains and the best
    # (kept by the checkpointer) comes back.
    again, history_again = run()
    assert _equal(again.params, ts.params) and history_again.events == history.events


def test_a_callback_can_stop_training():
    seen = []

    def callback(ts, record):
        seen.append((record["step"], int(ts.step)))
        return record["step"] >= 15

    _, history = _fit(epochs=5, callbacks=[callback])
    assert seen == [(5, 5), (10, 10), (15, 15)] and history.train[-1]["step"] == 15


def test_an_iterable_of_batches_plugs_in():
    def stream():
        for i in range(10):
            yield X[24 * i : 24 * (i + 1)], Y[24 * i : 24 * (i + 1)]

    ts, history = fit(
        MODEL, LOSS, optax.adam(1e-2), stream(), key=KEY, steps=10, progress=False, log_every=5
    )
    ordered, _ = _fit(steps=10, shuffle=False)
    assert [r["step"] for r in history.train] == [5, 10]
    np.testing.assert_allclose(ts.params["0"]["w"], ordered.params["0"]["w"], rtol=1e-6)


POISON_AT = 7


def _poisoned_fit(steps, on_nonfinite, log_every=5):
    poison = np.ones(len(X), np.float32)
    poison[24 * POISON_AT + 3] = np.nan  # one example of the batch at step 7 (0-based)
    model = Sequential(Dense(16), relu, _Poison(), Dense(3))
    return fit(
        model,
        LOSS,
        optax.adam(1e-2),
        (X, Y, {"poison": poison}),
        key=KEY,
        steps=steps,
        batch_size=24,
        shuffle=False,
        progress=False,
        log_every=log_every,
        monitor=Monitor(activations=True, on_nonfinite=on_nonfinite),
    )


def test_a_nan_step_is_reported_with_its_step_and_first_layer_and_skipped():
    before, _ = _poisoned_fit(POISON_AT, "skip")
    skipped, history = _poisoned_fit(POISON_AT + 1, "skip")
    (event,) = history.events
    assert event["step"] == POISON_AT and event["layer"] == "2"  # after Dense "0" and relu "1"
    assert event["gradients"] == ["0/b", "0/w", "3/b", "3/w"]  # NaN flows back to every layer
    assert history.train[-1]["nonfinite"] == 1 and np.isfinite(history.train[-1]["loss"])
    assert _equal(before.params, skipped.params) and _equal(before.opt_state, skipped.opt_state)
    stopped, history = _poisoned_fit(20, "stop")
    assert history.train[-1]["step"] == 10  # stops at the first log after the bad step
    assert history.events[0]["step"] == POISON_AT and _equal(before.params, stopped.params)


def test_gradient_norms_update_ratios_and_activation_health():
    """One step, logged: global and per-layer gradient norms against jax.grad; a ReLU layer
    whose bias is -100 is all dead, a tanh layer whose bias is 5 is saturated."""
    model = Sequential(
        Dense(8, b_init=initializers.constant(-100.0)),
        relu,
        Dense(8, w_init=initializers.constant(10.0), b_init=initializers.constant(5.0)),
        tanh,
        Dense(3),
    )
    opt = optax.sgd(0.1)
    _, history = fit(
        model,
        LOSS,
        opt,
        (X, Y),
        key=KEY,
        steps=1,
        batch_size=24,
        shuffle=False,
        progress=False,
        log_every=1,
        monitor=Monitor(per_layer=True, activations=True),
    )
    record = history.train[0]
    assert record["dead_relu/1"] == 1.0 and record["saturated/3"] > 0.99
    from nn_jax import TrainState

    start = TrainState.create(model, opt, jax.random.split(KEY)[0], X[:24])
    grads = jax.grad(lambda p: LOSS(model.apply(p, {}, X[:24])[0], Y[:24]))(start.params)
    norms = {k: np.sqrt(sum(np.sum(np.square(g)) for g in v.values())) for k, v in grads.items()}
    for layer, norm in norms.items():
        assert record[f"grad_norm/{layer}"] == pytest.approx(norm, rel=1e-5)
        w_norm = np.sqrt(sum(np.sum(np.square(p)) for p in start.params[layer].values()))
        assert record[f"update_ratio/{layer}"] == pytest.approx(0.1 * norm / w_norm, rel=1e-4)
    assert record["grad_norm"] == pytest.approx(np.sqrt(sum(n**2 for n in norms.values())))


def test_a_general_objective_with_a_penalty():
    objective = Supervised(MODEL, LOSS, penalty=lambda p: 1e-3 * jnp.sum(jnp.abs(p["0"]["w"])))
    _, history = fit(
        MODEL,
        None,
        optax.adam(1e-2),
        (X, Y),
        key=KEY,
        steps=5,
        batch_size=24,
        objective=objective,
        log_every=5,
        progress=False,
    )
    assert 0 < history.train[-1]["penalty"] < history.train[-1]["loss"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(epochs=1, steps=3), "exactly one of epochs and steps"),
        (dict(epochs=1, batch_size=1000), "batch_size 1000 is larger than the 240 examples"),
        (dict(epochs=1, batch_size=0), "batch_size must be a positive int"),
        (dict(epochs=0), "epochs must be a positive int"),
        (dict(epochs=1, log_every=-1), "log_every must be a positive int"),
    ],
)
def test_bad_arguments_are_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        _fit(**kwargs)


def _nan_gradient_loss(logits, labels):
    """The cross-entropy plus ``0 * sqrt(0)``: a finite loss whose gradient is NaN."""
    return LOSS(logits, labels) + 0.0 * jnp.sqrt(jnp.sum(logits * 0.0))


@pytest.mark.parametrize("grad_norm", [True, False])
def test_without_the_gradient_norm_only_a_nonfinite_loss_skips_a_step(grad_norm):
    """``Monitor(grad_norm=False)``: no norm, no per-array flags; a NaN loss is still skipped,
    but a NaN gradient under a finite loss is applied (the default skips it)."""
    from nn_jax import TrainState, make_step

    opt = optax.sgd(0.1)
    start = TrainState.create(MODEL, opt, KEY, X[:8])
    monitor = Monitor(on_nonfinite="skip", grad_norm=grad_norm)
    nan_loss = make_step(Supervised(MODEL, LOSS), opt, monitor=monitor)
    ts, logs = nan_loss(start, (jnp.asarray(X[:8]).at[3].set(np.nan), Y[:8]))
    assert bool(logs["nonfinite"]) and ("grad_norm" in logs) == grad_norm
    assert _equal(ts.params, start.params)
    nan_grad = make_step(Supervised(MODEL, _nan_gradient_loss), opt, monitor=monitor)
    ts, logs = nan_grad(start, (X[:8], Y[:8]))
    assert np.isfinite(logs["loss"]) and bool(logs["nonfinite"]) == grad_norm
    assert _equal(ts.params, start.params) == grad_norm
    if grad_norm:
        assert np.isnan(logs["grad_norm"])


def test_sums_of_squares_are_each_array_s_in_order():
    """Small arrays stacked with their equals (shape and dtype), large ones alone: each sum
    against NumPy's, in the order given."""
    from nn_jax.monitor import sums_of_squares

    rng = np.random.default_rng(0)
    arrays = [
        rng.standard_normal(shape).astype(dtype)
        for shape, dtype in [
            ((3, 4), np.float32),
            ((5,), np.float32),
            ((3, 4), np.float32),
            ((129, 128), np.float32),  # over 2**14 elements: reduced alone
            ((3, 4), jnp.bfloat16),
            ((5,), np.float32),
            ((), np.float32),
        ]
    ]
    got = jax.jit(sums_of_squares)([jnp.asarray(a) for a in arrays])
    want = [np.sum(np.square(np.asarray(a, np.float64))) for a in arrays]
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert sums_of_squares([]).shape == (0,)

"""Acceptance: per-example lengths reach an RNNClassifier as the side input ``"lengths"``, through
``model.apply(..., side=...)``, ``make_train_step`` batches ``(x, y, side)`` and ``fit``, with the
same losses and updates as a hand computation with optax; padding changes nothing; a misspelt
side input is an error."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nn_jax import losses
from nn_jax.errors import ConfigError
from nn_jax.models.rnn import RNNClassifier
from nn_jax.train import fit, make_train_step

B, T, F, CLASSES = 8, 6, 3, 3
MODEL = RNNClassifier(CLASSES, cell="gru", hidden=8, pooling="mean")
LR = 0.05


@pytest.fixture(scope="module")
def data():
    g = np.random.default_rng(0)
    lengths = np.array([6, 1, 3, 0, 5, 2, 6, 4])
    x = g.standard_normal((B, T, F)).astype(np.float32)
    y = g.integers(0, CLASSES, B)
    return x, y, lengths


def loss_fn(logits, labels):
    return losses.softmax_cross_entropy_with_integer_labels(logits, labels)


@jax.jit
def hand_loss_and_grads(params, x, y, lengths):
    """Loss and gradients of ``model.apply(..., side=...)``, written out without nn_jax.train."""

    def objective(p):
        logits, _ = MODEL.apply(p, {}, x, side={"lengths": lengths}, train=True)
        return loss_fn(logits, y)

    return jax.value_and_grad(objective)(params)


def assert_trees_close(a, b, rtol=1e-5, atol=1e-6):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(u, v, rtol=rtol, atol=atol)


def test_padding_changes_nothing(data):
    x, _, lengths = data
    params, _ = MODEL.init(jax.random.key(0), x)
    garbage = x.copy()
    for i, n in enumerate(lengths):
        garbage[i, n:] = 1e3 * np.random.default_rng(i).standard_normal((T - n, F))
    predict = jax.jit(lambda p, x, n: MODEL(p, x, side={"lengths": n}))
    np.testing.assert_array_equal(predict(params, garbage, lengths), predict(params, x, lengths))
    # ... and each padded example equals its real prefix run alone (no side input at all).
    out = predict(params, x, lengths)
    for i in (2, 7):
        alone = MODEL(params, x[i : i + 1, : lengths[i]])
        np.testing.assert_allclose(out[i : i + 1], alone, rtol=1e-5, atol=1e-6)


def test_make_train_step_with_side_batches_matches_a_hand_written_step(data):
    x, y, lengths = data
    opt = optax.adam(LR)
    params, _ = MODEL.init(jax.random.key(1), x)
    opt_state = opt.init(params)
    step = make_train_step(MODEL, loss_fn, opt)
    hand_params, hand_opt_state = params, opt_state
    for _ in range(3):
        params, opt_state, loss = step(params, opt_state, (x, y, {"lengths": lengths}))
        hand_loss, grads = hand_loss_and_grads(hand_params, x, y, lengths)
        updates, hand_opt_state = opt.update(grads, hand_opt_state, hand_params)
        hand_params = optax.apply_updates(hand_params, updates)
        np.testing.assert_allclose(loss, hand_loss, rtol=1e-6)
        assert_trees_close(params, hand_params)


def test_fit_with_side_data_matches_a_hand_written_step(data):
    """``fit`` on ``(x, y, {"lengths": ...})`` with no wrapper: one full batch per epoch, so the
    logged loss of epoch 2 is the hand-computed loss at the params ``fit`` had after epoch 1, and
    its last update is the hand-written optax update from there."""
    x, y, lengths = data
    opt = optax.sgd(LR)
    after_epoch = []
    ts, history = fit(
        MODEL,
        loss_fn,
        opt,
        (x, y, {"lengths": lengths}),
        key=jax.random.key(2),
        epochs=2,
        batch_size=B,
        log_every=1,
        progress=False,
        callbacks=[lambda ts, record: after_epoch.append(ts)],
    )
    steps, logged = history.series("loss")
    assert list(steps) == [1, 2]
    first = after_epoch[0]
    hand_loss, grads = hand_loss_and_grads(first.params, x, y, lengths)
    np.testing.assert_allclose(logged[1], hand_loss, rtol=1e-5)
    hand_params = optax.apply_updates(first.params, opt.update(grads, first.opt_state)[0])
    assert_trees_close(ts.params, hand_params)


def test_misspelt_side_input_is_an_error(data):
    x, y, lengths = data
    params, _ = MODEL.init(jax.random.key(0), x)
    with pytest.raises(ConfigError, match=r"side inputs \['lenghts'\] were given but no layer"):
        MODEL.apply(params, {}, x, side={"lenghts": lengths})
    step = make_train_step(MODEL, loss_fn, optax.sgd(LR))
    with pytest.raises(ConfigError, match="lenghts"):
        step(params, optax.sgd(LR).init(params), (x, y, {"lenghts": jnp.asarray(lengths)}))

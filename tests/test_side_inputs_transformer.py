"""Acceptance: a padded TransformerEncoder classifier trains through ``make_train_step`` and
``fit`` with ``(x, y, side)`` batches, with the loss of the model applied by hand with the same
side inputs, and padded steps change nothing."""

import jax
import numpy as np
import optax
import pytest

from nn_jax import losses
from nn_jax.models.transformer import TransformerEncoder
from nn_jax.train import fit, make_train_step

KEY = jax.random.key(0)
N, T, VOCAB = 16, 6, 11
MODEL = TransformerEncoder(2, num_layers=1, d_model=8, num_heads=2, vocab_size=VOCAB)
LOSS = losses.softmax_cross_entropy_with_integer_labels


@pytest.fixture(scope="module")
def data():
    g = np.random.default_rng(0)
    tokens = g.integers(1, VOCAB, (N, T)).astype(np.int32)
    lengths = g.integers(1, T + 1, N).astype(np.int32)
    valid = np.arange(T) < lengths[:, None]
    tokens = np.where(valid, tokens, 0)
    labels = (tokens == 1).any(axis=1).astype(np.int32)  # does a real step hold token 1?
    return tokens, labels, lengths, valid


def hand_loss(params, tokens, labels, side):
    """The model applied by hand with its side input, and cross-entropy in NumPy."""
    logits = np.asarray(MODEL.apply(params, {}, tokens, side=side)[0], np.float64)
    logits -= logits.max(-1, keepdims=True)
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    return -np.mean(log_p[np.arange(len(labels)), labels])


def test_padded_steps_change_nothing(data):
    tokens, _, lengths, valid = data
    params, _ = MODEL.init(KEY, tokens)
    other = np.where(valid, tokens, np.random.default_rng(1).integers(0, VOCAB, tokens.shape))
    assert not np.array_equal(other, tokens)
    for side in ({"key_mask": valid}, {"lengths": lengths}):
        a = MODEL(params, tokens, side=side)
        np.testing.assert_allclose(MODEL(params, other, side=side), a, rtol=1e-6, atol=1e-6)
    # Without the mask the padding does change the output.
    assert not np.allclose(MODEL(params, other), MODEL(params, tokens), atol=1e-4)


def test_make_train_step_with_side_batches(data):
    tokens, labels, _, valid = data
    side = {"key_mask": valid}
    params, _ = MODEL.init(KEY, tokens)

    # One SGD step against the same update by hand with optax. (SGD, not Adam: the gradient of
    # the key bias b_k is zero up to rounding, which Adam would scale up to a full step.)
    sgd = optax.sgd(0.1)
    new_params, _, loss = make_train_step(MODEL, LOSS, sgd)(
        params, sgd.init(params), (tokens, labels, side)
    )
    np.testing.assert_allclose(float(loss), hand_loss(params, tokens, labels, side), rtol=1e-5)

    def objective(p):
        return LOSS(MODEL.apply(p, {}, tokens, side=side)[0], labels)

    updates, _ = sgd.update(jax.grad(objective)(params), sgd.init(params), params)
    expected = optax.apply_updates(params, updates)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), new_params, expected
    )

    # A few Adam steps lower the loss, with one compilation for every (x, y, side) batch.
    adam = optax.adam(1e-2)
    step = make_train_step(MODEL, LOSS, adam)
    opt_state = adam.init(params)
    seen = []
    for _ in range(10):
        params, opt_state, loss = step(params, opt_state, (tokens, labels, side))
        seen.append(float(loss))
    assert seen[-1] < 0.8 * seen[0], seen
    assert step._cache_size() == 1


def test_fit_with_side_data(data):
    tokens, labels, lengths, _ = data
    side = {"lengths": lengths}
    # A zero learning rate leaves the initial params: fit's first loss is the hand loss there.
    ts, history = fit(
        MODEL,
        LOSS,
        optax.sgd(0.0),
        (tokens, labels, side),
        key=KEY,
        epochs=1,
        batch_size=N,
        log_every=1,
        progress=False,
    )
    np.testing.assert_allclose(
        history.train[0]["loss"], hand_loss(ts.params, tokens, labels, side), rtol=1e-5
    )
    # Training for real: the loss by hand at the final params is below the initial one.
    ts, history = fit(
        MODEL,
        LOSS,
        optax.adam(1e-2),
        (tokens, labels, side),
        key=KEY,
        epochs=10,
        batch_size=8,
        log_every=1,
        progress=False,
    )
    logged = history.series("loss")[1]
    assert len(logged) == 20
    trained = hand_loss(ts.params, tokens, labels, side)
    assert trained < 0.8 * logged[0], (trained, logged)

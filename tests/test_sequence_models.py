"""Sequence data generators; the benchmark workloads build from the public API; and learning
checks: a GRU on MNIST-1D, a transformer LM on the reverse task, an LSTM on the adding problem."""

import random

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nn_jax import losses, metrics
from nn_jax.combinators import Sequential
from nn_jax.data.mnist1d import load_mnist1d
from nn_jax.data.sequences import adding_problem, copy_task, reverse_task
from nn_jax.dense import Dense
from nn_jax.inspect import param_count
from nn_jax.models.rnn import RNNClassifier
from nn_jax.models.transformer import TransformerEncoder, TransformerLM, generate
from nn_jax.recurrent import RNN, LSTMCell
from nn_jax.train import make_train_step

KEY = jax.random.key(0)


# --------------------------------------------------------------------------------------------
# Data.


def test_reverse_task():
    x, y = reverse_task(50, 6, 7, seed=3)
    assert x.shape == y.shape == (50, 6) and x.dtype == np.int32
    np.testing.assert_array_equal(y, x[:, ::-1])
    assert x.min() >= 0 and x.max() == 6
    np.testing.assert_array_equal(reverse_task(50, 6, 7, seed=3)[0], x)
    assert not np.array_equal(reverse_task(50, 6, 7, seed=4)[0], x)
    with pytest.raises(ValueError, match="length must be a positive int, given 0"):
        reverse_task(5, 0, 3)


def test_copy_task_layout():
    x, y = copy_task(20, 4, 5, delay=3, seed=1)
    assert x.shape == y.shape == (20, 11)
    symbols = x[:, :4]
    assert symbols.min() >= 2 and symbols.max() <= 6
    np.testing.assert_array_equal(x[:, 4:7], 0)
    np.testing.assert_array_equal(x[:, 7], 1)
    np.testing.assert_array_equal(x[:, 8:], 0)
    np.testing.assert_array_equal(y[:, :7], 0)
    np.testing.assert_array_equal(y[:, 7:], symbols)


def test_adding_problem_targets_and_baseline():
    x, y = adding_problem(20000, 10, seed=2)
    assert x.shape == (20000, 10, 2) and y.shape == (20000, 1) and x.dtype == np.float32
    markers = x[..., 1]
    assert np.all(markers.sum(1) == 2)
    assert np.all(markers[:, :5].sum(1) == 1) and np.all(markers[:, 5:].sum(1) == 1)
    np.testing.assert_allclose(y[:, 0], (x[..., 0] * markers).sum(1), rtol=1e-6)
    assert abs(np.mean((y - 1.0) ** 2) - 1 / 6) < 0.005  # the constant-1 predictor's MSE


def test_mnist1d_is_generated_locally_balanced_and_restores_global_rng():
    random.seed(123)
    np.random.seed(123)
    expected = random.random(), np.random.random()
    random.seed(123)
    np.random.seed(123)
    data = load_mnist1d(num_samples=1000, sequence=True)
    assert (random.random(), np.random.random()) == expected
    assert data.x_train.shape == (800, 40, 1) and data.x_test.shape == (200, 40, 1)
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int32
    labels = np.concatenate([data.y_train, data.y_test])
    np.testing.assert_array_equal(np.bincount(labels), np.full(10, 100))
    everything = np.concatenate([data.x_train, data.x_test])
    assert abs(everything.mean()) < 1e-3 and abs(everything.std() - 1) < 1e-3  # standardized
    again = load_mnist1d(num_samples=1000)
    np.testing.assert_array_equal(again.x_train, data.x_train[..., 0])


# --------------------------------------------------------------------------------------------
# The benchmark workloads (issue 5) build from the public API; parameter counts in closed form.


def test_benchmark_workloads_build():
    lstm = RNN(LSTMCell(128))
    x = jax.ShapeDtypeStruct((64, 40, 32), jnp.float32)
    params, _ = lstm.init(KEY, x)
    assert param_count(params) == 4 * 128 * (32 + 128 + 1)
    assert jax.eval_shape(lstm.__call__, params, x).shape == (64, 40, 128)

    d, vocab = 128, 1000
    encoder = TransformerEncoder(10, num_layers=2, d_model=d, num_heads=4, vocab_size=vocab)
    tokens = jax.ShapeDtypeStruct((32, 64), jnp.int32)
    params, _ = encoder.init(KEY, tokens)
    block = (4 * d * d + 4 * d) + 4 * d + (8 * d * d + 5 * d)  # attention, 2 norms, MLP
    assert param_count(params) == vocab * d + 2 * block + 2 * d + (d * 10 + 10)
    assert jax.eval_shape(encoder.__call__, params, tokens).shape == (32, 10)

    lm = TransformerLM(vocab, num_layers=2, d_model=d, num_heads=4)
    params, _ = lm.init(KEY, tokens)
    assert param_count(params) == vocab * d + 2 * block + 2 * d + d * vocab
    assert jax.eval_shape(lm.__call__, params, tokens).shape == (32, 64, vocab)
    prompt = jax.ShapeDtypeStruct((32, 8), jnp.int32)
    assert jax.eval_shape(lambda p, t: generate(lm, p, t, 56), params, prompt).shape == (32, 64)


# --------------------------------------------------------------------------------------------
# Learning checks (fixed seeds; each a few seconds on 2 CPU cores).


def train(model, loss_fn, data, *, steps, batch_size, lr, seed=0):
    x, y = data
    params, _ = model.init(KEY, x[:batch_size])
    optimizer = optax.adam(lr)
    step = make_train_step(model, loss_fn, optimizer)
    opt_state = optimizer.init(params)
    order = np.random.default_rng(seed)
    for _ in range(steps):
        idx = order.integers(0, len(x), batch_size)
        params, opt_state, _ = step(params, opt_state, (x[idx], y[idx]))
    return params


@pytest.mark.slow
def test_gru_classifier_learns_mnist1d():
    data = load_mnist1d(sequence=True)  # the published recipe: 4,000 train, 1,000 test
    model = RNNClassifier(10, cell="gru", hidden=64)
    params = train(
        model,
        losses.softmax_cross_entropy_with_integer_labels,
        (data.x_train, data.y_train),
        steps=800,
        batch_size=128,
        lr=5e-3,
    )
    logits = jax.jit(model.__call__)(params, data.x_test)
    accuracy = float(metrics.accuracy(logits, data.y_test))
    assert accuracy > 0.8, accuracy


@pytest.mark.slow
def test_transformer_lm_learns_to_reverse():
    """Decoder-only: ``x SEP reverse(x)``; the reversal is generated greedily with the cache."""
    length, vocab, sep = 8, 10, 10
    x, y = reverse_task(25600, length, vocab, seed=0)
    seqs = np.concatenate([x, np.full((len(x), 1), sep, np.int32), y], axis=1)
    mask = np.zeros((1, 2 * length), np.float32)
    mask[:, length:] = 1.0  # score only the predictions of the reversed half

    def loss_fn(logits, targets):
        weights = jnp.broadcast_to(jnp.asarray(mask), targets.shape)
        return losses.softmax_cross_entropy_with_integer_labels(logits, targets, mask=weights)

    model = TransformerLM(
        vocab + 1, num_layers=2, d_model=32, num_heads=4, positional="learned", max_length=17
    )
    params = train(model, loss_fn, (seqs[:, :-1], seqs[:, 1:]), steps=400, batch_size=64, lr=3e-3)
    x_test, y_test = reverse_task(1000, length, vocab, seed=1)
    prompt = np.concatenate([x_test, np.full((1000, 1), sep, np.int32)], axis=1)
    generated = np.asarray(generate(model, params, prompt, length))[:, length + 1 :]
    token_accuracy = float(np.mean(generated == y_test))
    assert token_accuracy >= 0.99, token_accuracy


@pytest.mark.slow
def test_lstm_solves_the_adding_problem():
    x, y = adding_problem(64 * 600, 100, seed=0)
    model = Sequential(RNN(LSTMCell(32), return_sequences=False), Dense(1))
    params = train(model, losses.mse, (x, y), steps=600, batch_size=64, lr=1e-2)
    x_test, y_test = adding_problem(1000, 100, seed=1)
    mse = float(losses.mse(jax.jit(model.__call__)(params, x_test), y_test))
    assert mse < 0.05, mse  # the constant-1 baseline is 1/6 ≈ 0.167

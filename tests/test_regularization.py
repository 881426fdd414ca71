"""Dropout, SpatialDropout and DropPath: statistics, scaling, determinism, eval identity, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nn_jax.combinators import Sequential
from nn_jax.errors import ConfigError, RngError, ShapeError
from nn_jax.regularization import Dropout, DropPath, SpatialDropout

KEY = jax.random.key(0)


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.8])
def test_dropout_kept_fraction_within_three_sigma_and_kept_values_scaled(rate):
    n = 100_000
    x = jnp.asarray(np.random.default_rng(0).uniform(1.0, 2.0, n), jnp.float32)  # never 0
    y = np.asarray(Dropout(rate)({}, x, rng=KEY, train=True))
    kept = y != 0
    keep = 1 - rate
    sigma = np.sqrt(n * keep * (1 - keep))  # binomial standard deviation of the kept count
    assert abs(kept.sum() - n * keep) < 3 * sigma
    np.testing.assert_allclose(y[kept], np.asarray(x)[kept] / keep, rtol=1e-6)


def test_dropout_preserves_the_expectation():
    """E[y] = x: averaging many independent masks converges to the input (CLT bound)."""
    rate, trials = 0.3, 4000
    x = jnp.linspace(-1.0, 2.0, 8)
    keys = jax.random.split(KEY, trials)
    ys = jax.vmap(lambda k: Dropout(rate)({}, x, rng=k, train=True))(keys)
    # Var(y_i) = x_i^2 * rate / (1 - rate); the mean of `trials` draws has std sqrt(Var / trials).
    std = np.abs(np.asarray(x)) * np.sqrt(rate / (1 - rate) / trials)
    assert np.all(np.abs(np.asarray(ys.mean(0)) - np.asarray(x)) <= 4 * std + 1e-7)


def test_dropout_is_deterministic_for_a_key_and_differs_across_keys():
    x = jnp.ones((64, 32))
    layer = Dropout(0.5)
    a = layer({}, x, rng=jax.random.key(3), train=True)
    b = jax.jit(lambda x, k: layer({}, x, rng=k, train=True))(x, jax.random.key(3))
    c = layer({}, x, rng=jax.random.key(4), train=True)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("layer", [Dropout(0.5), SpatialDropout(0.5), DropPath(0.5)])
def test_identity_at_eval_and_rate_zero(layer):
    x = jnp.asarray(np.random.default_rng(0).standard_normal((4, 3, 3, 2)), jnp.float32)
    np.testing.assert_array_equal(layer({}, x), x)
    np.testing.assert_array_equal(layer({}, x, rng=KEY, train=False), x)
    np.testing.assert_array_equal(type(layer)(0.0)({}, x, train=True), x)  # no rng needed


def test_rate_one_drops_everything():
    np.testing.assert_array_equal(Dropout(1.0)({}, jnp.ones(5), rng=KEY, train=True), np.zeros(5))


def test_training_without_rng_raises_rng_error_naming_the_layer():
    model = Sequential({"drop": Dropout(0.2)})
    with pytest.raises(
        RngError, match=r"Dropout at 'drop': needs randomness in training.*rng=None"
    ):
        model({}, jnp.ones(3), train=True)


def test_broadcast_dims_share_one_draw():
    x = jnp.ones((8, 5, 16))
    y = np.asarray(Dropout(0.5, broadcast_dims=(1,))({}, x, rng=KEY, train=True))
    assert np.all(y == y[:, :1, :])  # the same mask at every position of axis 1
    assert 0 < (y == 0).mean() < 1
    with pytest.raises(
        ShapeError, match=r"broadcast_dims=\(3,\) is out of range for an input of rank 3"
    ):
        Dropout(0.5, broadcast_dims=(3,))({}, x, rng=KEY, train=True)


def test_spatial_dropout_drops_whole_channels():
    x = jnp.ones((16, 4, 5, 8))
    y = np.asarray(SpatialDropout(0.5)({}, x, rng=KEY, train=True))
    per_channel = y.reshape(16, 20, 8)
    assert np.all(per_channel == per_channel[:, :1, :])
    assert set(np.unique(y)) == {0.0, 2.0}
    with pytest.raises(
        ShapeError, match=r"SpatialDropout at <root>: input \(N, \*spatial, C\) must have rank"
    ):
        SpatialDropout(0.5)({}, jnp.ones((4, 3)), rng=KEY, train=True)


def test_drop_path_drops_whole_examples():
    x = jnp.ones((200, 3, 2))
    y = np.asarray(DropPath(0.25)({}, x, rng=KEY, train=True))
    per_example = y.reshape(200, -1)
    assert np.all(per_example == per_example[:, :1])
    kept = per_example[:, 0] != 0
    np.testing.assert_allclose(per_example[kept, 0], 1 / 0.75)
    assert abs(kept.sum() - 150) < 3 * np.sqrt(200 * 0.75 * 0.25)


@pytest.mark.parametrize("rate", [-0.1, 1.5, "0.5"])
def test_bad_rate_raises(rate):
    with pytest.raises(ConfigError, match=r"rate \(the drop probability\) must be in \[0, 1\]"):
        Dropout(rate)

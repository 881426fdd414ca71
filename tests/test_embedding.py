"""Embedding lookup and its tied output projection against NumPy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nn_jax import initializers
from nn_jax.combinators import Sequential
from nn_jax.embedding import Embedding
from nn_jax.errors import ConfigError, ShapeError

KEY = jax.random.key(0)


def test_lookup_matches_numpy_indexing():
    emb = Embedding(10, 4)
    ids = np.array([[1, 2, 9], [0, 0, 5]], np.int32)
    params, state = emb.init(KEY, ids)
    assert state == {} and params["table"].shape == (10, 4)
    np.testing.assert_array_equal(emb(params, ids), np.asarray(params["table"])[ids])


def test_attend_is_the_tied_projection():
    emb = Embedding(7, 3)
    params, _ = emb.init(KEY, jnp.zeros((2,), jnp.int32))
    h = np.random.default_rng(0).standard_normal((2, 5, 3)).astype(np.float32)
    table = np.asarray(params["table"])
    np.testing.assert_allclose(emb.attend(params, h), h @ table.T, rtol=1e-5, atol=1e-6)
    # The logit of a token's own embedding is its squared norm.
    own = emb.attend(params, emb(params, jnp.arange(7)))
    np.testing.assert_allclose(np.diag(own), (table**2).sum(-1), rtol=1e-5)


def test_gradient_reaches_only_looked_up_rows():
    emb = Embedding(6, 2)
    params, _ = emb.init(KEY, jnp.zeros((3,), jnp.int32))
    grad = jax.grad(lambda p: emb(p, jnp.array([1, 1, 4])).sum())(params)["table"]
    expected = np.zeros((6, 2))
    expected[1], expected[4] = 2.0, 1.0
    np.testing.assert_array_equal(grad, expected)


def test_default_init_variance_is_one_over_features():
    params, _ = Embedding(4096, 64).init(KEY, jnp.zeros((1,), jnp.int32))
    assert abs(float(jnp.var(params["table"])) * 64 - 1) < 0.05
    params, _ = Embedding(3, 2, table_init=initializers.ones).init(KEY, jnp.zeros(1, jnp.int32))
    np.testing.assert_array_equal(params["table"], np.ones((3, 2)))


def test_errors():
    model = Sequential({"tokens": Embedding(5, 3)})
    params, _ = model.init(KEY, jnp.zeros((2,), jnp.int32))
    with pytest.raises(
        ShapeError, match=r"Embedding at 'tokens': expected integer indices, given dtype float32"
    ):
        model(params, jnp.zeros((2,), jnp.float32))
    with pytest.raises(
        ShapeError, match=r"attend: input last axis must be features=3, given shape \(2, 4\)"
    ):
        Embedding(5, 3).attend(params["tokens"], jnp.zeros((2, 4)))
    with pytest.raises(ConfigError, match=r"Embedding: features must be a positive int, given 0"):
        Embedding(5, 0)

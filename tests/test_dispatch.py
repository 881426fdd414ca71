"""flatten_step: a step over a flat carry computes what the nested step computes, compiles once,
places its carry where asked, and refuses a step whose carry changes structure."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from nn_jax import (
    ArgumentError,
    BatchNorm,
    Dense,
    Dropout,
    Sequential,
    TrainState,
    flatten_step,
    losses,
    make_stateful_train_step,
    make_train_step,
    relu,
)

RNG = np.random.default_rng(0)
X = RNG.standard_normal((8, 3)).astype(np.float32)
Y = RNG.standard_normal((8, 1)).astype(np.float32)


def test_a_flat_linear_regression_loop_follows_numpy_gradient_descent():
    model, lr = Dense(1), 0.1
    params, _ = model.init(jax.random.key(0), X)
    opt = optax.sgd(lr)
    flat_step, leaves, unflatten = flatten_step(
        make_train_step(model, losses.mse, opt), params, opt.init(params)
    )
    w = np.asarray(params["w"], np.float64)
    b = np.asarray(params["b"], np.float64)
    x, y = X.astype(np.float64), Y.astype(np.float64)
    for _ in range(5):
        leaves, loss = flat_step(leaves, (X, Y))
        residual = x @ w + b - y  # loss = mean(residual ** 2), its gradient by hand
        np.testing.assert_allclose(float(loss), np.mean(residual**2), rtol=1e-5)
        w, b = w - lr * 2 * x.T @ residual / len(x), b - lr * 2 * residual.mean(0)
    new_params, _ = unflatten(leaves)
    np.testing.assert_allclose(new_params["w"], w, rtol=1e-5)
    np.testing.assert_allclose(new_params["b"], b, rtol=1e-5)


def test_the_flat_train_state_step_is_bit_identical_to_the_nested_one():
    """Layer state (batch norm), per-step rng (dropout) and the step counter all ride in the
    flat carry; the nested TrainState comes back from ``unflatten``."""
    model = Sequential(Dense(6), BatchNorm(), relu, Dropout(0.3), Dense(1))
    opt = optax.adam(1e-2)
    step = make_stateful_train_step(model, losses.mse, opt)
    ts = TrainState.create(model, opt, jax.random.key(1), X)
    flat_step, leaves, unflatten = flatten_step(step, ts)
    nested = ts
    for _ in range(3):
        nested, logs = step(nested, (X, Y))
        leaves, flat_logs = flat_step(leaves, (X, Y))
        assert jax.tree.map(float, flat_logs) == jax.tree.map(float, logs)
    (flat_ts,) = unflatten(leaves)
    assert isinstance(flat_ts, TrainState) and int(flat_ts.step) == 3
    assert jax.tree.structure(flat_ts) == jax.tree.structure(nested)
    for a, b in zip(jax.tree.leaves(flat_ts), jax.tree.leaves(nested), strict=True):
        np.testing.assert_array_equal(_data(a), _data(b))
    assert flat_step._cache_size() == 1  # compiled once for the three calls


def _data(a):
    return jax.random.key_data(a) if jnp.issubdtype(a.dtype, jax.dtypes.prng_key) else a


def test_a_step_that_returns_only_its_carry_gives_none():
    def step(total, count, x):
        return {"sum": total["sum"] + x}, count + 1

    flat_step, leaves, unflatten = flatten_step(step, {"sum": jnp.zeros(2)}, jnp.int32(0))
    for x in ([1.0, 2.0], [3.0, 5.0]):
        leaves, out = flat_step(leaves, jnp.asarray(x))
        assert out is None
    total, count = unflatten(leaves)
    np.testing.assert_array_equal(total["sum"], [4.0, 7.0])
    assert int(count) == 2


def test_static_arguments_and_carry_shardings_reach_jit():
    mesh = Mesh(np.array(jax.devices()[:1]), ("data",))
    replicated = NamedSharding(mesh, PartitionSpec())

    def step(carry, x, *, power):
        return {"a": carry["a"] + x**power, "b": carry["b"]}, x.sum()

    flat_step, leaves, unflatten = flatten_step(
        step,
        {"a": jnp.zeros(3), "b": jnp.ones(2)},
        static_argnames="power",
        carry_shardings=(replicated,),
        out_shardings=replicated,
    )
    leaves, out = flat_step(leaves, jnp.full(3, 2.0), power=3)
    np.testing.assert_array_equal(unflatten(leaves)[0]["a"], [8.0, 8.0, 8.0])
    assert float(out) == 6.0
    assert all(leaf.sharding == replicated for leaf in leaves)
    assert out.sharding == replicated


@pytest.mark.parametrize(
    "step, carry, message",
    [
        (None, (jnp.zeros(1),), "step must be callable, given NoneType"),
        (lambda c, x: (c, x), (), "give the carry"),
        (lambda c, x: c, ({"a": jnp.zeros(1)},), "given dict of length -"),
        (
            lambda c, x: (c, x, x),
            ({"a": jnp.zeros(1)},),
            "at most one more, given tuple of length 3",
        ),
        (lambda c, x: ({"b": c["a"]}, x), ({"a": jnp.zeros(1)},), "another structure"),
    ],
)
def test_a_wrong_step_or_carry_is_refused(step, carry, message):
    with pytest.raises(ArgumentError, match=message):
        flat_step, leaves, _ = flatten_step(step, *carry)
        flat_step(leaves, jnp.zeros(1))

"""Repeat (scan over stacked layers) against the unrolled ``Sequential(*[block] * n)``.

References: a NumPy loop over the layers (forward), and the unrolled Sequential - an existing,
separately tested combinator - for init, gradients, state updates, rng use and taps, with the
params converted by ``unstack``/``stack``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nn_jax.combinators import Residual, Sequential
from nn_jax.core import Block, Scope
from nn_jax.dense import Dense
from nn_jax.errors import ConfigError, ParamsError, ShapeError
from nn_jax.inspect import apply_with_intermediates, summary
from nn_jax.normalization import BatchNorm
from nn_jax.regularization import Dropout
from nn_jax.repeat import Repeat

N = 4
KEY = jax.random.key(0)
X = np.random.default_rng(0).standard_normal((6, 3)).astype(np.float32)
BLOCK = Sequential(Dense(3), jnp.tanh)


@dataclasses.dataclass(frozen=True)
class Masked(Block):
    """Dense + tanh, rows outside the side input ``mask`` zeroed (a side-input reader)."""

    def forward(self, scope: Scope, x):
        y = jnp.tanh(scope("dense", Dense(3), x))
        mask = scope.side_input("mask")
        return y if mask is None else jnp.where(mask[:, None], y, 0.0)


def _pair(block, x=X, n=N):
    """Repeat and the unrolled Sequential, each initialized from KEY."""
    repeat, unrolled = Repeat(block, n), Sequential(*[block] * n)
    return repeat, repeat.init(KEY, x), unrolled, unrolled.init(KEY, x)


def _assert_trees_equal(a, b, rtol=0.0, atol=0.0):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=rtol, atol=atol)


@pytest.fixture(scope="module")
def dense_pair():
    return _pair(BLOCK)


def test_init_equals_the_unrolled_stacks_and_round_trips(dense_pair):
    repeat, (params, state), _, (params_u, _) = dense_pair
    assert jax.tree.map(jnp.shape, params) == {"0": {"b": (N, 3), "w": (N, 3, 3)}}
    assert state == {}
    _assert_trees_equal(repeat.unstack(params), params_u)  # bit-identical: same keys per layer
    _assert_trees_equal(repeat.stack(repeat.unstack(params)), params)
    _assert_trees_equal(repeat.unstack(repeat.stack(params_u)), params_u)


def test_outputs_equal_a_numpy_loop_and_the_unrolled_stack(dense_pair):
    repeat, (params, _), unrolled, (params_u, _) = dense_pair
    h = X.astype(np.float64)
    for i in range(N):
        layer = params["0"]
        h = np.tanh(h @ np.asarray(layer["w"][i], np.float64) + np.asarray(layer["b"][i]))
    y = jax.jit(repeat.__call__)(params, X)
    np.testing.assert_allclose(y, h, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(y, unrolled(params_u, X), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("remat", [None, "nothing_saveable"])
def test_gradients_equal_the_unrolled_stacks(dense_pair, remat):
    repeat, (params, _), unrolled, (params_u, _) = dense_pair
    repeat = dataclasses.replace(repeat, remat=remat)

    def loss(model, p, x):
        return jnp.sum(jnp.sin(model(p, x)))

    grads = jax.jit(jax.grad(lambda p: loss(repeat, p, X)))(params)
    grads_u = jax.jit(jax.grad(lambda p: loss(unrolled, p, X)))(params_u)
    _assert_trees_equal(repeat.unstack(grads), grads_u, rtol=1e-5, atol=1e-6)
    if remat:
        assert "remat" in str(jax.make_jaxpr(lambda p: loss(repeat, p, X))(params))


def test_state_updates_equal_the_unrolled_stacks():
    repeat, (params, state), unrolled, (params_u, state_u) = _pair(
        Sequential(Dense(3), BatchNorm(), jnp.tanh)
    )
    _assert_trees_equal(repeat.unstack(state), state_u)
    run = jax.jit(lambda m, p, s: m.apply(p, s, X, train=True), static_argnums=0)
    y, new_state = run(repeat, params, state)
    y_u, new_state_u = run(unrolled, params_u, state_u)
    np.testing.assert_allclose(y, y_u, rtol=1e-5, atol=1e-5)
    _assert_trees_equal(repeat.unstack(new_state), new_state_u, rtol=1e-5, atol=1e-6)
    assert not np.allclose(new_state["1"]["mean"], state["1"]["mean"])  # statistics moved


def test_rng_per_layer_and_side_inputs_reach_every_layer():
    block = Sequential(Masked(), Dropout(0.5))
    repeat, (params, _), unrolled, (params_u, _) = _pair(block)
    side = {"mask": np.array([True, False, True, True, False, True])}

    @jax.jit
    def run(p, p_u, rng):
        kw = dict(side=side, rng=rng, train=True)
        return repeat(p, X, **kw), unrolled(p_u, X, **kw)

    y, y_u = (np.asarray(a) for a in run(params, params_u, jax.random.key(7)))
    np.testing.assert_allclose(y, y_u, rtol=1e-6, atol=1e-6)
    assert float(np.abs(y[[1, 4]]).max()) == 0.0  # masked rows, in every layer
    assert float(np.abs(y[[0, 2, 3, 5]]).max()) > 0.0


def test_taps_and_edits_come_back_per_layer_at_the_unrolled_paths():
    # A nested Repeat: an edit naming one inner layer of one outer layer edits only that one.
    inner = Repeat(Residual(Dense(3)), 2)
    repeat, (params, _), unrolled, (params_u, _) = _pair(inner, n=3)
    unrolled_inner = Sequential(*[Residual(Dense(3))] * 2)
    unrolled = Sequential(*[unrolled_inner] * 3)
    params_u = {k: inner.unstack(v) for k, v in repeat.unstack(params).items()}
    edit = {"1/0/body": lambda h: h * 0.0, "2/*/body": lambda h: h + 1.0}

    @jax.jit
    def run(p, p_u):
        return (
            apply_with_intermediates(repeat, p, {}, X, edit=edit),
            apply_with_intermediates(unrolled, p_u, {}, X, edit=edit),
        )

    (y, _, taps), (y_u, _, taps_u) = run(params, params_u)
    assert sorted(taps) == sorted(taps_u)
    assert "2/1/body" in taps and len(taps) == 3 * (1 + 2 * 2)
    np.testing.assert_allclose(y, y_u, rtol=1e-6, atol=1e-6)
    for path in taps:
        np.testing.assert_allclose(taps[path], taps_u[path], rtol=1e-6, atol=1e-6, err_msg=path)
    assert float(jnp.abs(taps["1/0/body"]).max()) == 0.0
    assert float(jnp.abs(taps["1/1/body"]).max()) > 0.0  # the other inner layer: not edited
    assert float(jnp.abs(taps["0/0/body"]).max()) > 0.0  # nor layer 0/0
    # capture by pattern: one layer's values only
    _, _, one = apply_with_intermediates(repeat, params, {}, X, capture="2/1", edit=edit)
    assert list(one) == ["2/1"]
    np.testing.assert_allclose(one["2/1"], taps_u["2/1"], rtol=1e-6, atol=1e-6)


def test_summary_shows_a_repeat_as_one_row_with_stacked_params():
    model = Sequential(Dense(3), Repeat(BLOCK, N))
    text = summary(model, jax.ShapeDtypeStruct((2, 3), jnp.float32), flops=False)
    assert "1       Repeat      float32[2, 3]  0/b: [4, 3], 0/w: [4, 3, 3]" in text


def test_bad_input_errors_name_the_path_and_shapes(dense_pair):
    repeat, _, _, (params_u, _) = dense_pair
    with pytest.raises(
        ShapeError,
        match=r"Repeat at <root>: params entry '0/b' has shape \(3,\), expected a leading",
    ):
        repeat(params_u["0"], X)  # one layer's params, not stacked
    with pytest.raises(ParamsError, match=r"keys \['0', '1', '2', '3'\], given \['0', '1'\]"):
        repeat.stack({k: params_u[k] for k in ("0", "1")})
    wrong = {**params_u, "2": {"0": {"w": jnp.zeros((3, 4)), "b": jnp.zeros(4)}}}
    with pytest.raises(ShapeError, match=r"'2/0/b' is float32\[4\], '0/0/b' is float32\[3\]"):
        repeat.stack(wrong)
    grows = Repeat(Dense(5), 2)
    p = {"w": jnp.zeros((2, 3, 5)), "b": jnp.zeros((2, 5))}
    with pytest.raises(ShapeError, match=r"Repeat at 'stack': the block Dense\(features=5\)"):
        Sequential(stack=grows).apply({"stack": p}, {}, X)
    with pytest.raises(ConfigError, match=r"Repeat: remat: policy must be one of"):
        Repeat(BLOCK, 2, remat="all")
    with pytest.raises(
        ConfigError, match=r"Repeat: n \(the number of layers\) must be a positive int, given 0"
    ):
        Repeat(BLOCK, 0)

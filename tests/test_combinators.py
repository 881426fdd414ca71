"""Sequential, Branch, Parallel, Residual against NumPy compositions; their errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nn_jax import Branch, ConfigError, Dense, Parallel, Residual, Sequential, ShapeError

KEY = jax.random.key(0)
X = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)


def _affine(p, x):
    return x @ np.asarray(p["w"]) + np.asarray(p["b"])


def test_sequential_slots_and_names():
    model = Sequential(Dense(5), jax.nn.relu, Dense(2))
    params, _ = model.init(KEY, X)
    assert sorted(params) == ["0", "2"]
    expected = _affine(params["2"], np.maximum(_affine(params["0"], X), 0))
    np.testing.assert_allclose(model(params, X), expected, rtol=1e-5, atol=1e-6)

    named = Sequential({"encoder": Dense(5), "act": jnp.tanh, "head": Dense(2)})
    assert Sequential(encoder=Dense(5), act=jnp.tanh, head=Dense(2)) == named
    with pytest.raises(ConfigError, match=r"positionally .* or by name, not both"):
        Sequential(Dense(5), head=Dense(2))
    params, _ = named.init(KEY, X)
    assert sorted(params) == ["encoder", "head"]
    expected = _affine(params["head"], np.tanh(_affine(params["encoder"], X)))
    np.testing.assert_allclose(named(params, X), expected, rtol=1e-5, atol=1e-6)


def test_sequential_order_lives_in_the_spec_not_in_sorted_keys():
    model = Sequential(*[Dense(3) for _ in range(11)], Dense(1))  # keys "10" < "2" when sorted
    params, _ = model.init(KEY, X)
    h = X
    for i in range(12):
        h = _affine(params[str(i)], h)
    np.testing.assert_allclose(model(params, X), h, rtol=1e-4, atol=1e-5)


def test_branch_and_parallel():
    branch = Branch(Dense(2), jnp.tanh)
    params, _ = branch.init(KEY, X)
    a, b = branch(params, X)
    np.testing.assert_allclose(a, _affine(params["0"], X), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b, np.tanh(X), rtol=1e-6)

    par = Parallel(Dense(2), jnp.tanh)
    params, _ = par.init(KEY, (X, X[:, :2]))
    a, b = par(params, (X, X[:, :2]))
    np.testing.assert_allclose(a, _affine(params["0"], X), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b, np.tanh(X[:, :2]), rtol=1e-6)
    with pytest.raises(
        ShapeError,
        match=r"Parallel at <root>: expected a tuple of 2 inputs, given tuple of length 1",
    ):
        par(params, (X,))


def test_residual_identity_and_projection():
    res = Residual(Dense(4))
    params, _ = res.init(KEY, X)
    np.testing.assert_allclose(res(params, X), X + _affine(params["body"], X), rtol=1e-5, atol=1e-6)

    proj = Residual(Dense(2), shortcut=Dense(2))
    params, _ = proj.init(KEY, X)
    expected = _affine(params["body"], X) + _affine(params["shortcut"], X)
    np.testing.assert_allclose(proj(params, X), expected, rtol=1e-5, atol=1e-6)

    with pytest.raises(
        ShapeError,
        match=r"Residual at <root>: body output shape \(3, 2\) differs from shortcut shape \(3, 4\)",  # noqa: E501
    ):
        Residual(Dense(2)).init(KEY, X)

"""Dense, Flatten, Reshape against NumPy; their errors name the layer path, expected and given."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nn_jax import (
    ConfigError,
    Dense,
    Flatten,
    Linear,
    ParameterFree,
    ParamsError,
    Reshape,
    Sequential,
    ShapeError,
)
from nn_jax.dense import project

KEY = jax.random.key(0)


def test_dense_matches_numpy_with_leading_axes():
    x = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)
    layer = Dense(5)
    params, state = layer.init(KEY, x)
    assert state == {}
    w, b = np.asarray(params["w"]), np.asarray(params["b"])
    expected = np.einsum("btd,df->btf", x, w) + b
    np.testing.assert_allclose(layer(params, x), expected, rtol=1e-5, atol=1e-6)


def test_dense_without_bias_and_dtypes():
    x = jnp.ones((2, 3), jnp.bfloat16)
    layer = Dense(4, use_bias=False, param_dtype=jnp.float32, dtype=jnp.bfloat16)
    params, _ = layer.init(KEY, x)
    assert set(params) == {"w"} and params["w"].dtype == jnp.float32
    y = layer(params, x)
    assert y.dtype == jnp.bfloat16
    np.testing.assert_allclose(
        np.asarray(y, np.float32), np.asarray(params["w"]).sum(0)[None].repeat(2, 0), rtol=2e-2
    )


def test_dense_default_init_is_lecun_normal():
    params, _ = Dense(256).init(KEY, jnp.zeros((1, 512)))
    assert abs(float(jnp.var(params["w"])) / (1 / 512) - 1) < 0.05
    np.testing.assert_array_equal(params["b"], 0)


def test_dense_rejects_bad_config():
    with pytest.raises(ConfigError, match="features must be a positive int, given 0"):
        Dense(0)


def test_wrong_last_axis_names_layer_path_expected_and_given():
    model = Sequential({"encoder": Sequential(Dense(4), jax.nn.relu), "head": Dense(1)})
    params, _ = model.init(KEY, jnp.zeros((2, 10)))
    with pytest.raises(
        ShapeError, match=r"Dense at 'encoder/0': input last axis has size 7 .* expected 10"
    ):
        model(params, jnp.zeros((2, 7)))


def test_missing_param_names_layer_path_and_keys():
    model = Sequential({"encoder": Dense(4), "head": Dense(1)})
    params, _ = model.init(KEY, jnp.zeros((2, 3)))
    del params["head"]["w"]
    with pytest.raises(ParamsError, match=r"Dense at 'head': missing parameter 'w'.*given \['b'\]"):
        model(params, jnp.zeros((2, 3)))
    del params["head"]
    with pytest.raises(ParamsError, match=r"Dense at 'head': missing parameter 'w'.*given \[\]"):
        model(params, jnp.zeros((2, 3)))


def test_wrong_rank_names_layer_path():
    model = Sequential(Dense(4))
    params, _ = model.init(KEY, jnp.zeros((2, 3)))
    with pytest.raises(ShapeError, match=r"Dense at '0': input must have rank >= 1, given rank 0"):
        model(params, jnp.float32(1.0))
    with pytest.raises(
        ShapeError, match=r"Reshape at <root>: cannot reshape per-example shape \(5,\)"
    ):
        Reshape((2, 2))({}, jnp.zeros((3, 5)))


def test_flatten_and_reshape_match_numpy():
    x = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    np.testing.assert_array_equal(Flatten()({}, x), x.reshape(2, 12))
    np.testing.assert_array_equal(Flatten(batch_dims=2)({}, x), x)
    np.testing.assert_array_equal(Reshape((4, -1))({}, x.reshape(2, 12)), x.reshape(2, 4, 3))


def test_flatten_and_reshape_are_parameter_free():
    for layer in (Flatten(), Reshape((4, 3))):
        assert isinstance(layer, ParameterFree)
        assert layer.init(KEY, jnp.zeros((2, 12))) == ({}, {})


def test_linear_is_the_pytorch_name_of_dense():
    assert Linear is Dense and Linear(3) == Dense(3)


# --------------------------------------------------------------------------------------------
# ``project``: on CPU, a wide-to-narrow float32 weight takes its gradient (F, D)-major.

ROWS, WIDE, NARROW = 64, 128, 32  # rows * D * F = 2**18: the smallest product that switches


@pytest.fixture(scope="module")
def wide_to_narrow():
    rng = np.random.default_rng(1)
    x, w, g = (rng.standard_normal(s) for s in ((ROWS, WIDE), (WIDE, NARROW), (ROWS, NARROW)))
    return x, w, g


def _f32(*arrays):
    return [jnp.asarray(a, jnp.float32) for a in arrays]


def test_project_values_and_derivatives_match_numpy(wide_to_narrow):
    x, w, g = wide_to_narrow
    xf, wf, gf = _f32(x, w, g)
    tol = {"rtol": 1e-4, "atol": 1e-3}
    np.testing.assert_allclose(project(xf, wf), x @ w, **tol)
    # Reverse mode: the gradients of sum((x @ w) * g) are x^T g and g w^T.
    dw, dx = jax.grad(lambda w, x: jnp.sum(project(x, w) * gf), argnums=(0, 1))(wf, xf)
    np.testing.assert_allclose(dw, x.T @ g, **tol)
    np.testing.assert_allclose(dx, g @ w.T, **tol)
    # Forward mode, and forward over reverse: for 0.5 |x w|^2 the Hessian-vector product in
    # the direction v is x^T x v.
    v = np.random.default_rng(2).standard_normal(w.shape)
    (vf,) = _f32(v)
    _, tangent = jax.jvp(lambda w: project(xf, w), (wf,), (vf,))
    np.testing.assert_allclose(tangent, x @ v, **tol)
    grad = jax.grad(lambda w: 0.5 * jnp.sum(project(xf, w) ** 2))
    _, hvp = jax.jvp(grad, (wf,), (vf,))
    np.testing.assert_allclose(hvp, x.T @ x @ v, rtol=1e-4, atol=2e-2)
    # vmap over a stack of weights (an ensemble), with leading axes on x.
    ws = np.stack([w, 2 * w])
    xs, wsf = _f32(x[None], ws)
    ys = jax.vmap(project, in_axes=(None, 0))(xs, wsf)
    np.testing.assert_allclose(ys, np.einsum("btd,edf->ebtf", x[None], ws), **tol)


def _weight_gradient_dots(matmul, x, w, g):
    """The ``dot`` instructions of the compiled weight gradient of ``sum(matmul(x, w) * g)``."""
    step = jax.jit(jax.grad(lambda w, x: jnp.sum(matmul(x, w) * g)))
    text = step.lower(w, x).compile().as_text()
    return [line for line in text.splitlines() if " dot(" in line]


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the CPU branch")
def test_project_computes_the_weight_gradient_narrow_major_on_cpu(wide_to_narrow):
    x, w, g = _f32(*wide_to_narrow)
    d, f = WIDE, NARROW
    # Physically (F, D) row-major: either shape [F,D] with layout {1,0}, or [D,F] with {0,1}.
    narrow_major = (f"f32[{f},{d}]{{1,0}}", f"f32[{d},{f}]{{0,1}}")
    dots = _weight_gradient_dots(project, x, w, g)
    assert any(s in line for line in dots for s in narrow_major), dots
    # The control: one dot_general, as XLA compiles it unaided, is (D, F)-major.
    plain = _weight_gradient_dots(lambda x, w: x @ w, x, w, g)
    assert not any(s in line for line in plain for s in narrow_major), plain


@pytest.mark.parametrize(
    "x_shape, w_shape, dtype",
    [
        ((ROWS, WIDE), (WIDE, NARROW), jnp.float32),  # switches
        ((ROWS // 2, WIDE), (WIDE, NARROW), jnp.float32),  # product too small
        ((ROWS, NARROW), (NARROW, WIDE), jnp.float32),  # narrow to wide
        ((ROWS, WIDE), (WIDE, NARROW), jnp.bfloat16),  # measured no faster in bfloat16
    ],
)
def test_project_switches_only_for_large_wide_to_narrow_float32(x_shape, w_shape, dtype):
    jaxpr = jax.make_jaxpr(project)(jnp.zeros(x_shape, dtype), jnp.zeros(w_shape, dtype))
    switches = "custom_jvp_call" in str(jaxpr)
    assert switches == (x_shape[0] == ROWS and w_shape[0] == WIDE and dtype == jnp.float32)


def test_dense_uses_project(wide_to_narrow):
    x, _, _ = _f32(*wide_to_narrow)
    layer = Dense(NARROW)
    params, _ = layer.init(KEY, x)
    assert "custom_jvp_call" in str(jax.make_jaxpr(layer)(params, x))
    w, b = (np.asarray(params[k], np.float64) for k in ("w", "b"))
    np.testing.assert_allclose(layer(params, x), wide_to_narrow[0] @ w + b, rtol=1e-4, atol=1e-3)

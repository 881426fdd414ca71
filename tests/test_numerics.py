"""Numerical robustness: extreme logits, fully masked attention, zero variance, half precision,
and determinism.

* Softmax, log-softmax and every classification loss at logits of +-1e4 are finite and equal a
  NumPy float64 reference computed stably (max subtracted), with finite gradients.
* Attention with a fully masked query row: as nn_jax.attention documents, the row's weights are
  all 0, so its output is 0 (the output bias ``b_o`` in ``MultiHeadAttention``), never NaN, and
  every gradient is finite (none flows through the row).
* Normalization of a constant (zero-variance) input is finite (the bias), with finite gradients:
  ``epsilon`` keeps ``rsqrt(var + epsilon)`` finite and the two-pass variance is exactly 0.
* bfloat16 and float16 inputs to Dense, Conv, LayerNorm, attention and the losses are finite and
  close to the float32 computation at a tolerance of the dtype's precision. Losses return the
  predictions' dtype (see nn_jax.losses) and their reductions accumulate in float32: a mean of
  8192 half-precision terms is as accurate as its float32 value rounded to the half dtype.
* Determinism (the guarantee): on one backend, the same seed gives bit-identical params from
  ``init`` and after three ``make_train_step`` steps with optax (an MLP, a CNN and a
  transformer; a step built and compiled twice agrees too); a different seed gives different
  params. nn_jax draws all randomness from the keys it is given (``jax.random``), so the
  result is as deterministic as XLA's execution of the program: bit for bit on CPU, here.
  Across backends or XLA versions results may differ, and on GPUs XLA's scatter-adds and
  some reductions are only deterministic with ``--xla_gpu_deterministic_ops=true`` (not
  tested here: no GPU in CI).

Runs under JAX's standard dtype promotion (tests/test_properties.py runs the layers under strict
promotion, half precision included).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import nn_jax
from nn_jax import (
    BatchNorm,
    Conv,
    Dense,
    GroupNorm,
    InstanceNorm,
    LayerNorm,
    MultiHeadAttention,
    RMSNorm,
    losses,
    make_train_step,
    models,
)

KEY = jax.random.key(0)
HALF = [jnp.bfloat16, jnp.float16]
# Relative to the output's scale: a few units in the last place of the dtype.
HALF_TOL = {jnp.bfloat16: 3e-2, jnp.float16: 4e-3}

# Rows with +-1e4 logits: huge gaps, ties at the top, all equal, one finite among huge ones.
LOGITS = np.array(
    [
        [1e4, -1e4, 0.0, 1e4 - 1.0],
        [-1e4, -1e4, -1e4, -1e4 + 3.0],
        [1e4, 1e4, 1e4, 1e4],
        [0.5, -0.25, 3.0, -1e4],
    ],
    np.float32,
)


def _np_log_softmax(z):
    z = np.asarray(z, np.float64)
    top = z.max(axis=-1, keepdims=True)
    return z - top - np.log(np.exp(z - top).sum(axis=-1, keepdims=True))


def _grad(f, argnums=0):
    """``jax.grad`` compiled: one program instead of an eager op-by-op backward pass."""
    return jax.jit(jax.grad(f, argnums=argnums))


def _all_finite(tree) -> bool:
    return all(bool(np.all(np.isfinite(np.asarray(a, np.float64)))) for a in jax.tree.leaves(tree))


def _close(actual, expected, rtol, what=""):
    expected = np.asarray(expected, np.float64)
    scale = max(1.0, float(np.max(np.abs(expected), initial=0.0)))
    np.testing.assert_allclose(
        np.asarray(actual, np.float64), expected, rtol=rtol, atol=rtol * scale, err_msg=what
    )


# --------------------------------------------------------------------------------------------
# Softmax and classification losses at +-1e4.


def test_softmax_and_log_softmax_at_extreme_logits():
    reference = _np_log_softmax(LOGITS)
    log_p = nn_jax.log_softmax(jnp.asarray(LOGITS))
    p = nn_jax.softmax(jnp.asarray(LOGITS))
    assert _all_finite((log_p, p))
    _close(log_p, reference, 1e-7)
    _close(p, np.exp(reference), 1e-6)
    np.testing.assert_allclose(np.asarray(p).sum(-1), 1.0, rtol=1e-6)
    grads = _grad(lambda z: jnp.sum(nn_jax.log_softmax(z) * jnp.arange(16.0).reshape(4, 4)))(LOGITS)
    assert _all_finite(grads)


def _bce_logits_reference(z, t):
    z = np.asarray(z, np.float64)
    return np.maximum(z, 0) - z * t + np.log1p(np.exp(-np.abs(z)))


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_softmax_cross_entropies_at_extreme_logits(smoothing):
    labels = np.array([1, 3, 0, 3], np.int32)  # a -1e4 class, the top, a tie, a -1e4 class
    soft = np.array(
        [[0.0, 1.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25], [1.0, 0.0, 0.0, 0.0], [0.5, 0, 0, 0.5]]
    )
    for name, targets in (
        ("softmax_cross_entropy_with_integer_labels", labels),
        ("softmax_cross_entropy", soft.astype(np.float32)),
    ):
        fn = getattr(losses, name)
        one_hot = np.eye(4)[targets] if targets.ndim == 1 else targets
        smoothed = (1 - smoothing) * one_hot + smoothing / 4
        expected = -np.sum(smoothed * _np_log_softmax(LOGITS), axis=-1)

        def loss(z, fn=fn, targets=targets):
            return fn(z, targets, label_smoothing=smoothing, reduction="none")

        value = loss(jnp.asarray(LOGITS))
        assert _all_finite(value), (name, value)
        _close(value, expected, 1e-6, name)
        grads = _grad(lambda z, loss=loss: jnp.sum(loss(z)))(jnp.asarray(LOGITS))
        assert _all_finite(grads), name
        # d loss / d z = softmax(z) - smoothed targets, exactly (rows sum to 0).
        _close(grads, np.exp(_np_log_softmax(LOGITS)) - smoothed, 1e-6, name)


def test_binary_cross_entropies_at_extreme_logits():
    z = np.array([1e4, -1e4, 1e4, -1e4, 0.0, 30.0, -30.0], np.float32)
    t = np.array([1.0, 0.0, 0.0, 1.0, 0.3, 0.7, 0.7], np.float32)
    value = losses.binary_cross_entropy_with_logits(z, t, reduction="none")
    assert _all_finite(value)
    _close(value, _bce_logits_reference(z, t), 1e-6)
    grads = _grad(lambda z: jnp.sum(losses.binary_cross_entropy_with_logits(z, t)))(z)
    assert _all_finite(grads)
    sigmoid = 0.5 * (1 + np.tanh(np.asarray(z, np.float64) / 2))  # no overflow at -1e4
    _close(grads, (sigmoid - t) / len(z), 1e-6)  # the mean's gradient: (sigmoid(z) - t) / n
    # Probabilities that saturate to exactly 0 and 1 (sigmoid of +-1e4): each log clamped at
    # -100, as PyTorch's BCELoss; gradients finite too.
    probs = jax.nn.sigmoid(jnp.asarray(z))
    value = losses.binary_cross_entropy(probs, t, reduction="none")
    p = np.asarray(probs, np.float64)
    with np.errstate(divide="ignore"):
        expected = -(t * np.maximum(np.log(p), -100) + (1 - t) * np.maximum(np.log1p(-p), -100))
    assert _all_finite(value)
    _close(value, expected, 1e-5)
    assert _all_finite(_grad(lambda q: jnp.sum(losses.binary_cross_entropy(q, t)))(probs))


def test_kl_divergence_at_extreme_logits():
    log_predictions = nn_jax.log_softmax(jnp.asarray(LOGITS))
    targets = np.array(
        [[0.0, 1.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25], [1.0, 0.0, 0.0, 0.0], [0.5, 0, 0, 0.5]],
        np.float32,
    )
    value = losses.kl_divergence(log_predictions, targets, reduction="none")
    t = targets.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        expected = np.sum(np.where(t > 0, t * (np.log(t) - _np_log_softmax(LOGITS)), 0.0), -1)
    assert _all_finite(value)
    _close(value, expected, 1e-6)
    grads = _grad(
        lambda z: jnp.sum(losses.kl_divergence(nn_jax.log_softmax(z), targets))
    )(jnp.asarray(LOGITS))  # fmt: skip
    assert _all_finite(grads)


# --------------------------------------------------------------------------------------------
# Attention with fully masked query rows.


def _attention_inputs(dtype=jnp.float32, scale=1.0):
    g = np.random.default_rng(0)
    q, k, v = (scale * g.standard_normal((2, 3, 2, 4)) for _ in range(3))
    mask = g.random((2, 2, 3, 3)) < 0.6
    mask[0, :, 1, :] = False  # batch 0, query 1: no key in any head
    mask[1, 1, 2, :] = False  # batch 1, head 1, query 2
    mask[1, 0, 0, :] = True
    return (*(jnp.asarray(a, dtype) for a in (q, k, v)), mask)


@pytest.mark.parametrize("scale", [1.0, 100.0])  # 100: logits of order 1e4
def test_fully_masked_attention_rows_are_zero_with_finite_gradients(scale):
    q, k, v, mask = _attention_inputs(scale=scale)
    out = nn_jax.dot_product_attention(q, k, v, mask=mask)
    weights = nn_jax.attention_weights(q, k, mask=mask)
    assert _all_finite((out, weights))
    assert not np.any(np.asarray(out)[0, 1]) and not np.any(np.asarray(out)[1, 2, 1])
    assert not np.any(np.asarray(weights)[0, :, 1]) and not np.any(np.asarray(weights)[1, 1, 2])
    # Every other row: a softmax over its allowed keys (float64 reference).
    logits = np.einsum("bqhd,bkhd->bhqk", *(np.asarray(a, np.float64) for a in (q, k))) / 2.0
    masked = np.where(mask, logits, -np.inf)
    rows = mask.any(-1, keepdims=True)
    top = np.where(rows, masked.max(-1, keepdims=True), 0.0)
    e = np.where(mask, np.exp(masked - top), 0.0)
    expected = np.where(rows, e / np.where(rows, e.sum(-1, keepdims=True), 1.0), 0.0)
    _close(weights, expected, 1e-5)

    def loss(q, k, v):
        return jnp.sum(jnp.sin(nn_jax.dot_product_attention(q, k, v, mask=mask)))

    grads = _grad(loss, argnums=(0, 1, 2))(q, k, v)
    assert _all_finite(grads)
    assert not np.any(np.asarray(grads[0])[0, 1])  # nothing flows into the masked query


@pytest.mark.parametrize("dtype", [jnp.float32, *HALF])
def test_multi_head_attention_fully_masked_example_gives_the_bias(dtype):
    layer = MultiHeadAttention(2, param_dtype=dtype)
    x = jnp.asarray(np.random.default_rng(1).standard_normal((2, 3, 4)), dtype)
    params, _ = layer.init(KEY, x)
    params["b_o"] = jnp.arange(1.0, 5.0, dtype=dtype)
    key_mask = np.array([[False] * 3, [True, False, True]])  # example 0: nothing to attend
    y = jax.jit(lambda p, x: layer(p, x, side={"key_mask": key_mask}))(params, x)
    assert y.dtype == dtype and _all_finite(y)
    np.testing.assert_array_equal(
        np.asarray(y[0], np.float32), np.tile(np.arange(1.0, 5.0), (3, 1))
    )

    def loss(p, x):
        return jnp.sum(jnp.sin(layer(p, x, side={"key_mask": key_mask}).astype(jnp.float32)))

    grads = _grad(loss, argnums=(0, 1))(params, x)
    assert _all_finite(grads)
    assert not np.any(np.asarray(grads[1][0], np.float32))  # example 0 gets no gradient


# --------------------------------------------------------------------------------------------
# Zero-variance normalization.

NORMS = {
    "batch_norm": (BatchNorm(momentum=0.9), True),
    "layer_norm": (LayerNorm(), False),
    "layer_norm_two_axes": (LayerNorm(axis=(-2, -1)), False),
    "group_norm": (GroupNorm(2), False),
    "instance_norm": (InstanceNorm(), False),
}


@pytest.mark.parametrize("name", sorted(NORMS))
@pytest.mark.parametrize("value", [0.0, 1e4])
def test_normalizing_a_constant_input_gives_the_bias(name, value):
    layer, train = NORMS[name]
    x = jnp.full((4, 3, 4), value, jnp.float32)
    params, state = layer.init(KEY, x)
    bias = jnp.broadcast_to(jnp.arange(4.0), params["b"].shape)
    params = {"scale": params["scale"] * 2.0, "b": params["b"] + bias}

    @jax.jit
    def run(p, x):
        return layer.apply(p, state, x, train=train)

    y, new_state = run(params, x)
    assert _all_finite((y, new_state))
    np.testing.assert_allclose(np.asarray(y), np.broadcast_to(np.arange(4.0), x.shape), atol=1e-6)
    if train:  # the batch variance is exactly 0: var' = m * var
        np.testing.assert_allclose(np.asarray(new_state["var"]), 0.9, rtol=1e-6)

    def loss(p, x):
        return jnp.sum(jnp.sin(run(p, x)[0]) * jnp.cos(jnp.arange(x.size).reshape(x.shape)))

    assert _all_finite(_grad(loss, argnums=(0, 1))(params, x))


@pytest.mark.parametrize("dtype", [jnp.float32, *HALF])
def test_rms_norm_of_zeros_is_finite(dtype):
    layer = RMSNorm(param_dtype=dtype)
    x = jnp.zeros((2, 5), dtype)
    params, _ = layer.init(KEY, x)
    y = layer(params, x)
    assert y.dtype == dtype and _all_finite(y) and not np.any(np.asarray(y, np.float32))
    grads = _grad(lambda x: jnp.sum(layer(params, x).astype(jnp.float32)))(x)
    assert _all_finite(grads)


# --------------------------------------------------------------------------------------------
# Half precision against float32.


def _half_vs_float32(layer_for, x, dtype, side=None):
    """The layer in ``dtype`` (params and input) vs in float32 with the same (half) params
    upcast: the float32 result of the same numbers, so only the computation's rounding
    differs."""
    half_layer, f32_layer = layer_for(dtype), layer_for(jnp.float32)
    x_half = jnp.asarray(x, dtype)
    params, state = jax.jit(half_layer.init)(KEY, x_half)
    params = jax.tree.map(
        lambda a: a + 0.05 if jnp.issubdtype(a.dtype, jnp.floating) else a, params
    )
    y = jax.jit(lambda p, s, x: half_layer.apply(p, s, x, side=side)[0])(params, state, x_half)
    up = jax.tree.map(lambda a: a.astype(jnp.float32), (params, state))
    reference = jax.jit(lambda p, s, x: f32_layer.apply(p, s, x, side=side)[0])(
        *up, x_half.astype(jnp.float32)
    )
    assert y.dtype == dtype, y.dtype
    assert _all_finite(y)
    _close(y, reference, HALF_TOL[dtype])


@pytest.mark.parametrize("dtype", HALF, ids=["bfloat16", "float16"])
@pytest.mark.parametrize("name", ["dense", "conv", "layer_norm", "attention"])
def test_half_precision_layers_match_float32(name, dtype):
    g = np.random.default_rng(2)
    side = None
    if name == "dense":
        layer_for, x = (lambda dt: Dense(8, param_dtype=dt)), g.standard_normal((16, 32))
    elif name == "conv":
        layer_for = lambda dt: Conv(4, (3, 3), strides=2, param_dtype=dt)  # noqa: E731
        x = g.standard_normal((2, 8, 8, 3))
    elif name == "layer_norm":  # a large mean: statistics in float32 keep the variance
        layer_for, x = (lambda dt: LayerNorm(param_dtype=dt)), 100 + g.standard_normal((4, 16))
    else:
        layer_for = lambda dt: MultiHeadAttention(2, param_dtype=dt)  # noqa: E731
        x = g.standard_normal((2, 5, 8))
        side = {"key_mask": np.array([[True] * 5, [True, True, False, False, False]])}
    _half_vs_float32(layer_for, x, dtype, side)


@pytest.mark.parametrize("dtype", HALF, ids=["bfloat16", "float16"])
def test_mixed_precision_dense_computes_in_the_given_dtype(dtype):
    """float32 params, half-precision computation (``dtype=``): a half-precision output."""
    x = np.random.default_rng(3).standard_normal((8, 16)).astype(np.float32)
    params, _ = Dense(4).init(KEY, x)
    y = Dense(4, dtype=dtype)(params, jnp.asarray(x, dtype))
    assert y.dtype == dtype and _all_finite(y)
    _close(y, x.astype(np.float64) @ np.asarray(params["w"], np.float64), HALF_TOL[dtype])


LOSS_CASES = {
    "mse": lambda g, n: (g.standard_normal(n), g.standard_normal(n)),
    "binary_cross_entropy_with_logits": lambda g, n: (3 * g.standard_normal(n), g.random(n)),
    "softmax_cross_entropy_with_integer_labels": lambda g, n: (
        3 * g.standard_normal((n // 4, 4)),
        g.integers(0, 4, n // 4),
    ),
}


@pytest.mark.parametrize("dtype", HALF, ids=["bfloat16", "float16"])
@pytest.mark.parametrize("name", sorted(LOSS_CASES))
def test_half_precision_losses_accumulate_accurately(name, dtype):
    """A mean over 8192 terms in half precision: summed in bfloat16 it would stall once the
    running sum is large (adding 1 to 256 is a no-op in bfloat16); it must match float32.
    Losses of half-precision predictions compute and return float32."""
    g = np.random.default_rng(4)
    predictions, targets = LOSS_CASES[name](g, 8192)
    fn = getattr(losses, name)
    p_half = jnp.asarray(predictions, dtype)
    t_half = targets if targets.dtype.kind == "i" else jnp.asarray(targets, dtype)
    t_f32 = targets if targets.dtype.kind == "i" else np.asarray(t_half, np.float32)
    for reduction in ("mean", "sum"):
        value = fn(p_half, t_half, reduction=reduction)
        reference = fn(np.asarray(p_half, np.float32), t_f32, reduction=reduction)
        assert value.dtype == jnp.float32 and _all_finite(value)
        _close(value, reference, HALF_TOL[dtype], reduction)
    if name != "mse":  # logits of +-1e4 stay finite in half precision too (1e4 fits float16)
        extreme = jnp.asarray(1e4 * np.sign(predictions), dtype)
        assert _all_finite(fn(extreme, t_half))


# --------------------------------------------------------------------------------------------
# Determinism.


def _tokens(g, shape):
    return g.integers(0, 11, shape).astype(np.int32)


DETERMINISM = {
    "mlp": (
        lambda: models.MLP((16, 3)),
        lambda g: (g.standard_normal((8, 5)).astype(np.float32), g.integers(0, 3, 8)),
    ),
    "cnn": (
        lambda: models.LeNet(3, channels=(2, 4), kernel_size=3, hidden=(8,)),
        lambda g: (g.standard_normal((4, 8, 8, 1)).astype(np.float32), g.integers(0, 3, 4)),
    ),
    "transformer": (
        lambda: models.TransformerLM(11, num_layers=1, d_model=8, num_heads=2, max_length=8),
        lambda g: (_tokens(g, (2, 6)), _tokens(g, (2, 6))),
    ),
}


def _trainer(name):
    """``train(seed) -> (init params, params after 3 adam steps)`` for model ``name``: one
    compiled init and train step, run afresh from ``init`` at every call."""
    make_model, make_batch = DETERMINISM[name]
    model = make_model()
    batch = make_batch(np.random.default_rng(0))
    init = jax.jit(model.init)
    opt = optax.adam(1e-2)
    step = make_train_step(model, losses.softmax_cross_entropy_with_integer_labels, opt)

    def train(seed):
        params, _ = init(jax.random.key(seed), batch[0])
        trained, opt_state = params, opt.init(params)
        for _ in range(3):
            trained, opt_state, loss = step(trained, opt_state, batch)
        assert np.isfinite(float(loss))
        return params, trained

    return train


def _identical(a, b) -> bool:
    return jax.tree.structure(a) == jax.tree.structure(b) and all(
        x.dtype == y.dtype and np.array_equal(np.asarray(x), np.asarray(y))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


@pytest.mark.parametrize("name", sorted(DETERMINISM))
def test_same_seed_same_params_different_seed_different_params(name):
    train = _trainer(name)
    init_a, trained_a = train(0)
    init_b, trained_b = train(0)
    assert _identical(init_a, init_b)
    assert _identical(trained_a, trained_b)
    assert not _identical(trained_a, init_a)  # the steps changed something
    init_c, trained_c = train(1)
    differs = [
        not np.array_equal(np.asarray(x), np.asarray(y))
        for x, y in zip(jax.tree.leaves(init_a), jax.tree.leaves(init_c), strict=True)
        if x.size > 1 and np.asarray(x).std() > 0  # random leaves (not zeros/ones)
    ]
    assert differs and all(differs)
    assert not _identical(trained_a, trained_c)


def test_a_train_step_compiled_twice_gives_the_same_params():
    """Compilation is deterministic too: two separately built steps agree bit for bit."""
    assert _identical(_trainer("mlp")(0), _trainer("mlp")(0))

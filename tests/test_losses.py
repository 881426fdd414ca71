"""Losses against NumPy references written from the formulas, in float64; gradients vs finite
differences; reductions, masks, shape errors, extreme logits and probabilities at 0 and 1."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nn_jax import losses as L
from nn_jax.errors import ConfigError, ShapeError

B, C = 4, 5
rng = np.random.default_rng(0)
PROBS = rng.uniform(0.05, 0.95, (B, C))
HARD = rng.integers(0, 2, (B, C)).astype(np.float64)
SOFT = rng.uniform(0.0, 1.0, (B, C))
LOGITS = rng.normal(0.0, 2.0, (B, C))
PRED = rng.normal(0.0, 1.0, (B, C))
TARGET = rng.normal(0.0, 1.5, (B, C))
INT_LABELS = np.array([0, 3, 4, 1])
ONE_HOT = np.eye(C)[INT_LABELS]
DIST = np.exp(LOGITS) / np.exp(LOGITS).sum(-1, keepdims=True)
T_DIST = np.exp(PRED) / np.exp(PRED).sum(-1, keepdims=True)
T_DIST[0] = np.array([0.0, 0.25, 0.25, 0.5, 0.0])  # zero entries: 0 * log 0 = 0
DELTA = 0.7


def _log_softmax(z):
    m = z.max(-1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(-1, keepdims=True))


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _smooth(y, a):
    return (1 - a) * y + a / y.shape[-1]


def _huber(e):
    a = np.abs(e)
    return np.where(a <= DELTA, 0.5 * a**2, DELTA * (a - 0.5 * DELTA))


def _kl(t, logq):
    tlogt = np.where(t > 0, t * np.log(np.where(t > 0, t, 1.0)), 0.0)
    return (tlogt - t * logq).sum(-1)


# name -> (loss, predictions, targets, keyword args, NumPy per-element reference)
CASES = {
    "bce_hard": (
        L.binary_cross_entropy,
        PROBS,
        HARD,
        {},
        -(HARD * np.log(PROBS) + (1 - HARD) * np.log(1 - PROBS)),
    ),
    "bce_soft": (
        L.binary_cross_entropy,
        PROBS,
        SOFT,
        {},
        -(SOFT * np.log(PROBS) + (1 - SOFT) * np.log(1 - PROBS)),
    ),
    "bce_logits": (
        L.binary_cross_entropy_with_logits,
        LOGITS,
        SOFT,
        {},
        -(SOFT * np.log(_sigmoid(LOGITS)) + (1 - SOFT) * np.log(1 - _sigmoid(LOGITS))),
    ),
    "softmax_ce": (
        L.softmax_cross_entropy,
        LOGITS,
        ONE_HOT,
        {},
        -(ONE_HOT * _log_softmax(LOGITS)).sum(-1),
    ),
    "softmax_ce_smooth": (
        L.softmax_cross_entropy,
        LOGITS,
        ONE_HOT,
        {"label_smoothing": 0.1},
        -(_smooth(ONE_HOT, 0.1) * _log_softmax(LOGITS)).sum(-1),
    ),
    "softmax_ce_soft_labels": (
        L.softmax_cross_entropy,
        LOGITS,
        T_DIST,
        {},
        -(T_DIST * _log_softmax(LOGITS)).sum(-1),
    ),
    "int_ce": (
        L.softmax_cross_entropy_with_integer_labels,
        LOGITS,
        INT_LABELS,
        {},
        np.log(np.exp(LOGITS).sum(-1)) - LOGITS[np.arange(B), INT_LABELS],
    ),
    "int_ce_smooth": (
        L.softmax_cross_entropy_with_integer_labels,
        LOGITS,
        INT_LABELS,
        {"label_smoothing": 0.2},
        -(_smooth(ONE_HOT, 0.2) * _log_softmax(LOGITS)).sum(-1),
    ),
    "mse": (L.mse, PRED, TARGET, {}, (PRED - TARGET) ** 2),
    "mae": (L.mae, PRED, TARGET, {}, np.abs(PRED - TARGET)),
    "huber": (L.huber, PRED, TARGET, {"delta": DELTA}, _huber(PRED - TARGET)),
    "kl": (L.kl_divergence, np.log(DIST), T_DIST, {}, _kl(T_DIST, np.log(DIST))),
    "nll": (
        L.nll_loss,
        _log_softmax(LOGITS),
        INT_LABELS,
        {},
        -_log_softmax(LOGITS)[np.arange(B), INT_LABELS],
    ),
    "smooth_l1": (
        L.smooth_l1,
        PRED,
        TARGET,
        {"beta": DELTA},
        _huber(PRED - TARGET) / DELTA,  # PyTorch's SmoothL1Loss is HuberLoss / beta
    ),
}
NAMES = sorted(CASES)


def test_one_public_name_per_loss():
    # No aliases (``mean_squared_error`` was one): each public name is a different function.
    assert len({id(getattr(L, name)) for name in L.__all__}) == len(L.__all__)


def test_huber_data_covers_both_regimes():
    e = np.abs(PRED - TARGET)
    assert (e < DELTA).any() and (e > DELTA).any()


@pytest.mark.parametrize("name", NAMES)
def test_matches_numpy_reference_eager_and_jit(name):
    fn, x, y, kw, ref = CASES[name]

    def all_reductions(x, y):
        return fn(x, y, reduction="none", **kw), fn(x, y, **kw), fn(x, y, reduction="sum", **kw)

    with jax.enable_x64(True):
        eager = all_reductions(x, y)
        jitted = jax.jit(all_reductions)(x, y)
    for none, mean, total in (eager, jitted):
        assert none.shape == ref.shape
        np.testing.assert_allclose(np.asarray(none), ref, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(float(mean), ref.mean(), rtol=1e-12)
        np.testing.assert_allclose(float(total), ref.sum(), rtol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_mask_and_weights(name):
    fn, x, y, kw, ref = CASES[name]
    mask = np.random.default_rng(1).integers(0, 2, ref.shape).astype(bool)
    mask.flat[0], mask.flat[-1] = True, False
    weights = np.random.default_rng(2).uniform(0.0, 2.0, ref.shape)
    empty = np.zeros(ref.shape, bool)

    @jax.jit
    def masked(x, mask, weights, empty):
        return (
            fn(x, y, mask=mask, **kw),
            fn(x, y, mask=mask, reduction="sum", **kw),
            fn(x, y, mask=mask, reduction="none", **kw),
            fn(x, y, mask=weights, **kw),
            fn(x, y, mask=empty, **kw),
            jax.grad(lambda p: fn(p, y, mask=empty, **kw))(x),
        )

    with jax.enable_x64(True):
        mean, total, none, weighted, empty_mean, empty_grad = masked(
            jnp.asarray(x), mask, weights, empty
        )
    np.testing.assert_allclose(float(mean), ref[mask].mean(), rtol=1e-12)
    np.testing.assert_allclose(float(total), ref[mask].sum(), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(none), np.where(mask, ref, 0.0), rtol=1e-12)
    np.testing.assert_allclose(float(weighted), (weights * ref).sum() / weights.sum(), rtol=1e-12)
    # Fully masked: 0, not NaN, and a zero (finite) gradient.
    assert float(empty_mean) == 0.0
    np.testing.assert_array_equal(np.asarray(empty_grad), 0.0)


def test_mask_broadcasts_size_one_axes_only():
    per_row = np.array([[True], [False], [True], [True]])  # (B, 1) for a (B, C) loss
    ref = (PRED - TARGET) ** 2
    with jax.enable_x64(True):
        got = float(L.mse(PRED, TARGET, mask=per_row))
    np.testing.assert_allclose(got, ref[[0, 2, 3]].mean(), rtol=1e-12)
    with pytest.raises(ShapeError, match=r"mse: mask shape \(5,\) .* loss shape \(4, 5\)"):
        L.mse(PRED, TARGET, mask=np.ones(C, bool))  # would need rank promotion
    with pytest.raises(ShapeError, match=r"mask shape \(4, 5\) .* loss shape \(4,\)"):
        L.softmax_cross_entropy(LOGITS, ONE_HOT, mask=np.ones((B, C), bool))


@pytest.mark.parametrize("name", NAMES)
def test_gradient_matches_central_differences(name):
    fn, x, y, kw, _ = CASES[name]
    eps = 1e-6
    with jax.enable_x64(True):
        f = jax.jit(lambda p: fn(p, y, **kw))
        x = jnp.asarray(x, jnp.float64)
        grad = np.asarray(jax.grad(f)(x))
        basis = jnp.eye(x.size, dtype=x.dtype).reshape((x.size, *x.shape))
        shifted = jnp.concatenate([x[None] + eps * basis, x[None] - eps * basis])
        plus, minus = jnp.split(jax.vmap(f)(shifted), 2)
        fd = (plus - minus) / (2 * eps)
    np.testing.assert_allclose(grad.ravel(), np.asarray(fd), rtol=1e-6, atol=1e-10)
    assert np.abs(grad).max() > 1e-3  # the check is not vacuous


@pytest.mark.parametrize("name", NAMES)
def test_shape_mismatch_raises_naming_function_and_shapes(name):
    fn, x, y, kw, _ = CASES[name]
    bad = np.concatenate([y, y[..., :1]], axis=-1) if y.ndim == 2 else y[:, None]
    with pytest.raises(ShapeError) as err:
        fn(x, bad, **kw)
    message = str(err.value)
    assert message.startswith(f"{fn.__name__}: ")
    assert str(x.shape) in message
    assert str(bad.shape) in message


def test_shape_mismatch_message_text():
    with pytest.raises(
        ShapeError, match=r"^mse: predictions shape \(4, 5\) and targets shape \(4, 1\) differ"
    ):
        L.mse(PRED, TARGET[:, :1])
    with pytest.raises(ShapeError, match=r"logits.shape\[:-1\] = \(4,\).*got labels of shape"):
        L.softmax_cross_entropy_with_integer_labels(LOGITS, INT_LABELS[:3])
    with pytest.raises(ShapeError, match=r"labels must be integer.*dtype float"):
        L.softmax_cross_entropy_with_integer_labels(LOGITS, INT_LABELS.astype(np.float32))


@pytest.mark.parametrize("reduction", ["avg", "batchmean", None])
def test_unknown_reduction(reduction):
    with pytest.raises(ConfigError, match=r"mae: reduction must be one of 'mean', 'sum', 'none'"):
        L.mae(PRED, TARGET, reduction=reduction)


@pytest.mark.parametrize("a", [-0.1, 1.5])
def test_label_smoothing_out_of_range(a):
    with pytest.raises(ConfigError, match=r"label_smoothing must be in \[0, 1\]"):
        L.softmax_cross_entropy(LOGITS, ONE_HOT, label_smoothing=a)


def test_integer_and_one_hot_smoothing_agree():
    a = 0.3
    ref = -(_smooth(ONE_HOT, a) * _log_softmax(LOGITS)).sum(-1)
    with jax.enable_x64(True):
        one_hot = L.softmax_cross_entropy(LOGITS, ONE_HOT, label_smoothing=a, reduction="none")
        ints = L.softmax_cross_entropy_with_integer_labels(
            LOGITS, INT_LABELS, label_smoothing=a, reduction="none"
        )
    np.testing.assert_allclose(np.asarray(one_hot), ref, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(ints), ref, rtol=1e-12)


# --- extreme inputs, in the default float32 ---------------------------------------------------


def test_bce_with_logits_extreme_logits():
    z = jnp.array([1e4, 1e4, -1e4, -1e4], jnp.float32)
    t = jnp.array([1.0, 0.0, 1.0, 0.0], jnp.float32)
    fn = L.binary_cross_entropy_with_logits
    loss, g = jax.jit(lambda z: (fn(z, t, reduction="none"), jax.grad(fn)(z, t)))(z)
    np.testing.assert_array_equal(np.asarray(loss), [0.0, 1e4, 1e4, 0.0])
    np.testing.assert_array_equal(np.asarray(g), [0.0, 0.25, -0.25, 0.0])  # (sigmoid(z) - t) / 4


def test_softmax_losses_extreme_logits():
    z = jnp.array([[1e4, -1e4], [1e4, -1e4]], jnp.float32)
    labels = jnp.array([0, 1])
    one_hot = jnp.eye(2, dtype=jnp.float32)[labels]
    ints = L.softmax_cross_entropy_with_integer_labels

    @jax.jit
    def run(z):
        return (
            ints(z, labels, reduction="none"),
            L.softmax_cross_entropy(z, one_hot, reduction="none"),
            ints(z, labels, label_smoothing=0.1, reduction="none"),
            jax.grad(ints)(z, labels),
        )

    int_loss, one_hot_loss, smooth, g = run(z)
    np.testing.assert_array_equal(np.asarray(int_loss), [0.0, 2e4])
    np.testing.assert_array_equal(np.asarray(one_hot_loss), [0.0, 2e4])
    # Smoothing a = 0.1 puts a/2 on each class: the loss is (a/2) * 2e4 = 1e3 for the right label.
    np.testing.assert_allclose(np.asarray(smooth), [1e3, 0.95 * 2e4], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(g), [[0.0, 0.0], [0.5, -0.5]], atol=1e-7)  # (softmax-y)/2


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_probability_bce_at_exactly_zero_and_one(dtype):
    fn = L.binary_cross_entropy
    with jax.enable_x64(dtype == jnp.float64):
        p = jnp.array([0.0, 1.0, 0.0, 1.0], dtype)
        t = jnp.array([0.0, 0.0, 1.0, 1.0], dtype)
        loss, g = jax.jit(lambda p: (fn(p, t, reduction="none"), jax.grad(fn)(p, t)))(p)
    # log clamped to >= -100, as PyTorch's BCELoss; clamped terms have zero gradient, the others
    # d/dp = -t/p + (1-t)/(1-p), over 4 elements.
    np.testing.assert_array_equal(np.asarray(loss), [0.0, 100.0, 100.0, 0.0])
    np.testing.assert_array_equal(np.asarray(g), [0.25, 0.0, 0.0, -0.25])


def test_probability_bce_clamp_near_zero():
    # -log(1e-30) = 69.08 is below the clamp; -log(1e-50) = 115.1 is clamped to 100.
    with jax.enable_x64(True):
        loss = L.binary_cross_entropy(
            jnp.array([1e-30, 1e-50, 1 - 1e-15]), jnp.array([1.0, 1.0, 0.0]), reduction="none"
        )
    np.testing.assert_allclose(
        np.asarray(loss), [30 * np.log(10), 100.0, -np.log(1e-15)], rtol=1e-3
    )
    np.testing.assert_allclose(float(loss[0]), 30 * np.log(10), rtol=1e-12)


def test_losses_accept_integer_targets_where_floats_are_meant():
    # 0/1 integer targets are cast to the predictions' dtype, not rejected.
    with jax.enable_x64(True):
        got = L.binary_cross_entropy_with_logits(LOGITS, HARD.astype(np.int32))
        want = L.binary_cross_entropy_with_logits(LOGITS, HARD)
    np.testing.assert_allclose(float(got), float(want), rtol=1e-12)

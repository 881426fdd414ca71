"""Masked segment reductions against NumPy loops; empty segments, stability, masking, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nn_jax.errors import ShapeError, ValueRangeError
from nn_jax.segment import segment_count, segment_max, segment_mean, segment_softmax, segment_sum

NUM_SEGMENTS = 5  # segment 3 is always empty; segment 4 only has masked rows


@pytest.fixture(scope="module")
def data():
    g = np.random.default_rng(0)
    ids = np.array([0, 0, 1, 2, 2, 2, 4, 1, 0, 4])
    mask = np.array([1, 1, 1, 1, 0, 1, 0, 1, 1, 0], bool)
    values = g.standard_normal((len(ids), 3))
    return values, ids, mask


def _numpy_reduce(values, ids, mask, reduce):
    out = np.zeros((NUM_SEGMENTS, *values.shape[1:]))
    for s in range(NUM_SEGMENTS):
        rows = values[(ids == s) & mask]
        if len(rows):
            out[s] = reduce(rows, axis=0)
    return out


@pytest.mark.parametrize(
    ("fn", "reduce"), [(segment_sum, np.sum), (segment_mean, np.mean), (segment_max, np.max)]
)
def test_reductions_match_numpy_and_give_zero_for_empty_segments(data, fn, reduce):
    values, ids, mask = data
    got = np.asarray(fn(values, ids, NUM_SEGMENTS, mask=mask))
    np.testing.assert_allclose(got, _numpy_reduce(values, ids, mask, reduce), rtol=1e-6, atol=1e-6)
    assert np.all(got[3] == 0) and np.all(got[4] == 0)  # empty and fully masked: 0, not -inf/NaN
    unmasked = np.asarray(fn(values, ids, NUM_SEGMENTS))
    np.testing.assert_allclose(
        unmasked, _numpy_reduce(values, ids, np.ones_like(mask), reduce), rtol=1e-6, atol=1e-6
    )


def test_count(data):
    _, ids, mask = data
    np.testing.assert_array_equal(segment_count(ids, NUM_SEGMENTS, mask=mask), [3, 2, 2, 0, 0])
    np.testing.assert_array_equal(segment_count(ids, NUM_SEGMENTS), [3, 2, 3, 0, 2])


def _numpy_softmax(values, ids, mask):
    out = np.zeros_like(values)
    for s in range(NUM_SEGMENTS):
        rows = (ids == s) & mask
        if rows.any():
            z = values[rows]
            e = np.exp(z - z.max(axis=0))
            out[rows] = e / e.sum(axis=0)
    return out


def test_softmax_matches_numpy_and_sums_to_one(data):
    values, ids, mask = data
    got = np.asarray(segment_softmax(values, ids, NUM_SEGMENTS, mask=mask))
    np.testing.assert_allclose(got, _numpy_softmax(values, ids, mask), rtol=1e-6, atol=1e-7)
    assert np.all(got[~mask] == 0)
    sums = _numpy_reduce(got, ids, mask, np.sum)
    np.testing.assert_allclose(sums[:3], 1.0, rtol=1e-6)
    assert np.all(sums[3:] == 0)


def test_softmax_is_stable_for_huge_logits(data):
    values, ids, mask = data
    shifted = values * 1000 + 1e4  # exp overflows float32 without the max shift
    got = np.asarray(
        segment_softmax(jnp.asarray(shifted, jnp.float32), ids, NUM_SEGMENTS, mask=mask)
    )
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, _numpy_softmax(shifted, ids, mask), atol=1e-6)


def test_masked_nan_and_inf_do_not_leak_into_values_or_gradients(data):
    values, ids, mask = data
    poisoned = np.where(mask[:, None], values, np.nan)
    poisoned[np.flatnonzero(~mask)[0]] = np.inf
    weights = np.cos(np.arange(values.size)).reshape(values.shape)
    for fn in (segment_sum, segment_mean, segment_max, segment_softmax):

        def loss(v, fn=fn):
            out = fn(v, ids, NUM_SEGMENTS, mask=mask)
            return jnp.sum(out * weights[: out.shape[0]])

        value, grad = jax.value_and_grad(loss)(jnp.asarray(poisoned, jnp.float32))
        assert np.isfinite(value), fn.__name__
        assert np.all(np.isfinite(grad)), fn.__name__
        assert np.all(np.asarray(grad)[~mask] == 0), fn.__name__


def test_out_of_range_ids_are_an_error_eagerly_and_dropped_by_an_unchecked_jit():
    values = np.array([1.0, 2.0, 4.0, 8.0])
    ids = np.array([0, 2, 1, 0])  # num_segments=2: id 2 is out of range
    with pytest.raises(
        ValueRangeError, match=r"segment_ids must lie in \[0, 2\), given values in \[0, 2\]"
    ):
        segment_sum(values, ids, 2)
    np.testing.assert_allclose(jax.jit(segment_sum, static_argnums=2)(values, ids, 2), [9.0, 4.0])
    softmax = np.asarray(jax.jit(segment_softmax, static_argnums=2)(values, ids, 2))
    np.testing.assert_allclose(
        softmax, [1 / (1 + np.exp(7.0)), 0.0, 1.0, 1 / (1 + np.exp(-7.0))], rtol=1e-6
    )


@pytest.mark.parametrize("fn", [segment_mean, segment_softmax, segment_max])
def test_float64_gradients_match_finite_differences(data, fn):
    values, ids, mask = data
    with jax.enable_x64(True):
        weights = np.sin(np.arange(values.size) + 0.5).reshape(values.shape)

        def loss(v):
            out = fn(v, ids, NUM_SEGMENTS, mask=mask)
            return jnp.sum(jnp.sin(out) * weights[: out.shape[0]])

        v = jnp.asarray(values, jnp.float64)
        direction = np.random.default_rng(1).standard_normal(values.shape)
        analytic = np.vdot(np.asarray(jax.grad(loss)(v)), direction)
        eps = 1e-6
        numeric = (float(loss(v + eps * direction)) - float(loss(v - eps * direction))) / (2 * eps)
        assert abs(analytic - numeric) <= 1e-6 * max(1.0, abs(numeric))


def test_works_under_jit_with_static_num_segments(data):
    values, ids, mask = data
    jitted = jax.jit(segment_softmax, static_argnums=2)
    np.testing.assert_allclose(
        jitted(values, ids, NUM_SEGMENTS, mask=mask),
        segment_softmax(values, ids, NUM_SEGMENTS, mask=mask),
        rtol=1e-6,
    )


def test_errors_name_expected_and_given():
    values = np.zeros((4, 2))
    with pytest.raises(
        ShapeError, match=r"segment_ids must be integers of shape \(4,\).*given shape \(3,\)"
    ):
        segment_sum(values, np.zeros(3, int), 2)
    with pytest.raises(ShapeError, match=r"segment_ids must be integers.*dtype float"):
        segment_sum(values, np.zeros(4), 2)
    with pytest.raises(
        ShapeError, match=r"mask must be booleans of shape \(4,\), given shape \(4,\) and dtype int"
    ):
        segment_mean(values, np.zeros(4, int), 2, mask=np.ones(4, int))
    with pytest.raises(ShapeError, match="num_segments must be a non-negative Python int"):
        segment_max(values, np.zeros(4, int), jnp.asarray(2))
    with pytest.raises(ShapeError, match="leading segment axis"):
        segment_softmax(np.float32(1.0), np.zeros((), int), 1)

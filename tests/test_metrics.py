"""Metrics against NumPy references (argmax, stable argsort), ties, thresholds and masks."""

import functools

import jax
import numpy as np
import pytest

from nn_jax import metrics as M
from nn_jax.errors import ConfigError, ShapeError

rng = np.random.default_rng(0)
B, C = 32, 6
LOGITS = rng.normal(size=(B, C)).astype(np.float32)
LABELS = rng.integers(0, C, B)
# Small integers: many ties, to pin down the tie rule.
TIED = rng.integers(0, 3, (B, C)).astype(np.float32)
MASK = rng.integers(0, 2, B).astype(bool)


def _np_topk_correct(logits, labels, k):
    # Stable sort of -logits: equal scores keep index order, i.e. ties go to the lowest index.
    order = np.argsort(-logits, axis=-1, kind="stable")[:, :k]
    return (order == labels[:, None]).any(axis=-1).astype(np.float64)


@pytest.mark.parametrize("logits", [LOGITS, TIED], ids=["distinct", "tied"])
def test_accuracy_matches_numpy(logits):
    correct = (np.argmax(logits, axis=-1) == LABELS).astype(np.float64)
    assert 0 < correct.mean() < 1
    np.testing.assert_allclose(float(M.accuracy(logits, LABELS)), correct.mean(), rtol=1e-6)
    np.testing.assert_allclose(
        float(M.accuracy(logits, LABELS, mask=MASK)), correct[MASK].mean(), rtol=1e-6
    )


def test_accuracy_ties_go_to_lowest_index():
    logits = np.array([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]], np.float32)
    np.testing.assert_array_equal(float(M.accuracy(logits, np.array([0, 0]))), 1.0)
    np.testing.assert_array_equal(float(M.accuracy(logits, np.array([1, 1]))), 0.0)


def test_accuracy_single_column_thresholds():
    probs = np.array([[0.7], [0.2], [0.5], [0.9]], np.float32)  # 0.5 exactly predicts class 0
    labels = np.array([1, 0, 1, 0])
    assert float(M.accuracy(probs, labels)) == pytest.approx(0.5)
    logits = np.array([[2.0], [-1.0], [0.0], [0.3]], np.float32)
    assert float(M.accuracy(logits, labels, threshold=0.0)) == pytest.approx(0.5)


def test_accuracy_fully_masked_is_zero():
    assert float(M.accuracy(LOGITS, LABELS, mask=np.zeros(B, bool))) == 0.0


@pytest.mark.parametrize("k", [1, 2, 3, C])
@pytest.mark.parametrize("logits", [LOGITS, TIED], ids=["distinct", "tied"])
def test_top_k_accuracy_matches_numpy(logits, k):
    correct = _np_topk_correct(logits, LABELS, k)
    got = jax.jit(functools.partial(M.top_k_accuracy, k=k))(logits, LABELS)
    np.testing.assert_allclose(float(got), correct.mean(), rtol=1e-6)
    masked = M.top_k_accuracy(logits, LABELS, k, mask=MASK)
    np.testing.assert_allclose(float(masked), correct[MASK].mean(), rtol=1e-6)


def test_top_1_equals_accuracy_even_with_ties():
    np.testing.assert_allclose(
        float(M.top_k_accuracy(TIED, LABELS, 1)), float(M.accuracy(TIED, LABELS)), rtol=1e-6
    )


@pytest.mark.parametrize("k", [0, -1, 1.5, True])
def test_top_k_bad_k(k):
    with pytest.raises(ConfigError, match=r"top_k_accuracy: k must be a positive int"):
        M.top_k_accuracy(LOGITS, LABELS, k)


def test_binary_accuracy_matches_numpy():
    probs = rng.uniform(size=(B, 3)).astype(np.float32)
    probs[0, 0] = 0.5  # exactly at the threshold: predicts 0
    targets = rng.integers(0, 2, (B, 3))
    targets[0, 0] = 0
    correct = ((probs > 0.5) == (targets == 1)).astype(np.float64)
    np.testing.assert_allclose(float(M.binary_accuracy(probs, targets)), correct.mean(), rtol=1e-6)
    mask = rng.integers(0, 2, (B, 3)).astype(bool)
    np.testing.assert_allclose(
        float(M.binary_accuracy(probs, targets.astype(bool), mask=mask)),
        correct[mask].mean(),
        rtol=1e-6,
    )
    logits = np.log(probs / (1 - probs))
    np.testing.assert_allclose(
        float(M.binary_accuracy(logits, targets.astype(np.float32), threshold=0.0)),
        correct.mean(),
        rtol=1e-6,
    )


def test_shape_errors():
    with pytest.raises(ShapeError, match=r"accuracy: labels must be integer .*\(32,\)"):
        M.accuracy(LOGITS, LABELS[:5])
    with pytest.raises(ShapeError, match=r"labels must be integer.*dtype float"):
        M.top_k_accuracy(LOGITS, LABELS.astype(np.float32), 2)
    with pytest.raises(ShapeError, match=r"binary_accuracy: .*\(32, 6\).*\(32, 1\)"):
        M.binary_accuracy(LOGITS, LABELS[:, None])
    with pytest.raises(ShapeError, match=r"accuracy: mask shape \(6,\)"):
        M.accuracy(LOGITS, LABELS, mask=np.ones(C, bool))

"""Splits, synthetic data sets and device prefetching (``nn_jax.data``)."""

import itertools

import jax
import numpy as np
import pytest

from nn_jax.data import (
    Split,
    Splits,
    make_classification,
    make_regression,
    prefetch_to_device,
    regression_target,
    split_dataset,
    with_validation,
)


def _ids(splits: Splits) -> list[np.ndarray]:
    return [part[0][:, 0] for part in splits]


# --- splits -----------------------------------------------------------------------------------


def test_split_dataset_parts_are_disjoint_cover_everything_and_keep_pairs():
    x = np.arange(100, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)
    y = np.arange(100, dtype=np.int32) * 10
    s = split_dataset(x, y, fractions=(0.7, 0.2, 0.1), seed=3)
    assert [len(p[0]) for p in s] == [70, 20, 10]
    ids = np.concatenate(_ids(s))
    assert sorted(ids.tolist()) == list(range(100))  # disjoint and covering
    for px, py in s:
        np.testing.assert_array_equal(py, px[:, 0] * 10)  # rows stay paired
        assert px.dtype == np.float32 and py.dtype == np.int32 and px.shape[1:] == (3,)


def test_split_dataset_is_reproducible_and_depends_on_the_seed():
    x, y = np.arange(50.0)[:, None], np.arange(50)
    a, b = split_dataset(x, y, seed=1), split_dataset(x, y, seed=1)
    c = split_dataset(x, y, seed=2)
    for pa, pb in zip(_ids(a), _ids(b), strict=True):
        np.testing.assert_array_equal(pa, pb)
    assert not np.array_equal(_ids(a)[0], _ids(c)[0])


def test_split_dataset_zero_share_gives_an_empty_part():
    s = split_dataset(np.zeros((10, 2)), np.zeros(10), fractions=(0.8, 0.0, 0.2))
    assert s.validation[0].shape == (0, 2) and s.validation[1].shape == (0,)
    assert len(s.train[0]) == 8 and len(s.test[0]) == 2


def test_stratified_split_keeps_class_proportions():
    y = np.repeat(np.arange(3), [60, 30, 10]).astype(np.int32)
    x = np.arange(100.0)[:, None]
    s = split_dataset(x, y, fractions=(0.6, 0.2, 0.2), seed=0, stratify=True)
    for (_, py), n in zip(s, (60, 20, 20), strict=True):
        expected = np.array([0.6, 0.3, 0.1]) * n
        assert np.all(np.abs(np.bincount(py, minlength=3) - expected) <= 1), np.bincount(py)
    assert sorted(np.concatenate(_ids(s)).tolist()) == list(range(100))


@pytest.mark.parametrize(
    ("fractions", "match"),
    [
        ((0.5, 0.5), "must be \\(train, validation, test\\)"),
        ((0.8, 0.1, 0.2), "sum to 1"),
        ((0.0, 0.5, 0.5), "train > 0"),
        ((0.9, -0.1, 0.2), ">= 0"),
    ],
)
def test_split_dataset_rejects_bad_fractions(fractions, match):
    with pytest.raises(ValueError, match=match):
        split_dataset(np.zeros((10, 1)), np.zeros(10), fractions=fractions)


def test_split_dataset_rejects_mismatched_lengths_and_too_few_examples():
    with pytest.raises(ValueError, match=r"share their leading axis.*\(5, 1\) and \(4,\)"):
        split_dataset(np.zeros((5, 1)), np.zeros(4))
    with pytest.raises(ValueError, match="leave no training example"):
        split_dataset(np.zeros((2, 1)), np.zeros(2), fractions=(0.1, 0.45, 0.45))


def test_with_validation_carves_from_train_and_keeps_test():
    base = Split(np.arange(40.0)[:, None], np.arange(40) % 2, np.full((7, 1), -1.0), np.ones(7))
    s = with_validation(base, fraction=0.25, seed=5, stratify=True)
    assert len(s.train[0]) == 30 and len(s.validation[0]) == 10
    assert sorted(np.concatenate([s.train[0][:, 0], s.validation[0][:, 0]])) == list(range(40))
    assert np.bincount(s.validation[1]).tolist() == [5, 5]
    np.testing.assert_array_equal(s.test[0], base.x_test)
    np.testing.assert_array_equal(s.test[1], base.y_test)
    again = with_validation(base, fraction=0.25, seed=5, stratify=True)
    np.testing.assert_array_equal(again.validation[0], s.validation[0])
    with pytest.raises(ValueError, match="fraction must be in \\[0, 1\\)"):
        with_validation(base, fraction=1.0)


# --- synthetic --------------------------------------------------------------------------------


def test_regression_target_is_the_documented_formula():
    x = np.array([[0.5, -0.25, 1.0], [-1.0, 0.0, 0.3]], np.float32)
    x0, x1, x2 = x.astype(np.float64).T
    expected = x0 - x1 / 2 + x2 / 3 + np.sin(np.pi * x0) + x0 * x2
    np.testing.assert_allclose(regression_target(x)[:, 0], expected, rtol=1e-6)
    one = np.array([[0.5]])
    np.testing.assert_allclose(regression_target(one), [[0.5 + 1.0 + 0.25]], rtol=1e-6)


def test_make_regression_without_noise_is_the_target_and_noise_has_its_std():
    x, y = make_regression(2000, 4, noise=0.0, seed=1)
    assert x.dtype == y.dtype == np.float32 and x.shape == (2000, 4) and y.shape == (2000, 1)
    assert x.min() >= -1 and x.max() <= 1
    np.testing.assert_array_equal(y, regression_target(x))
    x2, y2 = make_regression(2000, 4, noise=0.5, seed=1)
    np.testing.assert_array_equal(x2, x)  # noise does not change the inputs
    assert abs(np.std(y2 - regression_target(x2)) - 0.5) < 0.03
    a, b = make_regression(10, 2, seed=7), make_regression(10, 2, seed=7)
    np.testing.assert_array_equal(a[1], b[1])


def test_make_classification_points_lie_on_their_spiral_arm_without_noise():
    k = 4
    x, y = make_classification(400, features=5, classes=k, noise=0.0, seed=2)
    assert x.dtype == np.float32 and y.dtype == np.int32 and x.shape == (400, 5)
    assert np.bincount(y).tolist() == [100] * k
    t = np.hypot(x[:, 0], x[:, 1])  # r = t
    theta = 2 * np.pi * y / k + 4 * t
    np.testing.assert_allclose(x[:, 0], t * np.cos(theta), atol=1e-5)
    np.testing.assert_allclose(x[:, 1], t * np.sin(theta), atol=1e-5)
    assert abs(x[:, 2:].std() - 1) < 0.1  # distractors
    a, b = make_classification(20, seed=3), make_classification(20, seed=3)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_synthetic_generators_reject_bad_arguments():
    with pytest.raises(ValueError, match="make_regression: features must be a positive int"):
        make_regression(10, 0)
    with pytest.raises(ValueError, match="noise must be >= 0"):
        make_regression(10, 2, noise=-1.0)
    with pytest.raises(ValueError, match="features >= 2 and classes >= 2"):
        make_classification(10, features=1)


# --- prefetch ---------------------------------------------------------------------------------


def test_prefetch_preserves_order_values_and_structure_on_the_device():
    batches = [
        {"x": np.full((2, 3), i, np.float32), "y": (np.arange(2, dtype=np.int32) + i,)}
        for i in range(5)
    ]
    out = list(prefetch_to_device(iter(batches), size=2))
    assert len(out) == 5
    device = jax.devices()[0]
    for i, (got, want) in enumerate(zip(out, batches, strict=True)):
        assert jax.tree.structure(got) == jax.tree.structure(want)
        for leaf, ref in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
            assert isinstance(leaf, jax.Array) and leaf.devices() == {device}
            assert leaf.dtype == ref.dtype
            np.testing.assert_array_equal(np.asarray(leaf), ref)
        assert float(got["x"][0, 0]) == i


@pytest.mark.parametrize("size", [1, 3])
def test_prefetch_pulls_only_size_batches_ahead_of_an_infinite_generator(size):
    pulled = []

    def forever():
        for i in itertools.count():
            pulled.append(i)
            yield np.array([i], np.int32)

    it = prefetch_to_device(forever(), size=size)
    assert pulled == []  # nothing happens before the first next()
    for i in range(4):
        assert int(next(it)[0]) == i
        assert len(pulled) == i + 1 + size  # the current batch and `size` ahead


def test_prefetch_to_a_sharding_and_bad_size():
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    (got,) = prefetch_to_device([np.ones(4, np.float32)], sharding=sharding)
    assert got.sharding == sharding
    with pytest.raises(ValueError, match="size must be an int >= 1, given 0"):
        prefetch_to_device([], size=0)

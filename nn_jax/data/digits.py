"""scikit-learn's bundled 8x8 handwritten digits (1,797 images, shipped with the package)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from nn_jax.errors import ConfigError

__all__ = ["Split", "load_digits"]


class Split(NamedTuple):
    """Train and test arrays of a dataset."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def load_digits(*, test_fraction: float = 0.2, seed: int = 0, image: bool = False) -> Split:
    """The digits as float32 in ``[0, 1]`` with int32 labels, split by a seeded shuffle.

    Args:
        test_fraction: share of the 1,797 examples held out for testing.
        seed: seed of the split's permutation.
        image: return images ``(N, 8, 8, 1)`` (NHWC) instead of vectors ``(N, 64)``.
    """
    if (
        isinstance(test_fraction, bool)
        or not isinstance(test_fraction, int | float | np.integer | np.floating)
        or not 0 <= test_fraction < 1
    ):
        raise ConfigError(f"load_digits: test_fraction must be in [0, 1), given {test_fraction!r}")
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the digits dataset needs scikit-learn: pip install 'nn-jax[examples]'"
        ) from e
    bunch = sk_load_digits()
    x = (bunch.data / 16.0).astype(np.float32)
    y = bunch.target.astype(np.int32)
    if image:
        x = x.reshape(-1, 8, 8, 1)
    order = np.random.default_rng(seed).permutation(len(x))
    n_test = round(len(x) * test_fraction)
    test, train = order[:n_test], order[n_test:]
    return Split(x[train], y[train], x[test], y[test])

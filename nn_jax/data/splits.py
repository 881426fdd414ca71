"""Seeded train / validation / test splits of in-memory arrays.

:func:`split_dataset` cuts ``(x, y)`` into three parts; :func:`with_validation` carves a
validation set out of the training part of a :class:`~nn_jax.data.Split` (what the loaders
return), leaving its test set untouched. Both return :class:`Splits`, whose fields are
``(x, y)`` pairs, so ``x, y = splits.train`` and ``batches(splits.train, 32)`` both work.

The cut is a seeded permutation: the same ``seed`` gives the same parts, on every platform
(NumPy's ``default_rng``). With ``stratify=True`` each part keeps the class proportions of ``y``
(to within an example or two per class), which matters for small or unbalanced sets.

>>> import numpy as np
>>> x, y = np.arange(20.0).reshape(10, 2), np.arange(10) % 2
>>> s = split_dataset(x, y, fractions=(0.6, 0.2, 0.2), seed=0)
>>> [len(part[0]) for part in s]
[6, 2, 2]
>>> s.validation[0].shape, s.validation[1].shape
((2, 2), (2,))
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from nn_jax.data.digits import Split
from nn_jax.errors import ArgumentError, ConfigError, ShapeError

__all__ = ["Splits", "split_dataset", "with_validation"]


class Splits(NamedTuple):
    """Train, validation and test sets, each an ``(x, y)`` pair of arrays.

    Fields:
        train: ``(x, y)`` with ``x: (N_train, ...)`` and ``y: (N_train, ...)``.
        validation: ``(x, y)`` for model selection and early stopping.
        test: ``(x, y)`` held out until the end.
    """

    train: tuple[np.ndarray, np.ndarray]
    validation: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]


def split_dataset(
    x: Any,
    y: Any,
    *,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    stratify: bool = False,
) -> Splits:
    """Split ``(x, y)`` into train, validation and test sets by a seeded shuffle.

    The validation and test sizes are ``round(N * fraction)``; the training set gets the rest,
    so every example lands in exactly one part. Rows come in shuffled order.

    Args:
        x: ``(N, ...)`` inputs.
        y: ``(N, ...)`` targets.
        fractions: ``(train, validation, test)`` shares, each ``>= 0``, train ``> 0``, summing
            to 1. A zero share gives an empty part (``(0, ...)`` arrays).
        seed: seed of the permutation.
        stratify: keep each part's class proportions those of ``y`` (``y`` must be ``(N,)``
            labels).

    Returns:
        :class:`Splits` of NumPy arrays (copies; ``x`` and ``y`` keep their dtypes).
    """
    x, y = np.asarray(x), np.asarray(y)
    n = _check_lengths("split_dataset", x, y)
    _check_seed("split_dataset", seed)
    if (
        not isinstance(fractions, Sequence)
        or len(fractions) != 3
        or not all(_is_number(f) for f in fractions)
    ):
        raise ConfigError(
            f"split_dataset: fractions must be (train, validation, test), given {fractions!r}"
        )
    train, validation, test = (float(f) for f in fractions)
    if min(fractions) < 0 or train <= 0 or not math.isclose(train + validation + test, 1.0):
        raise ConfigError(
            "split_dataset: fractions must be >= 0 with train > 0 and sum to 1, given "
            f"{tuple(fractions)!r}"
        )
    n_val, n_test = round(n * validation), round(n * test)
    if n_val + n_test >= n:
        raise ConfigError(
            f"split_dataset: fractions {tuple(fractions)!r} of {n} examples leave no training "
            f"example ({n_val} validation, {n_test} test)"
        )
    order = _order("split_dataset", y, seed, stratify)
    test_idx, val_idx, train_idx = np.split(order, [n_test, n_test + n_val])
    return Splits(
        (x[train_idx], y[train_idx]), (x[val_idx], y[val_idx]), (x[test_idx], y[test_idx])
    )


def with_validation(
    split: Split, *, fraction: float = 0.1, seed: int = 0, stratify: bool = False
) -> Splits:
    """Carve a validation set out of ``split``'s training set; the test set stays as it is.

    >>> import numpy as np
    >>> s = Split(np.zeros((10, 3)), np.arange(10), np.ones((4, 3)), np.arange(4))
    >>> v = with_validation(s, fraction=0.2)
    >>> len(v.train[0]), len(v.validation[0]), len(v.test[0])
    (8, 2, 4)

    Args:
        split: train and test arrays, e.g. from :func:`~nn_jax.data.load_digits`.
        fraction: share of the *training* examples moved to validation
            (``round(N_train * fraction)`` of them), in ``[0, 1)``.
        seed: seed of the permutation (independent of the seed that made ``split``).
        stratify: keep the class proportions of ``y_train`` in both parts.

    Returns:
        :class:`Splits`; ``test`` is ``(split.x_test, split.y_test)`` unchanged.
    """
    if not _is_number(fraction) or not 0 <= fraction < 1:
        raise ConfigError(f"with_validation: fraction must be in [0, 1), given {fraction!r}")
    if not all(hasattr(split, f) for f in Split._fields):
        raise ArgumentError(
            "with_validation: split must be a Split(x_train, y_train, x_test, y_test), e.g. "
            f"from load_digits(), given a {type(split).__name__}; for (x, y) arrays use "
            "split_dataset(x, y)"
        )
    _check_seed("with_validation", seed)
    x, y = np.asarray(split.x_train), np.asarray(split.y_train)
    n = _check_lengths("with_validation", x, y)
    n_val = round(n * fraction)
    if n_val >= n:
        raise ConfigError(
            f"with_validation: fraction {fraction!r} of {n} training examples leaves none "
            "for training"
        )
    order = _order("with_validation", y, seed, stratify)
    val_idx, train_idx = order[:n_val], order[n_val:]
    return Splits(
        (x[train_idx], y[train_idx]),
        (x[val_idx], y[val_idx]),
        (np.asarray(split.x_test), np.asarray(split.y_test)),
    )


def _check_lengths(name: str, x: np.ndarray, y: np.ndarray) -> int:
    if x.ndim == 0 or y.ndim == 0 or len(x) != len(y):
        raise ShapeError(
            f"{name}: x and y must share their leading axis, given shapes {x.shape} and {y.shape}"
        )
    if len(x) == 0:
        raise ShapeError(f"{name}: there are no examples to split (x has shape {x.shape})")
    return len(x)


def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float | np.integer | np.floating)


def _check_seed(name: str, seed: Any) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ConfigError(f"{name}: seed must be an int >= 0, given {seed!r}")


def _order(name: str, y: np.ndarray, seed: int, stratify: bool) -> np.ndarray:
    """A seeded permutation of ``range(len(y))``; stratified, every prefix is class-balanced.

    Stratification: each example's rank within its class (in shuffled order), divided by the
    class size, is its position in ``[0, 1)``; sorting by that position interleaves the
    classes, so any prefix of length ``k`` holds about ``k * n_c / N`` examples of class
    ``c`` (to within one or two). Parts are prefixes (test, validation) and the remainder (train).
    """
    order = np.random.default_rng(seed).permutation(len(y))
    if not stratify:
        return order
    if y.ndim != 1:
        raise ShapeError(f"{name}: stratify needs (N,) class labels, given y of shape {y.shape}")
    _, labels = np.unique(y[order], return_inverse=True)
    counts = np.bincount(labels)
    rank = np.empty(len(y), np.int64)
    for c in range(len(counts)):
        rank[labels == c] = np.arange(counts[c])
    position = (rank + 0.5) / counts[labels]
    return order[np.argsort(position, kind="stable")]

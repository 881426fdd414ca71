"""Mini-batching of in-memory arrays (a pytree of arrays sharing their leading axis)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jax
import numpy as np

from nn_jax.core import PRNGKey, check_key, describe
from nn_jax.errors import ArgumentError, ConfigError, ShapeError

__all__ = ["batches"]


def batches(
    data: Any,
    batch_size: int,
    *,
    key: PRNGKey | None = None,
    drop_remainder: bool = True,
) -> Iterator[Any]:
    """Yield mini-batches of ``data`` (arrays with a common leading axis, in any pytree).

    Shuffled with ``key`` when given (a permutation per call), in order otherwise. With
    ``drop_remainder`` every batch has ``batch_size`` rows, so a jitted step compiles once.

    Raises:
        ArgumentError: ``data`` holds no arrays.
        ShapeError: the arrays do not share their leading axis (or have none).
        ConfigError: ``batch_size`` is not an int in ``1..N``.
        RngError: ``key`` is not a PRNG key.
    """
    leaves = jax.tree.leaves(data)
    if not leaves:
        raise ArgumentError(f"batches: data must hold arrays, given {describe(data)}")
    if any(np.ndim(leaf) == 0 for leaf in leaves):
        raise ShapeError(
            f"batches: every array needs a leading example axis, given shapes "
            f"{[np.shape(a) for a in leaves]}"
        )
    n = len(leaves[0])
    if any(len(leaf) != n for leaf in leaves):
        raise ShapeError(
            f"batches: all arrays must share their leading axis, given {[len(a) for a in leaves]}"
        )
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, int | np.integer)
        or batch_size <= 0
        or (drop_remainder and batch_size > n)
    ):
        raise ConfigError(
            f"batches: batch_size must be an int in 1..{n} (the number of examples), given "
            f"{describe(batch_size)}"
        )
    check_key(key, "batches", optional=True)
    return _batches(data, n, int(batch_size), key, drop_remainder)


def _batches(
    data: Any, n: int, batch_size: int, key: PRNGKey | None, drop_remainder: bool
) -> Iterator[Any]:
    order = np.asarray(jax.random.permutation(key, n)) if key is not None else np.arange(n)
    stop = n - n % batch_size if drop_remainder else n
    for start in range(0, stop, batch_size):
        idx = order[start : start + batch_size]
        yield jax.tree.map(lambda a, idx=idx: np.asarray(a)[idx], data)

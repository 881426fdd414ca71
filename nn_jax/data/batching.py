"""Mini-batching of in-memory arrays (a pytree of arrays sharing their leading axis)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jax
import numpy as np

from nn_jax.core import PRNGKey

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
    """
    leaves = jax.tree.leaves(data)
    n = len(leaves[0])
    if any(len(leaf) != n for leaf in leaves):
        raise ValueError(
            f"all arrays must share their leading axis, given {[len(a) for a in leaves]}"
        )
    if batch_size <= 0 or (drop_remainder and batch_size > n):
        raise ValueError(
            f"batch_size must be in 1..{n} (the number of examples), given {batch_size}"
        )
    order = np.asarray(jax.random.permutation(key, n)) if key is not None else np.arange(n)
    stop = n - n % batch_size if drop_remainder else n
    for start in range(0, stop, batch_size):
        idx = order[start : start + batch_size]
        yield jax.tree.map(lambda a, idx=idx: np.asarray(a)[idx], data)

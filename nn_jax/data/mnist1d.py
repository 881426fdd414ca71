"""MNIST-1D (Greydanus, 2020), generated locally with the ``mnist1d`` package (no download).

Ten 1-D templates (one per digit) are padded, scaled, translated, sheared, given correlated and
i.i.d. noise and resampled to 40 points. The package's defaults reproduce the published
dataset's recipe (5,000 examples, seed 42). Generation takes well under a second.
"""

from __future__ import annotations

import random

import numpy as np

from nn_jax.data.digits import Split
from nn_jax.errors import ConfigError

__all__ = ["load_mnist1d"]


def load_mnist1d(
    *,
    num_samples: int = 5000,
    test_fraction: float = 0.2,
    seed: int = 42,
    sequence: bool = False,
) -> Split:
    """Generate MNIST-1D: float32 signals of 40 steps with int32 labels 0-9.

    Args:
        num_samples: total examples (a multiple of 10 keeps the classes balanced; the
            published set has 5,000).
        test_fraction: share held out for testing (the last examples of the shuffled set).
        seed: generation seed (42 is the published set's).
        sequence: return ``(N, 40, 1)`` sequences (one feature per step, for RNNs) instead of
            ``(N, 40)`` vectors.

    The global ``random``/``numpy.random`` states, which the package reseeds, are restored.
    """
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "MNIST-1D needs the mnist1d package: pip install 'nn-jax[examples]'"
        ) from e
    if (
        isinstance(num_samples, bool)
        or not isinstance(num_samples, int | np.integer)
        or num_samples < 10
    ):
        raise ConfigError(f"load_mnist1d: num_samples must be an int >= 10, given {num_samples!r}")
    if (
        isinstance(test_fraction, bool)
        or not isinstance(test_fraction, int | float | np.integer | np.floating)
        or not 0 < test_fraction < 1
    ):
        raise ConfigError(f"load_mnist1d: test_fraction must be in (0, 1), given {test_fraction!r}")
    args = get_dataset_args()
    num_samples = int(num_samples)
    args.num_samples, args.train_split, args.seed = num_samples, 1 - test_fraction, seed
    saved = random.getstate(), np.random.get_state()
    try:
        data = make_dataset(args)
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])
    arrays = [np.asarray(data[k], np.float32) for k in ("x", "x_test")]
    if sequence:
        arrays = [a[..., None] for a in arrays]
    labels = [np.asarray(data[k], np.int32) for k in ("y", "y_test")]
    return Split(arrays[0], labels[0], arrays[1], labels[1])

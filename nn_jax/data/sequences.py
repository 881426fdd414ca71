"""Synthetic sequence tasks for recurrent and attention models: copy, reverse, adding problem.

Every generator is deterministic given ``seed`` and returns NumPy arrays ``(inputs, targets)``.
"""

from __future__ import annotations

import numpy as np

from nn_jax.errors import ConfigError

__all__ = ["adding_problem", "copy_task", "reverse_task"]


def _check(name: str, **values: int) -> None:
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value <= 0:
            raise ConfigError(f"{name}: {key} must be a positive int, given {value!r}")


def reverse_task(
    num_examples: int, length: int, vocab_size: int, *, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Random token sequences and their reversals.

    Args:
        num_examples: ``N``.
        length: ``L`` tokens per sequence.
        vocab_size: tokens are drawn uniformly from ``[0, vocab_size)``.
        seed: NumPy seed.

    Returns:
        ``x: (N, L)`` int32 and ``y = x[:, ::-1]``.
    """
    _check("reverse_task", num_examples=num_examples, length=length, vocab_size=vocab_size)
    x = np.random.default_rng(seed).integers(0, vocab_size, (num_examples, length), np.int32)
    return x, np.ascontiguousarray(x[:, ::-1])


def copy_task(
    num_examples: int, length: int, num_symbols: int, *, delay: int = 10, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """The copy-memory task (Hochreiter & Schmidhuber, 1997; Arjovsky et al., 2016).

    Token 0 is *blank*, token 1 the *delimiter*, tokens ``2 .. num_symbols + 1`` the symbols.
    The input shows ``length`` symbols, then ``delay`` blanks, then the delimiter followed by
    ``length - 1`` blanks; the target is blank everywhere except the last ``length`` steps,
    which repeat the symbols in order (the first one at the delimiter)::

        x = s_1 .. s_L  0 .. 0 (delay)  1  0 .. 0 (L - 1)
        y = 0 .. 0 (L + delay)             s_1 .. s_L

    Guessing blanks and then random symbols gives a cross-entropy of
    ``L log(num_symbols) / (2L + delay)`` per step.

    Args:
        num_examples: ``N``.
        length: ``L`` symbols to remember.
        num_symbols: alphabet size (the vocabulary is ``num_symbols + 2``).
        delay: blanks between the symbols and the delimiter (``>= 0``).
        seed: NumPy seed.

    Returns:
        ``x, y: (N, 2L + delay)`` int32.
    """
    _check("copy_task", num_examples=num_examples, length=length, num_symbols=num_symbols)
    if isinstance(delay, bool) or not isinstance(delay, int | np.integer) or delay < 0:
        raise ConfigError(f"copy_task: delay must be an int >= 0, given {delay!r}")
    rng = np.random.default_rng(seed)
    symbols = rng.integers(2, num_symbols + 2, (num_examples, length), np.int32)
    total = 2 * length + delay
    x = np.zeros((num_examples, total), np.int32)
    y = np.zeros((num_examples, total), np.int32)
    x[:, :length] = symbols
    x[:, length + delay] = 1
    y[:, length + delay :] = symbols
    return x, y


def adding_problem(
    num_examples: int, length: int, *, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """The adding problem (Hochreiter & Schmidhuber, 1997; Le et al., 2015).

    Each step has two features: a value uniform on ``[0, 1)`` and a marker that is 1 at exactly
    two steps, one in each half of the sequence, and 0 elsewhere. The target is the sum of the
    two marked values. Predicting the constant 1 gives the variance of a sum of two uniforms,
    ``MSE = 1/6 ≈ 0.167``: the baseline a model must beat.

    Args:
        num_examples: ``N``.
        length: ``T >= 2`` steps.
        seed: NumPy seed.

    Returns:
        ``x: (N, T, 2)`` float32 (values, markers) and ``y: (N, 1)`` float32.
    """
    _check("adding_problem", num_examples=num_examples, length=length)
    if length < 2:
        raise ConfigError(f"adding_problem: length must be >= 2, given {length}")
    rng = np.random.default_rng(seed)
    values = rng.random((num_examples, length))
    half = length // 2
    first = rng.integers(0, half, num_examples)
    second = rng.integers(half, length, num_examples)
    markers = np.zeros((num_examples, length))
    rows = np.arange(num_examples)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    x = np.stack([values, markers], axis=-1).astype(np.float32)
    y = (values[rows, first] + values[rows, second]).astype(np.float32)[:, None]
    return x, y

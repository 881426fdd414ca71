"""Synthetic regression and classification sets with a known generating formula.

Deterministic given ``seed`` (NumPy's ``default_rng``); float32 inputs, float32 regression
targets and int32 class labels. Small enough to train on in seconds, hard enough that a linear
model does not solve them: the regression target has a sine and a product term, the classes are
interleaved spirals.

>>> x, y = make_regression(100, 3, noise=0.0)
>>> x.shape, y.shape, x.dtype, y.dtype
((100, 3), (100, 1), dtype('float32'), dtype('float32'))
>>> bool(np.allclose(y, regression_target(x), atol=1e-6))
True
>>> x, y = make_classification(90, classes=3)
>>> x.shape, np.bincount(y).tolist()
((90, 2), [30, 30, 30])
"""

from __future__ import annotations

import numpy as np

from nn_jax.errors import ConfigError, ShapeError

__all__ = ["make_classification", "make_regression", "regression_target"]

_TURN = 4.0  # radians an arm of make_classification turns from its centre to its end


def _check(name: str, **values: int) -> None:
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value <= 0:
            raise ConfigError(f"{name}: {key} must be a positive int, given {value!r}")


def _check_noise(name: str, noise: float) -> None:
    if (
        isinstance(noise, bool)
        or not isinstance(noise, int | float | np.integer | np.floating)
        or not noise >= 0  # also rejects NaN
    ):
        raise ConfigError(f"{name}: noise must be >= 0, given {noise!r}")


def regression_target(x: np.ndarray) -> np.ndarray:
    """The noise-free target of :func:`make_regression`: a linear part plus two nonlinear terms.

    .. math::

        f(x) = \\sum_{j=0}^{F-1} \\frac{(-1)^j}{j+1} x_j + \\sin(\\pi x_0) + x_0 x_{F-1}

    (with ``F = 1`` the product is ``x_0^2``). The linear weights ``1, -1/2, 1/3, ...`` make
    later features matter less; the best linear fit leaves the sine and the product unexplained.

    Args:
        x: ``(N, F)`` inputs, ``F >= 1``.

    Returns:
        ``(N, 1)`` float32 targets.
    """
    x = np.asarray(x, np.float64)
    if x.ndim != 2 or x.shape[1] == 0:
        raise ShapeError(f"regression_target: x must have shape (N, F >= 1), given {x.shape}")
    features = x.shape[1]
    w = np.array([(-1.0) ** j / (j + 1) for j in range(features)])
    f = x @ w + np.sin(np.pi * x[:, 0]) + x[:, 0] * x[:, -1]
    return f.astype(np.float32)[:, None]


def make_regression(
    num_examples: int, features: int, *, noise: float = 0.1, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Inputs uniform on ``[-1, 1]^F`` and targets ``y = f(x) + noise * eps``.

    ``f`` is :func:`regression_target` and ``eps ~ N(0, 1)``, so the best possible mean squared
    error (the Bayes error) is ``noise ** 2``: a model whose validation MSE goes below that is
    measuring luck, one well above it is underfitting.

    Args:
        num_examples: ``N``.
        features: ``F >= 1``.
        noise: standard deviation of the additive Gaussian noise (``>= 0``).
        seed: NumPy seed.

    Returns:
        ``x: (N, F)`` float32 and ``y: (N, 1)`` float32.
    """
    _check("make_regression", num_examples=num_examples, features=features)
    _check_noise("make_regression", noise)
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.0, 1.0, (num_examples, features)).astype(np.float32)
    eps = rng.standard_normal((num_examples, 1))
    y = (regression_target(x) + noise * eps).astype(np.float32)
    return x, y


def make_classification(
    num_examples: int,
    features: int = 2,
    classes: int = 3,
    *,
    noise: float = 0.05,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Interleaved spirals: ``classes`` arms in the plane of the first two features.

    An example of class ``k`` has a position ``t ~ U[0, 1)`` along its arm, and

    .. math::

        r = t, \\quad \\theta = \\frac{2 \\pi k}{K} + 4 t, \\quad
        (x_0, x_1) = (r \\cos\\theta, r \\sin\\theta) + \\text{noise} \\cdot \\epsilon

    with ``eps ~ N(0, I_2)`` (each arm turns 4 radians). Features
    ``2 .. F-1`` are i.i.d. ``N(0, 1)`` distractors that carry no information about the label.
    Labels are balanced (class sizes differ by at most one) and in random order. No line
    separates two arms: a linear classifier stays near chance, a small MLP reaches ~100%.

    Args:
        num_examples: ``N``.
        features: ``F >= 2``.
        classes: ``K >= 2``.
        noise: standard deviation of the Gaussian noise on ``(x_0, x_1)`` (``>= 0``).
        seed: NumPy seed.

    Returns:
        ``x: (N, F)`` float32 and ``y: (N,)`` int32 in ``[0, K)``.
    """
    _check("make_classification", num_examples=num_examples, features=features, classes=classes)
    _check_noise("make_classification", noise)
    if features < 2 or classes < 2:
        raise ConfigError(
            f"make_classification: needs features >= 2 and classes >= 2, given "
            f"features={features}, classes={classes}"
        )
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(num_examples) % classes).astype(np.int32)
    t = rng.random(num_examples)
    theta = 2 * np.pi * y / classes + _TURN * t
    x = np.empty((num_examples, features))
    x[:, 0] = t * np.cos(theta)
    x[:, 1] = t * np.sin(theta)
    x[:, :2] += noise * rng.standard_normal((num_examples, 2))
    x[:, 2:] = rng.standard_normal((num_examples, features - 2))
    return x.astype(np.float32), y

"""Upsample against NumPy: nearest repeats, bilinear interpolates with half-pixel centres."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nn_jax.errors import ConfigError, ShapeError
from nn_jax.resize import Upsample


def _np_linear_1d(x, axis, scale):
    """align_corners=False: output i samples (i + 0.5) / scale - 0.5, clamped to the edges."""
    n = x.shape[axis]
    out = int(np.floor(n * scale))
    src = np.clip((np.arange(out) + 0.5) / scale - 0.5, 0, n - 1)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, n - 1)
    frac = src - lo
    shape = [1] * x.ndim
    shape[axis] = out
    frac = frac.reshape(shape)
    return np.take(x, lo, axis=axis) * (1 - frac) + np.take(x, hi, axis=axis) * frac


@pytest.mark.parametrize("scale", [(2,), (2, 3), (3, 1, 2)])
def test_nearest_repeats_each_element(scale):
    shape = (2, *(3, 2, 4)[: len(scale)], 3)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    expected = x
    for axis, s in enumerate(scale, start=1):
        expected = np.repeat(expected, s, axis=axis)
    np.testing.assert_array_equal(Upsample(scale)({}, x), expected)


@pytest.mark.parametrize("scale", [(2, 2), (3, 2), (1.5, 2)])
def test_bilinear_matches_half_pixel_interpolation(scale):
    x = np.random.default_rng(1).standard_normal((2, 4, 5, 3))
    expected = _np_linear_1d(_np_linear_1d(x, 1, scale[0]), 2, scale[1])
    with jax.enable_x64(True):
        y = Upsample(scale, method="bilinear")({}, x)
    np.testing.assert_allclose(np.asarray(y), expected, rtol=1e-10, atol=1e-10)


def test_channels_first_and_integer_inputs():
    x = np.arange(12, dtype=np.int32).reshape(1, 3, 2, 2)
    y = Upsample((2, 2), data_format="channels_first")({}, x)
    assert y.shape == (1, 3, 4, 4) and y.dtype == jnp.float32
    np.testing.assert_array_equal(y[0, 1], np.repeat(np.repeat(x[0, 1], 2, 0), 2, 1))


def test_errors():
    with pytest.raises(ConfigError, match=r"scale must be a number >= 1 .*given 0.5"):
        Upsample(0.5)
    with pytest.raises(ConfigError, match=r"to downsample use AvgPool"):
        Upsample((0.5, 0.5))
    with pytest.raises(ConfigError, match=r"or a tuple of 1 to 3 such numbers"):
        Upsample((2, 2, 2, 2))
    with pytest.raises(ConfigError, match=r"method must be one of"):
        Upsample((2, 2), method="area")
    with pytest.raises(ShapeError, match=r"Upsample at <root>: input must have rank >= 3"):
        Upsample((2, 2))({}, jnp.zeros((4, 4)))


@pytest.mark.parametrize("method", ["nearest", "bilinear"])
def test_number_scale_is_the_same_on_every_spatial_axis(method):
    """Upsample(2) on (N, *spatial, C) is Upsample((2,) * n) with n = x.ndim - 2."""
    for shape in [(2, 3, 2), (1, 3, 2, 2), (1, 2, 3, 2, 1)]:
        x = np.random.default_rng(len(shape)).standard_normal(shape).astype(np.float32)
        n = len(shape) - 2
        y = Upsample(2, method=method)({}, x)
        np.testing.assert_array_equal(y, Upsample((2,) * n, method=method)({}, x))
        assert y.shape == (shape[0], *(2 * d for d in shape[1:-1]), shape[-1])
    assert Upsample(1.5).init(jax.random.key(0), jnp.zeros((1, 2, 2, 1))) == ({}, {})

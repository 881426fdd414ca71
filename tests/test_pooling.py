"""Pooling against direct NumPy loops: max, average (padding counted or not), global, adaptive."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nn_jax.combinators import Sequential
from nn_jax.errors import ConfigError, ShapeError
from nn_jax.pooling import AdaptiveAvgPool, AvgPool, GlobalAvgPool, GlobalMaxPool, MaxPool

KEY = jax.random.key(0)


def _pads(padding, sizes, window, strides):
    if padding == "VALID":
        return [(0, 0)] * len(sizes)
    if padding == "SAME":
        pads = []
        for n, k, s in zip(sizes, window, strides, strict=True):
            total = max((-(-n // s) - 1) * s + k - n, 0)
            pads.append((total // 2, total - total // 2))
        return pads
    if isinstance(padding, int):
        return [(padding, padding)] * len(sizes)
    return [(p, p) if isinstance(p, int) else p for p in padding]


def np_pool(x, kind, window, strides, padding, count_include_pad=True):
    """Loop over output positions of a (B, *spatial, C) input; padding is outside the input."""
    n = len(window)
    sizes = x.shape[1:-1]
    pads = _pads(padding, sizes, window, strides)
    out = [(sizes[i] + sum(pads[i]) - window[i]) // strides[i] + 1 for i in range(n)]
    y = np.zeros((x.shape[0], *out, x.shape[-1]))
    for o in itertools.product(*map(range, out)):
        start = [o[i] * strides[i] - pads[i][0] for i in range(n)]
        lo = [max(s, 0) for s in start]
        hi = [min(s + w, size) for s, w, size in zip(start, window, sizes, strict=True)]
        patch = x[(slice(None), *[slice(a, b) for a, b in zip(lo, hi, strict=True)])]
        patch = patch.reshape(x.shape[0], -1, x.shape[-1])
        if kind == "max":
            y[(slice(None), *o)] = patch.max(axis=1)
        else:
            divisor = np.prod(window) if count_include_pad else patch.shape[1]
            y[(slice(None), *o)] = patch.sum(axis=1) / divisor
    return y


# (window, strides, padding, input shape (B, *spatial, C))
GRID = {
    "1d_w2": ((2,), None, "VALID", (2, 8, 3)),
    "1d_w3_s2_same": ((3,), 2, "SAME", (2, 7, 2)),
    "1d_w3_s1_pad1": ((3,), 1, 1, (1, 5, 2)),
    "1d_w4_s3_pair": ((4,), 3, ((2, 1),), (2, 9, 1)),
    "2d_w2": ((2, 2), None, "VALID", (2, 6, 4, 3)),
    "2d_w3_s2_same": ((3, 3), 2, "SAME", (1, 7, 6, 2)),
    "2d_w3x2_s1x2_pad": ((3, 2), (1, 2), (1, 0), (2, 5, 6, 2)),
    "2d_w2_s1_overlap": ((2, 2), 1, "VALID", (1, 4, 5, 2)),
    "2d_w3_s3_same_odd": ((3, 3), 3, "SAME", (1, 8, 7, 1)),
    "3d_w2": ((2, 2, 2), None, "VALID", (1, 4, 4, 4, 2)),
    "3d_w2_s1_pad1": ((2, 2, 2), 1, 1, (1, 3, 2, 3, 1)),
    "3d_w3x1x2_same": ((3, 1, 2), (2, 1, 2), "SAME", (2, 5, 3, 4, 2)),
}


@pytest.mark.parametrize("kind", ["max", "avg_include_pad", "avg_exclude_pad"])
@pytest.mark.parametrize("name", sorted(GRID))
def test_pool_matches_numpy_loop(name, kind):
    window, strides, padding, shape = GRID[name]
    x = np.random.default_rng(len(name)).standard_normal(shape)
    if kind == "max":
        layer = MaxPool(window, strides=strides, padding=padding)
    else:
        layer = AvgPool(
            window, strides=strides, padding=padding, count_include_pad=kind == "avg_include_pad"
        )
    with jax.enable_x64(True):
        y = layer({}, x)
    expected = np_pool(
        x,
        kind[:3],
        window,
        layer.strides,
        padding,
        count_include_pad=kind == "avg_include_pad",
    )
    assert y.shape == expected.shape
    np.testing.assert_allclose(np.asarray(y), expected, rtol=1e-12, atol=1e-12)


def test_default_strides_equal_window_and_max_ignores_padding():
    assert MaxPool((3, 2)).strides == (3, 2)
    x = -np.ones((1, 2, 2, 1), np.float32)  # all negative: zero padding would win a max
    np.testing.assert_array_equal(
        MaxPool((3, 3), strides=1, padding=1)({}, x), -np.ones((1, 2, 2, 1))
    )


def test_avg_pool_padding_counted_or_not_closed_form():
    x = np.ones((1, 3, 1), np.float32)
    incl = AvgPool((3,), strides=1, padding=1)({}, x)
    excl = AvgPool((3,), strides=1, padding=1, count_include_pad=False)({}, x)
    np.testing.assert_allclose(incl[0, :, 0], [2 / 3, 1, 2 / 3])
    np.testing.assert_allclose(excl[0, :, 0], [1, 1, 1])


@pytest.mark.parametrize("cls", [MaxPool, AvgPool])
def test_channels_first_and_unbatched(cls):
    x = np.random.default_rng(0).standard_normal((2, 6, 5, 3)).astype(np.float32)
    last = cls((2, 2), strides=1, padding="SAME")
    first = cls((2, 2), strides=1, padding="SAME", data_format="channels_first")
    np.testing.assert_allclose(
        first({}, x.transpose(0, 3, 1, 2)), np.asarray(last({}, x)).transpose(0, 3, 1, 2)
    )
    np.testing.assert_allclose(last({}, x[0]), last({}, x)[0])


@pytest.mark.parametrize("spatial_dims", [1, 2, 3])
def test_global_pools_match_numpy(spatial_dims):
    shape = (2, *(3, 4, 2)[:spatial_dims], 5)
    x = np.random.default_rng(spatial_dims).standard_normal(shape).astype(np.float32)
    axes = tuple(range(1, 1 + spatial_dims))
    np.testing.assert_allclose(GlobalAvgPool(spatial_dims)({}, x), x.mean(axes), rtol=1e-6)
    np.testing.assert_array_equal(GlobalMaxPool(spatial_dims)({}, x), x.max(axes))
    kept = GlobalAvgPool(spatial_dims, keepdims=True)({}, x)
    assert kept.shape == (2, *([1] * spatial_dims), 5)
    first = GlobalMaxPool(spatial_dims, data_format="channels_first")
    np.testing.assert_array_equal(first({}, np.moveaxis(x, -1, 1)), x.max(axes))


def np_adaptive(x, out, reduce=np.mean):
    """PyTorch's nn.AdaptiveAvgPoolNd (``reduce=np.max``: AdaptiveMaxPoolNd): bin i of o over
    n inputs is [floor(i*n/o), ceil((i+1)*n/o))."""
    sizes = x.shape[1:-1]
    bins = [
        [(int(np.floor(i * n / o)), int(np.ceil((i + 1) * n / o))) for i in range(o)]
        for n, o in zip(sizes, out, strict=True)
    ]
    y = np.zeros((x.shape[0], *out, x.shape[-1]))
    for idx in itertools.product(*map(range, out)):
        region = tuple(slice(*bins[a][i]) for a, i in enumerate(idx))
        patch = x[(slice(None), *region)].reshape(x.shape[0], -1, x.shape[-1])
        y[(slice(None), *idx)] = reduce(patch, axis=1)
    return y


@pytest.mark.parametrize(
    ("shape", "out"),
    [
        ((2, 8, 3), (4,)),
        ((2, 7, 2), (3,)),
        ((1, 3, 2), (5,)),
        ((2, 7, 5, 2), (3, 2)),
        ((1, 6, 6, 1), (1, 1)),
        ((1, 5, 4, 3, 2), (2, 3, 2)),
    ],
)
def test_adaptive_avg_pool_matches_pytorch_bins(shape, out):
    x = np.random.default_rng(0).standard_normal(shape)
    with jax.enable_x64(True):
        y = AdaptiveAvgPool(out)({}, x)
    np.testing.assert_allclose(np.asarray(y), np_adaptive(x, out), rtol=1e-12, atol=1e-12)


def test_errors_name_layer_path_expected_and_given():
    model = Sequential({"pool": MaxPool((2, 2))})
    with pytest.raises(
        ShapeError, match=r"MaxPool at 'pool': input must have rank >= 3.*given rank 2"
    ):
        model({}, jnp.zeros((4, 4)))
    with pytest.raises(
        ShapeError,
        match=r"AvgPool at <root>: spatial input size \(1, 4\) gives an empty output \(0, 2\)",
    ):
        AvgPool((2, 2))({}, jnp.zeros((1, 1, 4, 2)))
    with pytest.raises(ConfigError, match=r"MaxPool: window must be an int >= 1 .*given 0"):
        MaxPool(0)
    with pytest.raises(ConfigError, match=r"MaxPool: the options disagree on the number"):
        MaxPool((2, 2), strides=(1, 1, 1))
    with pytest.raises(
        ConfigError, match=r"GlobalAvgPool: spatial_dims must be 1, 2 or 3, given 4"
    ):
        GlobalAvgPool(4)
    with pytest.raises(ConfigError, match=r"AdaptiveAvgPool: output_size must be an int >= 1"):
        AdaptiveAvgPool((2, 2, 2, 2))
    with pytest.raises(
        ShapeError,
        match=r"AvgPool at 'pool': window=2 is the same on every spatial axis.*given rank 2",
    ):
        Sequential({"pool": AvgPool(2)})({}, jnp.zeros((4, 4)))


@pytest.mark.parametrize(
    ("make", "shape"),
    [
        (lambda w: MaxPool(w), (2, 6, 3)),
        (lambda w: MaxPool(w, strides=1, padding="SAME"), (1, 5, 4, 2)),
        (lambda w: AvgPool(w, padding=1, count_include_pad=False), (1, 4, 5, 3, 2)),
        (lambda w: AdaptiveAvgPool(w), (2, 7, 5, 1)),
    ],
)
def test_int_sizes_equal_the_tuple_form_at_the_input_rank(make, shape):
    """MaxPool(2) on (N, *spatial, C) is MaxPool((2,) * n) with n = x.ndim - 2."""
    x = np.random.default_rng(len(shape)).standard_normal(shape).astype(np.float32)
    n = len(shape) - 2
    np.testing.assert_array_equal(make(2)({}, x), make((2,) * n)({}, x))


def test_pools_are_parameter_free_and_int_windows_keep_strides():
    assert MaxPool(2).init(KEY, jnp.zeros((1, 4, 4, 1))) == ({}, {})
    assert MaxPool(3).strides == 3 and MaxPool(3, strides=(1, 2)).window == (3, 3)

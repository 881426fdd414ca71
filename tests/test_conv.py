"""Conv and ConvTranspose against direct NumPy loops; the adjoint identity; layouts; errors."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nn_jax.combinators import Sequential
from nn_jax.conv import Conv, ConvTranspose
from nn_jax.errors import ConfigError, ParamsError, ShapeError

KEY = jax.random.key(0)


# --------------------------------------------------------------------------------------------
# Independent references (PyTorch's definitions, written as loops).


def _pads(padding, sizes, eff_k, strides):
    """Explicit (lo, hi) pairs, from the definitions: SAME gives ceil(n / s) outputs."""
    n = len(sizes)
    if padding == "VALID":
        return [(0, 0)] * n
    if padding == "CAUSAL":
        return [(k - 1, 0) for k in eff_k]
    if padding == "SAME":
        pads = []
        for size, k, s in zip(sizes, eff_k, strides, strict=True):
            out = -(-size // s)
            total = max((out - 1) * s + k - size, 0)
            pads.append((total // 2, total - total // 2))
        return pads
    if isinstance(padding, int):
        return [(padding, padding)] * n
    return [(p, p) if isinstance(p, int) else tuple(p) for p in padding]


def _tup(v, n):
    return (v,) * n if isinstance(v, int) else tuple(v)


def np_conv(x, w, *, strides, padding, lhs_dil, rhs_dil, groups):
    """y[b, o, f] = sum_{k, c} xpad[b, o*s + k*d, group(f)*Cg + c] * w[k, c, f]."""
    n = x.ndim - 2
    batch, size, channels = x.shape[0], x.shape[1:-1], x.shape[-1]
    dilated = [(s - 1) * d + 1 for s, d in zip(size, lhs_dil, strict=True)]
    xd = np.zeros((batch, *dilated, channels))
    xd[(slice(None), *[slice(None, None, d) for d in lhs_dil], slice(None))] = x
    kernel, cg, features = w.shape[:n], w.shape[-2], w.shape[-1]
    eff_k = [(k - 1) * d + 1 for k, d in zip(kernel, rhs_dil, strict=True)]
    xp = np.pad(xd, [(0, 0), *_pads(padding, dilated, eff_k, strides), (0, 0)])
    out = [(xp.shape[1 + i] - eff_k[i]) // strides[i] + 1 for i in range(n)]
    fg = features // groups
    y = np.zeros((batch, *out, features))
    for o in itertools.product(*map(range, out)):
        for k in itertools.product(*map(range, kernel)):
            pos = tuple(o[i] * strides[i] + k[i] * rhs_dil[i] for i in range(n))
            patch = xp[(slice(None), *pos)]
            for g in range(groups):
                y[(slice(None), *o, slice(g * fg, (g + 1) * fg))] += (
                    patch[:, g * cg : (g + 1) * cg]
                    @ w[(*k, slice(None), slice(g * fg, (g + 1) * fg))]
                )
    return y


def np_conv_transpose(y, w, *, strides, padding, rhs_dil, groups, out_size):
    """Scatter form: out[b, i*s + k*d - lo, f] += y[b, i, c] * w[k, f_local, c] within a group."""
    n = y.ndim - 2
    batch, size, channels = y.shape[0], y.shape[1:-1], y.shape[-1]
    kernel, fg = w.shape[:n], w.shape[-2]
    eff_k = [(k - 1) * d + 1 for k, d in zip(kernel, rhs_dil, strict=True)]
    lo = [p[0] for p in _pads(padding, out_size, eff_k, strides)]
    cg = channels // groups
    out = np.zeros((batch, *out_size, fg * groups))
    for i in itertools.product(*map(range, size)):
        for k in itertools.product(*map(range, kernel)):
            o = tuple(i[a] * strides[a] + k[a] * rhs_dil[a] - lo[a] for a in range(n))
            if not all(0 <= o[a] < out_size[a] for a in range(n)):
                continue
            for g in range(groups):
                contrib = (
                    y[(slice(None), *i, slice(g * cg, (g + 1) * cg))]
                    @ w[(*k, slice(None), slice(g * cg, (g + 1) * cg))].T
                )
                out[(slice(None), *o, slice(g * fg, (g + 1) * fg))] += contrib
    return out


# --------------------------------------------------------------------------------------------
# The grid: (features, kernel_size, options, input shape (B, *spatial, C)).

CONV_GRID = {
    "1d_same": (3, (3,), {}, (2, 7, 2)),
    "1d_valid_s2": (4, (3,), {"strides": 2, "padding": "VALID"}, (2, 9, 3)),
    "1d_same_even_kernel_s2": (2, (4,), {"strides": 2}, (1, 10, 2)),
    "1d_causal_dilated": (3, (3,), {"padding": "CAUSAL", "kernel_dilation": 2}, (2, 8, 2)),
    "1d_causal_s2": (2, (3,), {"padding": "causal", "strides": 2}, (1, 9, 3)),
    "1d_explicit_pair": (2, (2,), {"padding": ((2, 1),)}, (2, 5, 3)),
    "1d_groups": (4, (3,), {"feature_group_count": 2, "padding": 1}, (2, 6, 4)),
    "1d_depthwise": (8, (3,), {"feature_group_count": 4}, (1, 6, 4)),
    "1d_lhs_dilation": (3, (3,), {"input_dilation": 2, "padding": 1}, (2, 5, 2)),
    "1d_lhs_rhs_dilation_s2": (
        2,
        (3,),
        {"input_dilation": 2, "kernel_dilation": 2, "strides": 2, "padding": "VALID"},
        (1, 8, 2),
    ),
    "1d_lhs_dilation_same": (2, (2,), {"input_dilation": 3, "padding": "SAME"}, (1, 4, 1)),
    "1d_no_bias": (3, (1,), {"use_bias": False}, (2, 4, 5)),
    "2d_same": (4, (3, 3), {}, (2, 6, 5, 3)),
    "2d_valid_asym_stride": (3, (3, 2), {"strides": (2, 1), "padding": "VALID"}, (2, 7, 6, 2)),
    "2d_dilated_same": (2, (3, 3), {"kernel_dilation": (2, 1)}, (1, 8, 6, 2)),
    "2d_explicit_pairs": (3, (2, 3), {"padding": ((1, 0), (2, 2))}, (2, 4, 5, 2)),
    "2d_int_pad_per_axis": (2, (3, 3), {"padding": (0, 1), "strides": 2}, (1, 7, 6, 3)),
    "2d_groups": (6, (3, 3), {"feature_group_count": 3, "padding": "VALID"}, (1, 5, 5, 6)),
    "2d_depthwise_multiplier": (6, (3, 3), {"feature_group_count": 3}, (2, 4, 4, 3)),
    "2d_lhs_dilation": (2, (3, 3), {"input_dilation": (2, 1), "padding": 1}, (1, 4, 4, 2)),
    "2d_s3_same_odd": (3, (3, 3), {"strides": 3}, (1, 8, 7, 2)),
    "2d_pointwise_s2": (5, (1, 1), {"strides": 2, "use_bias": False}, (2, 5, 4, 3)),
    "2d_groups_dilation_stride": (
        4,
        (2, 2),
        {"feature_group_count": 2, "kernel_dilation": 2, "strides": (1, 2)},
        (1, 6, 7, 4),
    ),
    "3d_same": (3, (2, 2, 2), {}, (1, 4, 3, 4, 2)),
    "3d_valid_stride": (2, (3, 1, 2), {"strides": (2, 1, 1), "padding": "VALID"}, (2, 5, 3, 4, 2)),
    "3d_groups": (4, (2, 2, 2), {"feature_group_count": 2, "padding": 1}, (1, 3, 3, 3, 4)),
    "3d_dilated_explicit": (
        2,
        (2, 2, 2),
        {"kernel_dilation": 2, "padding": ((1, 1), (0, 2), 1)},
        (1, 4, 4, 3, 1),
    ),
    "3d_lhs_dilation": (2, (2, 2, 2), {"input_dilation": 2, "padding": "VALID"}, (1, 3, 2, 2, 2)),
}


def _ref_options(layer):
    return dict(
        strides=layer.strides,
        padding=layer.padding if isinstance(layer.padding, str) else list(layer.padding),
        rhs_dil=layer.kernel_dilation,
        groups=layer.feature_group_count,
    )


@pytest.mark.parametrize("name", sorted(CONV_GRID))
def test_conv_matches_numpy_loop(name):
    features, kernel, options, shape = CONV_GRID[name]
    layer = Conv(features, kernel, **options)
    rng = np.random.default_rng(len(name))
    x = rng.standard_normal(shape)
    with jax.enable_x64(True):
        params, _ = layer.init(KEY, jax.ShapeDtypeStruct(shape, jnp.float64))
        params = {k: jnp.asarray(rng.standard_normal(v.shape)) for k, v in params.items()}
        y = layer(params, x)
    w = np.asarray(params["w"])
    n = len(kernel)
    expected = np_conv(
        x,
        w,
        strides=_tup(options.get("strides", 1), n),
        padding=options.get("padding", "SAME").upper()
        if isinstance(options.get("padding", "SAME"), str)
        else options["padding"],
        lhs_dil=_tup(options.get("input_dilation", 1), n),
        rhs_dil=_tup(options.get("kernel_dilation", 1), n),
        groups=options.get("feature_group_count", 1),
    )
    if layer.use_bias:
        expected = expected + np.asarray(params["b"])
    assert y.shape == expected.shape
    np.testing.assert_allclose(np.asarray(y), expected, rtol=1e-12, atol=1e-12)


# (features, kernel, options, input shape, expected output spatial size by PyTorch's formula
#  (m - 1) * s - lo - hi + d * (k - 1) + output_padding + 1, or m * s for SAME/CAUSAL).
TRANSPOSE_GRID = {
    "1d_valid_s2": (3, (3,), {"strides": 2, "padding": "VALID"}, (2, 4, 2), (9,)),
    "1d_pad1_s2_outpad1": (
        2,
        (3,),
        {"strides": 2, "padding": 1, "output_padding": 1},
        (1, 5, 3),
        (10,),
    ),
    "1d_same_s2": (2, (4,), {"strides": 2}, (2, 5, 2), (10,)),
    "1d_causal_dilated": (2, (3,), {"padding": "CAUSAL", "kernel_dilation": 2}, (1, 6, 2), (6,)),
    "1d_groups": (4, (3,), {"feature_group_count": 2, "strides": 2, "padding": 1}, (2, 4, 6), (7,)),
    "2d_same_s2": (3, (3, 3), {"strides": 2}, (2, 3, 4, 2), (6, 8)),
    "2d_valid_kernel2_s2": (2, (2, 2), {"strides": 2, "padding": "VALID"}, (1, 3, 3, 4), (6, 6)),
    "2d_explicit_asym": (
        2,
        (3, 2),
        {"strides": (2, 3), "padding": ((1, 0), (0, 1)), "output_padding": (1, 2)},
        (1, 3, 3, 2),
        (7, 9),
    ),
    "2d_dilated": (
        2,
        (3, 3),
        {"kernel_dilation": (1, 2), "padding": "VALID"},
        (1, 3, 2, 3),
        (5, 6),
    ),
    "2d_depthwise": (4, (3, 3), {"feature_group_count": 4, "strides": 2}, (1, 3, 3, 4), (6, 6)),
    "3d_same_s2": (2, (2, 2, 2), {"strides": 2}, (1, 2, 3, 2, 2), (4, 6, 4)),
    "3d_valid_groups": (
        4,
        (2, 1, 2),
        {"feature_group_count": 2, "padding": "VALID", "strides": (1, 2, 2)},
        (1, 2, 2, 3, 4),
        (3, 3, 6),
    ),
}


@pytest.mark.parametrize("name", sorted(TRANSPOSE_GRID))
def test_conv_transpose_matches_numpy_scatter_loop(name):
    features, kernel, options, shape, out_size = TRANSPOSE_GRID[name]
    layer = ConvTranspose(features, kernel, **options)
    rng = np.random.default_rng(len(name))
    x = rng.standard_normal(shape)
    with jax.enable_x64(True):
        params, _ = layer.init(KEY, jax.ShapeDtypeStruct(shape, jnp.float64))
        params = {k: jnp.asarray(rng.standard_normal(v.shape)) for k, v in params.items()}
        y = layer(params, x)
    ref = _ref_options(layer)
    del ref["groups"]
    expected = np_conv_transpose(
        x,
        np.asarray(params["w"]),
        groups=layer.feature_group_count,
        out_size=out_size,
        **ref,
    ) + np.asarray(params["b"])
    assert y.shape == (shape[0], *out_size, features)
    np.testing.assert_allclose(np.asarray(y), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", sorted(TRANSPOSE_GRID))
def test_conv_transpose_is_the_adjoint_of_conv(name):
    """<conv(x), y> == <x, conv_transpose(y)>: same kernel, strides, padding, dilation, groups.

    Neither has a bias; ``output_padding`` only selects the transpose's output size (the size
    of ``x``), which the forward conv maps back to the size of ``y``.
    """
    features, kernel, options, shape, out_size = TRANSPOSE_GRID[name]
    conv_options = {k: v for k, v in options.items() if k != "output_padding"}
    conv = Conv(shape[-1], kernel, use_bias=False, **conv_options)
    transpose = ConvTranspose(features, kernel, use_bias=False, **options)
    rng = np.random.default_rng(7)
    with jax.enable_x64(True):
        x = jnp.asarray(rng.standard_normal((shape[0], *out_size, features)))
        y = jnp.asarray(rng.standard_normal(shape))
        params, _ = conv.init(KEY, x)
        cx, ty = conv(params, x), transpose(params, y)
        assert cx.shape == y.shape and ty.shape == x.shape
        lhs, rhs = float(jnp.vdot(cx, y)), float(jnp.vdot(x, ty))
    assert lhs == pytest.approx(rhs, rel=1e-12)


def test_conv_transpose_undoes_conv_shape_in_unet_style():
    x = jnp.zeros((2, 16, 12, 3))
    down = Conv(8, (3, 3), strides=2)
    up = ConvTranspose(3, (3, 3), strides=2)
    p_down, _ = down.init(KEY, x)
    h = down(p_down, x)
    p_up, _ = up.init(KEY, h)
    assert h.shape == (2, 8, 6, 8)
    assert up(p_up, h).shape == x.shape
    assert jax.tree.map(jnp.shape, p_up) == {"w": (3, 3, 3, 8), "b": (3,)}


# --------------------------------------------------------------------------------------------
# Layouts and batch axes.


@pytest.mark.parametrize("cls", [Conv, ConvTranspose])
def test_channels_first_equals_transposed_channels_last(cls):
    x = np.random.default_rng(0).standard_normal((2, 5, 6, 3)).astype(np.float32)
    last = cls(4, (3, 2), strides=(2, 1))
    first = cls(4, (3, 2), strides=(2, 1), data_format="channels_first")
    params, _ = last.init(KEY, x)
    params_first, _ = first.init(KEY, x.transpose(0, 3, 1, 2))
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a.shape, b.shape), params, params_first)
    y_last = last(params, x)
    y_first = first(params, x.transpose(0, 3, 1, 2))
    np.testing.assert_allclose(
        y_first, np.asarray(y_last).transpose(0, 3, 1, 2), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("cls", [Conv, ConvTranspose])
def test_unbatched_and_extra_batch_axes(cls):
    x = np.random.default_rng(1).standard_normal((2, 3, 6, 2)).astype(np.float32)
    layer = cls(3, (3,), strides=2)
    params, _ = layer.init(KEY, x[0, 0])
    per_example = np.stack([np.stack([layer(params, xi) for xi in row]) for row in x])
    np.testing.assert_allclose(layer(params, x), per_example, rtol=1e-5, atol=1e-6)


def test_default_kernel_init_is_lecun_normal_fan_in():
    params, _ = Conv(64, (3, 3)).init(KEY, jnp.zeros((1, 8, 8, 32)))
    assert abs(float(jnp.var(params["w"])) * (9 * 32) - 1) < 0.05
    params, _ = ConvTranspose(32, (3, 3)).init(KEY, jnp.zeros((1, 8, 8, 64)))
    assert params["w"].shape == (3, 3, 32, 64)
    assert abs(float(jnp.var(params["w"])) * (9 * 64) - 1) < 0.05
    params, _ = Conv(8, (3, 3), feature_group_count=4).init(KEY, jnp.zeros((1, 4, 4, 8)))
    assert params["w"].shape == (3, 3, 2, 8)


def test_dtype_policy():
    layer = Conv(4, (3,), dtype=jnp.bfloat16)
    params, _ = layer.init(KEY, jnp.zeros((1, 5, 2)))
    assert params["w"].dtype == jnp.float32
    assert layer(params, jnp.ones((1, 5, 2))).dtype == jnp.bfloat16


# --------------------------------------------------------------------------------------------
# Errors name the layer path, expected and given.


def test_wrong_channel_count_names_path_expected_and_given():
    model = Sequential({"stem": Conv(4, (3, 3)), "up": ConvTranspose(2, (2, 2), strides=2)})
    params, _ = model.init(KEY, jnp.zeros((1, 8, 8, 3)))
    with pytest.raises(ShapeError, match=r"Conv at 'stem': input has 5 channels .* expected 3"):
        model(params, jnp.zeros((1, 8, 8, 5)))
    with pytest.raises(
        ShapeError, match=r"ConvTranspose at <root>: input has 3 channels .*expected 4"
    ):
        ConvTranspose(2, (2, 2))(params["up"], jnp.zeros((1, 4, 4, 3)))


def test_wrong_rank_and_empty_output():
    layer = Conv(4, (3, 3), padding="VALID")
    params, _ = layer.init(KEY, jnp.zeros((1, 8, 8, 3)))
    with pytest.raises(
        ShapeError,
        match=r"Conv at <root>: input must have rank >= 3, i.e. \(\*batch, H, W, C\).*given rank 2",
    ):
        layer(params, jnp.zeros((8, 3)))
    with pytest.raises(
        ShapeError, match=r"spatial input size \(2, 8\) gives an empty output \(0, 6\)"
    ):
        layer(params, jnp.zeros((1, 2, 8, 3)))


def test_wrong_kernel_shape_and_missing_params():
    layer = Conv(4, (3, 3))
    params, _ = layer.init(KEY, jnp.zeros((1, 8, 8, 3)))
    with pytest.raises(
        ShapeError,
        match=r"parameter 'w' has shape \(3, 3, 3, 5\), expected \(3, 3, C_in // groups, 4\)",
    ):
        layer({"w": jnp.zeros((3, 3, 3, 5)), "b": params["b"]}, jnp.zeros((1, 8, 8, 3)))
    with pytest.raises(ParamsError, match=r"missing parameter 'b'"):
        layer({"w": params["w"]}, jnp.zeros((1, 8, 8, 3)))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Conv(4, 0), r"kernel_size must be an int >= 1 .* or a tuple of 1 to 3.*given 0"),
        (lambda: Conv(4, (3, 3, 3, 3)), r"kernel_size must be an int >= 1 .* tuple of 1 to 3"),
        (lambda: Conv(0, (3,)), r"features must be a positive int, given 0"),
        (lambda: Conv(4, (3, 3), padding="CAUSAL"), r"'CAUSAL' is for 1-D inputs"),
        (lambda: Conv(4, (3, 3), padding="FULL"), r"padding must be one of"),
        (
            lambda: Conv(4, (3, 3), padding=((1, 1),)),
            r"disagree on the number of spatial axes, given kernel_size=\(3, 3\), "
            r"padding=\(\(1, 1\),\)",
        ),
        (
            lambda: Conv(4, 3, strides=(1, 2), kernel_dilation=(1, 1, 1)),
            r"disagree on the number of spatial axes",
        ),
        (lambda: Conv(4, 3, strides=(2, 2), padding="CAUSAL"), r"'CAUSAL' is for 1-D inputs"),
        (lambda: Conv(4, (3, 3), strides=(1, 0)), r"strides must be an int >= 1 .*given \(1, 0\)"),
        (lambda: Conv(4, 3, padding=((1, 2, 3),)), r"padding must be one of"),
        (
            lambda: Conv(6, (3,), feature_group_count=4),
            r"feature_group_count must be a positive int dividing features=6",
        ),
        (lambda: Conv(4, (3,), data_format="NCHW"), r"data_format must be one of"),
        (
            lambda: ConvTranspose(4, (3,), strides=2, output_padding=2, padding="VALID"),
            r"output_padding must be < strides",
        ),
        (lambda: ConvTranspose(4, (3,), strides=2, output_padding=1), r"0 with padding 'SAME'"),
    ],
)
def test_bad_config_raises(make, message):
    with pytest.raises(ConfigError, match=message):
        make()


def test_channels_not_divisible_by_groups_at_init():
    with pytest.raises(
        ShapeError, match=r"input channels 3 must be divisible by feature_group_count=2"
    ):
        Conv(4, (3,), feature_group_count=2).init(KEY, jnp.zeros((1, 5, 3)))


def test_layer_options_are_normalized_and_hashable():
    a = Conv(4, [3, 3], strides=2, padding="same")
    b = Conv(4, (3, 3), strides=(2, 2), padding="SAME")
    assert a == b and hash(a) == hash(b)
    assert Conv(4, (3, 3), padding=1).padding == ((1, 1), (1, 1))
    assert math.prod(Conv(4, (3, 3, 2)).kernel_size) == 18


# --------------------------------------------------------------------------------------------
# An int size is the same on every spatial axis (rank from the input), as the tuple form.


@pytest.mark.parametrize(
    ("cls", "options", "shape"),
    [
        (Conv, {"strides": 2}, (2, 9)),
        (Conv, {"kernel_dilation": 2, "padding": 1}, (1, 6, 7)),
        (Conv, {"input_dilation": 2, "strides": 2, "padding": "VALID"}, (1, 4, 3, 5)),
        (ConvTranspose, {"strides": 2, "padding": "VALID", "output_padding": 1}, (2, 3, 4)),
        (ConvTranspose, {"strides": 2}, (1, 3, 2, 2)),
    ],
)
def test_int_sizes_equal_the_tuple_form(cls, options, shape):
    """Conv(F, 3, strides=2) on (N, *spatial, C) is Conv(F, (3,) * n, strides=(2,) * n)."""
    n = len(shape) - 1
    x = np.random.default_rng(n).standard_normal((*shape, 2)).astype(np.float32)
    as_int = cls(3, 3, **options)
    as_tuple = cls(
        3,
        (3,) * n,
        **{k: (v,) * n if isinstance(v, int) else v for k, v in options.items()},
    )
    params, _ = as_int.init(KEY, x)
    assert jax.tree.map(jnp.shape, params) == jax.tree.map(jnp.shape, as_tuple.init(KEY, x)[0])
    np.testing.assert_array_equal(params["w"], as_tuple.init(KEY, x)[0]["w"])
    y = as_int(params, x)
    np.testing.assert_allclose(y, as_tuple(params, x), rtol=1e-6, atol=1e-6)
    # apply reads the rank back from the kernel: other batch shapes work as with tuples.
    np.testing.assert_allclose(as_int(params, x[0]), y[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(as_int(params, x[None]), y[None], rtol=1e-5, atol=1e-6)


def test_int_sizes_take_the_rank_from_a_tuple_option():
    assert Conv(4, 3, strides=(1, 2)).kernel_size == (3, 3)
    assert Conv(4, 3, padding=((1, 0), (0, 1), (1, 1))).strides == (1, 1, 1)
    assert Conv(4, 3, padding="CAUSAL").kernel_size == (3,)
    assert ConvTranspose(4, 2, output_padding=(1, 0), strides=2, padding="VALID").ndim == 2
    assert Conv(4, 3).kernel_size == 3 and Conv(4, 3).spatial_rank is None


def test_int_kernel_needs_one_batch_axis_at_init():
    with pytest.raises(
        ShapeError,
        match=r"Conv at 'c': kernel_size=3 is the same on every spatial axis, so the number of "
        r"spatial axes is the input's rank - 2 .*given rank 2 \(shape \(8, 3\)\).*Pass a tuple",
    ):
        Sequential({"c": Conv(4, 3)}).init(KEY, jnp.zeros((8, 3)))
    params, _ = Conv(4, 3).init(KEY, jnp.zeros((1, 8, 3)))
    with pytest.raises(
        ShapeError, match=r"parameter 'w' has shape \(3, 4\), expected \(\*kernel_size, C_in"
    ):
        Conv(4, 3)({"w": params["w"][0], "b": params["b"]}, jnp.zeros((1, 8, 3)))

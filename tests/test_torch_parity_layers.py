"""PyTorch parity of activations, PReLU, pooling (dilation, ceil_mode, divisors, adaptive max)
and Embedding(padding_idx), against NumPy written from PyTorch's documented definitions.

The pooling references are loops over output positions, written from PyTorch's C++ kernels
(``pooling_output_shape_pad_lr`` for sizes, ``avg_pool2d``'s ``pool_size`` / ``divide_factor``
for divisors) in PyTorch's ``(N, C, *spatial)`` layout, with PyTorch's symmetric int padding.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nn_jax import activations as A
from nn_jax import initializers
from nn_jax.combinators import Sequential
from nn_jax.dense import PReLU
from nn_jax.embedding import Embedding
from nn_jax.errors import ConfigError, ShapeError
from nn_jax.pooling import AdaptiveMaxPool, AvgPool, MaxPool
from tests.test_pooling import np_adaptive

KEY = jax.random.key(0)

# ------------------------------------------------------------------------------------------
# Activations: PyTorch's formulas (torch.nn docs) in NumPy, float64.


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _softplus(x):
    return np.log1p(np.exp(-np.abs(x))) + np.maximum(x, 0.0)


def _celu(alpha):
    # nn.CELU: max(0, x) + min(0, alpha * (exp(x / alpha) - 1))
    return lambda x: np.maximum(0.0, x) + np.minimum(0.0, alpha * (np.exp(x / alpha) - 1.0))


def _glu(x):
    # nn.GLU(dim=-1): first half * sigmoid(second half)
    a, b = np.split(x, 2, axis=-1)
    return a * _sigmoid(b)


TORCH_FORMULAS = {
    "mish": (A.mish, lambda x: x * np.tanh(_softplus(x))),
    # nn.Hardswish: 0 if x <= -3, x if x >= 3, else x (x + 3) / 6
    "hard_swish": (
        A.hard_swish,
        lambda x: np.where(x <= -3, 0.0, np.where(x >= 3, x, x * (x + 3) / 6)),
    ),
    # nn.Hardsigmoid: 0 if x <= -3, 1 if x >= 3, else x / 6 + 1 / 2
    "hard_sigmoid": (
        A.hard_sigmoid,
        lambda x: np.where(x <= -3, 0.0, np.where(x >= 3, 1.0, x / 6 + 0.5)),
    ),
    # nn.Hardtanh(): -1 if x < -1, 1 if x > 1, else x
    "hard_tanh": (A.hard_tanh, lambda x: np.where(x < -1, -1.0, np.where(x > 1, 1.0, x))),
    # nn.ReLU6: min(max(0, x), 6)
    "relu6": (A.relu6, lambda x: np.minimum(np.maximum(0.0, x), 6.0)),
    "celu": (A.celu, _celu(1.0)),
    "celu_alpha_0.5": (lambda x: A.celu(x, alpha=0.5), _celu(0.5)),
    "glu": (A.glu, _glu),
    # nn.Softsign: x / (1 + |x|)
    "soft_sign": (A.soft_sign, lambda x: x / (1.0 + np.abs(x))),
    # nn.LogSigmoid: log(1 / (1 + exp(-x)))
    "log_sigmoid": (A.log_sigmoid, lambda x: -np.log1p(np.exp(-x))),
}

KINKS = np.array([-6.0, -3.0, -1.0, 0.0, 1.0, 3.0, 6.0])
GRID = np.concatenate([np.linspace(-8.0, 8.0, 65), KINKS, KINKS + 1e-3, KINKS - 1e-3])
SMOOTH = np.arange(-7.75, 7.8, 0.5)  # away from every kink by 0.25
assert np.abs(SMOOTH[:, None] - KINKS[None, :]).min() >= 0.25


def _x(name, points):
    """GLU halves its last axis: pair the points with a shuffled copy of themselves."""
    if name != "glu":
        return points
    return np.stack([points, np.random.default_rng(0).permutation(points)], axis=-1)


@pytest.mark.parametrize("name", sorted(TORCH_FORMULAS))
def test_activation_matches_pytorch_formula(name):
    fn, ref = TORCH_FORMULAS[name]
    x = _x(name, GRID)
    with jax.enable_x64(True):
        got = np.asarray(fn(jnp.asarray(x)))
    np.testing.assert_allclose(got, ref(x), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", sorted(TORCH_FORMULAS))
def test_activation_gradient_matches_finite_differences_of_the_formula(name):
    """d/dx of sum(w * f(x)) by JAX vs central differences of the NumPy formula."""
    fn, ref = TORCH_FORMULAS[name]
    x = _x(name, SMOOTH)
    w = np.cos(np.arange(x.size)).reshape(x.shape)
    with jax.enable_x64(True):
        grad = np.asarray(jax.grad(lambda v: jnp.sum(w * fn(v)))(jnp.asarray(x)))
    eps = 1e-6
    numeric = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        step = np.zeros_like(x)
        step[i] = eps
        numeric[i] = (np.sum(w * ref(x + step)) - np.sum(w * ref(x - step))) / (2 * eps)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)


def test_new_activations_are_jax_functions_found_by_name():
    for name in ("mish", "hard_swish", "hard_sigmoid", "hard_tanh", "relu6", "celu", "glu"):
        assert A.get_activation(name) is getattr(jax.nn, name)
    assert A.get_activation("soft_sign") is jax.nn.soft_sign
    assert A.get_activation("log_sigmoid") is jax.nn.log_sigmoid


# ------------------------------------------------------------------------------------------
# PReLU: y = max(0, x) + alpha * min(0, x), one alpha or one per channel (nn.PReLU).


@pytest.mark.parametrize(
    ("num_parameters", "channel_axis", "shape"),
    [(1, -1, (3, 4)), (4, -1, (2, 3, 4)), (3, 1, (2, 3, 5)), (3, 1, (2, 3, 2, 2))],
)
def test_prelu_forward_and_gradients_match_numpy(num_parameters, channel_axis, shape):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape)
    alpha = rng.uniform(0.05, 0.5, (num_parameters,))
    layer = PReLU(num_parameters, channel_axis=channel_axis)
    with jax.enable_x64(True):
        params, _ = layer.init(KEY, jnp.asarray(x))
        np.testing.assert_array_equal(params["alpha"], np.full((num_parameters,), 0.25))
        params = {"alpha": jnp.asarray(alpha)}
        w = np.cos(np.arange(x.size)).reshape(shape)
        loss = lambda p, v: jnp.sum(w * layer(p, v))  # noqa: E731
        both = jax.jit(lambda p, v: (layer(p, v), jax.grad(loss, argnums=(0, 1))(p, v)))
        y, (g_alpha, g_x) = both(params, jnp.asarray(x))
    # NumPy: alpha broadcast along the channel axis (or one shared value).
    a = alpha.reshape(
        [num_parameters if i == channel_axis % len(shape) else 1 for i in range(len(shape))]
    )
    if num_parameters == 1:
        a = alpha.reshape((1,) * len(shape))
    np.testing.assert_allclose(y, np.maximum(0, x) + a * np.minimum(0, x), rtol=1e-14)
    # d/d alpha_c = sum over the channel's negative entries of w * x; d/dx = w (x > 0) or w a.
    neg = np.where(x < 0, w * x, 0.0)
    axes = tuple(
        i for i in range(len(shape)) if num_parameters == 1 or i != channel_axis % len(shape)
    )
    np.testing.assert_allclose(g_alpha["alpha"], neg.sum(axis=axes).reshape(-1), rtol=1e-12)
    np.testing.assert_allclose(g_x, np.where(x > 0, w, w * a), rtol=1e-14)


def test_prelu_errors_name_the_layer_expected_and_given():
    model = Sequential({"act": PReLU(3, channel_axis=1)})
    params, _ = model.init(KEY, jnp.zeros((2, 3, 5)))
    with pytest.raises(
        ShapeError,
        match=r"PReLU at 'act': input axis 1 \(channel_axis\) has size 5 \(input shape "
        r"\(2, 5, 3\)\), expected num_parameters=3",
    ):
        model(params, jnp.zeros((2, 5, 3)))
    with pytest.raises(ShapeError, match=r"PReLU at 'act': channel_axis=1 is outside"):
        model(params, jnp.zeros((3,)))
    with pytest.raises(ShapeError, match=r"PReLU at <root>: expected floating-point inputs"):
        PReLU()({"alpha": jnp.ones(1)}, jnp.ones((2,), jnp.int32))
    with pytest.raises(ConfigError, match=r"PReLU: num_parameters \(the number of slopes\)"):
        PReLU(0)


# ------------------------------------------------------------------------------------------
# Pooling: PyTorch's output sizes and divisors, channels first (N, C, *spatial).


def torch_out_size(n, k, s, p, d, ceil_mode):
    """PyTorch's pooling_output_shape_pad_lr with pad_l = pad_r = p."""
    out = (n + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (out - 1) * s >= n + p:
        out -= 1
    return out


def torch_max_pool(x, k, s, p, d, ceil_mode):
    """nn.MaxPoolNd: the max over the window's taps that land inside the input."""
    sizes = x.shape[2:]
    outs = [torch_out_size(*a, ceil_mode) for a in zip(sizes, k, s, p, d, strict=True)]
    y = np.zeros((*x.shape[:2], *outs))
    for o in itertools.product(*map(range, outs)):
        taps = [[o[i] * s[i] - p[i] + j * d[i] for j in range(k[i])] for i in range(len(sizes))]
        taps = [[t for t in ts if 0 <= t < size] for ts, size in zip(taps, sizes, strict=True)]
        patch = x[(slice(None), slice(None), *np.ix_(*taps))]
        y[(slice(None), slice(None), *o)] = patch.reshape(*x.shape[:2], -1).max(-1)
    return y


def torch_avg_pool(x, k, s, p, ceil_mode, count_include_pad):
    """nn.AvgPoolNd, as its kernel: ``start = o s - p``, ``end = min(start + k, n + p)``,
    ``pool_size = prod(end - start)``; the sum is over ``[max(start, 0), min(end, n))``, divided
    by ``pool_size`` (count_include_pad) or by the number of those input positions."""
    sizes = x.shape[2:]
    outs = [torch_out_size(*a, 1, ceil_mode) for a in zip(sizes, k, s, p, strict=True)]
    y = np.zeros((*x.shape[:2], *outs))
    for o in itertools.product(*map(range, outs)):
        starts = [o[i] * s[i] - p[i] for i in range(len(sizes))]
        ends = [min(starts[i] + k[i], sizes[i] + p[i]) for i in range(len(sizes))]
        pool_size = np.prod([e - b for b, e in zip(starts, ends, strict=True)])
        lo = [max(b, 0) for b in starts]
        hi = [min(e, n) for e, n in zip(ends, sizes, strict=True)]
        region = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
        total = x[(slice(None), slice(None), *region)].reshape(*x.shape[:2], -1).sum(-1)
        count = np.prod([b - a for a, b in zip(lo, hi, strict=True)])
        y[(slice(None), slice(None), *o)] = total / (pool_size if count_include_pad else count)
    return y


# name: (kernel, stride, padding, dilation, ceil_mode, input shape (N, C, *spatial))
MAX_CASES = {
    "1d_dilation2": ((3,), (1,), (0,), (2,), False, (2, 2, 9)),
    "1d_dilation2_stride2_pad2_ceil": ((3,), (2,), (2,), (2,), True, (1, 2, 8)),
    # ceil: the last window starts at 4 and hangs over the edge (covers one element).
    "1d_ceil_hangs_over": ((2,), (2,), (0,), (1,), True, (1, 1, 5)),
    # ceil would add a window starting at 6 = n + p, inside the right padding: dropped.
    "1d_ceil_drops_last": ((2,), (2,), (1,), (1,), True, (1, 2, 5)),
    "1d_ceil_kernel_1_drops_last": ((1,), (2,), (0,), (1,), True, (1, 1, 4)),
    "2d_dilation_2x1_pad1": ((2, 3), (1, 2), (1, 1), (2, 1), False, (2, 2, 6, 7)),
    "2d_ceil_pad1": ((3, 3), (2, 2), (1, 1), (1, 1), True, (1, 2, 6, 5)),
    "2d_dilation2_ceil": ((2, 2), (2, 3), (0, 1), (2, 2), True, (1, 1, 7, 8)),
}


@pytest.mark.parametrize("name", sorted(MAX_CASES))
def test_max_pool_dilation_and_ceil_mode_match_pytorch(name):
    k, s, p, d, ceil_mode, shape = MAX_CASES[name]
    x = np.random.default_rng(len(name)).standard_normal(shape)
    layer = MaxPool(
        k, strides=s, padding=p, dilation=d, ceil_mode=ceil_mode, data_format="channels_first"
    )
    with jax.enable_x64(True):
        y = np.asarray(layer({}, x))
    expected = torch_max_pool(x, k, s, p, d, ceil_mode)
    assert y.shape == expected.shape
    np.testing.assert_array_equal(y, expected)


def test_ceil_mode_cases_cover_both_rules():
    """The grid holds a case where ceil_mode adds a window and one where the rule drops it."""
    n, k, s, p = 5, 2, 2, 0
    assert torch_out_size(n, k, s, p, 1, True) == torch_out_size(n, k, s, p, 1, False) + 1
    n, k, s, p = 5, 2, 2, 1
    assert (n + 2 * p - k + s - 1) // s + 1 == 4 and torch_out_size(n, k, s, p, 1, True) == 3


# name: (kernel, stride, padding, ceil_mode, input shape (N, C, *spatial))
AVG_CASES = {
    # ceil: the last window [5, 8) passes the padded end 7: pool_size 2, one real element.
    "1d_ceil_pad1_hangs_over_padding": ((3,), (2,), (1,), True, (1, 2, 6)),
    "1d_ceil_no_pad": ((2,), (2,), (0,), True, (2, 1, 5)),
    "1d_ceil_drops_last": ((2,), (2,), (1,), True, (1, 1, 5)),
    "1d_floor_pad1": ((3,), (2,), (1,), False, (1, 2, 6)),
    "2d_ceil_pad1": ((3, 2), (2, 2), (1, 1), True, (1, 2, 6, 5)),
    "2d_ceil_mixed": ((3, 3), (3, 2), (1, 0), True, (2, 1, 7, 6)),
}


@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("name", sorted(AVG_CASES))
def test_avg_pool_ceil_mode_and_divisors_match_pytorch(name, count_include_pad):
    k, s, p, ceil_mode, shape = AVG_CASES[name]
    x = np.random.default_rng(len(name)).standard_normal(shape)
    layer = AvgPool(
        k,
        strides=s,
        padding=p,
        ceil_mode=ceil_mode,
        count_include_pad=count_include_pad,
        data_format="channels_first",
    )
    with jax.enable_x64(True):
        y = np.asarray(layer({}, x))
    expected = torch_avg_pool(x, k, s, p, ceil_mode, count_include_pad)
    assert y.shape == expected.shape
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-14)


def test_avg_pool_ceil_divisors_closed_form():
    """Ones over length 6, window 3, stride 2, padding 1, ceil: windows [-1, 2), [1, 4),
    [3, 6), [5, 8) clipped to the padded end 7: counting padding 2/3, 1, 1, 1/2; not: 1."""
    x = np.ones((1, 6, 1), np.float32)
    incl = AvgPool((3,), strides=2, padding=1, ceil_mode=True)({}, x)
    excl = AvgPool((3,), strides=2, padding=1, ceil_mode=True, count_include_pad=False)({}, x)
    np.testing.assert_allclose(incl[0, :, 0], [2 / 3, 1, 1, 1 / 2], rtol=1e-6)
    np.testing.assert_allclose(excl[0, :, 0], [1, 1, 1, 1], rtol=1e-6)


@pytest.mark.parametrize("cls", [MaxPool, AvgPool])
def test_ceil_mode_changes_nothing_with_same_padding(cls):
    x = np.random.default_rng(0).standard_normal((2, 7, 8, 3)).astype(np.float32)
    for window, strides in [((3, 2), (2, 3)), ((1, 1), (3, 3))]:
        floor = cls(window, strides=strides, padding="SAME")({}, x)
        ceil = cls(window, strides=strides, padding="SAME", ceil_mode=True)({}, x)
        np.testing.assert_array_equal(ceil, floor)


def test_pool_option_errors():
    with pytest.raises(ConfigError, match=r"MaxPool: dilation must be an int >= 1 .*given 0"):
        MaxPool(2, dilation=0)
    with pytest.raises(ConfigError, match=r"MaxPool: the options disagree.*dilation=\(1, 1, 1\)"):
        MaxPool((2, 2), dilation=(1, 1, 1))
    with pytest.raises(ConfigError, match=r"AvgPool: ceil_mode must be True or False, given 1"):
        AvgPool(2, ceil_mode=1)
    with pytest.raises(
        ShapeError,
        match=r"MaxPool at 'pool': spatial input size \(4,\) gives an empty output \(0,\) .*"
        r"dilation=\(2,\)",
    ):
        Sequential({"pool": MaxPool(3, dilation=2)})({}, jnp.zeros((1, 4, 1)))


def test_max_pool_ceil_mode_window_larger_than_input():
    """PyTorch: MaxPool1d(3, ceil_mode=True) on length 2 gives one output, the max of both."""
    assert torch_out_size(2, 3, 3, 0, 1, True) == 1
    x = np.array([[[1.0], [5.0]]], np.float32)
    np.testing.assert_array_equal(MaxPool(3, ceil_mode=True)({}, x), [[[5.0]]])


@pytest.mark.parametrize(
    ("shape", "out"),
    [
        ((2, 7, 3), (3,)),
        ((1, 3, 2), (5,)),
        ((2, 7, 5, 2), (3, 2)),
        ((1, 10, 9, 1), (4, 4)),
        ((1, 5, 4, 3, 2), (2, 3, 2)),
    ],
)
def test_adaptive_max_pool_matches_pytorch_bins(shape, out):
    x = np.random.default_rng(0).standard_normal(shape)
    with jax.enable_x64(True):
        y = np.asarray(AdaptiveMaxPool(out)({}, x))
    np.testing.assert_array_equal(y, np_adaptive(x, out, np.max))


def test_adaptive_max_pool_gradient_goes_to_each_bins_argmax():
    x = np.random.default_rng(1).standard_normal((1, 7, 5, 1))
    out = (3, 2)
    w = np.cos(np.arange(6.0)).reshape(1, 3, 2, 1)
    with jax.enable_x64(True):
        grad = jax.jit(jax.grad(lambda v: jnp.sum(w * AdaptiveMaxPool(out)({}, v))))(x)
    expected = np.zeros_like(x)
    for i, j in itertools.product(range(3), range(2)):
        rows = (int(np.floor(i * 7 / 3)), int(np.ceil((i + 1) * 7 / 3)))
        cols = (int(np.floor(j * 5 / 2)), int(np.ceil((j + 1) * 5 / 2)))
        patch = x[0, slice(*rows), slice(*cols), 0]
        r, c = np.unravel_index(patch.argmax(), patch.shape)
        expected[0, rows[0] + r, cols[0] + c, 0] += w[0, i, j, 0]
    np.testing.assert_allclose(grad, expected, rtol=1e-14)


def test_adaptive_max_pool_int_and_channels_first_forms():
    x = np.random.default_rng(2).standard_normal((2, 7, 5, 3)).astype(np.float32)
    first = jax.jit(lambda v: AdaptiveMaxPool(3, data_format="channels_first")({}, v))
    np.testing.assert_array_equal(
        first(x.transpose(0, 3, 1, 2)).transpose(0, 2, 3, 1), np_adaptive(x, (3, 3), np.max)
    )
    with pytest.raises(ConfigError, match=r"AdaptiveMaxPool: output_size must be an int >= 1"):
        AdaptiveMaxPool(0)
    with pytest.raises(ConfigError, match=r"AdaptiveMaxPool: data_format must be one of"):
        AdaptiveMaxPool(2, data_format="NCHW")


# ------------------------------------------------------------------------------------------
# Embedding(padding_idx): the row starts at zero, is read as stored, and gets no gradient.


def test_embedding_padding_row_is_zero_and_gets_no_gradient():
    emb = Embedding(6, 3, padding_idx=2)
    ids = np.array([[2, 1, 2], [4, 2, 1]], np.int32)
    params, _ = emb.init(KEY, ids)
    table = np.asarray(params["table"])
    np.testing.assert_array_equal(table[2], np.zeros(3))
    assert np.all(table[[0, 1, 3, 4, 5]] != 0)
    np.testing.assert_array_equal(emb(params, ids), table[ids])
    w = np.random.default_rng(0).standard_normal((2, 3, 3))
    grad = jax.jit(jax.grad(lambda p: jnp.sum(w * emb(p, ids))))(params)["table"]
    expected = np.zeros((6, 3))
    np.add.at(expected, ids.reshape(-1), w.reshape(-1, 3))
    expected[2] = 0.0  # PyTorch: the padding row receives no gradient
    np.testing.assert_allclose(grad, expected, rtol=1e-6)


def test_embedding_padding_row_is_read_as_stored_and_stays_under_training():
    emb = Embedding(5, 2, padding_idx=-1, table_init=initializers.ones)
    assert emb.padding_idx == 4 and emb == Embedding(
        5, 2, padding_idx=4, table_init=initializers.ones
    )
    params, _ = emb.init(KEY, jnp.zeros((1,), jnp.int32))
    np.testing.assert_array_equal(params["table"][4], [0.0, 0.0])
    loaded = {"table": params["table"].at[4].set(jnp.array([7.0, -3.0]))}
    ids = jnp.array([4, 0, 4])
    np.testing.assert_array_equal(emb(loaded, ids)[0], [7.0, -3.0])  # the stored row, as PyTorch
    optimizer = optax.adam(0.1)

    @jax.jit
    def step(p, opt_state):
        grads = jax.grad(lambda q: jnp.sum(emb(q, ids) ** 2))(p)
        updates, opt_state = optimizer.update(grads, opt_state, p)
        return optax.apply_updates(p, updates), opt_state

    p, opt_state = loaded, optimizer.init(loaded)
    for _ in range(3):
        p, opt_state = step(p, opt_state)
    np.testing.assert_array_equal(p["table"][4], [7.0, -3.0])
    assert not np.allclose(p["table"][0], loaded["table"][0])


def test_embedding_padding_idx_errors():
    with pytest.raises(
        ConfigError,
        match=r"Embedding: padding_idx must be None or an index in \[-5, 5\) "
        r"\(num_embeddings=5; negative counts from the end\), given 5",
    ):
        Embedding(5, 2, padding_idx=5)
    with pytest.raises(ConfigError, match=r"given -6"):
        Embedding(5, 2, padding_idx=-6)
    with pytest.raises(ConfigError, match=r"Embedding: padding_idx must be an int or None"):
        Embedding(5, 2, padding_idx=1.0)

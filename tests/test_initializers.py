"""Initializers against first-principles moments (variances from fans, bounds, orthogonality), and
each factory against its ``jax.nn.initializers`` namesake: same numbers, a value that pickles,
compares by value and prints without an address."""

import math
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nn_jax import initializers as I
from nn_jax.errors import ConfigError

KEY = jax.random.key(0)


def _draw(init, shape, dtype=jnp.float32):
    # Eager on purpose: op-by-op compilations are cached across tests that share shapes.
    return np.asarray(init(KEY, shape, dtype), dtype=np.float64)


def _std_truncnorm_var(a, b):
    """Variance of a standard normal truncated to [a, b] (textbook formula)."""
    pdf = lambda x: math.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)  # noqa: E731
    cdf = lambda x: 0.5 * (1 + math.erf(x / math.sqrt(2)))  # noqa: E731
    z = cdf(b) - cdf(a)
    return 1 + (a * pdf(a) - b * pdf(b)) / z - ((pdf(a) - pdf(b)) / z) ** 2


def test_zeros_and_ones_are_initializers_not_factories():
    np.testing.assert_array_equal(_draw(I.zeros, (3, 4)), np.zeros((3, 4)))
    np.testing.assert_array_equal(_draw(I.ones, (2, 5)), np.ones((2, 5)))


def test_constant():
    np.testing.assert_array_equal(_draw(I.constant(-1.5), (2, 3)), np.full((2, 3), -1.5))


def test_normal_stddev():
    x = _draw(I.normal(stddev=0.3), (512, 512))
    assert abs(x.mean()) < 0.01
    assert x.std() == pytest.approx(0.3, rel=0.02)


def test_uniform_is_zero_to_scale_as_in_jax():
    # JAX's uniform(scale) samples U[0, scale): mean scale/2 and variance scale^2/12.
    s = 0.4
    x = _draw(I.uniform(scale=s), (512, 512))
    assert x.min() >= 0.0
    assert x.max() < s
    assert x.mean() == pytest.approx(s / 2, rel=0.01)
    assert x.var() == pytest.approx(s**2 / 12, rel=0.02)


@pytest.mark.parametrize(("lower", "upper"), [(-2.0, 2.0), (-1.0, 3.0)])
def test_truncated_normal_bounds_and_variance(lower, upper):
    stddev = 0.5
    x = _draw(I.truncated_normal(stddev=stddev, lower=lower, upper=upper), (512, 512))
    # Bounds are in units of the (untruncated) stddev: lower*stddev <= x <= upper*stddev.
    assert x.min() >= lower * stddev
    assert x.max() <= upper * stddev
    assert x.min() < (lower + 0.05) * stddev  # the whole interval is used
    assert x.max() > (upper - 0.05) * stddev
    assert x.var() == pytest.approx(stddev**2 * _std_truncnorm_var(lower, upper), rel=0.03)


def test_truncated_normal_default_bounds_are_two_stddevs():
    x = _draw(I.truncated_normal(stddev=1.0), (256, 256))
    assert np.abs(x).max() <= 2.0
    assert x.var() == pytest.approx(_std_truncnorm_var(-2.0, 2.0), rel=0.03)


# (factory, shape, expected variance from the fans, is_uniform). For a 2-D kernel (in, out):
# fan_in = in, fan_out = out. Rectangular shapes catch fan_in/fan_out mix-ups; few distinct shapes
# keep compilation (per shape) cheap.
FAN_CASES = {
    "glorot_uniform": (I.glorot_uniform, (512, 512), 2 / (512 + 512), True),
    "glorot_normal": (I.glorot_normal, (512, 512), 2 / (512 + 512), False),
    "glorot_uniform_rect": (I.glorot_uniform, (256, 1024), 2 / (256 + 1024), True),
    "xavier_uniform": (I.xavier_uniform, (512, 512), 2 / 1024, True),
    "xavier_normal": (I.xavier_normal, (512, 512), 2 / 1024, False),
    "he_uniform": (I.he_uniform, (256, 1024), 2 / 256, True),
    "he_normal": (I.he_normal, (256, 1024), 2 / 256, False),
    "kaiming_uniform": (I.kaiming_uniform, (256, 1024), 2 / 256, True),
    "kaiming_normal": (I.kaiming_normal, (256, 1024), 2 / 256, False),
    "lecun_uniform": (I.lecun_uniform, (256, 1024), 1 / 256, True),
    "lecun_normal": (I.lecun_normal, (256, 1024), 1 / 256, False),
    "he_normal_conv": (I.he_normal, (3, 3, 32, 256), 2 / (3 * 3 * 32), False),
    "vs_fan_out_uniform": (
        lambda: I.variance_scaling(3.0, "fan_out", "uniform"),
        (256, 1024),
        3 / 1024,
        True,
    ),
    "vs_fan_avg_normal": (
        lambda: I.variance_scaling(0.5, "fan_avg", "normal"),
        (256, 1024),
        0.5 / 640,
        False,
    ),
}


@pytest.mark.parametrize("name", sorted(FAN_CASES))
def test_variance_scaling_family(name):
    factory, shape, var, is_uniform = FAN_CASES[name]
    x = _draw(factory(), shape)
    assert abs(x.mean()) < 0.05 * math.sqrt(var)
    assert x.var() == pytest.approx(var, rel=0.05)
    if is_uniform:  # U[-b, b] has variance b^2 / 3
        bound = math.sqrt(3 * var)
        assert np.abs(x).max() <= bound * (1 + 1e-6)
        assert np.abs(x).max() > 0.99 * bound


def test_aliases_are_the_same_initializers():
    assert I.xavier_uniform is I.glorot_uniform
    assert I.xavier_normal is I.glorot_normal
    assert I.kaiming_uniform is I.he_uniform
    assert I.kaiming_normal is I.he_normal


@pytest.mark.parametrize(
    ("shape", "scale"), [((16, 16), 1.0), ((24, 8), 1.0), ((8, 24), 2.0), ((3, 3, 4, 8), 1.0)]
)
def test_orthogonal(shape, scale):
    q = _draw(I.orthogonal(scale=scale), shape).reshape(-1, shape[-1])  # (rows, columns)
    rows, cols = q.shape
    # The smaller side is orthonormal (times scale).
    gram = q.T @ q if rows >= cols else q @ q.T
    np.testing.assert_allclose(gram, scale**2 * np.eye(min(rows, cols)), atol=1e-5)


# ones, he_*, lecun_* and variance_scaling share the code paths of zeros and glorot_* (JAX's
# variance_scaling), so they are not repeated here.
ALL_FACTORIES = {
    "zeros": lambda: I.zeros,
    "constant": lambda: I.constant(0.5),
    "normal": I.normal,
    "truncated_normal": I.truncated_normal,
    "uniform": I.uniform,
    "glorot_uniform": I.glorot_uniform,
    "glorot_normal": I.glorot_normal,
    "orthogonal": I.orthogonal,
}


@pytest.mark.parametrize("name", sorted(ALL_FACTORIES))
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float64"])
def test_dtype_respected(name, dtype):
    # Abstract evaluation gives the exact output dtype and shape without compiling 24 programs.
    init = ALL_FACTORIES[name]()
    with jax.enable_x64(dtype == "float64"):
        out = jax.eval_shape(lambda key: init(key, (8, 6), jnp.dtype(dtype)), KEY)
    assert out.dtype == jnp.dtype(dtype)
    assert out.shape == (8, 6)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float64"])
def test_concrete_draw_in_each_dtype(dtype):
    with jax.enable_x64(dtype == "float64"):
        x = I.glorot_normal()(KEY, (64, 64), jnp.dtype(dtype))
        assert x.dtype == jnp.dtype(dtype)
        x = np.asarray(x, np.float64)
    assert np.isfinite(x).all()
    assert x.var() == pytest.approx(2 / 128, rel=0.15)


@pytest.mark.parametrize("factory", ["orthogonal", "delta_orthogonal"])
def test_qr_initializers_draw_half_precision_in_float32(factory):
    """JAX's QR has no bfloat16/float16 kernel on CPU: these draw in float32 and cast, so a
    half-precision draw is the float32 draw rounded."""
    init = getattr(I, factory)()
    shape = (3, 3, 6, 8) if factory == "delta_orthogonal" else (8, 6)
    for dtype in (jnp.bfloat16, jnp.float16):
        half = init(KEY, shape, dtype)
        assert half.dtype == dtype
        np.testing.assert_array_equal(half, init(KEY, shape, jnp.float32).astype(dtype))


# --- each factory is its jax.nn.initializers namesake, as a value ------------------------------

# name -> arguments (non-default ones where the factory has any, so they are seen to pass through).
NAMESAKE_ARGUMENTS = {
    "constant": {"value": -0.25},
    "delta_orthogonal": {"scale": 1.5},
    "glorot_normal": {"in_axis": -3},
    "glorot_uniform": {},
    "he_normal": {},
    "he_uniform": {"out_axis": -2, "in_axis": -1},
    "kaiming_normal": {},
    "kaiming_uniform": {},
    "lecun_normal": {},
    "lecun_uniform": {"batch_axis": (0,)},
    "normal": {"stddev": 0.3},
    "orthogonal": {"scale": 2.0, "column_axis": -2},
    "truncated_normal": {"stddev": 0.5, "lower": -1.0, "upper": 3.0},
    "uniform": {"scale": 0.4},
    "variance_scaling": {"scale": 3.0, "mode": "fan_out", "distribution": "uniform"},
    "xavier_normal": {},
    "xavier_uniform": {},
}
NAMESAKE_SHAPE = (3, 3, 4, 6)  # a conv kernel (delta_orthogonal needs one); small and shared
NOT_FACTORIES = {"Initializer", "JaxInitializer", "ones", "zeros"}
# nn_jax's own (PyTorch's initialization; tests/test_presets.py checks them from first principles)
NOT_FACTORIES |= {"FanInInitializer", "UniformFanIn", "UniformSymmetric", "initialize"}
NOT_FACTORIES |= {"uniform_fan_in", "uniform_symmetric"}


def test_every_factory_is_checked_against_its_namesake():
    factories = set(I.__all__) - NOT_FACTORIES
    assert factories == set(NAMESAKE_ARGUMENTS)


@pytest.mark.parametrize("name", sorted(NAMESAKE_ARGUMENTS))
def test_factory_gives_exactly_the_numbers_of_its_jax_namesake(name):
    kwargs = NAMESAKE_ARGUMENTS[name]
    ours = getattr(I, name)(**kwargs)
    theirs = getattr(jax.nn.initializers, name)(**kwargs)
    assert isinstance(ours, I.JaxInitializer)
    # No bfloat16 QR on CPU (see test_orthogonal_bfloat16_unsupported_on_cpu).
    for dtype in (None,) if name.endswith("orthogonal") else (None, jnp.bfloat16):
        args = (KEY, NAMESAKE_SHAPE) if dtype is None else (KEY, NAMESAKE_SHAPE, dtype)
        got, want = ours(*args), theirs(*args)
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(np.asarray(got, np.float64), np.asarray(want, np.float64))


@pytest.mark.parametrize("name", sorted(NAMESAKE_ARGUMENTS))
def test_initializer_pickles_compares_by_value_and_prints_without_address(name):
    kwargs = NAMESAKE_ARGUMENTS[name]
    init = getattr(I, name)(**kwargs)
    again = getattr(I, name)(**kwargs)
    assert init == again and hash(init) == hash(again)
    assert pickle.loads(pickle.dumps(init)) == init
    assert pickle.loads(pickle.dumps(getattr(I, name))) is getattr(I, name)
    text = repr(init)
    assert "0x" not in text and "<" not in text
    # The repr is the call that builds it again, in this module's namespace.
    assert eval(text, vars(I)) == init


def test_initializer_values_and_reprs():
    assert repr(I.normal(0.02)) == "normal(stddev=0.02)"
    assert repr(I.lecun_normal()) == "lecun_normal()"
    assert I.normal(0.02) != I.normal(0.03)
    assert I.normal(0.02) != I.truncated_normal(0.02)
    # Defaults are left out: the same configuration is one value, however it is spelled.
    assert I.normal() == I.normal(0.01) == I.normal(stddev=0.01)
    assert repr(I.normal(0.01)) == "normal()"
    # Aliases build the canonical initializer.
    assert I.xavier_uniform() == I.glorot_uniform()
    assert repr(I.kaiming_normal()) == "he_normal()"
    # Plain Python values: dtypes by name, NumPy scalars as numbers, lists as tuples.
    assert repr(I.normal(dtype=jnp.bfloat16)) == "normal(dtype='bfloat16')"
    assert I.normal(dtype=jnp.bfloat16) == I.normal(dtype="bfloat16")
    assert I.constant(np.float32(0.5)) == I.constant(0.5)
    assert I.glorot_normal(in_axis=[0, 1]) == I.glorot_normal(in_axis=(0, 1))


def test_initializer_dtype_argument_is_the_default_draw_dtype():
    x = I.normal(0.3, dtype="bfloat16")(KEY, (2, 3))
    want = jax.nn.initializers.normal(0.3, dtype=jnp.bfloat16)(KEY, (2, 3))
    assert x.dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(x, np.float64), np.asarray(want, np.float64))


def test_initializer_config_errors():
    with pytest.raises(ConfigError, match=r"constant: argument value is an array of shape \(3,\)"):
        I.constant(np.ones(3))
    with pytest.raises(ConfigError, match=r"unknown initializer factory 'gaussian'; one of"):
        I.JaxInitializer("gaussian")
    with pytest.raises(TypeError):
        I.normal(sigma=0.1)  # JAX's signature: stddev

"""Activations against NumPy formulas written from their definitions, and the name lookup."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nn_jax import activations as A
from nn_jax.errors import ConfigError

X = np.linspace(-6.0, 6.0, 49)
X2 = np.stack([X[:7], X[7:14] * 3.0, X[14:21] * 0.1])  # (3, 7), for the softmaxes


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946
_erf = np.vectorize(math.erf)

REFERENCES = {
    "relu": (A.relu, lambda x: np.where(x > 0, x, 0.0)),
    "leaky_relu": (A.leaky_relu, lambda x: np.where(x > 0, x, 0.01 * x)),
    "elu": (A.elu, lambda x: np.where(x > 0, x, np.exp(x) - 1.0)),
    "selu": (A.selu, lambda x: SELU_SCALE * np.where(x > 0, x, SELU_ALPHA * (np.exp(x) - 1.0))),
    # jax.nn.gelu defaults to approximate=True: the tanh approximation.
    "gelu": (
        A.gelu,
        lambda x: 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3))),
    ),
    "gelu_exact": (
        lambda x: A.gelu(x, approximate=False),
        lambda x: 0.5 * x * (1 + _erf(x / np.sqrt(2.0))),
    ),
    "silu": (A.silu, lambda x: x * _sigmoid(x)),
    "swish": (A.swish, lambda x: x / (1.0 + np.exp(-x))),
    "tanh": (A.tanh, lambda x: (np.exp(x) - np.exp(-x)) / (np.exp(x) + np.exp(-x))),
    "sigmoid": (A.sigmoid, _sigmoid),
    "softplus": (A.softplus, lambda x: np.log1p(np.exp(x))),
    "identity": (A.identity, lambda x: x),
    "softmax": (A.softmax, _softmax),
    "log_softmax": (A.log_softmax, lambda x: np.log(_softmax(x))),
}


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_activation_matches_numpy_formula(name):
    fn, ref = REFERENCES[name]
    x = X2 if "softmax" in name else X
    with jax.enable_x64(True):
        got = np.asarray(fn(jnp.asarray(x, jnp.float64)))
    np.testing.assert_allclose(got, ref(x), rtol=1e-12, atol=1e-14)


def test_gelu_default_is_tanh_approximation_not_exact():
    # Guards the documented default: at x = 1 the two forms differ by ~1.6e-4.
    with jax.enable_x64(True):
        diff = float(A.gelu(jnp.float64(1.0)) - A.gelu(jnp.float64(1.0), approximate=False))
    assert abs(diff) > 1e-4


def test_reexports_are_jax_functions():
    assert A.relu is jax.nn.relu
    assert A.gelu is jax.nn.gelu
    assert A.swish is A.silu
    assert A.tanh is jnp.tanh
    # The PyTorch-parity set (checked against PyTorch's formulas in test_torch_parity_layers.py).
    for name in ("mish", "hard_swish", "hard_sigmoid", "hard_tanh", "relu6", "celu", "glu"):
        assert getattr(A, name) is getattr(jax.nn, name)
    assert A.soft_sign is jax.nn.soft_sign and A.log_sigmoid is jax.nn.log_sigmoid


def test_the_one_alias_is_swish_and_it_is_documented():
    functions = [getattr(A, name) for name in A.__all__]
    aliased = {
        name for name, fn in zip(A.__all__, functions, strict=True) if functions.count(fn) > 1
    }
    assert aliased == {"silu", "swish"}
    assert "``swish`` is an alias" in A.__doc__


@pytest.mark.parametrize("name", sorted(set(A.__all__) - {"get_activation"}))
def test_get_activation_by_name(name):
    assert A.get_activation(name) is getattr(A, name)


def test_get_activation_passes_callables_through():
    fn = lambda x: 2 * x  # noqa: E731
    assert A.get_activation(fn) is fn
    assert A.get_activation(jax.nn.mish) is jax.nn.mish


@pytest.mark.parametrize("bad", ["ReLU", "gelu_new", "", 3, None])
def test_get_activation_unknown_lists_valid_names(bad):
    with pytest.raises(ConfigError, match=r"unknown activation .*relu.*swish.*tanh"):
        A.get_activation(bad)

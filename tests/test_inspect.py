"""param_count, summary, param paths and intermediates."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nn_jax import (
    Dense,
    Sequential,
    apply_with_intermediates,
    flatten_params,
    param_count,
    summary,
    unflatten_params,
)
from nn_jax.models import MLP

KEY = jax.random.key(0)


def test_param_count_matches_formula():
    params, _ = MLP((512, 512, 10)).init(KEY, jax.ShapeDtypeStruct((1, 784), jnp.float32))
    assert param_count(params) == 784 * 512 + 512 + 512 * 512 + 512 + 512 * 10 + 10


def test_flatten_unflatten_round_trip():
    params, _ = Sequential({"encoder": Sequential(Dense(3), jnp.tanh), "head": Dense(1)}).init(
        KEY, jnp.zeros((1, 2))
    )
    flat = flatten_params(params)
    assert list(flat) == ["encoder/0/b", "encoder/0/w", "head/b", "head/w"]
    assert flat["encoder/0/w"].shape == (2, 3)
    back = unflatten_params(flat)
    assert jax.tree.structure(back) == jax.tree.structure(params)
    with pytest.raises(ValueError, match="goes through a leaf"):
        unflatten_params({"a": 1, "a/b": 2})


def test_summary_lists_every_layer_with_shapes_and_counts():
    table = summary(MLP((32, 16, 1)), jax.ShapeDtypeStruct((8, 10), jnp.float32))
    lines = table.splitlines()
    assert lines[0].split() == ["path", "type", "output", "params", "count"]
    assert lines[2].split() == ["(root)", "MLP", "float32[8,", "1]", "897"]
    row = next(line for line in lines if line.startswith("dense_0 "))
    assert (
        "Dense" in row and "float32[8, 32]" in row and "w: [10, 32]" in row and row.endswith("352")
    )
    assert lines[-1] == "Total parameters: 897"


def test_intermediates_are_real_activations_under_jit():
    model = Sequential(Dense(4), jax.nn.relu, Dense(2))
    x = np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32)
    params, state = model.init(KEY, x)
    y, _, acts = jax.jit(lambda p, x: apply_with_intermediates(model, p, state, x))(params, x)
    h = x @ np.asarray(params["0"]["w"]) + np.asarray(params["0"]["b"])
    np.testing.assert_allclose(acts["0"], h, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(acts["1"], np.maximum(h, 0), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(acts["2"], y)

"""The MNIST-1D paper's baselines (``nn_jax.jobs.reproduce``): the models, and a short run.

The full protocol (6,000 steps) measured with seed 0: logistic 31.4%, MLP 64.3%, CNN 93.9%,
GRU 89.1% (paper: 32%, 68%, 94%, 91%), in about a minute on 2 CPU cores. The CI check trains
1,500 steps (about 20 s); over seeds 0-2 that gave logistic 31.9-32.2%, MLP 61.6-64.5%,
CNN 89.6-92.5%, GRU 88.9-89.6%. The bands below leave room for seed and platform noise
(on 1,000 test signals one standard error is about 1.5 points) while still failing on a
broken layer, initialization or optimizer step.
"""

import math

import jax
import jax.numpy as jnp
import pytest

from nn_jax.errors import ConfigError
from nn_jax.jobs.reproduce import (
    PAPER_MNIST1D,
    QUICK,
    format_table,
    mnist1d_models,
    reproduce_mnist1d,
)

# Parameter counts of the paper's PyTorch models. nn_jax's GRU folds bias_ih and bias_hh into
# one bias on the r and z gates: 2 * 12 fewer parameters than torch.nn.GRU's 324.
TORCH_PARAMS = {"logistic": 410, "mlp": 15210, "cnn": 5210, "gru": 5134 - 24}

# Test accuracy after 1,500 in-order steps (see the module docstring).
QUICK_BANDS = {
    "logistic": (0.27, 0.37),
    "mlp": (0.55, 0.72),
    "cnn": (0.85, 0.97),
    "gru": (0.80, 0.95),
}


def test_models_have_the_papers_shapes_and_parameter_counts():
    models = mnist1d_models()
    assert set(models) == set(PAPER_MNIST1D) == set(QUICK_BANDS)
    x = jax.ShapeDtypeStruct((3, 40), jnp.float32)
    for name, model in models.items():
        params, _ = jax.eval_shape(model.init, jax.random.key(0), x)
        count = sum(math.prod(p.shape) for p in jax.tree.leaves(params))
        assert count == TORCH_PARAMS[name], name
        logits, _ = jax.eval_shape(lambda p, x, m=model: m.apply(p, {}, x), params, x)
        assert logits.shape == (3, 10), name


def test_steps_must_be_positive():
    with pytest.raises(ConfigError, match="steps must be a positive int"):
        reproduce_mnist1d(steps=0)


@pytest.mark.slow
def test_quick_reproduction_lands_in_its_bands():
    """``nn-jax reproduce mnist1d --quick``: 1,500 steps, seed 0, each model in its band."""
    pytest.importorskip("mnist1d")
    rows = reproduce_mnist1d(**QUICK, progress=False)
    assert QUICK["steps"] == 1500 and [row["model"] for row in rows] == list(QUICK_BANDS)
    for row in rows:
        low, high = QUICK_BANDS[row["model"]]
        assert low <= row["ours"] <= high, row
        assert row["paper"] == PAPER_MNIST1D[row["model"]] and row["runs"] == [row["ours"]]
    lines = format_table(rows).splitlines()
    assert lines[0].split()[:3] == ["model", "paper", "ours"] and len(lines) == 6
    assert lines[2].split()[:2] == ["logistic", "32%"]

"""The MNIST-1D paper's baselines (``nn_jax.jobs.reproduce``): the models, and a short run.

The full protocol (6,000 steps) measured with seed 0: logistic 31.4%, MLP 64.3%, CNN 93.9%,
GRU 89.1% (paper: 32%, 68%, 94%, 91%), in about a minute on 2 CPU cores. The CI check trains
1,500 steps (about 20 s); over seeds 0-2 that gave logistic 31.9-32.2%, MLP 61.6-64.5%,
CNN 89.6-92.5%, GRU 88.9-89.6%: ``QUICK_BANDS``. That run is notebook
``08_mnist1d_reproduction``'s under CI, which asserts the bands (executed by
tests/test_notebooks.py), so it is not trained a second time here.
"""

import math

import jax
import jax.numpy as jnp
import pytest

from nn_jax.errors import ConfigError
from nn_jax.jobs.reproduce import (
    PAPER_MNIST1D,
    QUICK_BANDS,
    format_table,
    mnist1d_models,
    reproduce_mnist1d,
)

# Parameter counts of the paper's PyTorch models. nn_jax's GRU folds bias_ih and bias_hh into
# one bias on the r and z gates: 2 * 12 fewer parameters than torch.nn.GRU's 324.
TORCH_PARAMS = {"logistic": 410, "mlp": 15210, "cnn": 5210, "gru": 5134 - 24}


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


def test_table_lists_each_model_in_percent():
    rows = [
        {
            "model": "logistic",
            "paper": 0.32,
            "ours": 0.3125,
            "sd": 0.0125,
            "runs": [0.3, 0.325],
            "best": 0.33,
            "steps": 1500,
            "seconds": 4.25,
        },
        {
            "model": "cnn",
            "paper": 0.94,
            "ours": 0.9,
            "sd": 0.0,
            "runs": [0.9],
            "best": 0.91,
            "steps": 1500,
            "seconds": 12.0,
        },
    ]
    lines = format_table(rows).splitlines()
    assert lines[0].split()[:3] == ["model", "paper", "ours"] and len(lines) == 4
    assert set(lines[1]) <= {"-", " "}
    assert lines[2].split() == [
        "logistic",
        "32%",
        "31.2%",
        "±",
        "1.2",
        "30.0",
        "32.5",
        "33.0%",
        "1500",
        "4.2",
    ]
    assert lines[3].split()[:3] == ["cnn", "94%", "90.0%"]

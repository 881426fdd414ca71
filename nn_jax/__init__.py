"""nn_jax: pure-function neural-network layers for JAX.

Layers are immutable descriptions with pure ``init(key, x) -> (params, state)`` and
``apply(params, state, x, *, rng=None, train=False) -> (y, state)``; params and state are plain
nested dicts of arrays. Train with ``jax.grad`` and optax.
"""

from nn_jax import activations, data, initializers, losses, metrics, models
from nn_jax.activations import (
    elu,
    gelu,
    get_activation,
    identity,
    leaky_relu,
    log_softmax,
    relu,
    selu,
    sigmoid,
    silu,
    softmax,
    softplus,
    swish,
    tanh,
)
from nn_jax.combinators import Branch, Parallel, Residual, Sequential
from nn_jax.core import (
    ApplyFn,
    Block,
    InitFn,
    Lambda,
    Layer,
    Params,
    Scope,
    State,
    as_layer,
)
from nn_jax.dense import Dense, Flatten, Linear, Reshape
from nn_jax.errors import ConfigError, NNJaxError, ParamsError, RngError, ShapeError
from nn_jax.inspect import (
    apply_with_intermediates,
    flatten_params,
    param_count,
    summary,
    unflatten_params,
)
from nn_jax.train import (
    History,
    TrainState,
    fit,
    make_predict,
    make_stateful_train_step,
    make_train_step,
)

__version__ = "0.1.0"

__all__ = [
    "ApplyFn",
    "Block",
    "Branch",
    "ConfigError",
    "Dense",
    "Flatten",
    "History",
    "InitFn",
    "Lambda",
    "Layer",
    "Linear",
    "NNJaxError",
    "Parallel",
    "Params",
    "ParamsError",
    "Reshape",
    "Residual",
    "RngError",
    "Scope",
    "Sequential",
    "ShapeError",
    "State",
    "TrainState",
    "activations",
    "apply_with_intermediates",
    "as_layer",
    "data",
    "elu",
    "fit",
    "flatten_params",
    "gelu",
    "get_activation",
    "identity",
    "initializers",
    "leaky_relu",
    "log_softmax",
    "losses",
    "make_predict",
    "make_stateful_train_step",
    "make_train_step",
    "metrics",
    "models",
    "param_count",
    "relu",
    "selu",
    "sigmoid",
    "silu",
    "softmax",
    "softplus",
    "summary",
    "swish",
    "tanh",
    "unflatten_params",
]

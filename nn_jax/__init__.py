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
from nn_jax.conv import Conv, ConvTranspose
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
from nn_jax.embedding import Embedding
from nn_jax.errors import ConfigError, NNJaxError, ParamsError, RngError, ShapeError
from nn_jax.graph import (
    GATConv,
    GCNConv,
    Graph,
    GraphBatch,
    GraphPool,
    GraphSAGE,
    MessagePassing,
    SAGEConv,
    batch_graphs,
)
from nn_jax.inspect import (
    apply_with_intermediates,
    flatten_params,
    param_count,
    summary,
    unflatten_params,
)
from nn_jax.normalization import BatchNorm, GroupNorm, InstanceNorm, LayerNorm, RMSNorm
from nn_jax.pooling import AdaptiveAvgPool, AvgPool, GlobalAvgPool, GlobalMaxPool, MaxPool
from nn_jax.regularization import Dropout, DropPath, SpatialDropout
from nn_jax.resize import Upsample
from nn_jax.segment import segment_count, segment_max, segment_mean, segment_softmax, segment_sum
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
    "AdaptiveAvgPool",
    "ApplyFn",
    "AvgPool",
    "BatchNorm",
    "Block",
    "Branch",
    "ConfigError",
    "Conv",
    "ConvTranspose",
    "Dense",
    "DropPath",
    "Dropout",
    "Embedding",
    "Flatten",
    "GATConv",
    "GCNConv",
    "GlobalAvgPool",
    "GlobalMaxPool",
    "Graph",
    "GraphBatch",
    "GraphPool",
    "GraphSAGE",
    "GroupNorm",
    "History",
    "InitFn",
    "InstanceNorm",
    "Lambda",
    "Layer",
    "LayerNorm",
    "Linear",
    "MaxPool",
    "MessagePassing",
    "NNJaxError",
    "Parallel",
    "Params",
    "ParamsError",
    "RMSNorm",
    "Reshape",
    "Residual",
    "RngError",
    "SAGEConv",
    "Scope",
    "Sequential",
    "ShapeError",
    "SpatialDropout",
    "State",
    "TrainState",
    "Upsample",
    "activations",
    "apply_with_intermediates",
    "as_layer",
    "batch_graphs",
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
    "segment_count",
    "segment_max",
    "segment_mean",
    "segment_softmax",
    "segment_sum",
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

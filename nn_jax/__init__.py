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
from nn_jax.attention import MultiHeadAttention, attention_weights, dot_product_attention
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
from nn_jax.masks import (
    causal_mask,
    combine_masks,
    make_attention_mask,
    masked_mean_over_time,
    sequence_mask,
)
from nn_jax.normalization import BatchNorm, GroupNorm, InstanceNorm, LayerNorm, RMSNorm
from nn_jax.pooling import AdaptiveAvgPool, AvgPool, GlobalAvgPool, GlobalMaxPool, MaxPool
from nn_jax.positional import (
    LearnedPositionalEmbedding,
    RotaryEmbedding,
    SinusoidalPositionalEncoding,
    rotary_embedding,
    sinusoidal_encoding,
)
from nn_jax.recurrent import (
    RNN,
    Bidirectional,
    GRUCell,
    LSTMCell,
    RecurrentCell,
    SimpleRNNCell,
    StackedRNN,
)
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
from nn_jax.transformer import FeedForward, TransformerDecoderBlock, TransformerEncoderBlock

__version__ = "0.1.0"

__all__ = [
    "RNN",
    "AdaptiveAvgPool",
    "ApplyFn",
    "AvgPool",
    "BatchNorm",
    "Bidirectional",
    "Block",
    "Branch",
    "ConfigError",
    "Conv",
    "ConvTranspose",
    "Dense",
    "DropPath",
    "Dropout",
    "Embedding",
    "FeedForward",
    "Flatten",
    "GATConv",
    "GCNConv",
    "GRUCell",
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
    "LSTMCell",
    "Lambda",
    "Layer",
    "LayerNorm",
    "LearnedPositionalEmbedding",
    "Linear",
    "MaxPool",
    "MessagePassing",
    "MultiHeadAttention",
    "NNJaxError",
    "Parallel",
    "Params",
    "ParamsError",
    "RMSNorm",
    "RecurrentCell",
    "Reshape",
    "Residual",
    "RngError",
    "RotaryEmbedding",
    "SAGEConv",
    "Scope",
    "Sequential",
    "ShapeError",
    "SimpleRNNCell",
    "SinusoidalPositionalEncoding",
    "SpatialDropout",
    "StackedRNN",
    "State",
    "TrainState",
    "TransformerDecoderBlock",
    "TransformerEncoderBlock",
    "Upsample",
    "activations",
    "apply_with_intermediates",
    "as_layer",
    "attention_weights",
    "batch_graphs",
    "causal_mask",
    "combine_masks",
    "data",
    "dot_product_attention",
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
    "make_attention_mask",
    "make_predict",
    "make_stateful_train_step",
    "make_train_step",
    "masked_mean_over_time",
    "metrics",
    "models",
    "param_count",
    "relu",
    "rotary_embedding",
    "segment_count",
    "segment_max",
    "segment_mean",
    "segment_softmax",
    "segment_sum",
    "selu",
    "sequence_mask",
    "sigmoid",
    "silu",
    "sinusoidal_encoding",
    "softmax",
    "softplus",
    "summary",
    "swish",
    "tanh",
    "unflatten_params",
]

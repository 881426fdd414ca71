"""Dense building blocks and combinators."""

import jax

from nn_jax import (
    Branch,
    Dense,
    Flatten,
    Lambda,
    Parallel,
    Reshape,
    Residual,
    Sequential,
    pytorch_defaults,
)
from nn_jax.dense import PReLU
from nn_jax.models import MLP, SimpleNetwork
from tests.cases import Case, normal

CASES = [
    Case("dense", Dense(5), normal(4, 3)),
    Case("dense_no_bias_rank3", Dense(2, use_bias=False), normal(2, 3, 4)),
    Case("prelu_shared", PReLU(), normal(4, 3)),
    Case("prelu_per_channel_pytorch_layout", PReLU(3, channel_axis=1), normal(2, 3, 5)),
    Case("flatten", Flatten(), normal(2, 3, 4)),
    Case("reshape", Reshape((4, 3)), normal(2, 12)),
    Case("lambda_tanh", Lambda(jax.numpy.tanh), normal(3, 4)),
    Case("sequential", Sequential(Dense(4), jax.nn.tanh, Dense(2)), normal(5, 3)),
    Case("branch", Branch(Dense(2), {"id": jax.nn.tanh}.get("id")), normal(3, 4)),
    Case(
        "parallel",
        Parallel(Dense(2), Dense(3)),
        lambda g: (g.standard_normal((3, 4)), g.standard_normal((3, 2))),
    ),
    Case("residual", Residual(Sequential(Dense(4), jax.nn.tanh)), normal(3, 4)),
    Case(
        "residual_projection", Residual(Dense(2), shortcut=Dense(2, use_bias=False)), normal(3, 4)
    ),
    Case("simple_network", SimpleNetwork(), normal(8, 10)),
    Case("mlp", MLP((6, 5, 3), activation="tanh"), normal(4, 7)),
    # PyTorch's initialization wraps a Block in MapLayers: the same params, other draws.
    Case("map_layers_pytorch_mlp", pytorch_defaults(MLP((6, 3))), normal(4, 7)),
]

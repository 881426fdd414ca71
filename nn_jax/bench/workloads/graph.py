"""Graph workload: a two-layer GCN (Kipf & Welling, 2017) on a Cora-sized random graph.

``gcn``: ``GCN((16, 7))`` - ``GCNConv(16)``, relu, ``GCNConv(7)`` - full-batch node
classification on one synthetic graph with Cora's sizes (2708 nodes, 1433 features, 5278
undirected edges = 10556 directed ones, 7 classes); softmax cross-entropy over all nodes,
``adam(0.01)``. The "batch size" is the number of nodes; throughput counts nodes.

Every framework computes the same propagation, ``H = D^-1/2 (A + I) D^-1/2 X W + b`` with the
degrees recomputed in the step (as nn_jax's layer does), with ``jax.ops.segment_sum`` over the
edge list; none of Flax, Equinox or Haiku ships a GCN layer, so their versions are that
propagation inside each framework's own dense layer and parameter handling.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nn_jax.bench import frameworks as fw
from nn_jax.bench.registry import Impl, Reference, Workload, register
from nn_jax.graph import Graph, batch_graphs
from nn_jax.models.gnn import GCN

FEATURES, EDGES, CLASSES, HIDDEN, LR = 1433, 5278, 7, 16, 0.01
LAYERS = ("conv_0", "conv_1")


def random_graph(nodes: int, features: int, edges: int, seed: int, dtype: str) -> Any:
    """A random undirected graph without self loops as a ``GraphBatch`` of JAX arrays."""
    rng = np.random.default_rng(seed)
    pairs: set[tuple[int, int]] = set()
    while len(pairs) < edges:
        a, b = rng.integers(0, nodes, 2)
        if a != b:
            pairs.add((min(a, b), max(a, b)))
    s, r = np.array(sorted(pairs)).T
    x = rng.standard_normal((nodes, features), np.float32)
    g = batch_graphs([Graph(x, np.concatenate([s, r]), np.concatenate([r, s]))])
    return jax.tree.map(jnp.asarray, g)._replace(nodes=jnp.asarray(g.nodes, dtype))


def _gcn_setup(batch_size: int, dtype: str, key: jax.Array) -> Reference:
    nodes = batch_size
    edges = min(EDGES * nodes // 2708, nodes * (nodes - 1) // 2)
    seed = int(jax.random.randint(key, (), 0, 2**31 - 1))
    g = random_graph(nodes, FEATURES, edges, seed, dtype)
    labels = jax.random.randint(jax.random.fold_in(key, 1), (nodes,), 0, CLASSES)
    return fw.make_reference(GCN((HIDDEN, CLASSES)), (g, labels), key, dtype, lr=LR)


def propagate(h: jax.Array, senders: jax.Array, receivers: jax.Array) -> jax.Array:
    """``D^-1/2 (A + I) D^-1/2 h`` for the edge list ``senders -> receivers`` (raw JAX)."""
    n = h.shape[0]
    degree = 1 + jax.ops.segment_sum(jnp.ones(senders.shape, h.dtype), receivers, n)
    inv_sqrt = jax.lax.rsqrt(degree)
    norm = (inv_sqrt[senders] * inv_sqrt[receivers])[:, None]
    return jax.ops.segment_sum(h[senders] * norm, receivers, n) + h * (1 / degree)[:, None]


def _pairs(ref: Reference) -> list[tuple[jax.Array, jax.Array]]:
    """Each layer's ``(w, b)``, wherever the nn_jax layer keeps them (``fw.leaf``)."""
    return [(fw.leaf(ref.params[n], "w"), fw.leaf(ref.params[n], "b")) for n in LAYERS]


def _gcn_jax(ref: Reference) -> Impl:
    def predict(params: Any, g: Any) -> jax.Array:
        (w0, b0), (w1, b1) = params
        h = jax.nn.relu(propagate(g.nodes @ w0, g.senders, g.receivers) + b0[None, :])
        return propagate(h @ w1, g.senders, g.receivers) + b1[None, :]

    return fw.functional_impl(fw.loss_of(ref, predict), _pairs(ref), ref)


def _gcn_linen(ref: Reference) -> Impl:
    import flax.linen as nn

    class GCNLayer(nn.Module):
        features: int

        @nn.compact
        def __call__(self, x: jax.Array, g: Any) -> jax.Array:
            h = nn.Dense(self.features, use_bias=False, name="dense")(x)
            bias = self.param("bias", nn.initializers.zeros, (self.features,), x.dtype)
            return propagate(h, g.senders, g.receivers) + bias[None, :]

    class GCNLinen(nn.Module):
        @nn.compact
        def __call__(self, g: Any) -> jax.Array:
            h = nn.relu(GCNLayer(HIDDEN, name="conv_0")(g.nodes, g))
            return GCNLayer(CLASSES, name="conv_1")(h, g)

    params = {
        n: {"dense": {"kernel": w}, "bias": b}
        for n, (w, b) in zip(LAYERS, _pairs(ref), strict=True)
    }
    return fw.linen_impl(GCNLinen(), params, ref)


def _gcn_nnx_model(ref: Reference) -> Any:
    from flax import nnx

    class GCNLayer(nnx.Module):
        def __init__(self, w: jax.Array, b: jax.Array) -> None:
            self.dense = fw.nnx_linear(w)
            self.bias = nnx.Param(b)

        def __call__(self, x: jax.Array, g: Any) -> jax.Array:
            return propagate(self.dense(x), g.senders, g.receivers) + self.bias[None, :]

    class GCNNNX(nnx.Module):
        def __init__(self) -> None:
            self.layers = nnx.List([GCNLayer(w, b) for w, b in _pairs(ref)])

        def __call__(self, g: Any) -> jax.Array:
            return self.layers[1](nnx.relu(self.layers[0](g.nodes, g)), g)

    return GCNNNX()


def _gcn_equinox(ref: Reference) -> Impl:
    import equinox as eqx

    class GCNLayer(eqx.Module):
        weight: jax.Array  # (out, in), as eqx.nn.Linear stores it
        bias: jax.Array

        def __call__(self, x: jax.Array, g: Any) -> jax.Array:
            h = x @ self.weight.T  # the whole node set at once: a graph is one "example"
            return propagate(h, g.senders, g.receivers) + self.bias[None, :]

    class GCNEqx(eqx.Module):
        layers: list[GCNLayer]

        def __call__(self, g: Any) -> jax.Array:
            return self.layers[1](jax.nn.relu(self.layers[0](g.nodes, g)), g)

    model = GCNEqx([GCNLayer(w.T, b) for w, b in _pairs(ref)])
    return fw.equinox_impl(model, ref, predict=fw.call)


def _gcn_haiku(ref: Reference) -> Impl:
    import haiku as hk

    class GCNLayer(hk.Module):
        def __init__(self, features: int, name: str) -> None:
            super().__init__(name=name)
            self.features = features

        def __call__(self, x: jax.Array, g: Any) -> jax.Array:
            h = hk.Linear(self.features, with_bias=False, name="linear")(x)
            bias = hk.get_parameter("b", (self.features,), x.dtype, jnp.zeros)
            return propagate(h, g.senders, g.receivers) + bias[None, :]

    def forward(g: Any) -> jax.Array:
        h = jax.nn.relu(GCNLayer(HIDDEN, "conv_0")(g.nodes, g))
        return GCNLayer(CLASSES, "conv_1")(h, g)

    named = {}
    for n, (w, b) in zip(LAYERS, _pairs(ref), strict=True):
        named[n] = {"b": b}
        named[f"{n}/linear"] = {"w": w}
    return fw.haiku_impl(forward, named, ref)


def _gcn_torch(ref: Reference) -> Impl:
    import torch

    g, labels = ref.batch

    class GCNTorch(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weights = torch.nn.ParameterList(
                [torch.nn.Parameter(fw.to_torch(w)) for w, _ in _pairs(ref)]
            )
            self.biases = torch.nn.ParameterList(
                [torch.nn.Parameter(fw.to_torch(b)) for _, b in _pairs(ref)]
            )
            self.register_buffer("senders", fw.to_torch(g.senders))
            self.register_buffer("receivers", fw.to_torch(g.receivers))

        def propagate(self, h: Any) -> Any:
            s, r = self.senders, self.receivers
            ones = torch.ones(len(r), dtype=h.dtype, device=h.device)
            degree = 1 + torch.zeros(h.shape[0], dtype=h.dtype, device=h.device).index_add_(
                0, r, ones
            )
            inv_sqrt = degree.rsqrt()
            norm = (inv_sqrt[s] * inv_sqrt[r])[:, None]
            return torch.zeros_like(h).index_add_(0, r, h[s] * norm) + h / degree[:, None]

        def forward(self, x: Any) -> Any:
            h = torch.relu(self.propagate(x @ self.weights[0]) + self.biases[0])
            return self.propagate(h @ self.weights[1]) + self.biases[1]

    return fw.torch_impl(GCNTorch(), ref, (g.nodes, labels))


def _gcn_flops(ref: Reference) -> float:
    """Matmul FLOPs: ``X W0`` forward and its weight gradient (no input gradient), and
    ``H W1`` forward with both gradients (the propagation is gathers and scatters, not matmuls)."""
    n = ref.batch_size
    return 2 * (2 * n * FEATURES * HIDDEN) + 3 * (2 * n * HIDDEN * CLASSES)


register(
    Workload(
        "gcn",
        "GCN 1433-16-7 on a Cora-sized random graph (2708 nodes), softmax CE, adam(0.01)",
        2708,
        _gcn_setup,
        {
            "nn_jax": fw.nn_jax_builder,
            "jax": _gcn_jax,
            "flax_linen": _gcn_linen,
            **fw.nnx_builders(_gcn_nnx_model),
            "equinox": _gcn_equinox,
            "haiku": _gcn_haiku,
            "torch": _gcn_torch,
        },
        unit="nodes",
        analytic_flops=_gcn_flops,
    )
)

__all__ = ["propagate", "random_graph"]

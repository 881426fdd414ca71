"""The framework-overhead workload: a deep stack of tiny blocks, where a step is per-layer cost.

* ``overhead``: the model of Flax's ``benchmarks/nnx_graph_overhead.py`` at depth 100 -
  ``Block(1, 32)``, 98 ``Block(32, 32)``, ``Block(32, 1)``, each ``relu(batch_norm(x @ w + b))``
  with ``w ~ U[0, 1)``, ``b = 0`` and Flax's batch-norm defaults (momentum 0.99, epsilon 1e-5,
  batch statistics in training) - trained as Flax's ``benchmarks/nnx_simple_training.py``
  trains it: mean squared error, ``sgd(1e-3)``, batch 32 of ``y = 0.8 x^2 + 0.1 + N(0, 0.1^2)``
  at points ``x`` of ``linspace(0, 1, 100)``.

The arithmetic is negligible (32x32 matmuls on 32 rows), so a step costs what a framework
spends per layer: flattening, checking and dispatching 400 parameter and 200 statistic arrays,
and XLA's fixed cost per op of 100 small layers. Flax's figures for its script at depth 100
(NNX 7,962 us vs JAX 1,790 us per step) time a jitted step that does nothing, to isolate the
graph traversal; here every framework runs the same real training step instead.
Also different from Flax's script: its MLP applies ``relu`` twice after each hidden block
(idempotent: once here) and counts calls in an ``nnx.Variable`` (left out: no other framework
has one); its batch is resampled each step, this one is fixed.

The params travel from nn_jax's ``Sequential`` of ``Sequential(Dense, BatchNorm, relu)`` blocks
(``params["i"]["0"]`` holds ``w, b``, ``params["i"]["1"]`` holds ``scale, b``; the statistics
are ``state["i"]["1"]``) into each framework's own layers.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from nn_jax.bench import frameworks as fw
from nn_jax.bench.registry import Impl, Reference, Workload, register
from nn_jax.combinators import Sequential
from nn_jax.dense import Dense
from nn_jax.normalization import BatchNorm

DEPTH = 100
"""Blocks in the stack (read once by ``setup``; the builders take it from the reference)."""
WIDTH = 32
LR = 1e-3
BN_MOMENTUM = 0.99
BN_EPS = 1e-5


def _widths(depth: int) -> list[int]:
    """Each block's output size: ``WIDTH`` for all but the last, which gives 1."""
    return [WIDTH] * (depth - 1) + [1]


def _model(depth: int) -> Sequential:
    def block(features: int) -> Sequential:
        dense = Dense(features, w_init=jax.nn.initializers.uniform(1.0))
        return Sequential(dense, BatchNorm(momentum=BN_MOMENTUM, epsilon=BN_EPS), jax.nn.relu)

    return Sequential(*[block(features) for features in _widths(depth)])


def _setup(batch_size: int, dtype: str, key: jax.Array) -> Reference:
    kx, ky, kp = jax.random.split(key, 3)
    x = jax.random.randint(kx, (batch_size, 1), 0, 100) / 99  # points of linspace(0, 1, 100)
    y = 0.8 * x**2 + 0.1 + 0.1 * jax.random.normal(ky, x.shape)
    batch = (x.astype(dtype), y.astype(dtype))
    model = _model(DEPTH)
    return fw.make_reference(
        model, batch, kp, dtype, lr=LR, loss="mse", optimizer="sgd", depth=DEPTH
    )


def _blocks(ref: Reference) -> list[tuple[dict[str, jax.Array], dict[str, jax.Array]]]:
    """``(params, statistics)`` of each block in order: ``{"w", "b", "scale", "offset"}`` and
    ``{"mean", "var"}``, read from the nn_jax trees."""
    out = []
    for i in range(ref.config["depth"]):
        dense, norm = ref.params[str(i)]["0"], ref.params[str(i)]["1"]
        scale, offset = fw.norm_params(norm)
        p = {"w": dense["w"], "b": dense["b"], "scale": scale, "offset": offset}
        out.append((p, dict(ref.state[str(i)]["1"])))
    return out


def _bn_jax(x: jax.Array, p: Any, s: Any) -> tuple[jax.Array, Any]:
    """Training-mode batch norm of ``(N, C)`` over ``N``: statistics in float32, scale folded
    into the per-feature factor (as in :mod:`~nn_jax.bench.workloads.conv`), running
    averages updated."""
    xs = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    mean = jnp.mean(xs, axis=0)
    var = jnp.mean(jnp.square(xs - mean[None, :]), axis=0)
    factor = jax.lax.rsqrt(var + BN_EPS) * p["scale"].astype(xs.dtype)
    y = ((xs - mean[None, :]) * factor[None, :] + p["offset"].astype(xs.dtype)[None, :]).astype(
        x.dtype
    )
    m = BN_MOMENTUM
    new = {
        "mean": (m * s["mean"] + (1 - m) * mean).astype(s["mean"].dtype),
        "var": (m * s["var"] + (1 - m) * var).astype(s["var"].dtype),
    }
    return y, new


def _jax(ref: Reference) -> Impl:
    """Raw JAX: a list of per-block param dicts and a list of per-block statistics."""
    params, state = (list(t) for t in zip(*_blocks(ref), strict=True))

    def loss_fn(params: Any, state: Any, batch: Any) -> tuple[jax.Array, Any]:
        x, y = batch
        new_state = []
        for p, s in zip(params, state, strict=True):
            x, new = _bn_jax(x @ p["w"] + p["b"][None, :], p, s)
            x = jax.nn.relu(x)
            new_state.append(new)
        return fw.mse(x, y), new_state

    return fw.stateful_functional_impl(loss_fn, params, state, ref)


def _linen(ref: Reference) -> Impl:
    import flax.linen as nn

    depth = ref.config["depth"]

    class Block(nn.Module):
        features: int

        @nn.compact
        def __call__(self, x: jax.Array) -> jax.Array:
            x = nn.Dense(self.features, name="linear")(x)
            bn = nn.BatchNorm(
                use_running_average=False, momentum=BN_MOMENTUM, epsilon=BN_EPS, name="bn"
            )
            return nn.relu(bn(x))

    class Stack(nn.Module):
        @nn.compact
        def __call__(self, x: jax.Array) -> jax.Array:
            for i, features in enumerate(_widths(depth)):
                x = Block(features, name=f"block_{i}")(x)
            return x

    model = Stack()
    blocks = _blocks(ref)
    params = {
        f"block_{i}": {
            "linear": {"kernel": p["w"], "bias": p["b"]},
            "bn": {"scale": p["scale"], "bias": p["offset"]},
        }
        for i, (p, _) in enumerate(blocks)
    }
    stats = {f"block_{i}": {"bn": s} for i, (_, s) in enumerate(blocks)}

    def loss_fn(params: Any, state: Any, batch: Any) -> tuple[jax.Array, Any]:
        x, y = batch
        out, updates = model.apply(
            {"params": params, "batch_stats": state}, x, mutable=["batch_stats"]
        )
        return fw.mse(out, y), updates["batch_stats"]

    return fw.stateful_functional_impl(loss_fn, params, stats, ref)


def _haiku(ref: Reference) -> Impl:
    import haiku as hk

    depth = ref.config["depth"]

    def forward(x: jax.Array) -> jax.Array:
        for i, features in enumerate(_widths(depth)):
            x = hk.Linear(features, name=f"block_{i}_linear")(x)
            bn = hk.BatchNorm(True, True, BN_MOMENTUM, eps=BN_EPS, name=f"block_{i}_bn")
            x = jax.nn.relu(bn(x, is_training=True))
        return x

    model: Any = hk.without_apply_rng(hk.transform_with_state(forward))
    template, state = jax.jit(model.init)(jax.random.key(0), ref.batch[0])  # one compile
    named = {}
    for i, (p, _) in enumerate(_blocks(ref)):
        named[f"block_{i}_linear"] = {"w": p["w"], "b": p["b"]}
        named[f"block_{i}_bn"] = {"scale": p["scale"], "offset": p["offset"]}
    params = fw.haiku_params(template, named)

    def loss_fn(params: Any, state: Any, batch: Any) -> tuple[jax.Array, Any]:
        x, y = batch
        out, state = model.apply(params, state, x)
        return fw.mse(out, y), state

    return fw.stateful_functional_impl(loss_fn, params, state, ref)


def _nnx_model(ref: Reference) -> Any:
    from flax import nnx

    class Block(nnx.Module):
        def __init__(self, p: Any, s: Any) -> None:
            self.linear = fw.nnx_linear(p["w"], p["b"])
            # dtype: without it the float32 running statistics would promote the output.
            bn = nnx.BatchNorm(
                p["w"].shape[1],
                momentum=BN_MOMENTUM,
                epsilon=BN_EPS,
                dtype=p["w"].dtype,
                rngs=nnx.Rngs(0),
            )
            mean, var = (s[n].astype(getattr(bn, n).dtype) for n in ("mean", "var"))
            self.bn = fw.nnx_set(bn, scale=p["scale"], bias=p["offset"], mean=mean, var=var)

        def __call__(self, x: jax.Array) -> jax.Array:
            return nnx.relu(self.bn(self.linear(x)))

    class Stack(nnx.Module):
        def __init__(self, blocks: Any) -> None:
            self.blocks = nnx.List([Block(p, s) for p, s in blocks])

        def __call__(self, x: jax.Array) -> jax.Array:
            for block in self.blocks:
                x = block(x)
            return x

    return Stack(_blocks(ref))


def _equinox(ref: Reference) -> Impl:
    import equinox as eqx

    dtype = ref.params["0"]["0"]["w"].dtype

    class Block(eqx.Module):
        linear: eqx.nn.Linear
        bn: eqx.nn.BatchNorm

        def __init__(self, p: Any) -> None:
            self.linear = fw.eqx_linear(p["w"], p["b"])
            bn = eqx.nn.BatchNorm(
                p["w"].shape[1], "batch", BN_EPS, momentum=BN_MOMENTUM, mode="batch", dtype=dtype
            )
            self.bn = eqx.tree_at(lambda b: (b.weight, b.bias), bn, (p["scale"], p["offset"]))

        def __call__(self, x: jax.Array, state: Any) -> tuple[jax.Array, Any]:  # one example
            x, state = self.bn(self.linear(x), state)
            return jax.nn.relu(x), state

    class Stack(eqx.Module):
        blocks: list[Block]

        def __init__(self, blocks: Any) -> None:
            self.blocks = [Block(p) for p, _ in blocks]

        def __call__(self, x: jax.Array, state: Any) -> tuple[jax.Array, Any]:
            for block in self.blocks:
                x, state = block(x, state)
            return x, state

    return fw.equinox_stateful_impl(*eqx.nn.make_with_state(Stack)(_blocks(ref)), ref)


def _torch(ref: Reference) -> Impl:
    import torch

    layers: list[torch.nn.Module] = []
    for i in range(ref.config["depth"]):
        dense, norm = ref.params[str(i)]["0"], ref.params[str(i)]["1"]
        bn = torch.nn.BatchNorm1d(dense["w"].shape[1], eps=BN_EPS, momentum=1 - BN_MOMENTUM)
        layers += [fw.torch_linear(dense["w"], dense["b"]), fw.torch_norm(bn, norm)]
        layers.append(torch.nn.ReLU())
    return fw.torch_impl(torch.nn.Sequential(*layers), ref)


register(
    Workload(
        "overhead",
        f"depth-{DEPTH} stack of tiny Linear+BatchNorm+ReLU blocks, width {WIDTH} "
        "(Flax nnx_graph_overhead), MSE, sgd(1e-3)",
        32,
        _setup,
        {
            "nn_jax": fw.nn_jax_builder,
            "jax": _jax,
            "flax_linen": _linen,
            **fw.nnx_builders(_nnx_model),
            "equinox": _equinox,
            "haiku": _haiku,
            "torch": _torch,
        },
    )
)

__all__: list[str] = []  # registers its workloads on import

"""Dense workloads: the seed network (tiny, dispatch-bound) and an MNIST-sized MLP.

Both are stacks of affine layers ``x @ w + b`` with activations; every framework's version is
built from the same list of ``(w, b)`` pairs, read explicitly from the nn_jax params tree:

* ``seed``: ``SimpleNetwork`` 10-32-16-1 (relu, relu, sigmoid), binary cross-entropy on
  probabilities (PyTorch's ``BCELoss``), ``adam(0.01)``, batch 8.
* ``mlp``: ``MLP((512, 512, 10))`` on 784 inputs (relu; logits), softmax cross-entropy with
  integer labels, ``adam(1e-3)``, batch 256.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from benchmarks.workloads import (
    Impl,
    Reference,
    Workload,
    cast_floating,
    equinox_impl,
    functional_impl,
    nn_jax_builder,
    nnx_jit_impl,
    nnx_split_impl,
    register,
    to_torch,
    torch_impl,
)
from nn_jax import losses
from nn_jax.models.mlp import MLP, SimpleNetwork

Pairs = list[tuple[jax.Array, jax.Array]]


# --------------------------------------------------------------------------------------------
# Hand-written losses: what a raw-JAX user writes (the other JAX frameworks use them too).


def bce(probs: jax.Array, targets: jax.Array) -> jax.Array:
    """PyTorch's ``BCELoss``: mean of ``-(t log p + (1 - t) log(1 - p))``, logs clamped at -100."""
    log_p = jnp.maximum(jnp.log(probs), -100.0)
    log_1mp = jnp.maximum(jnp.log1p(-probs), -100.0)
    return -jnp.mean(targets * log_p + (1 - targets) * log_1mp)


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy with integer labels: ``mean(logsumexp(z) - z[label])``.

    ``logits: (..., C)``, ``labels: (...)``; the mean is over every position.
    """
    log_probs = jax.nn.log_softmax(logits)
    return -jnp.mean(jnp.take_along_axis(log_probs, labels[..., None], axis=-1))


def torch_loss(name: str) -> Callable[[Any, Any], Any]:
    """The PyTorch loss matching ``bce`` / ``cross_entropy``."""
    import torch.nn.functional as F

    return F.binary_cross_entropy if name == "bce" else F.cross_entropy


# --------------------------------------------------------------------------------------------
# The references.


def _seed_setup(batch_size: int, dtype: str, key: jax.Array) -> Reference:
    kx, ky, kp = jax.random.split(key, 3)
    x = jax.random.normal(kx, (batch_size, 10)).astype(dtype)
    y = jax.random.bernoulli(ky, 0.5, (batch_size, 1)).astype(dtype)
    model = SimpleNetwork()
    params, state = model.init(kp, jax.ShapeDtypeStruct(x.shape, jnp.float32))
    return Reference(
        model,
        cast_floating(params, dtype),
        state,
        (x, y),
        losses.binary_cross_entropy,
        optax.adam(0.01),
        dtype,
        batch_size,
        {"lr": 0.01, "loss": "bce", "final": "sigmoid"},
    )


def _mlp_setup(batch_size: int, dtype: str, key: jax.Array) -> Reference:
    kx, ky, kp = jax.random.split(key, 3)
    x = jax.random.normal(kx, (batch_size, 784)).astype(dtype)
    y = jax.random.randint(ky, (batch_size,), 0, 10)
    model = MLP((512, 512, 10))
    params, state = model.init(kp, jax.ShapeDtypeStruct(x.shape, jnp.float32))
    return Reference(
        model,
        cast_floating(params, dtype),
        state,
        (x, y),
        losses.softmax_cross_entropy_with_integer_labels,
        optax.adam(1e-3),
        dtype,
        batch_size,
        {"lr": 1e-3, "loss": "ce", "final": None},
    )


def pairs(ref: Reference) -> Pairs:
    """The ``(w, b)`` of each affine layer, in order, read from the nn_jax params tree.

    ``SimpleNetwork``: ``params["layers"]["0" | "2" | "4"]``; ``MLP``: ``params["dense_i"]``.
    """
    if isinstance(ref.model, SimpleNetwork):
        layers = [ref.params["layers"][k] for k in ("0", "2", "4")]
    else:
        layers = [ref.params[f"dense_{i}"] for i in range(len(ref.model.widths))]
    return [(layer["w"], layer["b"]) for layer in layers]


def _final(ref: Reference) -> Callable[[jax.Array], jax.Array]:
    return jax.nn.sigmoid if ref.config["final"] == "sigmoid" else (lambda z: z)


def _loss(ref: Reference) -> Callable[[jax.Array, jax.Array], jax.Array]:
    return bce if ref.config["loss"] == "bce" else cross_entropy


def _batch_loss(
    predict: Callable[[Any, jax.Array], jax.Array], ref: Reference
) -> Callable[[Any, Any], jax.Array]:
    loss = _loss(ref)

    def loss_fn(model_or_params: Any, batch: Any) -> jax.Array:
        inputs, targets = batch
        return loss(predict(model_or_params, inputs), targets)

    return loss_fn


# --------------------------------------------------------------------------------------------
# Raw JAX: a list of (w, b) tuples, as in JAX's own examples.


def _jax(ref: Reference) -> Impl:
    final = _final(ref)

    def predict(params: Pairs, x: jax.Array) -> jax.Array:
        for w, b in params[:-1]:
            x = jax.nn.relu(x @ w + b[None, :])
        w, b = params[-1]
        return final(x @ w + b[None, :])

    return functional_impl(_batch_loss(predict, ref), pairs(ref), ref)


# --------------------------------------------------------------------------------------------
# Flax Linen.


def _linen(ref: Reference) -> Impl:
    import flax.linen as nn

    widths = tuple(w.shape[1] for w, _ in pairs(ref))
    final = _final(ref)

    class Stack(nn.Module):
        @nn.compact
        def __call__(self, x: jax.Array) -> jax.Array:
            for width in widths[:-1]:
                x = nn.relu(nn.Dense(width)(x))
            return final(nn.Dense(widths[-1])(x))

    params = {
        "params": {f"Dense_{i}": {"kernel": w, "bias": b} for i, (w, b) in enumerate(pairs(ref))}
    }
    return functional_impl(_batch_loss(Stack().apply, ref), params, ref)


# --------------------------------------------------------------------------------------------
# Flax NNX.


def _nnx_model(ref: Reference) -> Any:
    from flax import nnx

    final = _final(ref)

    class Stack(nnx.Module):
        def __init__(self, layers: Pairs) -> None:
            rngs = nnx.Rngs(0)
            self.layers = nnx.List(
                [
                    nnx.Linear(w.shape[0], w.shape[1], param_dtype=w.dtype, rngs=rngs)
                    for w, _ in layers
                ]
            )
            for layer, (w, b) in zip(self.layers, layers, strict=True):
                layer.kernel.set_value(w)
                layer.bias.set_value(b)

        def __call__(self, x: jax.Array) -> jax.Array:
            for layer in self.layers[:-1]:
                x = nnx.relu(layer(x))
            return final(self.layers[-1](x))

    return Stack(pairs(ref))


def _nnx(ref: Reference) -> Impl:
    return nnx_jit_impl(_nnx_model(ref), _batch_loss(lambda m, x: m(x), ref), ref)


def _nnx_split(ref: Reference) -> Impl:
    return nnx_split_impl(_nnx_model(ref), _batch_loss(lambda m, x: m(x), ref), ref)


# --------------------------------------------------------------------------------------------
# Equinox: per-example modules, vmapped over the batch (the idiomatic way).


def _equinox(ref: Reference) -> Impl:
    import equinox as eqx

    final = _final(ref)

    class Stack(eqx.Module):
        layers: list[eqx.nn.Linear]

        def __init__(self, layers: Pairs) -> None:
            keys = jax.random.split(jax.random.key(0), len(layers))
            self.layers = [
                eqx.tree_at(
                    lambda lin: (lin.weight, lin.bias),
                    eqx.nn.Linear(w.shape[0], w.shape[1], key=k, dtype=w.dtype),
                    (w.T, b),
                )
                for (w, b), k in zip(layers, keys, strict=True)
            ]

        def __call__(self, x: jax.Array) -> jax.Array:
            for layer in self.layers[:-1]:
                x = jax.nn.relu(layer(x))
            return final(self.layers[-1](x))

    return equinox_impl(Stack(pairs(ref)), _batch_loss(lambda m, x: jax.vmap(m)(x), ref), ref)


# --------------------------------------------------------------------------------------------
# Haiku.


def _haiku(ref: Reference) -> Impl:
    import haiku as hk

    widths = tuple(w.shape[1] for w, _ in pairs(ref))
    final = _final(ref)

    def forward(x: jax.Array) -> jax.Array:
        for width in widths[:-1]:
            x = jax.nn.relu(hk.Linear(width)(x))
        return final(hk.Linear(widths[-1])(x))

    model = hk.without_apply_rng(hk.transform(forward))
    names = ["linear"] + [f"linear_{i}" for i in range(1, len(widths))]
    params = {name: {"w": w, "b": b} for name, (w, b) in zip(names, pairs(ref), strict=True)}
    return functional_impl(_batch_loss(model.apply, ref), params, ref)


# --------------------------------------------------------------------------------------------
# PyTorch eager.


def _torch(ref: Reference) -> Impl:
    import torch

    layers: list[torch.nn.Module] = []
    for i, (w, b) in enumerate(pairs(ref)):
        linear = torch.nn.Linear(w.shape[0], w.shape[1])
        with torch.no_grad():
            linear.weight.copy_(to_torch(w.T))
            linear.bias.copy_(to_torch(b))
        layers.append(linear)
        if i < len(pairs(ref)) - 1:
            layers.append(torch.nn.ReLU())
    if ref.config["final"] == "sigmoid":
        layers.append(torch.nn.Sigmoid())
    model = torch.nn.Sequential(*layers).to(to_torch(ref.batch[0]).dtype)
    return torch_impl(model, torch_loss(ref.config["loss"]), ref)


BUILDERS = {
    "nn_jax": nn_jax_builder,
    "jax": _jax,
    "flax_linen": _linen,
    "flax_nnx": _nnx,
    "flax_nnx_split": _nnx_split,
    "equinox": _equinox,
    "haiku": _haiku,
    "torch": _torch,
}


def _mlp_flops(ref: Reference) -> float:
    """Matmul FLOPs of a training step: ``2 m k n`` forward, twice that backward (dx and dw).

    The first layer's input gradient is not needed (the input is data), so it is left out.
    """
    m = ref.batch_size
    dims = [(w.shape[0], w.shape[1]) for w, _ in pairs(ref)]
    forward = sum(2 * m * k * n for k, n in dims)
    k0, n0 = dims[0]
    return 3 * forward - 2 * m * k0 * n0


register(
    Workload(
        "seed",
        "seed SimpleNetwork 10-32-16-1, BCE, adam(0.01)",
        8,
        _seed_setup,
        BUILDERS,
        analytic_flops=_mlp_flops,
    )
)
register(
    Workload(
        "mlp",
        "MLP 784-512-512-10, softmax CE, adam(1e-3)",
        256,
        _mlp_setup,
        BUILDERS,
        analytic_flops=_mlp_flops,
    )
)

__all__ = ["bce", "cross_entropy", "pairs"]

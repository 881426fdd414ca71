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

from nn_jax.bench import frameworks as fw
from nn_jax.bench.registry import Impl, Reference, Workload, register
from nn_jax.models.mlp import MLP, SimpleNetwork

Pairs = list[tuple[jax.Array, jax.Array]]


def _seed_setup(batch_size: int, dtype: str, key: jax.Array) -> Reference:
    kx, ky, kp = jax.random.split(key, 3)
    x = jax.random.normal(kx, (batch_size, 10)).astype(dtype)
    y = jax.random.bernoulli(ky, 0.5, (batch_size, 1)).astype(dtype)
    return fw.make_reference(
        SimpleNetwork(), (x, y), kp, dtype, lr=0.01, loss="bce", final="sigmoid"
    )


def _mlp_setup(batch_size: int, dtype: str, key: jax.Array) -> Reference:
    kx, ky, kp = jax.random.split(key, 3)
    x = jax.random.normal(kx, (batch_size, 784)).astype(dtype)
    y = jax.random.randint(ky, (batch_size,), 0, 10)
    return fw.make_reference(MLP((512, 512, 10)), (x, y), kp, dtype, lr=1e-3, final=None)


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


def _stack(layers: Any, final: Callable[[jax.Array], jax.Array], x: jax.Array) -> jax.Array:
    """``final(layer_n(... relu(layer_1(x))))`` for callables ``layers``."""
    for layer in layers[:-1]:
        x = jax.nn.relu(layer(x))
    return final(layers[-1](x))


def _jax(ref: Reference) -> Impl:
    """Raw JAX: a list of ``(w, b)`` tuples, as in JAX's own examples."""
    final = _final(ref)

    def predict(params: Pairs, x: jax.Array) -> jax.Array:
        for w, b in params[:-1]:
            x = jax.nn.relu(x @ w + b[None, :])
        w, b = params[-1]
        return final(x @ w + b[None, :])

    return fw.functional_impl(fw.loss_of(ref, predict), pairs(ref), ref)


def _linen(ref: Reference) -> Impl:
    import flax.linen as nn

    widths, final = [w.shape[1] for w, _ in pairs(ref)], _final(ref)

    class Stack(nn.Module):
        @nn.compact
        def __call__(self, x: jax.Array) -> jax.Array:
            return _stack([nn.Dense(width) for width in widths], final, x)

    params = {f"Dense_{i}": {"kernel": w, "bias": b} for i, (w, b) in enumerate(pairs(ref))}
    return fw.linen_impl(Stack(), params, ref)


def _nnx_model(ref: Reference) -> Any:
    from flax import nnx

    final = _final(ref)

    class Stack(nnx.Module):
        def __init__(self, layers: Pairs) -> None:
            self.layers = nnx.List([fw.nnx_linear(w, b) for w, b in layers])

        def __call__(self, x: jax.Array) -> jax.Array:
            return _stack(self.layers, final, x)

    return Stack(pairs(ref))


def _equinox(ref: Reference) -> Impl:
    """Equinox: per-example modules, vmapped over the batch (the idiomatic way)."""
    import equinox as eqx

    final = _final(ref)

    class Stack(eqx.Module):
        layers: list[eqx.nn.Linear]

        def __call__(self, x: jax.Array) -> jax.Array:
            return _stack(self.layers, final, x)

    return fw.equinox_impl(Stack([fw.eqx_linear(w, b) for w, b in pairs(ref)]), ref)


def _haiku(ref: Reference) -> Impl:
    import haiku as hk

    widths, final = [w.shape[1] for w, _ in pairs(ref)], _final(ref)

    def forward(x: jax.Array) -> jax.Array:
        return _stack([hk.Linear(width) for width in widths], final, x)

    names = ["linear"] + [f"linear_{i}" for i in range(1, len(widths))]
    named = {name: {"w": w, "b": b} for name, (w, b) in zip(names, pairs(ref), strict=True)}
    return fw.haiku_impl(forward, named, ref)


def _torch(ref: Reference) -> Impl:
    import torch

    layers: list[torch.nn.Module] = []
    for w, b in pairs(ref):
        layers += [fw.torch_linear(w, b), torch.nn.ReLU()]
    layers[-1] = torch.nn.Sigmoid() if ref.config["final"] == "sigmoid" else torch.nn.Identity()
    return fw.torch_impl(torch.nn.Sequential(*layers), ref)


BUILDERS = {
    "nn_jax": fw.nn_jax_builder,
    "jax": _jax,
    "flax_linen": _linen,
    **fw.nnx_builders(_nnx_model),
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

__all__ = ["pairs"]

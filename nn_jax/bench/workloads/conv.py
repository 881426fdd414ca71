"""Convolutional workloads: a LeNet-like CNN and a small ResNet (with batch norm).

* ``cnn``: ``LeNet(10)`` on 28x28x1 images - conv 5x5 (6) relu, 2x2 max pool, conv 5x5 (16)
  relu, 2x2 max pool, dense 120, 84, 10 ("SAME" convs, so 7x7x16 = 784 features); softmax
  cross-entropy, ``adam(1e-3)``, batch 128.
* ``resnet``: ``ResNet(10, stage_sizes=(1, 1, 1), width=16)`` (ResNet-8: a 3x3 stem and one
  basic block per stage, 16/32/64 channels, batch norm with momentum 0.9) on 32x32x3 images;
  softmax cross-entropy, ``adam(1e-3)``, batch 32. Stateful: every framework threads the batch
  statistics (running averages) through the step.

Every framework uses channels-last ("NHWC") images except Equinox and PyTorch, whose layers are
channels-first: they get the same batch transposed once (outside the timed step) and the
kernels transposed to their ``(O, I, H, W)`` layout. Batch norm is each framework's own layer
with its defaults: Flax and Haiku compute the batch variance in one pass
(``E[x^2] - E[x]^2``), nn_jax, raw JAX, Equinox and PyTorch in two (measured: no speed
difference on CPU; where the scale is applied does matter, see ``_bn_jax``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from nn_jax.bench import frameworks as fw
from nn_jax.bench.registry import Impl, Reference, Workload, register
from nn_jax.models.cnn import LeNet, ResNet

LR = 1e-3
BN_MOMENTUM = 0.9
BN_EPS = 1e-5


def _setup(
    model: Any, shape: tuple[int, ...], batch_size: int, dtype: str, key: jax.Array
) -> Reference:
    kx, ky, kp = jax.random.split(key, 3)
    x = jax.random.normal(kx, (batch_size, *shape)).astype(dtype)
    y = jax.random.randint(ky, (batch_size,), 0, 10)
    return fw.make_reference(model, (x, y), kp, dtype, lr=LR)


def _cnn_setup(batch_size: int, dtype: str, key: jax.Array) -> Reference:
    return _setup(LeNet(10), (28, 28, 1), batch_size, dtype, key)


def _resnet_setup(batch_size: int, dtype: str, key: jax.Array) -> Reference:
    model = ResNet(10, stage_sizes=(1, 1, 1), width=16, bn_momentum=BN_MOMENTUM)
    return _setup(model, (32, 32, 3), batch_size, dtype, key)


def _nchw(ref: Reference) -> tuple[jax.Array, jax.Array]:
    x, y = ref.batch
    return jnp.transpose(x, (0, 3, 1, 2)), y


def _oihw(w: jax.Array) -> jax.Array:
    return jnp.transpose(w, (3, 2, 0, 1))


def _conv(x: jax.Array, w: jax.Array, strides: int = 1) -> jax.Array:
    return jax.lax.conv_general_dilated(
        x, w, (strides, strides), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


# ============================================================================================
# LeNet.

LENET_CONVS = ("conv_0", "conv_1")
LENET_DENSES = ("dense_0", "dense_1", "head")


def _lenet_pairs(ref: Reference) -> tuple[list[tuple[jax.Array, jax.Array]], ...]:
    """``(convs, denses)``: the ``(w, b)`` of each layer in order, from the nn_jax params."""
    p = ref.params
    return (
        [(p[n]["w"], p[n]["b"]) for n in LENET_CONVS],
        [(p[n]["w"], p[n]["b"]) for n in LENET_DENSES],
    )


def _max_pool(x: jax.Array) -> jax.Array:
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")


def _lenet_jax(ref: Reference) -> Impl:
    def predict(params: Any, x: jax.Array) -> jax.Array:
        convs, denses = params
        for w, b in convs:
            x = _max_pool(jax.nn.relu(_conv(x, w) + b.reshape(1, 1, 1, -1)))
        x = x.reshape(x.shape[0], -1)
        for w, b in denses[:-1]:
            x = jax.nn.relu(x @ w + b[None, :])
        w, b = denses[-1]
        return x @ w + b[None, :]

    return fw.functional_impl(fw.loss_of(ref, predict), _lenet_pairs(ref), ref)


def _lenet_head(denses: Any, x: jax.Array) -> jax.Array:
    """The dense layers after the convolutions: relu between them, logits out."""
    for dense in denses[:-1]:
        x = jax.nn.relu(dense(x))
    return denses[-1](x)


def _lenet_linen(ref: Reference) -> Impl:
    import flax.linen as nn

    class LeNetLinen(nn.Module):
        @nn.compact
        def __call__(self, x: jax.Array) -> jax.Array:
            for name, features in zip(LENET_CONVS, (6, 16), strict=True):
                x = nn.relu(nn.Conv(features, (5, 5), padding="SAME", name=name)(x))
                x = nn.max_pool(x, (2, 2), (2, 2))
            denses = [
                nn.Dense(n, name=name) for n, name in zip((120, 84, 10), LENET_DENSES, strict=True)
            ]
            return _lenet_head(denses, x.reshape(x.shape[0], -1))

    return fw.linen_impl(LeNetLinen(), fw.rename(ref.params, fw.FLAX_NAMES), ref)


def _lenet_nnx_model(ref: Reference) -> Any:
    from flax import nnx

    convs, denses = _lenet_pairs(ref)

    def conv(w: jax.Array, b: jax.Array) -> nnx.Conv:
        layer = nnx.Conv(w.shape[2], w.shape[3], (5, 5), padding="SAME", rngs=nnx.Rngs(0))
        return fw.nnx_set(layer, kernel=w, bias=b)

    class LeNetNNX(nnx.Module):
        def __init__(self) -> None:
            self.convs = nnx.List([conv(w, b) for w, b in convs])
            self.denses = nnx.List([fw.nnx_linear(w, b) for w, b in denses])

        def __call__(self, x: jax.Array) -> jax.Array:
            for conv in self.convs:
                x = nnx.max_pool(nnx.relu(conv(x)), (2, 2), (2, 2))
            return _lenet_head(self.denses, x.reshape(x.shape[0], -1))

    return LeNetNNX()


def _lenet_equinox(ref: Reference) -> Impl:
    import equinox as eqx

    convs, denses = _lenet_pairs(ref)

    def conv(w: jax.Array, b: jax.Array) -> eqx.nn.Conv2d:
        cin, cout, key = w.shape[2], w.shape[3], jax.random.key(0)
        layer = eqx.nn.Conv2d(cin, cout, 5, padding="SAME", key=key, dtype=w.dtype)
        return eqx.tree_at(lambda c: (c.weight, c.bias), layer, (_oihw(w), b.reshape(-1, 1, 1)))

    class LeNetEqx(eqx.Module):
        convs: list[eqx.nn.Conv2d]
        denses: list[eqx.nn.Linear]
        pool: eqx.nn.MaxPool2d

        def __call__(self, x: jax.Array) -> jax.Array:  # one (C, H, W) image
            for conv in self.convs:
                x = self.pool(jax.nn.relu(conv(x)))
            # Flatten in (H, W, C) order, as the other frameworks' dense_0 expects.
            return _lenet_head(self.denses, jnp.transpose(x, (1, 2, 0)).reshape(-1))

    model = LeNetEqx(
        [conv(w, b) for w, b in convs],
        [fw.eqx_linear(w, b) for w, b in denses],
        eqx.nn.MaxPool2d(2, 2),
    )
    return fw.equinox_impl(model, ref, _nchw(ref))


def _lenet_haiku(ref: Reference) -> Impl:
    import haiku as hk

    def forward(x: jax.Array) -> jax.Array:
        for name, features in zip(LENET_CONVS, (6, 16), strict=True):
            x = jax.nn.relu(hk.Conv2D(features, 5, padding="SAME", name=name)(x))
            x = hk.max_pool(x, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
        denses = [
            hk.Linear(n, name=name) for n, name in zip((120, 84, 10), LENET_DENSES, strict=True)
        ]
        return _lenet_head(denses, hk.Flatten()(x))

    return fw.haiku_impl(forward, ref.params, ref)


def _lenet_torch(ref: Reference) -> Impl:
    import torch

    convs, denses = _lenet_pairs(ref)
    layers: list[torch.nn.Module] = []
    for w, b in convs:
        conv = torch.nn.Conv2d(*w.shape[2:], 5, padding="same")
        with torch.no_grad():
            conv.weight.copy_(fw.to_torch(_oihw(w)))
            conv.bias.copy_(fw.to_torch(b))
        layers += [conv, torch.nn.ReLU(), torch.nn.MaxPool2d(2)]
    # Flatten in (H, W, C) order, as the JAX frameworks' dense_0 expects.
    layers.append(_nhwc_flatten())
    for w, b in denses:
        layers += [fw.torch_linear(w, b), torch.nn.ReLU()]
    return fw.torch_impl(torch.nn.Sequential(*layers[:-1]), ref, _nchw(ref))


def _nhwc_flatten() -> Any:
    """A torch module flattening ``(N, C, H, W)`` in ``(H, W, C)`` order."""
    import torch

    class NHWCFlatten(torch.nn.Module):
        def forward(self, x: Any) -> Any:
            return x.permute(0, 2, 3, 1).flatten(1)

    return NHWCFlatten()


def _lenet_flops(ref: Reference) -> float:
    """Conv and matmul FLOPs of a training step (forward ``F``; backward ``2F`` less conv_0's
    input gradient, which is not needed)."""
    n = ref.batch_size
    conv_0 = 2 * n * 28 * 28 * 6 * 5 * 5 * 1
    conv_1 = 2 * n * 14 * 14 * 16 * 5 * 5 * 6
    dense = 2 * n * (784 * 120 + 120 * 84 + 84 * 10)
    forward = conv_0 + conv_1 + dense
    return 3 * forward - conv_0


register(
    Workload(
        "cnn",
        "LeNet-like CNN on 28x28x1, softmax CE, adam(1e-3)",
        128,
        _cnn_setup,
        {
            "nn_jax": fw.nn_jax_builder,
            "jax": _lenet_jax,
            "flax_linen": _lenet_linen,
            **fw.nnx_builders(_lenet_nnx_model),
            "equinox": _lenet_equinox,
            "haiku": _lenet_haiku,
            "torch": _lenet_torch,
        },
        analytic_flops=_lenet_flops,
    )
)


# ============================================================================================
# ResNet-8.
#
# Layer names follow nn_jax's ResNet: "stem", "stem_bn", "stage_{i}_block_0" holding "conv_0",
# "bn_0", "conv_1", "bn_1" and (stages 1, 2) the projection "proj", "proj_bn"; then "head".


def _blocks(ref: Reference) -> list[tuple[str, int, int, int]]:
    """``(name, in_channels, out_channels, stride)`` of each basic block."""
    model = ref.model
    out, cin = [], model.width
    for i, blocks in enumerate(model.stage_sizes):
        for j in range(blocks):
            cout = model.width * 2**i
            out.append((f"stage_{i}_block_{j}", cin, cout, 2 if i > 0 and j == 0 else 1))
            cin = cout
    return out


def _bn_jax(x: jax.Array, p: Any, s: Any) -> tuple[jax.Array, Any]:
    """Training-mode batch norm: statistics in float32, running averages updated.

    ``scale`` is folded into the per-channel ``rsqrt(var + eps)`` factor, as Flax and Haiku do:
    ``y = (x - mean) * (scale / sqrt(var + eps)) + b``. (Applying it after standardizing,
    ``((x - mean) / sqrt(var + eps)) * scale + b``, keeps a full-size standardized tensor
    for the backward pass: a 1.4x slower ResNet step on CPU, see the README.)
    """
    scale, offset = fw.norm_params(p)
    xs = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    mean = jnp.mean(xs, axis=(0, 1, 2), keepdims=True)
    var = jnp.mean(jnp.square(xs - mean), axis=(0, 1, 2), keepdims=True)
    factor = jax.lax.rsqrt(var + BN_EPS) * scale.astype(xs.dtype).reshape(1, 1, 1, -1)
    y = ((xs - mean) * factor + offset.astype(xs.dtype).reshape(1, 1, 1, -1)).astype(x.dtype)
    m = BN_MOMENTUM
    new = {
        "mean": (m * s["mean"] + (1 - m) * mean.reshape(-1)).astype(s["mean"].dtype),
        "var": (m * s["var"] + (1 - m) * var.reshape(-1)).astype(s["var"].dtype),
    }
    return y, new


def _resnet_jax(ref: Reference) -> Impl:
    blocks = _blocks(ref)
    p, s = ref.params, ref.state
    # Raw-JAX layout: the stem, a list of per-block dicts, the head (w, b).
    params = {
        "stem": (p["stem"]["w"], p["stem_bn"]),
        "blocks": [p[name] for name, *_ in blocks],
        "head": (p["head"]["w"], p["head"]["b"]),
    }
    state = {"stem": s["stem_bn"], "blocks": [s[name] for name, *_ in blocks]}
    strides = [stride for *_, stride in blocks]

    def block(x: jax.Array, bp: Any, bs: Any, stride: int) -> tuple[jax.Array, Any]:
        new = {}
        h, new["bn_0"] = _bn_jax(_conv(x, bp["conv_0"]["w"], stride), bp["bn_0"], bs["bn_0"])
        h, new["bn_1"] = _bn_jax(_conv(jax.nn.relu(h), bp["conv_1"]["w"]), bp["bn_1"], bs["bn_1"])
        if "proj" in bp:
            x, new["proj_bn"] = _bn_jax(
                _conv(x, bp["proj"]["w"], stride), bp["proj_bn"], bs["proj_bn"]
            )
        return jax.nn.relu(h + x), new

    def loss_fn(params: Any, state: Any, batch: Any) -> tuple[jax.Array, Any]:
        x, labels = batch
        w, bn = params["stem"]
        x, stem_state = _bn_jax(_conv(x, w), bn, state["stem"])
        x, block_states = jax.nn.relu(x), []
        for bp, bs, stride in zip(params["blocks"], state["blocks"], strides, strict=True):
            x, new = block(x, bp, bs, stride)
            block_states.append(new)
        w, b = params["head"]
        logits = jnp.mean(x, axis=(1, 2)) @ w + b[None, :]
        return fw.cross_entropy(logits, labels), {"stem": stem_state, "blocks": block_states}

    return fw.stateful_functional_impl(loss_fn, params, state, ref)


def _resnet_linen(ref: Reference) -> Impl:
    import flax.linen as nn

    blocks = _blocks(ref)
    width = ref.model.width

    def bn(name: str) -> nn.BatchNorm:
        return nn.BatchNorm(
            use_running_average=False, momentum=BN_MOMENTUM, epsilon=BN_EPS, name=name
        )

    def conv(features: int, kernel: int, stride: int, name: str) -> nn.Conv:
        kernel_size = (kernel, kernel)
        return nn.Conv(features, kernel_size, stride, padding="SAME", use_bias=False, name=name)

    class Block(nn.Module):
        features: int
        strides: int
        project: bool

        @nn.compact
        def __call__(self, x: jax.Array) -> jax.Array:
            h = nn.relu(bn("bn_0")(conv(self.features, 3, self.strides, "conv_0")(x)))
            h = bn("bn_1")(conv(self.features, 3, 1, "conv_1")(h))
            if self.project:
                x = bn("proj_bn")(conv(self.features, 1, self.strides, "proj")(x))
            return nn.relu(h + x)

    class ResNetLinen(nn.Module):
        @nn.compact
        def __call__(self, x: jax.Array) -> jax.Array:
            x = nn.relu(bn("stem_bn")(conv(width, 3, 1, "stem")(x)))
            for name, cin, cout, stride in blocks:
                x = Block(cout, stride, stride != 1 or cin != cout, name=name)(x)
            return nn.Dense(10, name="head")(jnp.mean(x, axis=(1, 2)))

    model = ResNetLinen()

    def loss_fn(params: Any, state: Any, batch: Any) -> tuple[jax.Array, Any]:
        x, labels = batch
        logits, updates = model.apply(
            {"params": params, "batch_stats": state}, x, mutable=["batch_stats"]
        )
        return fw.cross_entropy(logits, labels), updates["batch_stats"]

    return fw.stateful_functional_impl(
        loss_fn, fw.rename(ref.params, fw.FLAX_NAMES), ref.state, ref
    )


def _resnet_haiku(ref: Reference) -> Impl:
    import haiku as hk

    blocks = _blocks(ref)
    width = ref.model.width

    def bn(name: str) -> Callable[[jax.Array], jax.Array]:
        module = hk.BatchNorm(True, True, BN_MOMENTUM, eps=BN_EPS, name=name)
        return lambda x: module(x, is_training=True)

    def conv(features: int, kernel: int, stride: int, name: str) -> hk.Conv2D:
        return hk.Conv2D(features, kernel, stride, padding="SAME", with_bias=False, name=name)

    def forward(x: jax.Array) -> jax.Array:
        x = jax.nn.relu(bn("stem_bn")(conv(width, 3, 1, "stem")(x)))
        for name, cin, cout, stride in blocks:
            h = jax.nn.relu(bn(f"{name}_bn_0")(conv(cout, 3, stride, f"{name}_conv_0")(x)))
            h = bn(f"{name}_bn_1")(conv(cout, 3, 1, f"{name}_conv_1")(h))
            if stride != 1 or cin != cout:
                x = bn(f"{name}_proj_bn")(conv(cout, 1, stride, f"{name}_proj")(x))
            x = jax.nn.relu(h + x)
        return hk.Linear(10, name="head")(jnp.mean(x, axis=(1, 2)))

    model: Any = hk.without_apply_rng(hk.transform_with_state(forward))
    template, state = model.init(jax.random.key(0), ref.batch[0])
    # Haiku's names: nn_jax's "a/b" paths joined by "_"; a batch norm's offset is "offset".
    flat = {}
    for name, layer in ref.params.items():
        for sub, leaves in layer.items() if name.startswith("stage_") else [(None, layer)]:
            named = fw.haiku_norm(leaves) if "scale" in leaves else leaves
            flat[name if sub is None else f"{name}_{sub}"] = named
    params = jax.tree.map(lambda t, v: v.reshape(t.shape), template, flat)

    def loss_fn(params: Any, state: Any, batch: Any) -> tuple[jax.Array, Any]:
        x, labels = batch
        logits, state = model.apply(params, state, x)
        return fw.cross_entropy(logits, labels), state

    return fw.stateful_functional_impl(loss_fn, params, state, ref)


def _resnet_nnx_model(ref: Reference) -> Any:
    from flax import nnx

    blocks = _blocks(ref)
    rngs = nnx.Rngs(0)

    def conv(cin: int, cout: int, kernel: int, stride: int, w: jax.Array) -> Any:
        layer = nnx.Conv(
            cin, cout, (kernel, kernel), strides=stride, padding="SAME", use_bias=False, rngs=rngs
        )
        return fw.nnx_set(layer, kernel=w)

    def bn(channels: int, p: Any, s: Any) -> Any:
        # dtype: without it the float32 running statistics would promote the output to float32
        # (and bfloat16 ones make NNX's own update warn about an unsafe cast).
        scale, offset = fw.norm_params(p)
        layer = nnx.BatchNorm(
            channels, momentum=BN_MOMENTUM, epsilon=BN_EPS, dtype=scale.dtype, rngs=rngs
        )
        mean, var = (s[n].astype(getattr(layer, n).dtype) for n in ("mean", "var"))
        return fw.nnx_set(layer, scale=scale, bias=offset, mean=mean, var=var)

    class Block(nnx.Module):
        def __init__(self, cin: int, cout: int, stride: int, p: Any, s: Any) -> None:
            self.conv_0 = conv(cin, cout, 3, stride, p["conv_0"]["w"])
            self.bn_0 = bn(cout, p["bn_0"], s["bn_0"])
            self.conv_1 = conv(cout, cout, 3, 1, p["conv_1"]["w"])
            self.bn_1 = bn(cout, p["bn_1"], s["bn_1"])
            self.proj: Any = nnx.data(None)
            self.proj_bn: Any = nnx.data(None)
            if "proj" in p:
                self.proj = nnx.data(conv(cin, cout, 1, stride, p["proj"]["w"]))
                self.proj_bn = nnx.data(bn(cout, p["proj_bn"], s["proj_bn"]))

        def __call__(self, x: jax.Array) -> jax.Array:
            h = nnx.relu(self.bn_0(self.conv_0(x)))
            h = self.bn_1(self.conv_1(h))
            if self.proj is not None:
                x = self.proj_bn(self.proj(x))
            return nnx.relu(h + x)

    class ResNetNNX(nnx.Module):
        def __init__(self, p: Any, s: Any) -> None:
            width = p["stem"]["w"].shape[-1]
            self.stem = conv(p["stem"]["w"].shape[2], width, 3, 1, p["stem"]["w"])
            self.stem_bn = bn(width, p["stem_bn"], s["stem_bn"])
            self.blocks = nnx.List(
                [Block(cin, cout, stride, p[name], s[name]) for name, cin, cout, stride in blocks]
            )
            self.head = fw.nnx_linear(p["head"]["w"], p["head"]["b"])

        def __call__(self, x: jax.Array) -> jax.Array:
            x = nnx.relu(self.stem_bn(self.stem(x)))
            for block in self.blocks:
                x = block(x)
            return self.head(jnp.mean(x, axis=(1, 2)))

    return ResNetNNX(ref.params, ref.state)


def _resnet_equinox(ref: Reference) -> Impl:
    import equinox as eqx

    blocks = _blocks(ref)
    key = jax.random.key(0)
    dtype = ref.params["head"]["w"].dtype

    def conv(cin: int, cout: int, kernel: int, stride: int, w: jax.Array) -> Any:
        layer = eqx.nn.Conv2d(
            cin, cout, kernel, stride, padding="SAME", use_bias=False, key=key, dtype=dtype
        )
        return eqx.tree_at(lambda c: c.weight, layer, _oihw(w))

    def bn(channels: int, p: Any) -> Any:
        layer = eqx.nn.BatchNorm(
            channels, "batch", eps=BN_EPS, momentum=BN_MOMENTUM, mode="batch", dtype=dtype
        )
        return eqx.tree_at(lambda b: (b.weight, b.bias), layer, fw.norm_params(p))

    class Block(eqx.Module):
        conv_0: Any
        bn_0: Any
        conv_1: Any
        bn_1: Any
        proj: Any
        proj_bn: Any

        def __init__(self, cin: int, cout: int, stride: int, p: Any) -> None:
            self.conv_0 = conv(cin, cout, 3, stride, p["conv_0"]["w"])
            self.bn_0 = bn(cout, p["bn_0"])
            self.conv_1 = conv(cout, cout, 3, 1, p["conv_1"]["w"])
            self.bn_1 = bn(cout, p["bn_1"])
            self.proj = self.proj_bn = None
            if "proj" in p:
                self.proj = conv(cin, cout, 1, stride, p["proj"]["w"])
                self.proj_bn = bn(cout, p["proj_bn"])

        def __call__(self, x: jax.Array, state: Any) -> tuple[jax.Array, Any]:
            h, state = self.bn_0(self.conv_0(x), state)
            h, state = self.bn_1(self.conv_1(jax.nn.relu(h)), state)
            if self.proj is not None:
                x, state = self.proj_bn(self.proj(x), state)
            return jax.nn.relu(h + x), state

    class ResNetEqx(eqx.Module):
        stem: Any
        stem_bn: Any
        blocks: list[Block]
        head: Any

        def __init__(self, p: Any) -> None:
            width = p["stem"]["w"].shape[-1]
            self.stem = conv(p["stem"]["w"].shape[2], width, 3, 1, p["stem"]["w"])
            self.stem_bn = bn(width, p["stem_bn"])
            self.blocks = [Block(cin, cout, stride, p[name]) for name, cin, cout, stride in blocks]
            self.head = fw.eqx_linear(p["head"]["w"], p["head"]["b"])

        def __call__(self, x: jax.Array, state: Any) -> tuple[jax.Array, Any]:  # one image
            x, state = self.stem_bn(self.stem(x), state)
            x = jax.nn.relu(x)
            for block in self.blocks:
                x, state = block(x, state)
            return self.head(jnp.mean(x, axis=(1, 2))), state

    model, state = eqx.nn.make_with_state(ResNetEqx)(ref.params)
    return fw.equinox_stateful_impl(model, state, ref, batch=_nchw(ref))


def _resnet_torch(ref: Reference) -> Impl:
    import torch

    blocks = _blocks(ref)
    p = ref.params

    def conv(cin: int, cout: int, kernel: int, stride: int, w: jax.Array) -> torch.nn.Module:
        layer = torch.nn.Conv2d(cin, cout, kernel, stride, bias=False)
        with torch.no_grad():
            layer.weight.copy_(fw.to_torch(_oihw(w)))
        if kernel == 1:
            return layer
        # XLA's "SAME" on even sizes: k - 1 zeros (stride 1) or k - 2 (stride 2), the odd
        # one at the high end; PyTorch's padding= is symmetric, so pad explicitly.
        total = kernel - stride
        pad = (total // 2, total - total // 2)
        return torch.nn.Sequential(torch.nn.ZeroPad2d((*pad, *pad)), layer)

    def bn(channels: int, q: Any) -> torch.nn.Module:
        layer = torch.nn.BatchNorm2d(channels, eps=BN_EPS, momentum=1 - BN_MOMENTUM)
        return fw.torch_norm(layer, q)

    class Block(torch.nn.Module):
        def __init__(self, cin: int, cout: int, stride: int, q: Any) -> None:
            super().__init__()
            self.conv_0 = conv(cin, cout, 3, stride, q["conv_0"]["w"])
            self.bn_0 = bn(cout, q["bn_0"])
            self.conv_1 = conv(cout, cout, 3, 1, q["conv_1"]["w"])
            self.bn_1 = bn(cout, q["bn_1"])
            self.proj = None
            if "proj" in q:
                self.proj = torch.nn.Sequential(
                    conv(cin, cout, 1, stride, q["proj"]["w"]), bn(cout, q["proj_bn"])
                )

        def forward(self, x: Any) -> Any:
            h = torch.relu(self.bn_0(self.conv_0(x)))
            h = self.bn_1(self.conv_1(h))
            return torch.relu(h + (x if self.proj is None else self.proj(x)))

    class ResNetTorch(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            width = p["stem"]["w"].shape[-1]
            self.stem = conv(p["stem"]["w"].shape[2], width, 3, 1, p["stem"]["w"])
            self.stem_bn = bn(width, p["stem_bn"])
            self.blocks = torch.nn.Sequential(
                *[Block(cin, cout, stride, p[name]) for name, cin, cout, stride in blocks]
            )
            self.head = fw.torch_linear(p["head"]["w"], p["head"]["b"])

        def forward(self, x: Any) -> Any:
            x = self.blocks(torch.relu(self.stem_bn(self.stem(x))))
            return self.head(x.mean(dim=(2, 3)))

    return fw.torch_impl(ResNetTorch(), ref, _nchw(ref))


register(
    Workload(
        "resnet",
        "ResNet-8 (16/32/64 ch, batch norm) on 32x32x3, softmax CE, adam(1e-3)",
        32,
        _resnet_setup,
        {
            "nn_jax": fw.nn_jax_builder,
            "jax": _resnet_jax,
            "flax_linen": _resnet_linen,
            **fw.nnx_builders(_resnet_nnx_model),
            "equinox": _resnet_equinox,
            "haiku": _resnet_haiku,
            "torch": _resnet_torch,
        },
    )
)

__all__: list[str] = []  # registers its workloads on import

"""Convolutional models: ``LeNet`` (LeNet-5 style), ``ResNet`` (basic blocks), ``UNet`` (lite).

All take channels-last images ``(N, H, W, C)``. ``ResNet`` and ``UNet`` (with batch norm) are
stateful: train them with :func:`~nn_jax.train.make_stateful_train_step`, which threads the
BatchNorm running statistics, and evaluate with ``train=False`` and the returned state.
"""

from __future__ import annotations

import dataclasses
from dataclasses import KW_ONLY
from typing import Any

import jax
import jax.numpy as jnp

from nn_jax.activations import get_activation
from nn_jax.conv import Conv, ConvTranspose
from nn_jax.core import Activation, Block, Rate, Scope, Size, Sizes
from nn_jax.dense import Dense, Flatten
from nn_jax.errors import ConfigError, ShapeError
from nn_jax.normalization import BatchNorm
from nn_jax.pooling import AvgPool, GlobalAvgPool, MaxPool
from nn_jax.regularization import DropPath

__all__ = ["BasicBlock", "LeNet", "ResNet", "UNet"]


@dataclasses.dataclass(frozen=True)
class LeNet(Block):
    """A LeNet-5 style CNN (LeCun et al., 1998): [conv, activation, 2x2 pool] x 2, then MLP.

    ``Conv(channels[0], kernel) -> act -> pool -> Conv(channels[1], kernel) -> act -> pool ->
    Flatten -> Dense(hidden[0]) -> act -> ... -> Dense(num_classes)`` (logits).

    With the defaults (``padding="SAME"``) a 28x28x1 MNIST image gives 7x7x16 = 784 features
    before the dense layers, and the 8x8x1 scikit-learn digits 2x2x16 = 64; the spatial size
    must be divisible by 4. ``padding="VALID"`` on 32x32 inputs is the original network
    (32 -> 28 -> 14 -> 10 -> 5, 400 features).

    Args:
        num_classes: number of output logits.
        channels: output channels of the convolutions (one conv + pool per entry).
        kernel_size: convolution window, an int (square) or ``(height, width)``.
        hidden: widths of the dense layers before the output layer.
        padding: convolution padding (``"SAME"`` keeps the size, ``"VALID"`` shrinks it).
        pool: ``"max"`` or ``"avg"`` (LeNet-5's subsampling was an average).
        activation: a callable or a name such as ``"relu"`` or ``"tanh"``.

    Params: ``{"conv_i": {"w": (*kernel_size, C_in, channels[i]), "b"}, "dense_j": {...},
    "head": {"w": (hidden[-1], num_classes), "b"}}``.

    >>> import jax, jax.numpy as jnp
    >>> model = LeNet(10)
    >>> params, _ = model.init(jax.random.key(0), jax.ShapeDtypeStruct((1, 28, 28, 1), jnp.float32))
    >>> jax.tree.map(jnp.shape, params)["dense_0"]
    {'b': (120,), 'w': (784, 120)}
    """

    num_classes: Size = 10
    _: KW_ONLY
    channels: Sizes = (6, 16)
    kernel_size: int | tuple[int, int] = (5, 5)
    hidden: tuple[int, ...] = (120, 84)
    padding: str = "SAME"
    pool: str = "max"
    activation: Activation = "relu"

    def __post_init__(self) -> None:
        size = self.kernel_size
        kernel = (size, size) if isinstance(size, int) else tuple(size)
        if len(kernel) != 2:
            raise ConfigError(f"LeNet: kernel_size must be an int or 2 ints, given {kernel!r}")
        object.__setattr__(self, "kernel_size", kernel)
        if any(h < 1 for h in self.hidden):
            raise ConfigError(
                f"LeNet: hidden must be a tuple of positive ints, given {self.hidden!r}"
            )
        if self.pool not in ("max", "avg"):
            raise ConfigError(f"LeNet: pool must be 'max' or 'avg', given {self.pool!r}")
        Conv(1, self.kernel_size, padding=self.padding)  # validates kernel_size and padding

    def forward(self, scope: Scope, x: Any) -> Any:
        act = get_activation(self.activation)
        pool = MaxPool((2, 2)) if self.pool == "max" else AvgPool((2, 2))
        for i, channels in enumerate(self.channels):
            x = act(scope(f"conv_{i}", Conv(channels, self.kernel_size, padding=self.padding), x))
            x = scope(f"pool_{i}", pool, x)
        x = scope("flatten", Flatten(), x)
        for i, width in enumerate(self.hidden):
            x = act(scope(f"dense_{i}", Dense(width), x))
        return scope("head", Dense(self.num_classes), x)


@dataclasses.dataclass(frozen=True)
class BasicBlock(Block):
    """ResNet's basic block (He et al., 2016): two 3x3 convs with BatchNorm and a shortcut.

    ``relu(bn_1(conv_1(relu(bn_0(conv_0(x))))) + shortcut(x))``; the shortcut is the identity,
    or a projection ``proj_bn(proj(x))`` (1x1 conv with the block's stride) when the stride is
    not 1 or the channel count changes. With ``drop_path > 0`` the residual branch goes
    through :class:`~nn_jax.regularization.DropPath` (stochastic depth; needs an rng in
    training).

    Args:
        features: output channels.
        strides: stride of the first conv and of the projection.
        drop_path: stochastic-depth drop rate of the residual branch.
        bn_momentum: BatchNorm running-average decay.

    Input ``(N, H, W, C)`` -> ``(N, ceil(H / s), ceil(W / s), features)``.
    Params: ``conv_0``, ``bn_0``, ``conv_1``, ``bn_1`` (and ``proj``, ``proj_bn``); state: the
    BatchNorms' ``mean``/``var``.
    """

    features: Size
    _: KW_ONLY
    strides: Size = 1
    drop_path: Rate = 0.0
    bn_momentum: Rate = 0.9

    def forward(self, scope: Scope, x: Any) -> Any:
        bn = BatchNorm(momentum=self.bn_momentum)
        conv = Conv(self.features, (3, 3), strides=self.strides, use_bias=False)
        h = jax.nn.relu(scope("bn_0", bn, scope("conv_0", conv, x)))
        h = scope("bn_1", bn, scope("conv_1", Conv(self.features, (3, 3), use_bias=False), h))
        if self.drop_path > 0:
            h = scope("drop_path", DropPath(self.drop_path), h)
        skip = x
        if self.strides != 1 or x.shape[-1] != self.features:
            proj = Conv(self.features, (1, 1), strides=self.strides, use_bias=False)
            skip = scope("proj_bn", bn, scope("proj", proj, x))
        return jax.nn.relu(h + skip)


@dataclasses.dataclass(frozen=True)
class ResNet(Block):
    """A small ResNet of basic blocks for small images (CIFAR-style, He et al., 2016).

    Stem ``3x3 conv(width) -> BN -> relu``; then stage ``i`` has ``stage_sizes[i]``
    :class:`BasicBlock` s of ``width * 2**i`` channels, the first with stride 2 (except in
    stage 0); then global average pooling and ``Dense(num_classes)`` (logits).
    ``stage_sizes=(3, 3, 3), width=16`` is ResNet-20. Stochastic depth, if ``drop_path > 0``,
    grows linearly with depth: block ``l`` of ``L`` drops with ``drop_path * (l + 1) / L``.

    Args:
        num_classes: number of output logits.
        stage_sizes: blocks per stage (depth).
        width: channels of the stem and of stage 0 (width).
        drop_path: maximal stochastic-depth rate (last block).
        bn_momentum: BatchNorm running-average decay (0.9 is PyTorch's ``momentum=0.1``).

    Params: ``{"stem", "stem_bn", "stage_i_block_j": {...}, "head"}``; state: every BatchNorm's
    running ``mean``/``var`` under the same names.
    """

    num_classes: Size = 10
    _: KW_ONLY
    stage_sizes: Sizes = (2, 2, 2)
    width: Size = 16
    drop_path: float = 0.0
    bn_momentum: Rate = 0.9

    def __post_init__(self) -> None:
        DropPath(self.drop_path)  # validates the rate (the maximal drop probability)

    def forward(self, scope: Scope, x: Any) -> Any:
        x = scope("stem", Conv(self.width, (3, 3), use_bias=False), x)
        x = jax.nn.relu(scope("stem_bn", BatchNorm(momentum=self.bn_momentum), x))
        total, index = sum(self.stage_sizes), 0
        for i, blocks in enumerate(self.stage_sizes):
            for j in range(blocks):
                index += 1
                block = BasicBlock(
                    self.width * 2**i,
                    strides=2 if i > 0 and j == 0 else 1,
                    drop_path=self.drop_path * index / total,
                    bn_momentum=self.bn_momentum,
                )
                x = scope(f"stage_{i}_block_{j}", block, x)
        x = scope("pool", GlobalAvgPool(), x)
        return scope("head", Dense(self.num_classes), x)


@dataclasses.dataclass(frozen=True)
class _DoubleConv(Block):
    """``[3x3 conv -> (BN) -> relu] x 2``, U-Net's unit."""

    features: Size
    batch_norm: bool

    def forward(self, scope: Scope, x: Any) -> Any:
        for i in range(2):
            x = scope(f"conv_{i}", Conv(self.features, (3, 3), use_bias=not self.batch_norm), x)
            if self.batch_norm:
                x = scope(f"bn_{i}", BatchNorm(momentum=0.9), x)
            x = jax.nn.relu(x)
        return x


@dataclasses.dataclass(frozen=True)
class UNet(Block):
    """A U-Net-lite encoder-decoder for dense (per-pixel) prediction (Ronneberger et al., 2015).

    Encoder level ``i < L``: two 3x3 convs (``widths[i]`` channels) then a 2x2 max pool; the
    bottleneck has ``widths[-1]`` channels; decoder level ``i``: a 2x2 stride-2
    :class:`~nn_jax.conv.ConvTranspose` to ``widths[i]`` channels, concatenation with the
    encoder's level-``i`` features (skip connection), two 3x3 convs; a 1x1 conv gives
    ``out_channels`` logits per pixel. Convs are "SAME", so the output has the input's
    height and width, which must be divisible by ``2**L`` (``L = len(widths) - 1``).

    Args:
        out_channels: outputs per pixel (e.g. classes for segmentation).
        widths: channels per level, encoder top to bottleneck (at least 2 entries).
        batch_norm: BatchNorm after each 3x3 conv (stateful); otherwise convs have biases.

    Input ``(N, H, W, C)`` -> ``(N, H, W, out_channels)``.
    Params: ``down_i``, ``bottleneck``, ``up_i``, ``decode_i`` and ``head``.
    """

    out_channels: Size
    _: KW_ONLY
    widths: Sizes = (16, 32, 64)
    batch_norm: bool = True

    def __post_init__(self) -> None:
        if len(self.widths) < 2:
            raise ConfigError(f"UNet: widths needs at least 2 levels, given {self.widths!r}")

    def forward(self, scope: Scope, x: Any) -> Any:
        levels = len(self.widths) - 1
        if jnp.ndim(x) != 4:
            self.check_rank(x, 4, 4, what="input (N, H, W, C)")
        if x.shape[1] % 2**levels or x.shape[2] % 2**levels:
            raise self.error(
                ShapeError,
                f"input height and width must be divisible by 2**{levels} = {2**levels} "
                f"(one halving per level), given {x.shape[1:3]} (input shape {x.shape})",
            )
        skips = []
        for i, width in enumerate(self.widths[:-1]):
            x = scope(f"down_{i}", _DoubleConv(width, self.batch_norm), x)
            skips.append(x)
            x = scope(f"pool_{i}", MaxPool((2, 2)), x)
        x = scope("bottleneck", _DoubleConv(self.widths[-1], self.batch_norm), x)
        for i in reversed(range(levels)):
            x = scope(f"up_{i}", ConvTranspose(self.widths[i], (2, 2), strides=2), x)
            x = jnp.concatenate([skips[i], x], axis=-1)
            x = scope(f"decode_{i}", _DoubleConv(self.widths[i], self.batch_norm), x)
        return scope("head", Conv(self.out_channels, (1, 1)), x)

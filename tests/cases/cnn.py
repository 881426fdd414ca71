"""CNN model zoo: LeNet, ResNet (basic blocks, BatchNorm, stochastic depth), U-Net."""

from nn_jax.models.cnn import BasicBlock, LeNet, ResNet, UNet
from tests.cases import Case, normal

CASES = [
    Case(
        "lenet_small_avg_tanh",
        LeNet(4, channels=(2, 3), kernel_size=(3, 3), hidden=(5,), pool="avg", activation="tanh"),
        normal(2, 8, 8, 1),
    ),
    Case("basic_block_projection_train", BasicBlock(4, strides=2), normal(3, 4, 4, 2), train=True),
    Case("resnet_train", ResNet(3, stage_sizes=(1, 1), width=4), normal(4, 8, 8, 2), train=True),
    Case("resnet_eval", ResNet(3, stage_sizes=(1, 1), width=4), normal(4, 8, 8, 2)),
    Case(
        "resnet_drop_path_train",
        ResNet(3, stage_sizes=(2,), width=4, drop_path=0.5),
        normal(4, 4, 4, 1),
        train=True,
        rng=True,
    ),
    Case("unet_train", UNet(2, widths=(4, 8)), normal(2, 8, 8, 1), train=True),
    Case("unet_no_bn", UNet(3, widths=(2, 4), batch_norm=False), normal(1, 8, 8, 2)),
]

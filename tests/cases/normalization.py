"""Normalization layers; BatchNorm in training (batch statistics) and evaluation mode."""

from nn_jax.normalization import BatchNorm, GroupNorm, InstanceNorm, LayerNorm, RMSNorm
from tests.cases import Case, normal

CASES = [
    Case("batch_norm_train", BatchNorm(momentum=0.9), normal(6, 3, 4), train=True),
    Case("batch_norm_eval", BatchNorm(), normal(6, 3, 4)),
    Case(
        "batch_norm_channels_first_train",
        BatchNorm(axis=1, use_bias=False),
        normal(4, 3, 2, 2),
        train=True,
    ),
    Case("layer_norm", LayerNorm(), normal(3, 5)),
    Case(
        "layer_norm_two_axes_no_scale", LayerNorm(axis=(-2, -1), use_scale=False), normal(2, 3, 4)
    ),
    Case("rms_norm", RMSNorm(), normal(3, 6)),
    Case("rms_norm_with_b", RMSNorm(use_bias=True, axis=(-2, -1)), normal(2, 3, 4)),
    Case(
        "batch_norm_torch_cumulative_train",
        BatchNorm(axis=1, momentum=None, unbiased_running_var=True),
        normal(4, 3, 2, 2),
        train=True,
    ),
    Case("group_norm", GroupNorm(2), normal(2, 3, 3, 4)),
    Case("group_norm_channels_first", GroupNorm(2, channel_axis=1), normal(2, 4, 3, 3)),
    Case("instance_norm", InstanceNorm(), normal(2, 5, 3)),
    Case("instance_norm_channels_first", InstanceNorm(channel_axis=1), normal(2, 3, 5)),
]

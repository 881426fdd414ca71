"""Convolutions: 1-D/2-D/3-D, int and tuple sizes, strides, padding modes, dilation (rhs and
lhs), groups, layouts."""

from nn_jax.conv import Conv, ConvTranspose
from tests.cases import Case, normal

CASES = [
    Case("conv1d_same", Conv(3, (3,)), normal(2, 7, 2)),
    Case(
        "conv1d_causal_dilated", Conv(2, (3,), padding="CAUSAL", kernel_dilation=2), normal(2, 8, 3)
    ),
    Case(
        "conv1d_lhs_dilation_s2",
        Conv(2, (3,), input_dilation=2, strides=2, padding=1),
        normal(2, 5, 2),
    ),
    Case("conv1d_unbatched_depthwise", Conv(4, (3,), feature_group_count=2), normal(6, 2)),
    Case(
        "conv2d_valid_stride", Conv(3, (3, 2), strides=(2, 1), padding="VALID"), normal(2, 7, 6, 2)
    ),
    Case(
        "conv2d_groups_dilated",
        Conv(4, (3, 3), feature_group_count=2, kernel_dilation=2),
        normal(2, 7, 7, 4),
    ),
    Case(
        "conv2d_explicit_no_bias",
        Conv(2, (2, 3), padding=((1, 0), (2, 2)), use_bias=False),
        normal(1, 4, 5, 3),
    ),
    Case("conv2d_int_kernel_s2", Conv(3, 3, strides=2), normal(2, 5, 6, 2)),
    Case(
        "conv2d_channels_first",
        Conv(3, (3, 3), strides=2, data_format="channels_first"),
        normal(2, 2, 6, 5),
    ),
    Case(
        "conv3d_same_groups",
        Conv(4, (2, 2, 2), feature_group_count=2, strides=(1, 2, 1)),
        normal(1, 3, 4, 3, 2),
    ),
    Case(
        "conv_transpose1d_valid",
        ConvTranspose(3, (3,), strides=2, padding="VALID"),
        normal(2, 4, 2),
    ),
    Case("conv_transpose1d_int_kernel", ConvTranspose(2, 3, strides=2), normal(2, 4, 3)),
    Case(
        "conv_transpose1d_pad_outpad",
        ConvTranspose(2, (3,), strides=2, padding=1, output_padding=1, kernel_dilation=2),
        normal(2, 5, 3),
    ),
    Case(
        "conv_transpose2d_same_groups",
        ConvTranspose(4, (3, 3), strides=2, feature_group_count=2),
        normal(2, 3, 4, 4),
    ),
    Case(
        "conv_transpose2d_channels_first",
        ConvTranspose(2, (2, 2), strides=2, data_format="channels_first"),
        normal(1, 3, 3, 4),
    ),
    Case(
        "conv_transpose3d",
        ConvTranspose(2, (2, 3, 2), strides=(2, 1, 2), padding="VALID"),
        normal(1, 2, 3, 2, 3),
    ),
]

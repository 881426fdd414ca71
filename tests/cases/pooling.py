"""Pooling: max (with dilation), average (with and without counting padding), ceil_mode,
global and adaptive (max and average); int and tuple windows."""

from nn_jax.pooling import (
    AdaptiveAvgPool,
    AdaptiveMaxPool,
    AvgPool,
    GlobalAvgPool,
    GlobalMaxPool,
    MaxPool,
)
from tests.cases import Case, normal

CASES = [
    Case("max_pool1d_same", MaxPool((3,), strides=2, padding="SAME"), normal(2, 7, 3)),
    Case("max_pool2d_int_window", MaxPool(2), normal(2, 6, 4, 3)),
    Case("max_pool3d_overlap", MaxPool((2, 2, 2), strides=1, padding=1), normal(1, 3, 3, 3, 2)),
    Case(
        "max_pool2d_dilation_ceil",
        MaxPool((2, 2), strides=2, padding=1, dilation=(2, 1), ceil_mode=True),
        normal(2, 6, 5, 2),
    ),
    Case("avg_pool1d_pad", AvgPool((3,), strides=2, padding=1), normal(2, 7, 2)),
    # ceil_mode: the last window hangs over the padded end (divisor 2, not 3).
    Case("avg_pool1d_ceil", AvgPool((3,), strides=2, padding=1, ceil_mode=True), normal(2, 6, 2)),
    Case(
        "avg_pool2d_ceil_exclude_pad",
        AvgPool((3, 2), strides=2, padding=(1, 0), ceil_mode=True, count_include_pad=False),
        normal(2, 6, 5, 2),
    ),
    Case(
        "avg_pool2d_exclude_pad",
        AvgPool((3, 3), strides=2, padding="SAME", count_include_pad=False),
        normal(2, 5, 6, 2),
    ),
    Case(
        "avg_pool3d_channels_first",
        AvgPool((2, 2, 2), data_format="channels_first"),
        normal(1, 2, 4, 4, 2),
    ),
    Case("global_avg_pool2d", GlobalAvgPool(), normal(2, 4, 5, 3)),
    Case("global_max_pool1d_keepdims", GlobalMaxPool(1, keepdims=True), normal(2, 6, 3)),
    Case("global_avg_pool3d", GlobalAvgPool(3), normal(2, 2, 3, 2, 3)),
    Case("adaptive_avg_pool2d", AdaptiveAvgPool((3, 2)), normal(2, 7, 5, 2)),
    Case("adaptive_avg_pool1d_upsizing", AdaptiveAvgPool((5,)), normal(2, 3, 2)),
    Case("adaptive_avg_pool2d_int", AdaptiveAvgPool(2), normal(2, 5, 3, 2)),
    Case("adaptive_max_pool2d", AdaptiveMaxPool((3, 2)), normal(2, 7, 5, 2)),
    Case("adaptive_max_pool1d_upsizing", AdaptiveMaxPool((5,)), normal(2, 3, 2)),
]

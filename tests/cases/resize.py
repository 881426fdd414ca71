"""Upsampling by jax.image.resize."""

from nn_jax.resize import Upsample
from tests.cases import Case, normal

CASES = [
    Case("upsample2d_nearest", Upsample((2, 3)), normal(2, 3, 2, 2)),
    Case("upsample1d_bilinear", Upsample((2,), method="bilinear"), normal(2, 4, 3)),
    Case("upsample2d_int_scale_bilinear", Upsample(2, method="bilinear"), normal(2, 3, 2, 2)),
    Case(
        "upsample3d_trilinear_channels_first",
        Upsample((2, 1, 2), method="trilinear", data_format="channels_first"),
        normal(1, 2, 2, 3, 2),
    ),
]

"""MixedPrecision: a bfloat16 policy around a small MLP, and a float16 one around a norm."""

from nn_jax import LayerNorm
from nn_jax.models import MLP
from nn_jax.precision import MixedPrecision
from tests.cases import Case, normal

# smooth=False skips only the float64 finite-difference check: the policy casts to 16-bit
# floats, so a float64 difference quotient measures their rounding, not the gradient.
# tests/test_precision.py checks the gradients against the unwrapped model's instead.
CASES = [
    Case("mixed_precision_bf16_mlp", MixedPrecision(MLP((6, 3))), normal(4, 5), smooth=False),
    Case(
        "mixed_precision_f16_layer_norm",
        MixedPrecision(LayerNorm(), "params=float32,compute=float16,output=float32"),
        normal(2, 3, 4),
        smooth=False,
    ),
]

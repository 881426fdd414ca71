"""Self-attention projects q, k, v with one matmul (``w_q, w_k, w_v`` concatenated inside
``apply``): its gradients equal the three-matmul formulation's, its jaxpr has one projection
``dot_general`` of the input, and cross-attention keeps three. (Outputs against NumPy:
tests/test_attention.py.)"""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.core import jaxprs_in_params

from nn_jax.attention import MultiHeadAttention, dot_product_attention

B, T, S, F = 2, 5, 3, 8


def three_matmuls(layer, params, x):
    """The layer's self-attention written with one projection matmul per kernel."""

    def project(n):
        y = jnp.einsum("btf,fhd->bthd", x, params[f"w_{n}"])
        return y + params[f"b_{n}"][None, None] if layer.use_bias else y

    out = dot_product_attention(project("q"), project("k"), project("v"))
    y = jnp.einsum("bthd,hdf->btf", out, params["w_o"])
    return y + params["b_o"][None, None] if layer.use_bias else y


def dot_shapes(jaxpr):
    """``(lhs shape, rhs shape)`` of every ``dot_general`` in a jaxpr, nested ones included."""
    shapes = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            shapes.append(tuple(tuple(v.aval.shape) for v in eqn.invars))
        for sub in jaxprs_in_params(eqn.params):
            shapes += dot_shapes(sub)
    return shapes


def test_fused_projection_gradients_equal_three_matmuls():
    layer = MultiHeadAttention(4, num_kv_heads=2)  # kernels and biases of unequal head counts
    rng = np.random.default_rng(0)
    with jax.enable_x64(True):
        x = jnp.asarray(rng.standard_normal((B, T, F)))
        shapes, _ = jax.eval_shape(layer.init, jax.random.key(0), x)
        params = jax.tree.map(lambda a: jnp.asarray(rng.standard_normal(a.shape)), shapes)
        cotangent = jnp.asarray(rng.standard_normal((B, T, F)))

        def grads(f):
            return jax.grad(lambda p, x: jnp.sum(f(p, x) * cotangent), argnums=(0, 1))

        fused, reference = jax.jit(
            lambda p, x: (grads(layer)(p, x), grads(partial(three_matmuls, layer))(p, x))
        )(params, x)
    assert set(fused[0]) == set(params)  # the parameter tree users see is unchanged
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12), fused, reference
    )


def test_self_attention_has_one_projection_matmul_and_cross_attention_three():
    layer = MultiHeadAttention(4, num_kv_heads=2, head_dim=3)  # q, k, v: 4 + 2 + 2 heads
    x, memory = jnp.zeros((B, T, F)), jnp.zeros((B, S, F))
    params, _ = jax.eval_shape(layer.init, jax.random.key(0), x)
    inputs = {(B, T, F), (B, S, F)}

    def projections(inp):
        jaxpr = jax.make_jaxpr(lambda p: layer(p, inp))(params).jaxpr
        return [rhs for lhs, rhs in dot_shapes(jaxpr) if lhs in inputs]

    assert projections(x) == [(F, 8, 3)]
    assert sorted(projections((x, memory))) == [(F, 2, 3), (F, 2, 3), (F, 4, 3)]

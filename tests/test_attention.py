"""Attention against a NumPy loop reference (masks, causal, GQA/MQA, bias); fully masked rows;
MultiHeadAttention against NumPy with its side inputs; the weights tap; the decode cache equals
the full pass; dropout; errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nn_jax.attention import MultiHeadAttention, attention_weights, dot_product_attention
from nn_jax.core import tapping
from nn_jax.errors import ConfigError, RngError, ShapeError, ValueRangeError
from nn_jax.inspect import apply_with_intermediates
from nn_jax.masks import causal_mask, combine_masks, make_attention_mask
from nn_jax.positional import RotaryEmbedding

KEY = jax.random.key(0)


# --------------------------------------------------------------------------------------------
# References.


def np_attention(q, k, v, mask=None, bias=None, scale=None):
    """Loops over batch, query head and query: softmax over the allowed keys; none -> zeros."""
    B, Tq, Hq, D = q.shape
    Tk, Hkv, Dv = k.shape[1], k.shape[2], v.shape[-1]
    group = Hq // Hkv
    scale = 1 / np.sqrt(D) if scale is None else scale
    mask = (
        np.ones((B, Hq, Tq, Tk), bool) if mask is None else np.broadcast_to(mask, (B, Hq, Tq, Tk))
    )
    bias = np.zeros((B, Hq, Tq, Tk)) if bias is None else np.broadcast_to(bias, (B, Hq, Tq, Tk))
    out = np.zeros((B, Tq, Hq, Dv))
    weights = np.zeros((B, Hq, Tq, Tk))
    for b in range(B):
        for h in range(Hq):
            kv = h // group
            for i in range(Tq):
                allowed = mask[b, h, i]
                if not allowed.any():
                    continue
                s = np.array([q[b, i, h] @ k[b, j, kv] * scale for j in range(Tk)]) + bias[b, h, i]
                e = np.where(allowed, np.exp(s - s[allowed].max()), 0.0)
                weights[b, h, i] = e / e.sum()
                out[b, i, h] = sum(weights[b, h, i, j] * v[b, j, kv] for j in range(Tk))
    return out, weights


def np_rope(x, positions, base=10000.0):
    """RoPE, rotate-half pairing: (x_i, x_{i+D/2}) rotated by p * base^(-2i/D). x (B,T,H,D)."""
    y = np.array(x, dtype=np.float64)
    half = x.shape[-1] // 2
    for t, p in enumerate(positions):
        for i in range(half):
            theta = p * base ** (-2 * i / x.shape[-1])
            a, b = x[:, t, :, i], x[:, t, :, i + half]
            y[:, t, :, i] = a * np.cos(theta) - b * np.sin(theta)
            y[:, t, :, i + half] = b * np.cos(theta) + a * np.sin(theta)
    return y


def np_mha(p, xq, xkv, mask=None, rope=False, positions=None):
    """Projections, (RoPE at ``positions``: (T,) or per example (B, T)), attention and the output
    projection, all in NumPy."""
    q = np.einsum("btf,fhd->bthd", xq, p["w_q"]) + p.get("b_q", 0)
    k = np.einsum("btf,fhd->bthd", xkv, p["w_k"]) + p.get("b_k", 0)
    v = np.einsum("btf,fhd->bthd", xkv, p["w_v"]) + p.get("b_v", 0)
    if rope:
        pos = np.broadcast_to(
            np.arange(q.shape[1]) if positions is None else positions, q.shape[:2]
        )
        q = np.concatenate([np_rope(q[b : b + 1], pos[b]) for b in range(len(q))])
        k = np.concatenate([np_rope(k[b : b + 1], pos[b]) for b in range(len(k))])
    out, weights = np_attention(q, k, v, mask)
    return np.einsum("bthd,hdf->btf", out, p["w_o"]) + p.get("b_o", 0), weights


def random_params(params, rng, scale=0.5):
    return jax.tree.map(lambda a: (scale * rng.standard_normal(a.shape)).astype(a.dtype), params)


def qkv(rng, B=2, Tq=4, Tk=5, Hq=4, Hkv=2, D=3, Dv=2):
    return (
        rng.standard_normal((B, Tq, Hq, D)),
        rng.standard_normal((B, Tk, Hkv, D)),
        rng.standard_normal((B, Tk, Hkv, Dv)),
    )


# --------------------------------------------------------------------------------------------
# dot_product_attention.


@pytest.mark.parametrize("heads", [(4, 4), (4, 2), (4, 1)], ids=["mha", "gqa", "mqa"])
def test_dot_product_attention_matches_numpy(heads):
    rng = np.random.default_rng(0)
    q, k, v = qkv(rng, Hq=heads[0], Hkv=heads[1])
    mask = rng.random((2, 1, 4, 5)) < 0.7
    mask[0, 0, 1] = False  # a fully masked row
    bias = rng.standard_normal((1, heads[0], 4, 5))
    with jax.enable_x64(True):
        for kwargs in ({}, {"mask": mask}, {"mask": mask, "bias": bias, "scale": 0.3}):
            out = dot_product_attention(q, k, v, **kwargs)
            weights = attention_weights(q, k, **{a: b for a, b in kwargs.items()})
            ref, ref_w = np_attention(q, k, v, **kwargs)
            np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(weights, ref_w, rtol=1e-12, atol=1e-12)


def test_multi_head_logits_come_out_of_the_matmul_in_place():
    """Hq == Hkv: one dot_general gives (B, H, Tq, Tk), no reshape or transpose after it (a
    size-1 group axis made XLA transpose the logits, forward and backward)."""
    q, k = jnp.zeros((2, 5, 4, 3)), jnp.zeros((2, 6, 4, 3))
    eqns = jax.make_jaxpr(attention_weights)(q, k).jaxpr.eqns
    names = [e.primitive.name for e in eqns]
    assert "transpose" not in names and "reshape" not in names
    (dot,) = (e for e in eqns if e.primitive.name == "dot_general")
    assert dot.outvars[0].aval.shape == (2, 4, 5, 6)


def test_a_decode_cache_never_overflows_silently():
    """A block longer than the cache fails when traced; steps past a concrete cache index fail
    when called (dynamic_update_slice would clamp and overwrite the earlier entries)."""
    decoder = MultiHeadAttention(2, causal=True, decode=True)
    params, cache = decoder.init(KEY, jnp.zeros((1, 3, 4)))
    with pytest.raises(ShapeError, match=r"decode cache holds 3 steps; 4 new step\(s\)"):
        jax.jit(decoder.apply)(params, cache, jnp.ones((1, 4, 4)))
    _, cache = decoder.apply(params, cache, jnp.ones((1, 2, 4)))
    _, cache = decoder.apply(params, cache, jnp.ones((1, 1, 4)))  # fills the cache exactly
    with pytest.raises(ValueRangeError, match=r"holds 3 steps; 1 new step\(s\) at cache index 3"):
        decoder.apply(params, cache, jnp.ones((1, 1, 4)))


def test_a_float_additive_mask_is_an_error_not_an_inverted_mask():
    """PyTorch's additive masks (0 = attend, -inf = not) cast to bool would be inverted
    (bool(-inf) is True): MHA names the layer and says how to convert; `mask == 0` gives the
    boolean mask: for the kept queries it gives what the sequence without the masked step gives
    (no positions in plain self-attention)."""
    from nn_jax import Sequential

    model = Sequential(attn=MultiHeadAttention(2))
    x = np.random.default_rng(3).standard_normal((1, 3, 8)).astype(np.float32)
    params, _ = model.init(KEY, x)
    additive = np.array([0.0, -np.inf, 0.0], np.float32)[None, None, None, :]
    with pytest.raises(ShapeError, match=r"MultiHeadAttention at 'attn'.*dtype float32.*mask == 0"):
        model(params, x, side={"mask": additive})
    with pytest.raises(ShapeError, match="combine_masks: masks must be booleans"):
        combine_masks(causal_mask(3), additive)
    out = model(params, x, side={"mask": additive == 0})
    without_step_1 = model(params, x[:, [0, 2]])
    np.testing.assert_allclose(out[:, [0, 2]], without_step_1, rtol=1e-5, atol=1e-6)


def test_causal_and_padding_masks_combine_as_logical_and():
    rng = np.random.default_rng(1)
    q, k, v = qkv(rng, Tq=5, Tk=5)
    key_valid = np.array([[True] * 5, [False, True, True, True, False]])
    mask = combine_masks(causal_mask(5), make_attention_mask(np.ones((2, 5), bool), key_valid))
    expected = np.tril(np.ones((5, 5), bool))[None, None] & key_valid[:, None, None, :]
    np.testing.assert_array_equal(mask, expected)
    np.testing.assert_array_equal(causal_mask(2, 4, offset=2), [[1, 1, 1, 0], [1, 1, 1, 1]])
    assert combine_masks(None, None) is None
    with jax.enable_x64(True):
        out = dot_product_attention(q, k, v, mask=mask)
    np.testing.assert_allclose(out, np_attention(q, k, v, expected)[0], rtol=1e-12, atol=1e-12)


def test_fully_masked_rows_give_zeros_and_finite_gradients():
    rng = np.random.default_rng(2)
    q, k, v = (a.astype(np.float32) for a in qkv(rng))
    mask = np.ones((2, 4, 4, 5), bool)
    mask[1, :, 2] = False
    mask[0] = False  # a whole example without keys

    def f(q, k, v):
        return jnp.sum(jnp.sin(dot_product_attention(q, k, v, mask=mask)))

    out = dot_product_attention(q, k, v, mask=mask)
    assert np.all(np.isfinite(out))
    np.testing.assert_array_equal(out[0], 0.0)
    np.testing.assert_array_equal(out[1, 2], 0.0)
    grads = jax.grad(f, argnums=(0, 1, 2))(q, k, v)
    assert all(np.all(np.isfinite(g)) for g in grads)
    np.testing.assert_array_equal(grads[0][0], 0.0)
    w = attention_weights(q, k, mask=mask)
    np.testing.assert_allclose(w.sum(-1)[1, :, [0, 1, 3]], 1.0, rtol=1e-6)


def test_attention_dropout_needs_a_key():
    q, k, v = (a.astype(np.float32) for a in qkv(np.random.default_rng(3)))
    with pytest.raises(RngError, match=r"dropout_rate=0\.5 needs dropout_rng"):
        dot_product_attention(q, k, v, dropout_rate=0.5)
    out = dot_product_attention(q, k, v, dropout_rate=0.5, dropout_rng=KEY)
    assert out.shape == (2, 4, 4, 2)


def test_attention_function_errors():
    q, k, v = qkv(np.random.default_rng(4), Hq=3, Hkv=2)
    with pytest.raises(
        ShapeError, match=r"query heads \(3\) must be a multiple of key/value heads"
    ):
        dot_product_attention(q, k, v)
    q, k, v = qkv(np.random.default_rng(4))
    with pytest.raises(ShapeError, match=r"mask of shape \(3, 4, 5\) does not broadcast"):
        dot_product_attention(q, k, v, mask=np.ones((3, 4, 5), bool))
    with pytest.raises(ShapeError, match="mask must be boolean"):
        dot_product_attention(q, k, v, mask=np.ones((4, 5)))
    with pytest.raises(ShapeError, match="value must be"):
        dot_product_attention(q, k, v[:, :3])


# --------------------------------------------------------------------------------------------
# MultiHeadAttention.


@pytest.mark.parametrize(
    "layer",
    [
        MultiHeadAttention(4),
        MultiHeadAttention(4, num_kv_heads=2, causal=True, rope=RotaryEmbedding()),
        MultiHeadAttention(4, num_kv_heads=1, use_bias=False, head_dim=3),
    ],
    ids=["mha", "gqa_causal_rope", "mqa_no_bias"],
)
def test_self_attention_layer_matches_numpy(layer):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 5, 8))
    key_valid = np.array([[True] * 5, [True, True, False, True, False]])
    extra = rng.random((2, 4, 5, 5)) < 0.8
    with jax.enable_x64(True):
        params, _ = layer.init(KEY, x)
        params = random_params(params, rng)
        y = layer(params, x, side={"key_mask": key_valid, "mask": extra})
        # "lengths" marks the same padding as a key mask of its first steps.
        by_lengths = layer(params, x, side={"lengths": np.array([5, 2]), "mask": extra})
    mask = key_valid[:, None, None, :] & extra
    if layer.causal:
        mask = mask & np.tril(np.ones((5, 5), bool))
    ref, _ = np_mha(params, x, x, mask, rope=layer.rope is not None)
    np.testing.assert_allclose(y, ref, rtol=1e-10, atol=1e-10)
    mask_2 = np.array([[True] * 5, [True] * 2 + [False] * 3])[:, None, None, :] & extra
    if layer.causal:
        mask_2 = mask_2 & np.tril(np.ones((5, 5), bool))
    ref_2, _ = np_mha(params, x, x, mask_2, rope=layer.rope is not None)
    np.testing.assert_allclose(by_lengths, ref_2, rtol=1e-10, atol=1e-10)


def test_rope_positions_side_input_matches_numpy():
    """Per-example positions (a left-padded row counts from its first real token)."""
    rng = np.random.default_rng(15)
    layer = MultiHeadAttention(2, causal=True, rope=RotaryEmbedding())
    positions = np.array([[0, 1, 2, 3], [0, 0, 0, 1]])
    key_valid = np.array([[True] * 4, [False, False, True, True]])
    with jax.enable_x64(True):
        x = rng.standard_normal((2, 4, 4))
        params = random_params(layer.init(KEY, x)[0], rng)
        y = layer(params, x, side={"positions": positions, "key_mask": key_valid})
    mask = key_valid[:, None, None, :] & np.tril(np.ones((4, 4), bool))
    ref, _ = np_mha(params, x, x, mask, rope=True, positions=positions)
    np.testing.assert_allclose(y, ref, rtol=1e-10, atol=1e-10)
    # Without rope the layer has no use for positions: nobody reads them.
    with pytest.raises(ConfigError, match=r"side inputs \['positions'\] were given but no layer"):
        MultiHeadAttention(2)(params, x, side={"positions": positions})


def test_cross_attention_with_different_features_and_weights():
    rng = np.random.default_rng(6)
    xq, xkv = rng.standard_normal((2, 3, 6)), rng.standard_normal((2, 5, 4))
    layer = MultiHeadAttention(2, head_dim=3, out_features=7)
    with jax.enable_x64(True):
        params, state = layer.init(KEY, (xq, xkv))
        params = random_params(params, rng)
        assert params["w_q"].shape == (6, 2, 3) and params["w_k"].shape == (4, 2, 3)
        assert params["w_o"].shape == (2, 3, 7) and state == {}
        key_valid = np.array([[1, 1, 1, 1, 1], [0, 0, 1, 1, 0]], bool)
        y, _, taps = apply_with_intermediates(
            layer, params, {}, (xq, xkv), side={"key_mask": key_valid}, capture="*weights"
        )
    ref, ref_w = np_mha(params, xq, xkv, key_valid[:, None, None, :])
    np.testing.assert_allclose(y, ref, rtol=1e-10, atol=1e-10)
    assert list(taps) == ["weights"]
    np.testing.assert_allclose(taps["weights"], ref_w, rtol=1e-10, atol=1e-10)


def test_editing_the_weights_tap_changes_the_output():
    """Uniform weights over the keys make every query's output the mean value projection."""
    rng = np.random.default_rng(16)
    layer = MultiHeadAttention(2)
    with jax.enable_x64(True):
        x = rng.standard_normal((1, 3, 4))
        params = random_params(layer.init(KEY, x)[0], rng)
        with tapping(capture=(), edit={"weights": lambda w: jnp.full_like(w, 1 / 3)}):
            y = jax.jit(layer.__call__)(params, x)
    uniform = np.full((1, 2, 3, 3), 1 / 3)
    v = np.einsum("btf,fhd->bthd", x, params["w_v"]) + params["b_v"]
    out = np.einsum("bhqk,bkhd->bqhd", uniform, v)
    ref = np.einsum("bthd,hdf->btf", out, params["w_o"]) + params["b_o"]
    np.testing.assert_allclose(y, ref, rtol=1e-10, atol=1e-10)


def test_fully_masked_query_gives_only_the_output_bias():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((1, 3, 4)).astype(np.float32)
    layer = MultiHeadAttention(2)
    params = random_params(layer.init(KEY, x)[0], rng)
    mask = np.ones((1, 1, 3, 3), bool)
    mask[..., 1, :] = False
    y = layer(params, x, side={"mask": mask})
    np.testing.assert_allclose(y[0, 1], params["b_o"], rtol=1e-6)
    assert np.all(np.isfinite(y))


@pytest.mark.parametrize("rope", [None, RotaryEmbedding()], ids=["plain", "rope"])
def test_incremental_decoding_equals_the_full_pass(rope):
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 7, 8)).astype(np.float32)
    full_layer = MultiHeadAttention(4, num_kv_heads=2, causal=True, rope=rope)
    decoder = MultiHeadAttention(4, num_kv_heads=2, causal=True, rope=rope, decode=True)
    params = random_params(full_layer.init(KEY, x)[0], rng)
    full = full_layer(params, x)
    _, state = decoder.init(KEY, jax.ShapeDtypeStruct((2, 9, 8), jnp.float32))  # room to spare
    assert state["cached_key"].shape == (2, 9, 2, 2) and int(state["cache_index"]) == 0
    step = jax.jit(decoder.apply)
    outs = []
    for start, stop in [(0, 3), (3, 4), (4, 5), (5, 7)]:
        y, state = step(params, state, x[:, start:stop])
        outs.append(y)
        assert int(state["cache_index"]) == stop
    np.testing.assert_allclose(np.concatenate(outs, 1), full, rtol=1e-5, atol=1e-5)


def test_attention_dropout_in_training_only():
    x = np.random.default_rng(9).standard_normal((2, 6, 4)).astype(np.float32)
    layer = MultiHeadAttention(2, dropout_rate=0.5)
    params, _ = layer.init(KEY, x)

    def weights(**kwargs):
        return apply_with_intermediates(layer, params, {}, x, capture="weights", **kwargs)[2][
            "weights"
        ]

    clean = weights()
    np.testing.assert_array_equal(weights(train=False, rng=KEY), clean)
    dropped = weights(train=True, rng=KEY)
    kept = np.asarray(dropped) != 0
    assert 0.3 < 1 - kept.mean() < 0.7
    np.testing.assert_allclose(np.asarray(dropped)[kept], 2 * np.asarray(clean)[kept], rtol=1e-6)
    with pytest.raises(RngError, match="MultiHeadAttention at <root>: needs randomness"):
        layer.apply(params, {}, x, train=True)


def test_multi_head_attention_errors():
    with pytest.raises(ConfigError, match="num_kv_heads=3 must divide num_heads=4"):
        MultiHeadAttention(4, num_kv_heads=3)
    with pytest.raises(ConfigError, match="num_heads must be a positive int, given 0"):
        MultiHeadAttention(0)
    with pytest.raises(ShapeError, match="input features 6 are not divisible by num_heads=4"):
        MultiHeadAttention(4).init(KEY, jnp.zeros((2, 3, 6)))
    layer = MultiHeadAttention(2)
    params, _ = layer.init(KEY, jnp.zeros((2, 3, 4)))
    with pytest.raises(
        ShapeError,
        match=r"MultiHeadAttention at <root>: side input 'key_mask' must be booleans of shape "
        r"\(2, 3\)",
    ):
        layer(params, jnp.zeros((2, 3, 4)), side={"key_mask": jnp.ones((2, 4), bool)})
    with pytest.raises(ShapeError, match=r"side input 'lengths' must be integers of shape \(2,\)"):
        layer(params, jnp.zeros((2, 3, 4)), side={"lengths": jnp.ones((2, 1), jnp.int32)})
    decoder = MultiHeadAttention(2, causal=True, decode=True)
    _, cache = decoder.init(KEY, jnp.zeros((2, 3, 4)))
    with pytest.raises(ConfigError, match="'lengths' is ambiguous with decode=True"):
        decoder.apply(params, cache, jnp.zeros((2, 1, 4)), side={"lengths": jnp.ones(2, int)})
    rotary = MultiHeadAttention(2, rope=RotaryEmbedding())
    with pytest.raises(ShapeError, match=r"side input 'positions' must be ints of shape \(2, 3\)"):
        rotary(params, jnp.zeros((2, 3, 4)), side={"positions": jnp.zeros((2, 4), jnp.int32)})
    with pytest.raises(
        ShapeError, match=r"parameter 'w_q' has shape \(4, 2, 2\), expected \(5, 2, 2\)"
    ):
        layer(params, jnp.zeros((2, 3, 5)))
    with pytest.raises(ShapeError, match="must share their leading"):
        layer(params, (jnp.zeros((2, 3, 4)), jnp.zeros((3, 3, 4))))


def test_separate_key_and_value_inputs_errors_and_params():
    """The triple (x_q, x_k, x_v): w_k and w_v follow their own inputs; Tk and the batch axes
    must agree; a pair's params do not fit a triple."""
    layer = MultiHeadAttention(2)
    xq, xk, xv = jnp.zeros((2, 3, 4)), jnp.zeros((2, 5, 6)), jnp.zeros((2, 5, 7))
    params, _ = layer.init(KEY, (xq, xk, xv))
    assert jax.tree.map(jnp.shape, params) == {
        "w_q": (4, 2, 2),
        "w_k": (6, 2, 2),
        "w_v": (7, 2, 2),
        "w_o": (2, 2, 4),
        "b_q": (2, 2),
        "b_k": (2, 2),
        "b_v": (2, 2),
        "b_o": (4,),
    }
    with pytest.raises(
        ShapeError,
        match=r"MultiHeadAttention at <root>: values input \(\.\.\., Tk, F_v\) must share the "
        r"batch axes and Tk of the keys input \(2, 5, 6\), given \(2, 4, 7\)",
    ):
        layer(params, (xq, xk, jnp.zeros((2, 4, 7))))
    with pytest.raises(ShapeError, match=r"values input \(\.\.\., Tk, F_v\) must have rank >= 2"):
        layer(params, (xq, xk, jnp.zeros(7)))
    with pytest.raises(ShapeError, match=r"the pair \(x_q, x_kv\) or the triple .* 4 items"):
        layer(params, (xq, xk, xv, xv))
    with pytest.raises(ShapeError, match=r"parameter 'w_v' has shape \(7, 2, 2\), expected"):
        layer(params, (xq, xk))


# --------------------------------------------------------------------------------------------
# Kernels: jax.nn.dot_product_attention ("xla") against the explicit one and NumPy; the choice.


def _kernel_cases():
    """(name, Hq, Hkv, mask): causal, key padding with an example that has no key, GQA."""
    causal = np.tril(np.ones((5, 5), bool))
    padding = (np.arange(5)[None] < np.array([[3], [0]]))[:, None, None, :]  # (B, 1, 1, Tk)
    return [
        ("causal", 4, 4, causal),
        ("padding_gqa", 4, 2, padding),
        ("causal_padding_mqa", 4, 1, causal & padding),
    ]


@pytest.mark.parametrize(("name", "hq", "hkv", "mask"), _kernel_cases(), ids=lambda c: c)
def test_xla_kernel_equals_explicit_and_numpy_outputs_and_gradients(name, hq, hkv, mask):
    rng = np.random.default_rng(30)
    q, k, v = (a.astype(np.float32) for a in qkv(rng, Tq=5, Tk=5, Hq=hq, Hkv=hkv, D=8, Dv=8))
    cotangent = rng.standard_normal(q.shape).astype(np.float32)

    def loss(impl):
        def f(q, k, v):
            out = dot_product_attention(q, k, v, mask=mask, implementation=impl)
            return jnp.sum(out * cotangent)

        return jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2)))

    (l_x, g_x), (l_e, g_e) = loss("xla")(q, k, v), loss("explicit")(q, k, v)
    out = dot_product_attention(q, k, v, mask=mask, implementation="xla")
    np.testing.assert_allclose(out, np_attention(q, k, v, mask)[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(l_x, l_e, rtol=1e-5)
    for a, b in zip(g_x, g_e, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    if "padding" in name:  # example 1 has no key: zero output, no gradient into its q, k, v
        np.testing.assert_array_equal(out[1], 0.0)
        for g in g_x:
            np.testing.assert_array_equal(g[1], 0.0)


@pytest.mark.parametrize("side", ["lengths", "key_mask"])
def test_layer_xla_kernel_equals_explicit_with_causal_padding_and_gqa(side):
    """The layer's fused path (is_causal + key lengths / a key mask) against the explicit one,
    outputs and parameter gradients, with a sequence of length 0 (zero attention output)."""
    rng = np.random.default_rng(31)
    x = rng.standard_normal((2, 6, 16)).astype(np.float32)
    lengths = np.array([4, 0])
    given = {"lengths": lengths, "key_mask": np.arange(6)[None] < lengths[:, None]}[side]
    layers = {
        i: MultiHeadAttention(4, num_kv_heads=2, causal=True, implementation=i)
        for i in ("xla", "explicit")
    }
    params = random_params(layers["xla"].init(KEY, x)[0], rng)

    def run(impl):
        def f(p):
            y = layers[impl](p, x, side={side: given})
            return jnp.sum(jnp.sin(y)), y

        return jax.jit(jax.value_and_grad(f, has_aux=True))(params)

    (l_x, y_x), g_x = run("xla")
    (l_e, y_e), g_e = run("explicit")
    np.testing.assert_allclose(l_x, l_e, rtol=1e-5)
    np.testing.assert_allclose(y_x, y_e, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(y_x[1], np.broadcast_to(params["b_o"], (6, 16)), rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), g_x, g_e)


def _count_fused_calls(monkeypatch):
    calls = []
    real = jax.nn.dot_product_attention

    def spy(*args, **kwargs):
        calls.append(kwargs["implementation"])
        return real(*args, **kwargs)

    monkeypatch.setattr(jax.nn, "dot_product_attention", spy)
    return calls


def test_tapping_the_weights_runs_the_explicit_kernel(monkeypatch):
    """With implementation="xla", a tapping block that captures or edits ``weights`` gets the
    real weights (explicit kernel); one that taps other paths leaves the fused kernel on."""
    calls = _count_fused_calls(monkeypatch)
    rng = np.random.default_rng(32)
    x = rng.standard_normal((1, 3, 4)).astype(np.float32)
    layer = MultiHeadAttention(2, causal=True, implementation="xla")
    params = random_params(layer.init(KEY, x)[0], rng)
    y = layer(params, x)
    assert calls == ["xla"]
    y_heads, _, taps = apply_with_intermediates(layer, params, {}, x, capture="*heads")
    assert calls == ["xla", "xla"] and list(taps) == ["heads"]
    y_w, _, taps = apply_with_intermediates(layer, params, {}, x, capture="*weights")
    assert len(calls) == 2 and list(taps) == ["weights"]
    ref, ref_w = np_mha(params, x, x, np.tril(np.ones((3, 3), bool)))
    np.testing.assert_allclose(taps["weights"], ref_w, rtol=1e-5, atol=1e-6)
    for out in (y, y_heads, y_w):
        np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    with tapping(capture=(), edit={"*weights": lambda w: jnp.zeros_like(w)}):
        y_edit = layer(params, x)
    assert len(calls) == 2
    np.testing.assert_allclose(y_edit[0], np.broadcast_to(params["b_o"], (3, 4)), rtol=1e-6)


def test_kernel_choice_and_its_errors(monkeypatch):
    calls = _count_fused_calls(monkeypatch)
    x = np.ones((1, 3, 8), np.float32)
    layer = MultiHeadAttention(2, causal=True)
    params = layer.init(KEY, x)[0]
    layer(params, x)  # None on CPU: the explicit kernel
    dot_product_attention(*qkv(np.random.default_rng(0)))
    assert calls == []
    with pytest.raises(ConfigError, match=r"implementation must be None .* given 'flash'"):
        MultiHeadAttention(2, implementation="flash")
    with pytest.raises(ConfigError, match=r"implementation='xla' .* no dropout"):
        MultiHeadAttention(2, dropout_rate=0.1, implementation="xla")
    with pytest.raises(ConfigError, match=r"implementation='cudnn' needs an NVIDIA GPU"):
        MultiHeadAttention(2, implementation="cudnn")(params, x)
    q, k, v = qkv(np.random.default_rng(0))  # Dv != D: JAX's function cannot take it
    with pytest.raises(ConfigError, match=r"does not support value head size \(2\)"):
        dot_product_attention(q, k, v, implementation="xla")
    with pytest.raises(ConfigError, match=r"does not support dropout"):
        dot_product_attention(q, k, k, dropout_rate=0.5, implementation="xla")

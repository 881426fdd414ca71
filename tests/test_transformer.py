"""Positional encodings, feed-forward networks and transformer blocks against NumPy; the
transformer models: causality, padding, the decode cache == the full pass, generation."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nn_jax.errors import ConfigError, RngError, ShapeError
from nn_jax.models.transformer import TransformerEncoder, TransformerLM, generate
from nn_jax.positional import (
    LearnedPositionalEmbedding,
    RotaryEmbedding,
    SinusoidalPositionalEncoding,
    rotary_embedding,
    sinusoidal_encoding,
)
from nn_jax.transformer import FeedForward, TransformerDecoderBlock, TransformerEncoderBlock
from tests.test_attention import np_mha, np_rope, random_params

KEY = jax.random.key(0)


# --------------------------------------------------------------------------------------------
# Positional encodings.


def test_sinusoidal_encoding_matches_the_paper():
    pe = np.asarray(sinusoidal_encoding(np.arange(7), 6, base=100.0))
    for pos in range(7):
        for i in range(3):
            np.testing.assert_allclose(pe[pos, 2 * i], np.sin(pos / 100 ** (2 * i / 6)), atol=1e-6)
            np.testing.assert_allclose(
                pe[pos, 2 * i + 1], np.cos(pos / 100 ** (2 * i / 6)), atol=1e-6
            )
    x = np.random.default_rng(0).standard_normal((2, 7, 6)).astype(np.float32)
    y = SinusoidalPositionalEncoding(base=100.0)({}, x)
    np.testing.assert_allclose(y, x + pe[None], rtol=1e-6)
    with pytest.raises(ShapeError, match="features must be even"):
        SinusoidalPositionalEncoding().init(KEY, jnp.zeros((2, 3, 5)))


def test_rotary_embedding_matches_numpy_and_is_relative():
    rng = np.random.default_rng(1)
    with jax.enable_x64(True):
        x = rng.standard_normal((2, 5, 3, 8))
        positions = np.array([0, 3, 4, 9, 20])
        np.testing.assert_allclose(
            rotary_embedding(x, positions), np_rope(x, positions), rtol=1e-12, atol=1e-12
        )
        layer_out, _ = RotaryEmbedding().apply({}, {}, x)
        np.testing.assert_allclose(layer_out, np_rope(x, range(5)), rtol=1e-12, atol=1e-12)
        q, k = rng.standard_normal((1, 1, 1, 8)), rng.standard_normal((1, 1, 1, 8))

        def score(p, s):
            return float(jnp.sum(rotary_embedding(q, [p]) * rotary_embedding(k, [s])))

        assert abs(score(7, 2) - score(12, 7)) < 1e-12  # depends on p - s only
        assert abs(score(7, 2) - score(2, 7)) > 1e-3


@pytest.mark.parametrize(
    "layer", [SinusoidalPositionalEncoding(decode=True), LearnedPositionalEmbedding(9, decode=True)]
)
def test_additive_positions_continue_across_decode_calls(layer):
    x = np.random.default_rng(2).standard_normal((2, 6, 4)).astype(np.float32)
    params, state = layer.init(KEY, jax.ShapeDtypeStruct((2, 9, 4), jnp.float32))
    full = dataclasses.replace(layer, decode=False)(params, x)
    first, state = layer.apply(params, state, x[:, :4])
    second, state = layer.apply(params, state, x[:, 4:])
    assert int(state["index"]) == 6
    np.testing.assert_allclose(np.concatenate([first, second], 1), full, rtol=1e-6)


def test_learned_positions_add_table_rows_and_check_length():
    layer = LearnedPositionalEmbedding(5)
    x = np.random.default_rng(3).standard_normal((2, 4, 3)).astype(np.float32)
    params, _ = layer.init(KEY, x)
    assert params["embedding"].shape == (5, 3)
    np.testing.assert_allclose(layer(params, x), x + np.asarray(params["embedding"])[None, :4])
    with pytest.raises(ShapeError, match=r"input has 6 positions .* more than max_length=5"):
        layer(params, jnp.zeros((2, 6, 3)))


# --------------------------------------------------------------------------------------------
# Feed-forward networks and blocks against NumPy.


def np_gelu(x):
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def np_silu(x):
    return x / (1 + np.exp(-x))


def np_dense(p, x):
    return x @ p["w"] + p.get("b", 0)


def np_ffn(p, x):
    if "gate" in p:  # SwiGLU
        return np_dense(p["down"], np_silu(np_dense(p["gate"], x)) * np_dense(p["up"], x))
    return np_dense(p["down"], np_gelu(np_dense(p["up"], x)))


def np_layer_norm(p, x, eps=1e-5):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * p["scale"] + p["bias"]


def np_rms_norm(p, x, eps=1e-5):
    return x / np.sqrt((x**2).mean(-1, keepdims=True) + eps) * p["scale"]


def np_norm(p, x):
    return np_layer_norm(p, x) if "bias" in p else np_rms_norm(p, x)


@pytest.mark.parametrize("gated", [False, True], ids=["gelu", "swiglu"])
def test_feed_forward_matches_numpy(gated):
    rng = np.random.default_rng(4)
    layer = FeedForward(6, activation="silu" if gated else "gelu", gated=gated, out_features=3)
    with jax.enable_x64(True):
        x = rng.standard_normal((2, 4, 5))
        params = random_params(layer.init(KEY, x)[0], rng)
        y = layer(params, x)
    assert set(params) == ({"up", "gate", "down"} if gated else {"up", "down"})
    np.testing.assert_allclose(y, np_ffn(params, x), rtol=1e-12, atol=1e-12)


def np_encoder_block(p, x, mask, post):
    def branch(name, fn, x):
        if post:
            return np_norm(p[f"{name}_norm"], x + fn(x))
        return x + fn(np_norm(p[f"{name}_norm"], x))

    x = branch("attention", lambda h: np_mha(p["attention"], h, h, mask)[0], x)
    return branch("mlp", lambda h: np_ffn(p["mlp"], h), x)


@pytest.mark.parametrize(
    "block",
    [
        TransformerEncoderBlock(2, 12),
        TransformerEncoderBlock(2, 12, norm_position="post", causal=True),
        TransformerEncoderBlock(4, 12, num_kv_heads=2, norm="rms", ffn="swiglu", causal=True),
    ],
    ids=["pre_ln", "post_ln_causal", "rms_swiglu_gqa"],
)
def test_encoder_block_matches_numpy(block):
    rng = np.random.default_rng(5)
    key_valid = np.array([[True] * 5, [True, True, True, False, False]])
    with jax.enable_x64(True):
        x = rng.standard_normal((2, 5, 8))
        params = random_params(block.init(KEY, x)[0], rng)
        y = block(params, x, key_mask=key_valid)
    mask = key_valid[:, None, None, :]
    if block.causal:
        mask = mask & np.tril(np.ones((5, 5), bool))
    expected = np_encoder_block(params, x, mask, block.norm_position == "post")
    np.testing.assert_allclose(y, expected, rtol=1e-10, atol=1e-10)


def test_decoder_block_matches_numpy():
    rng = np.random.default_rng(6)
    block = TransformerDecoderBlock(2, 12)
    memory_valid = np.array([[True] * 6, [True, False, True, True, False, False]])
    with jax.enable_x64(True):
        x, memory = rng.standard_normal((2, 4, 8)), rng.standard_normal((2, 6, 3))
        params = random_params(block.init(KEY, (x, memory))[0], rng)
        y = block(params, (x, memory), memory_key_mask=memory_valid)
    causal = np.tril(np.ones((4, 4), bool))[None, None]
    p = params
    h = x + np_mha(p["self_attention"], *(np_norm(p["self_attention_norm"], x),) * 2, causal)[0]
    normed = np_norm(p["cross_attention_norm"], h)
    h = h + np_mha(p["cross_attention"], normed, memory, memory_valid[:, None, None, :])[0]
    h = h + np_ffn(p["mlp"], np_norm(p["mlp_norm"], h))
    np.testing.assert_allclose(y, h, rtol=1e-10, atol=1e-10)


def test_block_dropout_needs_rng_in_training_only():
    block = TransformerEncoderBlock(2, 8, dropout_rate=0.5)
    x = jnp.asarray(np.random.default_rng(11).standard_normal((1, 3, 4)), jnp.float32)
    params, _ = block.init(KEY, x)
    np.testing.assert_array_equal(block(params, x), TransformerEncoderBlock(2, 8)(params, x))
    with pytest.raises(RngError, match=r"Dropout at 'attention_dropout': needs randomness"):
        block(params, x, train=True)
    assert not np.allclose(block(params, x, train=True, rng=KEY), block(params, x))


# --------------------------------------------------------------------------------------------
# Models.


LM_CONFIGS = {
    "rope_gqa": dict(num_heads=4, num_kv_heads=2),
    "learned_swiglu_rms": dict(num_heads=2, positional="learned", ffn="swiglu", norm="rms"),
    "sinusoidal_post_ln": dict(num_heads=2, positional="sinusoidal", norm_position="post"),
}


@pytest.fixture(scope="module", params=list(LM_CONFIGS))
def lm(request):
    model = TransformerLM(17, num_layers=2, d_model=8, max_length=12, **LM_CONFIGS[request.param])
    params, _ = model.init(KEY, jnp.zeros((2, 10), jnp.int32))
    return model, random_params(params, np.random.default_rng(7), scale=0.3)


TOKENS = np.random.default_rng(8).integers(0, 17, (2, 10)).astype(np.int32)


def test_lm_cached_decoding_gives_the_full_pass_logits(lm):
    model, params = lm
    full = model(params, TOKENS)
    decoder = dataclasses.replace(model, decode=True)
    _, state = decoder.init(KEY, jax.ShapeDtypeStruct((2, 12), jnp.int32))
    step = jax.jit(decoder.apply)
    logits, state = step(params, state, TOKENS[:, :4])  # prefill
    chunks = [logits]
    for t in range(4, 10):
        logits, state = step(params, state, TOKENS[:, t : t + 1])
        chunks.append(logits)
    np.testing.assert_allclose(np.concatenate(chunks, 1), full, rtol=1e-5, atol=1e-5)


def test_lm_is_causal(lm):
    model, params = lm
    changed = TOKENS.copy()
    changed[:, 6:] = (changed[:, 6:] + 1) % 17
    a, b = model(params, TOKENS), model(params, changed)
    np.testing.assert_allclose(a[:, :6], b[:, :6], rtol=1e-6, atol=1e-6)
    assert not np.allclose(a[:, 6:], b[:, 6:])


def test_greedy_generate_equals_a_loop_over_full_passes(lm):
    model, params = lm
    out = generate(model, params, TOKENS[:, :3], 6)
    forward = jax.jit(model.apply)
    seq = np.zeros((2, 9), np.int32)  # steps after t do not change logits at t (causal)
    seq[:, :3] = TOKENS[:, :3]
    for t in range(3, 9):  # no cache: the whole sequence every step
        logits, _ = forward(params, {}, seq)
        seq[:, t] = np.argmax(logits[:, t - 1], -1)
    np.testing.assert_array_equal(out, seq)


def test_sampling_generate():
    model = TransformerLM(11, num_layers=1, d_model=8, num_heads=2, max_length=10)
    params, _ = model.init(KEY, jnp.zeros((1, 4), jnp.int32))
    params = random_params(params, np.random.default_rng(9))
    prompt = np.array([[1, 2], [3, 4]], np.int32)
    a = generate(model, params, prompt, 5, rng=KEY, temperature=1.0)
    np.testing.assert_array_equal(a, generate(model, params, prompt, 5, rng=KEY, temperature=1.0))
    assert not np.array_equal(
        a, generate(model, params, prompt, 5, rng=jax.random.key(1), temperature=1.0)
    )
    np.testing.assert_array_equal(
        generate(model, params, prompt, 5, rng=KEY, temperature=0.7, top_k=1),
        generate(model, params, prompt, 5),
    )
    # top_k=3 samples only among the three best next tokens at the first step.
    first = np.asarray(model(params, prompt))[:, -1]
    allowed = np.argsort(first, -1)[:, -3:]
    for seed in range(5):
        tok = generate(model, params, prompt, 1, rng=jax.random.key(seed), temperature=5.0, top_k=3)
        assert all(tok[i, -1] in allowed[i] for i in range(2))
    with pytest.raises(RngError, match="temperature > 0 needs rng"):
        generate(model, params, prompt, 3, temperature=1.0)
    with pytest.raises(ShapeError, match="exceeds the model's max_length=10"):
        generate(model, params, prompt, 9)
    with pytest.raises(ConfigError, match=r"top_k must be in 1\.\.11"):
        generate(model, params, prompt, 3, top_k=0)


def test_encoder_classifier_padding_changes_nothing():
    model = TransformerEncoder(3, num_layers=2, d_model=8, num_heads=2, vocab_size=13)
    tokens = np.random.default_rng(10).integers(0, 13, (3, 7)).astype(np.int32)
    lengths = np.array([7, 4, 1])
    params, _ = model.init(KEY, tokens)
    forward = jax.jit(model.apply)
    logits, _ = forward(params, {}, (tokens, lengths))
    assert logits.shape == (3, 3)
    for i, n in enumerate(lengths):
        alone, _ = forward(params, {}, tokens[i : i + 1, :n])
        np.testing.assert_allclose(logits[i], alone[0], rtol=1e-5, atol=1e-5)
    tagger = TransformerEncoder(5, num_layers=1, d_model=8, num_heads=2, pooling="none")
    p, _ = tagger.init(KEY, jnp.zeros((2, 6, 3)))
    assert tagger(p, jnp.zeros((2, 6, 3))).shape == (2, 6, 5)


def test_model_config_errors():
    with pytest.raises(ConfigError, match="positional must be one of"):
        TransformerLM(10, positional="alibi")
    with pytest.raises(ConfigError, match="norm_position must be one of"):
        TransformerEncoder(2, norm_position="middle")
    with pytest.raises(ConfigError, match="num_kv_heads=3 must divide num_heads=4"):
        TransformerLM(10, num_heads=4, num_kv_heads=3)
    with pytest.raises(ConfigError, match="pooling must be 'mean' or 'none'"):
        TransformerEncoder(2, pooling="max")
    with pytest.raises(ShapeError, match=r"T <= max_length=4"):
        model = TransformerLM(
            10, num_layers=1, d_model=8, num_heads=2, positional="learned", max_length=4
        )
        model.init(KEY, jnp.zeros((1, 6), jnp.int32))

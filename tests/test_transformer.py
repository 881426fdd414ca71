"""Positional encodings, feed-forward networks and transformer blocks against NumPy; the
transformer models: causality, padding, the decode cache == the full pass, generation (padded
batches give each prompt the tokens it gets alone); attention maps through taps."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nn_jax.errors import ConfigError, RngError, ShapeError, ValueRangeError
from nn_jax.inspect import apply_with_intermediates
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
        per_example = np.array([positions, [0, 0, 1, 2, 3]])
        layer_out = RotaryEmbedding()({}, x, side={"positions": per_example})
        for b in range(2):
            np.testing.assert_allclose(
                layer_out[b], np_rope(x[b : b + 1], per_example[b])[0], rtol=1e-12, atol=1e-12
            )
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
    table = np.asarray(params["embedding"])
    assert table.shape == (5, 3)
    np.testing.assert_allclose(layer(params, x), x + table[None, :4])
    positions = np.array([[0, 0, 1, 2], [4, 3, 2, 1]])
    y = layer(params, x, side={"positions": positions})
    np.testing.assert_allclose(y, x + table[positions], rtol=1e-6)
    outside = {"positions": np.array([0, 1, 5, -1])}
    with pytest.raises(
        ValueRangeError, match=r"'positions' must lie in \[0, 5\), given values in \[-1, 5\]"
    ):
        layer(params, x, side=outside)
    unchecked = jax.jit(lambda p, x: layer(p, x, side=outside))(params, x)  # NaN, as documented
    assert np.all(np.isnan(unchecked[:, 2:])) and not np.any(np.isnan(unchecked[:, :2]))
    with pytest.raises(ShapeError, match=r"input has 6 positions .* more than max_length=5"):
        layer(params, jnp.zeros((2, 6, 3)))
    with pytest.raises(ShapeError, match=r"side input 'positions' must be ints of shape \(2, 4\)"):
        layer(params, x, side={"positions": np.zeros((2, 4), np.float32)})


def test_sinusoidal_positions_side_input():
    x = np.random.default_rng(12).standard_normal((2, 3, 4)).astype(np.float32)
    positions = np.array([[0, 0, 1], [7, 8, 9]])
    y = SinusoidalPositionalEncoding()({}, x, side={"positions": positions})
    np.testing.assert_allclose(y, x + np.asarray(sinusoidal_encoding(positions, 4)), rtol=1e-6)


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
    return (x - mean) / np.sqrt(var + eps) * p["scale"] + p["b"]


def np_rms_norm(p, x, eps=1e-5):
    return x / np.sqrt((x**2).mean(-1, keepdims=True) + eps) * p["scale"]


def np_norm(p, x):
    return np_layer_norm(p, x) if "b" in p else np_rms_norm(p, x)


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
        y = block(params, x, side={"key_mask": key_valid})
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
        y, _, taps = apply_with_intermediates(
            block,
            params,
            {},
            (x, memory),
            side={"memory_key_mask": memory_valid},
            capture="*weights",
        )
    causal = np.tril(np.ones((4, 4), bool))[None, None]
    p = params
    h = x + np_mha(p["self_attention"], *(np_norm(p["self_attention_norm"], x),) * 2, causal)[0]
    normed = np_norm(p["cross_attention_norm"], h)
    cross, cross_weights = np_mha(
        p["cross_attention"], normed, memory, memory_valid[:, None, None, :]
    )
    h = h + cross
    h = h + np_ffn(p["mlp"], np_norm(p["mlp_norm"], h))
    np.testing.assert_allclose(y, h, rtol=1e-10, atol=1e-10)
    assert sorted(taps) == ["cross_attention/weights", "self_attention/weights"]
    np.testing.assert_allclose(taps["cross_attention/weights"], cross_weights, rtol=1e-10)


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


def test_padded_batched_generation_equals_each_prompt_alone(lm):
    """Left- and right-padded prompts of lengths 5, 2 and 4: greedy tokens as when alone."""
    model, params = lm
    if model.positional == "sinusoidal":
        pytest.skip("rope and learned positions cover the 'positions' path (CI time)")
    prompts = [TOKENS[0, :5], TOKENS[1, 3:5], TOKENS[1, 6:10]]
    alone = [np.asarray(generate(model, params, p[None], 4))[0, len(p) :] for p in prompts]
    lengths = np.array([len(p) for p in prompts])
    for padding in ("left", "right"):
        batch = np.full((3, 5), 16, np.int32)  # a real token id as padding: the mask must work
        valid = np.zeros((3, 5), bool)
        for i, p in enumerate(prompts):
            span = slice(5 - len(p), 5) if padding == "left" else slice(0, len(p))
            batch[i, span], valid[i, span] = p, True
        out = np.asarray(generate(model, params, batch, 4, side={"key_mask": valid}))
        np.testing.assert_array_equal(out[:, :5], batch)
        for i in range(3):
            np.testing.assert_array_equal(out[i, 5:], alone[i], err_msg=f"{padding} row {i}")
    by_lengths = generate(model, params, batch, 4, side={"lengths": lengths})  # right-padded
    np.testing.assert_array_equal(by_lengths, out)


def test_left_padded_full_pass_with_positions_equals_unpadded(lm):
    model, params = lm
    padded = np.concatenate([np.full((2, 3), 5, np.int32), TOKENS[:, :6]], axis=1)
    valid = np.arange(9) >= np.array([[3], [0]])  # row 0: 3 pads; row 1: 6 real + 3 at the end
    padded[1] = np.concatenate([TOKENS[1, :6], [5, 5, 5]])
    positions = np.maximum(np.cumsum(valid, axis=1) - 1, 0)
    logits = model(params, padded, side={"key_mask": valid, "positions": positions})
    alone = model(params, TOKENS[:, :6])
    np.testing.assert_allclose(logits[0, 3:], alone[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(logits[1, :6], alone[1], rtol=1e-5, atol=1e-5)


def test_generate_padding_errors():
    model = TransformerLM(11, num_layers=1, d_model=8, num_heads=2, max_length=10)
    params, _ = model.init(KEY, jnp.zeros((1, 4), jnp.int32))
    prompt = np.array([[1, 2], [3, 4]], np.int32)
    with pytest.raises(ConfigError, match=r"side may hold only the prompt's padding.*'positions'"):
        generate(model, params, prompt, 2, side={"positions": np.zeros((2, 2), np.int32)})
    with pytest.raises(ShapeError, match=r"prompts \[1\] have no real token"):
        generate(model, params, prompt, 2, side={"key_mask": np.array([[1, 1], [0, 0]], bool)})
    with pytest.raises(ShapeError, match=r"'key_mask' must be booleans of the prompt's shape"):
        generate(model, params, prompt, 2, side={"key_mask": np.ones((2, 3), bool)})
    decoder = dataclasses.replace(model, decode=True)
    _, cache = decoder.init(KEY, jnp.zeros((2, 4), jnp.int32))
    with pytest.raises(ConfigError, match="'lengths' is ambiguous in decode mode"):
        decoder.apply(params, cache, prompt, side={"lengths": np.array([2, 1])})


def test_lm_attention_maps_through_taps():
    """Per-block causal weights, rows summing to 1, equal to a NumPy recomputation."""
    model = TransformerLM(13, num_layers=2, d_model=8, num_heads=2, positional="learned")
    params, _ = model.init(KEY, jnp.zeros((1, 5), jnp.int32))
    params = random_params(params, np.random.default_rng(13), scale=0.3)
    tokens = TOKENS[:1, :5] % 13
    with jax.enable_x64(True):
        params = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
        _, _, taps = apply_with_intermediates(
            model, params, {}, tokens, capture=("*weights", "block_1/attention_norm")
        )
    assert sorted(taps) == [
        "block_0/attention/weights",
        "block_1/attention/weights",
        "block_1/attention_norm",
    ]
    weights = np.asarray(taps["block_1/attention/weights"])
    assert weights.shape == (1, 2, 5, 5)
    h = np.asarray(taps["block_1/attention_norm"])
    causal = np.tril(np.ones((5, 5), bool))[None, None]
    _, expected = np_mha(params["block_1"]["attention"], h, h, causal)
    np.testing.assert_allclose(weights, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("padding", ["lengths", "key_mask"])
def test_encoder_classifier_padding_changes_nothing(padding):
    model = TransformerEncoder(3, num_layers=2, d_model=8, num_heads=2, vocab_size=13)
    tokens = np.random.default_rng(10).integers(0, 13, (3, 7)).astype(np.int32)
    lengths = np.array([7, 4, 1])
    side = (
        {"lengths": lengths}
        if padding == "lengths"
        else {"key_mask": np.arange(7) < lengths[:, None]}
    )
    params, _ = model.init(KEY, tokens)
    forward = jax.jit(model.apply)
    logits, _ = forward(params, {}, tokens, side=side)
    assert logits.shape == (3, 3)
    for i, n in enumerate(lengths):
        alone, _ = forward(params, {}, tokens[i : i + 1, :n])
        np.testing.assert_allclose(logits[i], alone[0], rtol=1e-5, atol=1e-5)
    tagger = TransformerEncoder(5, num_layers=1, d_model=8, num_heads=2, pooling="none")
    p, _ = tagger.init(KEY, jnp.zeros((2, 6, 3)))
    assert tagger(p, jnp.zeros((2, 6, 3))).shape == (2, 6, 5)
    with pytest.raises(ShapeError, match=r"side input 'lengths' must be integers of shape \(3,\)"):
        model(params, tokens, side={"lengths": lengths[:2]})


def test_model_config_errors():
    with pytest.raises(ConfigError, match="positional must be one of"):
        TransformerLM(10, positional="alibi")
    with pytest.raises(ConfigError, match="norm_position must be one of"):
        TransformerEncoder(2, norm_position="middle")
    with pytest.raises(ConfigError, match="num_kv_heads=3 must divide num_heads=4"):
        TransformerLM(10, num_heads=4, num_kv_heads=3)
    with pytest.raises(
        ConfigError,
        match=r"ffn must be one of \('gelu', 'gelu_exact', 'relu', 'swiglu'\), given 'tanh'",
    ):
        TransformerLM(10, ffn="tanh")
    with pytest.raises(
        ConfigError, match="TransformerLM: tie_embeddings must be True or False, given 1"
    ):
        TransformerLM(10, tie_embeddings=1)
    with pytest.raises(ShapeError, match="TransformerLM at <root>: expected integer token ids"):
        TransformerLM(10, num_layers=1, d_model=8, num_heads=2).init(KEY, jnp.zeros((1, 3)))
    with pytest.raises(ConfigError, match="pooling must be 'mean' or 'none'"):
        TransformerEncoder(2, pooling="max")
    with pytest.raises(ShapeError, match=r"T <= max_length=4"):
        model = TransformerLM(
            10, num_layers=1, d_model=8, num_heads=2, positional="learned", max_length=4
        )
        model.init(KEY, jnp.zeros((1, 6), jnp.int32))

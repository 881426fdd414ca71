"""Attention, positional encodings, transformer blocks and transformer models.

Token inputs are integers (no input gradient). The decode-mode attention case runs a full-length
step on a fresh cache; tests/test_attention.py checks incremental decoding itself. Side inputs
(masks, lengths, positions) have their batch axis first, as the input.
"""

import numpy as np

from nn_jax.attention import MultiHeadAttention
from nn_jax.models.transformer import TransformerEncoder, TransformerLM
from nn_jax.positional import (
    LearnedPositionalEmbedding,
    RotaryEmbedding,
    SinusoidalPositionalEncoding,
)
from nn_jax.transformer import FeedForward, TransformerDecoderBlock, TransformerEncoderBlock
from tests.cases import Case, normal


def pair(q_shape, kv_shape):
    return lambda g: (g.standard_normal(q_shape), g.standard_normal(kv_shape))


def triple(q_shape, k_shape, v_shape):
    return lambda g: tuple(g.standard_normal(shape) for shape in (q_shape, k_shape, v_shape))


def tokens(batch, steps, vocab):
    return lambda g: g.integers(0, vocab, (batch, steps))


def lengths(batch, steps):
    return lambda g: {"lengths": g.integers(1, steps + 1, batch)}


def key_mask(batch, steps, name="key_mask"):
    """Random valid steps, at least the first one valid (no fully masked example)."""
    return lambda g: {name: (g.random((batch, steps)) < 0.7) | (np.arange(steps) == 0)}


def left_padded(batch, steps):
    """A left-padded batch: its key mask and the positions counting the real steps only."""

    def make(g):
        valid = np.arange(steps) >= g.integers(0, steps, (batch, 1))
        return {"key_mask": valid, "positions": np.maximum(np.cumsum(valid, 1) - 1, 0)}

    return make


CASES = [
    Case("mha_self", MultiHeadAttention(2), normal(2, 5, 8)),
    Case("mha_self_key_mask", MultiHeadAttention(2), normal(2, 5, 8), side=key_mask(2, 5)),
    Case(
        "mha_self_lengths", MultiHeadAttention(2, causal=True), normal(2, 5, 8), side=lengths(2, 5)
    ),
    Case(
        "mha_cross_out_features",
        MultiHeadAttention(2, head_dim=3, out_features=4),
        pair((2, 3, 6), (2, 5, 4)),
    ),
    Case(
        "mha_separate_key_value_inputs",
        MultiHeadAttention(2),
        triple((2, 3, 4), (2, 5, 6), (2, 5, 3)),
        side=key_mask(2, 5),
    ),
    Case(
        "mha_gqa_causal_rope",
        MultiHeadAttention(4, num_kv_heads=2, causal=True, rope=RotaryEmbedding()),
        normal(2, 5, 8),
    ),
    Case(
        "mha_mqa_weights_no_bias",
        MultiHeadAttention(4, num_kv_heads=1, use_bias=False),
        normal(2, 4, 8),
    ),
    Case(
        "mha_rope_left_padded",
        MultiHeadAttention(2, causal=True, rope=RotaryEmbedding()),
        normal(2, 5, 8),
        side=left_padded(2, 5),
    ),
    Case(
        "mha_dropout_train",
        MultiHeadAttention(2, dropout_rate=0.3),
        normal(2, 5, 4),
        train=True,
        rng=True,
    ),
    Case("mha_decode", MultiHeadAttention(2, causal=True, decode=True), normal(2, 5, 4)),
    Case("rotary_embedding", RotaryEmbedding(), normal(2, 5, 3, 4)),
    Case(
        "rotary_embedding_positions",
        RotaryEmbedding(),
        normal(2, 5, 3, 4),
        side=lambda g: {"positions": g.integers(0, 9, (2, 5))},
    ),
    Case("sinusoidal_positional", SinusoidalPositionalEncoding(), normal(2, 5, 6)),
    Case("learned_positional", LearnedPositionalEmbedding(7), normal(2, 5, 6)),
    # Room for 3 decode calls of 5 steps (the train-step check threads the state twice); a
    # position past max_length gives NaN rows.
    Case("learned_positional_decode", LearnedPositionalEmbedding(16, decode=True), normal(2, 5, 6)),
    Case(
        "learned_positional_positions",
        LearnedPositionalEmbedding(7),
        normal(2, 5, 6),
        side=lambda g: {"positions": g.integers(0, 7, (2, 5))},
    ),
    Case("feed_forward_gelu", FeedForward(8), normal(2, 3, 4)),
    Case("feed_forward_swiglu", FeedForward(8, activation="silu", gated=True), normal(2, 3, 4)),
    Case("encoder_block_pre", TransformerEncoderBlock(2, 16), normal(2, 5, 8)),
    Case(
        "encoder_block_post_rms_swiglu_causal",
        TransformerEncoderBlock(2, 16, norm_position="post", norm="rms", ffn="swiglu", causal=True),
        normal(2, 5, 8),
    ),
    Case(
        "encoder_block_dropout",
        TransformerEncoderBlock(2, 16, dropout_rate=0.2, attention_dropout_rate=0.2),
        normal(2, 5, 8),
        train=True,
        rng=True,
    ),
    Case(
        "decoder_block", TransformerDecoderBlock(2, 16, num_kv_heads=1), pair((2, 4, 8), (2, 6, 5))
    ),
    Case(
        "decoder_block_masks",
        TransformerDecoderBlock(2, 16),
        pair((2, 4, 8), (2, 6, 5)),
        side=lambda g: key_mask(2, 4)(g) | key_mask(2, 6, "memory_key_mask")(g),
    ),
    Case(
        "decoder_block_non_causal_relu_post_memory_mask",
        TransformerDecoderBlock(2, 16, ffn="relu", norm_position="post", causal=False),
        pair((2, 4, 8), (2, 6, 5)),
        side=lambda g: {"memory_mask": (g.random((2, 1, 4, 6)) < 0.7) | (np.arange(6) == 0)},
    ),
    Case(
        "transformer_encoder_features",
        TransformerEncoder(3, num_layers=2, d_model=8, num_heads=2, positional="learned"),
        normal(2, 6, 3),
    ),
    Case(
        "transformer_encoder_tokens_lengths",
        TransformerEncoder(
            3, num_layers=1, d_model=8, num_heads=2, vocab_size=11, norm_position="post"
        ),
        tokens(3, 6, 11),
        side=lengths(3, 6),
    ),
    Case(
        "transformer_encoder_key_mask_rope",
        TransformerEncoder(3, num_layers=1, d_model=8, num_heads=2, positional="rope"),
        normal(2, 5, 3),
        side=key_mask(2, 5),
    ),
    Case(
        "transformer_encoder_per_token_rope",
        TransformerEncoder(
            4, num_layers=1, d_model=8, num_heads=2, positional="rope", pooling="none"
        ),
        normal(2, 5, 3),
    ),
    Case(
        "transformer_lm", TransformerLM(13, num_layers=2, d_model=8, num_heads=2), tokens(2, 6, 13)
    ),
    Case(
        "transformer_lm_gqa_swiglu_rms_learned",
        TransformerLM(
            13,
            num_layers=1,
            d_model=8,
            num_heads=4,
            num_kv_heads=2,
            ffn="swiglu",
            norm="rms",
            positional="learned",
            max_length=8,
        ),
        tokens(2, 6, 13),
    ),
    Case(
        "transformer_lm_tied_gelu_exact",
        TransformerLM(
            13, num_layers=1, d_model=8, num_heads=2, ffn="gelu_exact", tie_embeddings=True
        ),
        tokens(2, 6, 13),
    ),
    Case(
        "transformer_lm_left_padded_learned",
        TransformerLM(13, num_layers=1, d_model=8, num_heads=2, positional="learned", max_length=8),
        tokens(2, 6, 13),
        side=left_padded(2, 6),
    ),
]

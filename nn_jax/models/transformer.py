"""Transformer models: a ``TransformerEncoder`` classifier and a decoder-only ``TransformerLM``.

``generate`` samples from a ``TransformerLM`` autoregressively (greedy, or with a temperature and
optional top-k), reusing a key/value cache so each new token costs one step, not a full pass.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import KW_ONLY
from typing import Any

import jax
import jax.numpy as jnp

from nn_jax.core import Array, Block, Layer, Params, PRNGKey, Scope
from nn_jax.dense import Dense
from nn_jax.embedding import Embedding
from nn_jax.errors import ConfigError, RngError, ShapeError
from nn_jax.masks import masked_mean_over_time, sequence_mask
from nn_jax.models.rnn import split_lengths
from nn_jax.normalization import LayerNorm, RMSNorm
from nn_jax.positional import (
    LearnedPositionalEmbedding,
    RotaryEmbedding,
    SinusoidalPositionalEncoding,
)
from nn_jax.regularization import Dropout
from nn_jax.transformer import TransformerEncoderBlock

__all__ = ["TransformerEncoder", "TransformerLM", "generate"]

_POSITIONAL = ("sinusoidal", "learned", "rope", "none")


@dataclasses.dataclass(frozen=True)
class _Stack(Block):
    """Embedding, positions and a stack of :class:`TransformerEncoderBlock` (shared options).

    Subclasses define the field ``vocab_size`` (``None``: float features, not tokens).
    """

    _: KW_ONLY
    num_layers: int = 2
    d_model: int = 128
    num_heads: int = 4
    num_kv_heads: int | None = None
    mlp_features: int | None = None
    max_length: int = 1024
    positional: str = "sinusoidal"
    norm_position: str = "pre"
    norm: str = "layer"
    ffn: str = "gelu"
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0

    causal = False
    decode = False

    def __post_init__(self) -> None:
        name = type(self).__name__
        for field in ("num_layers", "d_model", "max_length"):
            value = getattr(self, field)
            if not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{name}: {field} must be a positive int, given {value!r}")
        if self.positional not in _POSITIONAL:
            raise ConfigError(
                f"{name}: positional must be one of {_POSITIONAL}, given {self.positional!r}"
            )
        if self.vocab_size is not None:
            Embedding(self.vocab_size, self.d_model)
        self._block()  # validates the block options

    def _block(self) -> TransformerEncoderBlock:
        return TransformerEncoderBlock(
            self.num_heads,
            self.mlp_features or 4 * self.d_model,
            num_kv_heads=self.num_kv_heads,
            norm_position=self.norm_position,
            norm=self.norm,
            ffn=self.ffn,
            dropout_rate=self.dropout_rate,
            attention_dropout_rate=self.attention_dropout_rate,
            rope=RotaryEmbedding() if self.positional == "rope" else None,
            causal=self.causal,
            decode=self.decode,
        )

    def _positions(self) -> Layer | None:
        if self.positional == "sinusoidal":
            return SinusoidalPositionalEncoding(decode=self.decode)
        if self.positional == "learned":
            return LearnedPositionalEmbedding(self.max_length, decode=self.decode)
        return None

    def _encode(self, scope: Scope, x: Any, lengths: Any = None) -> Array:
        """Embed ``x``, add positions, run the blocks (and the final norm for pre-LN).

        Steps ``t >= lengths`` are masked out as keys.
        """
        if self.vocab_size is not None:
            embedding = Embedding(self.vocab_size, self.d_model)
            h = scope("embedding", embedding, x) * math.sqrt(self.d_model)
        else:
            h = scope("input_projection", Dense(self.d_model), x)
        if h.ndim < 2 or (self.positional == "learned" and h.shape[-2] > self.max_length):
            raise self.error(
                ShapeError,
                f"expected (..., T) tokens or (..., T, F) features with T <= max_length="
                f"{self.max_length}, given shape {jnp.shape(x)}",
            )
        positions = self._positions()
        if positions is not None:
            h = scope("positions", positions, h)
        if self.dropout_rate > 0:
            h = scope("embedding_dropout", Dropout(self.dropout_rate), h)
        key_mask = None
        if lengths is not None:
            key_mask = sequence_mask(lengths, h.shape[-2])
        block = self._block()
        for i in range(self.num_layers):
            h = scope(f"block_{i}", block, h, key_mask=key_mask)
        if self.norm_position == "pre":
            norm = RMSNorm() if self.norm == "rms" else LayerNorm()
            h = scope("final_norm", norm, h)
        return h


@dataclasses.dataclass(frozen=True)
class TransformerEncoder(_Stack):
    """A Transformer encoder with a classification head (bidirectional attention).

    ``x -> embedding -> + positions -> num_layers x TransformerEncoderBlock -> [final norm]
    -> pool -> Dense(num_classes)``.

    Args:
        num_classes: number of logits ``C``.
        num_layers, d_model, num_heads: depth, width ``D`` and attention heads.
        num_kv_heads: key/value heads (grouped-query attention; default ``num_heads``).
        mlp_features: feed-forward inner size (default ``4 * d_model``).
        vocab_size: if given, inputs are token ids, embedded by an ``Embedding`` scaled by
            ``sqrt(d_model)`` (Vaswani et al.); otherwise float features projected by a
            ``Dense(d_model)``.
        max_length: the most positions (the learned table's size).
        positional: ``"sinusoidal"``, ``"learned"``, ``"rope"`` (rotary, in attention) or
            ``"none"``.
        pooling: ``"mean"`` over the real steps -> ``(B, C)``, or ``"none"`` -> per-step logits
            ``(B, T, C)`` (sequence labelling).
        norm_position, norm, ffn, dropout_rate, attention_dropout_rate: see
            :class:`~nn_jax.transformer.TransformerEncoderBlock`.

    Input: ``x`` or the pair ``(x, lengths)``, or ``apply(..., lengths=...)``; ``x`` is
    ``(B, T)`` token ids or ``(B, T, F)`` features, ``lengths: (B,)``; padded steps are masked
    out of attention and pooling.

    Params: ``embedding`` or ``input_projection``, ``positions`` (learned), ``block_0`` ...,
    ``final_norm`` (pre-LN), ``head``.

    >>> import jax, jax.numpy as jnp
    >>> model = TransformerEncoder(3, num_layers=1, d_model=16, num_heads=2, vocab_size=20)
    >>> params, _ = model.init(jax.random.key(0), jnp.zeros((2, 7), jnp.int32))
    >>> sorted(params)
    ['block_0', 'embedding', 'final_norm', 'head']
    """

    num_classes: int
    _: KW_ONLY
    vocab_size: int | None = None
    pooling: str = "mean"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.num_classes, int) or self.num_classes <= 0:
            raise ConfigError(
                "TransformerEncoder: num_classes must be a positive int, given "
                f"{self.num_classes!r}"
            )
        if self.pooling not in ("mean", "none"):
            raise ConfigError(
                f"TransformerEncoder: pooling must be 'mean' or 'none', given {self.pooling!r}"
            )

    def forward(self, scope: Scope, x: Any, *, lengths: Any = None) -> Array:
        x, lengths = split_lengths(self, x, lengths)
        h = self._encode(scope, jnp.asarray(x), lengths)
        if self.pooling == "mean":
            h = masked_mean_over_time(h, lengths)
        return scope("head", Dense(self.num_classes), h)


@dataclasses.dataclass(frozen=True)
class TransformerLM(_Stack):
    """A decoder-only (GPT-style) language model: causal blocks and a vocabulary head.

    ``tokens -> embedding * sqrt(d_model) -> + positions -> num_layers x causal
    TransformerEncoderBlock -> [final norm] -> Dense(vocab_size, no bias)`` = next-token logits.

    Args:
        vocab_size: vocabulary size ``V``.
        num_layers, d_model, num_heads, num_kv_heads, mlp_features, norm_position, norm, ffn,
            dropout_rate, attention_dropout_rate: as :class:`TransformerEncoder`.
        max_length: the most positions (learned table size; :func:`generate`'s limit).
        positional: ``"rope"`` (default), ``"learned"``, ``"sinusoidal"`` or ``"none"``.
        decode: incremental decoding: every attention keeps a key/value cache and every
            additive position encoding its next position, in the state. ``init`` on tokens
            ``(B, L)`` creates a cache for ``L`` steps; each ``apply`` on ``(B, n)`` new tokens
            returns their logits and the advanced state. :func:`generate` does this for you.

    Input ``(..., T)`` int tokens (a batch's sequences start at position 0; pad at the end and
    mask the loss) -> ``(..., T, V)`` logits. Params: ``embedding``, ``positions`` (learned),
    ``block_0`` ..., ``final_norm`` (pre-LN), ``head: {w: (D, V)}``.

    >>> import jax, jax.numpy as jnp
    >>> lm = TransformerLM(50, num_layers=1, d_model=16, num_heads=2)
    >>> params, _ = lm.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))
    >>> generate(lm, params, jnp.array([[1, 2, 3]]), 4).shape
    (1, 7)
    """

    vocab_size: int
    _: KW_ONLY
    positional: str = "rope"
    decode: bool = False

    causal = True

    def __post_init__(self) -> None:
        if not isinstance(self.vocab_size, int) or self.vocab_size <= 0:
            raise ConfigError(
                f"TransformerLM: vocab_size must be a positive int, given {self.vocab_size!r}"
            )
        super().__post_init__()

    def forward(self, scope: Scope, x: Any) -> Array:
        h = self._encode(scope, jnp.asarray(x))
        return scope("head", Dense(self.vocab_size, use_bias=False), h)


def generate(
    model: TransformerLM,
    params: Params,
    prompt: Any,
    max_new_tokens: int,
    *,
    rng: PRNGKey | None = None,
    temperature: float = 0.0,
    top_k: int | None = None,
) -> Array:
    """Extend ``prompt`` by ``max_new_tokens`` tokens sampled from ``model``, using its cache.

    The prompt is run in one call (filling the cache), then one token per step inside a
    ``jax.lax.scan``; the whole loop is one jitted program (compiled once per model, shapes,
    ``max_new_tokens``, ``temperature`` and ``top_k``).

    Args:
        model: a :class:`TransformerLM` (its ``decode`` flag is ignored: the decoding copy is
            made here).
        params: the model's params.
        prompt: ``(B, T0)`` int tokens.
        max_new_tokens: ``N >= 1``; ``T0 + N`` must not exceed ``model.max_length``.
        rng: key for sampling (required when ``temperature > 0``).
        temperature: ``0`` is greedy (argmax); otherwise sample from
            ``softmax(logits / temperature)``.
        top_k: sample only among the ``top_k`` most likely tokens.

    Returns:
        ``(B, T0 + N)`` tokens: the prompt followed by the generated ones.
    """
    if not isinstance(model, TransformerLM):
        raise ConfigError(f"generate: model must be a TransformerLM, given {type(model).__name__}")
    prompt = jnp.asarray(prompt)
    if prompt.ndim != 2 or not jnp.issubdtype(prompt.dtype, jnp.integer):
        raise ShapeError(
            f"generate: prompt must be (B, T0) int tokens, given shape {prompt.shape} and dtype "
            f"{prompt.dtype}"
        )
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ConfigError(f"generate: max_new_tokens must be an int >= 1, given {max_new_tokens!r}")
    total = prompt.shape[1] + max_new_tokens
    if total > model.max_length:
        raise ShapeError(
            f"generate: prompt length {prompt.shape[1]} + max_new_tokens {max_new_tokens} = "
            f"{total} exceeds the model's max_length={model.max_length}"
        )
    if not isinstance(temperature, int | float) or temperature < 0:
        raise ConfigError(f"generate: temperature must be >= 0, given {temperature!r}")
    if top_k is not None and (not isinstance(top_k, int) or not 1 <= top_k <= model.vocab_size):
        raise ConfigError(f"generate: top_k must be in 1..{model.vocab_size}, given {top_k!r}")
    if temperature > 0 and rng is None:
        raise RngError("generate: sampling with temperature > 0 needs rng=jax.random.key(...)")
    decoder = dataclasses.replace(model, decode=True)
    return _generate(decoder, max_new_tokens, float(temperature), top_k, params, prompt, rng)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _generate(
    decoder: TransformerLM,
    max_new_tokens: int,
    temperature: float,
    top_k: int | None,
    params: Params,
    prompt: Array,
    rng: PRNGKey | None,
) -> Array:
    batch, prompt_length = prompt.shape
    full = jax.ShapeDtypeStruct((batch, prompt_length + max_new_tokens), prompt.dtype)
    _, state = jax.eval_shape(decoder.init, jax.random.key(0), full)
    state = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), state)

    def pick(logits: Array, step: int | Array) -> Array:
        if temperature == 0:
            return jnp.argmax(logits, axis=-1).astype(prompt.dtype)
        logits = logits / temperature
        if top_k is not None:
            kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
            logits = jnp.where(logits < kth, -jnp.inf, logits)
        token = jax.random.categorical(jax.random.fold_in(rng, step), logits, axis=-1)
        return token.astype(prompt.dtype)

    logits, state = decoder.apply(params, state, prompt)
    first = pick(logits[:, -1], 0)

    def body(carry: tuple[Array, Any], step: Array) -> tuple[tuple[Array, Any], Array]:
        token, state = carry
        logits, state = decoder.apply(params, state, token[:, None])
        return (pick(logits[:, -1], step), state), token

    (last, _), tokens = jax.lax.scan(body, (first, state), jnp.arange(1, max_new_tokens))
    return jnp.concatenate([prompt, tokens.T, last[:, None]], axis=1)

"""Transformer models: a ``TransformerEncoder`` classifier and a decoder-only ``TransformerLM``.

``generate`` samples from a ``TransformerLM`` autoregressively (greedy, or with a temperature and
optional top-k), reusing a key/value cache so each new token costs one step, not a full pass; a
batch of prompts of different lengths (left- or right-padded) gives each prompt the tokens it
would get alone.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping
from dataclasses import KW_ONLY
from typing import TYPE_CHECKING, Any, cast

import jax
import jax.numpy as jnp

from nn_jax.core import (
    Array,
    Block,
    Call,
    Layer,
    Params,
    PRNGKey,
    Rate,
    Scope,
    Side,
    Size,
    State,
    current_path,
)
from nn_jax.dense import Dense
from nn_jax.embedding import Embedding
from nn_jax.errors import ConfigError, RngError, ShapeError
from nn_jax.masks import combine_masks, sequence_mask
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

    if TYPE_CHECKING:  # a dataclass field of each subclass
        vocab_size: int | None

    _: KW_ONLY
    num_layers: Size = 2
    d_model: Size = 128
    num_heads: Size = 4
    num_kv_heads: Size | None = None
    mlp_features: Size | None = None
    max_length: Size = 1024
    positional: str = "sinusoidal"
    norm_position: str = "pre"
    norm: str = "layer"
    ffn: str = "gelu"
    dropout_rate: Rate = 0.0
    attention_dropout_rate: Rate = 0.0

    causal = False
    decode = False

    def __post_init__(self) -> None:
        name = type(self).__name__
        if self.positional not in _POSITIONAL:
            raise ConfigError(
                f"{name}: positional must be one of {_POSITIONAL}, given {self.positional!r}"
            )
        if self.vocab_size is not None:
            self._embedding()  # validates vocab_size
        self._block()  # validates the block options

    def _embedding(self) -> Embedding:
        """The token embedding ``(V, D)`` (``vocab_size`` must be set)."""
        return Embedding(cast(int, self.vocab_size), self.d_model)

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

    def _encode(self, scope: Scope, x: Any) -> tuple[Array, Array | None]:
        """Embed ``x``, add positions, run the blocks (and the final norm for pre-LN).

        Returns the hidden states and the ``(..., T)`` mask of the real steps (``None`` when
        no padding was given, and always in decode mode), which the blocks get as their
        ``"key_mask"``.
        """
        if self.vocab_size is not None:
            h = scope("embedding", self._embedding(), x) * math.sqrt(self.d_model)
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
        valid, side = self._block_side(scope, h.shape[:-1])
        block = self._block()
        for i in range(self.num_layers):
            h = scope(f"block_{i}", block, h, side=side)
        if self.norm_position == "pre":
            norm = RMSNorm() if self.norm == "rms" else LayerNorm()
            h = scope("final_norm", norm, h)
        return h, valid

    def _block_side(self, scope: Scope, steps: tuple[int, ...]) -> tuple[Array | None, Side]:
        """The real steps ``(..., T)`` from ``"lengths"`` and ``"key_mask"``, and the blocks' side.

        The blocks get the model's side inputs with ``"lengths"`` turned into (and combined with)
        ``"key_mask"``. In decode mode ``"key_mask"`` covers the cache and passes on unchanged.
        """
        lengths = scope.side_input("lengths")
        if self.decode and lengths is None:
            return None, scope.side
        key_mask = scope.side_input("key_mask")
        if key_mask is not None and not self.decode:
            key_mask = self.side_array("key_mask", key_mask, steps, "(..., T)")
        if lengths is None:
            return key_mask, scope.side
        if self.decode:
            raise self.error(
                ConfigError,
                "side input 'lengths' is ambiguous in decode mode (the attention keys are the "
                "cache slots); give 'key_mask' over the cache length instead (generate does)",
            )
        lengths = self.side_array("lengths", lengths, steps[:-1], "(the batch axes)")
        self.check_range("side input 'lengths'", lengths, 0, steps[-1], closed=True)
        valid = combine_masks(key_mask, sequence_mask(lengths, steps[-1]))
        side = {k: v for k, v in scope.side.items() if k != "lengths"} | {"key_mask": valid}
        return valid, side


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
        norm_position, norm, dropout_rate, attention_dropout_rate: see
            :class:`~nn_jax.transformer.TransformerEncoderBlock`.
        ffn: the blocks' feed-forward network: ``"gelu"`` (tanh approximation, the default),
            ``"gelu_exact"`` (``erf``; PyTorch ``activation="gelu"``), ``"relu"`` (PyTorch's
            default) or ``"swiglu"``; see :class:`~nn_jax.transformer.TransformerEncoderBlock`.

    Input ``x``: ``(B, T)`` token ids or ``(B, T, F)`` features. Output ``(B, C)`` logits
    (``(B, T, C)`` with ``pooling="none"``).

    Side inputs: ``"lengths"`` (``(B,)`` ints, steps ``t >= lengths[b]`` are padding) and
    ``"key_mask"`` (``(B, T)`` bools, ``True`` = a real step; combined with ``"lengths"`` by
    *and*): padded steps are masked out of attention and of the mean pooling, so they change
    nothing. ``"mask"`` and ``"positions"`` reach the attention and the positions as in
    :class:`~nn_jax.transformer.TransformerEncoderBlock`. With the train-step builders and
    ``fit``, give batches ``(x, y, {"key_mask": valid})`` or ``(x, y, {"lengths": lengths})``.

    Params: ``embedding`` or ``input_projection``, ``positions`` (learned), ``block_0`` ...,
    ``final_norm`` (pre-LN), ``head``.

    >>> import jax, jax.numpy as jnp
    >>> model = TransformerEncoder(3, num_layers=1, d_model=16, num_heads=2, vocab_size=20)
    >>> params, _ = model.init(jax.random.key(0), jnp.zeros((2, 7), jnp.int32))
    >>> sorted(params)
    ['block_0', 'embedding', 'final_norm', 'head']
    """

    num_classes: Size
    _: KW_ONLY
    vocab_size: Size | None = None
    pooling: str = "mean"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.pooling not in ("mean", "none"):
            raise ConfigError(
                f"TransformerEncoder: pooling must be 'mean' or 'none', given {self.pooling!r}"
            )

    def forward(self, scope: Scope, x: Any) -> Array:
        h, valid = self._encode(scope, jnp.asarray(x))
        if self.pooling == "mean":
            if valid is None:
                h = jnp.mean(h, axis=-2)
            else:
                weights = valid.astype(h.dtype)[..., None]
                h = jnp.sum(h * weights, axis=-2) / jnp.maximum(jnp.sum(weights, axis=-2), 1)
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
        tie_embeddings: compute the logits with the token embedding's transpose,
            ``logits = h @ E.T`` for the final hidden states ``h`` ``(..., T, D)`` and the
            embedding table ``E = params["embedding"]["table"]`` ``(V, D)`` (weight tying,
            Press & Wolf, 2017; GPT-2, whose ``lm_head`` is ``nn.Linear(D, V, bias=False)``
            sharing ``wte.weight``). There is then no ``head`` entry in the params and no output
            bias; ``E`` gets gradient from both uses. The path ``embedding`` then runs twice
            (the lookup, then the logits), so a tap capture of ``embedding`` keeps the logits.
        max_length: the most positions (learned table size; :func:`generate`'s limit).
        positional: ``"rope"`` (default), ``"learned"``, ``"sinusoidal"`` or ``"none"``.
        decode: incremental decoding: every attention keeps a key/value cache and every
            additive position encoding its next position, in the state. ``init`` on tokens
            ``(B, L)`` creates a cache for ``L`` steps; each ``apply`` on ``(B, n)`` new tokens
            returns their logits and the advanced state. :func:`generate` does this for you.

    Input ``(..., T)`` int tokens -> ``(..., T, V)`` logits. Params: ``embedding: {table: (V,
    D)}``, ``positions`` (learned), ``block_0`` ..., ``final_norm`` (pre-LN), ``head: {w: (D,
    V)}`` (not with ``tie_embeddings``).

    Side inputs (all optional): ``"key_mask"`` (``(B, T)`` bools, ``True`` = a real token; in
    decode mode ``(B, L)`` over the cache) and ``"lengths"`` (``(B,)`` ints, right padding;
    not in decode mode) keep padding out of attention; ``"positions"`` (``(B, T)`` ints) are
    the tokens' positions for the position encoding or rope (default ``0 .. T-1``). A
    right-padded batch needs none of them (causal attention never looks ahead; mask the loss);
    a left-padded one needs ``"key_mask"`` and ``"positions"`` counting the real tokens only,
    e.g. ``jnp.maximum(jnp.cumsum(valid, axis=1) - 1, 0)``. ``"mask"`` reaches the attention.

    Taps: ``block_<i>/attention/weights``, each block's ``(B, H, T, T)`` attention weights:
    ``nn_jax.inspect.apply_with_intermediates(lm, params, state, x, capture="*weights")``;
    ``block_<i>/attention/heads``, the per-head outputs ``(B, T, H, D)`` (knock a head out
    with :func:`nn_jax.interventions.knock_out_heads`); ``block_<i>``, the residual stream
    after each block.

    >>> import jax, jax.numpy as jnp
    >>> lm = TransformerLM(50, num_layers=1, d_model=16, num_heads=2)
    >>> params, _ = lm.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))
    >>> generate(lm, params, jnp.array([[1, 2, 3]]), 4).shape
    (1, 7)
    >>> tied = TransformerLM(50, num_layers=1, d_model=16, num_heads=2, tie_embeddings=True)
    >>> params, _ = tied.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))
    >>> sorted(params), params["embedding"]["table"].shape
    (['block_0', 'embedding', 'final_norm'], (50, 16))
    """

    vocab_size: Size
    _: KW_ONLY
    positional: str = "rope"
    decode: bool = False
    tie_embeddings: bool = False

    causal = True

    def _embedding(self) -> Embedding:
        if self.tie_embeddings:
            return _TiedEmbedding(self.vocab_size, self.d_model)
        return super()._embedding()

    def forward(self, scope: Scope, x: Any) -> Array:
        x = jnp.asarray(x)
        if not jnp.issubdtype(x.dtype, jnp.integer):
            raise self.error(
                ShapeError,
                f"expected integer token ids, given dtype {x.dtype} (shape {x.shape}); cast "
                "them with x.astype(jnp.int32)",
            )
        h, _ = self._encode(scope, x)
        if self.tie_embeddings:
            return scope("embedding", self._embedding(), h)  # h @ table.T
        return scope("head", Dense(self.vocab_size, use_bias=False), h)


@dataclasses.dataclass(frozen=True)
class _TiedEmbedding(Embedding):
    """An :class:`~nn_jax.embedding.Embedding` that is also the tied output projection.

    Integer input ``(...)``: the lookup, ``(..., D)``. Float input ``(..., D)``: the logits
    ``x @ table.T``, ``(..., V)`` (:meth:`~nn_jax.embedding.Embedding.attend`). One layer for
    both, so that :class:`TransformerLM` calls it twice under the one name ``embedding`` and
    both uses share (and train) the same ``table``.
    """

    def where(self) -> str:
        return f"Embedding (tied) at {current_path()}"

    def compute(self, params: Params, state: State, x: Any, call: Call) -> tuple[Array, State]:
        x = jnp.asarray(x)
        if jnp.issubdtype(x.dtype, jnp.inexact):
            return self.attend(params, x), {}
        return super().compute(params, state, x, call)


def generate(
    model: TransformerLM,
    params: Params,
    prompt: Any,
    max_new_tokens: int,
    *,
    side: Side | None = None,
    rng: PRNGKey | None = None,
    temperature: float = 0.0,
    top_k: int | None = None,
) -> Array:
    """Extend ``prompt`` by ``max_new_tokens`` tokens sampled from ``model``, using its cache.

    The prompt is run in one call (filling the cache), then one token per step inside a
    ``jax.lax.scan``; the whole loop is one jitted program (compiled once per model, shapes,
    ``max_new_tokens``, ``temperature`` and ``top_k``).

    **Padded prompts**: prompts of different lengths share a batch when ``side`` says which
    tokens are real, by ``{"key_mask": (B, T0) bools}`` (``True`` = real; left padding, right
    padding or any mix) and/or ``{"lengths": (B,) ints}`` (right padding: the first
    ``lengths[b]`` tokens are real). Padding is kept out of attention (the cache's key mask),
    positions count only the real tokens, and each row continues from its last real token, so
    every row gets exactly the tokens it would get alone. The new tokens follow the whole
    padded prompt: ``out[:, T0:]``, whatever the padding.

    Args:
        model: a :class:`TransformerLM` (its ``decode`` flag is ignored: the decoding copy is
            made here).
        params: the model's params.
        prompt: ``(B, T0)`` int tokens.
        max_new_tokens: ``N >= 1``; ``T0 + N`` must not exceed ``model.max_length``.
        side: ``None``, or the prompt's padding as ``"key_mask"`` and/or ``"lengths"`` (every
            row needs at least one real token).
        rng: key for sampling (required when ``temperature > 0``).
        temperature: ``0`` is greedy (argmax); otherwise sample from
            ``softmax(logits / temperature)``.
        top_k: sample only among the ``top_k`` most likely tokens.

    Returns:
        ``(B, T0 + N)`` tokens: the prompt (padding included) followed by the generated ones.

    >>> import jax, jax.numpy as jnp
    >>> lm = TransformerLM(50, num_layers=1, d_model=16, num_heads=2)
    >>> params, _ = lm.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))
    >>> prompts = jnp.array([[0, 7, 8], [5, 6, 9]])  # row 0 is left-padded
    >>> out = generate(lm, params, prompts, 4, side={"key_mask": prompts > 0})
    >>> bool(jnp.all(out[0, 3:] == generate(lm, params, prompts[:1, 1:], 4)[0, 2:]))
    True
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
    valid = _real_prompt_tokens(prompt.shape, side)
    decoder = dataclasses.replace(model, decode=True)
    return _generate(decoder, max_new_tokens, float(temperature), top_k, params, prompt, valid, rng)


def _real_prompt_tokens(shape: tuple[int, ...], side: Side | None) -> Array | None:
    """``(B, T0)`` bools from ``side``'s ``"key_mask"`` and ``"lengths"``; ``None`` if neither."""
    side = {} if side is None else side
    if not isinstance(side, Mapping) or set(side) - {"key_mask", "lengths"}:
        given = sorted(side) if isinstance(side, Mapping) else type(side).__name__
        raise ConfigError(
            "generate: side may hold only the prompt's padding, 'key_mask' ((B, T0) bools) "
            f"and/or 'lengths' ((B,) ints); positions are derived from them; given {given}"
        )
    key_mask, lengths = side.get("key_mask"), side.get("lengths")
    if key_mask is not None:
        key_mask = jnp.asarray(key_mask)
        if key_mask.shape != shape or key_mask.dtype != jnp.bool_:
            raise ShapeError(
                f"generate: side input 'key_mask' must be booleans of the prompt's shape {shape}, "
                f"given dtype {key_mask.dtype} and shape {key_mask.shape}"
            )
    if lengths is not None:
        lengths = jnp.asarray(lengths)
        if lengths.shape != shape[:1] or not jnp.issubdtype(lengths.dtype, jnp.integer):
            raise ShapeError(
                f"generate: side input 'lengths' must be ints of shape {shape[:1]}, given dtype "
                f"{lengths.dtype} and shape {lengths.shape}"
            )
        lengths = sequence_mask(lengths, shape[1])
    valid = combine_masks(key_mask, lengths)
    if (
        valid is not None
        and not isinstance(valid, jax.core.Tracer)
        and not bool(valid.any(1).all())
    ):
        empty = [int(i) for i in jnp.flatnonzero(~valid.any(1))]
        raise ShapeError(f"generate: prompts {empty} have no real token (key_mask/lengths)")
    return valid


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _generate(
    decoder: TransformerLM,
    max_new_tokens: int,
    temperature: float,
    top_k: int | None,
    params: Params,
    prompt: Array,
    valid: Array | None,
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
        token = jax.random.categorical(jax.random.fold_in(cast(Array, rng), step), logits, axis=-1)
        return token.astype(prompt.dtype)

    if valid is None:  # no padding: default positions, no key mask

        def side_at(step: int | Array) -> Side:
            return {}

        logits, state = decoder.apply(params, state, prompt)
        last = logits[:, -1]
    else:
        # The cache's key mask: the real prompt tokens, then every generated slot.
        key_mask = jnp.concatenate([valid, jnp.ones((batch, max_new_tokens), bool)], axis=1)
        counts = jnp.cumsum(valid, axis=1, dtype=jnp.int32)
        uses_positions = decoder.positional != "none"

        def side_at(step: int | Array) -> Side:
            """Side inputs of generation step ``step >= 1`` (new token ``step - 1``)."""
            position = counts[:, -1:] + step - 1  # positions count the real tokens only
            return {"key_mask": key_mask} | ({"positions": position} if uses_positions else {})

        prompt_side: dict[str, Any] = {"key_mask": key_mask}
        if uses_positions:
            prompt_side |= {"positions": jnp.maximum(counts - 1, 0)}
        logits, state = decoder.apply(params, state, prompt, side=prompt_side)
        last_real = prompt_length - 1 - jnp.argmax(valid[:, ::-1], axis=1)
        last = jnp.take_along_axis(logits, last_real[:, None, None], axis=1)[:, 0]
    first = pick(last, 0)

    def body(carry: tuple[Array, Any], step: Array) -> tuple[tuple[Array, Any], Array]:
        token, state = carry
        logits, state = decoder.apply(params, state, token[:, None], side=side_at(step))
        return (pick(logits[:, -1], step), state), token

    (last_token, _), tokens = jax.lax.scan(body, (first, state), jnp.arange(1, max_new_tokens))
    return jnp.concatenate([prompt, tokens.T, last_token[:, None]], axis=1)

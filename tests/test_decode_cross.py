"""Decoding with cross-attention: the first decode call projects the memory into the state and
every later step reuses it (no matmul with the memory), giving the full causal pass's outputs."""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nn_jax.attention import MultiHeadAttention
from nn_jax.core import Block, Scope
from nn_jax.dense import Dense
from nn_jax.embedding import Embedding
from nn_jax.errors import ShapeError
from nn_jax.positional import RotaryEmbedding
from nn_jax.transformer import TransformerDecoderBlock
from tests.test_attention import random_params

KEY = jax.random.key(0)
B, T, S, V, F, F_MEM = 2, 7, 6, 11, 8, 5  # S and F_MEM differ from every other size


@dataclasses.dataclass(frozen=True)
class Seq2Seq(Block):
    """Tokens and a memory -> embedding -> 2 decoder blocks (rope self-attention) -> logits."""

    decode: bool = False

    def forward(self, scope: Scope, x: Any) -> Any:
        tokens, memory = x
        h = scope("embedding", Embedding(V, F), tokens)
        block = TransformerDecoderBlock(2, 16, rope=RotaryEmbedding(), decode=self.decode)
        for i in range(2):
            h = scope(f"block_{i}", block, (h, memory))
        return scope("head", Dense(V), h)


MODEL, DECODER = Seq2Seq(), Seq2Seq(decode=True)
FULL, STEP = jax.jit(MODEL.apply), jax.jit(DECODER.apply)


def _zeros(tree: Any) -> Any:
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), tree)


@pytest.fixture(scope="module")
def setup():
    """Random params, the decode state ``init`` makes (by shape: no compilation), inputs."""
    rng = np.random.default_rng(0)
    memory = rng.standard_normal((B, S, F_MEM)).astype(np.float32)
    tokens = rng.integers(0, V, (B, T)).astype(np.int32)
    params = random_params(jax.eval_shape(MODEL.init, KEY, (tokens, memory))[0], rng, 0.3)
    state = _zeros(jax.eval_shape(DECODER.init, KEY, (tokens, memory))[1])
    return params, state, memory, tokens


def test_greedy_decoding_with_memory_masks_equals_the_full_pass(setup):
    """Token by token after a 2-token prompt, with the memory's key mask and a per-step mask
    over it: every step's logits equal the full causal pass's; the state keeps the projected
    memory (``memory @ w_k + b_k``, ...), made by the first call, not by ``init``."""
    params, state, memory, tokens = setup
    rng = np.random.default_rng(1)
    key_mask = np.arange(S)[None] < np.array([[S], [S - 2]])  # (B, S): row 1 has 2 padded steps
    mask = rng.random((B, 1, T, S)) < 0.7  # (B, H | 1, T, S)
    assert sorted(state["block_0"]["cross_attention"]) == ["cache_index"]
    seq = tokens.copy()

    def side(rows):
        return {"memory_key_mask": key_mask, "memory_mask": mask[:, :, rows]}

    logits, state = STEP(params, state, (seq[:, :2], memory), side=side(slice(0, 2)))
    chunks = [logits]
    for t in range(2, T):
        seq[:, t] = np.argmax(logits[:, -1], -1)
        logits, state = STEP(params, state, (seq[:, t : t + 1], memory), side=side(slice(t, t + 1)))
        chunks.append(logits)
    full, _ = FULL(params, {}, (seq, memory), side=side(slice(None)))
    np.testing.assert_allclose(np.concatenate(chunks, 1), full, rtol=1e-5, atol=1e-5)
    unmasked = {"memory_key_mask": key_mask | True, "memory_mask": mask | True}
    assert not np.allclose(full, FULL(params, {}, (seq, memory), side=unmasked)[0], atol=1e-3)
    cross, p = state["block_1"]["cross_attention"], params["block_1"]["cross_attention"]
    for name in ("key", "value"):
        w, b = p[f"w_{name[0]}"], p[f"b_{name[0]}"]
        ref = np.einsum("bsf,fhd->bshd", memory, w) + np.asarray(b)
        np.testing.assert_allclose(cross[f"memory_{name}"], ref, rtol=1e-5, atol=1e-5)
    assert int(cross["cache_index"]) == T


def _memory_matmuls(jaxpr: Any) -> int:
    """dot_generals (nested jaxprs included) with an operand shaped like the memory."""
    count = 0
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            count += any(v.aval.shape[-2:] == (S, F_MEM) for v in eqn.invars)
        for value in eqn.params.values():
            for sub in value if isinstance(value, tuple | list) else (value,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    count += _memory_matmuls(inner)
    return count


def test_a_decoding_step_does_not_project_the_memory(setup):
    params, state, memory, tokens = setup
    first = jax.make_jaxpr(DECODER.apply)(params, state, (tokens[:, :2], memory))
    assert _memory_matmuls(first.jaxpr) > 0  # the first call projects it (the check sees it)
    _, state = jax.eval_shape(DECODER.apply, params, state, (tokens[:, :2], memory))
    later = jax.make_jaxpr(DECODER.apply)(params, state, (tokens[:, 2:3], memory))
    assert _memory_matmuls(later.jaxpr) == 0


def test_a_later_memory_of_another_shape_is_an_error(setup):
    params, state, memory, tokens = setup
    _, state = jax.eval_shape(DECODER.apply, params, state, (tokens[:, :2], memory))
    longer = np.zeros((B, S + 1, F_MEM), np.float32)
    with pytest.raises(
        ShapeError,
        match=r"MultiHeadAttention at 'block_0/cross_attention': decode state holds the "
        r"keys/values of a memory with \(\.\.\., S\) = \(2, 6\), given a memory of shape "
        r"\(2, 7, 5\); decode calls after the first reuse the first call's memory",
    ):
        jax.eval_shape(DECODER.apply, params, state, (tokens[:, 2:3], longer))
    with pytest.raises(ShapeError, match=r"parameter 'w_k' has shape \(5, 2, 4\), expected \(3,"):
        jax.eval_shape(DECODER.apply, params, state, (tokens[:, 2:3], np.zeros((B, S, 3))))


def test_cross_attention_layer_decodes_separate_keys_and_values_with_rope():
    """The triple (x_q, x_k, x_v): decoding in chunks equals one call; the queries' rope
    positions continue from the cache index; ``init`` keeps no memory entries."""
    rng = np.random.default_rng(2)
    xq, xk, xv = (
        rng.standard_normal((B, n, f)).astype(np.float32) for n, f in ((5, 4), (S, 3), (S, 7))
    )
    layer = MultiHeadAttention(2, rope=RotaryEmbedding())
    params = random_params(jax.eval_shape(layer.init, KEY, (xq, xk, xv))[0], rng)
    decoder = dataclasses.replace(layer, decode=True)
    state = jax.eval_shape(decoder.init, KEY, (xq, xk, xv))[1]
    assert jax.tree.map(np.shape, state) == {"cache_index": ()}
    state, step, chunks = _zeros(state), jax.jit(decoder.apply), []
    for lo, hi in ((0, 3), (3, 4), (4, 5)):
        y, state = step(params, state, (xq[:, lo:hi], xk, xv))
        chunks.append(y)
    assert jax.tree.map(np.shape, state) == {
        "cache_index": (),
        "memory_key": (B, S, 2, 2),
        "memory_value": (B, S, 2, 2),
    }
    full, _ = jax.jit(layer.apply)(params, {}, (xq, xk, xv))
    np.testing.assert_allclose(np.concatenate(chunks, 1), full, rtol=1e-5, atol=1e-5)

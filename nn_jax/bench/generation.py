"""Generation tokens/s: :func:`nn_jax.models.generate` with its key/value cache, and without one.

The model is the ``lm`` workload's ``TransformerLM`` (vocabulary 1000, 2 layers, d 128, 4 heads,
RoPE) in float32; batch 8, a 16-token prompt, 64 new tokens, greedy. Two ways to generate:

* ``kv_cache``: ``generate(model, params, prompt, 64)`` as the library provides it (one
  compiled program: the prompt in one call, then one cached step per token);
* ``no_cache``: :func:`generate_without_cache`, the baseline a user would write: a jitted loop
  that runs the full causal forward pass over the padded sequence at every step.

Both must produce the same tokens (checked before timing; a mismatch is an error). Each is
compiled once (its first call, reported as ``compile_s``), then timed warm in interleaved,
calibrated rounds (:mod:`nn_jax.bench.timing`). Tokens/s is ``new tokens x batch`` over the
median time of one call; the speed-up is the median of the per-round ratios of the two.
"""

from __future__ import annotations

import functools
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nn_jax.bench.registry import Impl
from nn_jax.bench.timing import calibrate, interleaved_rounds, paired_ratio, step_statistics
from nn_jax.bench.workloads.transformer import LM
from nn_jax.core import Array, Params
from nn_jax.models.transformer import TransformerLM, generate

BATCH, PROMPT, NEW_TOKENS = 8, 16, 64
METHODS: dict[str, str] = {"kv_cache": "generate (KV cache)", "no_cache": "full forward per token"}


@functools.partial(jax.jit, static_argnums=(0, 3))
def generate_without_cache(
    model: TransformerLM, params: Params, prompt: Array, max_new_tokens: int
) -> Array:
    """Greedy generation without a cache: ``(B, T0)`` prompt -> ``(B, T0 + N)`` tokens.

    The sequence is padded to ``T0 + N`` once; step ``i`` runs ``model`` over all of it and
    takes the argmax at position ``T0 + i - 1`` (causal attention: the padding after it changes
    nothing there).
    """
    batch, length = prompt.shape
    tokens = jnp.concatenate([prompt, jnp.zeros((batch, max_new_tokens), prompt.dtype)], axis=1)

    def step(i: Array, tokens: Array) -> Array:
        logits, _ = model.apply(params, {}, tokens)
        last = jax.lax.dynamic_index_in_dim(logits, length + i - 1, axis=1, keepdims=False)
        token = jnp.argmax(last, axis=-1).astype(tokens.dtype)
        return jax.lax.dynamic_update_index_in_dim(tokens, token, length + i, axis=1)

    return jax.lax.fori_loop(0, max_new_tokens, step, tokens)


def check_same_tokens(cached: Any, uncached: Any) -> None:
    """Raise ``ValueError`` naming the first difference unless both token arrays are equal."""
    a, b = np.asarray(cached), np.asarray(uncached)
    if a.shape != b.shape:
        raise ValueError(f"generation: shapes differ, {a.shape} with the cache, {b.shape} without")
    diff = np.argwhere(a != b)
    if len(diff):
        row, col = (int(i) for i in diff[0])
        raise ValueError(
            f"generation: the cached and uncached greedy tokens differ at {len(diff)} positions, "
            f"first at row {row}, position {col}: {a[row, col]} with the cache, {b[row, col]} "
            "without"
        )


def _impl(fn: Any, params: Params, prompt: Array) -> Impl:
    """An in-place :class:`Impl` calling ``fn(params, prompt)`` (what the timing rounds run)."""
    return Impl(fn, (params,), prompt, inplace=True, traceable=False)


def measure_generation(repeats: int, repeat_time: float, seed: int = 0) -> dict[str, Any]:
    """The generation section of the report.

    Returns the setting (model, batch, prompt, new tokens), one record per method
    (``compile_s``, ``call_s`` median and quartiles, ``tokens_per_s``) and ``speedup``, the
    no-cache time over the cached one (median of per-round ratios).
    """
    model = TransformerLM(LM.vocab, num_layers=LM.layers, d_model=LM.d, num_heads=LM.heads)
    k_params, k_prompt = jax.random.split(jax.random.key(seed))
    full = jax.ShapeDtypeStruct((BATCH, PROMPT + NEW_TOKENS), jnp.int32)
    params, _ = model.init(k_params, full)
    prompt = jax.random.randint(k_prompt, (BATCH, PROMPT), 0, LM.vocab, jnp.int32)
    fns = {
        "kv_cache": lambda params, prompt: generate(model, params, prompt, NEW_TOKENS),
        "no_cache": lambda params, prompt: generate_without_cache(
            model, params, prompt, NEW_TOKENS
        ),
    }
    tokens, compile_s = {}, {}
    for method, fn in fns.items():
        start = time.perf_counter()
        tokens[method] = jax.block_until_ready(fn(params, prompt))
        compile_s[method] = time.perf_counter() - start
    check_same_tokens(tokens["kv_cache"], tokens["no_cache"])
    impls = {method: _impl(fn, params, prompt) for method, fn in fns.items()}
    inner = calibrate(impls["kv_cache"], repeat_time)
    times = interleaved_rounds(impls, inner, repeats)
    records = []
    for method, label in METHODS.items():
        stats = step_statistics(times, method)
        records.append(
            {
                "method": method,
                "label": label,
                "compile_s": compile_s[method],
                "call_s": stats["step_s"],
                "call_s_p25": stats["step_s_p25"],
                "call_s_p75": stats["step_s_p75"],
                "call_times_s": stats["step_times_s"],
                "tokens_per_s": NEW_TOKENS * BATCH / stats["step_s"],
            }
        )
    return {
        "model": (
            f"TransformerLM({LM.vocab}, num_layers={LM.layers}, d_model={LM.d}, "
            f"num_heads={LM.heads}, positional={model.positional!r})"
        ),
        "dtype": "float32",
        "batch": BATCH,
        "prompt_tokens": PROMPT,
        "new_tokens": NEW_TOKENS,
        "inner_calls": inner,
        "repeats": repeats,
        "records": records,
        "speedup": paired_ratio(times["no_cache"], times["kv_cache"]),
    }


__all__ = [
    "BATCH",
    "METHODS",
    "NEW_TOKENS",
    "PROMPT",
    "check_same_tokens",
    "generate_without_cache",
    "measure_generation",
]

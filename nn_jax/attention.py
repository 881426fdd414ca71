"""Attention: ``dot_product_attention`` (a function) and ``MultiHeadAttention`` (a layer).

Layout: heads after time, as ``jax.nn.dot_product_attention``: queries ``(..., Tq, Hq, D)``,
keys ``(..., Tk, Hkv, D)``, values ``(..., Tk, Hkv, Dv)``; attention weights
``(..., Hq, Tq, Tk)``. ``Hq`` must be a multiple of ``Hkv``: grouped-query attention (GQA,
Ainslie et al., 2023) lets query head ``h`` use key/value head ``h // (Hq / Hkv)``;
``Hkv = 1`` is multi-query attention (Shazeer, 2019) and ``Hkv = Hq`` ordinary multi-head.

Masks are booleans, ``True`` = may attend, NumPy-broadcastable to ``(..., Hq, Tq, Tk)`` (a mask of
lower rank is aligned to the right). Several masks (padding, causal, a custom one) combine by
logical *and* (:func:`nn_jax.masks.combine_masks`). A **fully masked row** (a query that may
attend to nothing) gets all-zero weights, so its output is **zero** (plus the output bias in the
layer), never NaN, and no gradient flows through it.

The softmax is computed in at least float32, whatever the input dtype.

**Kernels** (``implementation``, on the function and the layer): ``"explicit"`` is nn_jax's
own ``einsum -> masked softmax -> einsum``, which materializes the weights (the ``weights`` tap
reads them; dropout acts on them); ``"xla"`` and ``"cudnn"`` call
:func:`jax.nn.dot_product_attention` (``"cudnn"``: cuDNN's fused flash attention, NVIDIA GPUs,
float16/bfloat16, head size a multiple of 8). ``None`` (the default) picks per call, when
tracing: ``"cudnn"`` where cuDNN supports the call (NVIDIA GPU, float16/bfloat16, head size a
multiple of 8 up to 128, or 256 on Hopper and later, no dropout, no ``precision``, and, in the
layer, only causal and ``"lengths"`` masks), else ``"explicit"``: JAX's ``"xla"`` kernel is
the same einsum-softmax-einsum program with more copies around it, and on a 2-core CPU its
training steps are slower (interleaved paired ratios, xla/explicit, 100 rounds: benchmark
``transformer`` 1.05, ``lm`` 1.04). The layer runs the explicit kernel whatever
``implementation`` says while a :func:`nn_jax.core.tapping` block captures or edits its
``weights`` (e.g. :func:`nn_jax.inspect.apply_with_intermediates`), so the tap always sees the
weights that made the output. All kernels give a fully masked row a zero output.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import KW_ONLY
from typing import Any, Literal

import jax
import jax.numpy as jnp

from nn_jax import initializers
from nn_jax._options import DtypeOptions, at_least_float32
from nn_jax.checks import check_values, escape
from nn_jax.core import (
    Array,
    Call,
    Initializer,
    Layer,
    Params,
    PRNGKey,
    Rate,
    Size,
    State,
    tap,
    tapped,
)
from nn_jax.errors import ConfigError, RngError, ShapeError
from nn_jax.masks import causal_mask, combine_masks, sequence_mask
from nn_jax.positional import RotaryEmbedding, rotary_embedding
from nn_jax.regularization import Dropout

__all__ = [
    "ATTENTION_IMPLEMENTATIONS",
    "MultiHeadAttention",
    "attention_weights",
    "dot_product_attention",
]

_KERNEL_INIT: Initializer = initializers.lecun_normal()

Implementation = Literal["explicit", "xla", "cudnn"]
ATTENTION_IMPLEMENTATIONS: tuple[str, ...] = ("explicit", "xla", "cudnn")
"""The attention kernels (``implementation=None`` chooses one; see the module docstring)."""


def _check_implementation(where: str, implementation: Any) -> None:
    if implementation is not None and implementation not in ATTENTION_IMPLEMENTATIONS:
        raise ConfigError(
            f"{where}: implementation must be None (choose per call) or one of "
            f"{', '.join(map(repr, ATTENTION_IMPLEMENTATIONS))}, given {implementation!r}"
        )


def _cudnn_max_head_dim() -> int:
    """The largest head size cuDNN's flash attention takes here; 0 off NVIDIA GPUs."""
    device = jax.devices()[0]
    if device.platform != "gpu" or "cuda" not in device.client.platform_version.lower():
        return 0
    major = int(str(getattr(device, "compute_capability", "0")).split(".")[0])
    return 256 if major >= 9 else 128  # Hopper and later: 256 (jax.nn.dot_product_attention)


def _cudnn_supports(query: Array, key: Array, value: Array) -> bool:
    """cuDNN flash attention's own conditions on the arrays (dtype, head sizes, device)."""
    d = query.shape[-1]
    return (
        query.dtype in (jnp.float16, jnp.bfloat16)
        and query.dtype == key.dtype == value.dtype
        and value.shape[-1] == d
        and d % 8 == 0
        and d <= _cudnn_max_head_dim()
    )


def _explicit_only(
    query: Array, key: Array, value: Array, *, dropout: bool, precision: Any
) -> str | None:
    """Why only the explicit kernel can run this call (what JAX's function lacks), or None."""
    if dropout:
        return "dropout"
    if precision is not None:
        return "precision argument"
    if value.shape[-1] != key.shape[-1]:
        return f"value head size ({value.shape[-1]}) other than the key's ({key.shape[-1]})"
    if not query.dtype == key.dtype == value.dtype:
        return f"mixed dtypes (query {query.dtype}, key {key.dtype}, value {value.dtype})"
    return None


def _choose(
    where: str,
    implementation: str | None,
    query: Array,
    key: Array,
    value: Array,
    *,
    structured: bool,
    explicit_only: str | None,
) -> str:
    """The kernel for one call: ``implementation``, or the choice for ``None``.

    ``structured``: every mask is one cuDNN takes natively (causal, key lengths);
    ``explicit_only``: why only the explicit kernel can run (:func:`_explicit_only`).
    """
    if implementation is None:
        if explicit_only is None and structured and _cudnn_supports(query, key, value):
            return "cudnn"
        return "explicit"
    if implementation != "explicit" and explicit_only is not None:
        raise ConfigError(
            f"{where}: implementation={implementation!r} runs jax.nn.dot_product_attention, "
            f"which does not support {explicit_only}; use implementation='explicit' or None"
        )
    if implementation == "cudnn" and not _cudnn_supports(query, key, value):
        raise ConfigError(
            f"{where}: implementation='cudnn' needs an NVIDIA GPU and float16/bfloat16 "
            f"queries, keys and values with a head size that is a multiple of 8 up to "
            f"{_cudnn_max_head_dim() or 128}; given {query.dtype} query {query.shape}, key "
            f"{key.shape}, value {value.shape} on {jax.devices()[0].device_kind}"
        )
    return implementation


def _fused(
    query: Array,
    key: Array,
    value: Array,
    *,
    implementation: str,
    mask: Array | None = None,
    bias: Array | None = None,
    is_causal: bool = False,
    kv_lengths: Array | None = None,
    scale: float | None = None,
) -> Array:
    """:func:`jax.nn.dot_product_attention` on nn_jax's layout: any batch axes ``...``;
    ``mask`` and ``bias`` of the weights' rank, broadcastable to ``(..., Hq, Tq, Tk)``; key
    lengths ``(...)``. Rows with no key to attend to give zeros (JAX's kernels would give them
    the mean of the values; cuDNN gets at least one key per row, so that its backward pass
    stays finite, and the row is zeroed after)."""
    *batch, tq, hq, _ = query.shape
    tk, n = key.shape[-3], math.prod(batch)
    kernel: Literal["xla", "cudnn"] = "cudnn" if implementation == "cudnn" else "xla"

    def flat(a: Array) -> Array:
        return a.reshape((n, *a.shape[len(batch) :]))

    def flat_weights_shaped(a: Array) -> Array:
        """``(..., H | 1, Tq | 1, Tk | 1)`` as the 4-d ``(B | 1, H | 1, ., .)`` JAX takes."""
        inner = a.shape[len(batch) :]
        if any(m != 1 for m in a.shape[: len(batch)]):
            a = flat(jnp.broadcast_to(a, (*batch, *inner)))
        else:
            a = a.reshape((1, *inner))
        if kernel == "cudnn":  # cuDNN takes only full (Tq, Tk) masks and biases
            a = jnp.broadcast_to(a, (*a.shape[:2], tq, tk))
        return a

    valid: Array | None = None  # (..., Tq | 1, Hq | 1): rows with at least one key
    if kv_lengths is not None:
        kv_lengths = jnp.broadcast_to(jnp.asarray(kv_lengths, jnp.int32), batch)
        valid = (kv_lengths > 0)[..., None, None]
        kv_lengths = jnp.maximum(kv_lengths, 1).reshape(n)
    if mask is not None:
        rows = jnp.swapaxes(jnp.any(mask, axis=-1), -1, -2)
        valid = rows if valid is None else valid & rows
        mask = flat_weights_shaped(mask)
    if bias is not None:
        bias = flat_weights_shaped(bias)
    out = jax.nn.dot_product_attention(
        flat(query),
        flat(key),
        flat(value),
        bias=bias,
        mask=mask,
        scale=scale,
        is_causal=is_causal,
        key_value_seq_lengths=kv_lengths,
        implementation=kernel,
    )
    out = out.reshape((*batch, tq, hq, value.shape[-1]))
    return out if valid is None else jnp.where(valid[..., None], out, 0)


def _check_broadcast(what: str, given: tuple[int, ...], shape: tuple[int, ...], fn: str) -> None:
    """A ShapeError starting with ``fn`` unless ``given`` broadcasts to ``shape`` (right-aligned,
    no axis added on the left beyond ``shape``'s rank)."""
    padded = (1,) * (len(shape) - len(given)) + tuple(given)
    if len(given) > len(shape) or any(m not in (1, n) for m, n in zip(padded, shape, strict=True)):
        raise ShapeError(
            f"{fn}: {what} of shape {tuple(given)} does not broadcast to the attention weights' "
            f"shape {shape} (..., heads, Tq, Tk)"
        )


def _padded(what: str, a: Any, shape: tuple[int, ...], fn: str) -> Array:
    """``a`` left-padded to ``len(shape)`` axes (broadcastable to ``shape``), or a ShapeError."""
    a = jnp.asarray(a)
    _check_broadcast(what, a.shape, shape, fn)
    return a.reshape((1,) * (len(shape) - a.ndim) + a.shape)


def _explicit(what: str, a: Any, shape: tuple[int, ...], fn: str) -> Array:
    """``a`` left-padded to ``len(shape)`` axes and broadcast to ``shape``, or a ShapeError."""
    return jnp.broadcast_to(_padded(what, a, shape, fn), shape)


def _mask_like(fn: str, mask: Any, shape: tuple[int, ...]) -> Array:
    """A boolean ``mask`` left-padded to the weights' rank, or a ShapeError."""
    mask = _padded("mask", mask, shape, fn)
    if mask.dtype != jnp.bool_:
        raise ShapeError(f"{fn}: mask must be boolean (True = attend), given dtype {mask.dtype}")
    return mask


def _check_qkv(fn: str, query: Array, key: Array, value: Array | None = None) -> None:
    arrays = {"query": query, "key": key} | ({} if value is None else {"value": value})
    for name, a in arrays.items():
        if a.ndim < 3:
            raise ShapeError(f"{fn}: {name} must be (..., T, heads, features), given {a.shape}")
    if query.shape[:-3] != key.shape[:-3] or query.shape[-1] != key.shape[-1]:
        raise ShapeError(
            f"{fn}: query (..., Tq, Hq, D) and key (..., Tk, Hkv, D) must share the batch axes "
            f"and D, given {query.shape} and {key.shape}"
        )
    if query.shape[-2] % key.shape[-2]:
        raise ShapeError(
            f"{fn}: query heads ({query.shape[-2]}) must be a multiple of key/value heads "
            f"({key.shape[-2]}), given query {query.shape} and key {key.shape}"
        )
    if value is not None and value.shape[:-1] != key.shape[:-1]:
        raise ShapeError(
            f"{fn}: value must be (..., Tk, Hkv, Dv) matching key {key.shape}, given {value.shape}"
        )


def attention_weights(
    query: Any,
    key: Any,
    *,
    mask: Any = None,
    bias: Any = None,
    scale: float | None = None,
    precision: Any = None,
) -> Array:
    """Softmax attention weights, ``softmax(q k^T * scale + bias)`` over keys, masked.

    Args:
        query: ``(..., Tq, Hq, D)``.
        key: ``(..., Tk, Hkv, D)`` with ``Hq % Hkv == 0`` (grouped-query attention).
        mask: bools broadcastable to ``(..., Hq, Tq, Tk)``, ``True`` = attend.
        bias: added to the logits, broadcastable to ``(..., Hq, Tq, Tk)``.
        scale: logit scale (default ``1 / sqrt(D)``).
        precision: passed to ``jnp.einsum``.

    Returns:
        ``(..., Hq, Tq, Tk)`` weights in the query's dtype; rows sum to 1, fully masked rows
        are 0.
    """
    return _weights(
        "attention_weights", query, key, mask=mask, bias=bias, scale=scale, precision=precision
    )


def _weights(
    fn: str,
    query: Any,
    key: Any,
    *,
    mask: Any,
    bias: Any,
    scale: float | None,
    precision: Any,
) -> Array:
    """:func:`attention_weights`, its errors starting with ``fn`` (a layer's path, in a layer)."""
    query, key = jnp.asarray(query), jnp.asarray(key)
    _check_qkv(fn, query, key)
    *batch, tq, hq, d = query.shape
    tk, hkv = key.shape[-3], key.shape[-2]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    query = query * jnp.asarray(scale, query.dtype)
    # Plain multi-head attention takes the 4-d einsum: with the grouped one's size-1 group axis,
    # XLA computes the logits key-major and transposes them, forward and backward (two more
    # (..., H, Tq, Tk) copies per layer than raw JAX and Flax; benchmarks/hlo_diff.py).
    if hq == hkv:
        logits = jnp.einsum("...qhd,...khd->...hqk", query, key, precision=precision)
    else:
        grouped = query.reshape((*batch, tq, hkv, hq // hkv, d))
        logits = jnp.einsum("...qhgd,...khd->...hgqk", grouped, key, precision=precision)
    shape = (*batch, hq, tq, tk)
    logits = logits.reshape(shape).astype(at_least_float32(logits.dtype))
    if bias is not None:
        logits = logits + _explicit("bias", bias, shape, fn).astype(logits.dtype)
    if mask is None:
        return jax.nn.softmax(logits, axis=-1).astype(query.dtype)
    mask = jnp.broadcast_to(_mask_like(fn, mask, shape), shape)
    logits = jnp.where(mask, logits, jnp.finfo(logits.dtype).min)
    weights = jnp.where(mask, jax.nn.softmax(logits, axis=-1), 0.0)
    return weights.astype(query.dtype)


def _attend(weights: Array, value: Array, precision: Any) -> Array:
    """Weights ``(..., Hq, Tq, Tk)`` times values ``(..., Tk, Hkv, Dv)``: ``(..., Tq, Hq, Dv)``."""
    *batch, hq, tq, tk = weights.shape
    hkv, dv = value.shape[-2:]
    if hq == hkv:  # the 4-d einsum, as in _weights
        return jnp.einsum("...hqk,...khd->...qhd", weights, value, precision=precision)
    grouped = weights.reshape((*batch, hkv, hq // hkv, tq, tk))
    out = jnp.einsum("...hgqk,...khd->...qhgd", grouped, value, precision=precision)
    return out.reshape((*batch, tq, hq, dv))


def _dropout(weights: Array, rate: float, rng: PRNGKey | None) -> Array:
    """Inverted dropout on attention weights (identity for ``rate == 0``)."""
    if rate == 0:
        return weights
    if rng is None:
        raise RngError(
            f"dot_product_attention: dropout_rate={rate} needs dropout_rng=jax.random.key(...)"
        )
    return Dropout(rate).apply({}, {}, weights, rng=rng, train=True)[0]


def dot_product_attention(
    query: Any,
    key: Any,
    value: Any,
    *,
    mask: Any = None,
    bias: Any = None,
    scale: float | None = None,
    dropout_rate: float = 0.0,
    dropout_rng: PRNGKey | None = None,
    precision: Any = None,
    implementation: Implementation | None = None,
) -> Array:
    """Scaled dot-product attention (Vaswani et al., 2017) with grouped-query heads.

    .. math:: \\text{out} = \\text{dropout}(\\text{softmax}(q k^T / \\sqrt{D} + \\text{bias}))\\, v

    Args:
        query: ``(..., Tq, Hq, D)``.
        key: ``(..., Tk, Hkv, D)``; ``Hq`` a multiple of ``Hkv``.
        value: ``(..., Tk, Hkv, Dv)``.
        mask: bools broadcastable to ``(..., Hq, Tq, Tk)``, ``True`` = attend (fully masked
            rows give zeros).
        bias: added to the logits, broadcastable to ``(..., Hq, Tq, Tk)``.
        scale: logit scale (default ``1 / sqrt(D)``).
        dropout_rate: dropout on the weights (inverted; needs ``dropout_rng`` when > 0).
        dropout_rng: key for the dropout.
        precision: passed to ``jnp.einsum`` (explicit kernel only).
        implementation: ``"explicit"``, ``"xla"``, ``"cudnn"`` or ``None`` (default): the
            kernel (see the module docstring). ``None`` takes cuDNN for unmasked, unbiased
            float16/bfloat16 attention on an NVIDIA GPU, else the explicit kernel.

    Returns:
        ``(..., Tq, Hq, Dv)``.
    """
    fn = "dot_product_attention"
    _check_implementation(fn, implementation)
    query, key, value = jnp.asarray(query), jnp.asarray(key), jnp.asarray(value)
    _check_qkv(fn, query, key, value)
    reason = _explicit_only(query, key, value, dropout=dropout_rate > 0, precision=precision)
    structured = mask is None and bias is None
    kernel = _choose(
        fn, implementation, query, key, value, structured=structured, explicit_only=reason
    )
    if kernel != "explicit":
        shape = (*query.shape[:-3], query.shape[-2], query.shape[-3], key.shape[-3])
        return _fused(
            query,
            key,
            value,
            implementation=kernel,
            mask=None if mask is None else _mask_like(fn, mask, shape),
            bias=None if bias is None else _padded("bias", bias, shape, fn),
            scale=scale,
        )
    weights = _weights(fn, query, key, mask=mask, bias=bias, scale=scale, precision=precision)
    weights = _dropout(weights, dropout_rate, dropout_rng)
    return _attend(weights, value, precision)


@dataclasses.dataclass(frozen=True)
class MultiHeadAttention(Layer, DtypeOptions):
    """Multi-head attention with projections: self- or cross-attention, GQA/MQA, a decode cache.

    .. math::
        q = x_q W_q + b_q,\\; k = x_k W_k + b_k,\\; v = x_v W_v + b_v,\\qquad
        y = \\text{attention}(q, k, v)\\, W_o + b_o

    Input, one of:

    * ``x`` ``(..., T, F_q)``: self-attention, ``x_q = x_k = x_v = x``;
    * the pair ``(x_q, x_kv)``, ``(..., Tq, F_q)`` and ``(..., Tk, F_kv)``: cross-attention,
      ``x_k = x_v = x_kv`` (the two may have different feature sizes);
    * the triple ``(x_q, x_k, x_v)``, ``(..., Tq, F_q)``, ``(..., Tk, F_k)`` and
      ``(..., Tk, F_v)``: separate key and value inputs, each of its own feature size (PyTorch:
      ``nn.MultiheadAttention(embed_dim, num_heads, kdim=F_k, vdim=F_v)`` called as
      ``mha(query, key, value)``; batch first, as ``batch_first=True``).

    PyTorch's ``nn.MultiheadAttention(E, H, bias=True, kdim, vdim)`` maps onto these params
    (``use_bias=True``, ``head_dim = E // H``, ``D = E // H``): its packed
    ``in_proj_weight`` ``(3E, E)`` splits into rows ``[W_q; W_k; W_v]`` (or, with ``kdim`` /
    ``vdim`` other than ``E``, the separate ``q_proj_weight`` ``(E, F_q)``,
    ``k_proj_weight`` ``(E, F_k)``, ``v_proj_weight`` ``(E, F_v)``) and
    ``w_q = W_q.T.reshape(F_q, H, D)`` (likewise ``w_k``, ``w_v``); ``in_proj_bias`` ``(3E,)``
    splits into ``b_q, b_k, b_v``, each ``.reshape(H, D)``; ``out_proj.weight`` ``(E, E)`` is
    ``w_o = out_proj.weight.T.reshape(H, D, E)`` and ``out_proj.bias`` is ``b_o``. Head ``h``
    owns the features ``h*D .. (h+1)*D - 1`` of the projections, as in PyTorch. Its
    ``key_padding_mask`` (``True`` = ignore) is the side input ``"key_mask"`` negated, a
    boolean ``attn_mask`` (``True`` = not allowed) is ``"mask"`` negated, and a float additive
    ``attn_mask`` is ``"mask": attn_mask == 0`` (for 0 / -inf masks). ``add_bias_kv`` and
    ``add_zero_attn`` have no equivalent.

    Args:
        num_heads: query heads ``H``.
        num_kv_heads: key/value heads ``K`` (default ``H``; ``1`` is multi-query attention; it
            must divide ``H``).
        head_dim: per-head size ``D`` (default ``F_q // H``).
        out_features: output size (default ``F_q``).
        causal: query ``i`` attends only to keys ``j <= i`` (self-attention; by time step, not by
            the ``"positions"`` side input).
        dropout_rate: dropout on the attention weights in training (needs ``rng``; PyTorch:
            ``dropout``).
        use_bias: add ``b_q``, ``b_k``, ``b_v``, ``b_o`` (PyTorch: ``bias``).
        scale: logit scale (default ``1 / sqrt(D)``).
        rope: a :class:`~nn_jax.positional.RotaryEmbedding` applied to ``q`` and ``k`` at
            their positions (see the side input ``"positions"``).
        decode: incremental decoding: the state's ``cache_index`` (int32) counts the query
            steps seen, and each ``apply`` on ``n`` new steps advances it by ``n``.
            Self-attention: ``init`` on an input of the full length ``L`` also creates
            ``"cached_key"`` and ``"cached_value"`` ``(..., L, K, D)`` (zeros); each ``apply``
            writes the new keys/values at ``cache_index`` and attends to the ``cache_index +
            n`` steps written so far (causally if ``causal``). A block longer than ``L`` is a
            ``ShapeError`` when traced; steps past ``L`` from the cache index are a
            ``ValueRangeError`` at once for a concrete index, and under ``jit`` in checked mode
            (:func:`nn_jax.checked`): an unchecked jitted call would overwrite earlier entries
            silently. Cross-attention: the first ``apply`` projects the context and adds its
            keys/values to the state as ``"memory_key"`` and ``"memory_value"`` ``(..., S, K,
            D)``; later calls reuse them (no projection of the context: they reuse the *first*
            call's memory, and one of another shape is a ``ShapeError``). The state's structure
            thus changes once, after the first call: make it (the prompt) before a
            ``jax.lax.scan`` over the steps.
        w_init, b_init: initializers, applied to the 2-D ``(F_in, H*D)`` / ``(H*D, F_out)``
            views of the kernels (LeCun normal, zeros). A fan-in initializer
            (:class:`~nn_jax.initializers.FanInInitializer`) gets the view's rows: ``F_q``
            (``w_q``, ``b_q``), ``F_k`` (``w_k``, ``b_k``), ``F_v`` (``w_v``, ``b_v``),
            ``H*D`` (``w_o``, ``b_o``).
        w_o_init: initializer of the output kernel ``w_o`` (default ``None``: ``w_init``).
            PyTorch's ``nn.MultiheadAttention`` initializes its packed input projection with
            ``xavier_uniform_`` and its output projection as an ``nn.Linear`` weight.
        dtype, param_dtype, precision: as for :class:`~nn_jax.dense.Dense`.
        implementation: the attention kernel, ``None`` (default: cuDNN's fused attention on an
            NVIDIA GPU in float16/bfloat16 with only causal and ``"lengths"`` masks and no
            dropout, else the explicit one), ``"explicit"`` (nn_jax's einsums and softmax),
            ``"xla"`` or ``"cudnn"`` (:func:`jax.nn.dot_product_attention`; neither takes
            ``dropout_rate`` or ``precision``). While a tapping block captures or edits this
            layer's ``weights``, the explicit kernel runs whatever this says.

    Side inputs (all optional; the masks combine with the causal mask by logical *and*, and a
    query left with no key gets a zero attention output):
        ``"mask"``: bools broadcastable to ``(..., H, Tq, Tk)``, ``True`` = may attend.
        ``"key_mask"``: ``(..., Tk)`` bools marking the real keys (in self-attention decode
        mode ``Tk = L``, the cache length: the mask covers every cache slot, written or not).
        ``"lengths"``: ``(...)`` ints in ``[0, Tk]`` (value-checked), self-attention without
        ``decode`` only: keys ``t >= lengths`` are padding (combined with ``"key_mask"`` by
        *and*). Not read by
        cross-attention (give the memory's ``"key_mask"``); with ``decode`` it is an error
        (give a ``"key_mask"`` over the cache).
        ``"positions"``: ``(..., Tq)`` ints, read only with ``rope``: the positions at which
        queries (and, in self-attention, keys) are rotated, e.g. to skip left padding. By
        default ``0 .. T-1`` (continuing from ``cache_index`` in decode mode); cross-attention
        keys are always at ``0 .. Tk-1``.

    Taps: ``weights``, the ``(..., H, Tq, Tk)`` attention weights applied to the values (after
    dropout in training); ``heads``, the ``(..., Tq, H, Dv)`` per-head outputs ``weights @ v``
    before the output projection (``y = sum_h heads[..., h, :] @ w_o[h] + b_o``, so zeroing head
    ``h`` there knocks it out: :func:`nn_jax.interventions.knock_out_heads`). Read them with
    :func:`nn_jax.inspect.apply_with_intermediates` (``capture="*weights"``), replace them with
    its ``edit``.

    Input ``(..., T, F_q)``, ``((..., Tq, F_q), (..., Tk, F_kv))`` or
    ``((..., Tq, F_q), (..., Tk, F_k), (..., Tk, F_v))`` -> ``(..., Tq, F_out)``.
    Params: ``w_q: (F_q, H, D)``, ``w_k: (F_k, K, D)``, ``w_v: (F_v, K, D)``,
    ``w_o: (H, D, F_out)``, ``b_q: (H, D)``, ``b_k: (K, D)``, ``b_v: (K, D)``, ``b_o: (F_out,)``
    (``F_k = F_v = F_kv`` for the pair, ``F_q`` for self-attention).

    >>> import jax, jax.numpy as jnp
    >>> mha = MultiHeadAttention(4, num_kv_heads=2)
    >>> params, _ = mha.init(jax.random.key(0), jnp.zeros((2, 5, 16)))
    >>> {k: params[k].shape for k in ("w_q", "w_k", "w_v", "w_o")}
    {'w_q': (16, 4, 4), 'w_k': (16, 2, 4), 'w_v': (16, 2, 4), 'w_o': (4, 4, 16)}
    >>> valid = jnp.arange(5)[None] < jnp.array([[5], [3]])  # (B, Tk): 5 and 3 real keys
    >>> mha(params, jnp.ones((2, 5, 16)), side={"key_mask": valid}).shape
    (2, 5, 16)
    >>> x_q, x_k, x_v = jnp.zeros((2, 3, 16)), jnp.zeros((2, 6, 5)), jnp.zeros((2, 6, 7))
    >>> params, _ = mha.init(jax.random.key(0), (x_q, x_k, x_v))  # PyTorch kdim=5, vdim=7
    >>> {k: params[k].shape for k in ("w_q", "w_k", "w_v", "w_o")}
    {'w_q': (16, 4, 4), 'w_k': (5, 2, 4), 'w_v': (7, 2, 4), 'w_o': (4, 4, 16)}
    >>> mha(params, (x_q, x_k, x_v)).shape
    (2, 3, 16)
    """

    num_heads: Size
    _: KW_ONLY
    num_kv_heads: Size | None = None
    head_dim: Size | None = None
    out_features: Size | None = None
    causal: bool = False
    dropout_rate: Rate = 0.0
    use_bias: bool = True
    scale: float | None = None
    rope: RotaryEmbedding | None = None
    decode: bool = False
    w_init: Initializer = _KERNEL_INIT
    b_init: Initializer = initializers.zeros
    w_o_init: Initializer | None = None
    implementation: str | None = None

    def __post_init__(self) -> None:
        _check_implementation("MultiHeadAttention", self.implementation)
        if self.implementation in ("xla", "cudnn") and (self.dropout_rate or self.precision):
            raise ConfigError(
                f"MultiHeadAttention: implementation={self.implementation!r} runs "
                "jax.nn.dot_product_attention, which has no dropout and no precision argument; "
                f"given dropout_rate={self.dropout_rate}, precision={self.precision}: use "
                "implementation=None (fused when it can be) or 'explicit'"
            )
        if self.num_heads % self.kv_heads:
            raise ConfigError(
                f"MultiHeadAttention: num_kv_heads={self.num_kv_heads} must divide "
                f"num_heads={self.num_heads}"
            )
        if self.rope is not None and not isinstance(self.rope, RotaryEmbedding):
            raise ConfigError(
                f"MultiHeadAttention: rope must be a RotaryEmbedding or None, given {self.rope!r}"
            )

    @property
    def kv_heads(self) -> int:
        """The number of key/value heads ``K``."""
        return self.num_heads if self.num_kv_heads is None else self.num_kv_heads

    def _inputs(self, x: Any) -> tuple[Any, Any, Any, bool]:
        """``(x_q, x_k, x_v, is_cross)``, rank- and shape-checked."""
        cross = isinstance(x, tuple)
        if cross and len(x) not in (2, 3):
            raise self.error(
                ShapeError,
                "cross-attention input must be the pair (x_q, x_kv) or the triple "
                f"(x_q, x_k, x_v), given a tuple of {len(x)} items",
            )
        if not cross:
            xq = xk = xv = x
        elif len(x) == 2:
            xq, xk = x
            xv = xk
        else:
            xq, xk, xv = x
        if not isinstance(xq, jax.ShapeDtypeStruct):
            xq, xk, xv = jnp.asarray(xq), jnp.asarray(xk), jnp.asarray(xv)
        separate = cross and len(x) == 3
        k_name = "keys input (..., Tk, F_k)" if separate else "keys/values input (..., Tk, F_kv)"
        self.check_rank(xq, 2, what="queries input (..., Tq, F_q)")
        self.check_rank(xk, 2, what=k_name)
        if separate:
            self.check_rank(xv, 2, what="values input (..., Tk, F_v)")
        if xq.shape[:-2] != xk.shape[:-2]:
            raise self.error(
                ShapeError,
                f"queries input {xq.shape} and {k_name.split(' (')[0]} {xk.shape} must share "
                "their leading (batch) axes",
            )
        if separate and xv.shape[:-1] != xk.shape[:-1]:
            raise self.error(
                ShapeError,
                f"values input (..., Tk, F_v) must share the batch axes and Tk of the keys "
                f"input {xk.shape}, given {xv.shape}",
            )
        return xq, xk, xv, cross

    def _head_dim(self, features: int) -> int:
        if self.head_dim is not None:
            return self.head_dim
        if features % self.num_heads:
            raise self.error(
                ShapeError,
                f"input features {features} are not divisible by num_heads={self.num_heads}; "
                "give head_dim explicitly",
            )
        return features // self.num_heads

    def init(self, key: PRNGKey, x: Any) -> tuple[Params, State]:
        xq, xk, xv, cross = self._inputs(x)
        fq, fk, fv = xq.shape[-1], xk.shape[-1], xv.shape[-1]
        h, kv, d = self.num_heads, self.kv_heads, self._head_dim(fq)
        f_out = self.out_features or fq
        keys = jax.random.split(key, 8)
        dt = self.param_dtype
        w_o_init = self.w_init if self.w_o_init is None else self.w_o_init

        def draw(init: Initializer, i: int, shape: tuple[int, ...], fan_in: int) -> Array:
            return initializers.initialize(init, keys[i], shape, dt, fan_in=fan_in)

        params = {
            "w_q": draw(self.w_init, 0, (fq, h * d), fq).reshape(fq, h, d),
            "w_k": draw(self.w_init, 1, (fk, kv * d), fk).reshape(fk, kv, d),
            "w_v": draw(self.w_init, 2, (fv, kv * d), fv).reshape(fv, kv, d),
            "w_o": draw(w_o_init, 3, (h * d, f_out), h * d).reshape(h, d, f_out),
        }
        if self.use_bias:
            params |= {
                "b_q": draw(self.b_init, 4, (h * d,), fq).reshape(h, d),
                "b_k": draw(self.b_init, 5, (kv * d,), fk).reshape(kv, d),
                "b_v": draw(self.b_init, 6, (kv * d,), fv).reshape(kv, d),
                "b_o": draw(self.b_init, 7, (f_out,), h * d),
            }
        state: State = {}
        if self.decode:
            state = {"cache_index": jnp.zeros((), jnp.int32)}
        if self.decode and not cross:
            dtype = self.dtype or jnp.result_type(xq.dtype, dt)
            cache = jnp.zeros((*xq.shape[:-1], kv, d), dtype)
            state |= {"cached_key": cache, "cached_value": cache}
        return params, state

    def _project(
        self, params: Params, x: Array, name: str, heads: int, d: int, dtype: Any
    ) -> Array:
        """``x @ w_name + b_name``: ``(..., T, F) -> (..., T, heads, d)``.

        Self-attention projects ``q``, ``k``, ``v`` with three matmuls of the same input: one
        matmul against the kernels concatenated along the head axis does less work but ran no
        faster on a 2-core CPU, where XLA runs the three side by side (paired ratios of the
        benchmark steps, fused/unfused, three runs of 100-150 rounds: ``transformer``
        0.96-1.00, ``lm`` 1.01-1.02), so they stay apart.
        """
        w = self.param(params, f"w_{name}")
        if w.shape != (x.shape[-1], heads, d):
            raise self.error(
                ShapeError,
                f"parameter 'w_{name}' has shape {w.shape}, expected {(x.shape[-1], heads, d)} "
                f"for an input of shape {x.shape}",
            )
        y = jnp.einsum(
            "...tf,fhd->...thd", x.astype(dtype), w.astype(dtype), precision=self.precision
        )
        if self.use_bias:
            b = self.param(params, f"b_{name}", (heads, d)).astype(dtype)
            y = y + b.reshape((1,) * (y.ndim - 2) + b.shape)
        return y

    def compute(self, params: Params, state: State, x: Any, call: Call) -> tuple[Any, State]:
        xq, xk, xv, cross = self._inputs(x)
        w_q = self.param(params, "w_q")
        if w_q.ndim != 3:
            raise self.error(
                ShapeError, f"parameter 'w_q' has shape {w_q.shape}, expected (F, H, D)"
            )
        d = w_q.shape[-1]
        dtype = self.dtype or jnp.result_type(xq.dtype, xk.dtype, xv.dtype, w_q.dtype)
        q = self._project(params, xq, "q", self.num_heads, d, dtype)
        reuse = cross and self.decode and "memory_key" in state  # projected by the first call
        if reuse:
            k, v = self._cached_memory(params, state, xk, xv)
        else:
            k = self._project(params, xk, "k", self.kv_heads, d, dtype)
            v = self._project(params, xv, "v", self.kv_heads, d, dtype)
        tq = q.shape[-3]
        start: Any = self.state_entry(state, "cache_index") if self.decode else 0
        if self.rope is not None:
            q_pos = self._positions(call, q, start)
            q = rotary_embedding(q, q_pos, base=self.rope.base)
            if not reuse:  # cached memory keys are rotated already
                k_pos = jnp.arange(k.shape[-3]) if cross else q_pos
                k = rotary_embedding(k, k_pos, base=self.rope.base)
        new_state: State = {}
        structural = None
        if self.decode and cross:
            new_state = {"memory_key": k, "memory_value": v, "cache_index": start + tq}
        elif self.decode:
            k, v = self._write_cache(state, k, v, start)
            new_state = {"cached_key": k, "cached_value": v, "cache_index": start + tq}
            key_pos = jnp.arange(k.shape[-3])
            structural = key_pos[None, :] < start + tq  # steps written so far
        if self.causal:
            structural = causal_mask(tq, k.shape[-3], offset=start)
        key_mask, lengths = self._key_inputs(call, k.shape[:-2], cross)
        shape = (*q.shape[:-3], self.num_heads, tq, k.shape[-3])
        user_mask = self._boolean_mask(call, shape)
        dropout = call.train and self.dropout_rate > 0
        kernel = "explicit"
        if not tapped("weights"):  # the weights tap needs the weights
            kernel = _choose(
                self.where(),
                self.implementation,
                q,
                k,
                v,
                structured=not self.decode and key_mask is None and user_mask is None,
                explicit_only=_explicit_only(q, k, v, dropout=dropout, precision=self.precision),
            )
        if lengths is not None and (kernel == "explicit" or key_mask is not None):
            key_mask = combine_masks(key_mask, sequence_mask(lengths, shape[-1]))
            lengths = None
        causal = self.causal and not self.decode and kernel != "explicit"  # JAX's is_causal
        mask = combine_masks(
            None if causal else structural,
            None if key_mask is None else key_mask[..., None, None, :],
            user_mask,
        )
        if kernel == "explicit":
            weights = _weights(
                self.where(), q, k, mask=mask, bias=None, scale=self.scale, precision=self.precision
            )
            if dropout:
                weights = _dropout(weights, self.dropout_rate, self.require_rng(call.rng))
            weights = tap("weights", weights)
            out = _attend(weights, v, self.precision)
        else:
            if mask is not None:
                mask = mask.reshape((1,) * (len(shape) - mask.ndim) + mask.shape)
            out = _fused(
                q,
                k,
                v,
                implementation=kernel,
                mask=mask,
                is_causal=causal,
                kv_lengths=lengths,
                scale=self.scale,
            )
        out = tap("heads", out)
        w_o = self.param(params, "w_o")
        if w_o.shape[:2] != (self.num_heads, d):
            raise self.error(
                ShapeError,
                f"parameter 'w_o' has shape {w_o.shape}, expected ({self.num_heads}, {d}, F_out)",
            )
        y = jnp.einsum("...thd,hdf->...tf", out, w_o.astype(dtype), precision=self.precision)
        if self.use_bias:
            y = y + self.param(params, "b_o", (w_o.shape[-1],)).astype(dtype).reshape(
                (1,) * (y.ndim - 1) + (w_o.shape[-1],)
            )
        return y, new_state

    def _positions(self, call: Call, q: Array, start: Any) -> Array:
        """The query positions for rope: the side input ``"positions"``, or ``start + 0..T-1``."""
        positions = self.side_input(call, "positions")
        tq = q.shape[-3]
        if positions is None:
            return start + jnp.arange(tq)
        positions = jnp.asarray(positions)
        batch = q.shape[:-3]
        if (
            not jnp.issubdtype(positions.dtype, jnp.integer)
            or positions.ndim < 1
            or positions.ndim > len(batch) + 1
            or positions.shape[-1] != tq
            or positions.shape[:-1] != batch[len(batch) + 1 - positions.ndim :]
        ):
            raise self.error(
                ShapeError,
                f"side input 'positions' must be ints of shape {(*batch, tq)} (..., Tq) or "
                f"({tq},), given dtype {positions.dtype} and shape {positions.shape}",
            )
        return positions

    def _boolean_mask(self, call: Call, shape: tuple[int, ...]) -> Array | None:
        """The ``"mask"`` side input, checked to be booleans broadcastable to the weights'
        ``shape``: a float *additive* mask (0 where allowed, -inf where not, PyTorch's
        convention) cast to bool would be inverted."""
        mask = self.side_input(call, "mask")
        if mask is None:
            return None
        mask = jnp.asarray(mask)
        if mask.dtype != jnp.bool_:
            raise self.error(
                ShapeError,
                f"side input 'mask' must be booleans (True = may attend), given dtype "
                f"{mask.dtype}; an additive float mask (0 = attend, -inf = not) converts with "
                f"`mask == 0`",
            )
        _check_broadcast("side input 'mask'", mask.shape, shape, self.where())
        return mask

    def _key_inputs(
        self, call: Call, shape: tuple[int, ...], cross: bool
    ) -> tuple[Array | None, Array | None]:
        """The side inputs ``"key_mask"`` ``(..., Tk)`` and ``"lengths"`` ``(...)``, checked."""
        key_mask = self.side_input(call, "key_mask")
        if key_mask is not None:
            key_mask = self.side_array("key_mask", key_mask, shape, "(..., Tk)")
        if cross:
            return key_mask, None
        lengths = self.side_input(call, "lengths")
        if lengths is None:
            return key_mask, None
        if self.decode:
            raise self.error(
                ConfigError,
                "side input 'lengths' is ambiguous with decode=True (the keys are the cache "
                f"slots); give a 'key_mask' of shape {shape} over the cache instead",
            )
        lengths = self.side_array("lengths", lengths, shape[:-1], "(the batch axes)")
        self.check_range("side input 'lengths'", lengths, 0, shape[-1], closed=True)
        return key_mask, lengths

    def _cached_memory(
        self, params: Params, state: State, xk: Array, xv: Array
    ) -> tuple[Array, Array]:
        """The context's keys/values ``(..., S, K, D)`` kept by the first decode call.

        No projection runs; ``w_k``/``w_v`` (and biases) are only checked against them.
        """
        k = self.state_entry(state, "memory_key")
        v = self.state_entry(state, "memory_value")
        if xk.shape[:-1] != k.shape[:-2]:
            raise self.error(
                ShapeError,
                f"decode state holds the keys/values of a memory with (..., S) = "
                f"{k.shape[:-2]}, given a memory of shape {xk.shape}; decode calls after the "
                "first reuse the first call's memory: init the state again to decode another",
            )
        for name, x, cached in (("k", xk, k), ("v", xv, v)):
            self.param(params, f"w_{name}", (x.shape[-1], *cached.shape[-2:]))
            if self.use_bias:
                self.param(params, f"b_{name}", cached.shape[-2:])
        return k, v

    def _write_cache(self, state: State, k: Array, v: Array, start: Array) -> tuple[Array, Array]:
        cached_k = self.state_entry(state, "cached_key")
        cached_v = self.state_entry(state, "cached_value")
        if cached_k.shape[:-3] != k.shape[:-3] or cached_k.shape[-2:] != k.shape[-2:]:
            raise self.error(
                ShapeError,
                f"decode cache has shape {cached_k.shape} (..., L, K, D), incompatible with new "
                f"keys of shape {k.shape}; create the cache with init on an input of the batch "
                "shape and maximum length",
            )
        # dynamic_update_slice clamps its start: steps past the cache would overwrite earlier
        # entries silently. A block longer than the cache is caught when tracing; an index
        # overflow by a value check (a concrete index at once, a traced one in checked mode).
        length, steps = cached_k.shape[-3], k.shape[-3]
        advice = "Initialize the cache on an input as long as the whole sequence"
        if steps > length:
            raise self.error(
                ShapeError,
                f"decode cache holds {length} steps; {steps} new step(s) do not fit, whatever "
                f"the cache index. {advice}",
            )
        check_values(
            (start >= 0) & (start + steps <= length),
            f"{escape(self.where())}: decode cache holds {length} steps; {steps} new step(s) at "
            f"cache index {{index}} do not fit (the index must lie in [0, {length - steps}]). "
            f"{escape(advice)}",
            index=start,
        )
        axis = k.ndim - 3
        cached_k = jax.lax.dynamic_update_slice_in_dim(
            cached_k, k.astype(cached_k.dtype), start, axis
        )
        cached_v = jax.lax.dynamic_update_slice_in_dim(
            cached_v, v.astype(cached_v.dtype), start, axis
        )
        return cached_k, cached_v

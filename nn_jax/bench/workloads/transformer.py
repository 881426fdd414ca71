"""Transformer workloads: an encoder classifier and a decoder-only language model.

* ``transformer``: ``TransformerEncoder(10, num_layers=2, d_model=128, num_heads=4,
  vocab_size=1000)`` - token embedding x sqrt(128), sinusoidal positions, 2 pre-LN blocks
  (4-head self-attention, GELU MLP 512), final LayerNorm, mean over time, ``Dense(10)``;
  sequences of 64 tokens, softmax cross-entropy, ``adam(1e-3)``, batch 32.
* ``lm``: ``TransformerLM(1000, num_layers=2, d_model=128, num_heads=4)`` - the same blocks with
  causal attention and rotary position embeddings (RoPE, rotate-half pairing) instead of
  sinusoidal positions, a bias-free vocabulary head; next-token cross-entropy on 64 tokens,
  ``adam(1e-3)``, batch 32 (throughput in tokens).

Every framework uses its own embedding, LayerNorm (epsilon 1e-5, two-pass variance), dense and
multi-head attention layers with nn_jax's weights (``w_q: (D, H, Dh)`` etc., reshaped where a
framework stores ``(D, H*Dh)``); RoPE is a shared function plugged into each framework's
attention hook (Flax ``attention_fn``, Equinox ``process_heads``, Haiku's query/key projection).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nn_jax.bench import frameworks as fw
from nn_jax.bench.registry import Impl, Reference, Workload, register
from nn_jax.models.transformer import TransformerEncoder, TransformerLM

LR, EPS = 1e-3, 1e-5


@dataclasses.dataclass(frozen=True)
class Spec:
    """The architecture, as every framework's builder needs it."""

    vocab: int = 1000
    d: int = 128
    heads: int = 4
    layers: int = 2
    mlp: int = 512
    seq: int = 64
    causal: bool = False  # the LM: causal attention, RoPE, bias-free vocabulary head
    classes: int = 10

    @property
    def out(self) -> int:
        return self.vocab if self.causal else self.classes


ENCODER, LM = Spec(), Spec(causal=True)


def _setup(spec: Spec, batch_size: int, dtype: str, key: jax.Array) -> Reference:
    kx, ky, kp = jax.random.split(key, 3)
    kw: dict[str, Any] = {"num_layers": spec.layers, "d_model": spec.d, "num_heads": spec.heads}
    if spec.causal:
        model: Any = TransformerLM(spec.vocab, **kw)
        tokens = jax.random.randint(kx, (batch_size, spec.seq + 1), 0, spec.vocab)
        batch = (tokens[:, :-1], tokens[:, 1:])
    else:
        model = TransformerEncoder(spec.classes, vocab_size=spec.vocab, **kw)
        tokens = jax.random.randint(kx, (batch_size, spec.seq), 0, spec.vocab)
        batch = (tokens, jax.random.randint(ky, (batch_size,), 0, spec.classes))
    return fw.make_reference(model, batch, kp, dtype, lr=LR, spec=spec)


def _spec(ref: Reference) -> Spec:
    return ref.config["spec"]


# --------------------------------------------------------------------------------------------
# Shared maths.


def sinusoidal(length: int, d: int) -> np.ndarray:
    """``(length, d)`` encodings: ``sin`` at even features, ``cos`` at odd (Vaswani et al.)."""
    inv_freq = 10000.0 ** (-np.arange(0, d, 2, dtype=np.float32) / d)
    angles = np.arange(length, dtype=np.float32)[:, None] * inv_freq[None, :]
    return np.stack([np.sin(angles), np.cos(angles)], axis=-1).reshape(length, d)


def rope(x: jax.Array) -> jax.Array:
    """Rotary embedding of ``x: (..., T, H, D)`` at positions ``0..T-1`` (rotate-half pairing)."""
    t, d = x.shape[-3], x.shape[-1]
    half = d // 2
    inv_freq = 10000.0 ** (-np.arange(half, dtype=np.float32) * 2 / d)
    angles = np.arange(t, dtype=np.float32)[:, None] * inv_freq[None, :]  # (T, half)
    shape = (1,) * (x.ndim - 3) + (t, 1, half)
    cos = jnp.asarray(np.cos(angles).reshape(shape), x.dtype)
    sin = jnp.asarray(np.sin(angles).reshape(shape), x.dtype)
    x1, x2 = x[..., :half], x[..., half:]
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


# --------------------------------------------------------------------------------------------
# Raw JAX.


def _layer_norm(x: jax.Array, p: Any) -> jax.Array:
    xs = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    mean = jnp.mean(xs, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(xs - mean), axis=-1, keepdims=True)
    y = ((xs - mean) * jax.lax.rsqrt(var + EPS)).astype(x.dtype)
    scale, offset = fw.norm_params(p)
    return y * scale[None, None, :] + offset[None, None, :]


def _attention(x: jax.Array, p: Any, causal: bool) -> jax.Array:
    q, k, v = (jnp.einsum("btf,fhd->bthd", x, p[f"w_{n}"]) + p[f"b_{n}"][None, None] for n in "qkv")
    if causal:
        q, k = rope(q), rope(k)
    scale = jnp.asarray(1 / math.sqrt(q.shape[-1]), q.dtype)
    logits = jnp.einsum("bqhd,bkhd->bhqk", q * scale, k)
    logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
    if causal:
        t = x.shape[1]
        mask = np.tril(np.ones((t, t), bool))[None, None]
        logits = jnp.where(mask, logits, jnp.finfo(logits.dtype).min)
    weights = jax.nn.softmax(logits, axis=-1).astype(x.dtype)
    out = jnp.einsum("bhqk,bkhd->bqhd", weights, v)
    return jnp.einsum("bqhd,hdf->bqf", out, p["w_o"]) + p["b_o"][None, None, :]


def projections(a: Any) -> dict[str, tuple[jax.Array, jax.Array]]:
    """An nn_jax attention layer's ``q, k, v, o`` projections as 2-d ``(w, b)``:
    ``w_q: (D, H, Dh)`` as ``(D, H*Dh)``, ``w_o: (H, Dh, D)`` as ``(H*Dh, D)``."""
    out = {
        n: (a[f"w_{n}"].reshape(a[f"w_{n}"].shape[0], -1), a[f"b_{n}"].reshape(-1)) for n in "qkv"
    }
    out["o"] = (a["w_o"].reshape(-1, a["w_o"].shape[-1]), a["b_o"])
    return out


def _head(ref: Reference) -> tuple[jax.Array, jax.Array | None]:
    """The vocabulary/class head's ``(w, b)`` (``b`` is ``None`` for the bias-free LM head)."""
    head = ref.params["head"]
    return head["w"], None if _spec(ref).causal else head["b"]


def _transformer_jax(ref: Reference) -> Impl:
    spec, p = _spec(ref), ref.params
    # Raw-JAX layout: the table, a list of blocks, the final norm and head.
    params = {
        "table": p["embedding"]["table"],
        "blocks": [p[f"block_{i}"] for i in range(spec.layers)],
        "final_norm": p["final_norm"],
        "head": p["head"],
    }
    pe = sinusoidal(spec.seq, spec.d)

    def loss_fn(params: Any, batch: Any) -> jax.Array:
        tokens, targets = batch
        h = jnp.take(params["table"], tokens, axis=0) * math.sqrt(spec.d)
        if not spec.causal:
            h = h + jnp.asarray(pe, h.dtype)[None]
        for bp in params["blocks"]:
            h = h + _attention(_layer_norm(h, bp["attention_norm"]), bp["attention"], spec.causal)
            m = _layer_norm(h, bp["mlp_norm"])
            up, down = bp["mlp"]["up"], bp["mlp"]["down"]
            m = jax.nn.gelu(m @ up["w"] + up["b"][None, None, :])
            h = h + m @ down["w"] + down["b"][None, None, :]
        h = _layer_norm(h, params["final_norm"])
        if spec.causal:
            logits = h @ params["head"]["w"]
        else:
            logits = jnp.mean(h, axis=1) @ params["head"]["w"] + params["head"]["b"][None, :]
        return fw.cross_entropy(logits, targets)

    return fw.functional_impl(loss_fn, params, ref)


# --------------------------------------------------------------------------------------------
# Flax (Linen and NNX share the parameter naming: query/key/value/out, up/down, scale/bias).


def _flax_params(ref: Reference) -> dict[str, Any]:
    """nn_jax's tree in Flax's names (``kernel``, ``embedding``; MLP layers at block level)."""
    spec, p = _spec(ref), ref.params
    out: dict[str, Any] = {"embedding": {"embedding": p["embedding"]["table"]}}
    for i in range(spec.layers):
        b = p[f"block_{i}"]
        a = b["attention"]
        out[f"block_{i}"] = {
            "attention_norm": fw.rename(b["attention_norm"], fw.FLAX_NAMES),
            "attention": {
                name: {"kernel": a[f"w_{n}"], "bias": a[f"b_{n}"]}
                for name, n in (("query", "q"), ("key", "k"), ("value", "v"), ("out", "o"))
            },
            "mlp_norm": fw.rename(b["mlp_norm"], fw.FLAX_NAMES),
            **fw.rename(b["mlp"], fw.FLAX_NAMES),
        }
    out["final_norm"] = fw.rename(p["final_norm"], fw.FLAX_NAMES)
    out["head"] = fw.rename(p["head"], fw.FLAX_NAMES)
    return out


def _rope_attention_fn(attention_fn: Callable[..., jax.Array]) -> Callable[..., jax.Array]:
    """A Flax ``attention_fn`` applying RoPE to queries and keys first.

    ``mask`` is named: Linen passes only the keyword arguments in the function's signature
    (NNX passes them all, collected by ``kwargs``).
    """

    def fn(
        query: jax.Array,
        key: jax.Array,
        value: jax.Array,
        bias: jax.Array | None = None,
        mask: jax.Array | None = None,
        **kwargs: Any,
    ) -> jax.Array:
        return attention_fn(rope(query), rope(key), value, bias=bias, mask=mask, **kwargs)

    return fn


def _transformer_linen(ref: Reference) -> Impl:
    import flax.linen as nn

    spec = _spec(ref)
    pe = sinusoidal(spec.seq, spec.d)

    def norm(name: str) -> nn.LayerNorm:
        return nn.LayerNorm(epsilon=EPS, use_fast_variance=False, name=name)

    class Block(nn.Module):
        @nn.compact
        def __call__(self, x: jax.Array, mask: jax.Array | None) -> jax.Array:
            attention_fn = nn.dot_product_attention
            if spec.causal:
                attention_fn = _rope_attention_fn(attention_fn)
            attention = nn.MultiHeadDotProductAttention(
                spec.heads, attention_fn=attention_fn, name="attention"
            )
            x = x + attention(norm("attention_norm")(x), mask=mask)
            h = nn.gelu(nn.Dense(spec.mlp, name="up")(norm("mlp_norm")(x)))
            return x + nn.Dense(spec.d, name="down")(h)

    class Model(nn.Module):
        @nn.compact
        def __call__(self, tokens: jax.Array) -> jax.Array:
            h = nn.Embed(spec.vocab, spec.d, name="embedding")(tokens) * math.sqrt(spec.d)
            mask = nn.make_causal_mask(tokens) if spec.causal else None
            if not spec.causal:
                h = h + jnp.asarray(pe, h.dtype)[None]
            for i in range(spec.layers):
                h = Block(name=f"block_{i}")(h, mask)
            h = norm("final_norm")(h)
            if not spec.causal:
                h = jnp.mean(h, axis=1)
            return nn.Dense(spec.out, use_bias=not spec.causal, name="head")(h)

    return fw.linen_impl(Model(), _flax_params(ref), ref)


def _transformer_nnx_model(ref: Reference) -> Any:
    from flax import nnx

    spec = _spec(ref)
    pe = sinusoidal(spec.seq, spec.d)
    rngs = nnx.Rngs(0)
    dtype = ref.params["head"]["w"].dtype  # nnx.update keeps each variable's dtype

    def norm() -> nnx.LayerNorm:
        return nnx.LayerNorm(
            spec.d, epsilon=EPS, use_fast_variance=False, param_dtype=dtype, rngs=rngs
        )

    class Block(nnx.Module):
        def __init__(self) -> None:
            attention_fn = nnx.dot_product_attention
            if spec.causal:
                attention_fn = _rope_attention_fn(attention_fn)
            self.attention_norm = norm()
            self.attention = nnx.MultiHeadAttention(
                spec.heads,
                spec.d,
                attention_fn=attention_fn,
                decode=False,
                param_dtype=dtype,
                rngs=rngs,
            )
            self.mlp_norm = norm()
            self.up = nnx.Linear(spec.d, spec.mlp, param_dtype=dtype, rngs=rngs)
            self.down = nnx.Linear(spec.mlp, spec.d, param_dtype=dtype, rngs=rngs)

        def __call__(self, x: jax.Array, mask: jax.Array | None) -> jax.Array:
            x = x + self.attention(self.attention_norm(x), mask=mask)
            return x + self.down(nnx.gelu(self.up(self.mlp_norm(x))))

    class Model(nnx.Module):
        def __init__(self) -> None:
            self.embedding = nnx.Embed(spec.vocab, spec.d, param_dtype=dtype, rngs=rngs)
            for i in range(spec.layers):
                setattr(self, f"block_{i}", Block())
            self.final_norm = norm()
            self.head = nnx.Linear(
                spec.d, spec.out, use_bias=not spec.causal, param_dtype=dtype, rngs=rngs
            )

        def __call__(self, tokens: jax.Array) -> jax.Array:
            h = self.embedding(tokens) * math.sqrt(spec.d)
            mask = nnx.make_causal_mask(tokens) if spec.causal else None
            if not spec.causal:
                h = h + jnp.asarray(pe, h.dtype)[None]
            for i in range(spec.layers):
                h = getattr(self, f"block_{i}")(h, mask)
            h = self.final_norm(h)
            if not spec.causal:
                h = jnp.mean(h, axis=1)
            return self.head(h)

    model = Model()
    nnx.update(model, _flax_params(ref))
    return model


# --------------------------------------------------------------------------------------------
# Haiku: hk.MultiHeadAttention; for the LM, its query/key projections also apply RoPE.


def _transformer_haiku(ref: Reference) -> Impl:
    import haiku as hk

    spec = _spec(ref)
    pe = sinusoidal(spec.seq, spec.d)
    head_dim = spec.d // spec.heads

    class RopeAttention(hk.MultiHeadAttention):
        def _linear_projection(self, x: jax.Array, head_size: int, name: str | None = None) -> Any:
            y = super()._linear_projection(x, head_size, name)
            return rope(y) if name in ("query", "key") else y

    def norm(name: str) -> hk.LayerNorm:
        return hk.LayerNorm(-1, create_scale=True, create_offset=True, eps=EPS, name=name)

    def forward(tokens: jax.Array) -> jax.Array:
        h = hk.Embed(spec.vocab, spec.d, name="embedding")(tokens) * math.sqrt(spec.d)
        mask = None
        if spec.causal:
            mask = jnp.asarray(np.tril(np.ones((spec.seq, spec.seq), bool))[None, None])
        else:
            h = h + jnp.asarray(pe, h.dtype)[None]
        attention_cls = RopeAttention if spec.causal else hk.MultiHeadAttention
        for i in range(spec.layers):
            attention = attention_cls(
                spec.heads,
                head_dim,
                w_init=hk.initializers.VarianceScaling(),
                name=f"block_{i}_attention",
            )
            x = norm(f"block_{i}_attention_norm")(h)
            h = h + attention(x, x, x, mask=mask)
            x = hk.Linear(spec.mlp, name=f"block_{i}_up")(norm(f"block_{i}_mlp_norm")(h))
            h = h + hk.Linear(spec.d, name=f"block_{i}_down")(jax.nn.gelu(x))
        h = norm("final_norm")(h)
        if not spec.causal:
            h = jnp.mean(h, axis=1)
        return hk.Linear(spec.out, with_bias=not spec.causal, name="head")(h)

    p = ref.params
    named: dict[str, Any] = {"embedding": {"embeddings": p["embedding"]["table"]}}
    for i in range(spec.layers):
        b, name = p[f"block_{i}"], f"block_{i}"
        a = b["attention"]
        for hk_name, n in (("query", "q"), ("key", "k"), ("value", "v"), ("linear", "o")):
            named[f"{name}_attention/{hk_name}"] = dict(zip("wb", projections(a)[n], strict=True))
        for norm_name in ("attention_norm", "mlp_norm"):
            named[f"{name}_{norm_name}"] = fw.haiku_norm(b[norm_name])
        named[f"{name}_up"] = b["mlp"]["up"]
        named[f"{name}_down"] = b["mlp"]["down"]
    named["final_norm"] = fw.haiku_norm(p["final_norm"])
    named["head"] = p["head"]
    return fw.haiku_impl(forward, named, ref)


# --------------------------------------------------------------------------------------------
# Equinox: per-sequence modules (``(T, D)``), vmapped over the batch.


def _eqx_attention(spec: Spec, a: Any, dtype: Any) -> Any:
    """An ``eqx.nn.MultiheadAttention`` holding an nn_jax attention layer's params ``a``."""
    import equinox as eqx

    biases = {f"use_{n}_bias": True for n in ("query", "key", "value", "output")}
    layer = eqx.nn.MultiheadAttention(
        spec.heads, spec.d, key=jax.random.key(0), dtype=dtype, **biases
    )
    return eqx.tree_at(
        lambda m: (m.query_proj, m.key_proj, m.value_proj, m.output_proj),
        layer,
        tuple(fw.eqx_linear(*projections(a)[n]) for n in "qkvo"),
    )


def _transformer_equinox(ref: Reference) -> Impl:
    import equinox as eqx

    spec, p = _spec(ref), ref.params
    pe = sinusoidal(spec.seq, spec.d)
    dtype = p["head"]["w"].dtype

    def norm(q: Any) -> eqx.nn.LayerNorm:
        layer = eqx.nn.LayerNorm(spec.d, eps=EPS, dtype=dtype)
        return eqx.tree_at(lambda n: (n.weight, n.bias), layer, fw.norm_params(q))

    def attention(a: Any) -> eqx.nn.MultiheadAttention:
        return _eqx_attention(spec, a, dtype)

    def rope_heads(q: jax.Array, k: jax.Array, v: jax.Array) -> Any:
        return rope(q), rope(k), v

    class Block(eqx.Module):
        attention_norm: Any
        attention: Any
        mlp_norm: Any
        up: Any
        down: Any

        def __init__(self, b: Any) -> None:
            self.attention_norm = norm(b["attention_norm"])
            self.attention = attention(b["attention"])
            self.mlp_norm = norm(b["mlp_norm"])
            self.up = fw.eqx_linear(b["mlp"]["up"]["w"], b["mlp"]["up"]["b"])
            self.down = fw.eqx_linear(b["mlp"]["down"]["w"], b["mlp"]["down"]["b"])

        def __call__(self, x: jax.Array, mask: Any) -> jax.Array:
            h = jax.vmap(self.attention_norm)(x)
            x = x + self.attention(
                h, h, h, mask=mask, process_heads=rope_heads if spec.causal else None
            )
            h = jax.vmap(self.up)(jax.vmap(self.mlp_norm)(x))
            return x + jax.vmap(self.down)(jax.nn.gelu(h))

    class Model(eqx.Module):
        embedding: Any
        blocks: list[Block]
        final_norm: Any
        head: Any

        def __init__(self) -> None:
            table = p["embedding"]["table"]
            self.embedding = eqx.nn.Embedding(weight=table)
            self.blocks = [Block(p[f"block_{i}"]) for i in range(spec.layers)]
            self.final_norm = norm(p["final_norm"])
            self.head = fw.eqx_linear(*_head(ref))

        def __call__(self, tokens: jax.Array) -> jax.Array:  # one sequence (T,)
            h = jax.vmap(self.embedding)(tokens) * math.sqrt(spec.d)
            mask = None
            if spec.causal:
                mask = jnp.asarray(np.tril(np.ones((spec.seq, spec.seq), bool)))
            else:
                h = h + jnp.asarray(pe, h.dtype)
            for block in self.blocks:
                h = block(h, mask)
            h = jax.vmap(self.final_norm)(h)
            if spec.causal:
                return jax.vmap(self.head)(h)
            return self.head(jnp.mean(h, axis=0))

    return fw.equinox_impl(Model(), ref)


# --------------------------------------------------------------------------------------------
# PyTorch: the same pre-LN block with F.scaled_dot_product_attention.


def _transformer_torch(ref: Reference) -> Impl:
    import torch
    import torch.nn.functional as F

    spec, p = _spec(ref), ref.params
    head_dim = spec.d // spec.heads
    inv_freq = 10000.0 ** (-np.arange(head_dim // 2, dtype=np.float32) * 2 / head_dim)
    angles = np.arange(spec.seq, dtype=np.float32)[:, None] * inv_freq[None, :]

    def norm(q: Any) -> torch.nn.LayerNorm:
        return fw.torch_norm(torch.nn.LayerNorm(spec.d, eps=EPS), q)

    class Block(torch.nn.Module):
        def __init__(self, b: Any) -> None:
            super().__init__()
            a = b["attention"]
            self.attention_norm, self.mlp_norm = norm(b["attention_norm"]), norm(b["mlp_norm"])
            self.q, self.k, self.v, self.o = (fw.torch_linear(*projections(a)[n]) for n in "qkvo")
            self.up = fw.torch_linear(b["mlp"]["up"]["w"], b["mlp"]["up"]["b"])
            self.down = fw.torch_linear(b["mlp"]["down"]["w"], b["mlp"]["down"]["b"])
            self.register_buffer("cos", torch.from_numpy(np.cos(angles)))
            self.register_buffer("sin", torch.from_numpy(np.sin(angles)))

        def _rope(self, x: Any) -> Any:  # (B, H, T, Dh)
            half = x.shape[-1] // 2
            cos, sin = self.cos.to(x.dtype), self.sin.to(x.dtype)
            x1, x2 = x[..., :half], x[..., half:]
            return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)

        def forward(self, x: Any) -> Any:
            n, t, _ = x.shape
            h = self.attention_norm(x)
            q, k, v = (
                proj(h).view(n, t, spec.heads, head_dim).transpose(1, 2)
                for proj in (self.q, self.k, self.v)
            )
            if spec.causal:
                q, k = self._rope(q), self._rope(k)
            a = F.scaled_dot_product_attention(q, k, v, is_causal=spec.causal)
            x = x + self.o(a.transpose(1, 2).reshape(n, t, spec.d))
            return x + self.down(F.gelu(self.up(self.mlp_norm(x)), approximate="tanh"))

    class Model(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embedding = torch.nn.Embedding(spec.vocab, spec.d)
            with torch.no_grad():
                self.embedding.weight.copy_(fw.to_torch(p["embedding"]["table"]))
            self.blocks = torch.nn.Sequential(*[Block(p[f"block_{i}"]) for i in range(spec.layers)])
            self.final_norm = norm(p["final_norm"])
            self.head = fw.torch_linear(*_head(ref))
            self.register_buffer("pe", torch.from_numpy(sinusoidal(spec.seq, spec.d)))

        def forward(self, tokens: Any) -> Any:
            h = self.embedding(tokens) * math.sqrt(spec.d)
            if not spec.causal:
                h = h + self.pe.to(h.dtype)
            h = self.final_norm(self.blocks(h))
            return self.head(h if spec.causal else h.mean(dim=1))

    return fw.torch_impl(Model(), ref)


BUILDERS = {
    "nn_jax": fw.nn_jax_builder,
    "jax": _transformer_jax,
    "flax_linen": _transformer_linen,
    **fw.nnx_builders(_transformer_nnx_model),
    "equinox": _transformer_equinox,
    "haiku": _transformer_haiku,
    "torch": _transformer_torch,
}


def _transformer_flops(ref: Reference) -> float:
    """Matmul FLOPs of a training step: 3x the forward's (the embedding lookup is a gather)."""
    spec = _spec(ref)
    n, t, d = ref.batch_size, spec.seq, spec.d
    per_block = 2 * n * t * (4 * d * d + 2 * d * spec.mlp) + 2 * 2 * n * t * t * d
    head = 2 * n * (t if spec.causal else 1) * d * spec.out
    return 3 * (spec.layers * per_block + head)


register(
    Workload(
        "transformer",
        "Transformer encoder (2 layers, d 128, 4 heads, seq 64), mean pool -> Dense(10)",
        32,
        lambda b, dtype, key: _setup(ENCODER, b, dtype, key),
        BUILDERS,
        analytic_flops=_transformer_flops,
    )
)
register(
    Workload(
        "lm",
        "Decoder-only LM (2 layers, d 128, 4 heads, RoPE, vocab 1000), next-token CE on 64",
        32,
        lambda b, dtype, key: _setup(LM, b, dtype, key),
        BUILDERS,
        unit="tokens",
        items_per_step=lambda ref: ref.batch_size * _spec(ref).seq,
        analytic_flops=_transformer_flops,
    )
)

__all__ = ["Spec", "projections", "rope", "sinusoidal"]

"""Transformer blocks: ``FeedForward``, ``TransformerEncoderBlock``, ``TransformerDecoderBlock``.

Both blocks come in the two residual arrangements:

* ``norm_position="pre"`` (pre-LN, GPT-2 and most modern models; Xiong et al., 2020):
  ``x = x + drop(attn(norm(x)))``, ``x = x + drop(ffn(norm(x)))``. A stack of pre-LN blocks
  needs a final norm (the models in :mod:`nn_jax.models.transformer` add it).
* ``norm_position="post"`` (post-LN, the original Transformer of Vaswani et al., 2017):
  ``x = norm(x + drop(attn(x)))``, ``x = norm(x + drop(ffn(x)))``.

``norm="layer"`` uses :class:`~nn_jax.normalization.LayerNorm`, ``norm="rms"``
:class:`~nn_jax.normalization.RMSNorm`. Dropout (``dropout_rate``) is applied to each residual
branch in training and needs an ``rng``.

The feed-forward network is chosen by ``ffn``: ``"gelu"`` (GELU, tanh approximation, as GPT-2;
the default), ``"gelu_exact"`` (GELU with ``erf``; PyTorch's ``activation="gelu"``),
``"relu"`` (PyTorch's default ``activation="relu"``), each ``Dense -> act -> Dense`` with
biases, or ``"swiglu"`` (gated SiLU, no biases; Shazeer, 2020).

Side inputs reach the blocks' self-attention unchanged (``"mask"``, ``"key_mask"``,
``"lengths"``, ``"positions"``: see :class:`~nn_jax.attention.MultiHeadAttention`); the decoder
block gives its cross-attention the side inputs ``"memory_key_mask"`` and ``"memory_mask"`` as
that attention's ``"key_mask"`` and ``"mask"``. ``decode=True`` turns on the self-attention
cache for incremental decoding, and in the decoder block keeps the cross-attention's keys and
values of the memory, projected once by the first call.

**PyTorch.** With ``ffn="relu"`` (or ``"gelu_exact"``), ``norm="layer"``, the default
``epsilon=1e-5`` and ``num_kv_heads=None``, the blocks compute what PyTorch's
``nn.TransformerEncoderLayer`` / ``nn.TransformerDecoderLayer(d_model, nhead,
dim_feedforward=mlp_features, activation="relu" | "gelu", layer_norm_eps=epsilon,
batch_first=True, norm_first=(norm_position == "pre"), bias=True)`` compute in eval mode.
PyTorch's ``dropout`` is applied to the residual branches and inside the feed-forward network
(after the activation); here ``dropout_rate`` is applied to the residual branches only and
``attention_dropout_rate`` to the attention weights (PyTorch's attention dropout uses the same
``dropout``). Every linear map and norm has a bias, as PyTorch's ``bias=True``. PyTorch's
boolean masks mean ``True`` = *not* allowed, the opposite of nn_jax's: negate them. The
parameter correspondence (``W.T`` is a PyTorch ``nn.Linear`` weight transposed to
``(in, out)``; ``D = d_model // nhead``):

==========================================  ==================================================
PyTorch ``state_dict`` entry                 nn_jax param
==========================================  ==================================================
``self_attn.in_proj_weight`` ``(3E, E)``    rows ``[0:E]``, ``[E:2E]``, ``[2E:3E]`` are
                                            ``W_q, W_k, W_v``: ``<attention>/w_q =
                                            W_q.T.reshape(E, H, D)``, likewise ``w_k``, ``w_v``
``self_attn.in_proj_bias`` ``(3E,)``        ``<attention>/b_q, b_k, b_v``, each ``(H, D)``
``self_attn.out_proj.weight`` ``(E, E)``    ``<attention>/w_o = weight.T.reshape(H, D, E)``
``self_attn.out_proj.bias``                 ``<attention>/b_o``
``multihead_attn.*`` (decoder)              ``cross_attention/*``, as above
``linear1.weight``, ``linear1.bias``        ``mlp/up/w`` (``weight.T``), ``mlp/up/b``
``linear2.weight``, ``linear2.bias``        ``mlp/down/w`` (``weight.T``), ``mlp/down/b``
``norm1.weight``, ``norm1.bias``            ``<attention>_norm/scale``, ``<attention>_norm/b``
``norm2.*`` (encoder)                       ``mlp_norm/scale``, ``mlp_norm/b``
``norm2.*`` (decoder)                       ``cross_attention_norm/scale``, ``/b``
``norm3.*`` (decoder)                       ``mlp_norm/scale``, ``mlp_norm/b``
==========================================  ==================================================

where ``<attention>`` is ``attention`` in the encoder block and ``self_attention`` in the
decoder block.
"""

from __future__ import annotations

import dataclasses
from dataclasses import KW_ONLY
from typing import Any

import jax
import jax.numpy as jnp

from nn_jax.activations import get_activation
from nn_jax.attention import MultiHeadAttention
from nn_jax.core import Activation, Array, Block, Layer, NonNegative, Rate, Scope, Side, Size
from nn_jax.dense import Dense
from nn_jax.errors import ConfigError, ShapeError
from nn_jax.normalization import LayerNorm, RMSNorm
from nn_jax.positional import RotaryEmbedding
from nn_jax.regularization import Dropout

__all__ = ["FeedForward", "TransformerDecoderBlock", "TransformerEncoderBlock"]

_FFN = ("gelu", "gelu_exact", "relu", "swiglu")


def _gelu_exact(x: Array) -> Array:
    """GELU with ``erf``, ``x * Phi(x)`` (PyTorch's ``nn.GELU()``, ``activation="gelu"``)."""
    return jax.nn.gelu(x, approximate=False)


@dataclasses.dataclass(frozen=True)
class FeedForward(Block):
    """The position-wise feed-forward network, plain or gated (GLU family).

    .. math::
        \\text{plain: } y = \\text{act}(x W_{up} + b_{up}) W_{down} + b_{down} \\qquad
        \\text{gated: } y = (\\text{act}(x W_{gate}) \\odot x W_{up}) W_{down}

    ``FeedForward(h)`` is GELU (JAX's default tanh approximation, as GPT-2);
    ``FeedForward(h, activation="silu", gated=True)`` is SwiGLU (Shazeer, 2020), usually
    without biases.

    Args:
        hidden_features: inner size ``M``.
        out_features: output size (default: the input's ``F``).
        activation: a callable or name (default ``"gelu"``).
        gated: multiply the activation by a second (``up``) projection.
        use_bias: biases on the three projections.

    Input ``(..., F)`` -> ``(..., out_features)``. Params: ``up: {w: (F, M), b: (M,)}``,
    ``gate`` (gated only, same shapes), ``down: {w: (M, F_out), b: (F_out,)}``.
    """

    hidden_features: Size
    _: KW_ONLY
    out_features: Size | None = None
    activation: Activation = "gelu"
    gated: bool = False
    use_bias: bool = True

    def forward(self, scope: Scope, x: Any) -> Any:
        act = get_activation(self.activation)
        up = scope("up", Dense(self.hidden_features, use_bias=self.use_bias), x)
        if self.gated:
            h = act(scope("gate", Dense(self.hidden_features, use_bias=self.use_bias), x)) * up
        else:
            h = act(up)
        return scope("down", Dense(self.out_features or x.shape[-1], use_bias=self.use_bias), h)


def _feed_forward(kind: str, hidden: int) -> FeedForward:
    """The block's feed-forward network for ``ffn=kind`` (one of ``_FFN``)."""
    if kind == "swiglu":
        return FeedForward(hidden, activation="silu", gated=True, use_bias=False)
    if kind == "gelu_exact":
        return FeedForward(hidden, activation=_gelu_exact)
    return FeedForward(hidden, activation=kind)


def _norm(kind: str, epsilon: float) -> Layer:
    return RMSNorm(epsilon=epsilon) if kind == "rms" else LayerNorm(epsilon=epsilon)


def _check_options(owner: Any) -> None:
    name = type(owner).__name__
    options = {"norm_position": ("pre", "post"), "norm": ("layer", "rms"), "ffn": _FFN}
    for field, allowed in options.items():
        if getattr(owner, field) not in allowed:
            raise ConfigError(
                f"{name}: {field} must be one of {allowed}, given {getattr(owner, field)!r}"
            )


@dataclasses.dataclass(frozen=True)
class _BlockOptions(Block):
    """Options shared by the encoder and decoder blocks."""

    num_heads: Size
    mlp_features: Size
    _: KW_ONLY
    num_kv_heads: Size | None = None
    head_dim: Size | None = None
    norm_position: str = "pre"
    norm: str = "layer"
    ffn: str = "gelu"
    dropout_rate: Rate = 0.0
    attention_dropout_rate: Rate = 0.0
    rope: RotaryEmbedding | None = None
    decode: bool = False
    epsilon: NonNegative = 1e-5

    def __post_init__(self) -> None:
        _check_options(self)
        self._attention(causal=False)  # validates the attention options

    def _attention(self, *, causal: bool, decode: bool = False) -> MultiHeadAttention:
        return MultiHeadAttention(
            self.num_heads,
            num_kv_heads=self.num_kv_heads,
            head_dim=self.head_dim,
            causal=causal,
            dropout_rate=self.attention_dropout_rate,
            rope=self.rope,
            decode=decode,
        )

    def _sublayer(
        self,
        scope: Scope,
        name: str,
        layer: Layer,
        x: Any,
        memory: Any = None,
        side: Side | None = None,
    ) -> Any:
        """``x + drop(layer(norm(x)))`` (pre) or ``norm(x + drop(layer(x)))`` (post).

        With ``memory``, the layer's input is the pair ``(normed x, memory)``; ``side``
        replaces the side inputs the layer gets (default: the block's).
        """
        norm = _norm(self.norm, self.epsilon)
        inner = scope(f"{name}_norm", norm, x) if self.norm_position == "pre" else x
        y = scope(name, layer, inner if memory is None else (inner, memory), side=side)
        if self.dropout_rate > 0:
            y = scope(f"{name}_dropout", Dropout(self.dropout_rate), y)
        if y.shape != x.shape:
            raise self.error(
                ShapeError, f"{name} output {y.shape} differs from its input {x.shape}"
            )
        y = x + y
        return scope(f"{name}_norm", norm, y) if self.norm_position == "post" else y

    def _mlp(self, scope: Scope, x: Any) -> Any:
        return self._sublayer(scope, "mlp", _feed_forward(self.ffn, self.mlp_features), x)


@dataclasses.dataclass(frozen=True)
class TransformerEncoderBlock(_BlockOptions):
    """Self-attention and a feed-forward network, each in a residual branch with a norm.

    With ``causal=True`` it is the block of a decoder-only language model (GPT).

    PyTorch: ``nn.TransformerEncoderLayer(F, H, dim_feedforward=mlp_features,
    activation="relu", layer_norm_eps=epsilon, batch_first=True, norm_first=False)`` is
    ``TransformerEncoderBlock(H, mlp_features, ffn="relu", norm_position="post",
    epsilon=epsilon)`` (``norm_first=True``: ``norm_position="pre"``; ``activation="gelu"``:
    ``ffn="gelu_exact"``); its call ``layer(src, src_mask, src_key_padding_mask)`` is
    ``block(params, src, side={"mask": ~src_mask, "key_mask": ~src_key_padding_mask})`` for
    boolean masks, and ``is_causal=True`` (with a causal ``src_mask``) is ``causal=True``.
    ``self_attn`` is ``attention``, ``linear1``/``linear2`` are ``mlp/up``/``mlp/down``,
    ``norm1``/``norm2`` are ``attention_norm``/``mlp_norm`` (the full table is in the module
    docstring).

    Args:
        num_heads: attention heads ``H``.
        mlp_features: feed-forward inner size (typically ``4 * F``).
        num_kv_heads: key/value heads (grouped-query attention; default ``H``).
        head_dim: per-head size (default ``F // H``).
        causal: causal self-attention.
        norm_position: ``"pre"`` or ``"post"`` (see the module docstring).
        norm: ``"layer"`` or ``"rms"``.
        ffn: ``"gelu"`` (:class:`FeedForward` with GELU, tanh approximation; the default),
            ``"gelu_exact"`` (GELU with ``erf``; PyTorch ``activation="gelu"``), ``"relu"``
            (PyTorch ``activation="relu"``, its default) or ``"swiglu"`` (gated, no biases).
        dropout_rate: residual-branch dropout; attention_dropout_rate: on the weights.
        rope: a :class:`~nn_jax.positional.RotaryEmbedding` for the attention, or ``None``.
        decode: incremental decoding (self-attention cache in the state).
        epsilon: the norms' epsilon (PyTorch: ``layer_norm_eps``, also ``1e-5`` by default).

    Side inputs: those of :class:`~nn_jax.attention.MultiHeadAttention` (``"mask"``,
    ``"key_mask"``, ``"lengths"``, ``"positions"``), given to the self-attention.

    Taps: ``attention/weights``, the ``(..., H, T, T)`` attention weights, and
    ``attention/heads``, the ``(..., T, H, D)`` per-head outputs before the output projection
    (knock a head out with :func:`nn_jax.interventions.knock_out_heads`).

    Input ``(..., T, F)`` -> same shape. Params: ``attention``, ``attention_norm``, ``mlp``,
    ``mlp_norm``.

    >>> import jax, jax.numpy as jnp
    >>> block = TransformerEncoderBlock(4, 64)
    >>> params, _ = block.init(jax.random.key(0), jnp.zeros((2, 5, 16)))
    >>> sorted(params)
    ['attention', 'attention_norm', 'mlp', 'mlp_norm']
    """

    _: KW_ONLY
    causal: bool = False

    def forward(self, scope: Scope, x: Any) -> Any:
        attention = self._attention(causal=self.causal, decode=self.decode)
        x = self._sublayer(scope, "attention", attention, x)
        return self._mlp(scope, x)


@dataclasses.dataclass(frozen=True)
class TransformerDecoderBlock(_BlockOptions):
    """Self-attention (causal by default), cross-attention to a memory, a feed-forward network.

    The decoder block of the encoder-decoder Transformer (Vaswani et al., 2017). Options as
    :class:`TransformerEncoderBlock`; ``rope`` applies to the self-attention only, and
    ``decode`` caches the self-attention and the cross-attention's keys/values: the first
    call projects the memory into the state (``cross_attention/memory_key``, ``memory_value``)
    and later calls reuse it, so a decoding step never projects the memory again. Every call
    still takes the pair ``(x, memory)``; calls after the first reuse the first call's memory
    (one of another shape is a ``ShapeError``).

    The memory (the encoder's output) comes in as the second item of the input pair
    ``(x, memory)``; the cross-attention projects it with its own ``w_k``, ``w_v`` (so its
    feature size ``F_mem`` may differ from ``F``).

    PyTorch: ``nn.TransformerDecoderLayer(F, H, dim_feedforward=mlp_features,
    activation="relu", layer_norm_eps=epsilon, batch_first=True, norm_first=False)`` is
    ``TransformerDecoderBlock(H, mlp_features, ffn="relu", norm_position="post",
    epsilon=epsilon, causal=False)`` (``norm_first=True``: ``norm_position="pre"``;
    ``activation="gelu"``: ``ffn="gelu_exact"``): PyTorch's decoder layer masks nothing
    unless given ``tgt_mask``. Its call ``layer(tgt, memory, tgt_mask, memory_mask,
    tgt_key_padding_mask, memory_key_padding_mask)`` with boolean masks is
    ``block(params, (tgt, memory), side={"mask": ~tgt_mask, "memory_mask": ~memory_mask,
    "key_mask": ~tgt_key_padding_mask, "memory_key_mask": ~memory_key_padding_mask})``; a
    causal ``tgt_mask`` (``nn.Transformer.generate_square_subsequent_mask``,
    ``tgt_is_causal=True``) is ``causal=True``. ``self_attn`` is ``self_attention``,
    ``multihead_attn`` is ``cross_attention``, ``linear1``/``linear2`` are
    ``mlp/up``/``mlp/down``, ``norm1``/``norm2``/``norm3`` are ``self_attention_norm`` /
    ``cross_attention_norm`` / ``mlp_norm`` (the full table is in the module docstring).

    Args:
        num_heads, mlp_features, num_kv_heads, head_dim, norm_position, norm, ffn,
            dropout_rate, attention_dropout_rate, rope, decode, epsilon: as
            :class:`TransformerEncoderBlock`.
        causal: causal self-attention (default ``True``: token ``i`` sees targets ``j <= i``);
            ``False`` lets every target step attend to every other (PyTorch's decoder layer
            without ``tgt_mask``). The cross-attention is never causal.

    Side inputs: those of :class:`~nn_jax.attention.MultiHeadAttention` (``"mask"``,
    ``"key_mask"``, ``"lengths"``, ``"positions"``) for the self-attention, and for the
    cross-attention (which gets no other side input): ``"memory_key_mask"``: ``(..., S)``
    bools marking the real memory steps (its ``"key_mask"``), and ``"memory_mask"``: bools
    broadcastable to ``(..., H, T, S)``, ``True`` = target step may attend to memory step (its
    ``"mask"``).

    Taps: ``self_attention/weights`` ``(..., H, T, T)`` and ``cross_attention/weights``
    ``(..., H, T, S)``; ``self_attention/heads`` and ``cross_attention/heads``, the per-head
    outputs ``(..., T, H, D)`` before each output projection.

    Input ``((..., T, F), (..., S, F_mem))`` -> ``(..., T, F)``. Params: ``self_attention``,
    ``self_attention_norm``, ``cross_attention``, ``cross_attention_norm``, ``mlp``,
    ``mlp_norm``.

    >>> import jax, jax.numpy as jnp
    >>> block = TransformerDecoderBlock(2, 32, ffn="relu", norm_position="post", causal=False)
    >>> x, memory = jnp.zeros((2, 4, 8)), jnp.zeros((2, 6, 5))
    >>> params, _ = block.init(jax.random.key(0), (x, memory))
    >>> jax.tree.map(jnp.shape, params["cross_attention"])["w_k"]
    (5, 2, 4)
    >>> block(params, (x, memory)).shape
    (2, 4, 8)
    """

    _: KW_ONLY
    causal: bool = True

    def forward(self, scope: Scope, x: Any) -> Any:
        if not isinstance(x, tuple) or len(x) != 2:
            raise self.error(ShapeError, "expected the pair (x, memory) as input")
        x, memory = x
        memory = jnp.asarray(memory)
        self_attention = self._attention(causal=self.causal, decode=self.decode)
        x = self._sublayer(scope, "self_attention", self_attention, x)
        cross = dataclasses.replace(self._attention(causal=False, decode=self.decode), rope=None)
        cross_side = {
            name: value
            for name, value in (
                ("key_mask", scope.side_input("memory_key_mask")),
                ("mask", scope.side_input("memory_mask")),
            )
            if value is not None
        }
        x = self._sublayer(scope, "cross_attention", cross, x, memory, side=cross_side)
        return self._mlp(scope, x)

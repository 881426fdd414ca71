"""One table of bad inputs across every family: each raises a named error, never a wrong number.

Each row calls nn_jax wrongly (wrong rank, feature size, dtype, params or state, rng, layout,
mask, out-of-range values, overflowing cache, bad hyper-parameters, bad step/fit/summary
arguments, a corrupt checkpoint, bad CLI flags) and asserts the error's type, that it belongs
to the :class:`nn_jax.NNJaxError` hierarchy, and that its message holds the given fragments:
the layer's type and path where there is one, what was expected and what was given.

Layers are initialized once per module (``_init`` caches by layer), and the rows are eager calls
(no compilation), so the whole table runs in seconds.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import nn_jax as nj
from nn_jax import losses, metrics
from nn_jax.data import Graph, batch_graphs
from nn_jax.errors import (
    ArgumentError,
    ConfigError,
    FileFormatError,
    NNJaxError,
    ParamsError,
    RngError,
    ShapeError,
    ValueRangeError,
)
from nn_jax.models import MLP, TransformerLM
from tests.bad_calls import Bad, assert_named_error

KEY = jax.random.key(0)


@functools.cache
def _init(layer: nj.Layer, shape: tuple[int, ...], dtype: str = "float32") -> tuple[Any, Any]:
    return layer.init(KEY, jnp.zeros(shape, dtype))


def _apply(layer: nj.Layer, shape: tuple[int, ...], x: Any, dtype: str = "float32", **kw: Any):
    """Init ``layer`` on zeros of ``shape`` (cached), then apply it to ``x``."""
    params, state = _init(layer, shape, dtype)
    return layer.apply(params, state, x, **kw)


def _graph_batch(senders: list[int], receivers: list[int]):
    graph = Graph(np.ones((3, 2), np.float32), np.array(senders), np.array(receivers))
    return batch_graphs([graph], max_nodes=4, max_edges=4, max_graphs=2)


def _bad_edges():
    """A graph batch whose edge index points past the node count (as a hand-built batch can)."""
    batch = _graph_batch([0, 1], [1, 2])
    senders = np.array(batch.senders)
    senders[0] = 7
    return batch._replace(senders=senders)


MLP2 = MLP((4, 2))
SEQ = nj.Sequential(nj.Dense(4), nj.Conv(2, 3))
DENSE = nj.Dense(3)
CONV = nj.Conv(4, (3, 3))
CONV_NCHW = nj.Conv(4, (3, 3), data_format="channels_first")
MAXPOOL = nj.MaxPool(2)
BN = nj.BatchNorm()
LN = nj.LayerNorm()
GN = nj.GroupNorm(2)
EMB = nj.Embedding(10, 4)
LSTM = nj.RNN(nj.LSTMCell(5))
MHA = nj.MultiHeadAttention(2)
MHA_CACHE = nj.MultiHeadAttention(2, decode=True)
ENC = nj.TransformerEncoderBlock(2, 8)
GCN = nj.GCNConv(3)
POS = nj.LearnedPositionalEmbedding(4)
DROP = nj.Dropout(0.5)
LM = TransformerLM(11, d_model=8, num_heads=2, num_layers=1, mlp_features=16)


def _cache_step(tokens: int, calls: int):
    """Feed ``calls`` blocks of ``tokens`` steps into a 4-step decode cache."""
    params, state = _init(MHA_CACHE, (1, 4, 8))
    for _ in range(calls):
        _, state = MHA_CACHE.apply(params, state, jnp.ones((1, tokens, 8)))
    return state


def _train_step(loss_fn: Callable[..., Any], batch: Any):
    params, _ = _init(MLP2, (3, 5))
    opt = optax.sgd(0.1)
    step = nj.make_train_step(MLP2, loss_fn, opt)
    return step(params, opt.init(params), batch)


XY = (jnp.ones((3, 5)), jnp.ones((3, 2)))


def _state(layer: nj.Layer, step: int = 0) -> nj.TrainState:
    params, _ = _init(layer, (2, 3))
    return nj.TrainState(params, {}, optax.sgd(0.1).init(params), KEY, jnp.asarray(step))


def _checkpoint_dir(tmp: Path) -> Path:
    """A checkpoint folder holding step 1 of a Dense(3) on 3 features."""
    ckpt = nj.Checkpointer(tmp / "ckpt")
    ckpt.save(_state(DENSE, 1))
    ckpt.close()
    return tmp / "ckpt"


def _corrupt_checkpoint(tmp: Path):
    """Truncate every array file of a saved checkpoint, then restore it."""
    root = _checkpoint_dir(tmp)
    for f in (root / "1").rglob("*"):
        if f.is_file() and f.stat().st_size > 64 and not f.name.endswith(".json"):
            f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    return nj.Checkpointer(root).restore(_state(DENSE))


def _mismatched_checkpoint(tmp: Path):
    return nj.Checkpointer(_checkpoint_dir(tmp)).restore(_state(nj.Dense(5)))


def _cli(*argv: str):
    from nn_jax.cli import main

    return main(list(argv))


ROWS: list[Bad] = [
    # ---- dense
    Bad(
        "dense/feature-size",
        lambda: _apply(DENSE, (2, 4), jnp.ones((2, 5))),
        ShapeError,
        ("Dense at <root>", "size 5", "expected 4"),
    ),
    Bad("dense/rank-0", lambda: _apply(DENSE, (2, 4), jnp.ones(())), ShapeError, ("Dense", "rank")),
    Bad(
        "dense/int-input",
        lambda: _apply(DENSE, (2, 4), jnp.ones((2, 4), jnp.int32)),
        ShapeError,
        ("Dense", "int32"),
    ),
    Bad(
        "dense/complex-input",
        lambda: _apply(DENSE, (2, 4), jnp.ones((2, 4), jnp.complex64)),
        ShapeError,
        ("Dense", "complex64"),
    ),
    Bad(
        "dense/missing-param",
        lambda: DENSE({"w": jnp.ones((4, 3))}, jnp.ones((2, 4))),
        ParamsError,
        ("Dense at <root>", "'b'"),
    ),
    Bad(
        "dense/param-shape",
        lambda: DENSE({"w": jnp.ones((4, 2)), "b": jnp.ones(3)}, jnp.ones((2, 4))),
        ShapeError,
        ("Dense", "(4, 2)"),
    ),
    Bad(
        "dense/extra-param",
        lambda: DENSE({**_init(DENSE, (2, 4))[0], "v": jnp.ones(1)}, jnp.ones((2, 4))),
        ParamsError,
        ("Dense", "'v'"),
    ),
    Bad(
        "dense/params-not-a-dict",
        lambda: DENSE([jnp.ones((4, 3))], jnp.ones((2, 4))),
        ParamsError,
        ("Dense", "list"),
    ),
    Bad("dense/zero-features", lambda: nj.Dense(0), ConfigError, ("Dense", "features", "0")),
    Bad("dense/bool-features", lambda: nj.Dense(True), ConfigError, ("Dense", "features", "True")),
    Bad(
        "dense/uncalled-initializer",
        lambda: nj.Dense(3, w_init=jax.nn.initializers.lecun_normal),
        ConfigError,
        ("Dense", "w_init", "lecun_normal()"),
    ),
    Bad("dense/string-features", lambda: nj.Dense("3"), ConfigError, ("Dense", "features")),
    # ---- composition: the path names the failing child
    Bad(
        "mlp/nested-feature-size",
        lambda: _apply(MLP2, (2, 3), jnp.ones((2, 6))),
        ShapeError,
        ("Dense at 'dense_0'", "size 6", "expected 3"),
    ),
    Bad(
        "mlp/missing-child",
        lambda: MLP2({"dense_0": _init(MLP2, (2, 3))[0]["dense_0"]}, jnp.ones((2, 3))),
        ParamsError,
        ("'dense_1'",),
    ),
    Bad(
        "mlp/extra-child",
        lambda: MLP2({**_init(MLP2, (2, 3))[0], "junk": {}}, jnp.ones((2, 3))),
        ParamsError,
        ("MLP", "'junk'"),
    ),
    Bad(
        "sequential/layer-class",
        lambda: nj.Sequential(nj.Dense),
        ConfigError,
        ("Dense", "instance"),
    ),
    Bad(
        "sequential/nested-rank",
        lambda: _apply(SEQ, (2, 5, 5, 3), jnp.ones((2, 3))),
        ShapeError,
        ("Conv at '1'", "rank"),
    ),
    Bad(
        "apply/forgot-state",
        lambda: DENSE.apply(_init(DENSE, (2, 4))[0], jnp.ones((2, 4))),
        ArgumentError,
        ("apply(params, state, x", "Dense"),
    ),
    Bad(
        "apply/train-not-bool",
        lambda: _apply(DENSE, (2, 4), jnp.ones((2, 4)), train="yes"),
        ConfigError,
        ("Dense", "train", "'yes'"),
    ),
    Bad(
        "apply/side-not-mapping",
        lambda: _apply(DENSE, (2, 4), jnp.ones((2, 4)), side=[1]),
        ConfigError,
        ("Dense", "mapping", "list"),
    ),
    Bad(
        "apply/unread-side-input",
        lambda: _apply(DENSE, (2, 4), jnp.ones((2, 4)), side={"lenghts": jnp.ones(2, int)}),
        ConfigError,
        ("'lenghts'", "no layer"),
    ),
    # ---- rng
    Bad(
        "rng/missing",
        lambda: DROP({}, jnp.ones(3), train=True),
        RngError,
        ("Dropout at <root>", "rng=None", "jax.random.key"),
    ),
    Bad(
        "rng/int",
        lambda: DROP({}, jnp.ones(3), train=True, rng=0),
        RngError,
        ("Dropout", "jax.random.key", "int"),
    ),
    Bad(
        "rng/batch-of-keys",
        lambda: DROP({}, jnp.ones(3), train=True, rng=jax.random.split(KEY, 2)),
        RngError,
        ("Dropout", "(2,)"),
    ),
    Bad(
        "init/int-key",
        lambda: DENSE.init(0, jnp.ones((2, 4))),
        RngError,
        ("Dense", "jax.random.key", "int"),
    ),
    Bad(
        "init/float-input-shape-tuple",
        lambda: DENSE.init(KEY, (2, 4)),
        ArgumentError,
        ("Dense", "tuple", "jnp.zeros"),
    ),
    Bad("dropout/rate-above-one", lambda: nj.Dropout(1.5), ConfigError, ("Dropout", "1.5")),
    # ---- conv and pooling
    Bad(
        "conv/nchw-to-nhwc-layer",
        lambda: _apply(CONV, (1, 8, 8, 3), jnp.ones((1, 3, 8, 8))),
        ShapeError,
        ("Conv at <root>", "channels", "expected 3"),
    ),
    Bad(
        "conv/nhwc-to-nchw-layer",
        lambda: _apply(CONV_NCHW, (1, 3, 8, 8), jnp.ones((1, 8, 8, 3))),
        ShapeError,
        ("Conv", "channels", "expected 3"),
    ),
    Bad(
        "conv/rank-2",
        lambda: _apply(CONV, (1, 8, 8, 3), jnp.ones((8, 3))),
        ShapeError,
        ("Conv", "rank"),
    ),
    Bad(
        "conv/kernel-larger-than-input",
        lambda: _apply(nj.Conv(2, 5, padding="VALID"), (1, 8, 8, 3), jnp.ones((1, 3, 3, 3))),
        ShapeError,
        ("Conv", "5"),
    ),
    Bad(
        "conv/negative-stride", lambda: nj.Conv(2, 3, strides=-1), ConfigError, ("Conv", "strides")
    ),
    Bad(
        "conv/bad-padding",
        lambda: nj.Conv(2, 3, padding="SAMEISH"),
        ConfigError,
        ("Conv", "SAMEISH"),
    ),
    Bad(
        "conv/bad-data-format",
        lambda: nj.Conv(2, 3, data_format="NCHW"),
        ConfigError,
        ("Conv", "NCHW", "channels_first"),
    ),
    Bad(
        "conv/groups-do-not-divide",
        lambda: _apply(nj.Conv(4, 3, feature_group_count=2), (1, 5, 5, 2), jnp.ones((1, 5, 5, 3))),
        ShapeError,
        ("Conv", "3"),
    ),
    Bad(
        "conv-transpose/rank",
        lambda: _apply(nj.ConvTranspose(2, 3), (1, 4, 4, 2), jnp.ones((4, 2))),
        ShapeError,
        ("ConvTranspose", "rank"),
    ),
    Bad(
        "maxpool/window-larger-than-input",
        lambda: MAXPOOL({}, jnp.ones((1, 1, 1, 3))),
        ShapeError,
        ("MaxPool", "window"),
    ),
    Bad("maxpool/zero-window", lambda: nj.MaxPool(0), ConfigError, ("MaxPool", "window")),
    Bad("upsample/zero-scale", lambda: nj.Upsample(0), ConfigError, ("Upsample", "scale")),
    # ---- normalization
    Bad(
        "batchnorm/no-state",
        lambda: BN(_init(BN, (4, 3))[0], jnp.ones((4, 3)), train=True),
        ParamsError,
        ("BatchNorm at <root>", "state", "init"),
    ),
    Bad(
        "batchnorm/state-shape",
        lambda: BN.apply(
            _init(BN, (4, 3))[0],
            {"mean": jnp.zeros(5), "var": jnp.ones(5)},
            jnp.ones((4, 3)),
            train=True,
        ),
        ShapeError,
        ("BatchNorm", "(5,)", "(3,)"),
    ),
    Bad(
        "batchnorm/batch-of-one-in-training",
        lambda: _apply(BN, (4, 3), jnp.ones((1, 3)), train=True),
        ShapeError,
        ("BatchNorm", "1"),
    ),
    Bad(
        "batchnorm/feature-size",
        lambda: _apply(BN, (4, 3), jnp.ones((4, 5))),
        ShapeError,
        ("BatchNorm", "5", "3"),
    ),
    Bad(
        "layernorm/feature-size",
        lambda: _apply(LN, (2, 4), jnp.ones((2, 6))),
        ShapeError,
        ("LayerNorm", "6"),
    ),
    Bad(
        "groupnorm/groups-do-not-divide",
        lambda: GN.init(KEY, jnp.ones((2, 4, 3))),
        ShapeError,
        ("GroupNorm", "2", "3"),
    ),
    Bad(
        "layernorm/negative-epsilon",
        lambda: nj.LayerNorm(epsilon=-1.0),
        ConfigError,
        ("LayerNorm", "epsilon"),
    ),
    # ---- embedding and positions
    Bad(
        "embedding/float-ids",
        lambda: _apply(EMB, (2,), jnp.ones(2), "int32"),
        ShapeError,
        ("Embedding at <root>", "integer", "float32"),
    ),
    Bad(
        "embedding/id-past-vocabulary",
        lambda: _apply(EMB, (2,), jnp.array([1, 10]), "int32"),
        ValueRangeError,
        ("Embedding at <root>", "[0, 10)", "10]"),
    ),
    Bad(
        "embedding/negative-id",
        lambda: _apply(EMB, (2,), jnp.array([-1, 3]), "int32"),
        ValueRangeError,
        ("Embedding", "[-1, 3]"),
    ),
    Bad(
        "embedding/zero-vocabulary",
        lambda: nj.Embedding(0, 4),
        ConfigError,
        ("Embedding", "num_embeddings"),
    ),
    Bad(
        "positional/sequence-past-table",
        lambda: _apply(POS, (1, 4, 2), jnp.ones((1, 6, 2))),
        ShapeError,
        ("LearnedPositionalEmbedding", "6", "4"),
    ),
    Bad(
        "lm/token-past-vocabulary",
        lambda: _apply(LM, (1, 3), jnp.array([[1, 2, 11]]), "int32"),
        ValueRangeError,
        ("Embedding at", "[0, 11)"),
    ),
    # ---- recurrent
    Bad(
        "rnn/rank",
        lambda: _apply(LSTM, (2, 3, 4), jnp.ones(4)),
        ShapeError,
        ("RNN at <root>", "rank"),
    ),
    Bad(
        "rnn/feature-size",
        lambda: _apply(LSTM, (2, 3, 4), jnp.ones((2, 3, 6))),
        ShapeError,
        ("LSTMCell", "6", "4"),
    ),
    Bad(
        "rnn/lengths-past-sequence",
        lambda: _apply(LSTM, (2, 3, 4), jnp.ones((2, 3, 4)), side={"lengths": jnp.array([2, 5])}),
        ValueRangeError,
        ("RNN", "lengths", "5"),
    ),
    Bad(
        "rnn/negative-length",
        lambda: _apply(LSTM, (2, 3, 4), jnp.ones((2, 3, 4)), side={"lengths": jnp.array([-1, 2])}),
        ValueRangeError,
        ("RNN", "lengths", "-1"),
    ),
    Bad(
        "rnn/lengths-shape",
        lambda: _apply(
            LSTM, (2, 3, 4), jnp.ones((2, 3, 4)), side={"lengths": jnp.array([1, 2, 3])}
        ),
        ShapeError,
        ("RNN", "lengths", "(2,)", "(3,)"),
    ),
    Bad(
        "rnn/float-lengths",
        lambda: _apply(
            LSTM, (2, 3, 4), jnp.ones((2, 3, 4)), side={"lengths": jnp.array([1.0, 2.0])}
        ),
        ShapeError,
        ("RNN", "lengths", "float32"),
    ),
    Bad(
        "rnn/mask-dtype",
        lambda: _apply(LSTM, (2, 3, 4), jnp.ones((2, 3, 4)), side={"mask": jnp.ones((2, 3))}),
        ShapeError,
        ("RNN", "mask", "booleans"),
    ),
    Bad("lstm/zero-features", lambda: nj.LSTMCell(0), ConfigError, ("LSTMCell", "hidden", "0")),
    Bad("rnn/cell-not-a-cell", lambda: nj.RNN(nj.Dense(3)), ConfigError, ("RNN", "cell")),
    # ---- attention and transformers
    Bad(
        "attention/feature-size",
        lambda: _apply(MHA, (1, 3, 8), jnp.ones((1, 3, 6))),
        ShapeError,
        ("MultiHeadAttention at <root>", "6"),
    ),
    Bad(
        "attention/rank",
        lambda: _apply(MHA, (1, 3, 8), jnp.ones(8)),
        ShapeError,
        ("MultiHeadAttention", "rank"),
    ),
    Bad(
        "attention/float-additive-mask",
        lambda: _apply(MHA, (1, 3, 8), jnp.ones((1, 3, 8)), side={"mask": jnp.zeros((3, 3))}),
        ShapeError,
        ("MultiHeadAttention", "mask", "float32", "mask == 0"),
    ),
    Bad(
        "attention/mask-shape",
        lambda: _apply(MHA, (1, 3, 8), jnp.ones((1, 3, 8)), side={"mask": jnp.ones((4, 4), bool)}),
        ShapeError,
        ("(4, 4)",),
    ),
    Bad(
        "attention/key-mask-shape",
        lambda: _apply(
            MHA, (1, 3, 8), jnp.ones((1, 3, 8)), side={"key_mask": jnp.ones((1, 5), bool)}
        ),
        ShapeError,
        ("MultiHeadAttention", "key_mask", "(1, 3)", "(1, 5)"),
    ),
    Bad(
        "attention/lengths-past-sequence",
        lambda: _apply(MHA, (1, 3, 8), jnp.ones((1, 3, 8)), side={"lengths": jnp.array([4])}),
        ValueRangeError,
        ("MultiHeadAttention", "lengths"),
    ),
    Bad(
        "attention/heads-do-not-divide",
        lambda: nj.MultiHeadAttention(4, num_kv_heads=3),
        ConfigError,
        ("MultiHeadAttention", "num_kv_heads", "3"),
    ),
    Bad(
        "attention/features-not-divisible-by-heads",
        lambda: _apply(nj.MultiHeadAttention(3), (1, 2, 8), jnp.ones((1, 2, 8))),
        ShapeError,
        ("MultiHeadAttention", "3", "8"),
    ),
    Bad(
        "attention/cache-block-longer-than-cache",
        lambda: _cache_step(5, 1),
        ShapeError,
        ("MultiHeadAttention", "cache holds 4"),
    ),
    Bad(
        "attention/cache-overflow",
        lambda: _cache_step(3, 2),
        ValueRangeError,
        ("MultiHeadAttention", "cache holds 4", "index 3"),
    ),
    Bad(
        "transformer/feature-size",
        lambda: _apply(ENC, (1, 3, 8), jnp.ones((1, 3, 4))),
        ShapeError,
        ("LayerNorm at 'attention_norm'", "(4,)"),
    ),
    Bad(
        "transformer/bad-norm-name",
        lambda: nj.TransformerEncoderBlock(2, 8, norm="batch"),
        ConfigError,
        ("TransformerEncoderBlock", "'batch'", "layer"),
    ),
    Bad(
        "transformer/bad-ffn-name",
        lambda: nj.TransformerEncoderBlock(2, 8, ffn="relu6"),
        ConfigError,
        ("TransformerEncoderBlock", "'relu6'"),
    ),
    Bad(
        "attention/bad-dropout",
        lambda: nj.MultiHeadAttention(2, dropout_rate=-0.1),
        ConfigError,
        ("MultiHeadAttention", "dropout_rate", "-0.1"),
    ),
    # ---- graphs and segments
    Bad(
        "gcn/edge-index-past-nodes",
        lambda: GCN.apply(*GCN.init(KEY, _graph_batch([0], [1])), _bad_edges()),
        ValueRangeError,
        ("GCNConv at <root>", "[0, 4)", "7"),
    ),
    Bad(
        "gcn/not-a-graph",
        lambda: GCN.init(KEY, jnp.ones((3, 2))),
        ShapeError,
        ("GCNConv", "GraphBatch"),
    ),
    Bad(
        "segment-sum/id-past-segments",
        lambda: nj.segment_sum(jnp.ones(3), jnp.array([0, 1, 5]), 3),
        ValueRangeError,
        ("segment_sum", "[0, 3)", "5"),
    ),
    Bad(
        "batch-graphs/too-many-nodes",
        lambda: batch_graphs([Graph(np.ones((5, 2)), np.array([0]), np.array([1]))], max_nodes=3),
        ShapeError,
        ("5", "3"),
    ),
    # ---- losses and metrics
    Bad(
        "cross-entropy/label-past-classes",
        lambda: losses.softmax_cross_entropy_with_integer_labels(
            jnp.zeros((2, 3)), jnp.array([0, 3])
        ),
        ValueRangeError,
        ("softmax_cross_entropy_with_integer_labels", "[0, 3)", "3]"),
    ),
    Bad(
        "cross-entropy/float-labels",
        lambda: losses.softmax_cross_entropy_with_integer_labels(
            jnp.zeros((2, 3)), jnp.array([0.0, 1.0])
        ),
        ShapeError,
        ("integer", "float32"),
    ),
    Bad(
        "cross-entropy/label-shape",
        lambda: losses.softmax_cross_entropy_with_integer_labels(
            jnp.zeros((2, 3)), jnp.array([0, 1, 2])
        ),
        ShapeError,
        ("(2,)", "(3,)"),
    ),
    Bad(
        "mse/shape-mismatch",
        lambda: losses.mse(jnp.zeros((2, 3)), jnp.zeros((3, 2))),
        ShapeError,
        ("mse", "(2, 3)", "(3, 2)"),
    ),
    Bad(
        "mse/bad-reduction",
        lambda: losses.mse(jnp.zeros(2), jnp.zeros(2), reduction="avg"),
        ConfigError,
        ("mse", "'avg'", "'mean'"),
    ),
    Bad(
        "bce/probabilities-outside-unit",
        lambda: losses.binary_cross_entropy(jnp.array([0.5, 1.5]), jnp.array([0.0, 1.0])),
        ValueRangeError,
        ("binary_cross_entropy", "[0, 1]", "1.5"),
    ),
    Bad(
        "bce-logits/targets-outside-unit",
        lambda: losses.binary_cross_entropy_with_logits(
            jnp.array([0.5, 1.5]), jnp.array([0.0, 2.0])
        ),
        ValueRangeError,
        ("binary_cross_entropy_with_logits", "[0, 1]", "2"),
    ),
    Bad(
        "accuracy/label-past-classes",
        lambda: metrics.accuracy(jnp.zeros((2, 3)), jnp.array([0, 4])),
        ValueRangeError,
        ("accuracy", "[0, 3)", "4"),
    ),
    Bad(
        "top-k/k-past-classes",
        lambda: metrics.top_k_accuracy(jnp.zeros((2, 3)), jnp.array([0, 1]), k=5),
        ConfigError,
        ("top_k_accuracy", "5", "3"),
    ),
    # ---- train steps, fit, summary
    Bad(
        "train-step/batch-not-a-pair",
        lambda: _train_step(losses.mse, jnp.ones((3, 5))),
        ArgumentError,
        ("batch", "(inputs, targets)"),
    ),
    Bad(
        "train-step/non-scalar-loss",
        lambda: _train_step(functools.partial(losses.mse, reduction="none"), XY),
        ShapeError,
        ("loss", "scalar", "(3, 2)"),
    ),
    Bad(
        "train-step/loss-wrong-signature",
        lambda: _train_step(lambda y: jnp.sum(y), XY),
        ArgumentError,
        ("loss", "(predictions, targets)"),
    ),
    Bad(
        "train-step/layer-class",
        lambda: nj.make_train_step(nj.Dense, losses.mse, optax.sgd(0.1)),
        ArgumentError,
        ("Dense", "instance"),
    ),
    Bad(
        "fit/zero-batch-size",
        lambda: nj.fit(
            MLP2, losses.mse, optax.sgd(0.1), XY, key=KEY, steps=1, batch_size=0, progress=False
        ),
        ConfigError,
        ("batch_size", "0"),
    ),
    Bad(
        "fit/negative-epochs",
        lambda: nj.fit(MLP2, losses.mse, optax.sgd(0.1), XY, key=KEY, epochs=-1, progress=False),
        ConfigError,
        ("epochs", "-1"),
    ),
    Bad(
        "fit/epochs-and-steps",
        lambda: nj.fit(
            MLP2, losses.mse, optax.sgd(0.1), XY, key=KEY, epochs=1, steps=2, progress=False
        ),
        ConfigError,
        ("epochs", "steps"),
    ),
    Bad(
        "fit/inputs-and-targets-disagree",
        lambda: nj.fit(
            MLP2,
            losses.mse,
            optax.sgd(0.1),
            (jnp.ones((3, 5)), jnp.ones((4, 2))),
            key=KEY,
            steps=1,
            batch_size=2,
            progress=False,
        ),
        ShapeError,
        ("3", "4"),
    ),
    Bad(
        "summary/shape-tuple",
        lambda: nj.summary(MLP2, (2, 3)),
        ArgumentError,
        ("summary", "tuple", "jnp.zeros"),
    ),
    Bad(
        "summary/layer-class",
        lambda: nj.summary(nj.Dense, jnp.ones((2, 3))),
        ArgumentError,
        ("Dense", "instance"),
    ),
    Bad(
        "activation/unknown-name",
        lambda: nj.get_activation("relu7"),
        ConfigError,
        ("'relu7'", "relu"),
    ),
    # ---- checked mode: the same value checks inside jit
    Bad(
        "checked/embedding-under-jit",
        lambda: nj.checked(lambda p, i: EMB(p, i))(
            _init(EMB, (2,), "int32")[0], jnp.array([3, 12])
        ),
        ValueRangeError,
        ("Embedding at <root>", "[0, 10)", "12]"),
    ),
    Bad(
        "checked/cache-overflow-under-jit",
        lambda: nj.checked(lambda p, s: MHA_CACHE.apply(p, s, jnp.ones((1, 3, 8)))[1])(
            _init(MHA_CACHE, (1, 4, 8))[0], _cache_step(3, 1)
        ),
        ValueRangeError,
        ("MultiHeadAttention", "cache"),
    ),
]


FILE_ROWS: list[tuple[str, Callable[[Path], Any], type[Exception], tuple[str, ...]]] = [
    ("checkpoint/truncated", _corrupt_checkpoint, FileFormatError, ("ckpt", "1")),
    ("checkpoint/other-model", _mismatched_checkpoint, ParamsError, ("(3, 5)", "(3, 3)")),
    (
        "checkpoint/missing-dir",
        lambda tmp: nj.Checkpointer(tmp / "none").restore(_state(DENSE)),
        FileFormatError,
        ("none", "no checkpoint"),
    ),
    (
        "checkpoint/step-not-saved",
        lambda tmp: nj.Checkpointer(_checkpoint_dir(tmp)).restore(_state(DENSE), step=7),
        FileFormatError,
        ("7", "1"),
    ),
    ("config/not-json", lambda tmp: nj.from_json("{'layer': Dense}"), FileFormatError, ("JSON",)),
    (
        "config/unknown-layer",
        lambda tmp: nj.from_json(json.dumps({"type": "Densse", "fields": {}})),
        ConfigError,
        ("Densse",),
    ),
]


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.id)
def test_bad_input_raises_a_named_error(row: Bad):
    assert_named_error(row)


@pytest.mark.parametrize("row", FILE_ROWS, ids=lambda r: r[0])
def test_bad_file_raises_a_named_error(row, tmp_path: Path):
    _, call, error, says = row
    with pytest.raises(error) as info:
        call(tmp_path)
    assert isinstance(info.value, NNJaxError)
    message = str(info.value)
    assert all(s in message for s in says), message


CLI_ROWS = [
    ("train", "--steps", "-3"),
    ("train", "--batch-size", "0"),
    ("train", "--dataset", "imagenet"),
    ("eval", "/nonexistent/run"),
    ("summary", "NoSuchModel"),
    ("reproduce", "cifar10"),
    ("train", "--lr", "fast"),
    ("bench", "--name", "../outside"),
    ("bench", "--seed", "-1"),
]


@pytest.mark.parametrize("argv", CLI_ROWS, ids=" ".join)
def test_bad_cli_flags_exit_with_a_message_and_no_traceback(argv, capsys):
    with pytest.raises(SystemExit) as info:
        _cli(*argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip(), err


def test_the_table_covers_at_least_80_cases():
    assert len(ROWS) + len(FILE_ROWS) + len(CLI_ROWS) >= 80

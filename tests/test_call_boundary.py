"""The call boundary: every wrong call raises a named error that says how to call correctly.

One table of wrong calls: hyper-parameters (checked by annotation when a layer is built), the
arguments of ``init``/``apply``/``layer(...)`` (params, state, key, rng, input), the step
builders, ``fit``, ``summary`` and the data helpers. Each row asserts the error's type, that it
is an :class:`nn_jax.NNJaxError`, and that its message holds the given fragments: the layer
and its path where there is one, what was expected and what was given. Then the accepted forms:
NumPy integers as sizes, legacy ``jax.random.PRNGKey`` keys, initializers that cannot draw a
2x2 probe, a per-device batch of one under a named axis.

Every row fails before anything is compiled (eager calls, or errors raised while tracing), and
the few layers that are initialized are initialized once, so the table runs in seconds.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import nn_jax as nj
from nn_jax import data, losses, metrics
from nn_jax.errors import (
    ArgumentError,
    ConfigError,
    ParamsError,
    RngError,
    ShapeError,
)
from nn_jax.inspect import flatten_params, unflatten_params
from nn_jax.models import MLP, ResNet
from tests.bad_calls import Bad, assert_named_error
from tests.cases import all_cases

KEY = jax.random.key(0)
X = jnp.ones((2, 4))
XY = (jnp.ones((3, 5)), jnp.ones((3, 2)))
DENSE = nj.Dense(3)
MLP2 = MLP((4, 2))
BN = nj.BatchNorm()
DROP = nj.Dropout(0.5)


@functools.cache
def _init(layer: nj.Layer, shape: tuple[int, ...] = (2, 4)) -> tuple[Any, Any]:
    return layer.init(KEY, jnp.zeros(shape))


def _user_factory(scale: float = 1.0) -> Callable[..., jax.Array]:
    """A factory of initializers, as users write them (to be called: ``_user_factory()``)."""
    return lambda key, shape, dtype=jnp.float32: scale * jax.random.normal(key, shape, dtype)


def _train_step(loss_fn: Any, batch: Any, optimizer: Any = None) -> Any:
    params, _ = _init(MLP2, (3, 5))
    opt = optimizer or optax.sgd(0.1)
    step = nj.make_train_step(MLP2, loss_fn, opt)
    return step(params, opt.init(params), batch)


def _fit(**kwargs: Any) -> Any:
    arguments: dict[str, Any] = dict(data=XY, key=KEY, steps=1, batch_size=2, progress=False)
    arguments.update(kwargs)
    return nj.fit(MLP2, losses.mse, optax.sgd(0.1), arguments.pop("data"), **arguments)


def _objective_without_aux(params: Any, state: Any, batch: Any, *, rng: Any, train: bool) -> Any:
    return jnp.zeros(())


def _vector_objective(params: Any, state: Any, batch: Any, *, rng: Any, train: bool) -> Any:
    return jnp.zeros(3), (state, {})


ROWS: list[Bad] = [
    # ---- hyper-parameters, checked by annotation when the layer is built
    Bad(
        "dense/bool-features",
        lambda: nj.Dense(True),
        ConfigError,
        ("Dense", "features", "positive int", "True (a bool)"),
    ),
    Bad(
        "dense/float-features",
        lambda: nj.Dense(4.0),
        ConfigError,
        ("Dense: features", "positive int", "4.0"),
    ),
    Bad("dense/string-features", lambda: nj.Dense("3"), ConfigError, ("Dense: features", "'3'")),
    Bad(
        "dense/zero-features",
        lambda: nj.Dense(np.int64(0)),
        ConfigError,
        ("Dense: features", "given 0"),
    ),
    Bad(
        "dense/uncalled-jax-factory",
        lambda: nj.Dense(3, w_init=jax.nn.initializers.lecun_normal),
        ConfigError,
        ("Dense: w_init", "(key, shape, dtype)", "w_init=jax.nn.initializers.lecun_normal()"),
    ),
    Bad(
        "dense/uncalled-nn-jax-factory",
        lambda: nj.Dense(3, b_init=nj.initializers.normal),
        ConfigError,
        ("Dense: b_init", "b_init=nn_jax.initializers.normal()"),
    ),
    Bad(
        "dense/uncalled-user-factory",
        lambda: nj.Dense(3, w_init=_user_factory),
        ConfigError,
        ("Dense: w_init", "_user_factory", "(scale: 'float' = 1.0)", "call it"),
    ),
    Bad(
        "dense/initializer-class",
        lambda: nj.Dense(3, b_init=nj.initializers.UniformFanIn),
        ConfigError,
        ("Dense: b_init", "the class UniformFanIn", "construct it first"),
    ),
    Bad(
        "dense/number-as-initializer",
        lambda: nj.Dense(3, w_init=0.1),
        ConfigError,
        ("w_init", "initializer", "0.1"),
    ),
    Bad(
        "dense/misspelt-dtype",
        lambda: nj.Dense(3, param_dtype="flaot32"),
        ConfigError,
        ("Dense: param_dtype", "'flaot32'"),
    ),
    Bad(
        "dense/complex-dtype",
        lambda: nj.Dense(3, dtype=jnp.complex64),
        ConfigError,
        ("Dense: dtype", "real dtype", "complex64"),
    ),
    Bad(
        "dense/int-flag",
        lambda: nj.Dense(3, use_bias=1),
        ConfigError,
        ("Dense: use_bias", "True or False", "given 1"),
    ),
    Bad(
        "conv/zero-groups",
        lambda: nj.Conv(4, 3, feature_group_count=0),
        ConfigError,
        ("Conv: feature_group_count", "positive int", "0"),
    ),
    Bad(
        "conv/bool-kernel",
        lambda: nj.Conv(4, True),
        ConfigError,
        ("Conv: kernel_size", "an int or a tuple of ints", "True"),
    ),
    Bad(
        "embedding/negative-vocabulary",
        lambda: nj.Embedding(-1, 4),
        ConfigError,
        ("Embedding: num_embeddings", "positive int", "-1"),
    ),
    Bad(
        "batchnorm/momentum",
        lambda: nj.BatchNorm(momentum=1.5),
        ConfigError,
        ("BatchNorm: momentum", "[0, 1]", "1.5"),
    ),
    Bad(
        "layernorm/nan-epsilon",
        lambda: nj.LayerNorm(epsilon=float("nan")),
        ConfigError,
        ("LayerNorm: epsilon", ">= 0", "nan"),
    ),
    Bad(
        "groupnorm/float-groups",
        lambda: nj.GroupNorm(np.float32(2)),
        ConfigError,
        ("GroupNorm: num_groups", "positive int", "2.0"),
    ),
    Bad(
        "dropout/string-rate",
        lambda: nj.Dropout("0.5"),
        ConfigError,
        ("Dropout: rate (the drop probability)", "[0, 1]", "'0.5'"),
    ),
    Bad(
        "dropout/float-dims",
        lambda: nj.Dropout(0.1, broadcast_dims=(1.5,)),
        ConfigError,
        ("Dropout: broadcast_dims", "tuple of ints", "1.5"),
    ),
    Bad(
        "reshape/two-wildcards",
        lambda: nj.Reshape((2, -1, -1)),
        ConfigError,
        ("Reshape: shape", "at most one -1", "(2, -1, -1)"),
    ),
    Bad(
        "flatten/negative-batch-dims",
        lambda: nj.Flatten(-1),
        ConfigError,
        ("Flatten: batch_dims", ">= 0", "-1"),
    ),
    Bad(
        "mlp/unknown-activation",
        lambda: MLP((4, 2), activation="relu7"),
        ConfigError,
        ("MLP: activation", "'relu7'", "relu, relu6, selu"),
    ),
    Bad(
        "mlp/layer-as-activation",
        lambda: MLP((4,), final_activation=nj.Dense(2)),
        ConfigError,
        ("MLP: final_activation", "Dense(features=2)", "Sequential"),
    ),
    Bad(
        "mlp/empty-widths",
        lambda: MLP(()),
        ConfigError,
        ("MLP: widths", "non-empty tuple of positive ints", "()"),
    ),
    Bad(
        "mlp/zero-width",
        lambda: MLP([4, 0]),
        ConfigError,
        ("MLP: widths", "positive ints", "[4, 0]"),
    ),
    Bad(
        "feedforward/unknown-activation",
        lambda: nj.FeedForward(8, activation="gelu2"),
        ConfigError,
        ("FeedForward: activation", "'gelu2'", "gelu"),
    ),
    Bad(
        "encoder-block/zero-heads",
        lambda: nj.TransformerEncoderBlock(0, 8),
        ConfigError,
        ("TransformerEncoderBlock: num_heads", "positive int", "0"),
    ),
    Bad(
        "resnet/stage-sizes",
        lambda: ResNet(10, stage_sizes=(2, -1)),
        ConfigError,
        ("ResNet: stage_sizes", "non-empty tuple of positive ints", "(2, -1)"),
    ),
    Bad(
        "residual/layer-class",
        lambda: nj.Residual(nj.Dense),
        ConfigError,
        ("Residual: body", "the class Dense", "construct it first"),
    ),
    Bad(
        "sequential/layer-class",
        lambda: nj.Sequential(nj.Dense(2), nj.Dense),
        ConfigError,
        ("Sequential: child '1'", "class Dense", "instance"),
    ),
    Bad(
        "sequential/number",
        lambda: nj.Sequential(3),
        ConfigError,
        ("Sequential: child '0'", "layer instance or a function", "given 3"),
    ),
    Bad("lambda/not-callable", lambda: nj.Lambda(3), ConfigError, ("Lambda: fn", "function", "3")),
    Bad(
        "get-activation/unknown",
        lambda: nj.get_activation("relu7"),
        ConfigError,
        ("'relu7'", "relu", "tanh"),
    ),
    Bad(
        "get-activation/class",
        lambda: nj.get_activation(nj.Dense),
        ConfigError,
        ("get_activation", "class Dense", "jax.nn.relu"),
    ),
    # ---- init: the key and the example input
    Bad(
        "init/int-key",
        lambda: DENSE.init(0, X),
        RngError,
        ("Dense at <root>", "the int 0", "jax.random.key(0)"),
    ),
    Bad("init/no-key", lambda: DENSE.init(None, X), RngError, ("Dense at <root>", "key", "None")),
    Bad(
        "init/batch-of-keys",
        lambda: MLP2.init(jax.random.split(KEY, 2), X),
        RngError,
        ("MLP at <root>", "batch of keys", "(2,)"),
    ),
    Bad(
        "init/raw-key-of-wrong-shape",
        lambda: DENSE.init(jnp.zeros(3, jnp.uint32), X),
        RngError,
        ("Dense", "uint32", "(3,)"),
    ),
    Bad(
        "init/shape-tuple",
        lambda: DENSE.init(KEY, (2, 4)),
        ArgumentError,
        ("Dense at <root>", "tuple (2, 4)", "jnp.zeros((2, 4))"),
    ),
    Bad(
        "init/shape-tuple-of-block",
        lambda: MLP2.init(KEY, [2, 4]),
        ArgumentError,
        ("MLP at <root>", "looks like a shape", "ShapeDtypeStruct"),
    ),
    Bad(
        "init/string-input",
        lambda: DENSE.init(KEY, "x"),
        ArgumentError,
        ("Dense at <root>", "array", "'x'"),
    ),
    # ---- apply and layer(params, x): params, state, rng, input
    Bad(
        "apply/forgot-state",
        lambda: DENSE.apply(_init(DENSE)[0], X),
        ArgumentError,
        (
            "Dense at <root>",
            "apply(params, state, x)",
            "float32 array of shape (2, 4)",
            "model(params, x)",
        ),
    ),
    Bad(
        "apply/forgot-state-of-block",
        lambda: MLP2.apply(_init(MLP2)[0], X),
        ArgumentError,
        ("MLP at <root>", "apply(params, state, x)"),
    ),
    Bad(
        "call/passed-state",
        lambda: DENSE(*_init(DENSE), X),
        ArgumentError,
        ("Dense at <root>", "given 3", "apply(params, state, x)"),
    ),
    Bad(
        "call/forgot-params",
        lambda: DENSE(X),
        ArgumentError,
        ("Dense at <root>", "given 1", "layer(params, x)"),
    ),
    Bad(
        "apply/init-pair-as-params",
        lambda: DENSE(_init(DENSE), X),
        ParamsError,
        ("Dense at <root>", "params must be a dict", "tuple", "unpack"),
    ),
    Bad(
        "apply/state-not-a-dict",
        lambda: DENSE.apply(_init(DENSE)[0], [1], X),
        ParamsError,
        ("Dense at <root>", "state must be a dict", "list"),
    ),
    Bad(
        "apply/array-as-params",
        lambda: MLP2(jnp.ones(3), X),
        ParamsError,
        ("MLP at <root>", "params must be a dict", "float32 array"),
    ),
    Bad(
        "apply/extra-param",
        lambda: DENSE({**_init(DENSE)[0], "v": jnp.ones(1)}, X),
        ParamsError,
        ("Dense at <root>", "['v']", "reads ['b', 'w']"),
    ),
    Bad(
        "apply/extra-child",
        lambda: MLP2({**_init(MLP2)[0], "junk": {}}, X),
        ParamsError,
        ("MLP at <root>", "['junk']", "dense_0"),
    ),
    Bad(
        "apply/params-to-parameter-free",
        lambda: nj.MaxPool(2)(_init(DENSE)[0], jnp.ones((1, 4, 4, 1))),
        ParamsError,
        ("MaxPool at <root>", "no parameters", "['b', 'w']"),
    ),
    Bad(
        "apply/params-nested-too-deep",
        lambda: MLP2({"params": _init(MLP2)[0]}, X),
        ParamsError,
        ("Dense at 'dense_0'", "'w'"),
    ),
    Bad(
        "apply/complex-input",
        lambda: DENSE(_init(DENSE)[0], X.astype(jnp.complex64)),
        ShapeError,
        ("Dense at <root>", "complex64", "jnp.real"),
    ),
    Bad(
        "apply/complex-input-of-block",
        lambda: MLP2(_init(MLP2)[0], X * 1j),
        ShapeError,
        ("MLP at <root>", "complex", "real numbers"),
    ),
    Bad(
        "apply/int-input-to-dense",
        lambda: DENSE(_init(DENSE)[0], jnp.ones((2, 4), jnp.int32)),
        ShapeError,
        ("Dense at <root>", "int32", "Embedding"),
    ),
    Bad(
        "apply/string-input",
        lambda: DENSE(_init(DENSE)[0], "abc"),
        ArgumentError,
        ("Dense at <root>", "'abc'"),
    ),
    Bad(
        "rng/int",
        lambda: DROP({}, X, train=True, rng=3),
        RngError,
        ("Dropout at <root>", "rng", "the int 3", "jax.random.key(3)"),
    ),
    Bad(
        "rng/batch-of-keys",
        lambda: DROP({}, X, train=True, rng=jax.random.split(KEY, 3)),
        RngError,
        ("Dropout at <root>", "(3,)", "jax.vmap"),
    ),
    Bad(
        "rng/float-array",
        lambda: DROP({}, X, train=True, rng=jnp.zeros(2)),
        RngError,
        ("Dropout", "float32 array of shape (2,)"),
    ),
    Bad(
        "batchnorm/batch-of-one-in-training",
        lambda: BN.apply(*_init(BN, (4, 3)), jnp.ones((1, 3)), train=True),
        ShapeError,
        ("BatchNorm at <root>", "(1, 3)", "1 element", "train=False"),
    ),
    Bad(
        "batchnorm/nested-batch-of-one",
        lambda: nj.Sequential(nj.Dense(3), BN).apply(
            *_init(nj.Sequential(nj.Dense(3), BN), (4, 2)), jnp.ones((1, 2)), train=True
        ),
        ShapeError,
        ("BatchNorm at '1'", "1 element"),
    ),
    # ---- step builders
    Bad(
        "train-step/array-batch",
        lambda: _train_step(losses.mse, jnp.ones((3, 5))),
        ArgumentError,
        ("batch", "(inputs, targets)", "float32 array", "targets are missing"),
    ),
    Bad(
        "train-step/dict-batch",
        lambda: _train_step(losses.mse, {"x": XY[0], "y": XY[1]}),
        ArgumentError,
        ("(inputs, targets)", "keys ['x', 'y']", "batch['x']"),
    ),
    Bad(
        "train-step/non-scalar-loss",
        lambda: _train_step(functools.partial(losses.mse, reduction="none"), XY),
        ShapeError,
        ("loss_fn functools.partial(nn_jax.losses.mse, reduction='none')", "(3, 2)", "scalar"),
    ),
    Bad(
        "train-step/loss-signature",
        lambda: _train_step(lambda y: jnp.sum(y), XY),
        ArgumentError,
        ("make_train_step: loss_fn", "(predictions, targets)", "(y)"),
    ),
    Bad(
        "train-step/loss-not-callable",
        lambda: nj.make_train_step(MLP2, "mse", optax.sgd(0.1)),
        ArgumentError,
        ("make_train_step: loss_fn", "'mse'"),
    ),
    Bad(
        "train-step/layer-class",
        lambda: nj.make_train_step(nj.Dense, losses.mse, optax.sgd(0.1)),
        ArgumentError,
        ("make_train_step", "class Dense", "instance"),
    ),
    Bad(
        "train-step/uncalled-optimizer",
        lambda: nj.make_train_step(MLP2, losses.mse, optax.adam),
        ArgumentError,
        ("make_train_step: optimizer", "optax.adam(1e-3)"),
    ),
    Bad(
        "make-step/layer-as-objective",
        lambda: nj.make_step(MLP2, optax.sgd(0.1)),
        ArgumentError,
        ("make_step: objective", "MLP(", "Supervised(model, loss_fn)"),
    ),
    Bad(
        "make-step/params-for-train-state",
        lambda: nj.make_step(nj.Supervised(MLP2, losses.mse), optax.sgd(0.1))(_init(MLP2)[0], XY),
        ArgumentError,
        ("step(ts, batch)", "TrainState.create", "dict"),
    ),
    Bad(
        "make-step/non-scalar-objective",
        lambda: nj.make_step(_vector_objective, optax.sgd(0.1))(
            nj.TrainState.create(MLP2, optax.sgd(0.1), KEY, X), XY
        ),
        ShapeError,
        ("_vector_objective", "(3,)", "scalar"),
    ),
    Bad(
        "eval-step/objective-without-aux",
        lambda: nj.make_eval_step(_objective_without_aux)(*_init(MLP2), XY),
        ArgumentError,
        ("_objective_without_aux", "(loss, (state, metrics))", "float32 array"),
    ),
    Bad(
        "supervised/metrics-list",
        lambda: nj.Supervised(MLP2, losses.mse, metrics=[metrics.accuracy]),
        ArgumentError,
        ("Supervised: metrics", "dict", "list"),
    ),
    Bad(
        "train-state/int-key",
        lambda: nj.TrainState.create(MLP2, optax.sgd(0.1), 0, X),
        RngError,
        ("TrainState.create", "the int 0"),
    ),
    # ---- fit (every row fails before anything is compiled)
    Bad(
        "fit/zero-batch-size",
        lambda: _fit(batch_size=0),
        ConfigError,
        ("fit: batch_size", "positive int", "0"),
    ),
    Bad(
        "fit/negative-epochs",
        lambda: _fit(steps=None, epochs=-1),
        ConfigError,
        ("fit: epochs", "-1"),
    ),
    Bad("fit/bool-steps", lambda: _fit(steps=True), ConfigError, ("fit: steps", "True (a bool)")),
    Bad("fit/zero-val-every", lambda: _fit(val_every=0), ConfigError, ("fit: val_every", "0")),
    Bad("fit/float-log-every", lambda: _fit(log_every=2.5), ConfigError, ("fit: log_every", "2.5")),
    Bad(
        "fit/flag-not-bool",
        lambda: _fit(shuffle="yes"),
        ConfigError,
        ("fit: shuffle", "True or False", "'yes'"),
    ),
    Bad(
        "fit/list-of-arrays",
        lambda: _fit(data=list(XY)),
        ArgumentError,
        ("fit", "list of 2 arrays", "tuple (inputs, targets)"),
    ),
    Bad(
        "fit/dict-data",
        lambda: _fit(data={"x": XY[0]}),
        ArgumentError,
        ("fit", "(inputs, targets)", "keys ['x']"),
    ),
    Bad(
        "fit/rows-disagree",
        lambda: _fit(data=(jnp.ones((3, 5)), jnp.ones((4, 2)))),
        ShapeError,
        ("fit", "[3, 4]"),
    ),
    Bad("fit/int-key", lambda: _fit(key=1), RngError, ("fit", "the int 1", "jax.random.key(1)")),
    Bad(
        "fit/one-callback",
        lambda: _fit(callbacks=lambda ts, record: None),
        ArgumentError,
        ("fit: callbacks", "[callback]"),
    ),
    Bad(
        "fit/early-stopping-string",
        lambda: _fit(early_stopping="loss"),
        ArgumentError,
        ("fit: early_stopping", "EarlyStopping", "'loss'"),
    ),
    Bad(
        "fit/validation-array",
        lambda: _fit(validation=XY[0]),
        ArgumentError,
        ("fit: validation", "(inputs, targets", "float32 array"),
    ),
    Bad(
        "fit/model-class",
        lambda: nj.fit(MLP, losses.mse, optax.sgd(0.1), XY, key=KEY, steps=1),
        ArgumentError,
        ("fit", "class MLP", "instance"),
    ),
    Bad(
        "early-stopping/zero-patience",
        lambda: nj.EarlyStopping(patience=0),
        ConfigError,
        ("EarlyStopping: patience", "0"),
    ),
    Bad(
        "early-stopping/negative-delta",
        lambda: nj.EarlyStopping(min_delta=-1.0),
        ConfigError,
        ("EarlyStopping: min_delta", ">= 0", "-1.0"),
    ),
    # ---- summary and the params helpers
    Bad(
        "summary/shape-tuple",
        lambda: nj.summary(MLP2, (2, 3)),
        ArgumentError,
        ("summary", "tuple (2, 3)", "jnp.zeros((2, 3))"),
    ),
    Bad(
        "summary/layer-class",
        lambda: nj.summary(nj.Dense, X),
        ArgumentError,
        ("summary", "class Dense", "instance"),
    ),
    Bad("summary/int-key", lambda: nj.summary(MLP2, X, key=7), RngError, ("summary", "the int 7")),
    Bad(
        "flatten-params/not-a-dict",
        lambda: flatten_params([1, 2]),
        ArgumentError,
        ("flatten_params", "dict", "list"),
    ),
    Bad(
        "unflatten-params/leaf-clash",
        lambda: unflatten_params({"a": 1, "a/b": 2}),
        ParamsError,
        ("unflatten_params", "'a/b'", "leaf"),
    ),
    # ---- data helpers
    Bad(
        "batches/zero-batch-size",
        lambda: next(data.batches(XY, 0)),
        ConfigError,
        ("batches: batch_size", "1..3", "0"),
    ),
    Bad(
        "batches/bool-batch-size",
        lambda: next(data.batches(XY, True)),
        ConfigError,
        ("batches: batch_size", "True (a bool)"),
    ),
    Bad(
        "batches/rows-disagree",
        lambda: next(data.batches((np.ones(3), np.ones(4)), 1)),
        ShapeError,
        ("batches", "[3, 4]"),
    ),
    Bad(
        "batches/int-key",
        lambda: next(data.batches(XY, 2, key=3)),
        RngError,
        ("batches", "the int 3"),
    ),
    Bad(
        "prefetch/not-iterable",
        lambda: data.prefetch_to_device(3),
        ArgumentError,
        ("prefetch_to_device", "iterable", "given 3"),
    ),
    Bad(
        "split/two-fractions",
        lambda: data.split_dataset(np.ones((10, 2)), np.ones(10), fractions=(0.5, 0.5)),
        ConfigError,
        ("split_dataset: fractions", "(0.5, 0.5)"),
    ),
    Bad(
        "with-validation/pair",
        lambda: data.with_validation(XY),
        ArgumentError,
        ("with_validation", "Split(", "split_dataset"),
    ),
    Bad(
        "batch-graphs/one-graph",
        lambda: data.batch_graphs(data.Graph(np.ones((2, 1)), np.array([0]), np.array([1]))),
        ArgumentError,
        ("batch_graphs", "Graph", "[graph]"),
    ),
    Bad(
        "make-regression/bool-count",
        lambda: data.make_regression(True, 2),
        ConfigError,
        ("make_regression: num_examples", "True"),
    ),
    Bad(
        "copy-task/negative-delay",
        lambda: data.copy_task(2, 3, 4, delay=-1),
        ConfigError,
        ("copy_task: delay", ">= 0", "-1"),
    ),
]


def test_row_ids_are_unique():
    ids = [row.id for row in ROWS]
    assert len(ids) == len(set(ids)) and len(ids) >= 40


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.id)
def test_wrong_call_raises_a_named_error(row: Bad):
    assert_named_error(row)


# --------------------------------------------------------------------------------------------
# The accepted forms.


def test_numpy_integers_are_sizes_stored_as_python_ints():
    layer = nj.Dense(np.int64(4), use_bias=np.bool_(True))
    assert layer == nj.Dense(4) and hash(layer) == hash(nj.Dense(4))
    assert type(layer.features) is int and type(layer.use_bias) is bool
    assert json.dumps(nj.to_config(layer))  # JSON-able, no NumPy scalar inside
    conv = nj.Conv(np.int32(8), (np.int64(3), 3), strides=np.int16(2))
    assert conv == nj.Conv(8, (3, 3), strides=2)
    assert MLP((np.int64(4), np.int64(2))) == MLP((4, 2))
    rate = nj.Dropout(np.float32(0.5)).rate
    assert rate == 0.5 and type(rate) is float


def test_every_registered_layer_takes_numpy_integers_for_its_int_fields():
    """Each conformance layer rebuilt with its int fields as ``np.int64`` is an equal layer."""
    for case in all_cases():
        layer = case.layer
        ints = {
            f.name: np.int64(getattr(layer, f.name))
            for f in dataclasses.fields(layer)
            if f.init and type(getattr(layer, f.name)) is int
        }
        if ints:
            rebuilt = dataclasses.replace(layer, **ints)
            assert rebuilt == layer, case.id
            assert all(type(getattr(rebuilt, name)) is int for name in ints), case.id


def test_a_legacy_prng_key_still_works_and_gives_the_same_numbers():
    legacy = jax.random.PRNGKey(0)
    params, _ = DENSE.init(legacy, X)
    typed, _ = DENSE.init(jax.random.wrap_key_data(legacy), X)
    jax.tree.map(np.testing.assert_array_equal, params, typed)
    y = DROP({}, X, train=True, rng=jax.random.PRNGKey(1))
    assert y.shape == X.shape
    params, _ = MLP2.init(legacy, jax.ShapeDtypeStruct((2, 4), jnp.float32))
    assert MLP2(params, X).shape == (2, 2)


def test_initializers_that_cannot_draw_the_probe_shape_are_accepted():
    """The factory probe draws a 2x2 array; an initializer that cannot is given the benefit of
    the doubt (it is not known to be a factory)."""
    conv = nj.Conv(4, (3, 3), w_init=jax.nn.initializers.delta_orthogonal())
    params, _ = conv.init(KEY, jnp.zeros((1, 5, 5, 4)))
    assert params["w"].shape == (3, 3, 4, 4)
    layer = nj.Dense(3, w_init=lambda key, shape, dtype=jnp.float32: jnp.zeros(shape, dtype))
    assert not np.any(layer.init(KEY, X)[0]["w"])
    assert nj.Dense(3, w_init=_user_factory(0.5)).init(KEY, X)[0]["w"].shape == (4, 3)


def test_activation_names_and_functions_are_accepted():
    assert MLP((2,), activation="gelu").activation == "gelu"  # a name stays a name (config)
    model = MLP((2,), activation=jnp.tanh, final_activation="sigmoid")
    params, _ = model.init(KEY, X)
    assert float(model(params, X).min()) > 0.0


def test_batchnorm_of_one_example_per_device_is_fine_with_a_named_axis():
    """With ``axis_name`` the statistics are averaged over devices: one example each is fine."""
    bn = nj.BatchNorm(axis_name="devices")
    params, state = bn.init(KEY, jnp.zeros((1, 3)))
    xs = jnp.arange(12.0).reshape(4, 1, 3)
    y, _ = jax.vmap(lambda x: bn.apply(params, state, x, train=True), axis_name="devices")(xs)
    np.testing.assert_allclose(y.mean(axis=0), 0.0, atol=1e-5)


def test_python_numbers_and_shape_structs_are_accepted_inputs():
    params, _ = DENSE.init(KEY, jax.ShapeDtypeStruct((2, 4), jnp.float32))
    assert DENSE(params, [[1.0, 2.0, 3.0, 4.0]]).shape == (1, 3)
    assert "Total parameters: 15" in nj.summary(DENSE, jax.ShapeDtypeStruct((2, 4), jnp.float32))


def test_a_tuple_batch_with_side_inputs_is_accepted_by_split_batch():
    *_, side = nj.split_batch((X, X, {"lengths": jnp.ones(2, int)}))
    assert side is not None and set(side) == {"lengths"}
    assert nj.split_batch([X, X])[2] is None

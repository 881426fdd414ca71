"""Flax bridges against Flax itself: Linen's ``apply`` and NNX's own call are the references.

Outputs, gradients (``jax.grad`` of Linen's apply, ``nnx.grad`` of the NNX module) and updated
batch statistics must match; the rng keys the wrappers document are rebuilt here from first
principles (``fold_in`` with the CRC32 of the stream's name); the reverse bridge is checked
against NumPy formulas.
"""

import zlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

pytest.importorskip("flax")
import flax.linen as nn
from flax import nnx

from nn_jax import losses
from nn_jax.combinators import Sequential
from nn_jax.compat.flax import FlaxLinen, FlaxNNX, to_linen
from nn_jax.dense import Dense
from nn_jax.errors import ArgumentError, ConfigError, ParamsError, RngError, ShapeError
from nn_jax.models import MLP
from nn_jax.normalization import BatchNorm
from nn_jax.regularization import Dropout
from nn_jax.train import TrainState, make_stateful_train_step

KEY = jax.random.key(0)
RNG = jax.random.key(42)
TOL = {"rtol": 1e-5, "atol": 1e-6}


def by_name(key, name):
    """The documented derivation: ``fold_in(key, crc32(name) & 0x7FFFFFFF)``."""
    return jax.random.fold_in(key, zlib.crc32(name.encode()) & 0x7FFFFFFF)


def assert_trees_close(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), **TOL)


def train_briefly(model, x, targets, steps=20):
    """Losses of ``steps`` Adam steps of nn_jax's step builder on one fixed batch."""
    opt = optax.adam(1e-2)
    ts = TrainState.create(model, opt, KEY, x)
    step = make_stateful_train_step(model, losses.mse, opt)
    history = []
    for _ in range(steps):
        ts, logs = step(ts, (x, targets))
        history.append(float(logs["loss"]))
    return ts, history


# --------------------------------------------------------------------------------------------
# Linen: Conv -> BatchNorm -> relu -> Dropout -> Dense.


class LinenCNN(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.Conv(4, (3, 3))(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
        x = nn.relu(x)
        x = nn.Dropout(0.5, deterministic=not train)(x)
        return nn.Dense(3)(x.reshape((x.shape[0], -1)))


X_IMG = jnp.asarray(np.random.default_rng(0).standard_normal((4, 5, 5, 2)), jnp.float32)
WEIGHTS = jnp.asarray(np.random.default_rng(1).standard_normal((4, 3)), jnp.float32)


@pytest.fixture(scope="module")
def linen():
    module = LinenCNN()
    layer = FlaxLinen(module, train_kwarg="train")
    params, state = layer.init(KEY, X_IMG)
    return module, layer, params, state


def test_linen_init_is_linens_init_split_into_params_and_state(linen):
    module, _, params, state = linen
    reference = module.init({"params": KEY}, X_IMG, train=False)
    assert set(state) == {"batch_stats"}
    assert_trees_close(params, dict(reference["params"]))
    assert_trees_close(state["batch_stats"], dict(reference["batch_stats"]))


def test_linen_train_output_gradients_and_batch_stats_match_linen_apply(linen):
    module, layer, params, state = linen

    def ours(p):
        y, new_state = layer.apply(p, state, X_IMG, rng=RNG, train=True)
        return jnp.sum(y * WEIGHTS), (y, new_state)

    def reference(p):
        y, updates = module.apply(
            {"params": p, **state},
            X_IMG,
            train=True,
            rngs={"dropout": by_name(RNG, "dropout")},
            mutable=["batch_stats"],
        )
        return jnp.sum(y * WEIGHTS), (y, updates)

    (_, (y, new_state)), grads = jax.jit(jax.value_and_grad(ours, has_aux=True))(params)
    (_, (y_ref, updates)), grads_ref = jax.jit(jax.value_and_grad(reference, has_aux=True))(params)
    assert_trees_close(y, y_ref)
    assert_trees_close(grads, grads_ref)
    assert_trees_close(new_state, dict(updates))
    # The statistics really moved, and dropout really drew from the rng.
    assert not np.allclose(new_state["batch_stats"]["BatchNorm_0"]["mean"], 0.0)
    y_other, _ = layer.apply(params, state, X_IMG, rng=jax.random.key(7), train=True)
    assert not np.allclose(y, y_other)


def test_linen_eval_uses_running_stats_and_keeps_the_state(linen):
    module, layer, params, state = linen
    _, trained = layer.apply(params, state, X_IMG, rng=RNG, train=True)
    y, same = layer.apply(params, trained, X_IMG)
    y_ref = module.apply({"params": params, **trained}, X_IMG, train=False)
    assert_trees_close(y, y_ref)
    assert same is trained
    grads = jax.grad(lambda p: jnp.sum(layer.apply(p, trained, X_IMG)[0] * WEIGHTS))(params)
    grads_ref = jax.grad(
        lambda p: jnp.sum(module.apply({"params": p, **trained}, X_IMG, train=False) * WEIGHTS)
    )(params)
    assert_trees_close(grads, grads_ref)


def test_linen_layer_in_sequential_with_nn_jax_dense_and_it_trains(linen):
    module = linen[0]
    model = Sequential(FlaxLinen(module, train_kwarg="train"), Dense(2))
    params, state = model.init(KEY, X_IMG)
    y, new_state = jax.jit(lambda p, s: model.apply(p, s, X_IMG, rng=RNG, train=True))(
        params, state
    )
    # Sequential derives child '0''s rng by name; the wrapper derives the 'dropout' stream.
    h, updates = module.apply(
        {"params": params["0"], **state["0"]},
        X_IMG,
        train=True,
        rngs={"dropout": by_name(by_name(RNG, "0"), "dropout")},
        mutable=["batch_stats"],
    )
    w, b = np.asarray(params["1"]["w"]), np.asarray(params["1"]["b"])
    np.testing.assert_allclose(y, np.asarray(h) @ w + b, **TOL)
    assert_trees_close(new_state["0"], dict(updates))

    targets = jnp.asarray(np.random.default_rng(2).standard_normal((4, 2)), jnp.float32)
    ts, history = train_briefly(model, X_IMG, targets)
    assert history[-1] < 0.5 * history[0], history
    assert not np.allclose(ts.state["0"]["batch_stats"]["BatchNorm_0"]["var"], 1.0)


# --------------------------------------------------------------------------------------------
# NNX: Linear -> BatchNorm -> relu -> Dropout -> Linear.


class NNXNet(nnx.Module):
    def __init__(self, *, rngs):
        self.linear1 = nnx.Linear(3, 8, rngs=rngs)
        self.bn = nnx.BatchNorm(8, momentum=0.9, rngs=rngs)
        self.drop = nnx.Dropout(0.5, rngs=rngs)
        self.linear2 = nnx.Linear(8, 2, rngs=rngs)

    def __call__(self, x):
        return self.linear2(self.drop(nnx.relu(self.bn(self.linear1(x)))))


X_VEC = jnp.asarray(np.random.default_rng(3).standard_normal((6, 3)), jnp.float32)
W_VEC = jnp.asarray(np.random.default_rng(4).standard_normal((6, 2)), jnp.float32)


def reference_net(train, rng=RNG):
    """NNX's own module with init's key, in the mode, its dropout stream set as documented."""
    net = NNXNet(rngs=nnx.Rngs(KEY))
    net.train() if train else net.eval()
    net.drop.rngs.key.set_value(by_name(rng, "drop/rngs/key"))
    net.drop.rngs.count.set_value(jnp.zeros((), jnp.uint32))
    return net


@pytest.fixture(scope="module")
def nnx_layer():
    layer = FlaxNNX(NNXNet)
    params, state = layer.init(KEY, X_VEC)
    return layer, params, state


def test_nnx_init_holds_the_constructed_modules_params_and_batch_stats(nnx_layer):
    _, params, state = nnx_layer
    net = NNXNet(rngs=nnx.Rngs(KEY))
    assert_trees_close(params, nnx.to_pure_dict(nnx.state(net, nnx.Param)))
    assert_trees_close(state, nnx.to_pure_dict(nnx.state(net, nnx.BatchStat)))
    assert set(state) == {"bn"}  # no rng state is stored


def test_nnx_train_output_gradients_and_batch_stats_match_nnx(nnx_layer):
    layer, params, state = nnx_layer

    def ours(p):
        y, new_state = layer.apply(p, state, X_VEC, rng=RNG, train=True)
        return jnp.sum(y * W_VEC), (y, new_state)

    (_, (y, new_state)), grads = jax.jit(jax.value_and_grad(ours, has_aux=True))(params)

    net = reference_net(train=True)
    y_ref = net(X_VEC)
    assert_trees_close(y, y_ref)
    assert_trees_close(new_state, nnx.to_pure_dict(nnx.state(net, nnx.BatchStat)))
    assert not np.allclose(new_state["bn"]["mean"], 0.0)

    net = reference_net(train=True)
    grads_ref = nnx.jit(nnx.grad(lambda m: jnp.sum(m(X_VEC) * W_VEC)))(net)
    assert_trees_close(grads, nnx.to_pure_dict(grads_ref))
    assert_trees_close(y, layer.apply(params, state, X_VEC, rng=RNG, train=True)[0])
    y_other, _ = layer.apply(params, state, X_VEC, rng=jax.random.key(7), train=True)
    assert not np.allclose(y, y_other)


def test_nnx_eval_matches_nnx_eval_with_running_stats(nnx_layer):
    layer, params, state = nnx_layer
    _, trained = layer.apply(params, state, X_VEC, rng=RNG, train=True)
    y, after = jax.jit(lambda p, s: layer.apply(p, s, X_VEC))(params, trained)
    net = reference_net(train=False)
    net.bn.mean.set_value(trained["bn"]["mean"])
    net.bn.var.set_value(trained["bn"]["var"])
    assert_trees_close(y, net(X_VEC))
    assert_trees_close(after, trained)


def test_nnx_layer_trains_in_an_nn_jax_step(nnx_layer):
    layer = nnx_layer[0]
    targets = jnp.asarray(np.random.default_rng(5).standard_normal((6, 2)), jnp.float32)
    ts, history = train_briefly(layer, X_VEC, targets)
    assert history[-1] < 0.5 * history[0], history
    assert not np.allclose(ts.state["bn"]["var"], 1.0)


# --------------------------------------------------------------------------------------------
# nn_jax layers inside Linen.


def test_to_linen_mlp_matches_the_numpy_forward_pass():
    x = np.random.default_rng(6).standard_normal((5, 3)).astype(np.float32)
    module = to_linen(MLP((4, 2)))
    variables = module.init(KEY, x)
    p = jax.tree.map(np.asarray, variables["params"]["layer"])
    assert set(variables) == {"params"}
    expected = np.maximum(x @ p["dense_0"]["w"] + p["dense_0"]["b"], 0) @ p["dense_1"]["w"]
    np.testing.assert_allclose(module.apply(variables, x), expected + p["dense_1"]["b"], **TOL)
    # The same params give the same output through the nn_jax layer itself.
    np.testing.assert_allclose(
        MLP((4, 2))(variables["params"]["layer"], x), expected + p["dense_1"]["b"], **TOL
    )


def test_to_linen_batch_norm_state_updates_under_mutable_only_in_training():
    x = np.random.default_rng(7).standard_normal((8, 3)).astype(np.float32)
    module = to_linen(Sequential(Dense(4), BatchNorm(momentum=0.9)))
    variables = module.init(KEY, x)
    stats = variables["batch_stats"]["layer"]["1"]
    np.testing.assert_array_equal(stats["mean"], 0.0)  # init does not step the statistics
    y, updates = module.apply(variables, x, train=True, mutable=["batch_stats"])
    p = jax.tree.map(np.asarray, variables["params"]["layer"])
    h = x @ p["0"]["w"] + p["0"]["b"]
    new = jax.tree.map(np.asarray, updates["batch_stats"]["layer"]["1"])
    np.testing.assert_allclose(new["mean"], 0.1 * h.mean(0), **TOL)
    np.testing.assert_allclose(new["var"], 0.9 + 0.1 * h.var(0), **TOL)
    standardized = (h - h.mean(0)) / np.sqrt(h.var(0) + 1e-5)
    expected = standardized * p["1"]["scale"] + p["1"]["b"]
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5)
    # Evaluation reads the running statistics and needs nothing mutable.
    evaluated = module.apply({**variables, "batch_stats": updates["batch_stats"]}, x)
    expected = (h - new["mean"]) / np.sqrt(np.asarray(new["var"]) + 1e-5)
    np.testing.assert_allclose(
        evaluated, expected * p["1"]["scale"] + p["1"]["b"], rtol=1e-4, atol=1e-5
    )


def test_to_linen_passes_the_dropout_stream_and_rng_errors_name_the_layer():
    x = np.ones((2, 16), np.float32)
    module = to_linen(Dropout(0.5))
    variables = module.init(KEY, x)
    assert variables == {}
    y = np.asarray(module.apply(variables, x, train=True, rngs={"dropout": RNG}))
    assert set(np.unique(y)) == {0.0, 2.0}
    with pytest.raises(RngError, match=r"Dropout at <root>: needs randomness in training"):
        module.apply(variables, x, train=True)


# --------------------------------------------------------------------------------------------
# Errors.


def test_constructors_refuse_what_is_not_a_flax_module():
    with pytest.raises(
        ConfigError,
        match=r"FlaxLinen: module must be a flax.linen.Module "
        r"instance, given the class LinenCNN; construct it first",
    ):
        FlaxLinen(LinenCNN)
    with pytest.raises(ConfigError, match=r"given 'dense'"):
        FlaxLinen("dense")
    with pytest.raises(
        ConfigError,
        match=r"FlaxNNX: make must be a constructor .* given the "
        r"module instance Linear",
    ):
        FlaxNNX(nnx.Linear(2, 2, rngs=nnx.Rngs(0)))
    with pytest.raises(
        ConfigError, match=r"FlaxNNX: make is called as make\(rngs=nnx.Rngs\(key\)\), and its "
    ):
        FlaxNNX(lambda: nnx.Linear(2, 2, rngs=nnx.Rngs(0)))
    with pytest.raises(ConfigError, match=r"a Linen module goes in FlaxLinen"):
        FlaxNNX(nn.Dense(2))
    with pytest.raises(
        ConfigError,
        match=r"make\(rngs=...\) must return an nnx.Module, it "
        r"returned a float32 array",
    ):
        FlaxNNX(lambda rngs: jnp.zeros(2)).init(KEY, X_VEC)
    with pytest.raises(
        ArgumentError,
        match=r"to_linen: layer must be a layer instance, e.g. Dense\(3\), given the class "
        r"Dense; construct it first",
    ):
        to_linen(Dense)


def test_missing_rng_in_training_is_an_rng_error_naming_the_layer(linen, nnx_layer):
    _, layer, params, state = linen
    with pytest.raises(
        RngError,
        match=r"FlaxLinen at <root>: the Flax module draws from the "
        r"rng stream 'dropout' but was called with rng=None",
    ):
        layer.apply(params, state, X_IMG, train=True)
    model = Sequential(Dense(2), layer)
    model_params, model_state = model.init(KEY, X_IMG)
    with pytest.raises(RngError, match=r"FlaxLinen at '1': the Flax module draws from"):
        model.apply(model_params, model_state, X_IMG, train=True)
    layer.apply(params, state, X_IMG)  # evaluation needs no rng
    with pytest.raises(RngError, match=r"not in rng_streams=\(\)"):
        FlaxLinen(LinenCNN(), train_kwarg="train", rng_streams=()).apply(
            params, state, X_IMG, rng=RNG, train=True
        )
    nnx_layer_, nnx_params, nnx_state = nnx_layer
    with pytest.raises(
        RngError,
        match=r"FlaxNNX at <root>: the NNX module draws random "
        r"numbers \(from \['drop/rngs/count'\]\) but was called with rng=None",
    ):
        nnx_layer_.apply(nnx_params, nnx_state, X_VEC, train=True)
    nnx_layer_.apply(nnx_params, nnx_state, X_VEC)


def test_params_that_do_not_fit_the_module_name_the_layer_and_the_entry(linen, nnx_layer):
    _, layer, params, state = linen
    bad = {**params, "Dense_0": {**params["Dense_0"], "kernel": jnp.zeros((3, 3))}}
    with pytest.raises(ShapeError, match=r"FlaxLinen at <root>: flax raised ScopeParamShapeError"):
        layer.apply(bad, state, X_IMG)
    always_training = FlaxLinen(nn.BatchNorm(use_running_average=False))
    bn_params, bn_state = always_training.init(KEY, X_IMG)
    with pytest.raises(
        ConfigError,
        match=r"FlaxLinen at <root>: the Flax module updates a "
        r"variable in evaluation \(train=False\)",
    ):
        always_training.apply(bn_params, bn_state, X_IMG)
    nnx_layer_, nnx_params, nnx_state = nnx_layer
    with pytest.raises(
        ParamsError,
        match=r"FlaxNNX at <root>: params does not match the module's "
        r"variables: missing \['linear2/bias'\], unexpected \[\]",
    ):
        nnx_layer_.apply(
            {**nnx_params, "linear2": {"kernel": nnx_params["linear2"]["kernel"]}},
            nnx_state,
            X_VEC,
        )
    wrong = {**nnx_state, "bn": {**nnx_state["bn"], "mean": jnp.zeros(3)}}
    with pytest.raises(
        ShapeError, match=r"state entry 'bn/mean' has shape \(3,\), expected \(8,\)"
    ):
        nnx_layer_.apply(nnx_params, wrong, X_VEC)


class Masked(nn.Module):
    @nn.compact
    def __call__(self, x, mask=None):
        y = nn.Dense(2, use_bias=False)(x)
        return y if mask is None else jnp.where(mask[:, None], y, 0.0)


def test_side_inputs_named_in_side_kwargs_reach_the_module_call():
    x = np.arange(6, dtype=np.float32).reshape(3, 2)
    layer = FlaxLinen(Masked(), side_kwargs=("mask",))
    params, _ = layer.init(KEY, x)
    mask = np.array([True, False, True])
    y = layer(params, x, side={"mask": mask})
    expected = (x @ np.asarray(params["Dense_0"]["kernel"])) * mask[:, None]
    np.testing.assert_allclose(y, expected, **TOL)
    np.testing.assert_allclose(layer(params, x), x @ np.asarray(params["Dense_0"]["kernel"]), **TOL)
    with pytest.raises(ConfigError, match=r"side inputs \['mask'\] were given but no layer"):
        FlaxLinen(Masked())(params, x, side={"mask": mask})


def test_nnx_list_indices_become_string_keys_and_read_back():
    x = np.random.default_rng(8).standard_normal((4, 2)).astype(np.float32)
    layer = FlaxNNX(
        lambda rngs: nnx.Sequential(nnx.Linear(2, 3, rngs=rngs), nnx.Linear(3, 1, rngs=rngs))
    )
    params, state = layer.init(KEY, x)
    assert state == {}
    assert set(params["layers"]) == {"0", "1"}
    p = jax.tree.map(np.asarray, params["layers"])
    expected = (x @ p["0"]["kernel"] + p["0"]["bias"]) @ p["1"]["kernel"] + p["1"]["bias"]
    np.testing.assert_allclose(layer(params, x), expected, **TOL)

"""Layers as data (nn_jax.config): every conformance case and zoo model round trips through JSON
to an equal layer; values with no description and bad configs raise ConfigError naming where."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import jax
import jax.numpy as jnp
import pytest

import nn_jax
from nn_jax import (
    Dense,
    Lambda,
    ParameterFree,
    Residual,
    SAGEConv,
    Sequential,
    initializers,
    models,
)
from nn_jax.config import from_config, from_json, register_layer, to_config, to_json
from nn_jax.core import Call, Layer
from nn_jax.errors import ConfigError, FileFormatError
from tests.cases import all_cases

CASES = all_cases()

ZOO = [
    models.MLP((4, 2)),
    nn_jax.pytorch_defaults(models.MLP((4, 2))),  # a MapLayers
    models.SimpleNetwork(),
    models.LeNet(),
    models.BasicBlock(8, strides=2),
    models.ResNet(num_classes=3),
    models.UNet(2),
    models.GCN((8, 4)),
    models.GraphClassifier((SAGEConv(8), SAGEConv(8)), 2, readout="max"),
    models.RNNClassifier(3, cell="gru", bidirectional=True),
    models.TransformerLM(50),
    models.TransformerEncoder(3, vocab_size=20),
    models.Autoencoder((8,), 2),
    models.VAE((8,), 2),
    models.ConvAutoencoder((4, 8)),
]


def _json_only(value: Any) -> bool:
    """Whether ``value`` holds only dict (str keys), list, str, int, float, bool and None."""
    if value is None or isinstance(value, bool | int | float | str):
        return True
    if isinstance(value, list):
        return all(_json_only(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _json_only(v) for k, v in value.items())
    return False


def _round_trip(layer: Layer) -> Layer:
    config = to_config(layer)
    assert _json_only(config), config
    again = from_config(json.loads(json.dumps(config)))
    assert again == layer
    assert repr(again) == repr(layer)
    assert hash(again) == hash(layer)
    return again


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_every_conformance_case_round_trips(case):
    _round_trip(case.layer)


@pytest.mark.parametrize("model", ZOO, ids=[type(m).__name__ for m in ZOO])
def test_every_zoo_model_round_trips(model):
    _round_trip(model)
    assert from_json(to_json(model)) == model


def _layer_types(layer: Any, found: set[type]) -> None:
    if isinstance(layer, Layer):
        found.add(type(layer))
        for field in dataclasses.fields(layer):
            _layer_types(getattr(layer, field.name), found)
    elif isinstance(layer, tuple):
        for item in layer:
            _layer_types(item, found)


def test_the_round_trips_cover_every_public_layer():
    """The two tests above between them see every public Layer class (nested ones included)."""
    seen: set[type] = set()
    for layer in [c.layer for c in CASES] + ZOO:
        _layer_types(layer, seen)
    public = {
        value
        for module in (nn_jax, models)
        for name in module.__all__
        if isinstance(value := getattr(module, name), type)
        and issubclass(value, Layer)
        and not getattr(value, "__abstractmethods__", None)
    }
    assert public - seen == set()
    assert {type(m) for m in ZOO} >= {c for c in public if c.__module__.startswith("nn_jax.models")}


def test_config_format_of_a_sequential():
    model = Sequential(Dense(32), jax.nn.relu, Dense(1, use_bias=False))
    assert to_config(model) == {
        "type": "Sequential",
        "layers": [
            ["0", {"type": "Dense", "features": 32}],
            ["1", {"type": "Lambda", "fn": {"function": "relu"}}],
            ["2", {"type": "Dense", "features": 1, "use_bias": False}],
        ],
    }
    named = Sequential(encoder=Dense(4), head=Dense(2))
    assert [name for name, _ in to_config(named)["layers"]] == ["encoder", "head"]
    assert _round_trip(named).layers[0][0] == "encoder"


def test_functions_initializers_dtypes_and_enums():
    layer = Dense(
        3,
        w_init=initializers.variance_scaling(2.0, "fan_in", "uniform", in_axis=(-2,)),
        b_init=initializers.ones,
        param_dtype=jnp.bfloat16,
        precision=jax.lax.Precision.HIGHEST,
    )
    config = to_config(layer)
    assert config["w_init"] == {
        "initializer": "variance_scaling",
        "scale": 2.0,
        "mode": "fan_in",
        "distribution": "uniform",
        "in_axis": [-2],
    }
    assert config["b_init"] == {"initializer": "ones"}
    assert config["param_dtype"] == {"dtype": "bfloat16"}
    assert config["precision"] == {"enum": "jax.lax:Precision", "member": "HIGHEST"}
    _round_trip(layer)
    # A function outside the activation table, by its importable name; swish is silu.
    assert to_config(Lambda(jnp.cos))["fn"] == {"function": "jax.numpy:cos"}
    assert _round_trip(Lambda(jax.nn.swish)).fn is jax.nn.silu
    # Strings stay strings: an activation given by name differs from one given as a function.
    by_name, by_fn = models.MLP((2,), activation="tanh"), models.MLP((2,), activation=jnp.tanh)
    assert to_config(by_name)["activation"] == "tanh"
    assert to_config(by_fn)["activation"] == {"function": "tanh"}
    assert _round_trip(by_fn) != by_name


def test_a_dtype_object_comes_back_equal():
    layer = Dense(2, param_dtype=jnp.dtype("bfloat16"))
    assert from_config(to_config(layer)) == layer


@pytest.mark.skipif(
    not hasattr(initializers, "uniform_fan_in"), reason="no fan-in initializers in this version"
)
def test_fan_in_initializers_round_trip():
    layer = Dense(3, w_init=initializers.uniform_fan_in(2.0), b_init=initializers.uniform_fan_in())
    assert to_config(layer)["w_init"] == {"initializer": "uniform_fan_in", "scale": 2.0}
    assert to_config(layer)["b_init"] == {"initializer": "uniform_fan_in"}
    _round_trip(layer)
    _round_trip(nn_jax.GRUCell(4, b_init=initializers.uniform_symmetric(0.5, (2, 2, 1))))


KEY = jax.random.key(0)


@pytest.mark.parametrize(
    ("layer", "shape"),
    [
        (Sequential(Dense(4), jax.nn.relu, Dense(2)), (2, 3)),
        (models.MLP((5, 2), activation="tanh"), (2, 3)),
        (models.LeNet(num_classes=3, channels=(2, 3), hidden=(4,)), (1, 12, 12, 1)),
        (models.TransformerLM(11, num_layers=1, d_model=8, num_heads=2, max_length=4), (1, 4)),
    ],
    ids=["sequential", "mlp", "lenet", "transformer_lm"],
)
def test_rebuilt_layer_makes_the_same_params(layer, shape):
    dtype = jnp.int32 if isinstance(layer, models.TransformerLM) else jnp.float32
    x = jax.ShapeDtypeStruct(shape, dtype)
    again = from_json(to_json(layer))
    shapes = [jax.eval_shape(m.init, KEY, x) for m in (layer, again)]
    assert jax.tree.map(lambda s: (s.shape, s.dtype), shapes[0]) == jax.tree.map(
        lambda s: (s.shape, s.dtype), shapes[1]
    )


# --------------------------------------------------------------------------------------------
# Values with no description.


def test_a_lambda_is_an_error_naming_its_place():
    model = Sequential(encoder=Sequential(Dense(3), lambda x: 2 * x))
    with pytest.raises(ConfigError, match=r"'encoder/1\.fn' holds a function .*<lambda>.*named"):
        to_config(model)


def test_a_jax_initializer_closure_is_an_error_naming_its_place():
    model = Sequential(encoder=Sequential(Dense(3, w_init=jax.nn.initializers.normal(0.1))))
    with pytest.raises(ConfigError, match=r"'encoder/0\.w_init' holds a function .*initializers"):
        to_config(model)
    with pytest.raises(ConfigError, match=r"'body\.b_init' holds a function"):
        to_config(Residual(Dense(2, b_init=jax.nn.initializers.constant(0.1))))


def test_an_unregistered_layer_class_is_an_error():
    @dataclasses.dataclass(frozen=True)
    class Unregistered(ParameterFree):
        def transform(self, x: Any, call: Call) -> Any:
            return x

    with pytest.raises(ConfigError, match=r"Unregistered at '1' .* is not a registered layer"):
        to_config(Sequential(Dense(2), Unregistered()))


# --------------------------------------------------------------------------------------------
# Bad configs.


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            {"type": "Dens", "features": 3},
            r"unknown layer type 'Dens' at <root> \(did you mean 'Dense'",
        ),
        (
            {"type": "Sequential", "layers": [["0", {"type": "Dense", "featurs": 3}]]},
            r"Dense at '0': unknown field\(s\) \['featurs'\] \(did you mean 'features'",
        ),
        ({"type": "Dense"}, r"Dense at <root>: missing required field\(s\) \['features'\]"),
        ({"type": "Dense", "features": -1}, r"Dense at <root>: Dense: features must be"),
        ({"type": "Lambda", "fn": {"function": "rleu"}}, r"'fn': unknown function 'rleu' .*'relu'"),
        ({"type": "Lambda", "fn": {"function": "os:system"}}, r"only from modules under nn_jax"),
        (
            {"type": "Lambda", "fn": {"function": "jax:_src.xla_bridge.os.system"}},
            r"defined in 'posix', outside nn_jax, jax, optax",
        ),
        (
            {"type": "Dense", "features": 3, "w_init": {"initializer": "nromal"}},
            r"'w_init': unknown initializer 'nromal' \(did you mean 'normal'",
        ),
        (
            {"type": "Dense", "features": 3, "w_init": {"initializer": "normal", "stdev": 1}},
            r"'w_init': initializer 'normal': .*'stdev'",
        ),
        ({"type": "Dense", "features": 3, "dtype": {"dtype": "flot32"}}, r"unknown dtype 'flot32'"),
        ({"type": "Dense", "features": {"x": 1}}, r"'features' is a dict with keys \['x'\]"),
        ({"type": "Sequential", "layers": 3}, r"'layers' must be a list of \[name, layer config\]"),
        (
            {"type": "Branch", "layers": [["a", {"type": "Flatten"}], ["a", {"type": "Flatten"}]]},
            r"child names repeat",
        ),
        ([{"type": "Dense"}], r"expected a layer config, a dict with a 'type' key, given list"),
        ({"features": 3}, r"expected a layer config"),
    ],
)
def test_bad_configs_are_errors(config, message):
    with pytest.raises(ConfigError, match=message):
        from_config(config)


def test_bad_json_is_an_error():
    with pytest.raises(FileFormatError, match="from_json: not valid JSON"):
        from_json("{'type': 'Dense'}")


# --------------------------------------------------------------------------------------------
# User layers.


@register_layer(name="tests.Scale")
@dataclasses.dataclass(frozen=True)
class Scale(ParameterFree):
    """A user layer: ``factor * activation(x)``."""

    factor: float = 2.0
    activation: Any = jax.nn.relu

    def transform(self, x: Any, call: Call) -> Any:
        return self.factor * self.activation(x)


@register_layer
@dataclasses.dataclass(frozen=True)
class Shift(ParameterFree):
    """Registered under its class name."""

    by: tuple[float, ...] = (1.0,)

    def transform(self, x: Any, call: Call) -> Any:
        return x + jnp.asarray(self.by, x.dtype)


def test_registered_user_layers_round_trip():
    model = Sequential(Dense(3), Scale(0.5, activation=jnp.tanh), Shift((1.0, 2.0, 3.0)))
    config = to_config(model)
    assert config["layers"][1][1] == {
        "type": "tests.Scale",
        "factor": 0.5,
        "activation": {"function": "tanh"},
    }
    assert config["layers"][2][1] == {"type": "Shift", "by": [1.0, 2.0, 3.0]}
    _round_trip(model)
    assert register_layer(Scale, name="tests.Scale") is Scale  # registering again is harmless


def test_a_name_is_one_class():
    @dataclasses.dataclass(frozen=True)
    class Other(ParameterFree):
        def transform(self, x: Any, call: Call) -> Any:
            return x

    with pytest.raises(ConfigError, match=r"name 'tests.Scale' is already taken by .*Scale"):
        register_layer(Other, name="tests.Scale")
    with pytest.raises(ConfigError, match=r"name 'Dense' is already taken by nn_jax.dense.Dense"):
        register_layer(Other, name="Dense")
    with pytest.raises(ConfigError, match=r"already registered as 'tests.Scale'"):
        register_layer(Scale, name="Scale2")
    with pytest.raises(ConfigError, match="expected a Layer subclass"):
        register_layer(dict)  # type: ignore[type-var]

"""The layer protocol itself: Block/Scope init derivation, sharing, rng, state, errors."""

import dataclasses
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nn_jax as nn
from nn_jax import (
    Block,
    ConfigError,
    Dense,
    Layer,
    NNJaxError,
    ParameterFree,
    ParamsError,
    RngError,
    Scope,
    Sequential,
    ShapeError,
    core,
    initializers,
)
from nn_jax.core import derive_key, tap, tapping

KEY = jax.random.key(0)


@dataclasses.dataclass(frozen=True)
class Tied(Block):
    """Uses the same child twice (weight sharing) and declares its own parameter."""

    def forward(self, scope: Scope, x):
        h = scope("shared", Dense(x.shape[-1]), x)
        h = scope("shared", Dense(x.shape[-1]), jnp.tanh(h))
        scale = scope.param("scale", jax.nn.initializers.ones, (1, 1))
        return h * scale


@dataclasses.dataclass(frozen=True)
class Noisy(Block):
    def forward(self, scope: Scope, x):
        return x + jax.random.normal(scope.rng("noise"), x.shape)


@dataclasses.dataclass(frozen=True)
class Counter(Block):
    """A block with a stateful child, to check state threading."""

    def forward(self, scope: Scope, x):
        return scope("count", CountCalls(), x)


@dataclasses.dataclass(frozen=True)
class CountCalls(Layer):
    """Counts its calls in its state."""

    def init(self, key, x):
        return {}, {"calls": jnp.zeros((), jnp.int32)}

    def compute(self, params, state, x, call):
        return x, {"calls": self.state_entry(state, "calls") + 1}


def test_block_init_is_derived_and_shares_weights():
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    params, _ = Tied().init(KEY, x)
    assert jax.tree.map(jnp.shape, params) == {"scale": (1, 1), "shared": {"b": (4,), "w": (4, 4)}}
    w, b = np.asarray(params["shared"]["w"]), np.asarray(params["shared"]["b"])
    expected = (np.tanh(x @ w + b) @ w + b) * 1.0
    np.testing.assert_allclose(Tied()(params, x), expected, rtol=1e-5, atol=1e-6)


def test_block_init_spends_no_flops_on_the_forward_pass():
    """The forward pass traced by init is dead code that XLA removes: init's cost is that of
    drawing the parameters, the same for a batch of 1 and of 4096."""
    model = Tied()

    def init_flops(batch):
        def init(key):  # what Block.init compiles: the forward traced on zeros, params kept
            return model.init_traced(key, jnp.zeros((batch, 512), jnp.float32))

        return jax.jit(init).lower(KEY).compile().cost_analysis()["flops"]

    big = jax.ShapeDtypeStruct((4096, 512), jnp.float32)
    params, _ = model.init(KEY, big)
    flops_apply = jax.jit(model.__call__).lower(params, big).compile().cost_analysis()["flops"]
    assert flops_apply > 4e9
    assert init_flops(4096) == pytest.approx(init_flops(1), rel=1e-3)
    assert init_flops(4096) < 0.01 * flops_apply


@dataclasses.dataclass(frozen=True)
class Deep(Block):
    """Nested blocks, a shared child, own parameters, equal parts, batch-norm state, a scan."""

    def forward(self, scope: Scope, x):
        h = scope("tied", Tied(), x)
        h = scope("stack", nn.Sequential(Dense(8), nn.BatchNorm(), jnp.tanh, Dense(8)), h)
        h = scope("more", nn.Sequential(Dense(8), nn.BatchNorm(), jnp.tanh, Dense(8)), h)
        h = scope("repeat", nn.Repeat(nn.Sequential(Dense(8), jnp.tanh), 3), h)
        return h * scope.param("gain", jax.nn.initializers.normal(1.0), (1, 8))


def _bits(tree):
    return jax.tree.map(
        lambda a: np.asarray(
            jax.random.key_data(a) if jnp.issubdtype(a.dtype, jax.dtypes.prng_key) else a
        ).view(np.uint8),
        tree,
    )


def test_block_init_by_parts_equals_the_one_program_init():
    """init runs each part on its own (identical blocks compile once); the params and state are
    bit for bit those of the whole init compiled as one program, also under jit."""
    x = jnp.ones((2, 5))
    one_program = jax.jit(Deep().init)(KEY, x)  # traced key: the whole init as one program
    by_parts = Deep().init(KEY, x)
    assert jax.tree.structure(by_parts) == jax.tree.structure(one_program)
    jax.tree.map(np.testing.assert_array_equal, _bits(by_parts), _bits(one_program))
    other = Deep().init(jax.random.key(1), x)  # a new key gives new values
    assert not np.array_equal(other[0]["stack"]["0"]["w"], by_parts[0]["stack"]["0"]["w"])

    stack = nn.Sequential(*[nn.Sequential(Dense(6), jnp.tanh) for _ in range(7)])
    params, _ = stack.init(KEY, jnp.ones((2, 6)))
    x_struct = jax.ShapeDtypeStruct((2, 6), jnp.float32)
    key_struct = jax.ShapeDtypeStruct((), KEY.dtype)
    groups, _ = core._recorded_init(
        stack, jax.tree.structure(x_struct), (x_struct,), key_struct, False
    )
    assert [len(paths) for _, paths in groups] == [7]  # seven equal Dense(6): one part
    assert len({np.asarray(params[str(i)]["0"]["w"]).tobytes() for i in range(7)}) == 7


def test_child_keys_depend_on_names_not_order():
    k1, k2 = derive_key(KEY, "a"), derive_key(KEY, "b")
    assert not np.array_equal(jax.random.key_data(k1), jax.random.key_data(k2))
    np.testing.assert_array_equal(
        jax.random.key_data(derive_key(KEY, "a")), jax.random.key_data(k1)
    )


def test_block_rng_is_required_and_deterministic():
    x = jnp.zeros((2, 3))
    with pytest.raises(RngError, match=r"Noisy at <root>: needs randomness.*rng=None"):
        Noisy()({}, x)
    a = Noisy()({}, x, rng=jax.random.key(1))
    b = Noisy()({}, x, rng=jax.random.key(1))
    c = Noisy()({}, x, rng=jax.random.key(2))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_state_is_threaded_and_required():
    params, state = Counter().init(KEY, jnp.zeros(2))
    assert state == {"count": {"calls": 0}}
    _, state = Counter().apply(params, state, jnp.ones(2))
    _, state = jax.jit(Counter().apply)(params, state, jnp.ones(2))
    assert int(state["count"]["calls"]) == 2
    with pytest.raises(ParamsError, match=r"CountCalls at 'count': missing state 'calls'"):
        Counter()(params, jnp.ones(2))


def test_name_reuse_for_a_different_layer_is_an_error():
    @dataclasses.dataclass(frozen=True)
    class Clash(Block):
        def forward(self, scope, x):
            return scope("a", Dense(3), scope("a", Dense(2), x))

    with pytest.raises(ParamsError, match="name 'a' is used for two different things"):
        Clash().init(KEY, jnp.zeros((1, 2)))


def test_unhashable_hyperparameters_are_reported():
    @dataclasses.dataclass(frozen=True)
    class Listy(Block):
        widths: list

        def forward(self, scope, x):
            return x

    with pytest.raises(NNJaxError, match="must be hashable"):
        Listy([1, 2]).init(KEY, jnp.zeros(2))


def test_params_must_be_a_dict():
    @dataclasses.dataclass(frozen=True)
    class One(Block):
        def forward(self, scope, x):
            return scope("d", Dense(1), x)

    with pytest.raises(ParamsError, match="params must be a dict, given tuple"):
        One()((), jnp.zeros((1, 2)))


# --------------------------------------------------------------------------------------------
# Side inputs: one mapping, carried to every layer; names nobody reads are errors.


@dataclasses.dataclass(frozen=True)
class Scale(ParameterFree):
    """Multiplies by the side input "scale" when given (a parameter-free layer: only maths)."""

    def transform(self, x, call):
        scale = self.side_input(call, "scale")
        return x if scale is None else x * scale[..., None]


@dataclasses.dataclass(frozen=True)
class Shift(Block):
    """Reads "shift" itself and passes a changed side to one child."""

    def forward(self, scope, x):
        h = scope("scaled", Scale(), x)
        shift = scope.side_input("shift")  # side inputs are optional: init runs without them
        h = h if shift is None else h + shift
        return scope("unscaled", Scale(), h, side={})


def test_side_inputs_reach_nested_children_through_combinators():
    x = np.arange(6.0, dtype=np.float32).reshape(2, 3)
    scale, shift = np.array([2.0, -1.0], np.float32), np.float32(0.5)
    model = Sequential(Shift(), Scale())
    params, _ = model.init(KEY, x)
    y = jax.jit(lambda x, side: model(params, x, side=side))(x, {"scale": scale, "shift": shift})
    # Shift scales once, adds, passes an empty side to its second child; Sequential's second
    # child scales again.
    expected = ((x * scale[:, None]) + shift) * scale[:, None]
    np.testing.assert_allclose(y, expected, rtol=1e-6)


def test_a_side_input_no_layer_reads_is_an_error():
    model = Sequential(Dense(2), Scale())
    params, _ = model.init(KEY, jnp.zeros((2, 3)))
    with pytest.raises(ConfigError, match=r"side inputs \['scael'\] were given but no layer"):
        model(params, jnp.zeros((2, 3)), side={"scale": jnp.ones(2), "scael": jnp.ones(2)})
    with pytest.raises(ConfigError, match="side must be a mapping"):
        model(params, jnp.zeros((2, 3)), side=jnp.ones(2))
    with pytest.raises(ConfigError, match="train must be True or False"):
        model(params, jnp.zeros((2, 3)), train=1)


# --------------------------------------------------------------------------------------------
# Taps: read and replace values at layer paths, under jit.


@dataclasses.dataclass(frozen=True)
class Squares(ParameterFree):
    def transform(self, x, call):
        return tap("squared", x * x) + 1.0


def test_taps_capture_child_outputs_and_named_values_under_jit():
    model = Sequential(Dense(3), Squares())
    x = np.random.default_rng(1).standard_normal((2, 4)).astype(np.float32)
    params, _ = model.init(KEY, x)

    @jax.jit
    def run(params, x):
        with tapping() as taps:
            y = model(params, x)
        return y, taps.values

    y, values = run(params, x)
    h = x @ np.asarray(params["0"]["w"]) + np.asarray(params["0"]["b"])
    assert sorted(values) == ["0", "1", "1/squared"]
    np.testing.assert_allclose(values["0"], h, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(values["1/squared"], h * h, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(y, h * h + 1, rtol=1e-5, atol=1e-6)


def test_taps_edit_values_and_select_by_pattern():
    model = Sequential(Dense(3), Squares())
    x = np.random.default_rng(1).standard_normal((2, 4)).astype(np.float32)
    params, _ = model.init(KEY, x)
    zero_unit_1 = {"0": lambda h: h.at[:, 1].set(0.0)}
    with tapping(capture="*squared", edit=zero_unit_1) as taps:
        y = model(params, x)
    edited = dict(
        params,
        **{"0": {"w": params["0"]["w"].at[:, 1].set(0.0), "b": params["0"]["b"].at[1].set(0.0)}},
    )
    np.testing.assert_allclose(y, model(edited, x), rtol=1e-6)
    assert list(taps.values) == ["1/squared"]
    assert tap("outside", 3) == 3  # no tapping active: the value passes through


# --------------------------------------------------------------------------------------------
# Layers are configs: readable repr, pickle round trip; errors for bad construction.


def test_layers_print_as_configs_and_pickle():
    model = Sequential(Dense(4, w_init=initializers.normal(0.5)), jax.nn.relu, Dense(1))
    text = repr(model)
    assert "0x" not in text
    assert "Dense(features=4, w_init=normal(stddev=0.5))" in text
    assert "Lambda(nn_jax.activations.relu)" in text
    clone = pickle.loads(pickle.dumps(model))
    assert clone == model and hash(clone) == hash(model)
    x = jnp.ones((2, 3))
    params, _ = model.init(KEY, x)
    np.testing.assert_array_equal(clone(params, x), model(params, x))


def test_a_layer_class_instead_of_an_instance_is_an_error():
    with pytest.raises(ConfigError, match=r"given the class Dense; construct it first"):
        Sequential(Dense)


def test_rank_errors_read_as_ranges():
    with pytest.raises(ShapeError, match=r"input must have rank >= 1, given rank 0"):
        Dense(2).init(KEY, jnp.zeros(()))
    with pytest.raises(ShapeError, match=r"x must have rank 2 to 4, given rank 1"):
        Dense(2).check_rank(jnp.zeros(3), 2, 4, what="x")

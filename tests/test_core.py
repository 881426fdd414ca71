"""The layer protocol itself: Block/Scope init derivation, sharing, rng, state, errors."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nn_jax import Block, Dense, Lambda, NNJaxError, ParamsError, RngError, Scope
from nn_jax.core import derive_key

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
class CountCalls(Lambda):
    fn: object = None

    def init(self, key, x):
        return {}, {"calls": jnp.zeros((), jnp.int32)}

    def apply(self, params, state, x, *, rng=None, train=False):
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
    from nn_jax.core import _jit_init

    model = Tied()

    def init_flops(batch):
        leaves, treedef = jax.tree.flatten(jax.ShapeDtypeStruct((batch, 512), jnp.float32))
        return (
            _jit_init.lower(model, treedef, tuple(leaves), KEY).compile().cost_analysis()["flops"]
        )

    big = jax.ShapeDtypeStruct((4096, 512), jnp.float32)
    params, _ = model.init(KEY, big)
    flops_apply = jax.jit(model.__call__).lower(params, big).compile().cost_analysis()["flops"]
    assert flops_apply > 4e9
    assert init_flops(4096) == pytest.approx(init_flops(1), rel=1e-3)
    assert init_flops(4096) < 0.01 * flops_apply


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

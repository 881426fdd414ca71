"""Normalization layers against NumPy and their published equations; BatchNorm's state."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nn_jax import initializers
from nn_jax.combinators import Sequential
from nn_jax.errors import ConfigError, ParamsError, ShapeError
from nn_jax.normalization import BatchNorm, GroupNorm, InstanceNorm, LayerNorm, RMSNorm

KEY = jax.random.key(0)
EPS = 1e-5


def _random_affine(layer, x, seed=1):
    """Params of ``layer`` replaced by random values (so scale and b are really exercised)."""
    params, state = layer.init(KEY, x)
    rng = np.random.default_rng(seed)
    return {k: jnp.asarray(rng.standard_normal(v.shape), v.dtype) for k, v in params.items()}, state


# --------------------------------------------------------------------------------------------
# BatchNorm


def test_batch_norm_train_output_has_zero_mean_unit_variance_per_channel():
    x = 3.0 + 2.0 * np.random.default_rng(0).standard_normal((16, 5, 5, 4)).astype(np.float32)
    bn = BatchNorm()
    params, state = bn.init(KEY, x)
    y, _ = bn.apply(params, state, x, train=True)
    y = np.asarray(y, np.float64)
    np.testing.assert_allclose(y.mean(axis=(0, 1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(y.var(axis=(0, 1, 2)), 1.0, atol=1e-4)


def test_batch_norm_running_stats_follow_momentum_formula_over_three_steps():
    """mean_{t+1} = m * mean_t + (1 - m) * mean(x_t); var likewise with the biased batch var."""
    m = 0.8
    bn = BatchNorm(momentum=m, epsilon=EPS)
    rng = np.random.default_rng(0)
    batches = [(1.0 + t) * rng.standard_normal((6, 3, 2)) + t for t in range(3)]
    params, state = _random_affine(bn, batches[0].astype(np.float32))
    step = jax.jit(lambda p, s, x: bn.apply(p, s, x, train=True))
    mean, var = np.zeros(2), np.ones(2)
    scale, bias = np.asarray(params["scale"]), np.asarray(params["b"])
    for x in batches:
        y, state = step(params, state, x.astype(np.float32))
        mu, sigma2 = x.mean(axis=(0, 1)), x.var(axis=(0, 1))
        np.testing.assert_allclose(
            y, (x - mu) / np.sqrt(sigma2 + EPS) * scale + bias, rtol=1e-4, atol=1e-4
        )
        mean, var = m * mean + (1 - m) * mu, m * var + (1 - m) * sigma2
        np.testing.assert_allclose(state["mean"], mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(state["var"], var, rtol=1e-5, atol=1e-6)
    assert state["mean"].dtype == jnp.float32 and state["var"].dtype == jnp.float32


def test_batch_norm_eval_uses_running_stats_and_keeps_state():
    bn = BatchNorm(epsilon=EPS)
    x = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    params, _ = _random_affine(bn, x)
    state = {"mean": jnp.array([0.5, -1.0, 2.0]), "var": jnp.array([4.0, 0.25, 1.0])}
    y, new_state = bn.apply(params, state, x, train=False)
    expected = (x - np.asarray(state["mean"])) / np.sqrt(np.asarray(state["var"]) + EPS)
    expected = expected * np.asarray(params["scale"]) + np.asarray(params["b"])
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)
    assert new_state is not state
    jax.tree.map(np.testing.assert_array_equal, new_state, state)
    # One example alone in eval gives the same answer (no batch statistics involved).
    np.testing.assert_allclose(bn.apply(params, state, x[:1])[0], y[:1], rtol=1e-6)


def test_batch_norm_without_state_raises_in_both_modes():
    bn = BatchNorm()
    params, _ = bn.init(KEY, jnp.zeros((4, 3)))
    for train in (False, True):
        with pytest.raises(
            ParamsError, match=r"BatchNorm at <root>: missing state 'mean'.*stateful"
        ):
            bn(params, jnp.ones((4, 3)), train=train)
    model = Sequential({"bn": BatchNorm()})
    params, _ = model.init(KEY, jnp.zeros((4, 3)))
    with pytest.raises(ParamsError, match=r"BatchNorm at 'bn': missing state 'mean'"):
        model.apply(params, {}, jnp.ones((4, 3)))


def test_batch_norm_state_round_trips_through_jit_and_scan():
    bn = BatchNorm(momentum=0.7)
    xs = np.random.default_rng(1).standard_normal((5, 8, 3)).astype(np.float32) * 2 + 1
    params, state0 = bn.init(KEY, xs[0])

    def body(state, x):
        y, state = bn.apply(params, state, x, train=True)
        return state, y

    scanned_state, scanned_ys = jax.jit(lambda s: jax.lax.scan(body, s, xs))(state0)
    state, ys = state0, []
    for x in xs:
        state, y = body(state, x)
        ys.append(y)
    jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-6), scanned_state, state)
    np.testing.assert_allclose(scanned_ys, np.stack(ys), rtol=1e-5, atol=1e-6)
    expected_mean = np.zeros(3)
    for x in xs:
        expected_mean = 0.7 * expected_mean + 0.3 * x.mean(0)
    np.testing.assert_allclose(scanned_state["mean"], expected_mean, rtol=1e-5, atol=1e-6)


def test_batch_norm_cumulative_average_threads_its_counter_through_scan():
    """momentum=None: after k steps the running mean is the plain mean of the k batch means."""
    bn = BatchNorm(momentum=None)
    xs = np.random.default_rng(4).standard_normal((3, 5, 2)).astype(np.float32) * 2 + 1
    params, state0 = bn.init(KEY, xs[0])

    def body(state, x):
        return bn.apply(params, state, x, train=True)[1], None

    state, _ = jax.jit(lambda s: jax.lax.scan(body, s, xs))(state0)
    assert int(state["num_batches_tracked"]) == 3
    np.testing.assert_allclose(state["mean"], xs.mean(axis=1).mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(state["var"], xs.var(axis=1).mean(axis=0), rtol=1e-5)


def test_batch_norm_axis_name_averages_statistics_over_the_mapped_axis():
    """vmap(axis_name=...) over 4 shards equals BatchNorm over the concatenated batch."""
    bn_global = BatchNorm(momentum=0.5)
    bn_sharded = BatchNorm(momentum=0.5, axis_name="devices")
    x = np.random.default_rng(2).standard_normal((4, 3, 5, 2)).astype(np.float32) * 3 + 1
    params, state = _random_affine(bn_global, x[0])
    sharded = jax.vmap(
        lambda shard: bn_sharded.apply(params, state, shard, train=True), axis_name="devices"
    )(x)
    y_ref, state_ref = bn_global.apply(params, state, x.reshape(12, 5, 2), train=True)
    np.testing.assert_allclose(sharded[0].reshape(12, 5, 2), y_ref, rtol=1e-5, atol=1e-5)
    for name in ("mean", "var"):
        np.testing.assert_allclose(
            sharded[1][name], np.broadcast_to(state_ref[name], (4, 2)), rtol=1e-5
        )
    # Without axis_name each shard would use its own statistics: a real difference.
    local = jax.vmap(lambda shard: bn_global.apply(params, state, shard, train=True)[0])(x)
    assert not np.allclose(local.reshape(12, 5, 2), y_ref, atol=1e-3)


def test_batch_norm_channels_first_axis():
    x = np.random.default_rng(3).standard_normal((4, 3, 2, 2)).astype(np.float32)
    first, last = BatchNorm(axis=1), BatchNorm()
    params, state = first.init(KEY, x)
    y_first, s_first = first.apply(params, state, x, train=True)
    y_last, s_last = last.apply(params, state, x.transpose(0, 2, 3, 1), train=True)
    np.testing.assert_allclose(
        y_first, np.asarray(y_last).transpose(0, 3, 1, 2), rtol=1e-5, atol=1e-6
    )
    jax.tree.map(np.testing.assert_allclose, s_first, s_last)


def test_batch_norm_bfloat16_inputs_keep_float32_state():
    bn = BatchNorm()
    x = jnp.asarray(np.random.default_rng(0).standard_normal((8, 4)), jnp.bfloat16)
    params, state = bn.init(KEY, x)
    y, state = bn.apply(params, state, x, train=True)
    assert y.dtype == jnp.float32 and state["mean"].dtype == jnp.float32
    y16, _ = BatchNorm(dtype=jnp.bfloat16).apply(params, state, x, train=True)
    assert y16.dtype == jnp.bfloat16


def test_batch_norm_state_shape_error():
    bn = BatchNorm()
    params, state = bn.init(KEY, jnp.zeros((4, 3)))
    with pytest.raises(ShapeError, match=r"state 'mean' has shape \(3,\), expected \(5,\)"):
        bn.apply(params, state, jnp.zeros((4, 5)))


# --------------------------------------------------------------------------------------------
# LayerNorm, RMSNorm, GroupNorm, InstanceNorm


@pytest.mark.parametrize("axis", [-1, (-2, -1), (1,)])
def test_layer_norm_matches_numpy(axis):
    x = np.random.default_rng(0).standard_normal((2, 3, 4)) * 2 + 1
    layer = LayerNorm(axis=axis, epsilon=EPS)
    params, _ = _random_affine(layer, x.astype(np.float32))
    axes = (axis,) if isinstance(axis, int) else axis
    shape = tuple(x.shape[a] for a in axes)
    assert params["scale"].shape == shape
    full = [1, 1, 1]
    for a in axes:
        full[a] = x.shape[a]
    mu, var = x.mean(axis=axes, keepdims=True), x.var(axis=axes, keepdims=True)
    expected = (x - mu) / np.sqrt(var + EPS) * np.asarray(params["scale"]).reshape(full)
    expected = expected + np.asarray(params["b"]).reshape(full)
    np.testing.assert_allclose(layer(params, x.astype(np.float32)), expected, rtol=1e-4, atol=1e-5)


def test_rms_norm_matches_equation():
    x = np.random.default_rng(0).standard_normal((3, 6)) + 0.5
    layer = RMSNorm()
    params, _ = _random_affine(layer, x.astype(np.float32))
    assert set(params) == {"scale"}
    expected = x / np.sqrt((x**2).mean(-1, keepdims=True) + 1e-6) * np.asarray(params["scale"])
    np.testing.assert_allclose(layer(params, x.astype(np.float32)), expected, rtol=1e-5, atol=1e-6)


def test_rms_norm_with_bias_is_layer_norm_without_centering():
    x = np.random.default_rng(1).standard_normal((2, 3, 4)) + 2.0
    layer = RMSNorm(use_bias=True, axis=(1, 2), epsilon=EPS)
    params, _ = _random_affine(layer, x.astype(np.float32))
    assert set(params) == {"scale", "b"} and params["b"].shape == (3, 4)
    rms = np.sqrt((x**2).mean(axis=(1, 2), keepdims=True) + EPS)
    expected = x / rms * np.asarray(params["scale"]) + np.asarray(params["b"])
    np.testing.assert_allclose(layer(params, x.astype(np.float32)), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "make",
    [
        lambda **kw: BatchNorm(**kw),
        lambda **kw: LayerNorm(**kw),
        lambda **kw: RMSNorm(use_bias=True, **kw),
        lambda **kw: GroupNorm(2, **kw),
        lambda **kw: InstanceNorm(**kw),
    ],
)
def test_norm_params_are_scale_and_b_made_by_scale_init_and_b_init(make):
    layer = make(scale_init=initializers.constant(2.0), b_init=initializers.constant(0.5))
    params, _ = layer.init(KEY, jnp.zeros((2, 3, 4)))
    assert set(params) == {"scale", "b"}
    np.testing.assert_array_equal(params["scale"], np.full(params["scale"].shape, 2.0))
    np.testing.assert_array_equal(params["b"], np.full(params["b"].shape, 0.5))


def _np_group_norm(x, groups, scale, bias):
    n, c = x.shape[0], x.shape[-1]
    g = x.reshape(n, -1, groups, c // groups)
    mu = g.mean(axis=(1, 3), keepdims=True)
    var = g.var(axis=(1, 3), keepdims=True)
    return ((g - mu) / np.sqrt(var + EPS)).reshape(x.shape) * scale + bias


@pytest.mark.parametrize("groups", [1, 2, 6])
def test_group_norm_matches_numpy(groups):
    x = np.random.default_rng(groups).standard_normal((2, 3, 4, 6)) * 3 - 1
    layer = GroupNorm(groups)
    params, _ = _random_affine(layer, x.astype(np.float32))
    expected = _np_group_norm(x, groups, np.asarray(params["scale"]), np.asarray(params["b"]))
    np.testing.assert_allclose(layer(params, x.astype(np.float32)), expected, rtol=1e-4, atol=1e-5)


def test_instance_norm_normalizes_each_example_and_channel_over_space():
    x = np.random.default_rng(0).standard_normal((2, 5, 4, 3)) * 2 + 3
    layer = InstanceNorm(use_scale=False, use_bias=False)
    params, _ = layer.init(KEY, x)
    assert params == {}
    y = np.asarray(layer(params, x.astype(np.float32)), np.float64)
    np.testing.assert_allclose(y.mean(axis=(1, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(y.var(axis=(1, 2)), 1, atol=1e-4)
    params, _ = _random_affine(InstanceNorm(), x)
    expected = _np_group_norm(x, 3, np.asarray(params["scale"]), np.asarray(params["b"]))
    np.testing.assert_allclose(
        InstanceNorm()(params, x.astype(np.float32)), expected, rtol=1e-4, atol=1e-5
    )


def test_errors_and_config():
    with pytest.raises(
        ShapeError, match=r"GroupNorm at 'gn': input channels 5 .* divisible by num_groups=2"
    ):
        Sequential({"gn": GroupNorm(2)}).init(KEY, jnp.zeros((2, 3, 5)))
    with pytest.raises(
        ShapeError, match=r"InstanceNorm at <root>: input \(N, \*spatial, C\) must have rank"
    ):
        InstanceNorm()({}, jnp.zeros((2, 3)))
    with pytest.raises(
        ShapeError, match=r"LayerNorm at <root>: axis=\(2,\) is out of range for an input of rank 2"
    ):
        LayerNorm(axis=2).init(KEY, jnp.zeros((2, 3)))
    with pytest.raises(
        ConfigError, match=r"BatchNorm: momentum must be in \[0, 1\] or None, given 1.5"
    ):
        BatchNorm(momentum=1.5)
    with pytest.raises(ConfigError, match=r"GroupNorm: num_groups must be a positive int"):
        GroupNorm(0)
    with pytest.raises(ConfigError, match=r"LayerNorm: axis has repeated entries"):
        LayerNorm(axis=(-1, -1))

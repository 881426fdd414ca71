"""Mixed precision (nn_jax.precision) and dynamic loss scaling in make_step.

* Policy: parsing, text form, validation.
* MixedPrecision is transparent: the wrapped model's params tree (same keys, shapes and values
  from the same key), its tap paths, and, under a float32 policy, its exact outputs.
* bfloat16 forward vs float32 within a bound derived from bfloat16's unit roundoff
  u = 2**-8 (8 significant bits):
  - MLP: first-order error analysis of ``y = W_L(... relu(W_1 x + b_1) ...) + b_L`` with every
    input, weight, bias and layer output rounded once (relative error <= u each) gives
    ``|y_bf16 - y| <= 4 L u * m`` elementwise, where ``m`` is the same network run on absolute
    values, ``|W_L| (... (|W_1| |x| + |b_1|) ...) + |b_L|`` (relu is 1-Lipschitz; 4 roundings
    per layer: its input, weight, bias and output); computed here in NumPy float64.
  - TransformerLM (normalized residual blocks, so errors are not amplified): each rounded
    matmul or norm output adds at most ``u`` relative error, so the logits' relative RMS error
    is at most ``n u`` with ``n`` the rounded operations on the path (9 per block: norm, q, k,
    v, scores, heads, output projection, norm, 2 MLP matmuls; plus embedding, final norm and
    head).
* Half-precision computation really happens (tapped activations are bfloat16), norms' and
  softmax's reductions run in float32 (read from the jaxpr), losses of bfloat16 predictions
  equal the float32 losses of the same values, gradients w.r.t. float32 params are float32.
* A rule table's per-path compute/storage dtypes override the policy.
* Dynamic loss scaling with float16: an overflowing step is skipped (params, layer state and
  optimizer state bit-identical), the scale halves, training then goes on and the loss falls;
  growth after ``growth_interval`` finite steps; a power-of-two scale in float32 equals the
  plain step bit for bit (scaling by 2**k is exact in binary floating point).
"""

from __future__ import annotations

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nn_jax import (
    BatchNorm,
    Dense,
    LayerNorm,
    Monitor,
    MultiHeadAttention,
    Sequential,
    losses,
    models,
)
from nn_jax.core import tapping
from nn_jax.errors import ArgumentError, ConfigError
from nn_jax.precision import (
    DynamicLossScale,
    LossScaledState,
    LossScaleState,
    MixedPrecision,
    Policy,
)
from nn_jax.rules import Rule, Rules
from nn_jax.train import Supervised, TrainState, make_stateful_train_step, make_step

KEY = jax.random.key(0)
U_BF16 = 2.0**-8  # bfloat16 unit roundoff: 8 significant bits


def _same(a, b) -> bool:
    """Same tree structure, dtypes and bits."""
    return jax.tree.structure(a) == jax.tree.structure(b) and all(
        x.dtype == y.dtype and np.array_equal(np.asarray(x), np.asarray(y))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


# --------------------------------------------------------------------------------------------
# Policy.


def test_policy_parses_prints_and_hashes():
    policy = Policy.parse("compute=float16, params=float32")
    assert policy == Policy("float32", jnp.float16, "float32")
    assert hash(policy) == hash(Policy(compute_dtype="float16"))
    assert str(policy) == "params=float32,compute=float16,output=float32"
    assert Policy.parse(str(policy)) == policy
    assert repr(Policy()) == (
        "Policy(param_dtype='float32', compute_dtype='bfloat16', output_dtype='float32')"
    )


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("params=float32,compute=int8", "compute_dtype must be a floating dtype.*int8"),
        ("params=float32,weights=bfloat16", "cannot read 'weights=bfloat16'"),
        ("compute=bfloat16,compute=float16", "cannot read 'compute=float16'"),
    ],
)
def test_bad_policies_are_config_errors(text, match):
    with pytest.raises(ConfigError, match=match):
        Policy.parse(text)


def test_mixed_precision_rejects_a_bad_policy_and_rules():
    with pytest.raises(ConfigError, match="policy must be a Policy"):
        MixedPrecision(Dense(2), policy=3)
    with pytest.raises(ArgumentError, match=r"rules must be a nn_jax\.Rules"):
        MixedPrecision(Dense(2), rules={"*": "bfloat16"})


# --------------------------------------------------------------------------------------------
# The wrapper: transparent, and within bfloat16 tolerance.

MLP = models.MLP((64, 64, 8))
X = np.random.default_rng(0).standard_normal((16, 32)).astype(np.float32)


@pytest.fixture(scope="module")
def mlp_params():
    return MLP.init(KEY, X)[0]


def test_params_tree_is_the_unwrapped_models(mlp_params):
    wrapped, _ = MixedPrecision(MLP).init(KEY, X)
    assert _same(wrapped, mlp_params)  # same keys, shapes, float32 dtype and values
    stored, _ = MixedPrecision(MLP, Policy(param_dtype="bfloat16")).init(KEY, X)
    assert {a.dtype for a in jax.tree.leaves(stored)} == {jnp.dtype(jnp.bfloat16)}
    assert _same(stored, jax.tree.map(lambda a: a.astype(jnp.bfloat16), mlp_params))


def test_float32_policy_is_the_model_itself(mlp_params):
    policy = "params=float32,compute=float32,output=float32"
    got = MixedPrecision(MLP, policy)(mlp_params, X)
    assert _same(got, MLP(mlp_params, X))


def _abs_network(params, x, layers):
    """``|W_L| (... (|W_1| |x| + |b_1|) ...) + |b_L|`` in float64."""
    m = np.abs(np.asarray(x, np.float64))
    for name in layers:
        m = m @ np.abs(np.asarray(params[name]["w"], np.float64))
        m = m + np.abs(np.asarray(params[name]["b"], np.float64))
    return m


def test_mlp_bfloat16_forward_within_derived_bound(mlp_params):
    model = MixedPrecision(MLP)
    with tapping(capture="*") as taps:
        y = model(mlp_params, X)
    assert y.dtype == jnp.float32
    assert taps.values["dense_0"].dtype == jnp.bfloat16  # the matmuls ran in bfloat16
    reference = np.asarray(MLP(mlp_params, X), np.float64)
    err = np.abs(np.asarray(y, np.float64) - reference)
    layers = ["dense_0", "dense_1", "dense_2"]
    bound = 4 * len(layers) * U_BF16 * _abs_network(mlp_params, X, layers)
    assert np.all(err <= bound), (err / bound).max()
    assert err.max() > 0  # not computed in float32 after all


def test_tap_paths_are_the_unwrapped_models(mlp_params):
    with tapping(capture="*") as plain:
        MLP(mlp_params, X)
    with tapping(capture="*") as wrapped:
        MixedPrecision(MLP)(mlp_params, X)
    assert list(wrapped.values) == list(plain.values)


def test_transformer_lm_bfloat16_forward_within_derived_bound():
    num_layers = 2
    lm = models.TransformerLM(50, num_layers=num_layers, d_model=32, num_heads=4, max_length=16)
    tokens = np.random.default_rng(1).integers(0, 50, (2, 16)).astype(np.int32)
    params, state = lm.init(KEY, tokens)
    wrapped = MixedPrecision(lm)
    assert _same(wrapped.init(KEY, tokens), (params, state))
    y = jax.jit(lambda p, s, t: wrapped.apply(p, s, t)[0])(params, state, tokens)
    assert y.dtype == jnp.float32
    reference = jax.jit(lambda p, s, t: lm.apply(p, s, t)[0])(params, state, tokens)
    reference = np.asarray(reference, np.float64)
    diff = np.asarray(y, np.float64) - reference
    relative_rms = np.sqrt(np.mean(diff**2) / np.mean(reference**2))
    rounded_ops = 9 * num_layers + 3
    assert 0 < relative_rms <= rounded_ops * U_BF16, relative_rms


def test_gradients_of_float32_params_are_float32(mlp_params):
    y = np.random.default_rng(2).standard_normal((16, 8)).astype(np.float32)

    def loss(model, p):
        return losses.mse(model(p, X), y)

    grads = jax.jit(jax.grad(lambda p: loss(MixedPrecision(MLP), p)))(mlp_params)
    reference = jax.jit(jax.grad(lambda p: loss(MLP, p)))(mlp_params)
    assert {g.dtype for g in jax.tree.leaves(grads)} == {jnp.dtype(jnp.float32)}
    # The backward pass rounds about as often as the forward one (4 per layer, each way); a
    # relu whose input changes sign under rounding moves single entries, so compare norms.
    g, r = (np.concatenate([np.ravel(a) for a in jax.tree.leaves(t)]) for t in (grads, reference))
    assert np.linalg.norm(g - r) <= 8 * 3 * U_BF16 * np.linalg.norm(r)


def test_rules_override_the_policy_per_path(mlp_params):
    rules = Rules(Rule("dense_2/*", compute_dtype="float32"), Rule("dense_0/*", dtype="bfloat16"))
    model = MixedPrecision(MLP, rules=rules)
    params, _ = model.init(KEY, X)
    dtypes = jax.tree.map(lambda a: a.dtype.name, params)
    assert dtypes["dense_0"] == {"w": "bfloat16", "b": "bfloat16"}  # storage from the rule
    assert dtypes["dense_1"] == {"w": "float32", "b": "float32"}  # storage from the policy
    with tapping(capture="*") as taps:
        model(params, X)
    assert taps.values["dense_1"].dtype == jnp.bfloat16  # the policy's compute dtype
    assert taps.values["dense_2"].dtype == jnp.float32  # the rule's


# --------------------------------------------------------------------------------------------
# Norms, softmax and losses in float32.


def _operand_dtypes(fn, *args, primitive):
    """The dtypes of the first operand of each ``primitive`` in ``fn``'s jaxpr (nested too)."""
    found = []

    def visit(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == primitive:
                found.append(eqn.invars[0].aval.dtype)
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                visit(sub)

    visit(jax.make_jaxpr(fn)(*args).jaxpr)
    return found


def test_norm_statistics_and_softmax_run_in_float32():
    x = jnp.asarray(np.random.default_rng(3).standard_normal((2, 5, 8)), jnp.bfloat16)
    norm = MixedPrecision(LayerNorm())
    params, _ = norm.init(KEY, x)
    sums = _operand_dtypes(lambda p, x: norm(p, x), params, x, primitive="reduce_sum")
    assert sums and set(sums) == {jnp.dtype(jnp.float32)}
    attention = MixedPrecision(MultiHeadAttention(2))
    params, _ = attention.init(KEY, x)
    exps = _operand_dtypes(lambda p, x: attention(p, x), params, x, primitive="exp")
    assert exps and set(exps) == {jnp.dtype(jnp.float32)}


LOSSES = {
    "softmax_cross_entropy_with_integer_labels": lambda g: g.integers(0, 5, 16),
    "softmax_cross_entropy": lambda g: np.eye(5, dtype=np.float32)[g.integers(0, 5, 16)],
    "binary_cross_entropy_with_logits": lambda g: g.random((16, 5)).astype(np.float32),
    "mse": lambda g: g.standard_normal((16, 5)).astype(np.float32),
}


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_losses_of_bfloat16_predictions_are_the_float32_losses(name):
    g = np.random.default_rng(4)
    logits = jnp.asarray(3 * g.standard_normal((16, 5)), jnp.bfloat16)
    targets = LOSSES[name](g)
    fn = getattr(losses, name)
    value = fn(logits, targets)
    assert value.dtype == jnp.float32
    np.testing.assert_array_equal(value, fn(logits.astype(jnp.float32), targets))


# --------------------------------------------------------------------------------------------
# Dynamic loss scaling.


def test_loss_scale_validates_its_settings():
    with pytest.raises(ConfigError, match="factor must be > 1"):
        DynamicLossScale(factor=1)
    with pytest.raises(ConfigError, match="growth_interval must be a positive int"):
        DynamicLossScale(growth_interval=0)
    with pytest.raises(ConfigError, match="initial must be a positive finite number"):
        DynamicLossScale(initial=float("inf"))


def test_loss_scale_needs_its_state_in_opt_state():
    model, opt = Dense(1), optax.sgd(0.1)
    ts = TrainState.create(model, opt, KEY, jnp.zeros((4, 2)))
    step = make_stateful_train_step(model, losses.mse, opt, loss_scale=DynamicLossScale())
    with pytest.raises(ArgumentError, match=r"loss_scale.wrap\(optimizer\)"):
        step(ts, (jnp.ones((4, 2)), jnp.ones((4, 1))))
    with pytest.raises(ArgumentError, match=r"loss_scale must be a nn_jax\.DynamicLossScale"):
        make_stateful_train_step(model, losses.mse, opt, loss_scale=2.0**15)


FLOAT16 = "params=float32,compute=float16,output=float32"


def _regression(seed, n=32):
    g = np.random.default_rng(seed)
    x = g.standard_normal((n, 4)).astype(np.float32)
    return x, np.tanh(x @ g.standard_normal((4, 2))).astype(np.float32)


def test_float16_overflow_is_skipped_and_training_goes_on():
    # 2**22 times a loss gradient of ~0.1 overflows float16 (max 65504) in the backward pass.
    loss_scale = DynamicLossScale(initial=2.0**22, growth_interval=1000)
    body = Sequential(Dense(16), BatchNorm(), jax.nn.relu, Dense(2))
    model = MixedPrecision(body, FLOAT16)
    opt = loss_scale.wrap(optax.adam(1e-2))
    batch = _regression(0)
    ts = TrainState.create(model, opt, KEY, batch[0])
    assert isinstance(ts.opt_state, LossScaledState)
    # With a loss scale a non-finite step is skipped even when the monitor says "ignore".
    monitor = Monitor(on_nonfinite="ignore")
    step = make_step(Supervised(model, losses.mse), opt, monitor=monitor, loss_scale=loss_scale)

    new, logs = jax.block_until_ready(step(ts, batch))
    assert bool(logs["nonfinite"]) and float(logs["loss_scale"]) == 2.0**22
    assert _same(
        (new.params, new.state, new.opt_state.inner), (ts.params, ts.state, ts.opt_state.inner)
    )
    assert new.opt_state.loss_scale == LossScaleState(2.0**21, 0)
    assert int(new.step) == 1

    finite_losses = []
    ts = new
    for _ in range(40):
        ts, logs = step(ts, batch)
        if not bool(logs["nonfinite"]):
            finite_losses.append(float(logs["loss"]))
    assert len(finite_losses) >= 30
    assert finite_losses[-1] < 0.5 * finite_losses[0]

    # A batch with a value past float16's range mid-training: skipped, the scale halves again.
    huge = (batch[0] * np.float32(1e6), batch[1])
    scale = float(ts.opt_state.loss_scale.scale)
    after, logs = step(ts, huge)
    assert bool(logs["nonfinite"])
    assert _same(
        (after.params, after.state, after.opt_state.inner),
        (ts.params, ts.state, ts.opt_state.inner),
    )
    assert float(after.opt_state.loss_scale.scale) == scale / 2
    _, logs = step(after, batch)
    assert not bool(logs["nonfinite"]) and float(logs["loss"]) <= finite_losses[-1] * 1.5


@pytest.fixture(scope="module")
def float32_setup():
    model = models.MLP((8, 2))
    batch = _regression(1, 8)
    return model, batch


def test_scale_grows_after_growth_interval_finite_steps(float32_setup):
    model, batch = float32_setup
    loss_scale = DynamicLossScale(initial=4.0, growth_interval=2, factor=2)
    opt = loss_scale.wrap(optax.sgd(0.1))
    ts = TrainState.create(model, opt, KEY, batch[0])
    step = make_stateful_train_step(model, losses.mse, opt, loss_scale=loss_scale)
    seen = []
    for _ in range(5):
        ts, _ = step(ts, batch)
        seen.append(tuple(float(v) for v in ts.opt_state.loss_scale))
    assert seen == [(4.0, 1), (8.0, 0), (8.0, 1), (16.0, 0), (16.0, 1)]


@pytest.mark.parametrize("initial", [1.0, 2.0**10])
def test_power_of_two_scale_in_float32_equals_the_plain_step(float32_setup, initial):
    model, batch = float32_setup
    inner = optax.adam(1e-2)
    loss_scale = DynamicLossScale(initial=initial)
    opt = loss_scale.wrap(inner)
    scaled_step = make_stateful_train_step(model, losses.mse, opt, loss_scale=loss_scale)
    plain_step = make_stateful_train_step(model, losses.mse, inner)
    scaled = TrainState.create(model, opt, KEY, batch[0])
    plain = TrainState.create(model, inner, KEY, batch[0])
    for _ in range(3):
        scaled, scaled_logs = scaled_step(scaled, batch)
        plain, plain_logs = plain_step(plain, batch)
    assert _same(scaled.params, plain.params)
    assert _same(scaled.opt_state.inner, plain.opt_state)
    assert float(scaled_logs["loss"]) == float(plain_logs["loss"])

"""Attribution against closed forms and NumPy: saliency, gradient x input, SmoothGrad,
Integrated Gradients (with completeness) and attention rollout."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nn_jax import Dense, Sequential, losses
from nn_jax.attribution import (
    attention_rollout,
    collect_attention_weights,
    completeness,
    gradient_times_input,
    integrated_gradients,
    output_fn,
    saliency,
    smooth_grad,
)
from nn_jax.data import load_digits
from nn_jax.errors import ArgumentError, ShapeError, ValueRangeError
from nn_jax.models import LeNet, TransformerEncoder
from nn_jax.train import make_train_step

KEY = jax.random.key(0)
RNG = np.random.default_rng(0)


@pytest.fixture(scope="module")
def linear():
    """A Dense with one output, its params (w: (5, 1), b: (1,)) and inputs (4, 5)."""
    model = Dense(1)
    params, state = model.init(KEY, jnp.zeros((1, 5)))
    params = {
        "w": jnp.asarray(RNG.standard_normal((5, 1)), jnp.float32),
        "b": jnp.asarray([0.7], jnp.float32),
    }
    x = jnp.asarray(RNG.standard_normal((4, 5)), jnp.float32)
    return model, params, state, x


@pytest.fixture(scope="module")
def mlp():
    """A small nonlinear classifier (tanh) with 3 classes on inputs (3, 4)."""
    model = Sequential(Dense(8), jnp.tanh, Dense(3))
    params, state = model.init(jax.random.key(1), jnp.zeros((1, 4)))
    x = jnp.asarray(RNG.standard_normal((3, 4)), jnp.float32)
    return model, params, state, x


@pytest.fixture(scope="module")
def cnn():
    """A small LeNet trained briefly on the 8x8 digits: model, params, test images, labels."""
    data = load_digits(image=True)
    model = LeNet(10, channels=(8, 16), kernel_size=3, hidden=(32,))
    params, _ = model.init(KEY, jnp.zeros((1, 8, 8, 1)))
    opt = optax.adam(3e-3)
    step = make_train_step(model, losses.softmax_cross_entropy_with_integer_labels, opt)
    opt_state = opt.init(params)
    order = np.random.default_rng(0).permutation(len(data.x_train))
    for i in range(150):
        idx = order[(i * 64) % (len(order) - 64) :][:64]
        params, opt_state, _ = step(params, opt_state, (data.x_train[idx], data.y_train[idx]))
    logits = model(params, data.x_test)
    accuracy = float(np.mean(np.argmax(logits, -1) == data.y_test))
    return model, params, data.x_test, data.y_test, accuracy


def test_saliency_of_linear_model_is_its_weights(linear):
    model, params, state, x = linear
    w = np.asarray(params["w"])[:, 0]
    expected = np.broadcast_to(w, x.shape)
    for target in (0, jnp.zeros((4,), jnp.int32), lambda y: y[0]):
        got = saliency(output_fn(model, params, state, target=target), x)
        np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_gradient_times_input_of_linear_model_without_bias(linear):
    model, params, state, x = linear
    params = {"w": params["w"], "b": jnp.zeros((1,))}
    f = output_fn(model, params, state, target=0)
    got = gradient_times_input(f, x)
    w = np.asarray(params["w"])[:, 0]
    np.testing.assert_allclose(got, np.asarray(x) * w, rtol=1e-6)
    np.testing.assert_allclose(got.sum(axis=1), np.asarray(x) @ w, rtol=1e-5)  # sums to f(x)


def test_integrated_gradients_is_exact_on_a_quadratic():
    """f(x) = x.A.x / 2 + c.x with symmetric A: the gradient is linear along the path, so the
    trapezoid rule is exact: IG = (x - x') * (A (x + x') / 2 + c)."""
    m = RNG.standard_normal((6, 6))
    a, c = (m + m.T) / 2, RNG.standard_normal(6)
    x, base = RNG.standard_normal((3, 6)), RNG.standard_normal((3, 6))

    def f(z):
        return 0.5 * jnp.einsum("bi,ij,bj->b", z, jnp.asarray(a, jnp.float32), z) + z @ jnp.asarray(
            c, jnp.float32
        )

    xj, bj = jnp.asarray(x, jnp.float32), jnp.asarray(base, jnp.float32)
    got = integrated_gradients(f, xj, baseline=bj, steps=3)
    expected = (x - base) * (((x + base) / 2) @ a + c)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    check = completeness(f, xj, got, baseline=bj)
    f_np = 0.5 * np.einsum("bi,ij,bj->b", x, a, x) + x @ c
    f_base = 0.5 * np.einsum("bi,ij,bj->b", base, a, base) + base @ c
    np.testing.assert_allclose(check.output_difference, f_np - f_base, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(check.attribution_sum, f_np - f_base, rtol=1e-5, atol=1e-5)
    assert float(jnp.max(check.error)) < 1e-4


def test_integrated_gradients_of_linear_model_is_exact(linear):
    """For f(x) = w.x + b and baseline 0: IG = w * x, and sums to f(x) - f(0) = w.x."""
    model, params, state, x = linear
    f = output_fn(model, params, state, target=0)
    got = integrated_gradients(f, x, steps=2)
    w = np.asarray(params["w"])[:, 0]
    np.testing.assert_allclose(got, np.asarray(x) * w, rtol=1e-5, atol=1e-6)
    check = completeness(f, x, got)
    np.testing.assert_allclose(check.output_difference, np.asarray(x) @ w, rtol=1e-5)
    assert float(jnp.max(check.relative_error)) < 1e-5


def test_integrated_gradients_completeness_on_trained_cnn(cnn):
    model, params, x_test, y_test, accuracy = cnn
    assert accuracy > 0.8  # the model learned something worth attributing
    x = jnp.asarray(x_test[:6])
    f = output_fn(model, params, {}, target=jnp.asarray(y_test[:6]))
    attributions = jax.jit(lambda x: integrated_gradients(f, x, steps=64))(x)
    assert attributions.shape == x.shape
    check = jax.jit(lambda x, a: completeness(f, x, a))(x, attributions)
    logits = np.asarray(model(params, x_test[:6]))
    zero_logits = np.asarray(model(params, np.zeros((1, 8, 8, 1), np.float32)))[0]
    difference = logits[np.arange(6), y_test[:6]] - zero_logits[y_test[:6]]
    np.testing.assert_allclose(check.output_difference, difference, rtol=1e-4, atol=1e-4)
    assert float(jnp.max(check.relative_error)) < 0.01, check


def test_smooth_grad_without_noise_is_saliency(mlp):
    model, params, state, x = mlp
    f = output_fn(model, params, state, target=1)
    got = jax.jit(lambda x: smooth_grad(f, x, key=KEY, num_samples=3, noise_scale=0.0))(x)
    np.testing.assert_allclose(got, jax.jit(lambda x: saliency(f, x))(x), rtol=1e-6)


def test_smooth_grad_is_the_mean_saliency_at_the_same_noisy_inputs(mlp):
    model, params, state, x = mlp
    f = output_fn(model, params, state, target=jnp.array([0, 1, 2]))
    got = jax.jit(lambda x: smooth_grad(f, x, key=KEY, num_samples=4, noise_scale=0.5))(x)
    noise = 0.5 * np.asarray(jax.random.normal(KEY, (4, *x.shape)))
    sal = jax.jit(lambda z: saliency(f, z))
    expected = np.mean([np.asarray(sal(x + noise[k])) for k in range(4)], axis=0)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(got, sal(x), atol=1e-3)  # the noise did something


def test_batched_equals_loop_and_works_under_jit_and_vmap(mlp):
    model, params, state, x = mlp
    targets = jnp.array([2, 0, 1])
    methods = {
        "saliency": saliency,
        "gradient_times_input": gradient_times_input,
        "integrated_gradients": lambda f, x: integrated_gradients(f, x, steps=8),
    }

    @functools.partial(jax.jit, static_argnames="name")
    def run(x, t, name):
        return methods[name](output_fn(model, params, state, target=t), x)

    for name in methods:
        batched = run(x, targets, name)
        loop = [run(x[i : i + 1], targets[i : i + 1], name)[0] for i in range(len(x))]
        np.testing.assert_allclose(batched, np.stack(loop), rtol=1e-5, atol=1e-6, err_msg=name)
    f = output_fn(model, params, state, target=targets)
    eager = saliency(f, x)
    np.testing.assert_allclose(run(x, targets, "saliency"), eager, rtol=1e-5, atol=1e-6)
    # vmap over an outer axis: two batches of 3, each with the same targets.
    both = jax.vmap(lambda xb: saliency(f, xb))(jnp.stack([x, -x]))
    np.testing.assert_allclose(both[0], eager, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(both[1], run(-x, targets, "saliency"), rtol=1e-5, atol=1e-6)


def _numpy_rollout(layers, residual=True, reduce=np.mean):
    out = None
    for w in layers:
        a = reduce(np.asarray(w, np.float64), axis=-3)
        if residual:
            a = 0.5 * a + 0.5 * np.eye(a.shape[-1])
        a = a / a.sum(-1, keepdims=True)
        out = a if out is None else np.einsum("bij,bjk->bik", a, out)
    return out


def _random_weights(shape):
    logits = RNG.standard_normal(shape)
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).astype(np.float32)


def test_attention_rollout_matches_numpy_for_two_layers():
    layers = [_random_weights((2, 3, 4, 4)) for _ in range(2)]
    got = attention_rollout(layers)
    a1 = 0.5 * layers[0].mean(1) + 0.5 * np.eye(4)
    a2 = 0.5 * layers[1].mean(1) + 0.5 * np.eye(4)
    a1, a2 = a1 / a1.sum(-1, keepdims=True), a2 / a2.sum(-1, keepdims=True)
    np.testing.assert_allclose(got, np.einsum("bij,bjk->bik", a2, a1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.sum(-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(
        attention_rollout(layers, residual=False, head_reduction="max"),
        _numpy_rollout(layers, residual=False, reduce=np.max),
        rtol=1e-5,
        atol=1e-6,
    )
    # A dict comes in natural layer order (block_2 before block_10), as jit would sort it.
    named = {"block_10/attention/weights": layers[1], "block_2/attention/weights": layers[0]}
    np.testing.assert_allclose(attention_rollout(named), got, rtol=1e-6)


def test_rollout_of_a_transformer_from_its_taps():
    model = TransformerEncoder(2, num_layers=3, d_model=4, num_heads=2, vocab_size=7)
    tokens = jnp.asarray(RNG.integers(0, 7, (2, 5)), jnp.int32)
    params, state = model.init(KEY, tokens)
    weights = jax.jit(lambda p, t: collect_attention_weights(model, p, state, t))(params, tokens)
    assert [w.shape for w in weights] == [(2, 2, 5, 5)] * 3
    np.testing.assert_allclose(weights[0].sum(-1), 1.0, rtol=1e-5)
    rollout = jax.jit(attention_rollout)(weights)
    np.testing.assert_allclose(rollout, _numpy_rollout(weights), rtol=1e-4, atol=1e-6)
    with pytest.raises(ArgumentError, match=r"no tapped value matches.*block_0/attention/weights"):
        jax.jit(lambda p, t: collect_attention_weights(model, p, state, t, capture="*attn*"))(
            params, tokens
        )


def test_errors_name_the_function_and_what_was_given(linear, mlp):
    model, params, state, x = mlp
    with pytest.raises(ValueRangeError, match=r"output_fn: target .*3 classes.* \[0, 3\), given"):
        saliency(output_fn(model, params, state, target=3), x)
    with pytest.raises(ValueRangeError, match=r"output_fn: .*\[0, 3\), given values in \[-1, 1\]"):
        jax.jit(lambda x: saliency(output_fn(model, params, state, target=[0, 1, -1]), x))(x)
    with pytest.raises(ShapeError, match=r"output_fn: the target callable .* given shape \(3,\)"):
        saliency(output_fn(model, params, state, target=lambda y: 2 * y), x)
    with pytest.raises(ShapeError, match=r"target must hold one class index per example, shape"):
        saliency(output_fn(model, params, state, target=jnp.array([0, 1])), x)
    with pytest.raises(ShapeError, match=r"saliency: fn\(x\) must give one scalar per example, "):
        saliency(lambda z: model(params, z), x)
    with pytest.raises(ArgumentError, match=r"float array"):
        saliency(lambda z: z.sum(-1), jnp.ones((2, 3), jnp.int32))
    with pytest.raises(ShapeError, match=r"attention_rollout: .*square.* given shape \(2, 3, 4\)"):
        attention_rollout([jnp.ones((2, 3, 4))])

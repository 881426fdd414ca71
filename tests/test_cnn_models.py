"""The CNN zoo: structure (closed-form parameter counts) and learning on real and synthetic data."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nn_jax import losses
from nn_jax.combinators import Sequential
from nn_jax.data import load_digits
from nn_jax.errors import ConfigError, ShapeError
from nn_jax.inspect import param_count
from nn_jax.models.cnn import BasicBlock, LeNet, ResNet, UNet
from nn_jax.resize import Upsample
from nn_jax.train import TrainState, make_predict, make_stateful_train_step

KEY = jax.random.key(0)


def _conv_params(k, c_in, c_out, bias=True):
    return k * k * c_in * c_out + (c_out if bias else 0)


# --------------------------------------------------------------------------------------------
# Structure


def test_lenet_for_mnist_shapes():
    """28x28x1, 10 classes: SAME convs keep 28 -> pool 14 -> 14 -> pool 7: 7*7*16 = 784 features."""
    model = LeNet(10)
    params, state = model.init(KEY, jax.ShapeDtypeStruct((2, 28, 28, 1), jnp.float32))
    assert state == {}
    assert jax.tree.map(jnp.shape, params) == {
        "conv_0": {"w": (5, 5, 1, 6), "b": (6,)},
        "conv_1": {"w": (5, 5, 6, 16), "b": (16,)},
        "dense_0": {"w": (784, 120), "b": (120,)},
        "dense_1": {"w": (120, 84), "b": (84,)},
        "head": {"w": (84, 10), "b": (10,)},
    }
    assert model(params, jnp.zeros((2, 28, 28, 1))).shape == (2, 10)


def test_lenet5_valid_on_32x32_has_the_classic_parameter_count():
    """LeNet-5 on 32x32: 156 + 2,416 + 48,120 + 10,164 + 850 = 61,706 parameters."""
    params, _ = LeNet(10, padding="VALID").init(KEY, jnp.zeros((1, 32, 32, 1)))
    assert param_count(params) == 61_706


def test_basic_block_shortcut_is_identity_or_projection():
    x = jnp.zeros((2, 8, 8, 4))
    params, state = BasicBlock(4).init(KEY, x)
    assert set(params) == {"conv_0", "bn_0", "conv_1", "bn_1"} and set(state) == {"bn_0", "bn_1"}
    params, state = BasicBlock(8, strides=2).init(KEY, x)
    assert params["proj"]["w"].shape == (1, 1, 4, 8) and "proj_bn" in state
    y, _ = BasicBlock(8, strides=2).apply(params, state, x)
    assert y.shape == (2, 4, 4, 8)


def test_basic_block_eval_matches_numpy_equation():
    """relu(bn1(conv1(relu(bn0(conv0(x))))) + x) with eval-mode BN = affine per channel."""
    block = BasicBlock(2)
    x = np.random.default_rng(0).standard_normal((1, 3, 3, 2)).astype(np.float32)
    params, state = block.init(KEY, x)
    rng = np.random.default_rng(1)
    state = jax.tree.map(lambda a: jnp.asarray(rng.uniform(0.5, 1.5, a.shape), a.dtype), state)

    def conv3x3(h, w):
        hp = np.pad(h, ((0, 0), (1, 1), (1, 1), (0, 0)))
        out = np.zeros((*h.shape[:3], w.shape[-1]))
        for i in range(3):
            for j in range(3):
                out += hp[:, i : i + 3, j : j + 3] @ w[i, j]
        return out

    def bn(h, p, s):
        return (h - s["mean"]) / np.sqrt(s["var"] + 1e-5) * p["scale"] + p["b"]

    p = jax.tree.map(np.asarray, params)
    s = jax.tree.map(np.asarray, state)
    h = np.maximum(bn(conv3x3(x, p["conv_0"]["w"]), p["bn_0"], s["bn_0"]), 0)
    h = bn(conv3x3(h, p["conv_1"]["w"]), p["bn_1"], s["bn_1"])
    expected = np.maximum(h + x, 0)
    np.testing.assert_allclose(block.apply(params, state, x)[0], expected, rtol=1e-4, atol=1e-5)


def test_resnet20_parameter_count_closed_form():
    """stage_sizes=(3, 3, 3), width 16: the CIFAR ResNet-20 (about 0.27M parameters)."""
    model = ResNet(10, stage_sizes=(3, 3, 3))
    # Shapes only (jax.eval_shape): no need to draw 0.27M random numbers here.
    params, state = jax.eval_shape(
        model.init, KEY, jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
    )
    bn = lambda c: 2 * c  # noqa: E731  scale + b
    expected = _conv_params(3, 3, 16, bias=False) + bn(16)
    c_in = 16
    for c in (16, 32, 64):
        for _ in range(3):
            expected += (
                _conv_params(3, c_in, c, False) + bn(c) + _conv_params(3, c, c, False) + bn(c)
            )
            if c_in != c:
                expected += _conv_params(1, c_in, c, False) + bn(c)
            c_in = c
    expected += 64 * 10 + 10
    assert param_count(params) == expected == 272_474
    assert param_count(state) == sum(2 * 2 * c * 3 for c in (16, 32, 64)) + 2 * (16 + 32 + 64)


def test_unet_shapes_and_errors():
    model = UNet(3, widths=(4, 8, 16))
    x = jax.ShapeDtypeStruct((2, 16, 12, 1), jnp.float32)
    params, state = jax.eval_shape(model.init, KEY, x)
    assert set(params) == {
        "down_0",
        "down_1",
        "bottleneck",
        "up_1",
        "up_0",
        "decode_1",
        "decode_0",
        "head",
    }
    assert params["up_0"]["w"].shape == (2, 2, 4, 8)  # ConvTranspose 8 -> 4 channels
    assert params["decode_0"]["conv_0"]["w"].shape == (3, 3, 8, 4)  # skip (4) + upsampled (4)
    y, _ = jax.eval_shape(lambda p, s, x: model.apply(p, s, x), params, state, x)
    assert y.shape == (2, 16, 12, 3)
    message = r"UNet at <root>: input height and width must be divisible by 2\*\*2 = 4.*\(10, 12\)"
    with pytest.raises(ShapeError, match=message):
        jax.eval_shape(model.init, KEY, jax.ShapeDtypeStruct((2, 10, 12, 1), jnp.float32))
    with pytest.raises(ConfigError, match=r"UNet: widths needs at least 2 levels"):
        UNet(3, widths=(4,))


def test_model_config_errors():
    with pytest.raises(ConfigError, match=r"LeNet: pool must be 'max' or 'avg'"):
        LeNet(10, pool="sum")
    with pytest.raises(
        ConfigError, match=r"ResNet: stage_sizes must be a non-empty tuple of positive ints"
    ):
        ResNet(10, stage_sizes=())
    with pytest.raises(ConfigError, match=r"rate \(the drop probability\)"):
        ResNet(10, drop_path=1.5)


# --------------------------------------------------------------------------------------------
# Learning


@pytest.fixture(scope="module")
def digits():
    return load_digits(image=True)


def _train(model, loss_fn, optimizer, x, y, *, epochs, batch_size, seed=0):
    ts = TrainState.create(model, optimizer, jax.random.key(seed), x[:batch_size])
    step = make_stateful_train_step(model, loss_fn, optimizer)
    rng = np.random.default_rng(seed)
    history, initial_state = [], ts.state
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for start in range(0, len(x) - batch_size + 1, batch_size):
            idx = order[start : start + batch_size]
            ts, logs = step(ts, (x[idx], y[idx]))
            history.append(logs["loss"])
    assert step._cache_size() == 1
    return ts, np.asarray(jnp.stack(history)), initial_state


@pytest.mark.slow
def test_lenet_reaches_97_percent_on_digits(digits):
    """8x8 digits upsampled 2x (bilinear) into a LeNet: >= 97% test accuracy in 12 epochs."""
    model = Sequential(
        Upsample((2, 2), method="bilinear"), LeNet(10, channels=(16, 32), hidden=(64,))
    )
    epochs, batch_size = 12, 32
    schedule = optax.cosine_decay_schedule(3e-3, epochs * (len(digits.x_train) // batch_size))
    ts, history, _ = _train(
        model,
        losses.softmax_cross_entropy_with_integer_labels,
        optax.adamw(schedule, weight_decay=1e-4),
        digits.x_train,
        digits.y_train,
        epochs=epochs,
        batch_size=batch_size,
    )
    logits = make_predict(model)(ts.params, ts.state, digits.x_test)
    accuracy = float(np.mean(np.asarray(logits).argmax(-1) == digits.y_test))
    assert accuracy >= 0.97, accuracy
    assert history[-20:].mean() < 0.1 * history[:5].mean()


@pytest.mark.slow
def test_resnet_trains_with_batch_norm_state_threaded(digits):
    model = ResNet(10, stage_sizes=(1, 1), width=8)
    ts, history, initial_state = _train(
        model,
        losses.softmax_cross_entropy_with_integer_labels,
        optax.adam(3e-3),
        digits.x_train,
        digits.y_train,
        epochs=3,
        batch_size=64,
    )
    assert history[-10:].mean() < 0.4 * history[:5].mean()
    # Every BatchNorm's running mean and variance moved away from their init (0 and 1).
    changes = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), ts.state, initial_state)
    assert len(jax.tree.leaves(changes)) == 2 * 6  # stem, 2 + 2 in blocks, projection
    assert min(jax.tree.leaves(changes)) > 0.05, changes
    # Evaluation uses the running statistics: a single example is classified as in the batch.
    predict = make_predict(model)
    logits = predict(ts.params, ts.state, digits.x_test)
    np.testing.assert_allclose(
        predict(ts.params, ts.state, digits.x_test[:1]), logits[:1], rtol=1e-4, atol=1e-4
    )
    assert float(np.mean(np.asarray(logits).argmax(-1) == digits.y_test)) > 0.8


def _noisy_rectangles(rng, n, size=16, noise=0.6):
    """Images of 1-3 random rectangles plus Gaussian noise; the target is the clean mask."""
    masks = np.zeros((n, size, size, 1), np.float32)
    for mask in masks:
        for _ in range(rng.integers(1, 4)):
            (h, w), (r, c) = rng.integers(3, 8, 2), rng.integers(0, size - 3, 2)
            mask[r : r + h, c : c + w] = 1
    return (masks + noise * rng.standard_normal(masks.shape)).astype(np.float32), masks


@pytest.mark.slow
def test_unet_learns_dense_prediction_beyond_a_pixelwise_threshold():
    """Per-pixel thresholding gets ~80% of noisy pixels right; using context the U-Net beats 95%."""
    rng = np.random.default_rng(0)
    x_train, y_train = _noisy_rectangles(rng, 512)
    x_test, y_test = _noisy_rectangles(rng, 128)
    threshold_accuracy = float(np.mean((x_test > 0.5) == y_test))
    model = UNet(1, widths=(8, 16))
    ts, history, _ = _train(
        model,
        losses.binary_cross_entropy_with_logits,
        optax.adam(1e-2),
        x_train,
        y_train,
        epochs=5,
        batch_size=32,
    )
    predicted = np.asarray(make_predict(model)(ts.params, ts.state, x_test)) > 0
    accuracy = float(np.mean(predicted == y_test))
    assert threshold_accuracy < 0.85 and accuracy > 0.95, (threshold_accuracy, accuracy)
    assert history[-10:].mean() < 0.3 * history[:3].mean()

"""PyTorch parity: nn_jax twins of PyTorch modules, loaded with ``nn_jax.compat.torch``.

Every reference number comes from PyTorch (``tests/fixtures/torch/*.safetensors``, written by
``make_fixtures.py`` there; torch is not needed here): outputs, gradients of
``sum(out * cot)`` with respect to every parameter and float input, and running statistics after
a training step. Float64 cases agree to 1e-10, the float32 one to 1e-5.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors import safe_open

from nn_jax import (
    RNN,
    AvgPool,
    BatchNorm,
    Bidirectional,
    Conv,
    ConvTranspose,
    Dense,
    Embedding,
    Flatten,
    GroupNorm,
    GRUCell,
    LayerNorm,
    LSTMCell,
    MaxPool,
    MultiHeadAttention,
    PReLU,
    Sequential,
    StackedRNN,
    TransformerDecoderBlock,
    TransformerEncoderBlock,
    losses,
)
from nn_jax.compat import torch as nt
from nn_jax.errors import FileFormatError, ParamsError
from nn_jax.inspect import apply_with_intermediates
from nn_jax.models import TransformerEncoder

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "torch"
KEY = jax.random.key(0)


@dataclasses.dataclass
class Case:
    """One fixture file, split by key prefix."""

    config: dict[str, Any]
    state: dict[str, np.ndarray]
    inputs: list[np.ndarray]
    outputs: list[np.ndarray]
    cots: list[np.ndarray]
    grads: dict[str, np.ndarray]
    after: dict[str, np.ndarray]


def _read(name: str) -> Case:
    path = FIXTURES / f"{name}.safetensors"
    tensors = nt.load_state_dict(path)
    with safe_open(str(path), "np") as f:
        config = json.loads(f.metadata()["config"])

    def part(prefix: str) -> dict[str, np.ndarray]:
        return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}

    def listed(prefix: str) -> list[np.ndarray]:
        d = part(prefix)
        return [d[str(i)] for i in range(len(d))]

    return Case(
        config,
        part("state."),
        listed("input."),
        listed("output."),
        listed("cot."),
        part("grad."),
        part("after."),
    )


@pytest.fixture(scope="module")
def cases() -> Callable[[str], Case]:
    """Each fixture file read once for the module."""
    cache: dict[str, Case] = {}

    def get(name: str) -> Case:
        if name not in cache:
            cache[name] = _read(name)
        return cache[name]

    return get


@pytest.fixture(autouse=True)
def x64() -> Any:
    with jax.enable_x64(True):
        yield


def _upcast(tree: Any, dtype: Any) -> Any:
    """Float leaves of ``tree`` in ``dtype`` (the blocks' sublayers store float32 by default)."""
    return jax.tree.map(
        lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree
    )


def _close(actual: Any, expected: np.ndarray, tol: float, what: str) -> None:
    np.testing.assert_allclose(np.asarray(actual), expected, rtol=tol, atol=tol, err_msg=what)


Forward = Callable[[Any, Any, tuple[Any, ...]], tuple[tuple[Any, ...], Any]]


def _check(
    case: Case,
    model: Any,
    example: Any,
    forward: Forward,
    diff: tuple[int, ...],
    *,
    rules: Any = None,
    tol: float = 1e-10,
    skip_grads: tuple[str, ...] = (),
    check_round_trip: bool = True,
) -> tuple[Any, Any, Any]:
    """Load the case's weights, compare outputs and gradients, and (for cases with weights)
    the round trip; returns the params, the state after the step and PyTorch-named gradients.

    ``forward(params, state, inputs)`` returns ``(outputs, new_state)``; ``diff`` lists the
    inputs differentiated (their PyTorch gradients are ``grad.input.<i>``).
    """
    dtype = case.inputs[diff[0]].dtype if diff else jnp.float64
    params, state = _target(model, example, dtype)
    params, state = nt.from_torch(model, case.state, params, state, x=example, rules=rules)
    loaded = (params, state)
    inputs = tuple(jnp.asarray(a) for a in case.inputs)

    def scalar(p: Any, d: tuple[Any, ...]) -> Any:
        full = list(inputs)
        for i, v in zip(diff, d, strict=True):
            full[i] = v
        outs, new_state = forward(p, state, tuple(full))
        total = sum(jnp.sum(o * c) for o, c in zip(outs, case.cots, strict=True))
        return total, (outs, new_state)

    grad_fn = jax.jit(jax.value_and_grad(scalar, argnums=(0, 1), has_aux=True))
    (_, (outs, new_state)), (g_params, g_inputs) = grad_fn(params, tuple(inputs[i] for i in diff))
    assert len(outs) == len(case.outputs)
    for i, (o, ref) in enumerate(zip(outs, case.outputs, strict=True)):
        _close(o, ref, tol, f"output {i}")
    for i, g in zip(diff, g_inputs, strict=True):
        _close(g, case.grads[f"input.{i}"], tol, f"gradient of input {i}")
    torch_grads = nt.to_torch(model, g_params, x=example, rules=rules)
    param_names = {k for k in case.grads if not k.startswith("input.")}
    assert param_names <= set(torch_grads) | set(skip_grads)
    for name in sorted(param_names - set(skip_grads)):
        _close(torch_grads[name], case.grads[name], tol, f"gradient of {name}")
    if check_round_trip:
        _round_trip(case, model, example, *loaded, rules=rules)
    return params, new_state, torch_grads


def _layer_forward(model: Any, *, train: bool = False, side: Any = None) -> Forward:
    def forward(p: Any, s: Any, inputs: tuple[Any, ...]) -> tuple[tuple[Any, ...], Any]:
        y, new_state = model.apply(p, s, inputs[0], train=train, side=side)
        return (y,), new_state

    return forward


def _target(model: Any, example: Any, dtype: Any) -> tuple[Any, Any]:
    """Zero params and state shaped as ``model.init`` makes them (float leaves in ``dtype``):
    the target tree for ``from_torch``, made without running the initializers."""
    shapes = jax.eval_shape(model.init, KEY, example)
    return jax.tree.map(
        lambda s: np.zeros(s.shape, dtype if jnp.issubdtype(s.dtype, jnp.floating) else s.dtype),
        shapes,
    )


def _round_trip(
    case: Case, model: Any, example: Any, params: Any, state: Any, rules: Any = None
) -> None:
    """``to_torch(from_torch(sd)) == sd`` exactly: every key, value and dtype (BatchNorm's
    ``num_batches_tracked`` is dropped unless the nn_jax state keeps a counter)."""
    if not case.state:
        return
    back = nt.to_torch(model, params, state, x=example, rules=rules)
    counters = {k for k in case.state if k.endswith("num_batches_tracked")}
    assert set(back) <= set(case.state)
    assert set(case.state) - set(back) <= counters
    for name, value in back.items():
        assert value.dtype == case.state[name].dtype, name
        np.testing.assert_array_equal(value, case.state[name], err_msg=name)


# --------------------------------------------------------------------------------------------
# Dense, convolutions.

CF = "channels_first"
DENSE_CONV = {
    "linear": lambda: Dense(4),
    "conv1d": lambda: Conv(4, (3,), strides=2, padding=1, data_format=CF),
    "conv2d": lambda: Conv(
        4,
        (3, 3),
        strides=(2, 1),
        padding=((1, 1), (2, 2)),
        kernel_dilation=(1, 2),
        feature_group_count=2,
        data_format=CF,
    ),
    "conv3d": lambda: Conv(3, (2, 2, 2), padding=1, data_format=CF),
    "conv_transpose2d": lambda: ConvTranspose(
        6, (3, 3), strides=2, padding=1, output_padding=1, feature_group_count=2, data_format=CF
    ),
}


@pytest.mark.parametrize("name", sorted(DENSE_CONV))
def test_dense_and_conv(cases: Callable[[str], Case], name: str) -> None:
    case, model = cases(name), DENSE_CONV[name]()
    x = jnp.asarray(case.inputs[0])
    _check(case, model, x, _layer_forward(model), (0,))


def test_linear_float32(cases: Callable[[str], Case]) -> None:
    case, model = cases("linear_f32"), Dense(4)
    x = jnp.asarray(case.inputs[0])
    assert x.dtype == jnp.float32
    params, _, _ = _check(case, model, x, _layer_forward(model), (0,), tol=1e-5)
    assert params["w"].dtype == jnp.float32


def test_prelu_per_channel(cases: Callable[[str], Case]) -> None:
    case, model = cases("prelu"), PReLU(3, channel_axis=1)
    _check(case, model, jnp.asarray(case.inputs[0]), _layer_forward(model), (0,))


# --------------------------------------------------------------------------------------------
# Pooling (no weights): outputs and input gradients.

POOLS = {
    "maxpool2d": lambda: MaxPool(
        (3, 3), strides=2, padding=1, dilation=2, ceil_mode=True, data_format=CF
    ),
    "avgpool2d_include": lambda: AvgPool(
        (3, 3), strides=2, padding=1, ceil_mode=True, count_include_pad=True, data_format=CF
    ),
    "avgpool2d_exclude": lambda: AvgPool(
        (3, 3), strides=2, padding=1, ceil_mode=True, count_include_pad=False, data_format=CF
    ),
}


@pytest.mark.parametrize("name", sorted(POOLS))
def test_pooling(cases: Callable[[str], Case], name: str) -> None:
    case, model = cases(name), POOLS[name]()
    _check(case, model, jnp.asarray(case.inputs[0]), _layer_forward(model), (0,))


# --------------------------------------------------------------------------------------------
# Recurrent: 2 layers, bidirectional, initial states, per-example lengths.


def _stack(cell: Any) -> StackedRNN:
    return StackedRNN((Bidirectional(RNN(cell)), Bidirectional(RNN(cell))))


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_recurrent(cases: Callable[[str], Case], kind: str) -> None:
    case = cases(kind)
    lstm = kind == "lstm"
    model = _stack(LSTMCell(4, forget_bias=0.0) if lstm else GRUCell(4))
    lengths = jnp.asarray(case.config["lengths"])
    x = jnp.asarray(case.inputs[0])

    def forward(p: Any, s: Any, inputs: tuple[Any, ...]) -> tuple[tuple[Any, ...], Any]:
        carry = nt.initial_carry_from_torch(model, *inputs[1:])
        side = {"lengths": lengths, "initial_carry": carry}
        y, s, taps = apply_with_intermediates(model, p, s, inputs[0], side=side, capture="*carry")
        final = nt.final_carry_to_torch(model, taps)
        return (y, *final) if lstm else (y, final), s

    diff = (0, 1, 2) if lstm else (0, 1)
    skip = tuple(k for k in case.grads if k.startswith("bias_hh"))
    params, _, grads = _check(
        case, model, x, forward, diff, skip_grads=skip, check_round_trip=False
    )
    # nn_jax keeps one bias: PyTorch's bias_hh gets the gradient of its share of it.
    h = 4
    for name in (k for k in case.grads if k.startswith("bias_hh")):
        summed = grads[name.replace("bias_hh", "bias_ih")]
        expected = summed if lstm else np.concatenate([summed[: 2 * h], grads[name][2 * h :]])
        _close(expected, case.grads[name], 1e-10, f"gradient of {name}")
    # The round trip is exact on nn_jax's side; PyTorch's two biases come back as their sum.
    back = nt.to_torch(model, params, {}, x=x)
    assert set(back) == set(case.state)
    for name, value in back.items():
        if "bias" in name:
            continue
        np.testing.assert_array_equal(value, case.state[name], err_msg=name)
    again, _ = nt.from_torch(model, back, params, {}, x=x)
    jax.tree.map(np.testing.assert_array_equal, again, params)


# --------------------------------------------------------------------------------------------
# Attention.


def test_mha_self_attention(cases: Callable[[str], Case]) -> None:
    case = cases("mha_self")
    model = MultiHeadAttention(2)
    x = jnp.asarray(case.inputs[0])
    side = {"key_mask": ~case.inputs[1], "mask": ~case.inputs[2]}  # PyTorch: True = masked
    _check(case, model, x, _layer_forward(model, side=side), (0,))


def test_mha_cross_attention_kdim_vdim(cases: Callable[[str], Case]) -> None:
    case = cases("mha_cross")
    model = MultiHeadAttention(2)
    example = tuple(jnp.asarray(a) for a in case.inputs[:3])
    side = {"key_mask": ~case.inputs[3], "mask": ~case.inputs[4]}

    def forward(p: Any, s: Any, inputs: tuple[Any, ...]) -> tuple[tuple[Any, ...], Any]:
        y, s = model.apply(p, s, tuple(inputs[:3]), side=side)
        return (y,), s

    _check(case, model, example, forward, (0, 1, 2))


# --------------------------------------------------------------------------------------------
# Normalization, embedding.


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_batchnorm(cases: Callable[[str], Case], mode: str) -> None:
    case = cases(f"batchnorm2d_{mode}")
    model = BatchNorm(axis=1, momentum=0.9, unbiased_running_var=True, epsilon=1e-5)
    x = jnp.asarray(case.inputs[0])
    train = mode == "train"
    _, new_state, _ = _check(case, model, x, _layer_forward(model, train=train), (0,))
    after = case.after if train else {k: case.state[k] for k in ("running_mean", "running_var")}
    _close(new_state["mean"], after["running_mean"], 1e-10, "running mean")
    _close(new_state["var"], after["running_var"], 1e-10, "running variance")


def test_layernorm_and_groupnorm(cases: Callable[[str], Case]) -> None:
    for name, model in (
        ("layernorm", LayerNorm(axis=(-2, -1))),
        ("groupnorm", GroupNorm(2, channel_axis=1)),
    ):
        case = cases(name)
        x = jnp.asarray(case.inputs[0])
        _check(case, model, x, _layer_forward(model), (0,))


def test_embedding_padding_idx(cases: Callable[[str], Case]) -> None:
    case = cases("embedding")
    model = Embedding(10, 4, padding_idx=1)
    ids = jnp.asarray(case.inputs[0])
    _check(case, model, ids, _layer_forward(model), ())


# --------------------------------------------------------------------------------------------
# Transformer layers.

ENCODERS = {
    "encoder_layer_post_relu": ("post", "relu"),
    "encoder_layer_pre_gelu": ("pre", "gelu_exact"),
}


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_transformer_encoder_layer(cases: Callable[[str], Case], name: str) -> None:
    case = cases(name)
    position, ffn = ENCODERS[name]
    model = TransformerEncoderBlock(2, 16, norm_position=position, ffn=ffn, epsilon=1e-5)
    x = jnp.asarray(case.inputs[0])
    side = {"key_mask": ~case.inputs[1]}
    _check(case, model, x, _layer_forward(model, side=side), (0,))


@pytest.mark.parametrize("name", ["decoder_layer_post_relu", "decoder_layer_pre_gelu"])
def test_transformer_decoder_layer(cases: Callable[[str], Case], name: str) -> None:
    case = cases(name)
    position, ffn = ENCODERS[name.replace("decoder", "encoder")]
    model = TransformerDecoderBlock(
        2, 16, norm_position=position, ffn=ffn, epsilon=1e-5, causal=case.config["causal"]
    )
    example = (jnp.asarray(case.inputs[0]), jnp.asarray(case.inputs[1]))
    side = {"memory_key_mask": ~case.inputs[2]}

    def forward(p: Any, s: Any, inputs: tuple[Any, ...]) -> tuple[tuple[Any, ...], Any]:
        y, s = model.apply(p, s, (inputs[0], inputs[1]), side=side)
        return (y,), s

    _check(case, model, example, forward, (0, 1))


# --------------------------------------------------------------------------------------------
# Whole models.


def _cnn() -> Sequential:
    return Sequential(
        Conv(4, (3, 3), padding=1, data_format=CF),
        BatchNorm(axis=1, momentum=0.9, epsilon=1e-5, unbiased_running_var=True),
        jax.nn.relu,
        MaxPool((2, 2), data_format=CF),
        Flatten(),
        Dense(3),
    )


def test_cnn_sequential(cases: Callable[[str], Case]) -> None:
    """``nn.Sequential`` numbering (ReLU, pooling and Flatten numbered too) needs no rule."""
    case, model = cases("cnn"), _cnn()
    x = jnp.asarray(case.inputs[0])
    _, new_state, _ = _check(case, model, x, _layer_forward(model, train=True), (0,))
    _close(new_state["1"]["mean"], case.after["1.running_mean"], 1e-10, "running mean")
    _close(new_state["1"]["var"], case.after["1.running_var"], 1e-10, "running variance")


def test_rules_rename_both_ways(cases: Callable[[str], Case]) -> None:
    """A model saved as ``features.<i>...`` loads onto slots ``<i>`` with one rule, and
    ``to_torch`` with the same rule writes the PyTorch names back."""
    case, model = cases("cnn"), _cnn()
    x = jnp.asarray(case.inputs[0])
    rules = [("features.{i}.", "{i}.")]
    prefixed = {f"features.{k}": v for k, v in case.state.items()}
    params, state = _target(model, x, jnp.float64)
    loaded, loaded_state = nt.from_torch(model, prefixed, params, state, x=x, rules=rules)
    np.testing.assert_array_equal(loaded["0"]["w"], case.state["0.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(loaded_state["1"]["var"], case.state["1.running_var"])
    back = nt.to_torch(model, loaded, loaded_state, x=x, rules=rules)
    assert set(back) == set(prefixed) - {"features.1.num_batches_tracked"}
    with pytest.raises(ParamsError, match=r"unmatched: PyTorch 'features\.0\.weight'"):
        nt.from_torch(model, prefixed, params, state, x=x)


def test_zoo_transformer_default_names(cases: Callable[[str], Case]) -> None:
    """The zoo's ``TransformerEncoder`` reads PyTorch's ``embedding``, ``encoder.layers.<i>``
    (an ``nn.TransformerEncoder``) and ``head`` with no rule (embeddings scaled by
    ``sqrt(d_model)`` on both sides, no positional encoding, post-LN: no final norm)."""
    case = cases("tiny_transformer")
    model = TransformerEncoder(
        11,
        num_layers=2,
        d_model=8,
        num_heads=2,
        mlp_features=16,
        vocab_size=11,
        positional="none",
        pooling="none",
        norm_position="post",
        ffn="gelu_exact",
    )
    _check(case, model, jnp.asarray(case.inputs[0]), _layer_forward(model), ())


# --------------------------------------------------------------------------------------------
# Losses (PyTorch's functional losses; value and gradient of the first input).


def _loss_case(case: Case, fn: Callable[..., Any]) -> None:
    inputs = [jnp.asarray(a) for a in case.inputs]
    value, grad = jax.jit(jax.value_and_grad(lambda z: fn(z, *inputs[1:])))(inputs[0])
    _close(value, case.outputs[0], 1e-10, "loss")
    _close(grad * case.cots[0], case.grads["input.0"], 1e-10, "loss gradient")


def test_cross_entropy_weight_ignore_index_nchw(cases: Callable[[str], Case]) -> None:
    def fn(logits: Any, labels: Any, weight: Any) -> Any:
        return losses.softmax_cross_entropy_with_integer_labels(
            logits, labels, weight=weight, ignore_index=-1, axis=1
        )

    _loss_case(cases("cross_entropy"), fn)


def test_cross_entropy_soft_labels_weight(cases: Callable[[str], Case]) -> None:
    def fn(logits: Any, probs: Any, weight: Any) -> Any:
        return losses.softmax_cross_entropy(logits, probs, weight=weight)

    _loss_case(cases("cross_entropy_soft"), fn)


def test_bce_with_logits_pos_weight(cases: Callable[[str], Case]) -> None:
    def fn(logits: Any, targets: Any, pos_weight: Any) -> Any:
        return losses.binary_cross_entropy_with_logits(logits, targets, pos_weight=pos_weight)

    _loss_case(cases("bce_with_logits"), fn)


def test_nll_loss(cases: Callable[[str], Case]) -> None:
    def fn(log_probs: Any, labels: Any, weight: Any) -> Any:
        return losses.nll_loss(log_probs, labels, weight=weight, ignore_index=2)

    _loss_case(cases("nll_loss"), fn)


def test_kl_div_log_target(cases: Callable[[str], Case]) -> None:
    def fn(log_probs: Any, log_targets: Any) -> Any:
        return losses.kl_divergence(log_probs, log_targets, log_target=True)

    _loss_case(cases("kl_div"), fn)


def test_smooth_l1(cases: Callable[[str], Case]) -> None:
    def fn(predictions: Any, targets: Any) -> Any:
        return losses.smooth_l1(predictions, targets, beta=0.5)

    _loss_case(cases("smooth_l1"), fn)


# --------------------------------------------------------------------------------------------
# The report: unmatched, missing and mis-shaped tensors; dtypes.


@pytest.fixture(scope="module")
def linear_setup(cases: Callable[[str], Case]) -> tuple[Any, Any, dict[str, np.ndarray], Any]:
    case = cases("linear")
    model = Dense(4)
    x = jnp.asarray(case.inputs[0])
    with jax.enable_x64(True):
        params, state = _target(model, x, jnp.float64)
    return model, x, case.state, (params, state)


def test_report_unmatched_key(linear_setup: Any) -> None:
    model, x, sd, (params, state) = linear_setup
    extra = {**sd, "extra.weight": np.ones(3)}
    with pytest.raises(ParamsError, match=r"unmatched: PyTorch 'extra\.weight'"):
        nt.from_torch(model, extra, params, state, x=x)
    loaded, _ = nt.from_torch(model, extra, params, state, x=x, allow_unmatched=True)
    np.testing.assert_array_equal(loaded["w"], sd["weight"].T)


def test_report_missing_param(linear_setup: Any) -> None:
    model, x, sd, (params, state) = linear_setup
    partial = {"weight": sd["weight"]}
    with pytest.raises(ParamsError, match=r"missing: nn_jax 'b' has no PyTorch tensor.*'bias'"):
        nt.from_torch(model, partial, params, state, x=x)
    loaded, _ = nt.from_torch(model, partial, params, state, x=x, allow_missing=True)
    np.testing.assert_array_equal(loaded["b"], params["b"])  # kept from init
    np.testing.assert_array_equal(loaded["w"], sd["weight"].T)


def test_report_mis_shaped(linear_setup: Any) -> None:
    model, x, sd, (params, state) = linear_setup
    wrong = {**sd, "weight": np.ones((4, 2))}
    match = (
        r"PyTorch 'weight' has shape \(4, 2\), expected \(4, 3\) for nn_jax 'w' of shape \(3, 4\)"
    )
    with pytest.raises(ParamsError, match=match):
        nt.from_torch(model, wrong, params, state, x=x)
    with pytest.raises(ParamsError, match=match):  # no flag lets a mis-shaped tensor in
        nt.from_torch(model, wrong, params, state, x=x, allow_unmatched=True, allow_missing=True)


def test_report_mis_shaped_in_a_nested_model(cases: Callable[[str], Case]) -> None:
    case = cases("cnn")
    model = Sequential(Conv(4, (3, 3), padding=1, data_format=CF), Flatten(), Dense(3))
    x = jnp.asarray(case.inputs[0])
    params, state = _target(model, x, jnp.float64)
    sd = {"0.weight": case.state["0.weight"], "0.bias": case.state["0.bias"]}
    sd["2.weight"], sd["2.bias"] = np.ones((3, 7)), np.ones(3)
    with pytest.raises(
        ParamsError,
        match=r"'2\.weight' has shape \(3, 7\), expected \(3, 144\) for nn_jax '2/w' of",
    ):
        nt.from_torch(model, sd, params, state, x=x)


def test_dtypes_cast_checked(linear_setup: Any) -> None:
    model, x, sd, _ = linear_setup
    params, state = _target(model, x, jnp.float32)  # float32 leaves
    loaded, _ = nt.from_torch(model, sd, params, state, x=x)
    assert loaded["w"].dtype == jnp.float32  # float64 -> float32 rounds, allowed
    np.testing.assert_allclose(loaded["w"], sd["weight"].T, rtol=1e-7)
    huge = {**sd, "bias": np.full(4, 1e300)}
    with pytest.raises(ParamsError, match=r"bad dtype: PyTorch 'bias': values overflow"):
        nt.from_torch(model, huge, params, state, x=x)


def test_float_into_integer_leaf_is_an_error(cases: Callable[[str], Case]) -> None:
    case = cases("batchnorm2d_train")
    model = BatchNorm(axis=1, momentum=None)  # its state has an integer num_batches_tracked
    x = jnp.asarray(case.inputs[0])
    params, state = _target(model, x, jnp.float64)
    _, new_state = nt.from_torch(model, case.state, params, state, x=x)
    assert int(new_state["num_batches_tracked"]) == 3
    bad = {**case.state, "num_batches_tracked": np.array(3.5)}
    with pytest.raises(ParamsError, match=r"'num_batches_tracked': dtype float64 cannot go"):
        nt.from_torch(model, bad, params, state, x=x)


def test_safetensors_files(tmp_path: pathlib.Path, linear_setup: Any) -> None:
    model, x, sd, (params, state) = linear_setup
    path = tmp_path / "linear.safetensors"
    nt.save_state_dict(sd, path)
    loaded, _ = nt.from_torch(model, path, params, state, x=x)
    np.testing.assert_array_equal(loaded["w"], sd["weight"].T)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(FileFormatError, match=r"bad\.safetensors"):
        nt.load_state_dict(bad)

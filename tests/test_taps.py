"""Taps for interventions: captured values, unit ablation, head knock-out, activation patching.

Every intervention is checked against an independent reference: a NumPy forward pass from the
params, or the same model with its weights edited by hand. Each check also runs under
``jax.jit``; ``vmap`` of an intervention is checked against a Python loop.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nn_jax.attention import MultiHeadAttention
from nn_jax.errors import ArgumentError, ShapeError
from nn_jax.inspect import apply_with_intermediates
from nn_jax.interventions import (
    activation_patching,
    knock_out_heads,
    patch,
    zero_units,
)
from nn_jax.models import MLP, TransformerEncoder, TransformerLM
from nn_jax.recurrent import RNN, LSTMCell

KEY = jax.random.key(0)
RNG = np.random.default_rng(0)
X = RNG.normal(size=(3, 5)).astype(np.float32)
TOKENS = jnp.asarray(RNG.integers(0, 7, (2, 5)), jnp.int32)
CORRUPTED = jnp.asarray(RNG.integers(0, 7, (2, 5)), jnp.int32)


def run(model, params, x, *, jit, capture=(), edit=None):
    """``apply_with_intermediates`` eagerly or under ``jax.jit``: ``(output, values)``."""

    def go(params, x):
        y, _, values = apply_with_intermediates(model, params, {}, x, capture=capture, edit=edit)
        return y, values

    return (jax.jit(go) if jit else go)(params, x)


def np_act(name, h):
    return np.maximum(h, 0) if name == "relu" else np.tanh(h)


@pytest.fixture(scope="module", params=["relu", "tanh"])
def mlp(request):
    model = MLP((6, 4, 3), activation=request.param)
    params, _ = model.init(KEY, jnp.zeros((3, 5)))
    # Positive biases: every ReLU unit is alive (and a bias left in place would show).
    params = jax.tree.map(lambda a: a + 0.5 * jnp.ones_like(a), params)
    return model, params, request.param


@pytest.fixture(scope="module")
def lm():
    model = TransformerLM(7, num_layers=2, d_model=8, num_heads=2, positional="learned")
    params, _ = model.init(KEY, TOKENS)
    rng = np.random.default_rng(1)  # its own generator: the same params in any test order
    params = jax.tree.map(
        lambda a: a + 0.3 * jnp.asarray(rng.normal(size=a.shape), a.dtype), params
    )
    return model, params, jax.jit(model.__call__)


@pytest.mark.parametrize("jit", [False, True])
def test_mlp_post_activation_equals_numpy_forward(mlp, jit):
    model, params, act = mlp
    y, values = run(model, params, X, jit=jit, capture="*")
    p = {k: {n: np.asarray(a, np.float64) for n, a in v.items()} for k, v in params.items()}
    h0 = X @ p["dense_0"]["w"] + p["dense_0"]["b"]
    a0 = np_act(act, h0)
    h1 = a0 @ p["dense_1"]["w"] + p["dense_1"]["b"]
    a1 = np_act(act, h1)
    out = a1 @ p["dense_2"]["w"] + p["dense_2"]["b"]
    assert sorted(values) == ["activation_0", "activation_1", "dense_0", "dense_1", "dense_2"]
    np.testing.assert_allclose(values["dense_1"], h1, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(values["activation_1"], a1, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(y, out, rtol=1e-5, atol=1e-6)
    assert params.keys() == {"dense_0", "dense_1", "dense_2"}  # activations hold no params


@pytest.mark.parametrize("jit", [False, True])
def test_zeroing_a_unit_equals_zeroing_its_weights(mlp, jit):
    model, params, _ = mlp
    j = 2
    y, values = run(
        model, params, X, jit=jit, capture="activation_0", edit={"activation_0": zero_units(j)}
    )
    edited = jax.tree.map(lambda a: a, params)
    edited["dense_0"] = {
        "w": params["dense_0"]["w"].at[:, j].set(0.0),
        "b": params["dense_0"]["b"].at[j].set(0.0),
    }
    np.testing.assert_allclose(y, model(edited, X), rtol=1e-5, atol=1e-6)
    assert np.all(np.asarray(values["activation_0"])[:, j] == 0)  # the capture sees the edit
    assert not np.allclose(y, model(params, X))  # the unit mattered
    # Several units at once, and a negative index.
    y2, _ = run(model, params, X, jit=jit, edit={"activation_1": zero_units([0, -1])})
    edited["dense_0"] = params["dense_0"]
    edited["dense_1"] = {
        "w": params["dense_1"]["w"].at[:, jnp.array([0, 3])].set(0.0),
        "b": params["dense_1"]["b"].at[jnp.array([0, 3])].set(0.0),
    }
    np.testing.assert_allclose(y2, model(edited, X), rtol=1e-5, atol=1e-6)


def np_attention(p, x, causal, drop=()):
    """NumPy multi-head self-attention; the heads in ``drop`` contribute nothing.

    Returns the output ``(B, T, F)`` and the per-head outputs ``(B, T, H, D)``.
    """
    p = {k: np.asarray(v, np.float64) for k, v in p.items()}
    q = np.einsum("btf,fhd->bthd", x, p["w_q"]) + p["b_q"]
    k = np.einsum("btf,fhd->bthd", x, p["w_k"]) + p["b_k"]
    v = np.einsum("btf,fhd->bthd", x, p["w_v"]) + p["b_v"]
    logits = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
    if causal:
        t = x.shape[1]
        logits = np.where(np.tril(np.ones((t, t), bool)), logits, -np.inf)
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    heads = np.einsum("bhqk,bkhd->bqhd", weights, v)
    y = p["b_o"] + sum(heads[:, :, h] @ p["w_o"][h] for h in range(heads.shape[2]) if h not in drop)
    return y, heads


@pytest.mark.parametrize("jit", [False, True])
def test_knocking_out_a_head_equals_numpy_attention_without_it(jit):
    mha = MultiHeadAttention(3, causal=True)
    x = RNG.normal(size=(2, 4, 6)).astype(np.float32)
    params, _ = mha.init(KEY, x)
    params = jax.tree.map(lambda a: a + 0.1, params)
    y, values = run(mha, params, x, jit=jit, capture="heads", edit={"heads": knock_out_heads(1)})
    expected, heads = np_attention(params, x, causal=True, drop=(1,))
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    full, _, clean = apply_with_intermediates(mha, params, {}, x, capture="heads")
    np.testing.assert_allclose(clean["heads"], heads, rtol=1e-5, atol=1e-5)
    assert values["heads"].shape == (2, 4, 3, 2)  # (B, Tq, H, D)
    assert np.all(np.asarray(values["heads"])[:, :, 1] == 0)
    np.testing.assert_allclose(full, np_attention(params, x, causal=True)[0], rtol=1e-5, atol=1e-5)


def test_knocking_out_a_head_in_the_lm_equals_zeroing_its_output_rows(lm):
    model, params, forward = lm
    y, _ = run(
        model, params, TOKENS, jit=True, edit={"block_1/attention/heads": knock_out_heads(0)}
    )
    edited = jax.tree.map(lambda a: a, params)
    w_o = params["block_1"]["attention"]["w_o"]  # (H, D, F)
    edited["block_1"]["attention"] = dict(params["block_1"]["attention"], w_o=w_o.at[0].set(0.0))
    np.testing.assert_allclose(y, forward(edited, TOKENS), rtol=1e-5, atol=1e-5)
    assert not np.allclose(y, forward(params, TOKENS), atol=1e-3)


def test_every_block_exposes_every_heads_weights_and_outputs(lm):
    model, params, _ = lm

    def shapes(model, params, capture):  # shapes only: nothing is computed
        values = jax.eval_shape(
            lambda p: apply_with_intermediates(model, p, {}, TOKENS, capture=capture)[2], params
        )
        return {path: v.shape for path, v in values.items()}

    assert shapes(model, params, ("*weights", "*heads")) == {
        "block_0/attention/weights": (2, 2, 5, 5),  # (B, H, Tq, Tk)
        "block_0/attention/heads": (2, 5, 2, 4),  # (B, Tq, H, D)
        "block_1/attention/weights": (2, 2, 5, 5),
        "block_1/attention/heads": (2, 5, 2, 4),
    }
    encoder = TransformerEncoder(3, num_layers=2, d_model=8, num_heads=4, vocab_size=7)
    enc_params, _ = jax.eval_shape(encoder.init, KEY, TOKENS)
    assert shapes(encoder, enc_params, "*/weights") == {
        f"block_{i}/attention/weights": (2, 4, 5, 5) for i in range(2)
    }


@pytest.mark.parametrize("jit", [False, True])
def test_patching_every_activation_from_the_clean_run_gives_the_clean_run(lm, jit):
    model, params, forward = lm
    clean, recorded = run(model, params, TOKENS, jit=jit, capture="*")
    corrupted = forward(params, CORRUPTED)
    assert not np.allclose(clean, corrupted, atol=1e-3)
    # Every child output along the way (the last, "head", is the output itself), ...
    y, _ = run(model, params, CORRUPTED, jit=jit, edit=patch(recorded))
    np.testing.assert_allclose(y, clean, rtol=1e-6, atol=1e-6)
    # ... the residual stream after the last block alone (everything flows through it), ...
    last = {"block_1": recorded["block_1"]}
    y, _ = run(model, params, CORRUPTED, jit=jit, edit=patch(last))
    np.testing.assert_allclose(y, clean, rtol=1e-5, atol=1e-5)
    # ... and nothing at all.
    y, _ = run(model, params, CORRUPTED, jit=jit, edit=patch({}))
    np.testing.assert_allclose(y, corrupted, rtol=1e-6, atol=1e-6)


def test_activation_patching_per_path(lm):
    model, params, forward = lm
    target = np.asarray(TOKENS)

    def accuracy(logits):  # a smooth score: the mean log-probability of the clean tokens
        logp = jax.nn.log_softmax(logits)
        return jnp.mean(jnp.take_along_axis(logp, target[..., None], axis=-1))

    paths = ["embedding", "block_0", "block_1", "block_*/attention/heads"]
    result = activation_patching(model, params, {}, TOKENS, CORRUPTED, paths=paths, metric=accuracy)
    assert list(result.patched) == paths
    clean_logits = forward(params, TOKENS)
    np.testing.assert_allclose(result.clean, accuracy(clean_logits), rtol=1e-5)
    np.testing.assert_allclose(result.corrupted, accuracy(forward(params, CORRUPTED)), rtol=1e-5)
    assert abs(float(result.clean) - float(result.corrupted)) > 0.1
    np.testing.assert_allclose(result.patched["block_1"], result.clean, rtol=1e-5)
    np.testing.assert_allclose(result.patched["embedding"], result.clean, rtol=1e-5)
    # Per path, the same as patching by hand from a separately recorded clean run.
    _, _, rec = apply_with_intermediates(model, params, {}, TOKENS, capture="block_0")
    by_hand, _, _ = apply_with_intermediates(
        model, params, {}, CORRUPTED, capture=(), edit=patch(rec)
    )
    np.testing.assert_allclose(result.patched["block_0"], accuracy(by_hand), rtol=1e-5)
    # A pattern patches every value it matches: all heads of both blocks.
    _, _, heads = apply_with_intermediates(model, params, {}, TOKENS, capture="*/heads")
    assert len(heads) == 2
    both, _, _ = apply_with_intermediates(
        model, params, {}, CORRUPTED, capture=(), edit=patch(heads)
    )
    np.testing.assert_allclose(result.patched["block_*/attention/heads"], accuracy(both), rtol=1e-5)
    assert not np.allclose(result.patched["block_*/attention/heads"], result.corrupted)
    with pytest.raises(ArgumentError, match="'block_9' matches no tapped value"):
        activation_patching(
            model, params, {}, TOKENS, CORRUPTED, paths=["block_9"], metric=accuracy
        )
    with pytest.raises(ShapeError, match="same shapes"):
        activation_patching(
            model, params, {}, TOKENS, CORRUPTED[:, :4], paths=["block_0"], metric=accuracy
        )


def test_vmap_of_a_knock_out_equals_a_loop(lm):
    model, params, _ = lm

    def knocked(h):
        edit = {"block_0/attention/heads": knock_out_heads(h)}
        return apply_with_intermediates(model, params, {}, TOKENS, capture=(), edit=edit)[0]

    batched = jax.jit(jax.vmap(knocked))(jnp.arange(2))
    one = jax.jit(knocked)
    for h in range(2):
        np.testing.assert_allclose(batched[h], one(h), rtol=1e-5, atol=1e-6)
    assert not np.allclose(batched[0], batched[1], atol=1e-3)


def test_vmap_of_an_ablation_over_examples_equals_a_loop(mlp):
    model, params, _ = mlp

    def ablated(x, unit):
        edit = {"activation_0": zero_units(unit)}
        return apply_with_intermediates(model, params, {}, x, capture=(), edit=edit)[0]

    units = jnp.array([0, 3, 5])
    batched = jax.vmap(ablated)(X, units)
    for i in range(3):
        np.testing.assert_allclose(batched[i], ablated(X[i], int(units[i])), rtol=1e-5, atol=1e-6)


def test_rnn_final_carry_is_tapped_and_steps_are_the_output():
    rnn = RNN(LSTMCell(3))
    x = RNG.normal(size=(2, 4, 2)).astype(np.float32)
    params, _ = rnn.init(KEY, x)
    y, _, values = apply_with_intermediates(rnn, params, {}, x, capture="*")
    assert list(values) == ["carry"]
    h, _ = values["carry"]
    np.testing.assert_allclose(h, y[:, -1], rtol=1e-6)  # the final h is the last step's output


def test_bad_interventions_say_what_is_wrong(mlp):
    model, params, _ = mlp
    with pytest.raises(
        ShapeError, match=r"zero_units: units \[6\] out of range for axis -1 of size 6"
    ):
        run(model, params, X, jit=False, edit={"activation_0": zero_units(6)})
    with pytest.raises(ArgumentError, match="zero_units: units must be an int"):
        zero_units(1.5)
    with pytest.raises(ShapeError, match=r"patch: the value at 'dense_0' is float32\[3, 6\]"):
        run(model, params, X, jit=False, edit=patch({"dense_0": jnp.zeros((3, 5))}))
    with pytest.raises(ArgumentError, match="patch: values must be a dict"):
        patch([jnp.zeros(3)])

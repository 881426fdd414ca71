"""Remat and rematerializing: same numbers as without remat, taps through it, less memory.

References: a NumPy forward pass of the MLP (loss), the same model without ``jax.checkpoint``
(gradients: rematerialization must not change a single value), the jaxpr of the wrapper form
(the context form must trace to the same program), and XLA's compiled memory analysis.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nn_jax.combinators import Residual, Sequential
from nn_jax.core import tapping
from nn_jax.dense import Dense
from nn_jax.errors import ConfigError
from nn_jax.inspect import apply_with_intermediates
from nn_jax.normalization import BatchNorm
from nn_jax.regularization import Dropout
from nn_jax.remat import REMAT_POLICIES, Remat, rematerializing
from nn_jax.repeat import Repeat

X = np.random.default_rng(0).standard_normal((4, 3))
BLOCK = Sequential(Dense(5), jnp.tanh, Dense(3))
PLAIN = Sequential(Dense(3), jnp.tanh, BLOCK, Dense(2))


def _remat_model(policy: str) -> Sequential:
    return Sequential(Dense(3), jnp.tanh, Remat(BLOCK, policy), Dense(2))


def _loss(model, params, x):
    return jnp.sum(jnp.sin(model(params, x)))


def _numpy_loss(params, x):
    """The plain model's forward pass in NumPy, float64."""

    def dense(p, h):
        return h @ np.asarray(p["w"], np.float64) + np.asarray(p["b"], np.float64)

    h = np.tanh(dense(params["0"], x))
    h = dense(params["2"]["2"], np.tanh(dense(params["2"]["0"], h)))
    return np.sum(np.sin(dense(params["3"], h)))


@pytest.fixture(scope="module")
def params():
    return PLAIN.init(jax.random.key(0), X)[0]


def test_policy_by_name_and_unknown_name_lists_the_names():
    assert {"nothing_saveable", "dots_saveable", "everything_saveable"} <= set(REMAT_POLICIES)
    with pytest.raises(ConfigError, match=r"Remat: policy must be one of nothing_saveable, dots"):
        Remat(Dense(2), "save_nothing")
    with (
        pytest.raises(ConfigError, match=r"path 'enc/\*'.*given 'fast'"),
        rematerializing({"enc/*": "fast"}),
    ):
        pass


def test_params_tree_is_the_wrapped_layers(params):
    assert jax.tree.structure(_remat_model("nothing_saveable").init(jax.random.key(0), X)[0]) == (
        jax.tree.structure(params)
    )


@pytest.mark.parametrize("policy", ["nothing_saveable", "dots_saveable", "everything_saveable"])
def test_same_loss_and_gradients_as_without_remat(params, policy):
    model = _remat_model(policy)
    with jax.enable_x64(True):
        p64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
        x64 = jnp.asarray(X, jnp.float64)
        loss, grads = jax.jit(jax.value_and_grad(lambda p: _loss(model, p, x64)))(p64)
        ref_loss, ref_grads = jax.jit(jax.value_and_grad(lambda p: _loss(PLAIN, p, x64)))(p64)
    np.testing.assert_allclose(float(loss), _numpy_loss(params, X), rtol=1e-12)
    assert float(loss) == float(ref_loss)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12, atol=1e-14)
    # jax.checkpoint is really in the program.
    assert "remat" in str(jax.make_jaxpr(lambda p: _loss(model, p, X))(params))


def test_taps_and_edits_through_remat_equal_taps_without(params):
    edit = {"2/1": lambda h: h.at[:, 0].set(0.0)}  # inside the rematerialized block

    @jax.jit
    def run(p):
        a = apply_with_intermediates(_remat_model("nothing_saveable"), p, {}, X, edit=edit)
        b = apply_with_intermediates(PLAIN, p, {}, X, edit=edit)
        return a, b

    (y, _, taps), (y_ref, _, taps_ref) = run(params)
    assert sorted(taps) == sorted(taps_ref) == ["0", "1", "2", "2/0", "2/1", "2/2", "3"]
    assert float(jnp.abs(taps["2/1"][:, 0]).max()) == 0.0  # the edit applied inside
    np.testing.assert_array_equal(y, y_ref)
    for path in taps:
        np.testing.assert_array_equal(taps[path], taps_ref[path])
    # Gradients through an edited, tapped and rematerialized region: the edited unit gets none.
    grads = jax.jit(
        jax.grad(
            lambda p: jnp.sum(
                apply_with_intermediates(_remat_model("nothing_saveable"), p, {}, X, edit=edit)[0]
            )
        )
    )(params)
    assert float(jnp.abs(grads["2"]["0"]["w"][:, 0]).max()) == 0.0
    assert float(jnp.abs(grads["2"]["0"]["w"][:, 1]).max()) > 0.0
    # The layers the region ran are recorded (summary and drift reports read them).
    with tapping() as recorded:
        _remat_model("nothing_saveable")(params, X)
    assert recorded.layers["2/0"] == Dense(5)


def test_rng_train_flag_and_state_pass_through():
    model = Sequential(Dense(4), BatchNorm(), Dropout(0.5))
    x = np.random.default_rng(1).standard_normal((6, 3))
    params, state = model.init(jax.random.key(0), x)
    wrapped = Remat(model)

    @jax.jit
    def run(params, state, rng):
        return (
            wrapped.apply(params, state, x, rng=rng, train=True),
            model.apply(params, state, x, rng=rng, train=True),
        )

    got, want = run(params, state, jax.random.key(3))
    assert float(jnp.mean(got[0] == 0.0)) > 0.2  # dropout did drop: the rng reached it
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_array_equal(a, b)


def test_context_form_traces_to_the_wrapper_form(params):
    def context_loss(p):
        with rematerializing({"2": "dots_saveable"}):
            return _loss(PLAIN, p, X)

    context = jax.make_jaxpr(jax.grad(context_loss))(params)
    wrapper = jax.make_jaxpr(jax.grad(lambda p: _loss(_remat_model("dots_saveable"), p, X)))(params)
    assert "remat" in str(context)
    assert str(context) == str(wrapper)
    # A pattern, and a Repeat at a matching path: remat becomes the Repeat's per-layer option.
    stack = Sequential(Dense(3), Repeat(Residual(Dense(3)), 2))
    p_stack = stack.init(jax.random.key(0), X)[0]
    wanted = Sequential(Dense(3), Repeat(Residual(Dense(3)), 2, remat="nothing_saveable"))

    def stacked_loss(p):
        with rematerializing({"1": "nothing_saveable"}):
            return _loss(stack, p, X)

    assert str(jax.make_jaxpr(jax.grad(stacked_loss))(p_stack)) == str(
        jax.make_jaxpr(jax.grad(lambda p: _loss(wanted, p, X)))(p_stack)
    )


def _temp_bytes(model, x):
    params = jax.eval_shape(model.init, jax.random.key(0), x)[0]
    grad = jax.jit(jax.grad(lambda p, x: jnp.sum(model(p, x) ** 2)))
    return grad.lower(params, x).compile().memory_analysis().temp_size_in_bytes


def test_save_nothing_halves_compiled_temp_memory_of_a_deep_mlp():
    """4 residual MLP blocks (32 -> 128 -> 32), batch 128: XLA's compiled temp memory of the
    gradient (a compile-time quantity, not a timing). Larger models and more variants are
    recorded by benchmarks/remat_memory.py. XLA:CPU schedules the recomputation of a ``Remat``
    in an unrolled stack early (no saving there), so the saving is measured with the layers
    scanned, where each layer is recomputed in its own backward iteration."""
    block = Residual(Sequential(Dense(128), jax.nn.gelu, Dense(32)))
    x = jax.ShapeDtypeStruct((128, 32), jnp.float32)
    unrolled = _temp_bytes(Sequential(*[block] * 4), x)
    scanned = _temp_bytes(Repeat(block, 4), x)
    remat = _temp_bytes(Repeat(block, 4, remat="nothing_saveable"), x)
    assert unrolled >= 2 * remat, (unrolled, remat)
    assert scanned >= 2 * remat, (scanned, remat)


def test_fit_applies_the_rule_table_s_remat_rules(monkeypatch):
    """``fit(mesh=, rules=)`` rematerializes the layers a remat rule names (the block at path
    "2" goes through ``jax.checkpoint`` with that policy) and trains to the same params as
    without the rule (float32: recomputation may round differently)."""
    import optax

    from nn_jax import losses
    from nn_jax.parallel import make_mesh
    from nn_jax.rules import Rule, Rules
    from nn_jax.train import fit

    seen = []
    real = jax.checkpoint

    def spy(fn, **kwargs):
        seen.append(kwargs.get("policy"))
        return real(fn, **kwargs)

    x = np.random.default_rng(1).standard_normal((32, 3)).astype(np.float32)
    y = np.random.default_rng(2).standard_normal((32, 2)).astype(np.float32)
    common = dict(key=jax.random.key(0), steps=3, batch_size=8, progress=False)
    mesh = make_mesh(data=1)
    plain, _ = fit(PLAIN, losses.mse, optax.sgd(0.1), (x, y), mesh=mesh, **common)
    monkeypatch.setattr(jax, "checkpoint", spy)
    rules = Rules(Rule("2", remat="dots_saveable"))
    remat, _ = fit(PLAIN, losses.mse, optax.sgd(0.1), (x, y), mesh=mesh, rules=rules, **common)
    assert jax.checkpoint_policies.dots_saveable in seen
    for a, b in zip(jax.tree.leaves(remat.params), jax.tree.leaves(plain.params), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)

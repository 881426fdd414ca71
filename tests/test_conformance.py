"""Every registered layer through the same checks (the registry is tests/cases/).

init from a ShapeDtypeStruct == init from an array; eval_shape == real output; jit == eager;
vmap == loop; float64 gradients vs central finite differences; a train step compiles once;
NumPy inputs accepted; every public layer is registered; a layer pickles, prints without memory
addresses, and returns one output structure whatever its flags. A case's side inputs are given
as ``side=`` everywhere (mapped with the input under ``vmap``, the third item of a train batch).
"""

from __future__ import annotations

import collections
import copy
import inspect
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import nn_jax
from nn_jax.core import Layer
from nn_jax.train import TrainState, make_stateful_train_step
from tests.cases import Case, all_cases

CASES = all_cases()


def _first_case_per_zoo_model() -> set[str]:
    """Ids of the cases whose gradients are finite-differenced: every case of a layer, and the
    first case of each zoo model (``nn_jax.models``). A zoo model is a composition of layers whose
    own cases are all checked, so its further cases (other flags) would only re-check JAX's
    chain rule at the cost of a float64 compile of the whole model each (CI time)."""
    ids, seen = set(), set()
    for case in CASES:
        kind = type(case.layer)
        if not kind.__module__.startswith("nn_jax.models.") or kind not in seen:
            ids.add(case.id)
            seen.add(kind)
    return ids


FD_CASES = _first_case_per_zoo_model()
KEY = jax.random.key(0)
FD_EPS = 1e-6  # central-difference step in float64


def _cast(tree, dtype):
    return jax.tree.map(
        lambda a: np.asarray(a, dtype) if np.issubdtype(np.asarray(a).dtype, np.floating) else a,
        tree,
    )


def _input(case: Case, dtype=jnp.float32, seed: int = 0):
    return _cast(case.make_input(np.random.default_rng(seed)), dtype)


def _side(case: Case, dtype=jnp.float32, seed: int = 0):
    """The case's side inputs for the input of the same ``seed`` (``None`` without any)."""
    if case.side is None:
        return None
    return _cast(case.side(np.random.default_rng([seed, 1])), dtype)


def _apply(case: Case, params, state, x, side=None, promotion="strict"):
    """The layer's apply; with strict dtype promotion (the default) no layer may mix dtypes
    implicitly. The float64 finite-difference check uses standard promotion: it casts inputs and
    params to float64 but keeps the float32 state (batch statistics, caches) that init made."""
    rng = jax.random.key(1) if case.rng else None
    with jax.numpy_dtype_promotion(promotion):
        return case.layer.apply(params, state, x, side=side, rng=rng, train=case.train)


def _floats(tree):
    return [a for a in jax.tree.leaves(tree) if jnp.issubdtype(jnp.result_type(a), jnp.floating)]


def _scalar_loss(y):
    """A smooth scalar of all float outputs with fixed, non-uniform weights."""
    total = 0.0
    for i, a in enumerate(_floats(y)):
        w = jnp.cos(jnp.arange(a.size, dtype=a.dtype) * 0.37 + i).reshape(a.shape)
        total = total + jnp.sum(jnp.sin(a) * w)
    return total


def _assert_trees_close(a, b, rtol=1e-5, atol=1e-6):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x, np.float64), np.asarray(y, np.float64), rtol, atol)


@pytest.fixture(params=CASES, ids=[c.id for c in CASES], scope="module")
def case(request):
    return request.param


@pytest.fixture(scope="module")
def initialized(case):
    x = _input(case)
    params, state = case.layer.init(KEY, x)
    return x, params, state, _side(case)


def test_layer_is_hashable_and_comparable(case):
    assert hash(case.layer) == hash(copy.copy(case.layer))
    assert case.layer == copy.copy(case.layer)


def test_layer_pickles_by_value(case):
    again = pickle.loads(pickle.dumps(case.layer))
    assert again == case.layer
    assert hash(again) == hash(case.layer)


def test_repr_is_a_config_without_addresses(case):
    text = repr(case.layer)
    assert text.startswith(f"{type(case.layer).__name__}(")
    assert "0x" not in text, text


def _output_structure(case: Case):
    """The tree structure of ``apply``'s output, by abstract evaluation (no compilation)."""
    x = _input(case)
    structs = jax.tree.map(lambda a: jax.ShapeDtypeStruct(np.shape(a), np.asarray(a).dtype), x)
    params, state = jax.eval_shape(lambda key: case.layer.init(key, structs), KEY)
    y, _ = jax.eval_shape(
        lambda p, s, x, side: _apply(case, p, s, x, side), params, state, x, _side(case)
    )
    return jax.tree.structure(y)


def _cases_by_type() -> dict[str, list[Case]]:
    by_type = collections.defaultdict(list)
    for c in CASES:
        by_type[type(c.layer).__name__].append(c)
    return {name: cases for name, cases in sorted(by_type.items()) if len(cases) > 1}


CASES_BY_TYPE = _cases_by_type()


@pytest.mark.parametrize("layer_type", sorted(CASES_BY_TYPE))
def test_one_output_structure_whatever_the_flags(layer_type):
    """A layer type's cases (different flag settings) that take inputs of one tree structure
    return outputs of one tree structure: extra outputs are taps, never flags."""
    by_input = collections.defaultdict(dict)
    for c in CASES_BY_TYPE[layer_type]:
        by_input[jax.tree.structure(_input(c))][c.id] = _output_structure(c)
    for structures in by_input.values():
        assert len(set(structures.values())) == 1, structures


def test_init_from_shape_struct_is_identical(case, initialized):
    x, params, state, _ = initialized
    structs = jax.tree.map(lambda a: jax.ShapeDtypeStruct(np.shape(a), np.asarray(a).dtype), x)
    params2, state2 = case.layer.init(KEY, structs)
    assert jax.tree.structure(params) == jax.tree.structure(params2)
    for a, b in zip(
        jax.tree.leaves((params, state)), jax.tree.leaves((params2, state2)), strict=True
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.fixture(scope="module")
def eager(case, initialized):
    """The case's output, computed op by op from the NumPy inputs (once per case: eager
    application is the slow part of these checks)."""
    x, params, state, side = initialized
    return _apply(case, params, state, x, side)


@pytest.fixture(scope="module")
def jitted(case):
    """The case's apply under ``jax.jit`` (compiled once per case, shared by the checks)."""
    return jax.jit(lambda p, s, x, side: _apply(case, p, s, x, side))


def test_eval_shape_matches_output(case, initialized, eager):
    x, params, state, side = initialized
    predicted = jax.eval_shape(
        lambda p, s, x, side: _apply(case, p, s, x, side), params, state, x, side
    )
    assert jax.tree.structure(predicted) == jax.tree.structure(eager)
    for p, a in zip(jax.tree.leaves(predicted), jax.tree.leaves(eager), strict=True):
        assert (p.shape, p.dtype) == (a.shape, a.dtype)


def test_jit_equals_eager(initialized, eager, jitted):
    x, params, state, side = initialized
    _assert_trees_close(eager, jitted(params, state, x, side))


def test_numpy_and_jax_inputs_agree(case, initialized, eager):
    x, params, state, side = initialized
    as_jax = jax.tree.map(jnp.asarray, (x, side))
    _assert_trees_close(eager, _apply(case, params, state, *as_jax))


def test_vmap_equals_loop(case, initialized, jitted):
    """``vmap`` of apply equals apply example by example (both compiled: eager equality is
    :func:`test_jit_equals_eager`'s)."""
    if not case.vmap:
        pytest.skip("layer couples examples across the mapped axis")
    _, params, state, _ = initialized
    seeds = (1, 2, 3)
    xs = [_input(case, seed=s) for s in seeds]
    sides = [_side(case, seed=s) for s in seeds]
    stack = lambda trees: jax.tree.map(lambda *a: np.stack(a), *trees)  # noqa: E731
    # The side inputs are mapped on axis 0 with the input (None, without any, maps nothing).
    mapped = jax.jit(jax.vmap(jitted, in_axes=(None, None, 0, 0)))(
        params, state, stack(xs), None if case.side is None else stack(sides)
    )
    looped = [jitted(params, state, x, side) for x, side in zip(xs, sides, strict=True)]
    _assert_trees_close(mapped, jax.tree.map(lambda *a: jnp.stack(a), *looped))


def _directional_fd_check(f, point, rtol, seed=0):
    """Compare grad(f)·v with a central difference along random directions v (float64).

    ``point`` is a tuple of parts (params, input): two directions move one part each, so an
    error in one part's gradient is not hidden by the other's, then one moves them all."""
    g = jax.grad(f)(point)
    rng = np.random.default_rng(seed)
    parts = [i for i, part in enumerate(point) if _floats(part)]
    for moved in [(i,) for i in parts for _ in range(2)] + [tuple(parts)]:
        v = tuple(
            jax.tree.map(
                lambda a, i=i, moved=moved: rng.standard_normal(np.shape(a)) * (i in moved),
                part,
            )
            for i, part in enumerate(point)
        )
        analytic = sum(
            np.vdot(np.asarray(a), b)
            for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(v), strict=True)
        )
        plus = f(jax.tree.map(lambda a, d: a + FD_EPS * d, point, v))
        minus = f(jax.tree.map(lambda a, d: a - FD_EPS * d, point, v))
        numeric = (float(plus) - float(minus)) / (2 * FD_EPS)
        assert abs(analytic - numeric) <= rtol * max(abs(analytic), abs(numeric), 1.0), (
            moved,
            analytic,
            numeric,
        )


def test_float64_gradients_match_finite_differences(case):
    if not case.smooth:
        pytest.skip("not differentiable at generic points")
    if case.id not in FD_CASES:
        pytest.skip("zoo model: its layers and its first case are finite-differenced")
    with jax.enable_x64(True):
        x = _input(case, jnp.float64)
        side = _side(case, jnp.float64)
        params, state = case.layer.init(KEY, x)
        params = jax.tree.map(
            lambda a: jnp.asarray(a, jnp.float64) if jnp.issubdtype(a.dtype, jnp.floating) else a,
            params,
        )
        # Params and the input's floating leaves in one point (graphs carry integer indices
        # and masks): one compiled loss and one compiled gradient per case.
        leaves, treedef = jax.tree.flatten(x)
        is_float = [np.issubdtype(np.asarray(a).dtype, np.floating) for a in leaves]
        if not case.grad_input:
            is_float = [False] * len(leaves)

        def rebuild(floats):
            it = iter(floats)
            return jax.tree.unflatten(
                treedef, [next(it) if f else a for a, f in zip(leaves, is_float, strict=True)]
            )

        point = (params, [jnp.asarray(a) for a, f in zip(leaves, is_float, strict=True) if f])
        if not _floats(point):
            pytest.skip("nothing floating to differentiate")
        _directional_fd_check(
            jax.jit(
                lambda pt: _scalar_loss(
                    _apply(case, pt[0], state, rebuild(pt[1]), side, "standard")[0]
                )
            ),
            point,
            case.fd_rtol,
        )


def test_train_step_compiles_once(case, initialized):
    x, params, _, side = initialized
    if not _floats(params):
        pytest.skip("no parameters to train")
    optimizer = optax.sgd(1e-3)
    ts = TrainState.create(case.layer, optimizer, KEY, x)
    step = make_stateful_train_step(case.layer, lambda y, _: _scalar_loss(y), optimizer)
    batch = (x, None) if side is None else (x, None, side)
    ts, logs1 = step(ts, batch)
    ts, logs2 = step(ts, batch)
    assert np.isfinite(float(logs1["loss"])) and np.isfinite(float(logs2["loss"]))
    assert step._cache_size() == 1


def test_every_public_layer_is_registered():
    public = {
        obj
        for name in nn_jax.__all__
        for obj in [getattr(nn_jax, name)]
        if inspect.isclass(obj) and issubclass(obj, Layer) and not inspect.isabstract(obj)
    }
    for module in [nn_jax.models]:
        public |= {
            obj
            for name in module.__all__
            for obj in [getattr(module, name)]
            if inspect.isclass(obj) and issubclass(obj, Layer)
        }
    covered = {type(c.layer) for c in CASES}
    missing = sorted(cls.__name__ for cls in public - covered)
    assert not missing, f"layers without a conformance case in tests/cases/: {missing}"

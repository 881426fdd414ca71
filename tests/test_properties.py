"""Property-based tests (Hypothesis): every layer family over drawn shapes, dtypes, strides,
paddings, dilations, groups, feature sizes, batch shapes, sequence lengths, heads and graphs.

The fixed cases of tests/test_conformance.py pin one configuration per layer; here Hypothesis
draws the configuration and the input, and :func:`check_layer` runs the same properties on
each drawn example:

* ``jax.eval_shape(layer.init, key, x)`` has the tree structure, shapes and dtypes of the real
  (jitted) ``init``;
* ``jit(apply)`` equals ``apply`` run eagerly, op by op (strict dtype promotion);
* the output shape is the one an independent formula gives (PyTorch's and TensorFlow's conv and
  pooling output sizes, written out here), and the values match a NumPy float64 reference
  written from the layer's documented equations (conv and pooling loops, the LSTM/GRU
  equations, masked softmax attention, GCN/GAT/GraphSAGE sums, ...);
* ``vmap(apply)`` over an extra leading axis equals a loop over it;
* float64 gradients with respect to the params and the float inputs match central finite
  differences along two random directions (not full Jacobians);
* the layer round-trips through ``nn_jax.to_json``/``from_json`` to an equal layer (same hash
  and repr), and its params and state through ``flatten_params``/``unflatten_params`` bit for
  bit (a Checkpointer save/restore round trip has its own test).

Losses and metrics have their own properties (NumPy float64 references, reduction and mask
rules, ties); a drawn configuration whose output would be empty must raise a ``ShapeError``.

**Profiles** (registered in tests/conftest.py, chosen when the suite starts):

* ``ci``: derandomized (the same examples on every run, so CI is reproducible), a few examples
  per test (sized to about a minute of CPU time for this file: ~30-40 s with ``pytest -n 2``
  on 2 idle cores), no
  deadline, no example database; a failure prints the example and a ``@reproduce_failure``
  blob. Loaded when the ``CI`` environment variable is set (to anything but ``""``, ``0`` or
  ``false``).
* ``dev``: random examples, four times as many, no deadline; failing examples are saved in a
  database under the temp dir and tried first on the next run. Loaded otherwise.
* ``deep``: as ``dev`` with twenty times the CI examples, for a long run by hand.
* ``NN_JAX_HYPOTHESIS_PROFILE=ci`` (or ``dev``, ``deep``) overrides the choice, e.g. to replay
  CI's examples locally; pytest's ``--hypothesis-profile=NAME`` also works, and
  ``--hypothesis-seed=N`` replays one random run.

Nearly all the time goes to XLA compiling each example's programs (every new shape is a new
program), so shapes are tiny and each test has its share of examples: ``@_examples(n)`` is
``n`` examples under ``ci`` (1 for the transformer blocks, 5 for the convolutions), in
proportion under the other profiles. The last tests are minimal repros of library bugs these
properties found, marked ``xfail(strict=True)``: a fix makes them fail, to say the marker (and
the workaround in the property test that points at it) can go.
"""

from __future__ import annotations

import math
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

pytest.importorskip("hypothesis")

from hypothesis import given, note, settings
from hypothesis import strategies as st

import nn_jax
from nn_jax import (
    RNN,
    AdaptiveAvgPool,
    AvgPool,
    BatchNorm,
    Bidirectional,
    Conv,
    ConvTranspose,
    Dense,
    Dropout,
    DropPath,
    Embedding,
    FeedForward,
    Flatten,
    GATConv,
    GCNConv,
    GlobalAvgPool,
    GlobalMaxPool,
    Graph,
    GraphPool,
    GroupNorm,
    GRUCell,
    InstanceNorm,
    LayerNorm,
    LearnedPositionalEmbedding,
    LSTMCell,
    MaxPool,
    MessagePassing,
    MultiHeadAttention,
    Reshape,
    RMSNorm,
    RotaryEmbedding,
    SAGEConv,
    SimpleRNNCell,
    SinusoidalPositionalEncoding,
    SpatialDropout,
    StackedRNN,
    TrainState,
    TransformerDecoderBlock,
    TransformerEncoderBlock,
    Upsample,
    batch_graphs,
    losses,
    metrics,
)

KEY = jax.random.key(0)
APPLY_RNG = jax.random.key(1)
FD_EPS = 1e-6  # central-difference step (float64)
F32, BF16, F16 = jnp.float32, jnp.bfloat16, jnp.float16
# Drawn dtypes of the layers with a dtype policy: float32 first (what shrinking goes to).
DTYPES = st.sampled_from([F32, BF16, F16])
# jit vs eager and vmap vs loop: the same maths, only the association order may differ.
SAME_TOL = {F32: 1e-5, BF16: 2e-2, F16: 2e-3}
# Against a float64 NumPy reference: the dtype's rounding, accumulated over a few terms.
REF_TOL = {F32: 1e-4, BF16: 6e-2, F16: 8e-3}
seeds = st.integers(0, 2**32 - 1)


CI_EXAMPLES = 5  # the "ci" profile's max_examples (tests/conftest.py)


def _examples(ci: int) -> settings:
    """``ci`` examples under the "ci" profile, in proportion under the others (``ci * 4`` for
    "dev"): each test's share of the CI time budget."""
    return settings(max_examples=max(1, round(ci * settings().max_examples / CI_EXAMPLES)))


def batch_shapes(min_size: int = 0, max_size: int = 2, largest: int = 2):
    return st.lists(st.integers(1, largest), min_size=min_size, max_size=max_size).map(tuple)


def normal(shape):
    """An input maker: standard normal values of ``shape``."""
    return lambda g: g.standard_normal(shape)


def f64(a):
    return np.asarray(a, np.float64)


def _is_float(a) -> bool:
    return jnp.issubdtype(jnp.result_type(a), jnp.floating)


def _cast(tree, dtype):
    """Floating leaves of ``tree`` cast to ``dtype`` (NumPy arrays); other leaves unchanged."""
    return jax.tree.map(lambda a: np.asarray(a).astype(dtype) if _is_float(a) else a, tree)


def _stack(trees):
    return jax.tree.map(lambda *a: np.stack([np.asarray(x) for x in a]), *trees)


def _assert_close(actual, expected, tol: float, what: str) -> None:
    """Same tree structure; float leaves within ``tol`` (relative, and absolute on the scale of
    the expected leaf), other leaves equal."""
    assert jax.tree.structure(actual) == jax.tree.structure(expected), what
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        assert np.shape(a) == np.shape(e), f"{what}: shape {np.shape(a)} != {np.shape(e)}"
        if _is_float(a) or _is_float(e):
            e64 = f64(e)
            scale = max(1.0, float(np.max(np.abs(e64), initial=0.0)))
            np.testing.assert_allclose(f64(a), e64, rtol=tol, atol=tol * scale, err_msg=what)
        else:
            np.testing.assert_array_equal(np.asarray(a), np.asarray(e), err_msg=what)


def _runner(layer, *, train=False, rng=False, promotion="strict"):
    """``run(params, state, x, side) -> (y, new_state)``: the layer's apply with fixed flags."""
    key = APPLY_RNG if rng else None

    def run(params, state, x, side):
        with jax.numpy_dtype_promotion(promotion):
            return layer.apply(params, state, x, side=side, rng=key, train=train)

    return run


def _check_init(layer, x):
    """``jax.eval_shape`` of ``init`` predicts the real init's structure, shapes and dtypes."""
    predicted = jax.eval_shape(layer.init, KEY, x)
    real = jax.jit(layer.init)(KEY, x)
    assert jax.tree.structure(predicted) == jax.tree.structure(real)
    for p, r in zip(jax.tree.leaves(predicted), jax.tree.leaves(real), strict=True):
        assert (p.shape, p.dtype) == (r.shape, r.dtype)
    return real


def _perturb(params, g):
    """Params plus small noise (biases and norm scales start at 0 and 1: a reference check
    should see them matter); dtypes kept."""
    return jax.tree.map(
        lambda a: (
            (f64(a) + 0.1 * g.standard_normal(np.shape(a))).astype(a.dtype) if _is_float(a) else a
        ),
        params,
    )


def _scalar_loss(y):
    """A smooth scalar of all float outputs with fixed, non-uniform weights."""
    total = 0.0
    for i, a in enumerate(a for a in jax.tree.leaves(y) if _is_float(a)):
        w = jnp.cos(jnp.arange(a.size, dtype=a.dtype) * 0.37 + i).reshape(a.shape)
        total = total + jnp.sum(jnp.sin(a) * w)
    return total


def _tree_dot(a, b):
    return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def check_fd(loss, point, seed: int, rtol: float = 1e-5, directions: int = 2) -> None:
    """``grad(loss)(point) . v`` == a central difference of ``loss`` along ``v`` (float64), for
    random directions ``v``; one compiled probe computes both."""
    if not jax.tree.leaves(point):
        return
    g = np.random.default_rng(seed)
    dirs = [
        jax.tree.map(lambda a: g.standard_normal(np.shape(a)), point) for _ in range(directions)
    ]

    @jax.jit
    def probe(point, dirs):
        grad = jax.grad(loss)(point)
        shifted = [
            [loss(jax.tree.map(lambda p, d, s=s: p + s * FD_EPS * d, point, v)) for s in (1, -1)]
            for v in dirs
        ]
        return [_tree_dot(grad, v) for v in dirs], shifted

    analytic, shifted = probe(point, dirs)
    for a, (plus, minus) in zip(analytic, shifted, strict=True):
        a, numeric = float(a), (float(plus) - float(minus)) / (2 * FD_EPS)
        assert np.isfinite(a), a
        assert abs(a - numeric) <= rtol * max(abs(a), abs(numeric), 1.0), (a, numeric)


def _check_gradients(layer, params, state, x, side, *, train, rng, seed, rtol=1e-5):
    """Float64 gradients of a scalar of the output w.r.t. the params and the float leaves of
    the input (integer and boolean leaves, e.g. token ids or a graph's indices, are kept)."""
    with jax.enable_x64(True):
        params64, x64, side64 = _cast((params, x, side), np.float64)
        leaves, treedef = jax.tree.flatten(x64)
        is_float = [_is_float(a) for a in leaves]
        run = _runner(layer, train=train, rng=rng, promotion="standard")

        def loss(point):
            p, floats = point
            it = iter(floats)
            xx = treedef.unflatten(
                [next(it) if f else a for a, f in zip(leaves, is_float, strict=True)]
            )
            return _scalar_loss(run(p, state, xx, side64)[0])

        floats = [a for a, f in zip(leaves, is_float, strict=True) if f]
        check_fd(loss, (params64, floats), seed, rtol)


def _check_round_trip(layer, params, state) -> None:
    """Config through JSON gives an equal layer; params/state through flatten/unflatten are
    identical (structure, dtypes, bits)."""
    again = nn_jax.from_json(nn_jax.to_json(layer))
    assert again == layer, (again, layer)
    assert hash(again) == hash(layer) and repr(again) == repr(layer)
    for tree in (params, state):
        back = nn_jax.unflatten_params(nn_jax.flatten_params(tree))
        assert jax.tree.structure(back) == jax.tree.structure(tree), (back, tree)
        for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(tree), strict=True):
            assert a.dtype == b.dtype and np.array_equal(np.asarray(a), np.asarray(b))


def check_layer(
    layer,
    make,
    seed: int,
    *,
    side=None,
    train: bool = False,
    rng: bool = False,
    shape=None,
    reference=None,
    dtype=F32,
    prepare=None,
    promotion: str = "strict",
):
    """Run every property on ``layer`` with the input ``make(g)`` (and side inputs ``side(g)``):
    init vs eval_shape, jit vs eager, shape, reference, vmap vs loop, float64 gradients vs
    finite differences, config and params round trips.

    Args:
        make: ``np.random.Generator -> input``; float leaves are cast to ``dtype``. Called
            again for the vmap check: the shapes must not depend on the generator.
        side: ``np.random.Generator -> dict`` of side inputs (leading axes = the input's batch).
        shape: the expected output shape (from a formula written in the test).
        reference: ``(params, state, x, side) -> expected output`` (NumPy float64).
        prepare: ``(params, state, g) -> (params, state)`` run after init (e.g. random
            running statistics).
        promotion: JAX's dtype promotion mode for the float32/16 checks ("strict": the layer
            mixes no dtypes implicitly).

    Returns:
        ``(params, state, x, side, y, new_state)`` of the eager call.
    """
    note(f"layer: {layer!r}")
    g = np.random.default_rng(seed)
    x = _cast(make(g), dtype)
    s = side(g) if side else None
    params, state = _check_init(layer, x)
    params = _perturb(params, g)
    if prepare is not None:
        params, state = prepare(params, state, g)
    run = _runner(layer, train=train, rng=rng, promotion=promotion)
    eager = run(params, state, x, s)
    jitted = jax.jit(run)
    _assert_close(jitted(params, state, x, s), eager, SAME_TOL[dtype], "jit != eager")
    y, new_state = eager
    if shape is not None:
        assert np.shape(y) == tuple(shape), (np.shape(y), shape)
    if reference is not None:
        _assert_close(y, reference(params, state, x, s), REF_TOL[dtype], "reference")
    x2 = _cast(make(g), dtype)
    s2 = side(g) if side else None
    mapped = jax.vmap(run, in_axes=(None, None, 0, 0))(
        params, state, _stack([x, x2]), None if s is None else _stack([s, s2])
    )
    looped = _stack([eager, jitted(params, state, x2, s2)])
    _assert_close(mapped, looped, SAME_TOL[dtype], "vmap != loop")
    _check_gradients(layer, params, state, x, s, train=train, rng=rng, seed=seed)
    _check_round_trip(layer, params, state)
    return params, state, x, s, y, new_state


def assert_shape_error(layer, x, match: str = "empty output", train: bool = False) -> None:
    """``init`` + ``apply`` on ``x`` raise a ShapeError (checked abstractly: nothing compiles)."""
    with pytest.raises(nn_jax.ShapeError, match=match):
        params, state = jax.eval_shape(layer.init, KEY, x)
        jax.eval_shape(lambda p, s, x: layer.apply(p, s, x, train=train), params, state, x)


# --------------------------------------------------------------------------------------------
# Layout helpers for the spatial families (conv, pooling, resize).


def to_channels_last(x, rank: int, data_format: str):
    """``(*batch, *spatial, C)`` (moving C from before the spatial axes if channels first)."""
    return x if data_format == "channels_last" else np.moveaxis(x, -rank - 1, -1)


def from_channels_last(y, rank: int, data_format: str):
    return y if data_format == "channels_last" else np.moveaxis(y, -1, -rank - 1)


def spatial_shape(batch, sizes, channels, data_format: str):
    if data_format == "channels_last":
        return (*batch, *sizes, channels)
    return (*batch, channels, *sizes)


def same_pads(n: int, window: int, stride: int) -> tuple[int, int]:
    """TensorFlow's "SAME": ``ceil(n / s)`` outputs, the odd padding element at the end."""
    out = -(-n // stride)
    total = max((out - 1) * stride + window - n, 0)
    return total // 2, total - total // 2


def windows_out(n: int, window: int, stride: int, pads: tuple[int, int]) -> int:
    """PyTorch's output size: ``floor((n + lo + hi - window) / stride) + 1``."""
    return (n + pads[0] + pads[1] - window) // stride + 1


def np_conv(x, w, strides, pads, lhs, rhs, groups):
    """Grouped, dilated cross-correlation by loops: ``x (B, *S, C)``, ``w (*k, C/g, F)``."""
    rank = w.ndim - 2
    batch, sizes, c = x.shape[0], x.shape[1:-1], x.shape[-1]
    dilated = [(n - 1) * l + 1 for n, l in zip(sizes, lhs, strict=True)]
    xd = np.zeros((batch, *dilated, c))
    xd[(slice(None), *[slice(None, None, l) for l in lhs])] = x
    xp = np.pad(xd, [(0, 0), *pads, (0, 0)])
    extent = [(k - 1) * d + 1 for k, d in zip(w.shape[:rank], rhs, strict=True)]
    outs = [(n - e) // s + 1 for n, e, s in zip(xp.shape[1:-1], extent, strides, strict=True)]
    features = w.shape[-1]
    cg, fg = c // groups, features // groups
    y = np.zeros((batch, *outs, features))
    for o in np.ndindex(*outs):
        window = xp[
            (
                slice(None),
                *[
                    slice(i * s, i * s + e, d)
                    for i, s, e, d in zip(o, strides, extent, rhs, strict=True)
                ],
            )
        ]
        for k in range(groups):
            y[(slice(None), *o, slice(k * fg, (k + 1) * fg))] = np.tensordot(
                window[..., k * cg : (k + 1) * cg],
                w[..., k * fg : (k + 1) * fg],
                axes=(list(range(1, rank + 2)), list(range(rank + 1))),
            )
    return y


def _flat_batch(x, rank: int):
    """``(*batch, *spatial, C) -> (prod(batch), *spatial, C)`` and ``batch``."""
    batch = x.shape[: x.ndim - rank - 1]
    return x.reshape((math.prod(batch), *x.shape[x.ndim - rank - 1 :])), batch


# --------------------------------------------------------------------------------------------
# Dense family.


@_examples(5)
@given(
    lead=batch_shapes(0, 2, 3),
    d=st.integers(1, 4),
    features=st.integers(1, 4),
    use_bias=st.booleans(),
    dtype=DTYPES,
    seed=seeds,
)
def test_dense(lead, d, features, use_bias, dtype, seed):
    layer = Dense(features, use_bias=use_bias, param_dtype=dtype)

    def reference(p, state, x, side):
        return f64(x) @ f64(p["w"]) + (f64(p["b"]) if use_bias else 0.0)

    check_layer(
        layer,
        normal((*lead, d)),
        seed,
        shape=(*lead, features),
        reference=reference,
        dtype=dtype,
    )


@_examples(2)
@given(
    batch=batch_shapes(1, 2),
    rest=batch_shapes(1, 3, 3),
    reshape=st.booleans(),
    seed=seeds,
)
def test_flatten_and_reshape(batch, rest, reshape, seed):
    k = len(batch)
    if reshape:
        target = tuple(reversed(rest))
        layer, shape = Reshape(target, batch_dims=k), (*batch, *target)
    else:
        layer, shape = Flatten(batch_dims=k), (*batch, math.prod(rest))
    check_layer(
        layer,
        normal((*batch, *rest)),
        seed,
        shape=shape,
        reference=lambda p, s, x, side: f64(x).reshape(shape),
    )


# --------------------------------------------------------------------------------------------
# Convolutions.


@st.composite
def conv_options(draw, transpose: bool = False):
    """A drawn convolution: rank, groups, sizes, strides, dilations, padding, layout, input."""
    rank = draw(st.sampled_from((1, 2, 1, 2, 3)))
    groups = draw(st.sampled_from((1, 2)))
    # compact: every size an int (the same on every axis), the rank read from the input.
    compact = draw(st.booleans())

    def per_axis(lo, hi):
        if compact:
            return (draw(st.integers(lo, hi)),) * rank
        return tuple(draw(st.integers(lo, hi)) for _ in range(rank))

    o = {
        "rank": rank,
        "groups": groups,
        "compact": compact,
        "c_in": groups * draw(st.integers(1, 2)),
        "features": groups * draw(st.integers(1, 2)),
        "kernel": per_axis(1, 3),
        "strides": per_axis(1, 2),
        "dilation": per_axis(1, 2),
        "lhs": (1,) * rank if transpose else per_axis(1, 2),
    }
    kinds = ["SAME", "VALID", "int"] + ([] if compact else ["pairs"])
    kinds += ["CAUSAL"] if rank == 1 else []
    kind = draw(st.sampled_from(kinds))
    if kind == "int":
        p = draw(st.integers(0, 2))
        o["padding"], o["pads"] = p, ((p, p),) * rank
    elif kind == "pairs":
        pads = tuple((draw(st.integers(0, 2)), draw(st.integers(0, 2))) for _ in range(rank))
        o["padding"], o["pads"] = pads, pads
    else:
        o["padding"], o["pads"] = kind, None
    o["kind"] = kind
    o["output_padding"] = (0,) * rank
    if transpose and kind not in ("SAME", "CAUSAL") and max(o["strides"]) > 1:
        if compact:
            o["output_padding"] = (draw(st.integers(0, o["strides"][0] - 1)),) * rank
        else:
            o["output_padding"] = tuple(draw(st.integers(0, s - 1)) for s in o["strides"])
    o["sizes"] = tuple(draw(st.integers(1, 5 if rank < 3 else 3)) for _ in range(rank))
    o["batch"] = (draw(st.integers(1, 2)),) if compact else draw(batch_shapes(0, 2))
    o["data_format"] = draw(st.sampled_from(["channels_last", "channels_first"]))
    o["use_bias"] = draw(st.booleans())
    o["dtype"] = draw(DTYPES)
    return o


def _conv_kwargs(o, *names):
    """The layer's options: ints when ``compact``, else per-axis tuples."""
    one = (lambda v: v[0]) if o["compact"] else (lambda v: v)
    kw = {
        "strides": one(o["strides"]),
        "padding": o["padding"],
        "kernel_dilation": one(o["dilation"]),
        "feature_group_count": o["groups"],
        "use_bias": o["use_bias"],
        "data_format": o["data_format"],
        "param_dtype": o["dtype"],
    }
    kw |= {name: one(o[key]) for name, key in names}
    return one(o["kernel"]), kw


def _conv_pads(o, sizes):
    """Explicit (lo, hi) pads per axis of the forward conv on (dilated) ``sizes``."""
    pads = []
    for i, n in enumerate(sizes):
        extent = (o["kernel"][i] - 1) * o["dilation"][i] + 1
        if o["kind"] == "SAME":
            pads.append(same_pads(n, extent, o["strides"][i]))
        elif o["kind"] == "CAUSAL":
            pads.append((extent - 1, 0))
        elif o["kind"] == "VALID":
            pads.append((0, 0))
        else:
            pads.append(o["pads"][i])
    return pads


@_examples(5)
@given(o=conv_options(), seed=seeds)
def test_conv(o, seed):
    kernel, kw = _conv_kwargs(o, ("input_dilation", "lhs"))
    layer = Conv(o["features"], kernel, **kw)
    rank, fmt = o["rank"], o["data_format"]
    x_shape = spatial_shape(o["batch"], o["sizes"], o["c_in"], fmt)
    dilated = [(n - 1) * l + 1 for n, l in zip(o["sizes"], o["lhs"], strict=True)]
    pads = _conv_pads(o, dilated)
    # PyTorch's formula, on the input-dilated size: floor((n + lo + hi - d(k-1) - 1) / s) + 1;
    # "SAME" is TensorFlow's ceil(n / s).
    outs = [
        -(-n // s) if o["kind"] == "SAME" else windows_out(n, (k - 1) * d + 1, s, p)
        for n, k, s, d, p in zip(
            dilated, o["kernel"], o["strides"], o["dilation"], pads, strict=True
        )
    ]
    if min(outs) < 1:
        assert_shape_error(layer, np.zeros(x_shape, o["dtype"]))
        return

    def reference(p, state, x, side):
        xl, batch = _flat_batch(to_channels_last(f64(x), rank, fmt), rank)
        y = np_conv(xl, f64(p["w"]), o["strides"], pads, o["lhs"], o["dilation"], o["groups"])
        if o["use_bias"]:
            y = y + f64(p["b"])
        return from_channels_last(y.reshape((*batch, *y.shape[1:])), rank, fmt)

    check_layer(
        layer,
        normal(x_shape),
        seed,
        shape=spatial_shape(o["batch"], outs, o["features"], fmt),
        reference=reference,
        dtype=o["dtype"],
    )


@_examples(4)
@given(o=conv_options(transpose=True), seed=seeds)
def test_conv_transpose(o, seed):
    kernel, kw = _conv_kwargs(o, ("output_padding", "output_padding"))
    layer = ConvTranspose(o["features"], kernel, **kw)
    rank, fmt = o["rank"], o["data_format"]
    x_shape = spatial_shape(o["batch"], o["sizes"], o["c_in"], fmt)
    # PyTorch's ConvTranspose formula: (m - 1) s - lo - hi + d (k - 1) + output_padding + 1;
    # "SAME" (and "CAUSAL") give m * s.
    outs = []
    for i, m in enumerate(o["sizes"]):
        k, s, d, op = o["kernel"][i], o["strides"][i], o["dilation"][i], o["output_padding"][i]
        if o["kind"] in ("SAME", "CAUSAL"):
            outs.append(m * s)
        else:
            lo, hi = (0, 0) if o["kind"] == "VALID" else o["pads"][i]
            outs.append((m - 1) * s - lo - hi + d * (k - 1) + op + 1)
    if min(outs) < 1:
        assert_shape_error(layer, np.zeros(x_shape, o["dtype"]))
        return
    params, _, x, _, y, _ = check_layer(
        layer,
        normal(x_shape),
        seed,
        shape=spatial_shape(o["batch"], outs, o["features"], fmt),
        dtype=o["dtype"],
    )
    # The adjoint of the forward conv (NumPy loops): <conv(z), x> == <z, conv_transpose(x)>.
    x_in, _ = _flat_batch(to_channels_last(f64(x), rank, fmt), rank)
    out, _ = _flat_batch(to_channels_last(f64(y), rank, fmt), rank)
    if o["use_bias"]:
        out = out - f64(params["b"])
    z = np.random.default_rng(seed).standard_normal(out.shape)
    conv_z = np_conv(
        z, f64(params["w"]), o["strides"], _conv_pads(o, outs), (1,) * rank, o["dilation"],
        o["groups"],
    )  # fmt: skip
    assert conv_z.shape == x_in.shape
    lhs, rhs = np.vdot(conv_z, x_in), np.vdot(z, out)
    magnitude = np.vdot(np.abs(z), np.abs(out)) + np.vdot(np.abs(conv_z), np.abs(x_in))
    assert abs(lhs - rhs) <= REF_TOL[o["dtype"]] * magnitude, (lhs, rhs)


# --------------------------------------------------------------------------------------------
# Pooling.


@st.composite
def pool_options(draw):
    rank = draw(st.sampled_from((1, 2, 1, 2, 3)))
    compact = draw(st.booleans())

    def per_axis(lo, hi):
        if compact:
            return (draw(st.integers(lo, hi)),) * rank
        return tuple(draw(st.integers(lo, hi)) for _ in range(rank))

    window = per_axis(1, 3)
    default_strides = draw(st.booleans())
    strides = window if default_strides else per_axis(1, 3)
    kinds = ["VALID", "SAME", "int"] + ([] if compact else ["pairs"])
    kinds += ["CAUSAL"] if rank == 1 else []
    kind = draw(st.sampled_from(kinds))
    # Explicit padding below the window: no window lies entirely in the padding.
    if kind == "int":
        p = draw(st.integers(0, min(window) - 1))
        padding, pads = p, ((p, p),) * rank
    elif kind == "pairs":
        pads = tuple((draw(st.integers(0, w - 1)), draw(st.integers(0, w - 1))) for w in window)
        padding = pads
    else:
        padding, pads = kind, None
    return {
        "rank": rank,
        "compact": compact,
        "max": draw(st.booleans()),
        "window": window,
        "strides": None if default_strides else strides,
        "stride_values": strides,
        "kind": kind,
        "padding": padding,
        "pads": pads,
        "count_include_pad": draw(st.booleans()),
        "sizes": tuple(draw(st.integers(1, 5 if rank < 3 else 3)) for _ in range(rank)),
        "batch": (draw(st.integers(1, 2)),) if compact else draw(batch_shapes(0, 2)),
        "channels": draw(st.integers(1, 2)),
        "data_format": draw(st.sampled_from(["channels_last", "channels_first"])),
    }


def np_pool(x, window, strides, pads, is_max, count_include_pad):
    """Max or mean over windows by loops: ``x (B, *S, C)``; padded positions never win a max
    and count in a mean only with ``count_include_pad``."""
    rank = len(window)
    xp = np.pad(x, [(0, 0), *pads, (0, 0)], constant_values=-np.inf if is_max else 0.0)
    real = np.pad(np.ones(x.shape[1:-1]), pads)
    outs = [(n - w) // s + 1 for n, w, s in zip(xp.shape[1:-1], window, strides, strict=True)]
    y = np.zeros((x.shape[0], *outs, x.shape[-1]))
    axes = tuple(range(1, rank + 1))
    for o in np.ndindex(*outs):
        where = [slice(i * s, i * s + w) for i, s, w in zip(o, strides, window, strict=True)]
        win = xp[(slice(None), *where)]
        if is_max:
            y[(slice(None), *o)] = win.max(axis=axes)
        else:
            count = math.prod(window) if count_include_pad else real[tuple(where)].sum()
            y[(slice(None), *o)] = win.sum(axis=axes) / count
    return y


@_examples(5)
@given(o=pool_options(), seed=seeds)
def test_max_and_avg_pool(o, seed):
    one = (lambda v: v[0]) if o["compact"] else (lambda v: v)
    kw = {"padding": o["padding"], "data_format": o["data_format"]}
    if o["strides"] is not None:
        kw["strides"] = one(o["strides"])
    if o["max"]:
        layer = MaxPool(one(o["window"]), **kw)
    else:
        layer = AvgPool(one(o["window"]), count_include_pad=o["count_include_pad"], **kw)
    rank, fmt = o["rank"], o["data_format"]
    x_shape = spatial_shape(o["batch"], o["sizes"], o["channels"], fmt)
    pads = []
    for n, w, s, i in zip(o["sizes"], o["window"], o["stride_values"], range(rank), strict=True):
        if o["kind"] == "SAME":
            pads.append(same_pads(n, w, s))
        else:
            pads.append({"VALID": (0, 0), "CAUSAL": (w - 1, 0)}.get(o["kind"]) or o["pads"][i])
    outs = [
        -(-n // s) if o["kind"] == "SAME" else windows_out(n, w, s, p)
        for n, w, s, p in zip(o["sizes"], o["window"], o["stride_values"], pads, strict=True)
    ]
    if min(outs) < 1:
        assert_shape_error(layer, np.zeros(x_shape, np.float32))
        return

    def reference(p, state, x, side):
        xl, batch = _flat_batch(to_channels_last(f64(x), rank, fmt), rank)
        y = np_pool(xl, o["window"], o["stride_values"], pads, o["max"], o["count_include_pad"])
        return from_channels_last(y.reshape((*batch, *y.shape[1:])), rank, fmt)

    check_layer(
        layer,
        normal(x_shape),
        seed,
        shape=spatial_shape(o["batch"], outs, o["channels"], fmt),
        reference=reference,
    )


def _adaptive_matrix(n: int, out: int):
    """PyTorch's adaptive bins: output i averages inputs floor(i n / o) .. ceil((i + 1) n / o)."""
    m = np.zeros((out, n))
    for i in range(out):
        lo, hi = math.floor(i * n / out), math.ceil((i + 1) * n / out)
        m[i, lo:hi] = 1.0 / (hi - lo)
    return m


@_examples(3)
@given(
    kind=st.sampled_from(["global_avg", "global_max", "adaptive"]),
    rank=st.integers(1, 3),
    sizes=st.lists(st.integers(1, 4), min_size=3, max_size=3),
    out_sizes=st.lists(st.integers(1, 4), min_size=3, max_size=3),
    keepdims=st.booleans(),
    compact=st.booleans(),
    batch=batch_shapes(0, 2),
    channels=st.integers(1, 2),
    data_format=st.sampled_from(["channels_last", "channels_first"]),
    seed=seeds,
)
def test_global_and_adaptive_pool(
    kind, rank, sizes, out_sizes, keepdims, compact, batch, channels, data_format, seed
):
    sizes, out_sizes = tuple(sizes[:rank]), tuple(out_sizes[:rank])
    fmt = data_format
    if kind == "adaptive" and compact:  # an int output size: one batch axis, rank from it
        out_sizes, batch = (out_sizes[0],) * rank, batch[:1] or (1,)
    x_shape = spatial_shape(batch, sizes, channels, fmt)
    first = len(batch) + (fmt == "channels_first")
    spatial_axes = tuple(range(first, first + rank))
    if kind == "adaptive":
        layer = AdaptiveAvgPool(out_sizes[0] if compact else out_sizes, data_format=fmt)
        shape = spatial_shape(batch, out_sizes, channels, fmt)

        def reference(p, state, x, side):
            y = f64(x)
            for axis, n, o in zip(spatial_axes, sizes, out_sizes, strict=True):
                y = np.moveaxis(np.tensordot(y, _adaptive_matrix(n, o), ((axis,), (1,))), -1, axis)
            return y
    else:
        cls = GlobalAvgPool if kind == "global_avg" else GlobalMaxPool
        layer = cls(rank, keepdims=keepdims, data_format=fmt)
        reduce = np.mean if kind == "global_avg" else np.max
        shape = np.shape(reduce(np.zeros(x_shape), axis=spatial_axes, keepdims=keepdims))

        def reference(p, state, x, side):
            return reduce(f64(x), axis=spatial_axes, keepdims=keepdims)

    check_layer(layer, normal(x_shape), seed, shape=shape, reference=reference)


# --------------------------------------------------------------------------------------------
# Normalization.


def _np_standardize(x, axes, epsilon, center=True):
    if center:
        x = x - x.mean(axis=axes, keepdims=True)
    return x / np.sqrt(np.mean(x * x, axis=axes, keepdims=True) + epsilon)


@_examples(4)
@given(
    kind=st.sampled_from(["layer", "rms", "group", "instance", "batch_train", "batch_eval"]),
    dims=st.lists(st.integers(1, 3), min_size=2, max_size=4),
    axis_picks=st.lists(st.booleans(), min_size=4, max_size=4),
    negative=st.booleans(),
    groups=st.integers(1, 2),
    use_scale=st.booleans(),
    use_bias=st.booleans(),
    epsilon=st.sampled_from([1e-5, 1e-3]),
    momentum=st.sampled_from([0.0, 0.9, 0.99]),
    dtype=DTYPES,
    seed=seeds,
)
def test_normalization(
    kind, dims, axis_picks, negative, groups, use_scale, use_bias, epsilon, momentum, dtype, seed
):
    dims, ndim = list(dims), len(dims)
    if kind == "instance" and ndim < 3:
        dims = [*dims, 2]
        ndim = 3
    if kind == "group":
        dims[-1] = groups * dims[-1]
    shape = tuple(dims)
    opts = {"use_scale": use_scale, "use_bias": use_bias, "epsilon": epsilon}
    opts["param_dtype"] = dtype
    axes = tuple(a for a in range(ndim) if axis_picks[a]) or (ndim - 1,)
    given_axes = tuple(a - ndim for a in axes) if negative else axes
    prepare = None
    if kind in ("layer", "rms"):
        cls = LayerNorm if kind == "layer" else RMSNorm
        layer = cls(axis=given_axes, **opts)
        param_shape, full = (
            [shape[a] for a in axes],
            [shape[a] if a in axes else 1 for a in range(ndim)],
        )

        def standardized(x, state):
            return _np_standardize(x, axes, epsilon, center=kind == "layer")
    elif kind in ("group", "instance"):
        layer = GroupNorm(groups, **opts) if kind == "group" else InstanceNorm(**opts)
        g_count = groups if kind == "group" else shape[-1]
        param_shape, full = [shape[-1]], [1] * (ndim - 1) + [shape[-1]]

        def standardized(x, state):
            grouped = x.reshape((*x.shape[:-1], g_count, x.shape[-1] // g_count))
            reduce = (*range(1, grouped.ndim - 2), grouped.ndim - 1)
            return _np_standardize(grouped, reduce, epsilon).reshape(x.shape)
    else:
        feature = axes[0]
        layer = BatchNorm(axis=given_axes[0], momentum=momentum, **opts)
        param_shape, full = [shape[feature]], [shape[a] if a == feature else 1 for a in range(ndim)]
        reduce = tuple(a for a in range(ndim) if a != feature)

        def standardized(x, state):
            if kind == "batch_train":
                return _np_standardize(x, reduce, epsilon)
            mean, var = f64(state["mean"]).reshape(full), f64(state["var"]).reshape(full)
            return (x - mean) / np.sqrt(var + epsilon)

        def prepare(params, state, g):  # running statistics that are not the init's
            c, dt = shape[feature], state["mean"].dtype
            return params, {
                "mean": g.standard_normal(c).astype(dt),
                "var": g.uniform(0.5, 2.0, c).astype(dt),
            }

    def reference(p, state, x, side):
        y = standardized(f64(x), state)
        if use_scale:
            y = y * f64(p["scale"]).reshape(full)
        if use_bias:
            y = y + f64(p["b"]).reshape(full)
        return y

    if kind == "batch_train" and math.prod(shape[a] for a in reduce) == 1:
        # One value per feature: the batch statistics would zero the output (an error).
        assert_shape_error(layer, np.zeros(shape, dtype), "1 element per feature", train=True)
        return
    params, state, x, _, y, new_state = check_layer(
        layer,
        normal(shape),
        seed,
        train=kind == "batch_train",
        shape=shape,
        reference=reference,
        dtype=dtype,
        prepare=prepare,
        promotion="strict",
    )
    assert y.dtype == dtype
    assert [np.shape(v) for v in jax.tree.leaves(params)] == [tuple(param_shape)] * (
        use_scale + use_bias
    )
    if kind == "batch_train":  # running averages: m * old + (1 - m) * batch statistic
        xs = f64(x)
        mean = xs.mean(axis=reduce)
        var = ((xs - mean.reshape(full)) ** 2).mean(axis=reduce)
        for name, stat in (("mean", mean), ("var", var)):
            expected = momentum * f64(state[name]) + (1 - momentum) * stat
            tol = REF_TOL[dtype]  # the state is stored in param_dtype
            np.testing.assert_allclose(f64(new_state[name]), expected, rtol=tol, atol=tol)
    elif kind == "batch_eval":  # evaluation leaves the running statistics alone
        assert all(np.array_equal(new_state[k], state[k]) for k in state)


# --------------------------------------------------------------------------------------------
# Embedding.


@_examples(3)
@given(
    lead=batch_shapes(0, 3, 3),
    vocab=st.integers(1, 6),
    features=st.integers(1, 4),
    dtype=DTYPES,
    seed=seeds,
)
def test_embedding(lead, vocab, features, dtype, seed):
    layer = Embedding(vocab, features, param_dtype=dtype)
    *_, y, _ = check_layer(
        layer,
        lambda g: g.integers(0, vocab, lead).astype(np.int32),
        seed,
        shape=(*lead, features),
        reference=lambda p, s, x, side: f64(p["table"])[x],
        dtype=dtype,
    )
    assert y.dtype == dtype


# --------------------------------------------------------------------------------------------
# Recurrent layers: NumPy cells from the documented equations, run by a Python loop.


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def np_cell(kind: str, p, carry, x):
    """One step of the cell ``kind`` from its equations (see nn_jax.recurrent); float64."""
    w_i, w_h, b = f64(p["w_i"]), f64(p["w_h"]), f64(p["b"])
    if kind == "rnn":
        h = np.tanh(x @ w_i + carry @ w_h + b)
        return h, h
    if kind == "lstm":
        h, c = carry
        i, f, g, o = np.split(x @ w_i + h @ w_h + b, 4, axis=-1)
        c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
        h = _sigmoid(o) * np.tanh(c)
        return (h, c), h
    x_r, x_z, x_n = np.split(x @ w_i + b, 3, axis=-1)
    h_r, h_z, h_n = np.split(carry @ w_h, 3, axis=-1)
    r, z = _sigmoid(x_r + h_r), _sigmoid(x_z + h_z)
    n = np.tanh(x_n + r * (h_n + f64(p["b_hn"])))
    h = (1 - z) * n + z * carry
    return h, h


def np_rnn(kind, p, x, valid, *, hidden, reverse, return_sequences):
    """The RNN semantics by a loop: ``x (T, *batch, F)``, ``valid (T, *batch)`` bools; a masked
    step keeps the carry and outputs 0; ``last`` is the last processed real step's output."""
    batch = x.shape[1:-1]
    zeros = np.zeros((*batch, hidden))
    carry = (zeros, zeros) if kind == "lstm" else zeros
    ys, last = np.zeros((*x.shape[:-1], hidden)), zeros
    for t in reversed(range(x.shape[0])) if reverse else range(x.shape[0]):
        new, y = np_cell(kind, p, carry, x[t])
        m = valid[t][..., None]
        carry = jax.tree.map(lambda n, o, m=m: np.where(m, n, o), new, carry)
        ys[t], last = np.where(m, y, 0.0), np.where(m, y, last)
    return ys if return_sequences else last


CELLS = {"rnn": SimpleRNNCell, "lstm": LSTMCell, "gru": GRUCell}


@st.composite
def rnn_options(draw):
    return {
        "cell": draw(st.sampled_from(sorted(CELLS))),
        "hidden": draw(st.integers(1, 3)),
        "features": draw(st.integers(1, 3)),
        "steps": draw(st.integers(1, 4)),
        "batch": draw(batch_shapes(0, 2)),
        "return_sequences": draw(st.booleans()),
        "reverse": draw(st.booleans()),
        "time_major": draw(st.booleans()),
        "unroll": draw(st.integers(1, 3)),
        "hoist": draw(st.booleans()),
        "side": draw(st.sampled_from(["none", "lengths", "mask", "both"])),
    }


def _rnn_side(o):
    """Side-input maker for ``o["side"]`` and a function giving the ``(T, *batch)`` validity."""
    t, batch = o["steps"], o["batch"]
    mask_shape = (t, *batch) if o["time_major"] else (*batch, t)

    def side(g):
        s = {}
        if o["side"] in ("lengths", "both"):
            s["lengths"] = g.integers(0, t + 1, batch).astype(np.int32)
        if o["side"] in ("mask", "both"):
            s["mask"] = g.random(mask_shape) < 0.7
        return s or None

    def valid(s):
        v = np.ones((t, *batch), bool)
        if s and "lengths" in s:
            v &= np.arange(t).reshape((t,) + (1,) * len(batch)) < s["lengths"]
        if s and "mask" in s:
            v &= s["mask"] if o["time_major"] else np.moveaxis(s["mask"], -1, 0)
        return v

    return (None if o["side"] == "none" else side), valid


@_examples(3)
@given(o=rnn_options(), seed=seeds)
def test_rnn(o, seed):
    layer = RNN(
        CELLS[o["cell"]](o["hidden"]),
        return_sequences=o["return_sequences"],
        reverse=o["reverse"],
        time_major=o["time_major"],
        unroll=o["unroll"],
        hoist_input_projection=o["hoist"],
    )
    t, batch, h = o["steps"], o["batch"], o["hidden"]
    x_shape = (t, *batch, o["features"]) if o["time_major"] else (*batch, t, o["features"])
    side, valid = _rnn_side(o)
    if o["return_sequences"]:
        shape = (t, *batch, h) if o["time_major"] else (*batch, t, h)
    else:
        shape = (*batch, h)

    def reference(p, state, x, s):
        xs = f64(x) if o["time_major"] else np.moveaxis(f64(x), -2, 0)
        y = np_rnn(
            o["cell"],
            p["cell"],
            xs,
            valid(s),
            hidden=h,
            reverse=o["reverse"],
            return_sequences=o["return_sequences"],
        )
        return y if o["time_major"] or not o["return_sequences"] else np.moveaxis(y, 0, -2)

    check_layer(layer, normal(x_shape), seed, side=side, shape=shape, reference=reference)


@_examples(2)
@given(
    cell=st.sampled_from(sorted(CELLS)),
    hidden=st.integers(1, 3),
    features=st.integers(1, 3),
    batch=batch_shapes(0, 2),
    dtype=DTYPES,
    seed=seeds,
)
def test_recurrent_cell(cell, hidden, features, batch, dtype, seed):
    layer = CELLS[cell](hidden, param_dtype=dtype)

    def make(g):
        h = g.standard_normal((*batch, hidden))
        carry = (h, g.standard_normal((*batch, hidden))) if cell == "lstm" else h
        return carry, g.standard_normal((*batch, features))

    def reference(p, state, x, side):
        carry, x_t = jax.tree.map(f64, x)
        return np_cell(cell, p, carry, x_t)

    carry_shape = ((*batch, hidden),) * 2 if cell == "lstm" else (*batch, hidden)
    _, _, _, _, y, _ = check_layer(layer, make, seed, reference=reference, dtype=dtype)
    assert jax.tree.map(np.shape, y) == (carry_shape, (*batch, hidden))


@_examples(2)
@given(
    o=rnn_options(),
    merge=st.sampled_from(["concat", "sum"]),
    stacked=st.booleans(),
    seed=seeds,
)
def test_bidirectional_and_stacked_rnn(o, merge, stacked, seed):
    """Bidirectional == its two RNNs (forward, reverse) merged; StackedRNN == its layers in
    turn (the RNNs themselves are checked against the loop in test_rnn)."""
    cell = CELLS[o["cell"]](o["hidden"])
    rs, tm = o["return_sequences"], o["time_major"]
    forward = RNN(cell, return_sequences=rs, time_major=tm, unroll=o["unroll"])
    backward = RNN(cell, return_sequences=rs, time_major=tm, reverse=True)
    bi = Bidirectional(forward, merge=merge)
    t, batch, h = o["steps"], o["batch"], o["hidden"]
    x_shape = (t, *batch, o["features"]) if tm else (*batch, t, o["features"])
    side, _ = _rnn_side(o)
    width = 2 * h if merge == "concat" else h

    def merged(p, x, s):
        fwd = forward.apply(p["forward"], {}, x, side=s)[0]
        bwd = backward.apply(p["backward"], {}, x, side=s)[0]
        return np.concatenate([fwd, bwd], -1) if merge == "concat" else f64(fwd) + f64(bwd)

    if stacked:
        first = RNN(GRUCell(2), time_major=tm)
        layer = StackedRNN((first, bi))

        def reference(p, state, x, s):
            return merged(p["1"], first.apply(p["0"], {}, x, side=s)[0], s)
    else:
        layer = bi

        def reference(p, state, x, s):
            return merged(p, x, s)

    sequence = (t, *batch, width) if tm else (*batch, t, width)
    shape = sequence if rs else (*batch, width)
    check_layer(layer, normal(x_shape), seed, side=side, shape=shape, reference=reference)


# --------------------------------------------------------------------------------------------
# Attention.


def np_rope(x, positions, base=10000.0):
    """Rotate-half RoPE: pairs (i, i + D/2) rotated by ``p * base^(-2i/D)``; ``x (..., T, H, D)``,
    ``positions (T,)``."""
    half = x.shape[-1] // 2
    angles = np.asarray(positions, np.float64)[:, None] * base ** (
        -2.0 * np.arange(half) / x.shape[-1]
    )
    cos, sin = np.cos(angles)[:, None, :], np.sin(angles)[:, None, :]
    x1, x2 = x[..., :half], x[..., half:]
    return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


def np_masked_softmax(logits, allowed):
    """Softmax over the last axis of the allowed entries; a row with none allowed is all 0."""
    masked = np.where(allowed, logits, -np.inf)
    top = np.max(masked, axis=-1, keepdims=True)
    e = np.where(allowed, np.exp(masked - np.where(np.isfinite(top), top, 0.0)), 0.0)
    total = e.sum(axis=-1, keepdims=True)
    return np.where(total > 0, e / np.where(total > 0, total, 1.0), 0.0)


def np_mha(p, xq, xkv, *, heads, kv_heads, use_bias, rope, allowed):
    """Multi-head attention from its definition (nn_jax.attention), float64: ``allowed`` is
    the combined boolean mask broadcastable to ``(..., H, Tq, Tk)``."""
    b = (lambda name: f64(p[name])) if use_bias else (lambda name: 0.0)
    q = np.einsum("...tf,fhd->...thd", xq, f64(p["w_q"])) + b("b_q")
    k = np.einsum("...tf,fhd->...thd", xkv, f64(p["w_k"])) + b("b_k")
    v = np.einsum("...tf,fhd->...thd", xkv, f64(p["w_v"])) + b("b_v")
    if rope:
        q, k = np_rope(q, np.arange(q.shape[-3])), np_rope(k, np.arange(k.shape[-3]))
    group = heads // kv_heads  # query head i uses key/value head i // group
    k, v = np.repeat(k, group, axis=-2), np.repeat(v, group, axis=-2)
    logits = np.einsum("...qhd,...khd->...hqk", q, k) / np.sqrt(q.shape[-1])
    weights = np_masked_softmax(logits, np.broadcast_to(allowed, logits.shape))
    out = np.einsum("...hqk,...khd->...qhd", weights, v)
    return np.einsum("...qhd,hdf->...qf", out, f64(p["w_o"])) + b("b_o")


@st.composite
def attention_options(draw):
    heads = draw(st.integers(1, 3))
    rope = draw(st.booleans())
    head_dim = 2 if rope else draw(st.integers(1, 3))
    explicit = draw(st.booleans())  # head_dim given, or read from the input (F_q // H)
    cross = draw(st.booleans())
    tq = draw(st.integers(1, 4))
    f_q = draw(st.integers(1, 4)) if explicit else heads * head_dim
    return {
        "heads": heads,
        "kv_heads": draw(st.sampled_from([k for k in range(1, heads + 1) if heads % k == 0])),
        "head_dim": head_dim,
        "explicit": explicit,
        "rope": rope,
        "cross": cross,
        "causal": not cross and draw(st.booleans()),
        "f_q": f_q,
        "f_kv": draw(st.integers(1, 3)) if cross else f_q,
        "tq": tq,
        "tk": draw(st.integers(1, 4)) if cross else tq,
        "batch": draw(batch_shapes(0, 2)),
        "out_features": draw(st.sampled_from([None, 1, 3])),
        "use_bias": draw(st.booleans()),
        "key_mask": draw(st.booleans()),
        "lengths": not cross and draw(st.booleans()),
        "mask": draw(st.sampled_from([None, "shared", "per_head"])),
        "dropout": draw(st.sampled_from([0.0, 0.0, 0.5])),
        "dtype": draw(DTYPES),
    }


@_examples(2)
@given(o=attention_options(), seed=seeds)
def test_multi_head_attention(o, seed):
    """Masks drawn at random (key masks, lengths, a boolean mask, causal): fully masked query
    rows happen, and must give the output bias (zero attention output) and finite gradients."""
    layer = MultiHeadAttention(
        o["heads"],
        num_kv_heads=o["kv_heads"],
        head_dim=o["head_dim"] if o["explicit"] else None,
        out_features=o["out_features"],
        causal=o["causal"],
        use_bias=o["use_bias"],
        rope=RotaryEmbedding() if o["rope"] else None,
        dropout_rate=o["dropout"],
        param_dtype=o["dtype"],
    )
    batch, tq, tk = o["batch"], o["tq"], o["tk"]
    xq_shape, xkv_shape = (*batch, tq, o["f_q"]), (*batch, tk, o["f_kv"])
    if o["cross"]:

        def make(g):
            return g.standard_normal(xq_shape), g.standard_normal(xkv_shape)
    else:
        make = normal(xq_shape)

    def side(g):
        s = {}
        if o["key_mask"]:
            s["key_mask"] = g.random((*batch, tk)) < 0.6
        if o["lengths"]:
            s["lengths"] = g.integers(0, tk + 1, batch).astype(np.int32)
        if o["mask"]:
            s["mask"] = g.random((*batch, 1 if o["mask"] == "shared" else o["heads"], tq, tk)) < 0.7
        return s or None

    def reference(p, state, x, s):
        xq, xkv = (f64(x[0]), f64(x[1])) if o["cross"] else (f64(x), f64(x))
        allowed = np.ones((*batch, 1, tq, tk), bool)
        if o["causal"]:
            allowed &= np.tril(np.ones((tq, tk), bool))
        if s and "key_mask" in s:
            allowed &= s["key_mask"][..., None, None, :]
        if s and "lengths" in s:
            allowed &= (np.arange(tk) < s["lengths"][..., None])[..., None, None, :]
        if s and "mask" in s:
            allowed = allowed & s["mask"]
        return np_mha(
            p,
            xq,
            xkv,
            heads=o["heads"],
            kv_heads=o["kv_heads"],
            use_bias=o["use_bias"],
            rope=o["rope"],
            allowed=allowed,
        )

    train = o["dropout"] > 0
    check_layer(
        layer,
        make,
        seed,
        side=side,
        train=train,
        rng=train,
        shape=(*batch, tq, o["out_features"] or o["f_q"]),
        reference=None if train else reference,
        dtype=o["dtype"],
        promotion="strict",
    )


# --------------------------------------------------------------------------------------------
# Transformer blocks and the feed-forward network.


@_examples(1)
@given(
    decoder=st.booleans(),
    heads=st.integers(1, 2),
    kv_split=st.booleans(),
    head_dim=st.integers(1, 2),
    mlp=st.integers(1, 4),
    norm_position=st.sampled_from(["pre", "post"]),
    norm=st.sampled_from(["layer", "rms"]),
    ffn=st.sampled_from(["gelu", "gelu_exact", "relu", "swiglu"]),
    causal=st.booleans(),
    dropout=st.sampled_from([0.0, 0.3]),
    steps=st.integers(1, 3),
    memory_steps=st.integers(1, 3),
    batch=batch_shapes(0, 1),
    masked=st.booleans(),
    seed=seeds,
)
def test_transformer_blocks(
    decoder,
    heads,
    kv_split,
    head_dim,
    mlp,
    norm_position,
    norm,
    ffn,
    causal,
    dropout,
    steps,
    memory_steps,
    batch,
    masked,
    seed,
):
    opts = {
        "num_kv_heads": 1 if kv_split else None,
        "norm_position": norm_position,
        "norm": norm,
        "ffn": ffn,
        "dropout_rate": dropout,
        "attention_dropout_rate": dropout,
    }
    d = heads * head_dim
    x_shape = (*batch, steps, d)
    if decoder:
        layer = TransformerDecoderBlock(heads, mlp, **opts)

        def make(g):
            return g.standard_normal(x_shape), g.standard_normal((*batch, memory_steps, 2))

        name, length = "memory_key_mask", memory_steps
    else:
        layer = TransformerEncoderBlock(heads, mlp, causal=causal, **opts)
        make, name, length = normal(x_shape), "key_mask", steps

    def side(g):
        return {name: g.random((*batch, length)) < 0.6}

    train = dropout > 0
    check_layer(
        layer,
        make,
        seed,
        side=side if masked else None,
        train=train,
        rng=train,
        shape=x_shape,
    )


def _np_activation(name, z):
    if name == "gelu":  # JAX's default: the tanh approximation
        return 0.5 * z * (1 + np.tanh(np.sqrt(2 / np.pi) * (z + 0.044715 * z**3)))
    return z * _sigmoid(z) if name == "silu" else np.tanh(z)


@_examples(2)
@given(
    lead=batch_shapes(1, 2),
    features=st.integers(1, 3),
    hidden=st.integers(1, 4),
    out=st.sampled_from([None, 1, 2]),
    activation=st.sampled_from(["gelu", "silu", "tanh"]),
    gated=st.booleans(),
    use_bias=st.booleans(),
    seed=seeds,
)
def test_feed_forward(lead, features, hidden, out, activation, gated, use_bias, seed):
    layer = FeedForward(
        hidden, out_features=out, activation=activation, gated=gated, use_bias=use_bias
    )

    def dense(p, x):
        return x @ f64(p["w"]) + (f64(p["b"]) if use_bias else 0.0)

    def reference(p, state, x, side):
        x = f64(x)
        up = dense(p["up"], x)
        h = (
            _np_activation(activation, dense(p["gate"], x)) * up
            if gated
            else _np_activation(activation, up)
        )
        return dense(p["down"], h)

    check_layer(
        layer,
        normal((*lead, features)),
        seed,
        shape=(*lead, out or features),
        reference=reference,
    )


# --------------------------------------------------------------------------------------------
# Positional encodings.


@_examples(3)
@given(
    kind=st.sampled_from(["sinusoidal", "learned", "rotary"]),
    batch=batch_shapes(0, 2),
    steps=st.integers(1, 4),
    half=st.integers(1, 2),
    heads=st.integers(1, 2),
    extra_length=st.integers(0, 2),
    positions=st.sampled_from([None, "shared", "per_example"]),
    seed=seeds,
)
def test_positional(kind, batch, steps, half, heads, extra_length, positions, seed):
    d = 2 * half
    max_length = steps + extra_length
    if kind == "rotary":
        layer, x_shape = RotaryEmbedding(), (*batch, steps, heads, d)
    elif kind == "sinusoidal":
        layer, x_shape = SinusoidalPositionalEncoding(), (*batch, steps, d)
    else:
        layer, x_shape = LearnedPositionalEmbedding(max_length), (*batch, steps, d)
    side = None
    if positions is not None:
        pos_shape = (steps,) if positions == "shared" or not batch else (*batch, steps)

        def side(g):
            return {"positions": g.integers(0, max_length, pos_shape).astype(np.int32)}

    def reference(p, state, x, s):
        pos = np.arange(steps) if s is None else s["positions"]
        x = f64(x)
        if kind == "rotary":
            if pos.ndim == 1:
                return np_rope(x, pos)
            flat = x.reshape((-1, *x.shape[-3:]))
            rows = [np_rope(e, q) for e, q in zip(flat, pos.reshape(-1, steps), strict=True)]
            return np.stack(rows).reshape(x.shape)
        if kind == "learned":
            return x + f64(p["embedding"])[pos]
        i = np.arange(half)
        angles = f64(pos)[..., None] / 10000.0 ** (2 * i / d)
        pe = np.stack([np.sin(angles), np.cos(angles)], axis=-1).reshape((*pos.shape, d))
        return x + pe

    check_layer(layer, normal(x_shape), seed, side=side, shape=x_shape, reference=reference)


# --------------------------------------------------------------------------------------------
# Graph layers: NumPy sums over the real edges from the papers' equations.


@st.composite
def graph_specs(draw):
    """One or two small graphs (no self loops), padded to fixed slots: 8 nodes, 8 edges (or
    none at all, when there are no edges), 3 graphs. Fixed slots keep the eager ops' shapes
    from one example to the next (they compile once); test_graph_layers adds more slots."""
    nodes = draw(st.lists(st.integers(1, 4), min_size=1, max_size=2))
    edges = [draw(st.integers(0, 4)) if n > 1 else 0 for n in nodes]
    return {
        "nodes": nodes,
        "edges": edges,
        "edge_slots": 0 if not sum(edges) and draw(st.booleans()) else 8,
        "features": draw(st.integers(1, 3)),
        "edge_features": draw(st.sampled_from([0, 2])),
    }


def make_graphs(spec, g):
    graphs = []
    for n, e in zip(spec["nodes"], spec["edges"], strict=True):
        senders = g.integers(0, n, e)
        receivers = (senders + g.integers(1, max(n, 2), e)) % n  # no self loops
        edges = g.standard_normal((e, spec["edge_features"])) if spec["edge_features"] else None
        graphs.append(Graph(g.standard_normal((n, spec["features"])), senders, receivers, edges))
    return graphs


def pad_graphs(spec, graphs, more: int = 0):
    return batch_graphs(
        graphs, max_nodes=8 + more, max_edges=spec["edge_slots"] + more, max_graphs=3 + more
    )


def _real_edges(gb):
    m = np.asarray(gb.edge_mask)
    return np.asarray(gb.senders)[m], np.asarray(gb.receivers)[m], np.flatnonzero(m)


def np_graph_layer(kind, layer, p, gb):
    """The layer's output from its equations (nn_jax.graph docstrings), float64; padding 0."""
    x = f64(gb.nodes)
    n = x.shape[0]
    real = np.asarray(gb.node_mask)
    s, r, edge_ids = _real_edges(gb)
    if kind == "pool":
        out = np.zeros((len(gb.graph_mask), x.shape[1]))
        for k in range(out.shape[0]):
            members = x[(np.asarray(gb.node_graph) == k) & real]
            if len(members):
                reduce = {"sum": np.sum, "mean": np.mean, "max": np.max}[layer.reduction]
                out[k] = reduce(members, axis=0)
        return out
    if kind == "gcn":
        h = x @ f64(p["linear"]["w"])
        degree = 1.0 + np.bincount(r, minlength=n)
        y = h / degree[:, None]
        for j, i in zip(s, r, strict=True):
            y[i] += h[j] / np.sqrt(degree[i] * degree[j])
        bias = f64(p["b"]) if layer.use_bias else 0.0
    elif kind == "sage":
        neigh = np.zeros_like(x)
        counts = np.bincount(r, minlength=n)
        for j, i in zip(s, r, strict=True):
            neigh[i] += x[j] / counts[i]
        y = x @ f64(p["self"]["w"]) + neigh @ f64(p["neighbours"]["w"])
        if layer.use_bias:
            y = y + f64(p["neighbours"]["b"])
        if layer.normalize:
            y = y / np.maximum(np.linalg.norm(y, axis=-1, keepdims=True), 1e-12)
        bias = 0.0
    elif kind == "gat":
        heads, f = layer.heads, layer.features
        z = (x @ f64(p["linear"]["w"])).reshape(n, heads, f)
        senders, receivers = list(s), list(r)
        if layer.add_self_loops:
            senders += list(np.flatnonzero(real))
            receivers += list(np.flatnonzero(real))
        e = np.array(
            [(z[j] * f64(p["att_src"])).sum(-1) + (z[i] * f64(p["att_dst"])).sum(-1)
             for j, i in zip(senders, receivers, strict=True)]
        ).reshape(-1, heads)  # fmt: skip
        e = np.where(e > 0, e, layer.negative_slope * e)
        y = np.zeros((n, heads, f))
        for i in set(receivers):
            into = [k for k, t in enumerate(receivers) if t == i]
            alpha = np.exp(e[into] - e[into].max(axis=0))
            alpha = alpha / alpha.sum(axis=0)
            y[i] = sum(a[:, None] * z[senders[k]] for a, k in zip(alpha, into, strict=True))
        y = y.reshape(n, heads * f) if layer.concat else y.mean(axis=1)
        bias = f64(p["b"]) if layer.use_bias else 0.0
    else:  # message passing with Dense message and update layers
        parts = [x[s], x[r]] + ([f64(gb.edges)[edge_ids]] if gb.edges is not None else [])
        messages = np.concatenate(parts, axis=-1) @ f64(p["message"]["w"]) + f64(p["message"]["b"])
        agg = np.zeros((n, messages.shape[1]))
        for i in range(n):
            mine = messages[r == i]
            if len(mine):
                agg[i] = {"sum": np.sum, "mean": np.mean, "max": np.max}[layer.aggregate](
                    mine, axis=0
                )
        y = np.concatenate([x, agg], -1) @ f64(p["update"]["w"]) + f64(p["update"]["b"])
        bias = 0.0
    return np.where(real[:, None], y + bias, 0.0)


@_examples(3)
@given(
    spec=graph_specs(),
    kind=st.sampled_from(["gcn", "gat", "sage", "mp", "pool"]),
    features=st.integers(1, 3),
    heads=st.integers(1, 2),
    flag=st.booleans(),
    self_loops=st.booleans(),
    use_bias=st.booleans(),
    reduction=st.sampled_from(["sum", "mean", "max"]),
    seed=seeds,
)
def test_graph_layers(spec, kind, features, heads, flag, self_loops, use_bias, reduction, seed):
    """Also: extra padding slots change nothing on the real nodes (or graphs)."""
    if kind == "gcn":
        layer, width = GCNConv(features, use_bias=use_bias), features
    elif kind == "gat":
        layer = GATConv(
            features, heads=heads, concat=flag, add_self_loops=self_loops, use_bias=use_bias
        )
        width = heads * features if flag else features
    elif kind == "sage":
        layer, width = SAGEConv(features, normalize=flag, use_bias=use_bias), features
    elif kind == "mp":
        layer = MessagePassing(Dense(2), Dense(features), aggregate=reduction)
        width = features
    else:
        layer, width = GraphPool(reduction), spec["features"]

    def make(g):
        return pad_graphs(spec, make_graphs(spec, g))

    first = make(np.random.default_rng(0))
    rows = first.num_graphs if kind == "pool" else first.num_nodes
    params, state, *_ = check_layer(
        layer,
        make,
        seed,
        shape=(rows, width),
        reference=lambda p, s, gb, side: np_graph_layer(kind, layer, p, gb),
    )
    # Padding invariance: the same graphs in a batch with more slots of every kind.
    graphs = make_graphs(spec, np.random.default_rng(seed))
    small, big = pad_graphs(spec, graphs), pad_graphs(spec, graphs, more=2)
    run = jax.jit(lambda p, gb: layer.apply(p, state, gb)[0])
    y_small, y_big = np.asarray(run(params, small)), np.asarray(run(params, big))
    real = len(spec["nodes"]) if kind == "pool" else sum(spec["nodes"])
    np.testing.assert_allclose(y_big[:real], y_small[:real], rtol=1e-5, atol=1e-6)
    assert not np.any(y_big[real:])  # padding rows are 0


# --------------------------------------------------------------------------------------------
# Upsampling.


@_examples(3)
@given(
    rank=st.integers(1, 3),
    scales=st.lists(st.sampled_from([1, 2, 3, 1.5, 2.5]), min_size=3, max_size=3),
    sizes=st.lists(st.integers(1, 3), min_size=3, max_size=3),
    method=st.sampled_from(["nearest", "bilinear", "cubic"]),
    compact=st.booleans(),
    data_format=st.sampled_from(["channels_last", "channels_first"]),
    channels=st.integers(1, 2),
    seed=seeds,
)
def test_upsample(rank, scales, sizes, method, compact, data_format, channels, seed):
    scales = (scales[0],) * rank if compact else tuple(scales[:rank])
    sizes = tuple(sizes[:rank])
    batch = (2,) if compact else ()
    layer = Upsample(scales[0] if compact else scales, method=method, data_format=data_format)
    outs = tuple(math.floor(n * s) for n, s in zip(sizes, scales, strict=True))
    reference = None
    if method == "nearest" and all(float(s).is_integer() for s in scales):

        def reference(p, state, x, side):
            y = to_channels_last(f64(x), rank, data_format)
            for axis, s in enumerate(scales):
                y = np.repeat(y, int(s), axis=y.ndim - rank - 1 + axis)
            return from_channels_last(y, rank, data_format)

    check_layer(
        layer,
        normal(spatial_shape(batch, sizes, channels, data_format)),
        seed,
        shape=spatial_shape(batch, outs, channels, data_format),
        reference=reference,
    )


# --------------------------------------------------------------------------------------------
# Regularization: identity in evaluation; in training, zeros or x / (1 - rate), shared masks.


@_examples(3)
@given(
    kind=st.sampled_from(["dropout", "spatial", "drop_path"]),
    rate=st.sampled_from([0.0, 0.3, 0.5, 1.0]),
    train=st.booleans(),
    dims=st.lists(st.integers(1, 3), min_size=3, max_size=4),
    broadcast=st.lists(st.booleans(), min_size=4, max_size=4),
    seed=seeds,
)
def test_regularization(kind, rate, train, dims, broadcast, seed):
    shape = tuple(dims)
    shared = ()
    if kind == "dropout":
        shared = tuple(a - len(shape) for a in range(len(shape)) if broadcast[a])
        layer = Dropout(rate, broadcast_dims=shared)
    elif kind == "spatial":
        layer, shared = SpatialDropout(rate), tuple(range(1, len(shape) - 1))
    else:
        layer, shared = DropPath(rate), tuple(range(1, len(shape)))
    _, _, x, _, y, _ = check_layer(
        layer,
        normal(shape),
        seed,
        train=train,
        rng=train,
        shape=shape,
        reference=None if train and rate > 0 else (lambda p, s, x, side: f64(x)),
    )
    x, y = f64(x), f64(y)
    if not train or rate == 0:
        assert np.array_equal(y, x)  # the identity, bit for bit
        return
    kept = y != 0
    np.testing.assert_allclose(y[kept], x[kept] / (1 - rate), rtol=1e-6)
    axes = tuple(a % len(shape) for a in shared)
    if axes:  # one draw per position of the other axes
        assert np.array_equal(kept, np.broadcast_to(kept.any(axis=axes, keepdims=True), shape))


# --------------------------------------------------------------------------------------------
# Losses: float64 NumPy references, the reduction and mask rule, jit/vmap/gradients.


def _np_log_softmax(z):
    top = z.max(axis=-1, keepdims=True)
    return z - top - np.log(np.exp(z - top).sum(axis=-1, keepdims=True))


def _np_softmax(z):
    return np.exp(_np_log_softmax(z))


def _loss_inputs(name, g, lead, classes):
    """``(predictions, targets)`` for loss ``name`` (float64 NumPy; int labels for the integer
    form)."""
    if name in ("mse", "mae", "huber"):
        return g.standard_normal(lead), g.standard_normal(lead)
    if name == "binary_cross_entropy":
        return _sigmoid(2 * g.standard_normal(lead)), g.random(lead)
    if name == "binary_cross_entropy_with_logits":
        return 3 * g.standard_normal(lead), g.random(lead)
    logits = 2 * g.standard_normal((*lead, classes))
    if name == "softmax_cross_entropy_with_integer_labels":
        return logits, g.integers(0, classes, lead).astype(np.int32)
    targets = _np_softmax(2 * g.standard_normal((*lead, classes)))
    if name == "kl_divergence":  # some zero probabilities (0 log 0 = 0)
        targets = np.where(g.random(targets.shape) < 0.3, 0.0, targets)
        targets[..., 0] += 1e-3
        return _np_log_softmax(logits), targets / targets.sum(axis=-1, keepdims=True)
    return logits, targets


def np_loss(name, p, t, *, smoothing, delta):
    """The per-element (per-example for the class losses) loss, from the documented formulas."""
    if name == "mse":
        return (p - t) ** 2
    if name == "mae":
        return np.abs(p - t)
    if name == "huber":
        e = np.abs(p - t)
        return np.where(e <= delta, 0.5 * e**2, delta * (e - 0.5 * delta))
    if name == "binary_cross_entropy":
        return -(t * np.maximum(np.log(p), -100) + (1 - t) * np.maximum(np.log1p(-p), -100))
    if name == "binary_cross_entropy_with_logits":
        return np.maximum(p, 0) - p * t + np.log1p(np.exp(-np.abs(p)))
    if name == "kl_divergence":
        return np.sum(np.where(t > 0, t * (np.log(np.where(t > 0, t, 1.0)) - p), 0.0), axis=-1)
    classes = p.shape[-1]
    if name == "softmax_cross_entropy_with_integer_labels":
        t = np.eye(classes)[t]
    t = (1 - smoothing) * t + smoothing / classes
    return -np.sum(t * _np_log_softmax(p), axis=-1)


def np_reduce(loss, reduction, mask):
    """The reduction rule of nn_jax.losses: masked entries excluded, weights multiply, the mean
    divides by the total weight (0 for a fully masked batch)."""
    if mask is None:
        return {"none": loss, "sum": np.sum(loss), "mean": np.mean(loss)}[reduction]
    w = np.broadcast_to(f64(mask), loss.shape)
    weighted = np.where(w != 0, loss, 0.0) * w
    if reduction == "none":
        return weighted
    total = weighted.sum()
    return total if reduction == "sum" else total / (w.sum() if w.sum() > 0 else 1.0)


LOSSES = [
    "mse",
    "mae",
    "huber",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "softmax_cross_entropy",
    "softmax_cross_entropy_with_integer_labels",
    "kl_divergence",
]
ELEMENTWISE = {"mse", "mae", "huber", "binary_cross_entropy", "binary_cross_entropy_with_logits"}


@pytest.mark.parametrize("name", LOSSES)
@_examples(2)
@given(
    lead=batch_shapes(0, 2, 3),
    classes=st.integers(1, 4),
    reduction=st.sampled_from(["mean", "sum", "none"]),
    mask_kind=st.sampled_from([None, "bool", "weights", "broadcast"]),
    smoothing=st.sampled_from([0.0, 0.1]),
    delta=st.sampled_from([0.5, 1.0, 2.0]),
    seed=seeds,
)
def test_loss(name, lead, classes, reduction, mask_kind, smoothing, delta, seed):
    fn = getattr(losses, name)
    kw = {"reduction": reduction}
    if name == "huber":
        kw["delta"] = delta
    if name.startswith("softmax"):
        kw["label_smoothing"] = smoothing
    g = np.random.default_rng(seed)

    def draw():
        p, t = _loss_inputs(name, g, lead, classes)
        mask = None
        if mask_kind == "bool":
            mask = g.random(lead) < 0.6
        elif mask_kind == "weights":
            mask = g.uniform(0, 2, lead) * (g.random(lead) < 0.8)
        elif mask_kind == "broadcast" and lead:
            mask = g.random((1, *lead[1:])) < 0.6
        return _cast((p, t, mask), F32)

    def call(p, t, mask):
        with jax.numpy_dtype_promotion("strict"):
            return fn(p, t, mask=mask, **kw)

    p, t, mask = draw()
    eager = call(p, t, mask)
    jitted = jax.jit(call)
    _assert_close(jitted(p, t, mask), eager, SAME_TOL[F32], "jit != eager")
    assert eager.dtype == F32
    expected = np_reduce(
        np_loss(
            name, f64(p), t if t.dtype == np.int32 else f64(t), smoothing=smoothing, delta=delta
        ),
        reduction,
        mask,
    )
    _assert_close(eager, expected, REF_TOL[F32], "reference")
    p2, t2, mask2 = draw()
    mapped = jax.vmap(call)(*_stack([(p, t, mask), (p2, t2, mask2)]))
    _assert_close(mapped, _stack([eager, jitted(p2, t2, mask2)]), SAME_TOL[F32], "vmap != loop")
    with jax.enable_x64(True):
        t64, mask64 = _cast((t, mask), np.float64)
        if name == "binary_cross_entropy":  # stay inside (0, 1) along the FD directions
            check_fd(lambda q: _scalar_loss(fn(jax.nn.sigmoid(q), t64, mask=mask64, **kw)),
                     np.log(f64(p) / (1 - f64(p))), seed)  # fmt: skip
        else:
            check_fd(lambda q: _scalar_loss(fn(q, t64, mask=mask64, **kw)), f64(p), seed)


# --------------------------------------------------------------------------------------------
# Metrics: integer-valued scores (many ties) against NumPy, ties toward the lowest index.


def np_metric(name, scores, labels, *, k, threshold):
    if name == "binary_accuracy":
        return (scores > threshold) == (labels > 0.5)
    if scores.shape[-1] == 1 and name == "accuracy":
        return (scores[..., 0] > threshold).astype(labels.dtype) == labels
    label_score = np.take_along_axis(scores, labels[..., None], axis=-1)
    index = np.arange(scores.shape[-1])
    ahead = (scores > label_score) | ((scores == label_score) & (index < labels[..., None]))
    return ahead.sum(axis=-1) < (1 if name == "accuracy" else k)


@pytest.mark.parametrize("name", ["accuracy", "top_k_accuracy", "binary_accuracy"])
@_examples(3)
@given(
    lead=batch_shapes(0, 2, 3),
    classes=st.integers(1, 4),
    k=st.integers(1, 4),
    threshold=st.sampled_from([0.0, 0.5]),
    masked=st.booleans(),
    seed=seeds,
)
def test_metric(name, lead, classes, k, threshold, masked, seed):
    g = np.random.default_rng(seed)

    def draw():
        if name == "binary_accuracy":
            scores = g.integers(-1, 2, lead).astype(np.float32) * 0.5
            labels = g.integers(0, 2, lead).astype(np.float32)
        else:
            scores = g.integers(-1, 2, (*lead, classes)).astype(np.float32)  # ties
            high = 2 if classes == 1 and name == "accuracy" else classes
            labels = g.integers(0, high, lead).astype(np.int32)
        mask = (g.random(lead) < 0.7) if masked else None
        return scores, labels, mask

    fn = getattr(metrics, name)
    kw = {"k": min(k, classes)} if name == "top_k_accuracy" else {"threshold": threshold}

    def call(scores, labels, mask):
        return fn(scores, labels, mask=mask, **kw)

    scores, labels, mask = draw()
    eager = call(scores, labels, mask)
    jitted = jax.jit(call)
    _assert_close(jitted(scores, labels, mask), eager, 0.0, "jit != eager")
    correct = np_metric(name, scores, labels, k=kw.get("k"), threshold=threshold)
    _assert_close(eager, np_reduce(f64(correct), "mean", mask), 1e-6, "reference")
    s2 = draw()
    mapped = jax.vmap(call)(*_stack([(scores, labels, mask), s2]))
    _assert_close(mapped, _stack([eager, jitted(*s2)]), 0.0, "vmap != loop")
    if name == "top_k_accuracy":  # k = 1 is accuracy; k = C is always right; k > C an error
        if classes > 1:  # (one column: accuracy thresholds it, top-1 of 1 is always right)
            top_1 = fn(scores, labels, 1, mask=mask)
            _assert_close(top_1, metrics.accuracy(scores, labels, mask=mask), 0.0, "top-1")
        everything = 1.0 if mask is None or mask.any() else 0.0
        assert float(fn(scores, labels, classes, mask=mask)) == everything
        with pytest.raises(nn_jax.ConfigError, match="more than"):
            fn(scores, labels, classes + 1, mask=mask)


# --------------------------------------------------------------------------------------------
# Checkpoints: a train state saved and restored bit for bit, and the model rebuilt from the
# config stored next to it.


CHECKPOINTED = {
    "dense_bf16": (Dense(3, param_dtype=BF16), (2, 4)),
    "batch_norm": (BatchNorm(), (4, 3)),
    "lstm": (RNN(LSTMCell(3)), (2, 3, 2)),
    "conv": (Conv(2, (2, 2), strides=2), (1, 4, 4, 2)),
}


@_examples(2)
@given(name=st.sampled_from(sorted(CHECKPOINTED)), steps=st.integers(0, 3), seed=seeds)
def test_checkpoint_round_trip(name, steps, seed):
    layer, shape = CHECKPOINTED[name]
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    opt = optax.adam(1e-2)
    ts = TrainState.create(layer, opt, jax.random.key(seed % 1000), x)
    ts = ts._replace(
        params=_perturb(ts.params, np.random.default_rng(seed)), step=jnp.asarray(steps, jnp.int32)
    )
    with tempfile.TemporaryDirectory() as d, nn_jax.Checkpointer(d) as ckpt:
        ckpt.save(ts, metadata={"model": nn_jax.to_config(layer)})
        target = TrainState.create(layer, opt, jax.random.key(seed % 1000 + 1), x)
        restored, meta = ckpt.restore(target)
        arrays, _ = ckpt.restore_arrays()
    assert jax.tree.structure(restored) == jax.tree.structure(ts)
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(ts), strict=True):
        if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
            a, b = jax.random.key_data(a), jax.random.key_data(b)
        assert a.dtype == b.dtype and np.array_equal(np.asarray(a), np.asarray(b))
    rebuilt = nn_jax.from_config(meta["model"])
    assert rebuilt == layer
    for tree, original in ((arrays["params"], ts.params), (arrays["state"], ts.state)):
        for a, b in zip(jax.tree.leaves(tree), jax.tree.leaves(original), strict=True):
            assert np.array_equal(np.asarray(a), np.asarray(b))


# --------------------------------------------------------------------------------------------
# Library bugs these properties found, as minimal repros: those still open are marked
# xfail(strict=True), so that the fix turns them into a failure that says to remove the marker.


@pytest.mark.parametrize("where", ["loss", "graph"])
def test_value_checks_with_a_boolean_mask_under_strict_promotion(where):
    """Found by these properties and fixed: the eager value checks compared a boolean mask
    with ``!= 0`` (bool vs int), which strict promotion rejects (a raw TypePromotionError)."""
    with jax.numpy_dtype_promotion("strict"):
        if where == "loss":
            p, t = np.full(2, 0.3, np.float32), np.full(2, 0.5, np.float32)
            losses.binary_cross_entropy(p, t, mask=np.array([True, False]))
        else:
            g = Graph(np.ones((3, 2), np.float32), np.array([0, 1]), np.array([1, 2]))
            gb = batch_graphs([g], max_nodes=4, max_edges=3)
            layer = GCNConv(2)
            layer.apply(layer.init(KEY, gb)[0], {}, gb)


@pytest.mark.parametrize("dtype", [BF16, F16], ids=["bfloat16", "float16"])
def test_recurrent_cells_init_in_half_precision(dtype):
    """Found by these properties and fixed: the default orthogonal w_h initializer ran its QR
    decomposition in param_dtype, which LAPACK (CPU) has no kernel for in half precision."""
    cell = LSTMCell(2, param_dtype=dtype)
    x_t = jnp.zeros((1, 3), dtype)
    params, _ = cell.init(KEY, (cell.initial_carry((1,), dtype), x_t))
    assert params["w_h"].dtype == dtype


@pytest.mark.parametrize("name", ["layer_norm", "batch_norm", "attention", "rotary"])
def test_half_precision_layers_under_strict_promotion(name):
    """Found by these properties and fixed: the layers that compute in at least float32 called
    jnp.promote_types(x.dtype, float32), which strict promotion rejects for half-precision x."""
    layer = {
        "layer_norm": LayerNorm(param_dtype=BF16),
        "batch_norm": BatchNorm(param_dtype=BF16),
        "attention": MultiHeadAttention(2, param_dtype=BF16),
        "rotary": RotaryEmbedding(),
    }[name]
    x = jnp.ones((2, 3, 2, 4) if name == "rotary" else (2, 3, 4), BF16)
    params, state = layer.init(KEY, x)
    with jax.numpy_dtype_promotion("strict"):
        y, _ = layer.apply(params, state, x)
    assert y.dtype == BF16

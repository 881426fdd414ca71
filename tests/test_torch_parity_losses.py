"""PyTorch parity of the losses' PyTorch options (issue 12), in float64 on tiny arrays.

Each reference below is written in NumPy, with plain loops, from PyTorch's documented formulas
(``torch.nn.functional.cross_entropy``, ``nll_loss``, ``binary_cross_entropy_with_logits``,
``kl_div``, ``smooth_l1_loss``; for label smoothing with class weights, the formula of ATen's
``cross_entropy_loss_label_smoothing``: ``(1 - eps) * nll + eps / C * smooth`` where both parts
are weighted and both are divided by the same ``sum_i w[y_i]`` for ``"mean"``). PyTorch itself is
not needed. Also: the class axis at 1 (``(N, C, H, W)``), ignored labels contributing nothing
and getting a zero gradient, gradients against central differences, and the argument errors.
"""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nn_jax import losses as L
from nn_jax.errors import ConfigError, ShapeError, ValueRangeError

N, C, H, W = 2, 3, 2, 2
IGNORE = -100
rng = np.random.default_rng(12)
LOGITS = rng.normal(0.0, 2.0, (5, C))
LABELS = np.array([0, 2, IGNORE, 1, 2])
WEIGHT = np.array([0.5, 2.0, 1.25])
LOGITS4 = rng.normal(0.0, 2.0, (N, C, H, W))  # PyTorch's (N, C, H, W) layout
LABELS4 = np.array([[[0, 1], [IGNORE, 2]], [[2, 2], [1, IGNORE]]])  # (N, H, W)
REDUCTIONS = ("none", "sum", "mean")


@pytest.fixture(autouse=True)
def _x64():
    """Every test in float64 (the arrays below are NumPy float64/int64; JAX also remembers the
    int64 of an array it has seen under x64, which would warn in a later call outside it)."""
    with jax.enable_x64(True):
        yield


def _log_softmax(z):
    """log_softmax of one row of scores, as a loop-free NumPy formula."""
    m = z.max()
    return z - m - np.log(np.exp(z - m).sum())


def _rows(scores, labels):
    """(scores[:, i...], label) pairs over every position of PyTorch's (N, C, d1, ...) layout."""
    for index in np.ndindex(labels.shape):
        n, rest = index[0], index[1:]
        yield index, scores[(n, slice(None), *rest)], labels[index]


def ref_cross_entropy(scores, labels, *, weight=None, ignore_index=IGNORE, eps=0.0,
                      reduction="mean", log_probs=False):  # fmt: skip
    """``F.cross_entropy`` (or ``F.nll_loss`` with ``log_probs``) on the (N, C, ...) layout."""
    classes = scores.shape[1]
    w = np.ones(classes) if weight is None else weight
    nll = np.zeros(labels.shape)
    smooth = np.zeros(labels.shape)
    denom = 0.0
    for index, z, y in _rows(scores, labels):
        if y == ignore_index:
            continue  # ignored: 0 in "none", nothing in the sums
        logp = z if log_probs else _log_softmax(z)
        nll[index] = -w[y] * logp[y]
        smooth[index] = -sum(w[c] * logp[c] for c in range(classes))
        denom += w[y]
    if reduction == "none":
        return (1 - eps) * nll + eps / classes * smooth
    if reduction == "sum":
        return (1 - eps) * nll.sum() + eps / classes * smooth.sum()
    return (1 - eps) * nll.sum() / denom + eps / classes * smooth.sum() / denom


def _close(got, want):
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-12, atol=1e-14)


def _reductions(fn, *arrays, reductions=REDUCTIONS, **options):
    """``fn``'s reductions, as a dict, from one jitted call (one compilation instead of one per
    eager op). The options are static: closed over."""
    return jax.jit(lambda *a: {r: fn(*a, reduction=r, **options) for r in reductions})(*arrays)


def _check_reductions(got, ref, *args, **kw):
    for reduction in REDUCTIONS:
        _close(got[reduction], ref(*args, reduction=reduction, **kw))


# --- cross-entropy and NLL with class weights and ignore_index ---------------------------------


@pytest.mark.parametrize("eps", [0.0, 0.2], ids=["plain", "smoothing"])
def test_weighted_cross_entropy_matches_pytorch_formula(eps):
    ce = L.softmax_cross_entropy_with_integer_labels
    got = _reductions(ce, LOGITS, LABELS, weight=WEIGHT, ignore_index=IGNORE, label_smoothing=eps)
    _check_reductions(got, ref_cross_entropy, LOGITS, LABELS, weight=WEIGHT, eps=eps)
    got = _reductions(ce, LOGITS, LABELS, ignore_index=IGNORE, label_smoothing=eps)
    _check_reductions(got, ref_cross_entropy, LOGITS, LABELS, eps=eps)
    # The weighted "mean" is not the plain mean of the weighted per-example losses.
    plain = ref_cross_entropy(LOGITS, LABELS, weight=WEIGHT, eps=eps, reduction="none")
    want = ref_cross_entropy(LOGITS, LABELS, weight=WEIGHT, eps=eps)
    assert abs(plain[LABELS != IGNORE].mean() - want) > 1e-3


def test_class_axis_1_on_nchw():
    ce = L.softmax_cross_entropy_with_integer_labels
    moved = np.moveaxis(LOGITS4, 1, -1)  # (N, H, W, C): the class axis last, by hand
    options = dict(weight=WEIGHT, ignore_index=IGNORE, label_smoothing=0.2)
    for logits, axis in ((LOGITS4, 1), (LOGITS4, -3), (moved, -1)):
        got = _reductions(ce, logits, LABELS4, axis=axis, **options)
        _check_reductions(got, ref_cross_entropy, LOGITS4, LABELS4, weight=WEIGHT, eps=0.2)


def test_nll_loss_matches_pytorch_formula_and_cross_entropy():
    log_probs4 = np.apply_along_axis(_log_softmax, 1, LOGITS4)
    options = dict(weight=WEIGHT, ignore_index=IGNORE, axis=1)
    got = _reductions(L.nll_loss, log_probs4, LABELS4, **options)
    ref = functools.partial(ref_cross_entropy, log_probs=True)
    _check_reductions(got, ref, log_probs4, LABELS4, weight=WEIGHT)
    # F.cross_entropy(z) is F.nll_loss(log_softmax(z)).
    got = _reductions(L.softmax_cross_entropy_with_integer_labels, LOGITS4, LABELS4, **options)
    _check_reductions(got, ref, log_probs4, LABELS4, weight=WEIGHT)
    # No options: the plain mean of -log p[y].
    log_probs = np.apply_along_axis(_log_softmax, 1, LOGITS)
    labels = np.array([0, 2, 1, 1, 2])
    _close(L.nll_loss(log_probs, labels), -log_probs[np.arange(5), labels].mean())


@pytest.mark.parametrize(("weight", "eps"), [(None, 0.0), (WEIGHT, 0.3)], ids=["plain", "weighted"])
def test_ignored_positions_contribute_nothing_and_get_zero_gradient(weight, eps):
    ignored = LABELS4 == IGNORE
    odd = np.where(ignored, 7, LABELS4)  # ignore_index=7, a value past the classes
    junk = np.where(ignored[:, None], np.inf, LOGITS4)  # non-finite logits where ignored

    def ce(z, labels, ignore_index, reduction="mean"):
        return L.softmax_cross_entropy_with_integer_labels(
            z, labels, weight=weight, ignore_index=ignore_index, axis=1, label_smoothing=eps,
            reduction=reduction,
        )  # fmt: skip

    @jax.jit
    def run(z, junk):
        return (
            ce(z, LABELS4, IGNORE),
            ce(z, odd, 7),
            ce(junk, odd, 7),
            ce(z, odd, 7, "none"),
            jax.grad(lambda z: ce(z, odd, 7))(z),
        )

    base, other, with_junk, none, grad = run(LOGITS4, junk)
    want = ref_cross_entropy(LOGITS4, LABELS4, weight=weight, eps=eps)
    for value in (base, other, with_junk):
        _close(value, want)
    np.testing.assert_array_equal(np.asarray(none)[ignored], 0.0)
    grad = np.moveaxis(np.asarray(grad), 1, -1)  # (N, H, W, C)
    np.testing.assert_array_equal(grad[ignored], 0.0)
    assert np.abs(grad[~ignored]).min() > 1e-6
    # eager: the value check runs on concrete inputs
    ce(LOGITS4, odd, 7)  # ignored labels are not value-checked ...
    with pytest.raises(ValueRangeError, match=r"must lie in \[0, 3\), given values in \[0, 7\]"):
        ce(LOGITS4, odd, IGNORE)  # ... but a label that is not ignored still is


def test_all_ignored_mean_is_zero_not_nan():
    # PyTorch gives NaN (0 / 0) here; nn_jax gives 0, as for any fully masked batch, so that a
    # batch of padding does not turn training into NaN. Its gradient is 0 too.
    labels = np.full(5, IGNORE)
    log_probs = np.apply_along_axis(_log_softmax, 1, LOGITS)
    cases = [
        (fn, x, weight)
        for fn, x in (
            (L.softmax_cross_entropy_with_integer_labels, LOGITS),
            (L.nll_loss, log_probs),
        )
        for weight in (None, WEIGHT)
    ]

    @jax.jit
    def run(logits, log_probs):
        return [
            jax.value_and_grad(lambda z, fn=fn, w=w: fn(z, labels, weight=w, ignore_index=IGNORE))(
                logits if fn is L.softmax_cross_entropy_with_integer_labels else log_probs
            )
            for fn, _, w in cases
        ]

    for value, grad in run(LOGITS, log_probs):
        assert float(value) == 0.0
        np.testing.assert_array_equal(np.asarray(grad), 0.0)


def test_mask_combines_with_class_weights():
    mask = np.array([1.0, 0.5, 1.0, 0.0, 2.0])
    keep = LABELS != IGNORE
    per_example = ref_cross_entropy(LOGITS, LABELS, weight=WEIGHT, reduction="none")
    w_y = np.where(keep, WEIGHT[np.where(keep, LABELS, 0)], 0.0)
    got = _reductions(
        L.softmax_cross_entropy_with_integer_labels,
        LOGITS,
        LABELS,
        weight=WEIGHT,
        ignore_index=IGNORE,
        mask=mask,
    )
    _close(got["none"], mask * per_example)
    _close(got["sum"], (mask * per_example).sum())
    _close(got["mean"], (mask * per_example).sum() / (mask * w_y).sum())


def test_weighted_cross_entropy_with_traced_weight():
    @jax.jit
    def run(z, weight):
        return L.softmax_cross_entropy_with_integer_labels(
            z, LABELS4, weight=weight, ignore_index=IGNORE, axis=1, label_smoothing=0.1
        )

    got = run(LOGITS4, WEIGHT)
    _close(got, ref_cross_entropy(LOGITS4, LABELS4, weight=WEIGHT, eps=0.1))


# --- probability targets ---------------------------------------------------------------------


def test_probability_targets_with_weight_axis_and_smoothing():
    targets4 = np.moveaxis(rng.dirichlet(np.ones(C), (N, H, W)), -1, 1)  # (N, C, H, W)
    eps = 0.1
    per = np.zeros((N, H, W))
    for index, z, _ in _rows(LOGITS4, np.zeros((N, H, W), int)):
        t = targets4[(index[0], slice(None), *index[1:])] * (1 - eps) + eps / C
        per[index] = -sum(WEIGHT[c] * t[c] * _log_softmax(z)[c] for c in range(C))
    got = _reductions(
        L.softmax_cross_entropy, LOGITS4, targets4, weight=WEIGHT, axis=1, label_smoothing=eps
    )
    _close(got["none"], per)
    _close(got["sum"], per.sum())
    _close(got["mean"], per.sum() / (N * H * W))  # by the number of examples, not sum(w)


# --- binary cross-entropy with logits: pos_weight and weight ---------------------------------


def test_bce_with_logits_pos_weight_and_weight():
    z = rng.normal(0.0, 3.0, (4, C))
    t = rng.uniform(0.0, 1.0, (4, C))
    pos_weight = np.array([3.0, 0.5, 1.0])
    weight = rng.uniform(0.0, 2.0, (4, 1))  # per row, broadcast over classes
    sig = 1.0 / (1.0 + np.exp(-z))
    per = np.zeros_like(z)
    for i, c in np.ndindex(z.shape):  # -w [p y log s(x) + (1 - y) log(1 - s(x))]
        p, y = pos_weight[c], t[i, c]
        per[i, c] = -weight[i, 0] * (p * y * np.log(sig[i, c]) + (1 - y) * np.log(1 - sig[i, c]))
    bce = L.binary_cross_entropy_with_logits
    got = _reductions(bce, z, t, pos_weight=pos_weight, weight=weight)
    _close(got["none"], per)
    _close(got["sum"], per.sum())
    _close(got["mean"], per.mean())  # over the elements, as PyTorch: not divided by sum(w)
    scalar = _reductions(bce, z, t, pos_weight=np.float64(2.0))["none"]
    _close(scalar, -(2.0 * t * np.log(sig) + (1 - t) * np.log(1 - sig)))


def test_bce_with_logits_pos_weight_is_stable_at_extreme_logits():
    z = jnp.array([[1e4, -1e4], [-1e4, 1e4]], jnp.float32)
    t = jnp.array([[1.0, 1.0], [0.0, 0.0]], jnp.float32)
    pw = jnp.array([2.0, 3.0], jnp.float32)
    fn = L.binary_cross_entropy_with_logits
    loss, grad = jax.jit(
        lambda z: (fn(z, t, pos_weight=pw, reduction="none"), jax.grad(fn)(z, t, pos_weight=pw))
    )(z)
    np.testing.assert_array_equal(np.asarray(loss), [[0.0, 3e4], [0.0, 1e4]])
    # d/dz = (p y + 1 - y) sigmoid(z) - p y, over 4 elements.
    np.testing.assert_array_equal(np.asarray(grad), [[0.0, -0.75], [0.0, 0.25]])


# --- gradients against central differences ---------------------------------------------------


def _fd_check(f, x):
    eps = 1e-6
    x = jnp.asarray(x, jnp.float64)
    grad = np.asarray(jax.grad(f)(x))
    basis = np.eye(x.size).reshape((x.size, *x.shape))
    fd = np.array([(f(x + eps * b) - f(x - eps * b)) / (2 * eps) for b in basis])
    np.testing.assert_allclose(grad.ravel(), fd, rtol=1e-6, atol=1e-9)
    assert np.abs(grad).max() > 1e-3  # not vacuous


def test_gradients_match_central_differences():
    z = rng.normal(0.0, 1.0, (3, C))
    t = rng.uniform(0.0, 1.0, (3, C))
    labels = np.array([2, IGNORE, 0])

    def weighted_ce(x):
        return L.softmax_cross_entropy_with_integer_labels(
            x, labels, weight=WEIGHT, ignore_index=IGNORE, label_smoothing=0.2
        )

    def pos_weighted_bce(x):
        pos_weight, weight = np.array([3.0, 0.5, 1.0]), np.array([[1.0, 2.0, 0.5]])
        return L.binary_cross_entropy_with_logits(x, t, pos_weight=pos_weight, weight=weight)

    _fd_check(jax.jit(weighted_ce), z)
    _fd_check(jax.jit(pos_weighted_bce), z)


# --- KL divergence -----------------------------------------------------------------------------


def test_kl_divergence_log_target_and_batchmean():
    # F.kl_div(input, target): pointwise target * (log target - input), with log_target
    # exp(target) * (target - input); "batchmean" = sum / input.size(0).
    log_q = np.apply_along_axis(_log_softmax, -1, rng.normal(0.0, 1.0, (2, 3, C)))
    p = rng.dirichlet(np.ones(C), (2, 3))
    p[0, 0] = [0.0, 0.4, 0.6]  # a zero target probability: 0 * log 0 = 0
    pointwise = np.zeros_like(p)
    for index in np.ndindex(p.shape):
        if p[index] > 0:
            pointwise[index] = p[index] * (np.log(p[index]) - log_q[index])
    log_p = np.log(np.where(p > 0, p, 0.0), where=p > 0, out=np.full_like(p, -np.inf))
    for log_target, target in ((False, p), (True, log_p)):
        got = _reductions(L.kl_divergence, log_q, target, log_target=log_target,
                          reductions=(*REDUCTIONS, "batchmean"))  # fmt: skip
        _close(got["none"], pointwise.sum(-1))
        _close(got["sum"], pointwise.sum())
        _close(got["batchmean"], pointwise.sum() / 2)  # by input.size(0)
        # nn_jax's "mean" averages over the 6 distributions; PyTorch's over the 18 elements.
        _close(got["mean"], pointwise.sum() / 6)
    grad = jax.jit(jax.grad(lambda lq: L.kl_divergence(lq, log_p, log_target=True)))(log_q)
    assert np.isfinite(np.asarray(grad)).all()  # no NaN from the -inf target
    with pytest.raises(ConfigError, match=r"'mean', 'sum', 'none', 'batchmean'; got 'avg'"):
        L.kl_divergence(log_q, p, reduction="avg")
    with pytest.raises(ShapeError, match=r"'batchmean' .* rank >= 2 .* got shape \(3,\)"):
        L.kl_divergence(log_q[0, 0], p[0, 0], reduction="batchmean")
    with pytest.raises(ValueRangeError, match=r"targets \(log-probabilities\) must lie in"):
        L.kl_divergence(log_q, p, log_target=True)  # probabilities passed as log-probabilities


# --- smooth L1 ---------------------------------------------------------------------------------


def test_smooth_l1_matches_pytorch_formula_and_huber():
    pred = rng.normal(0.0, 1.5, (3, 4))
    target = rng.normal(0.0, 1.0, (3, 4))
    for beta in (0.0, 0.5, 1.0):
        per = np.zeros_like(pred)
        for index in np.ndindex(pred.shape):
            x = abs(pred[index] - target[index])
            per[index] = 0.5 * x**2 / beta if x < beta else x - 0.5 * beta
        assert beta == 0 or ((np.abs(pred - target) < beta).any() and (per > 0.5 * beta).any())
        got = _reductions(L.smooth_l1, pred, target, beta=beta)
        _close(got["none"], per)
        _close(got["sum"], per.sum())
        _close(got["mean"], per.mean())
        if beta:  # huber(delta=beta) == beta * smooth_l1(beta)
            _close(_reductions(L.huber, pred, target, delta=beta)["none"], beta * per)
        else:  # beta = 0 is L1
            _close(_reductions(L.mae, pred, target)["none"], per)


# --- argument errors ---------------------------------------------------------------------------


def test_bad_weight_shapes_and_values_name_the_loss_and_both_shapes():
    ce = L.softmax_cross_entropy_with_integer_labels
    with pytest.raises(ShapeError, match=re.escape(
        "softmax_cross_entropy_with_integer_labels: weight must have shape (C,) = (3,), one entry "
        "per class of logits (shape (5, 3)); got shape (4,)"
    )):  # fmt: skip
        ce(LOGITS, LABELS, weight=np.ones(4), ignore_index=IGNORE)
    with pytest.raises(ShapeError, match=re.escape(
        "weight must have shape (C,) = (3,), one entry per class of moveaxis(logits, 1, -1) "
        "(shape (2, 2, 2, 3)); got shape (1, 3)"
    )):  # fmt: skip
        ce(LOGITS4, LABELS4, weight=np.ones((1, C)), ignore_index=IGNORE, axis=1)
    with pytest.raises(ShapeError, match=r"^nll_loss: weight must have shape \(C,\) = \(3,\)"):
        L.nll_loss(-np.ones((2, C)), np.array([0, 1]), weight=np.ones(2))
    with pytest.raises(ShapeError, match=r"^softmax_cross_entropy: weight must have shape"):
        L.softmax_cross_entropy(LOGITS, np.eye(C)[[0, 1, 2, 0, 1]], weight=np.ones(5))
    with pytest.raises(ShapeError, match=re.escape(
        "binary_cross_entropy_with_logits: pos_weight must have shape (C,) = (3,), one entry per "
        "class (the last axis of logits, shape (5, 3)), or (); got shape (5,)"
    )):  # fmt: skip
        L.binary_cross_entropy_with_logits(LOGITS, np.zeros((5, C)), pos_weight=np.ones(5))
    with pytest.raises(
        ShapeError, match=r"weight must have shape \(\) or \(5, 3\) .*got shape \(3,\)"
    ):
        L.binary_cross_entropy_with_logits(LOGITS, np.zeros((5, C)), weight=np.ones(3))
    with pytest.raises(ValueRangeError, match=r"weight must lie in \[0, inf\], given values in"):
        ce(LOGITS, LABELS, weight=np.array([1.0, -1.0, 1.0]), ignore_index=IGNORE)
    with pytest.raises(ValueRangeError, match=r"pos_weight must lie in \[0, inf\]"):
        L.binary_cross_entropy_with_logits(LOGITS, np.zeros((5, C)), pos_weight=-np.ones(C))


def test_bad_options_are_config_or_shape_errors():
    ce = L.softmax_cross_entropy_with_integer_labels
    with pytest.raises(ConfigError, match=r"ignore_index must be None or a Python int.*got 1.5"):
        ce(LOGITS, LABELS, ignore_index=1.5)
    with pytest.raises(ConfigError, match=r"axis \(the class axis\) must be an int; got 1.0"):
        ce(LOGITS4, LABELS4, axis=1.0)
    with pytest.raises(ShapeError, match=re.escape(
        "axis=4 (the class axis) is out of range for logits of shape (2, 3, 2, 2); expected an "
        "int in [-4, 4)"
    )):  # fmt: skip
        ce(LOGITS4, LABELS4, axis=4)
    with pytest.raises(ShapeError, match=re.escape(
        "labels must be integer class indices of shape moveaxis(logits, 1, -1).shape[:-1] = "
        "(2, 2, 2)"
    )):  # fmt: skip
        ce(LOGITS4, LABELS4[:, 0], axis=1, ignore_index=IGNORE)
    for beta in (-0.5, True, "1"):
        with pytest.raises(ConfigError, match=r"smooth_l1: beta must be a Python float >= 0"):
            L.smooth_l1(LOGITS, LOGITS, beta=beta)
    with pytest.raises(ConfigError, match=r"nll_loss: reduction must be one of"):
        L.nll_loss(-np.ones((2, C)), np.array([0, 1]), weight=np.ones(C), reduction="batchmean")
    with pytest.raises(ValueRangeError, match=r"nll_loss: log_probs \(log-probabilities\)"):
        L.nll_loss(LOGITS, np.array([0, 1, 2, 0, 1]))  # logits, not log-probabilities

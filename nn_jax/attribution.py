"""Attribution: which parts of the input (or which tokens) a model's output depends on.

Gradient methods work on a *per-example scalar function* ``fn``: a batch ``x`` of shape
``(B, ...)`` goes to ``(B,)`` scores, where row ``b`` depends on ``x[b]`` only (examples do
not interact). :func:`output_fn` builds one from any model and an output selector (a class
index, one per example, or a callable), running each example through the model alone. Then

* :func:`saliency`: the gradient ``∂f/∂x`` (Simonyan et al., 2014);
* :func:`gradient_times_input`: ``x ⊙ ∂f/∂x``;
* :func:`smooth_grad`: the gradient averaged over noisy copies of ``x`` (Smilkov et al., 2017);
* :func:`integrated_gradients`: the gradient integrated along the straight path from a baseline
  to ``x``, times ``x − baseline`` (Sundararajan et al., 2017), and :func:`completeness`, which
  compares the attributions' sum with ``f(x) − f(baseline)``.

Each returns an array of the shape of ``x`` and is computed for the whole batch at once: since
``f(x)[b]`` depends on ``x[b]`` only, the gradient of ``sum_b f(x)[b]`` holds every example's
own gradient, the same as a Python loop over examples. Everything is plain JAX (``jax.grad``,
``jax.vmap``): the functions can be jitted, vmapped and differentiated.

For transformers, :func:`attention_rollout` (Abnar & Zuidema, 2020) combines the attention
weights of every layer, read through the taps (:func:`collect_attention_weights`), into how much
each position draws on each input token.

References:
    K. Simonyan, A. Vedaldi, A. Zisserman. Deep Inside Convolutional Networks: Visualising
    Image Classification Models and Saliency Maps. ICLR workshop, 2014. arXiv:1312.6034.

    D. Smilkov, N. Thorat, B. Kim, F. Viégas, M. Wattenberg. SmoothGrad: removing noise by
    adding noise. 2017. arXiv:1706.03825.

    M. Sundararajan, A. Taly, Q. Yan. Axiomatic Attribution for Deep Networks. ICML, 2017.
    arXiv:1703.01365.

    S. Abnar, W. Zuidema. Quantifying Attention Flow in Transformers. ACL, 2020.
    arXiv:2005.00928.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, cast

import jax
import jax.numpy as jnp
import numpy as np

from nn_jax.checks import check_in_range
from nn_jax.core import (
    Array,
    Layer,
    Params,
    PRNGKey,
    Side,
    State,
    check_key,
    check_layer,
    describe,
    tapping,
)
from nn_jax.errors import ArgumentError, ConfigError, ShapeError, ValueRangeError
from nn_jax.inspect import apply_with_intermediates

__all__ = [
    "Completeness",
    "attention_rollout",
    "collect_attention_weights",
    "completeness",
    "gradient_times_input",
    "integrated_gradients",
    "output_fn",
    "saliency",
    "smooth_grad",
]

ScalarFn = Callable[[Array], Array]
"""A per-example scalar function: ``x (B, ...) -> (B,)``, row ``b`` depending on ``x[b]`` only."""


# --------------------------------------------------------------------------------------------
# From a model to a per-example scalar function.


def output_fn(
    model: Layer,
    params: Params,
    state: State,
    *,
    target: int | Array | Callable[[Any], Array],
    side: Side | None = None,
) -> ScalarFn:
    """The per-example scalar function ``f(x) -> (B,)`` that the gradient methods attribute.

    Each example ``x[b]`` runs through ``model`` alone (a batch of one, ``jax.vmap`` over the
    batch, eval mode: ``train=False``, no rng), so ``f(x)[b]`` depends on ``x[b]`` only, and
    the selector picks one number of its output ``y_b`` (the output without its batch axis):

    * ``target`` an int ``c``: ``f(x)[b] = y_b[c]`` (``y_b`` must be a vector ``(C,)``, e.g. the
      logits of a classifier);
    * ``target`` an int array ``(B,)``: ``f(x)[b] = y_b[target[b]]`` (e.g. the true labels);
    * ``target`` a callable: ``f(x)[b] = target(y_b)``, which must be a scalar (e.g.
      ``lambda y: y[-1, 3]`` for the last step's class 3, ``lambda y: jax.nn.log_softmax(y)[3]``).

    Args:
        model: a layer instance.
        params, state: the model's parameters and state (batch norm statistics are used as in
            evaluation).
        target: the output selector (above).
        side: side inputs with a leading batch axis ``(B, ...)`` on every array; example ``b``
            gets ``side[...][b]``.

    Returns:
        ``f``: ``x (B, ...) -> (B,)``, the model's input with its batch axis.

    Raises:
        ShapeError (when ``f`` is called): an int target and an output that is not one vector
            per example; a target array whose shape is not ``(B,)``; a callable target whose
            result is not a scalar.
        ValueRangeError (when ``f`` is called): a class index outside ``[0, C)``.

    >>> import jax, jax.numpy as jnp
    >>> from nn_jax import Dense
    >>> model = Dense(3)
    >>> params, state = model.init(jax.random.key(0), jnp.zeros((1, 2)))
    >>> f = output_fn(model, params, state, target=jnp.array([0, 2]))
    >>> f(jnp.ones((2, 2))).shape
    (2,)
    """
    check_layer("output_fn", model)
    if isinstance(target, int | list | tuple | np.integer | np.ndarray):
        # concrete: checked against the class count when f runs
        target = cast(Array, np.asarray(target))
    if not callable(target):
        target_array = jnp.asarray(target)
        if not jnp.issubdtype(target_array.dtype, jnp.integer) or target_array.ndim > 1:
            raise ArgumentError(
                "output_fn: target must be a class index (an int), an int array (B,) of one "
                f"index per example, or a callable on one example's output; given "
                f"{describe(target)}"
            )
    if side is not None and not isinstance(side, Mapping):
        raise ArgumentError(
            f"output_fn: side must be a mapping of side inputs, e.g. {{'lengths': lengths}}, "
            f"given {describe(side)}"
        )

    def one_output(x_b: Any, side_b: Side | None) -> Any:
        expand = jax.tree.map(lambda a: a[None], side_b) if side_b is not None else None
        y, _ = model.apply(params, state, x_b[None], side=expand, train=False)
        return jax.tree.map(lambda a: a[0], y)

    def select(y_b: Any, t_b: Any) -> Array:
        if callable(target):
            value = jnp.asarray(target(y_b))
            if value.shape != ():
                raise ShapeError(
                    "output_fn: the target callable must give one scalar per example, given "
                    f"shape {value.shape} (from the output of one example, shape "
                    f"{_shapes(y_b)}); reduce it, e.g. lambda y: y[..., 3].sum()"
                )
            return value
        return y_b[t_b]

    def f(x: Array) -> Array:
        x = jnp.asarray(x)
        if x.ndim < 1:
            raise ShapeError(f"output_fn: x must have a batch axis (B, ...), given shape {x.shape}")
        batch = x.shape[0]
        if side is not None:
            for name, value in side.items():
                if jnp.ndim(value) < 1 or jnp.shape(value)[0] != batch:
                    raise ShapeError(
                        f"output_fn: side input {name!r} must have the batch axis of x first, "
                        f"({batch}, ...), given shape {jnp.shape(value)}"
                    )
        if callable(target):
            targets = jnp.zeros((batch,), jnp.int32)  # unused by the callable
        else:
            side_0 = jax.tree.map(lambda a: a[0], side) if side is not None else None
            y_shape = jax.eval_shape(one_output, x[0], side_0)
            if not isinstance(y_shape, jax.ShapeDtypeStruct) or len(y_shape.shape) != 1:
                raise ShapeError(
                    "output_fn: an int target needs one vector of scores per example, shape "
                    f"(C,), given outputs of shape {_shapes(y_shape)} per example; pass a "
                    "callable target instead, e.g. target=lambda y: y[-1, 3]"
                )
            classes = y_shape.shape[0]
            if jnp.ndim(target) == 1 and jnp.shape(target) != (batch,):
                raise ShapeError(
                    f"output_fn: target must hold one class index per example, shape "
                    f"({batch},), given shape {jnp.shape(target)}"
                )
            what = f"target (a class index for an output with {classes} classes)"
            if isinstance(target, jax.core.Tracer):
                check_in_range("output_fn", what, target, 0, classes)  # in checked mode
            else:  # concrete, also when f is traced by jit: check it now
                given = np.asarray(target)
                if given.size and (given.min() < 0 or given.max() >= classes):
                    raise ValueRangeError(
                        f"output_fn: {what} must lie in [0, {classes}), given values in "
                        f"[{given.min()}, {given.max()}]"
                    )
            targets = jnp.broadcast_to(jnp.asarray(target, jnp.int32), (batch,))
        return jax.vmap(lambda x_b, t_b, s_b: select(one_output(x_b, s_b), t_b))(x, targets, side)

    return f


def _shapes(tree: Any) -> Any:
    shapes = [tuple(leaf.shape) for leaf in jax.tree.leaves(tree)]
    return shapes[0] if len(shapes) == 1 else shapes


# --------------------------------------------------------------------------------------------
# Gradient methods.


def _check_x(where: str, x: Any) -> Array:
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ArgumentError(
            f"{where}: x must be a float array (B, ...) to differentiate, given {describe(x)}; "
            "token ids have no gradient: attribute the embeddings instead"
        )
    if x.ndim < 1:
        raise ShapeError(f"{where}: x must have a batch axis (B, ...), given shape {x.shape}")
    return x


def _scores(where: str, fn: ScalarFn, x: Array) -> Array:
    """``fn(x)``, checked to be one scalar per example, ``(B,)``."""
    if not callable(fn):
        raise ArgumentError(
            f"{where}: fn must be a function x (B, ...) -> (B,), e.g. "
            f"output_fn(model, params, state, target=3), given {describe(fn)}"
        )
    y = fn(x)
    if not hasattr(y, "shape") or tuple(y.shape) != x.shape[:1]:
        given = f"shape {tuple(y.shape)}" if hasattr(y, "shape") else describe(y)
        raise ShapeError(
            f"{where}: fn(x) must give one scalar per example, shape {x.shape[:1]} for x of "
            f"shape {x.shape}, given {given}; select one output per example with "
            "output_fn(model, params, state, target=...)"
        )
    return y


def _gradient(where: str, fn: ScalarFn, x: Array) -> Array:
    """Every example's gradient ``∂fn(x)[b]/∂x[b]`` (the gradient of the sum, see the module)."""
    return jax.grad(lambda z: jnp.sum(_scores(where, fn, z)))(x)


def saliency(fn: ScalarFn, x: Array) -> Array:
    """The gradient of each example's score with respect to its input (Simonyan et al., 2014).

    ``S(x)[b] = ∂f(x)[b] / ∂x[b]``: how much the score moves per unit change of each input
    element. Signed (take ``jnp.abs`` or the max over channels for the paper's maps).

    Args:
        fn: a per-example scalar function ``x (B, ...) -> (B,)`` (:func:`output_fn`).
        x: the inputs ``(B, ...)``, float.

    Returns:
        The saliency, shape ``(B, ...)`` (that of ``x``).

    >>> import jax, jax.numpy as jnp
    >>> from nn_jax import Dense
    >>> params, state = Dense(1).init(jax.random.key(0), jnp.zeros((1, 3)))
    >>> s = saliency(output_fn(Dense(1), params, state, target=0), jnp.ones((2, 3)))
    >>> bool(jnp.allclose(s[1], params["w"][:, 0]))  # a linear model's saliency is its weights
    True
    """
    x = _check_x("saliency", x)
    return _gradient("saliency", fn, x)


def gradient_times_input(fn: ScalarFn, x: Array) -> Array:
    """Gradient × input: ``x[b] ⊙ ∂f(x)[b] / ∂x[b]``.

    For a linear score ``f(x) = w·x`` (no bias) the attributions sum to ``f(x)``; in general
    they are the first-order Taylor terms around ``0``.

    Args:
        fn: a per-example scalar function ``x (B, ...) -> (B,)`` (:func:`output_fn`).
        x: the inputs ``(B, ...)``, float.

    Returns:
        The attributions, shape ``(B, ...)``.

    >>> import jax.numpy as jnp
    >>> a = gradient_times_input(lambda x: jnp.sum(x**2, axis=1), jnp.array([[1.0, 2.0]]))
    >>> a.tolist()
    [[2.0, 8.0]]
    """
    x = _check_x("gradient_times_input", x)
    return x * _gradient("gradient_times_input", fn, x)


def smooth_grad(
    fn: ScalarFn,
    x: Array,
    *,
    key: PRNGKey,
    num_samples: int = 32,
    noise_scale: float = 0.15,
) -> Array:
    """SmoothGrad: the saliency averaged over noisy copies of the input (Smilkov et al., 2017).

    ``SG(x)[b] = (1/n) Σ_k ∂f(x + ε_k)[b] / ∂x[b]``, ``ε_k ~ N(0, σ²)`` independently per
    element, with ``n = num_samples`` and ``σ = noise_scale``. The noise is drawn as
    ``noise_scale * jax.random.normal(key, (num_samples, *x.shape), x.dtype)`` (sample ``k`` is
    ``noise[k]``), so the same key gives the same noisy inputs.

    Args:
        fn: a per-example scalar function ``x (B, ...) -> (B,)`` (:func:`output_fn`).
        x: the inputs ``(B, ...)``, float.
        key: a PRNG key for the noise.
        num_samples: ``n``, the noisy copies per example (evaluated together, with
            ``jax.vmap``: memory grows with ``n * B``).
        noise_scale: ``σ``, the noise's standard deviation in the units of ``x`` (not a
            fraction). The paper finds 10–20% of the input range ``x.max() - x.min()`` works
            well. ``0`` gives exactly :func:`saliency`.

    Returns:
        The averaged gradient, shape ``(B, ...)``.

    >>> import jax, jax.numpy as jnp
    >>> g = smooth_grad(lambda x: jnp.sum(x**2, axis=1), jnp.ones((1, 2)), key=jax.random.key(0),
    ...                 noise_scale=0.0)
    >>> g.tolist()
    [[2.0, 2.0]]
    """
    x = _check_x("smooth_grad", x)
    check_key(key, "smooth_grad")
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ConfigError(f"smooth_grad: num_samples must be an int >= 1, given {num_samples!r}")
    if (
        isinstance(noise_scale, bool)
        or not isinstance(noise_scale, int | float)
        or not noise_scale >= 0
    ):
        raise ConfigError(
            f"smooth_grad: noise_scale must be a number >= 0 (a standard deviation in the units "
            f"of x), given {describe(noise_scale)}"
        )
    noise = noise_scale * jax.random.normal(key, (num_samples, *x.shape), x.dtype)
    grads = jax.vmap(lambda z: _gradient("smooth_grad", fn, z))(x[None] + noise)
    return jnp.mean(grads, axis=0)


def _baseline(where: str, x: Array, baseline: Array | None) -> Array:
    if baseline is None:
        return jnp.zeros_like(x)
    baseline = jnp.asarray(baseline, x.dtype)
    if baseline.shape == x.shape[1:]:
        return jnp.broadcast_to(baseline[None], x.shape)
    if baseline.shape != x.shape:
        raise ShapeError(
            f"{where}: baseline must have the shape of x {x.shape} or of one example "
            f"{x.shape[1:]}, given shape {baseline.shape}"
        )
    return baseline


def integrated_gradients(
    fn: ScalarFn, x: Array, *, baseline: Array | None = None, steps: int = 64
) -> Array:
    """Integrated Gradients (Sundararajan et al., 2017), by the trapezoid rule.

    ``IG(x)_i = (x_i − x'_i) ∫₀¹ ∂f(x' + α (x − x')) / ∂x_i dα`` for each example, with
    ``x'`` the baseline. The integral is approximated by the trapezoid rule on ``steps`` equal
    intervals: ``steps + 1`` gradients at ``α_k = k / steps``, weighted ``1 / steps`` (``1 /
    (2 steps)`` at both ends). The rule is exact when the gradient is linear in ``α`` (``f``
    quadratic); otherwise its error falls as ``1 / steps²``.

    *Completeness*: the attributions of an example sum to ``f(x) − f(x')`` (up to the
    quadrature error); :func:`completeness` measures the gap, the paper suggests keeping it
    within 5% of ``f(x) − f(x')`` (more steps if not).

    Args:
        fn: a per-example scalar function ``x (B, ...) -> (B,)`` (:func:`output_fn`).
        x: the inputs ``(B, ...)``, float.
        baseline: ``x'``, of the shape of ``x`` or of one example ``x.shape[1:]`` (the same
            for all); ``None``: zeros (a black image).
        steps: intervals of the trapezoid rule (the ``steps + 1`` points are evaluated
            together with ``jax.vmap``: memory grows with ``(steps + 1) * B``).

    Returns:
        The attributions, shape ``(B, ...)``.

    >>> import jax.numpy as jnp
    >>> f = lambda x: jnp.sum(x**2, axis=1)
    >>> x = jnp.array([[1.0, 2.0]])
    >>> a = integrated_gradients(f, x, steps=4)  # exact for a quadratic: x_i**2
    >>> a.tolist()
    [[1.0, 4.0]]
    """
    x = _check_x("integrated_gradients", x)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"integrated_gradients: steps must be an int >= 1, given {steps!r}")
    base = _baseline("integrated_gradients", x, baseline)
    alphas = jnp.linspace(0.0, 1.0, steps + 1, dtype=x.dtype)
    weights = jnp.full((steps + 1,), 1.0 / steps, x.dtype)
    weights = weights.at[0].set(0.5 / steps).at[-1].set(0.5 / steps)

    def gradient_at(alpha: Array) -> Array:
        return _gradient("integrated_gradients", fn, base + alpha * (x - base))

    grads = jax.vmap(gradient_at)(alphas)  # (steps + 1, B, ...)
    average = jnp.tensordot(weights, grads, axes=1)
    return (x - base) * average


class Completeness(NamedTuple):
    """How well attributions add up to ``f(x) − f(baseline)``, per example (each ``(B,)``)."""

    attribution_sum: Array
    """The sum of each example's attributions."""
    output_difference: Array
    """``f(x) − f(baseline)``."""
    error: Array
    """``|attribution_sum − output_difference|``."""
    relative_error: Array
    """``error / |output_difference|`` (``inf`` where the difference is 0 and the error not)."""


def completeness(
    fn: ScalarFn, x: Array, attributions: Array, *, baseline: Array | None = None
) -> Completeness:
    """Check the completeness axiom: attributions sum to ``f(x) − f(baseline)`` per example.

    Holds exactly for Integrated Gradients up to its quadrature error (Sundararajan et al.,
    2017, Proposition 1), and for gradient × input on a linear score with no bias and a zero
    baseline.

    Args:
        fn: the per-example scalar function the attributions were computed for.
        x: the inputs ``(B, ...)``.
        attributions: ``(B, ...)``, e.g. from :func:`integrated_gradients`.
        baseline: the baseline used (shape of ``x`` or of one example; ``None``: zeros).

    Returns:
        A :class:`Completeness` of ``(B,)`` arrays.

    >>> import jax.numpy as jnp
    >>> f = lambda x: jnp.sum(x**2, axis=1)
    >>> x = jnp.array([[1.0, 2.0]])
    >>> completeness(f, x, integrated_gradients(f, x)).error.tolist()
    [0.0]
    """
    x = _check_x("completeness", x)
    attributions = jnp.asarray(attributions)
    if attributions.shape != x.shape:
        raise ShapeError(
            f"completeness: attributions must have the shape of x {x.shape}, given shape "
            f"{attributions.shape}"
        )
    base = _baseline("completeness", x, baseline)
    total = jnp.sum(attributions.reshape(x.shape[0], -1), axis=1)
    difference = _scores("completeness", fn, x) - _scores("completeness", fn, base)
    error = jnp.abs(total - difference)
    relative = jnp.where(error == 0, 0.0, error / jnp.abs(difference))
    return Completeness(total, difference, error, relative)


# --------------------------------------------------------------------------------------------
# Attention rollout.

_REDUCTIONS = ("mean", "max", "min")


def _natural_key(path: str) -> list[Any]:
    """``"block_10/..."`` after ``"block_2/..."``: digit runs compare as numbers."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path)]


def attention_rollout(
    weights: list[Array] | tuple[Array, ...] | Mapping[str, Array],
    *,
    residual: bool = True,
    head_reduction: str = "mean",
) -> Array:
    """Attention rollout (Abnar & Zuidema, 2020): attention traced back through the layers.

    Per layer ``l`` the heads are reduced (``head_reduction`` over the head axis) to
    ``A_l (..., T, T)``; with ``residual`` the skip connection is accounted for as
    ``Â_l = 0.5 A_l + 0.5 I``; rows are renormalized to sum to 1; and the layers are
    multiplied, last layer first:

        ``R = Â_L Â_{L−1} ··· Â_1``.

    ``R[..., i, j]`` is how much position ``i`` after the last layer draws on input token
    ``j`` (each row sums to 1).

    Args:
        weights: the attention weights of each layer, ``(..., H, T, T)`` (batch axes, heads,
            queries, keys), in layer order: a sequence, or a mapping from tap paths
            (``"block_0/attention/weights"``, ...) whose keys are ordered naturally
            (``block_2`` before ``block_10``; a dict that went through ``jax.jit`` comes
            back sorted as strings). :func:`collect_attention_weights` gives the list.
        residual: add the identity for the residual connection (the paper's rollout).
        head_reduction: ``"mean"`` (the paper), ``"max"`` or ``"min"`` over heads.

    Returns:
        ``R``, shape ``(..., T, T)``.

    >>> import jax.numpy as jnp
    >>> uniform = jnp.full((1, 2, 3, 3), 1 / 3)  # (B, H, T, T): every query attends evenly
    >>> attention_rollout([uniform, uniform])[0, 0].round(4).tolist()  # (U/2 + I/2)^2 = 3U/4 + I/4
    [0.5, 0.25, 0.25]
    """
    if head_reduction not in _REDUCTIONS:
        raise ConfigError(
            f"attention_rollout: head_reduction must be one of {_REDUCTIONS}, given "
            f"{head_reduction!r}"
        )
    if not isinstance(residual, bool):
        raise ConfigError(f"attention_rollout: residual must be a bool, given {residual!r}")
    if isinstance(weights, Mapping):
        names = sorted(weights, key=lambda k: _natural_key(str(k)))
        layers = [(repr(name), weights[name]) for name in names]
    elif isinstance(weights, list | tuple):
        layers = [(f"layer {i}", w) for i, w in enumerate(weights)]
    else:
        raise ArgumentError(
            "attention_rollout: weights must be a list of (..., H, T, T) arrays in layer order "
            f"(or a dict from tap paths to them), given {describe(weights)}"
        )
    if not layers:
        raise ArgumentError("attention_rollout: weights must hold at least one layer, given none")
    reductions: dict[str, Callable[..., Array]] = {"mean": jnp.mean, "max": jnp.max}
    reduce = reductions.get(head_reduction, jnp.min)
    rollout: Array | None = None
    first_shape = None
    for name, w in layers:
        w = jnp.asarray(w)
        if w.ndim < 3 or w.shape[-1] != w.shape[-2]:
            raise ShapeError(
                f"attention_rollout: the weights of {name} must be (..., H, T, T) self-attention "
                f"weights (square in the last two axes), given shape {w.shape}"
            )
        if first_shape is None:
            first_shape = w.shape
        elif w.shape[:-3] + w.shape[-2:] != first_shape[:-3] + first_shape[-2:]:
            raise ShapeError(
                f"attention_rollout: the weights of {name} have shape {w.shape}, but the first "
                f"layer's have {first_shape}: every layer needs the same batch axes and T"
            )
        a = reduce(w, axis=-3)
        if residual:
            a = 0.5 * a + 0.5 * jnp.broadcast_to(jnp.eye(a.shape[-1], dtype=a.dtype), a.shape)
        a = a / jnp.sum(a, axis=-1, keepdims=True)
        rollout = a if rollout is None else jnp.matmul(a, rollout)
    assert rollout is not None
    return rollout


def collect_attention_weights(
    model: Layer,
    params: Params,
    state: State,
    x: Any,
    *,
    side: Side | None = None,
    capture: str = "*attention/weights",
) -> list[Array]:
    """Run ``model`` (eval mode) and return its tapped attention weights in layer order.

    Attention layers tap their weights at ``<layer path>/weights``; in the zoo's
    :class:`~nn_jax.models.TransformerEncoder` and ``TransformerLM`` these are
    ``"block_<i>/attention/weights"``, ``(B, H, T, T)``. The list is in execution order (the
    order the layers ran), ready for :func:`attention_rollout`. Decoder blocks tap
    ``self_attention/weights`` and ``cross_attention/weights``: narrow ``capture`` to
    ``"*self_attention/weights"`` for a rollout.

    Args:
        model: a layer instance.
        params, state: its parameters and state.
        x: the model's input.
        side: side inputs (masks, lengths), as ``apply`` takes them.
        capture: the tap path pattern (``fnmatch``; ``*`` crosses ``/``).

    Returns:
        One array per matching tap, in layer order.

    Raises:
        ArgumentError: no tapped value matches ``capture`` (the message lists the tapped paths
            that end in ``weights``).

    >>> import jax, jax.numpy as jnp
    >>> from nn_jax.models import TransformerEncoder
    >>> model = TransformerEncoder(2, num_layers=2, d_model=8, num_heads=2, vocab_size=5)
    >>> params, state = model.init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))
    >>> run = jax.jit(lambda p, x: collect_attention_weights(model, p, state, x))
    >>> ws = run(params, jnp.zeros((3, 4), jnp.int32))
    >>> [w.shape for w in ws]
    [(3, 2, 4, 4), (3, 2, 4, 4)]
    """
    check_layer("collect_attention_weights", model)
    _, _, values = apply_with_intermediates(
        model, params, state, x, side=side, train=False, capture=capture
    )
    if not values:
        with tapping("*") as taps:  # shapes only: lists the tapped paths without running
            jax.eval_shape(
                lambda p, s, x, side: model.apply(p, s, x, side=side)[0], params, state, x, side
            )
        candidates = [p for p in taps.values if p.endswith("weights")]
        raise ArgumentError(
            f"collect_attention_weights: no tapped value matches capture={capture!r}; the "
            f"tapped paths ending in 'weights' are {candidates}"
        )
    return list(values.values())

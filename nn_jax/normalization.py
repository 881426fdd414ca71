"""Normalization layers: BatchNorm, LayerNorm, RMSNorm, GroupNorm, InstanceNorm.

Each standardizes its input over some axes and then applies an optional learned affine map:

.. math:: y = \\frac{x - \\mu}{\\sqrt{\\sigma^2 + \\epsilon}} \\cdot \\gamma + \\beta

(RMSNorm uses :math:`y = x / \\sqrt{\\overline{x^2} + \\epsilon} \\cdot \\gamma`). Params are
``scale`` (:math:`\\gamma`, ``scale_init``, default 1) and ``b`` (:math:`\\beta`, ``b_init``,
default 0), either switched off with ``use_scale=False`` / ``use_bias=False``. Statistics are
computed in at least float32 (so bfloat16 inputs are normalized accurately); the output has the
promoted dtype of input and params unless ``dtype`` is given. Variances are biased (divided by
the element count); only BatchNorm's running variance can be updated with the unbiased one
(``unbiased_running_var=True``, PyTorch's rule).

PyTorch parity: ``BatchNorm(axis=1, momentum=1 - p, unbiased_running_var=True)`` is
``nn.BatchNorm2d(C, momentum=p)``; ``GroupNorm(G, channel_axis=1)`` is ``nn.GroupNorm(G, C)``;
``InstanceNorm(channel_axis=1, use_scale=False, use_bias=False)`` is ``nn.InstanceNorm2d(C)``
(PyTorch's ``affine=False`` default); ``LayerNorm(axis=(-2, -1))`` is
``nn.LayerNorm((D1, D2))``. PyTorch's ``weight``/``bias`` are ``scale``/``b`` here.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from dataclasses import KW_ONLY
from typing import Any, ClassVar, cast

import jax
import jax.numpy as jnp

from nn_jax import initializers
from nn_jax._options import at_least_float32
from nn_jax.core import (
    Array,
    Call,
    Initializer,
    Layer,
    NonNegative,
    Params,
    PRNGKey,
    Rate,
    Size,
    State,
)
from nn_jax.errors import ConfigError, ShapeError

__all__ = ["BatchNorm", "GroupNorm", "InstanceNorm", "LayerNorm", "RMSNorm"]


@dataclasses.dataclass(frozen=True)
class _Normalization(Layer):
    """The options every normalization layer has, and its affine parameters."""

    _: KW_ONLY
    epsilon: NonNegative = 1e-5
    use_scale: bool = True
    use_bias: bool = True
    dtype: Any = None
    param_dtype: Any = jnp.float32
    scale_init: Initializer = initializers.ones
    b_init: Initializer = initializers.zeros

    def _affine_params(self, key: PRNGKey, shape: tuple[int, ...]) -> Params:
        scale_key, b_key = jax.random.split(key)
        params = {}
        if self.use_scale:
            params["scale"] = self.scale_init(scale_key, shape, self.param_dtype)
        if self.use_bias:
            params["b"] = self.b_init(b_key, shape, self.param_dtype)
        return params

    def _stats_dtype(self, x: Array) -> Any:
        return at_least_float32(x.dtype)

    def _out_dtype(self, x: Array, params: Params) -> Any:
        return self.dtype or jnp.result_type(x.dtype, *(p.dtype for p in params.values()))

    def _affine(self, params: Params, y: Array, axes: tuple[int, ...], x: Array) -> Array:
        """``y * scale + b`` with params of shape ``x.shape[axes]`` broadcast explicitly."""
        shape = tuple(x.shape[a] for a in axes)
        full = [1] * y.ndim
        for a in axes:
            full[a] = x.shape[a]
        dtype = self._out_dtype(x, params)
        y = y.astype(dtype)
        if self.use_scale:
            y = y * self.param(params, "scale", shape).astype(dtype).reshape(full)
        if self.use_bias:
            y = y + self.param(params, "b", shape).astype(dtype).reshape(full)
        return y


def _axes(
    layer: Layer, axis: int | tuple[int, ...], ndim: int, what: str = "axis"
) -> tuple[int, ...]:
    """``axis`` as sorted non-negative axes of a rank-``ndim`` input (checked to exist)."""
    axis = (axis,) if isinstance(axis, int) else axis
    if any(not -ndim <= a < ndim for a in axis):
        raise layer.error(ShapeError, f"{what}={axis} is out of range for an input of rank {ndim}")
    return tuple(sorted(a % ndim for a in axis))


def _as_axis_tuple(owner: str, axis: Any) -> tuple[int, ...]:
    axes = (axis,) if isinstance(axis, int) else axis
    if not isinstance(axes, tuple) or not axes or not all(isinstance(a, int) for a in axes):
        raise ConfigError(f"{owner}: axis must be an int or a tuple of ints, given {axis!r}")
    if len(set(axes)) != len(axes):
        raise ConfigError(f"{owner}: axis has repeated entries, given {axis!r}")
    return axes


def _normalize(x: Array, axes: tuple[int, ...], epsilon: float, *, center: bool = True) -> Array:
    """``x`` (minus its mean over ``axes`` if ``center``) over its root mean square over ``axes``.

    Centred, this is ``(x - mean) / sqrt(var + epsilon)`` with the biased variance computed in two
    passes (accurate); uncentred, RMSNorm's ``x / sqrt(mean(x^2) + epsilon)``.
    """
    if center:
        x = x - jnp.mean(x, axis=axes, keepdims=True)
    return x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=axes, keepdims=True) + epsilon)


@dataclasses.dataclass(frozen=True)
class BatchNorm(_Normalization):
    """Batch normalization with running statistics as explicit state (Ioffe & Szegedy, 2015).

    Training (``train=True``): normalize with the batch mean and biased variance over every
    axis except ``axis`` (the feature axis), and update the running statistics:

    .. math::
        \\text{mean}' = m \\cdot \\text{mean} + (1 - m) \\cdot \\mu_B, \\qquad
        \\text{var}' = m \\cdot \\text{var} + (1 - m) \\cdot \\sigma^2_B

    with ``m = momentum``, the decay of the running average as in Flax and Keras. PyTorch's
    ``momentum`` is the weight of the *new* batch: PyTorch ``nn.BatchNorm2d(momentum=0.1)``
    (its default) is ``momentum=0.9`` here; the default here, ``0.99``, is Flax's.
    :math:`\\sigma^2_B` is the biased batch variance (divided by the ``n`` elements reduced
    per feature), unless ``unbiased_running_var=True``: then the running variance is updated
    with the unbiased :math:`\\sigma^2_B \\cdot n / (n - 1)`, as PyTorch does (the batch is
    still normalized with the biased variance, as in PyTorch). With ``axis_name``, ``n``
    counts the elements of every replica.

    ``momentum=None`` is PyTorch's cumulative moving average (``nn.BatchNorm2d(momentum=None)``):
    the state gains a step counter ``num_batches_tracked`` (an int32 scalar, init 0, as
    PyTorch's buffer of that name), and a training step ``k`` (counted from 1) updates
    ``mean' = mean + (mu_B - mean) / k`` (the variance likewise), so the running statistics are
    the plain average of all batch statistics seen. Only this mode has the counter: the default
    state tree is ``{"mean", "var"}``.

    Evaluation (``train=False``): normalize with the running ``mean``/``var``; the state is
    returned unchanged.

    The state is required in both modes: ``apply(params, state, x, train=...)`` with the state
    from ``init`` (thread the returned one). Called without it, e.g. ``layer(params, x)``, it
    raises; it never falls back to batch statistics. Training on one element per feature (a
    batch of one ``(1, C)`` example) raises a ``ShapeError`` too: its batch statistics would
    make the output all zeros (with ``axis_name``, one example per device is fine).

    With ``axis_name``, batch statistics are averaged over that named axis with
    ``jax.lax.pmean`` (cross-device BatchNorm under ``jax.pmap``/``shard_map``, or
    ``jax.vmap(..., axis_name=...)``), so every replica uses the global batch's statistics;
    each replica's local batch must have the same size.

    PyTorch: ``nn.BatchNorm1d/2d/3d(C, eps, momentum=p, affine, track_running_stats=True)`` is
    ``BatchNorm(axis=1, epsilon=eps, momentum=1 - p, unbiased_running_var=True)`` (``affine=False``:
    ``use_scale=False, use_bias=False``); ``weight``/``bias``/``running_mean``/``running_var``
    are ``scale``/``b``/``mean``/``var``.

    Args:
        momentum: decay of the running averages, in ``[0, 1]`` (``1 -`` PyTorch's), or
            ``None`` for the cumulative average (PyTorch ``momentum=None``).
        unbiased_running_var: update the running variance with the unbiased batch variance
            (PyTorch's rule) instead of the biased one (Flax's, Keras's; the default).
        epsilon: added to the variance.
        axis: the feature axis (``-1`` channels last; ``1`` for NCHW inputs).
        axis_name: name(s) of mapped axes to average batch statistics over, or ``None``.
        use_scale, use_bias, scale_init, b_init, dtype, param_dtype: the affine map.

    Input ``(..., C)`` -> same shape. Params ``scale: (C,)``, ``b: (C,)``; state
    ``mean: (C,)`` (init 0), ``var: (C,)`` (init 1), stored in ``param_dtype``, and with
    ``momentum=None`` also ``num_batches_tracked: ()`` int32.

    >>> import jax, jax.numpy as jnp
    >>> bn = BatchNorm()
    >>> params, state = bn.init(jax.random.key(0), jnp.zeros((8, 4, 4, 3)))
    >>> jax.tree.map(jnp.shape, (params, state))
    ({'b': (3,), 'scale': (3,)}, {'mean': (3,), 'var': (3,)})
    >>> y, state = bn.apply(params, state, jnp.ones((8, 4, 4, 3)), train=True)
    >>> torch_like = BatchNorm(axis=1, momentum=None, unbiased_running_var=True)
    >>> _, state = torch_like.init(jax.random.key(0), jnp.zeros((8, 3, 4, 4)))
    >>> jax.tree.map(jnp.shape, state)
    {'mean': (3,), 'num_batches_tracked': (), 'var': (3,)}
    """

    _: KW_ONLY
    momentum: Rate | None = 0.99
    unbiased_running_var: bool = False
    axis: int = -1
    axis_name: str | tuple[str, ...] | None = None

    def _feature_axis(self, x: Any) -> int:
        if len(x.shape) < 1:
            self.check_rank(x, 1)
        return _axes(self, (self.axis,), len(x.shape))[0]

    def init(self, key: PRNGKey, x: Any) -> tuple[Params, State]:
        channels = x.shape[self._feature_axis(x)]
        state = {
            "mean": jnp.zeros((channels,), self.param_dtype),
            "var": jnp.ones((channels,), self.param_dtype),
        }
        if self.momentum is None:
            state["num_batches_tracked"] = jnp.zeros((), jnp.int32)
        return self._affine_params(key, (channels,)), state

    def _updated_stats(
        self,
        running_mean: Array,
        running_var: Array,
        counter: Array | None,
        mean: Array,
        var: Array,
    ) -> State:
        """The running statistics after one training step with batch ``mean``/``var``: ``(C,)``.

        The new value is ``decay * running + (1 - decay) * batch`` with ``decay = momentum``,
        or ``1 - 1 / k`` at step ``k`` (from 1) of the cumulative average (``momentum=None``,
        PyTorch's ``running + (batch - running) / k``; step 1 replaces the initial values).
        """
        state: dict[str, Array] = {}
        steps = None
        decay: Any
        weight: Any
        if counter is None:
            decay = cast(float, self.momentum)
            weight = 1 - decay
        else:
            counter = jnp.asarray(counter)
            steps = counter + jnp.ones((), counter.dtype)
            weight = 1 / steps.astype(mean.dtype)
            decay = 1 - weight
        for name, running, batch in (("mean", running_mean, mean), ("var", running_var, var)):
            state[name] = (decay * running.astype(batch.dtype) + weight * batch).astype(
                running.dtype
            )
        if steps is not None:
            state["num_batches_tracked"] = steps
        return state

    def compute(self, params: Params, state: State, x: Any, call: Call) -> tuple[Array, State]:
        x = jnp.asarray(x)
        feature = self._feature_axis(x)
        channels = x.shape[feature]
        running_mean = self.state_entry(state, "mean")
        running_var = self.state_entry(state, "var")
        for name, value in (("mean", running_mean), ("var", running_var)):
            if value.shape != (channels,):
                raise self.error(
                    ShapeError,
                    f"state {name!r} has shape {value.shape}, expected ({channels},) for an input "
                    f"with {channels} features on axis {self.axis} (input shape {x.shape})",
                )
        counter = None
        if self.momentum is None:
            counter = self.state_entry(state, "num_batches_tracked")
            if jnp.shape(counter) != ():
                raise self.error(
                    ShapeError,
                    f"state 'num_batches_tracked' has shape {jnp.shape(counter)}, expected () "
                    "(a scalar step counter; momentum=None keeps a cumulative average)",
                )
        full = [1] * x.ndim
        full[feature] = channels
        xs = x.astype(self._stats_dtype(x))
        if call.train:
            reduce = tuple(a for a in range(x.ndim) if a != feature)
            count = math.prod(x.shape[a] for a in reduce)
            if count == 1 and self.axis_name is None:
                raise self.error(
                    ShapeError,
                    f"in training each feature is normalized over the other axes of the input, "
                    f"and input shape {x.shape} (feature axis {self.axis}) has 1 element per "
                    "feature there: its batch statistics would make the output all zeros. "
                    "Train on batches of 2 or more examples, or call with train=False to use "
                    "the running statistics",
                )
            mean = jnp.mean(xs, axis=reduce, keepdims=True)
            if self.axis_name is not None:
                mean = jax.lax.pmean(mean, self.axis_name)
            var = jnp.mean(jnp.square(xs - mean), axis=reduce, keepdims=True)
            if self.axis_name is not None:
                var = jax.lax.pmean(var, self.axis_name)
                count *= jax.lax.axis_size(self.axis_name)
            batch_var = var.reshape(channels)
            if self.unbiased_running_var:
                if count == 1:
                    raise self.error(
                        ShapeError,
                        f"unbiased_running_var=True needs 2 or more elements per feature over "
                        f"all replicas of axis_name={self.axis_name!r}, given 1 (input shape "
                        f"{x.shape}): the unbiased variance divides by n - 1 = 0",
                    )
                batch_var = batch_var * (count / (count - 1))
            new_state = self._updated_stats(
                running_mean, running_var, counter, mean.reshape(channels), batch_var
            )
        else:
            mean, var = running_mean.reshape(full), running_var.reshape(full)
            new_state = {"mean": running_mean, "var": running_var}
            if counter is not None:
                new_state["num_batches_tracked"] = counter
        # Fold scale into the per-channel factor, as Flax and Haiku do:
        # y = (x - mean) * (scale * rsqrt(var + eps)) + b. Standardizing first keeps a
        # full-size tensor for the backward pass (a ResNet-8 training step on CPU: 1.45x slower).
        factor = jax.lax.rsqrt(var.astype(xs.dtype) + self.epsilon)
        if self.use_scale:
            scale = self.param(params, "scale", (channels,))
            factor = factor * scale.astype(xs.dtype).reshape(full)
        y = (xs - mean.astype(xs.dtype)) * factor
        if self.use_bias:
            y = y + self.param(params, "b", (channels,)).astype(xs.dtype).reshape(full)
        return y.astype(self._out_dtype(x, params)), new_state


@dataclasses.dataclass(frozen=True)
class _AxisNorm(_Normalization):
    """Normalization of each example over ``axis``; subclasses say whether it is centred."""

    _: KW_ONLY
    axis: int | tuple[int, ...] = (-1,)

    center: ClassVar[bool]

    def __post_init__(self) -> None:
        object.__setattr__(self, "axis", _as_axis_tuple(type(self).__name__, self.axis))

    def init(self, key: PRNGKey, x: Any) -> tuple[Params, State]:
        axes = _axes(self, self.axis, len(x.shape))
        return self._affine_params(key, tuple(x.shape[a] for a in axes)), {}

    def compute(self, params: Params, state: State, x: Any, call: Call) -> tuple[Array, State]:
        x = jnp.asarray(x)
        axes = _axes(self, self.axis, x.ndim)
        y = _normalize(x.astype(self._stats_dtype(x)), axes, self.epsilon, center=self.center)
        return self._affine(params, y, axes, x), {}


@dataclasses.dataclass(frozen=True)
class LayerNorm(_AxisNorm):
    """Layer normalization (Ba et al., 2016): standardize each example over ``axis``.

    Args:
        axis: axis or axes normalized over (default the last); ``scale``/``b`` have the
            shape of the input along them (PyTorch's ``normalized_shape``).
        epsilon, use_scale, use_bias, scale_init, b_init, dtype, param_dtype: see module.

    Input ``(..., D)`` -> same shape. Params ``scale: (D,)``, ``b: (D,)`` (for ``axis=-1``).

    >>> import jax, jax.numpy as jnp
    >>> params, _ = LayerNorm().init(jax.random.key(0), jnp.zeros((2, 5)))
    >>> jax.tree.map(jnp.shape, params)
    {'b': (5,), 'scale': (5,)}
    """

    center = True


@dataclasses.dataclass(frozen=True)
class RMSNorm(_AxisNorm):
    """Root-mean-square normalization (Zhang & Sennrich, 2019): LayerNorm without centering.

    .. math:: y = \\frac{x}{\\sqrt{\\operatorname{mean}_{axis}(x^2) + \\epsilon}} \\cdot \\gamma

    Args:
        axis: axis or axes normalized over (default the last).
        epsilon: default ``1e-6``.
        use_bias: default ``False`` (RMSNorm has no bias in its definition).
        use_scale, scale_init, b_init, dtype, param_dtype: see module.

    Input ``(..., D)`` -> same shape. Params ``scale: (D,)``.
    """

    _: KW_ONLY
    epsilon: NonNegative = 1e-6
    use_bias: bool = False

    center = False


@dataclasses.dataclass(frozen=True)
class _ChannelGroupNorm(_Normalization):
    """Per example (axis 0), over all its other axes within groups of consecutive channels
    (``channel_axis``); subclasses give the number of groups."""

    _: KW_ONLY
    channel_axis: int = -1

    min_rank: ClassVar[int] = 2
    spatial: ClassVar[str] = "..."

    def __post_init__(self) -> None:
        if self.channel_axis == 0:
            raise ConfigError(
                f"{type(self).__name__}: channel_axis must not be 0, the batch axis; use 1 for "
                "PyTorch's (N, C, *spatial) layout or -1 (the default) for (N, *spatial, C)"
            )

    def _layout(self) -> str:
        """The input layout for messages: ``(N, *spatial, C)``, ``(N, C, *spatial)``, ..."""
        if self.channel_axis == -1:
            return f"(N, {self.spatial}, C)"
        return f"(N, C, {self.spatial})" if self.channel_axis == 1 else "(N, ...)"

    def _channel_axis(self, x: Any) -> int:
        """``channel_axis`` as a non-negative axis of ``x`` (checked: in range, not 0)."""
        ndim = len(x.shape)
        if ndim < self.min_rank:
            self.check_rank(x, self.min_rank, what=f"input {self._layout()}")
        axis = self.channel_axis % ndim if -ndim <= self.channel_axis < ndim else None
        if axis is None or axis == 0:
            problem = "is out of range" if axis is None else "is axis 0, the batch axis,"
            raise self.error(
                ShapeError,
                f"channel_axis={self.channel_axis} {problem} for an input of rank {ndim} (input "
                f"shape {tuple(x.shape)}); expected an axis in [1, {ndim}) or [-{ndim - 1}, -1]",
            )
        return axis

    @abc.abstractmethod
    def _groups(self, x: Any, axis: int) -> int:
        """The number of groups for the channels ``x.shape[axis]`` (checked to divide them)."""

    def init(self, key: PRNGKey, x: Any) -> tuple[Params, State]:
        axis = self._channel_axis(x)
        self._groups(x, axis)
        return self._affine_params(key, (x.shape[axis],)), {}

    def compute(self, params: Params, state: State, x: Any, call: Call) -> tuple[Array, State]:
        x = jnp.asarray(x)
        axis = self._channel_axis(x)
        groups = self._groups(x, axis)
        xs = x.astype(self._stats_dtype(x))
        # Split the channel axis in place into (groups, C / groups), with no transpose, and
        # reduce over every axis but the batch axis and the group axis.
        grouped = xs.reshape(
            (*x.shape[:axis], groups, x.shape[axis] // groups, *x.shape[axis + 1 :])
        )
        axes = tuple(a for a in range(1, grouped.ndim) if a != axis)
        y = _normalize(grouped, axes, self.epsilon).reshape(x.shape)
        return self._affine(params, y, (axis,), x), {}


@dataclasses.dataclass(frozen=True)
class GroupNorm(_ChannelGroupNorm):
    """Group normalization (Wu & He, 2018): per example, over spatial axes and channel groups.

    The ``C`` channels (axis ``channel_axis``, default the last) are split into ``num_groups``
    consecutive groups of ``C / num_groups``; each example (axis 0 is the batch) is
    standardized over all its other axes within each group. ``num_groups=1`` is LayerNorm over
    every non-batch axis; ``num_groups=C`` is :class:`InstanceNorm`.

    PyTorch: ``nn.GroupNorm(G, C, eps, affine)`` on ``(N, C, *spatial)`` is
    ``GroupNorm(G, channel_axis=1, epsilon=eps)`` (``affine=False``: ``use_scale=False,
    use_bias=False``); its ``weight``/``bias`` are ``scale``/``b``.

    Args:
        num_groups: number of groups; it divides ``C``.
        channel_axis: the channel axis (negative counts from the end; not 0, the batch axis):
            ``-1`` for ``(N, *spatial, C)``, ``1`` for PyTorch's ``(N, C, *spatial)``.
        epsilon, use_scale, use_bias, scale_init, b_init, dtype, param_dtype: see module.

    Input ``(N, ..., C)`` (or ``(N, C, ...)`` with ``channel_axis=1``) -> same shape.
    Params ``scale: (C,)``, ``b: (C,)``.

    >>> import jax, jax.numpy as jnp
    >>> gn = GroupNorm(2, channel_axis=1)
    >>> params, _ = gn.init(jax.random.key(0), jnp.zeros((2, 4, 5, 5)))
    >>> jax.tree.map(jnp.shape, params)
    {'b': (4,), 'scale': (4,)}
    """

    num_groups: Size

    def _groups(self, x: Any, axis: int) -> int:
        if x.shape[axis] % self.num_groups:
            where = "last axis" if axis == len(x.shape) - 1 else f"axis {axis}"
            raise self.error(
                ShapeError,
                f"input channels {x.shape[axis]} ({where} of input shape {tuple(x.shape)}) "
                f"must be divisible by num_groups={self.num_groups}",
            )
        return self.num_groups


@dataclasses.dataclass(frozen=True)
class InstanceNorm(_ChannelGroupNorm):
    """Instance normalization (Ulyanov et al., 2016): per example and channel, over space.

    Equal to ``GroupNorm(num_groups=C)``. Uses no running statistics (as PyTorch's default
    ``track_running_stats=False``), so train and eval behave the same.

    PyTorch: ``nn.InstanceNorm1d/2d/3d(C)`` on ``(N, C, *spatial)`` is
    ``InstanceNorm(channel_axis=1, use_scale=False, use_bias=False)``: PyTorch's default is
    ``affine=False`` (no learned scale and bias) while nn_jax's is a learned ``scale``/``b``
    (as Flax's); ``affine=True`` is ``InstanceNorm(channel_axis=1)``. PyTorch's
    ``track_running_stats=True`` (running statistics for eval) has no equivalent here: use
    :class:`BatchNorm` if you need running statistics.

    Args:
        channel_axis: the channel axis (negative counts from the end; not 0, the batch axis):
            ``-1`` for ``(N, *spatial, C)``, ``1`` for PyTorch's ``(N, C, *spatial)``.
        epsilon, use_scale, use_bias, scale_init, b_init, dtype, param_dtype: see module.

    Input ``(N, *spatial, C)`` (or ``(N, C, *spatial)`` with ``channel_axis=1``; at least one
    spatial axis) -> same shape. Params ``scale: (C,)``, ``b: (C,)``.

    >>> import jax, jax.numpy as jnp
    >>> params, _ = InstanceNorm(channel_axis=1).init(jax.random.key(0), jnp.zeros((2, 3, 8)))
    >>> jax.tree.map(jnp.shape, params)
    {'b': (3,), 'scale': (3,)}
    """

    min_rank = 3
    spatial = "*spatial"

    def _groups(self, x: Any, axis: int) -> int:
        return cast(int, x.shape[axis])

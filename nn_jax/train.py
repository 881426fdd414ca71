"""Training with ``jax.grad`` + optax: objectives, jit-compiled step builders and ``fit``.

An **objective** is ``objective(params, state, batch, *, rng, train) -> (loss, (state, metrics))``:
any such function can be trained (a penalty on params, a VAE's ELBO, auxiliary outputs as
metrics). :class:`Supervised` is the short form built from ``loss_fn(predictions, targets)`` and
metric functions ``fn(predictions, targets)`` (``nn_jax.metrics.accuracy``, ...).

The steps, all jitted, nothing synced with the host:

* :func:`make_train_step` - ``step(params, opt_state, batch) -> (params, opt_state, loss)`` for
  stateless, deterministic models (the seed network, MLPs).
* :func:`make_step` / :func:`make_stateful_train_step` - ``step(ts, batch) -> (ts, logs)`` over
  a :class:`TrainState` (params, layer state, optimizer state, rng, step) for any objective;
  ``logs`` holds the loss, the metrics and what the :class:`~nn_jax.monitor.Monitor` measures.
* :func:`make_eval_step` - ``evaluate(params, state, batch) -> metrics`` in eval mode.

``batch`` is ``(inputs, targets)`` or ``(inputs, targets, side)``, where ``side`` is the model's
side inputs (``{"lengths": (B,) ints}``, ``{"key_mask": (B, T) bools}``, ...; see
:mod:`nn_jax.core`). Gradient clipping, schedules and weight decay are optax's:
``optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(schedule))``. Gradient accumulation
over micro-batches of one batch is ``make_step(..., micro_batches=k)`` (``lax.scan``), over
steps ``optax.MultiSteps(opt, every_k_schedule=4)``; dynamic loss scaling for float16 is
``make_step(..., loss_scale=DynamicLossScale())`` (see :mod:`nn_jax.precision`).

:func:`fit` is a thin loop over these steps (validation, early stopping, callbacks, resume,
checkpoints, several steps per dispatch); see its docstring.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm

from nn_jax._options import at_least_float32
from nn_jax.config import to_config
from nn_jax.core import (
    Array,
    Layer,
    Params,
    PRNGKey,
    Side,
    State,
    callable_name,
    check_key,
    check_layer,
    describe,
    tapping,
)
from nn_jax.data.prefetch import prefetch_to_device
from nn_jax.dispatch import flatten_step
from nn_jax.errors import ArgumentError, ConfigError, ShapeError
from nn_jax.history import History, Record
from nn_jax.monitor import Monitor, activation_health, layer_norms, sums_of_squares
from nn_jax.precision import DynamicLossScale, LossScaledState, LossScaleState
from nn_jax.remat import rematerializing

if TYPE_CHECKING:
    from jax.sharding import Mesh

    from nn_jax.checkpoint import Checkpointer
    from nn_jax.rules import Rules

LossFn = Callable[[Any, Any], Array]
MetricFn = Callable[[Any, Any], Array]
Metrics = dict[str, Array]
Batch = tuple[Any, ...]
"""``(inputs, targets)`` or ``(inputs, targets, side)``."""
Callback = Callable[["TrainState", Record], "bool | None"]
"""``callback(ts, record)`` after each logged train or validation record; True stops ``fit``."""


class Objective(Protocol):
    """``objective(params, state, batch, *, rng, train) -> (loss, (new_state, metrics))``."""

    def __call__(
        self, params: Params, state: State, batch: Any, *, rng: PRNGKey | None, train: bool
    ) -> tuple[Array, tuple[State, Metrics]]: ...


def split_batch(batch: Any) -> tuple[Any, Any, Side | None]:
    """``(inputs, targets, side)`` of a 2- or 3-tuple batch (``side`` is ``None`` if absent).

    Raises ``ArgumentError`` for a batch that is not a tuple (an array, a dict) and
    ``ConfigError`` for a tuple of another length.
    """
    expected = "a batch must be (inputs, targets) or (inputs, targets, side)"
    if not isinstance(batch, tuple | list):
        hint = ""
        if isinstance(batch, Mapping):
            hint = "; build the tuple from it, e.g. (batch['x'], batch['y'])"
        elif hasattr(batch, "shape"):
            hint = "; the targets are missing: pass (inputs, targets)"
        raise ArgumentError(f"{expected}, given {describe(batch)}{hint}")
    if len(batch) not in (2, 3):
        raise ConfigError(f"{expected}, given a {len(batch)}-tuple")
    inputs, targets, *rest = batch
    return inputs, targets, (rest[0] if rest else None)


# --------------------------------------------------------------------------------------------
# What the step builders and fit check when they are called (Python types only: nothing is
# added to a compiled step).


def _check_function(
    where: str, name: str, fn: Any, arguments: str, count: int, **keywords: Any
) -> None:
    """``fn`` is a function that accepts ``count`` positional arguments and ``keywords``
    (described as ``arguments``)."""
    if isinstance(fn, type | Layer) or not callable(fn):
        raise ArgumentError(f"{where}: {name} must be a function {arguments}, given {describe(fn)}")
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin without a signature: trust it
        return
    try:
        signature.bind(*range(count), **keywords)
    except TypeError:
        raise ArgumentError(
            f"{where}: {name} {callable_name(fn)} must take {arguments}, but its signature is "
            f"{signature}; wrap it in a function of that form"
        ) from None


def _check_loss(where: str, loss_fn: Any) -> None:
    _check_function(where, "loss_fn", loss_fn, "(predictions, targets) -> scalar", 2)


def _check_objective(where: str, objective: Any) -> None:
    if isinstance(objective, Layer):
        raise ArgumentError(
            f"{where}: objective must be a function (params, state, batch, *, rng, train) -> "
            f"(loss, (state, metrics)), given the layer {objective!r}; for a model and a loss "
            "use Supervised(model, loss_fn)"
        )
    arguments = "(params, state, batch, *, rng, train)"
    _check_function(where, "objective", objective, arguments, 3, rng=None, train=False)


def _check_optimizer(where: str, optimizer: Any) -> None:
    if callable(getattr(optimizer, "init", None)) and callable(getattr(optimizer, "update", None)):
        return
    hint = ""
    if callable(optimizer):
        hint = "; call the factory to make one, e.g. optax.adam(1e-3), not optax.adam"
    raise ArgumentError(
        f"{where}: optimizer must be an optax GradientTransformation such as optax.adam(1e-3), "
        f"given {describe(optimizer)}{hint}"
    )


def _scalar_loss(where: str, loss: Any) -> Array:
    """``loss`` as checked to be a real scalar at trace time (a ``ShapeError`` otherwise)."""
    shape = jnp.shape(loss)
    if shape != ():
        raise ShapeError(
            f"{where} returned a loss of shape {shape}; a train step needs a scalar loss to "
            "differentiate: use reduction='mean' (the default of nn_jax.losses), or reduce it, "
            "e.g. lambda p, y: jnp.mean(my_loss(p, y))"
        )
    return loss


def _objective_output(objective: Any, out: Any) -> tuple[Array, tuple[State, Metrics]]:
    """The objective's ``(loss, (state, metrics))``, checked to be that (trace time)."""
    name = f"objective {callable_name(objective)}"
    if not (
        isinstance(out, tuple)
        and len(out) == 2
        and isinstance(out[1], tuple)
        and len(out[1]) == 2
        and isinstance(out[1][0], Mapping)
        and isinstance(out[1][1], Mapping)
    ):
        raise ArgumentError(f"{name} must return (loss, (state, metrics)), given {describe(out)}")
    return _scalar_loss(name, out[0]), out[1]


@dataclasses.dataclass(frozen=True)
class Supervised:
    """The objective ``loss_fn(model(x), y) [+ penalty(params)]``, with metrics on the way.

    Args:
        model: the layer to train.
        loss_fn: ``loss_fn(predictions, targets) -> scalar``.
        metrics: ``{name: fn(predictions, targets) -> scalar}``, e.g.
            ``{"accuracy": nn_jax.metrics.accuracy}``; computed on device in the step.
        penalty: ``penalty(params) -> scalar`` added to the loss (e.g. an L1 term); logged as
            ``"penalty"``.

    >>> import jax, jax.numpy as jnp
    >>> from nn_jax import Dense, losses
    >>> objective = Supervised(Dense(1), losses.mse)
    >>> params, state = Dense(1).init(jax.random.key(0), jnp.zeros((4, 2)))
    >>> loss, (state, metrics) = objective(
    ...     params, state, (jnp.ones((4, 2)), jnp.ones((4, 1))), rng=None, train=True)
    """

    model: Layer
    loss_fn: LossFn
    metrics: Mapping[str, MetricFn] | None = None
    penalty: Callable[[Params], Array] | None = None

    def __post_init__(self) -> None:
        check_layer("Supervised", self.model)
        _check_loss("Supervised", self.loss_fn)
        if self.metrics is not None:
            if not isinstance(self.metrics, Mapping):
                raise ArgumentError(
                    "Supervised: metrics must be a dict {name: fn(predictions, targets)}, e.g. "
                    f"{{'accuracy': nn_jax.metrics.accuracy}}, given {describe(self.metrics)}"
                )
            for name, fn in self.metrics.items():
                _check_function(
                    "Supervised", f"metric {name!r}", fn, "(predictions, targets) -> scalar", 2
                )
        if self.penalty is not None:
            _check_function("Supervised", "penalty", self.penalty, "(params) -> scalar", 1)

    def __call__(
        self, params: Params, state: State, batch: Any, *, rng: PRNGKey | None, train: bool
    ) -> tuple[Array, tuple[State, Metrics]]:
        inputs, targets, side = split_batch(batch)
        predictions, new_state = self.model.apply(
            params, state, inputs, side=side, rng=rng, train=train
        )
        loss = _scalar_loss(
            f"loss_fn {callable_name(self.loss_fn)}", self.loss_fn(predictions, targets)
        )
        metrics = {name: fn(predictions, targets) for name, fn in (self.metrics or {}).items()}
        if self.penalty is not None:
            metrics["penalty"] = self.penalty(params)
            loss = loss + metrics["penalty"]
        return loss, (new_state, metrics)


class TrainState(NamedTuple):
    """Everything a training step reads and writes, as one pytree."""

    params: Params
    state: State
    opt_state: optax.OptState
    rng: PRNGKey
    step: Array

    @classmethod
    def create(
        cls,
        model: Layer,
        optimizer: optax.GradientTransformation,
        key: PRNGKey,
        x: Any,
        *,
        side: Side | None = None,
    ) -> TrainState:
        """Initialize ``model`` for inputs shaped like ``x`` and ``optimizer`` for its params."""
        del side  # init never reads side inputs (see nn_jax.core); accepted for symmetry
        check_layer("TrainState.create", model)
        _check_optimizer("TrainState.create", optimizer)
        check_key(key, "TrainState.create")
        init_key, rng = jax.random.split(key)
        params, state = model.init(init_key, x)
        return cls(params, state, optimizer.init(params), rng, jnp.zeros((), "int32"))


# --------------------------------------------------------------------------------------------
# Steps.


class _Traced:
    """What a step learns while tracing: the paths behind its non-finite flag vectors (the
    tapped activations in execution order, the param layers in tree order)."""

    def __init__(self) -> None:
        self.paths: dict[str, list[str]] = {"activations": [], "gradients": []}


def _train_body(
    objective: Objective,
    optimizer: optax.GradientTransformation,
    monitor: Monitor,
    traced: _Traced,
    ts: TrainState,
    batch: Any,
    halted: Array | bool = False,
    *,
    loss_scale: DynamicLossScale | None = None,
    micro_batches: int = 1,
) -> tuple[TrainState, Metrics]:
    """One optimizer step on ``batch`` and what it logs; skipped when non-finite or halted.

    With ``loss_scale``, ``ts.opt_state`` is the :class:`~nn_jax.precision.LossScaledState` of
    ``loss_scale.wrap(...)``: the loss is scaled before ``jax.grad``, the gradients unscaled
    after, a non-finite step is always skipped and the scale adjusted. With ``micro_batches``
    ``k > 1`` the batch is split into ``k`` micro-batches run one after another by
    ``lax.scan``, whose gradients and logs are averaged before one optimizer update.
    """
    rng = jax.random.fold_in(ts.rng, ts.step)
    scale_state = None
    if loss_scale is not None:
        scale_state = _scale_state(ts.opt_state)
    grads_of = functools.partial(
        _loss_and_grads, objective, monitor, traced, ts.params, loss_scale, scale_state
    )
    if micro_batches == 1:
        loss, state, logs, grads = grads_of(ts.state, batch, rng)
    else:
        loss, state, logs, grads = _accumulate_micro_batches(
            grads_of, ts.params, ts.state, batch, rng, micro_batches
        )
    if loss_scale is not None:
        grads = loss_scale.unscale(grads, scale_state)  # type: ignore[arg-type]
        logs["loss_scale"] = scale_state.scale  # type: ignore[union-attr]
    updates, opt_state = optimizer.update(grads, ts.opt_state, ts.params)
    params = optax.apply_updates(ts.params, updates)
    logs = {"loss": loss, **logs}
    finite = jnp.isfinite(loss)
    if monitor.grad_norm:
        # Each gradient array's sum of squares gives both the global norm and which arrays
        # hold a NaN or inf (a non-finite value makes its sum of squares non-finite).
        leaves = jax.tree_util.tree_leaves_with_path(grads)
        traced.paths["gradients"] = [_path(path) for path, _ in leaves]
        squares = sums_of_squares([g for _, g in leaves])
        finite &= jnp.all(jnp.isfinite(squares))
        logs["grad_norm"] = jnp.sqrt(jnp.sum(squares))
        logs["_nonfinite/gradients"] = ~jnp.isfinite(squares)
    logs["nonfinite"] = ~finite
    if monitor.per_layer:
        param_norms = layer_norms(ts.params)
        for layer, norm in layer_norms(grads).items():
            logs[f"grad_norm/{layer}"] = norm
        for layer, norm in layer_norms(updates).items():
            logs[f"update_ratio/{layer}"] = norm / (param_norms[layer] + 1e-12)
    new = TrainState(params, state, opt_state, ts.rng, ts.step + 1)
    if monitor.on_nonfinite != "ignore" or loss_scale is not None:
        keep_new = finite & ~jnp.asarray(halted)
        params, state, opt_state = jax.tree.map(
            lambda a, b: jnp.where(keep_new, a, b), tuple(new[:3]), tuple(ts[:3])
        )
        if loss_scale is not None:  # the scale moves on a skipped step too (not when halted)
            adjusted = loss_scale.adjust(scale_state, finite)  # type: ignore[arg-type]
            kept = jax.tree.map(
                lambda a, b: jnp.where(jnp.asarray(halted), a, b), scale_state, adjusted
            )
            opt_state = opt_state._replace(loss_scale=kept)
        new = TrainState(params, state, opt_state, ts.rng, ts.step + 1)
    return new, logs


def _scale_state(opt_state: Any) -> LossScaleState:
    """The loss scale's state in ``opt_state``, or an error saying how to put it there."""
    if not isinstance(opt_state, LossScaledState):
        raise ArgumentError(
            "make_step(loss_scale=...) keeps the loss scale in the optimizer state, but the "
            f"train state's opt_state is {describe(opt_state)}; create it with the wrapped "
            "optimizer, opt = loss_scale.wrap(optimizer); TrainState.create(model, opt, ...), "
            "and give the step that same opt"
        )
    return opt_state.loss_scale


def _loss_and_grads(
    objective: Objective,
    monitor: Monitor,
    traced: _Traced,
    params: Params,
    loss_scale: DynamicLossScale | None,
    scale_state: LossScaleState | None,
    state: State,
    batch: Any,
    rng: PRNGKey,
) -> tuple[Array, State, Metrics, Params]:
    """The objective's loss, new layer state and metrics on ``batch``, and the gradients of
    the loss (of the scaled loss, with ``loss_scale``) w.r.t. ``params``."""

    def loss_and_aux(params: Params) -> tuple[Array, tuple[Array, State, Metrics]]:
        if not monitor.activations:
            out = objective(params, state, batch, rng=rng, train=True)
            loss, (new_state, metrics) = _objective_output(objective, out)
        else:
            with tapping(capture="*") as taps:
                out = objective(params, state, batch, rng=rng, train=True)
                loss, (new_state, metrics) = _objective_output(objective, out)
            stats, traced.paths["activations"], bad = activation_health(taps.values, taps.layers)
            metrics = {**metrics, **stats, "_nonfinite/activations": bad}
        scaled = loss if loss_scale is None else loss_scale.scale(loss, scale_state)  # type: ignore[arg-type]
        return scaled, (loss, new_state, dict(metrics))

    (_, (loss, new_state, metrics)), grads = jax.value_and_grad(loss_and_aux, has_aux=True)(params)
    return loss, new_state, metrics, grads


def _split_micro_batches(batch: Any, k: int) -> Any:
    """``batch`` with every array reshaped from ``(B, ...)`` to ``(k, B // k, ...)``."""
    shapes = [tuple(jnp.shape(a)) for a in jax.tree.leaves(batch)]
    sizes = {shape[0] if shape else -1 for shape in shapes}
    if len(sizes) != 1 or -1 in sizes:
        raise ShapeError(
            f"make_step: micro_batches={k} splits the batch along its leading (example) axis, "
            f"which every array of the batch must share; given arrays of shapes {shapes}"
        )
    size = sizes.pop()
    if size % k:
        raise ConfigError(
            f"make_step: micro_batches={k} does not divide the batch size {size}; give a batch "
            f"size that is a multiple of {k}, or another micro_batches"
        )
    return jax.tree.map(lambda a: jnp.reshape(a, (k, size // k, *jnp.shape(a)[1:])), batch)


def _accumulate_micro_batches(
    grads_of: Callable[[State, Any, PRNGKey], tuple[Array, State, Metrics, Params]],
    params: Params,
    state: State,
    batch: Any,
    rng: PRNGKey,
    k: int,
) -> tuple[Array, State, Metrics, Params]:
    """:func:`_loss_and_grads` over ``k`` micro-batches by ``lax.scan`` (the memory of one):
    layer state threaded through, gradients summed in at least float32 and averaged, losses
    and metrics averaged, boolean flags OR-ed. Micro-batch ``i`` gets ``fold_in(rng, i)``."""

    def one(carry: tuple[State, Params], xs: tuple[Array, Any]) -> Any:
        state, total = carry
        i, micro = xs
        loss, state, metrics, grads = grads_of(state, micro, jax.random.fold_in(rng, i))
        total = jax.tree.map(lambda t, g: t + g.astype(t.dtype), total, grads)
        return (state, total), (loss, metrics)

    zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, at_least_float32(p.dtype)), params)
    micro = _split_micro_batches(batch, k)
    (state, total), (losses, metrics) = jax.lax.scan(one, (state, zeros), (jnp.arange(k), micro))
    grads = jax.tree.map(lambda t, p: (t / k).astype(p.dtype), total, params)
    metrics = {
        name: jnp.any(v, axis=0) if v.dtype == jnp.bool_ else jnp.mean(v, axis=0)
        for name, v in metrics.items()
    }
    return jnp.mean(losses), state, metrics, grads


def make_step(
    objective: Objective,
    optimizer: optax.GradientTransformation,
    *,
    monitor: Monitor | None = None,
    loss_scale: DynamicLossScale | None = None,
    micro_batches: int = 1,
) -> Callable[[TrainState, Any], tuple[TrainState, Metrics]]:
    """A jitted ``step(ts, batch) -> (ts, logs)`` for any :class:`Objective`.

    ``logs`` holds ``"loss"``, the objective's metrics, ``"grad_norm"``, ``"nonfinite"`` and what
    ``monitor`` asks for (default :class:`~nn_jax.monitor.Monitor`: a non-finite step is
    skipped). The step's rng is ``fold_in(ts.rng, ts.step)``: a fresh key per step,
    reproducible.

    Args:
        objective, optimizer: what to minimize and the optax optimizer of ``ts.opt_state``.
        monitor: what the step measures and what a non-finite step does.
        loss_scale: a :class:`~nn_jax.precision.DynamicLossScale` for float16 training. The
            optimizer (here and in ``TrainState.create``) is then ``loss_scale.wrap(opt)``, so
            ``opt_state`` carries the scale (and checkpoints with it). The loss is multiplied
            by the scale before ``jax.grad`` and the gradients divided by it after; a step with
            non-finite gradients is skipped whatever ``monitor`` says (params, layer state and
            optimizer state unchanged, ``"nonfinite"`` logged) and the scale divided by its
            factor. ``logs["loss_scale"]`` is the scale the step used.
        micro_batches: ``k > 1`` splits the batch's leading axis into ``k`` micro-batches run
            one after another by ``jax.lax.scan`` (activations of one micro-batch in memory at
            a time) with the layer state threaded through; gradients, loss and metrics are
            averaged (equal to the whole batch's for a mean loss), then ONE optimizer update.
            Micro-batch ``i`` gets rng ``fold_in(step rng, i)``; layers with batch statistics
            (BatchNorm) see each micro-batch's. A batch size ``k`` does not divide is a
            ``ConfigError``. ``optax.MultiSteps(opt, every_k_schedule=k)`` is the alternative
            that accumulates over ``k`` steps (``k`` dispatches, the same memory).
    """
    _check_objective("make_step", objective)
    _check_optimizer("make_step", optimizer)
    _check_monitor("make_step", monitor)
    _check_loss_scale("make_step", loss_scale)
    micro_batches = _positive("make_step", "micro_batches", micro_batches)
    monitor = monitor or Monitor()
    traced = _Traced()

    @jax.jit
    def step(ts: TrainState, batch: Any) -> tuple[TrainState, Metrics]:
        if not isinstance(ts, TrainState):
            raise ArgumentError(
                "step(ts, batch) takes the TrainState made by TrainState.create(model, "
                f"optimizer, key, x), given {describe(ts)}"
            )
        ts, logs = _train_body(
            objective,
            optimizer,
            monitor,
            traced,
            ts,
            batch,
            loss_scale=loss_scale,
            micro_batches=micro_batches,
        )
        return ts, {k: v for k, v in logs.items() if not k.startswith("_")}

    return step


def _check_loss_scale(where: str, loss_scale: Any) -> None:
    if loss_scale is not None and not isinstance(loss_scale, DynamicLossScale):
        raise ArgumentError(
            f"{where}: loss_scale must be a nn_jax.DynamicLossScale(...) or None, given "
            f"{describe(loss_scale)}"
        )


def make_stateful_train_step(
    model: Layer,
    loss_fn: LossFn,
    optimizer: optax.GradientTransformation,
    *,
    metrics: Mapping[str, MetricFn] | None = None,
    monitor: Monitor | None = None,
    loss_scale: DynamicLossScale | None = None,
    micro_batches: int = 1,
) -> Callable[[TrainState, Batch], tuple[TrainState, Metrics]]:
    """``make_step(Supervised(model, loss_fn, metrics), optimizer, ...)``: the short form.

    >>> import jax, jax.numpy as jnp, optax
    >>> from nn_jax import Dense, losses
    >>> model, opt = Dense(1), optax.sgd(0.1)
    >>> ts = TrainState.create(model, opt, jax.random.key(0), jnp.zeros((4, 2)))
    >>> step = make_stateful_train_step(model, losses.mse, opt)
    >>> ts, logs = step(ts, (jnp.ones((4, 2)), jnp.ones((4, 1))))
    >>> sorted(logs)
    ['grad_norm', 'loss', 'nonfinite']
    """
    check_layer("make_stateful_train_step", model)
    _check_loss("make_stateful_train_step", loss_fn)
    return make_step(
        Supervised(model, loss_fn, metrics),
        optimizer,
        monitor=monitor,
        loss_scale=loss_scale,
        micro_batches=micro_batches,
    )


def make_train_step(
    model: Layer, loss_fn: LossFn, optimizer: optax.GradientTransformation
) -> Callable[[Params, optax.OptState, Batch], tuple[Params, optax.OptState, Array]]:
    """A jitted ``step(params, opt_state, batch) -> (params, opt_state, loss)``.

    For models without state or randomness; works with any optax ``GradientTransformation``.

    >>> import jax, jax.numpy as jnp, optax
    >>> from nn_jax import Dense, losses
    >>> model, opt = Dense(1), optax.sgd(0.1)
    >>> params, _ = model.init(jax.random.key(0), jnp.zeros((4, 2)))
    >>> step = make_train_step(model, losses.mse, opt)
    >>> batch = (jnp.ones((4, 2)), jnp.ones((4, 1)))
    >>> params, opt_state, loss = step(params, opt.init(params), batch)
    """
    check_layer("make_train_step", model)
    _check_loss("make_train_step", loss_fn)
    _check_optimizer("make_train_step", optimizer)
    objective = Supervised(model, loss_fn)

    @jax.jit
    def step(
        params: Params, opt_state: optax.OptState, batch: Batch
    ) -> tuple[Params, optax.OptState, Array]:
        def loss(p: Params) -> Array:
            return objective(p, {}, batch, rng=None, train=True)[0]

        value, grads = jax.value_and_grad(loss)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    return step


def make_eval_step(objective: Objective) -> Callable[[Params, State, Any], Metrics]:
    """A jitted ``evaluate(params, state, batch) -> {"loss": ..., **metrics}`` in eval mode."""
    _check_objective("make_eval_step", objective)

    @jax.jit
    def evaluate(params: Params, state: State, batch: Any) -> Metrics:
        out = objective(params, state, batch, rng=None, train=False)
        loss, (_, metrics) = _objective_output(objective, out)
        return {"loss": loss, **metrics}

    return evaluate


def make_predict(model: Layer) -> Callable[..., Any]:
    """A jitted ``predict(params, state, x, side=None)``: eval mode, no rng, state unchanged."""
    check_layer("make_predict", model)

    @jax.jit
    def predict(params: Params, state: State, x: Any, side: Side | None = None) -> Any:
        return model.apply(params, state, x, side=side, train=False)[0]

    return predict


# --------------------------------------------------------------------------------------------
# fit.


@dataclasses.dataclass(frozen=True)
class EarlyStopping:
    """Stop when ``monitor`` has not improved for ``patience`` validations in a row.

    Args:
        monitor: a validation record key (``"loss"``, ``"accuracy"``, ...).
        patience: validations without improvement before stopping.
        mode: ``"min"`` or ``"max"`` (improvement direction).
        min_delta: the least change that counts as an improvement.
        restore_best: return the train state of the best validation, not the last.
    """

    monitor: str = "loss"
    patience: int = 5
    mode: Literal["min", "max"] = "min"
    min_delta: float = 0.0
    restore_best: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.monitor, str):
            raise ConfigError(
                f"EarlyStopping: monitor must be a validation record key such as 'loss', "
                f"given {describe(self.monitor)}"
            )
        if self.mode not in ("min", "max"):
            raise ConfigError(f"EarlyStopping: mode must be 'min' or 'max', given {self.mode!r}")
        object.__setattr__(self, "patience", _positive("EarlyStopping", "patience", self.patience))
        delta = self.min_delta
        if (
            isinstance(delta, bool)
            or not isinstance(delta, int | float | np.integer | np.floating)
            or not 0 <= delta < math.inf
        ):
            raise ConfigError(
                f"EarlyStopping: min_delta must be a number >= 0, given {describe(delta)}"
            )
        object.__setattr__(self, "min_delta", float(delta))
        _check_flag("EarlyStopping", "restore_best", self.restore_best)

    def improved(self, value: float, best: float | None) -> bool:
        """Whether ``value`` beats ``best`` by more than ``min_delta``."""
        if not math.isfinite(value):
            return False
        if best is None:
            return True
        return (
            value < best - self.min_delta if self.mode == "min" else value > best + self.min_delta
        )


class _InMemory:
    """Arrays on device, batched by index: seeded per-epoch shuffles, position = step."""

    def __init__(
        self, data: Any, batch_size: int, *, shuffle: bool, drop_last: bool, key: PRNGKey
    ) -> None:
        leaves = jax.tree.leaves(data)
        _check_rows("data", leaves)
        sizes = {len(a) for a in leaves}
        if len(sizes) != 1:
            raise ShapeError(
                f"fit: every array of the data must have one row per example, given leading "
                f"sizes {[len(a) for a in leaves]} (shapes {[np.shape(a) for a in leaves]})"
            )
        self.n = sizes.pop()
        _check_batch_size(batch_size, self.n, drop_last)
        self.batch_size, self.shuffle = batch_size, shuffle
        self.short_last = not drop_last and self.n % batch_size != 0
        self.steps_per_epoch = self.n // batch_size if drop_last else -(-self.n // batch_size)
        self.data = jax.device_put(jax.tree.map(np.asarray, data))
        self._entropy = [int(v) for v in np.asarray(jax.random.key_data(key)).ravel()]
        self._orders: dict[int, np.ndarray] = {}
        self._block = max(1, min(64, 2**20 // self.n))

    def orders(self, block: int) -> np.ndarray:
        """The row orders of a block of epochs, ``(epochs per block, n)``: seeded NumPy
        permutations (or 0..n-1 in order).

        Drawn a block at a time from a generator seeded by (key, block), so any epoch's order is
        reproducible on its own (resume) and a data set of one batch does not pay a generator
        per step.
        """
        if not self.shuffle:
            return np.broadcast_to(np.arange(self.n, dtype=np.int32), (self._block, self.n))
        if block not in self._orders:
            self._orders = {}  # only the current block is kept
            rng = np.random.default_rng([*self._entropy, block])
            rows = np.tile(np.arange(self.n, dtype=np.int32), (self._block, 1))
            self._orders[block] = rng.permuted(rows, axis=1)
        return self._orders[block]

    def indices(self, step: int, count: int) -> np.ndarray:
        """Row indices of the batches of steps ``step .. step+count``: ``(count, B)``, or
        ``(1, b)`` for an epoch's last short batch (its own chunk)."""
        size = self.batch_size
        if count == 1:  # the common case without lax.scan: no array bookkeeping
            block, row = divmod(step // self.steps_per_epoch, self._block)
            start = step % self.steps_per_epoch * size
            return self.orders(block)[row, start : start + size][None]
        epochs, offsets = np.divmod(np.arange(step, step + count), self.steps_per_epoch)
        if self.short_last and offsets[-1] == self.steps_per_epoch - 1:
            block, row = divmod(int(epochs[-1]), self._block)
            return self.orders(block)[row, int(offsets[-1]) * size :][None]
        columns = offsets[:, None] * size + np.arange(size)
        out = np.empty((count, size), np.int32)
        for block in np.unique(epochs // self._block):
            chosen = epochs // self._block == block
            rows = (epochs[chosen] % self._block)[:, None]
            out[chosen] = self.orders(int(block))[rows, columns[chosen]]
        return out


def _check_batch_size(batch_size: int, n: int, drop_last: bool) -> None:
    if drop_last and batch_size > n:
        raise ConfigError(
            f"fit: batch_size {batch_size} is larger than the {n} examples (with drop_last no "
            f"batch would be formed)"
        )


def _check_split(source: _InMemory, devices: int) -> None:
    """Every batch of ``source`` splits evenly over a mesh's ``devices`` data devices."""
    if source.batch_size % devices:
        raise ShapeError(
            f"fit: batch_size {source.batch_size} is not a multiple of the {devices} devices "
            f"the mesh splits each batch over (its data and fsdp axes); use a multiple of "
            f"{devices}"
        )
    last = source.n % source.batch_size
    if source.short_last and last % devices:
        raise ShapeError(
            f"fit: with drop_last=False the last batch of each epoch has {last} rows "
            f"({source.n} examples, batch_size {source.batch_size}), which the mesh's "
            f"{devices} data devices do not divide; use drop_last=True"
        )


def _positive(where: str, name: str, value: Any) -> Any:
    """``value`` (an int or NumPy integer ``>= 1``, or ``None``) as a Python int, else a
    ``ConfigError``."""
    if value is None:
        return None
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer) or value < 1:
        raise ConfigError(f"{where}: {name} must be a positive int, given {describe(value)}")
    return int(value)


def _check_flag(where: str, name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: {name} must be True or False, given {describe(value)}")


def _check_monitor(where: str, monitor: Any) -> None:
    if monitor is not None and not isinstance(monitor, Monitor):
        raise ArgumentError(
            f"{where}: monitor must be a nn_jax.Monitor(...) or None, given {describe(monitor)}"
        )


def _check_rows(what: str, leaves: list[Any]) -> None:
    """Every array of in-memory ``data``/``validation`` has a leading example axis."""
    if not leaves:
        raise ArgumentError(f"fit: {what} holds no arrays; give (inputs, targets) arrays")
    for leaf in leaves:
        if np.ndim(leaf) == 0:
            raise ShapeError(
                f"fit: every array of the {what} needs a leading example axis, given "
                f"{describe(leaf)}"
            )


def _check_data(data: Any) -> None:
    """``data`` is a tuple of arrays (in memory) or an iterable of batches, said plainly."""
    if isinstance(data, tuple):
        split_batch(data)
        return
    fix = "give data=(inputs, targets) arrays, or an iterable of such batches"
    if isinstance(data, Mapping) or hasattr(data, "shape"):
        raise ArgumentError(f"fit: {fix}, given {describe(data)}")
    if isinstance(data, list) and data and all(hasattr(b, "shape") for b in data):
        raise ArgumentError(
            f"fit: data is a list of {len(data)} arrays; a list is read as a list of batches: "
            f"give the tuple (inputs, targets) for in-memory arrays"
        )
    try:
        iter(data)
    except TypeError:
        raise ArgumentError(f"fit: {fix}, given {describe(data)}") from None


def fit(
    model: Layer,
    loss_fn: LossFn | None,
    optimizer: optax.GradientTransformation,
    data: Batch | Iterable[Any],
    *,
    key: PRNGKey,
    epochs: int | None = None,
    steps: int | None = None,
    batch_size: int | None = None,
    shuffle: bool = True,
    drop_last: bool = True,
    objective: Objective | None = None,
    metrics: Mapping[str, MetricFn] | None = None,
    validation: Batch | None = None,
    val_every: int | None = None,
    val_batch_size: int | None = None,
    early_stopping: EarlyStopping | None = None,
    monitor: Monitor | None = None,
    steps_per_dispatch: int = 1,
    log_every: int = 10,
    callbacks: Sequence[Callback] = (),
    init: TrainState | None = None,
    checkpoint: Checkpointer | None = None,
    checkpoint_every: int | None = None,
    progress: bool = True,
    mesh: Mesh | None = None,
    rules: Rules | None = None,
    loss_scale: DynamicLossScale | None = None,
    micro_batches: int = 1,
) -> tuple[TrainState, History]:
    """Train ``model``: a thin loop over :func:`make_step` and :func:`make_eval_step`.

    Args:
        model, loss_fn, optimizer: what :class:`Supervised` takes (``loss_fn=None`` when an
            ``objective`` is given instead).
        data: a tuple ``(inputs, targets[, side])`` of arrays with one row per example (kept
            on device and batched there), or any other iterable of such batches (a list, a
            generator, a ``grain`` loader; NumPy or JAX arrays), sent to the device two batches
            ahead (:func:`nn_jax.data.prefetch_to_device`); ``epochs`` re-iterates it,
            ``steps`` draws that many batches, cycling.
        key: seeds init (unless ``init`` is given), the per-step rng and the shuffles.
        epochs, steps: how long, in passes over ``data`` or in optimizer steps (one of them).
            With ``init`` (or a checkpoint) these are totals: training continues to them.
        batch_size: rows per batch for in-memory ``data``.
        shuffle: a seeded permutation per epoch (``False``: batches in order).
        drop_last: drop the last short batch of each epoch (every step compiles once).
        objective: a general :class:`Objective` instead of ``loss_fn``.
        metrics: ``{name: fn(predictions, targets)}``, on device, averaged over each log window.
        validation: ``(inputs, targets[, side])`` arrays evaluated in eval mode every
            ``val_every`` steps (default: each epoch, or at the end for ``steps`` runs).
        early_stopping: stop (and by default restore the best params) on a validation metric.
        monitor: what each step measures and what a non-finite step does (:class:`Monitor`).
        steps_per_dispatch: run this many steps per call with ``lax.scan`` over stacked
            batches, for small models bound by Python dispatch (in-memory data only).
        log_every: read the averaged train metrics back every this many steps (the only
            host-device sync in the loop).
        callbacks: ``callback(ts, record)`` after each record; returning True stops training.
            :class:`nn_jax.loggers.JsonlLogger` and ``TensorBoardLogger`` are callbacks.
        init: a :class:`TrainState` to start from (resume, fine-tune).
        checkpoint: a :class:`nn_jax.checkpoint.Checkpointer`. Each save holds the train
            state, the history, the data position and the model's JSON config
            (:func:`nn_jax.config.to_config`). When it holds a checkpoint,
            training resumes from its latest one (train state, history, data position);
            it saves every ``checkpoint_every`` steps (default: at each validation, or
            epoch), with the validation metrics (for keeping the best) and at the end.
        progress: a tqdm bar with the loss, metrics and examples per second.
        mesh: a ``jax.sharding.Mesh`` (:func:`nn_jax.parallel.make_mesh`) to train on. The
            train state is created directly in its shardings (or ``init`` placed in them)
            before a checkpoint is restored into them; each batch is split over the mesh's
            ``data`` and ``fsdp`` axes (``batch_size`` must be a multiple of their device
            count), in-memory data is replicated on every device and gathered there; training
            and validation run jitted with explicit shardings
            (:mod:`nn_jax.parallel`). On CPU devices each dispatch is waited for: back-to-back
            steps with collectives can hang on simulated CPU devices otherwise.
        rules: the :class:`nn_jax.rules.Rules` deciding each param's sharding (and its
            optimizer state's) and which layers are rematerialized (its remat rules); default
            :func:`nn_jax.parallel.mesh_rules`, from the mesh's axis sizes. Only with
            ``mesh``; the rules' other settings (trainable, lr scale, dtypes) take effect
            through ``rules.optimizer(...)`` and ``MixedPrecision(model, rules=...)``.
        loss_scale: dynamic loss scaling for float16 training
            (:class:`nn_jax.precision.DynamicLossScale`): ``optimizer`` is wrapped so its state
            carries the scale, an overflowing step is skipped and the scale shrunk; the default
            monitor then skips non-finite steps instead of stopping.
        micro_batches: split each batch into this many micro-batches, accumulating their
            gradients with ``lax.scan`` before one update (see :func:`make_step`).

    Every argument is checked before anything is compiled: a wrong kind (a layer class, a loss
    of the wrong signature, an uncalled optimizer factory, a list of arrays as ``data``) is an
    ``ArgumentError``, a bad count (``batch_size=0``, ``epochs=-1``; NumPy integers are fine) a
    ``ConfigError``, an int ``key`` an ``RngError``, arrays of different lengths a ``ShapeError``.

    Returns the final (or, with ``early_stopping.restore_best``, the best) :class:`TrainState`
    and the :class:`~nn_jax.history.History`. Resuming gives bit-identical params to an
    uninterrupted run on CPU: batches, shuffles and rngs are functions of the step number.
    """
    if (loss_fn is None) == (objective is None):
        raise ConfigError("fit: give exactly one of loss_fn and objective=")
    if (epochs is None) == (steps is None):
        raise ConfigError(f"fit: give exactly one of epochs and steps, given {epochs=}, {steps=}")
    epochs, steps = _positive("fit", "epochs", epochs), _positive("fit", "steps", steps)
    batch_size = _positive("fit", "batch_size", batch_size)
    val_every = _positive("fit", "val_every", val_every)
    val_batch_size = _positive("fit", "val_batch_size", val_batch_size)
    log_every = _positive("fit", "log_every", log_every)
    steps_per_dispatch = _positive("fit", "steps_per_dispatch", steps_per_dispatch)
    checkpoint_every = _positive("fit", "checkpoint_every", checkpoint_every)
    for name, flag in [("shuffle", shuffle), ("drop_last", drop_last), ("progress", progress)]:
        _check_flag("fit", name, flag)
    check_layer("fit", model)
    if loss_fn is not None:
        _check_loss("fit", loss_fn)
    if objective is not None:
        _check_objective("fit", objective)
    _check_optimizer("fit", optimizer)
    check_key(key, "fit")
    _check_monitor("fit", monitor)
    if early_stopping is not None and not isinstance(early_stopping, EarlyStopping):
        raise ArgumentError(
            f"fit: early_stopping must be an EarlyStopping(...) or None, given "
            f"{describe(early_stopping)}"
        )
    if not isinstance(callbacks, list | tuple) or not all(callable(cb) for cb in callbacks):
        raise ArgumentError(
            f"fit: callbacks must be a list of functions callback(ts, record), given "
            f"{describe(callbacks)}; wrap a single one in a list, [callback]"
        )
    if init is not None and not isinstance(init, TrainState):
        raise ArgumentError(
            f"fit: init must be a TrainState (from TrainState.create or a previous fit), given "
            f"{describe(init)}"
        )
    _check_data(data)
    if validation is not None:
        if not isinstance(validation, tuple):
            raise ArgumentError(
                f"fit: validation must be a tuple (inputs, targets[, side]) of arrays, given "
                f"{describe(validation)}"
            )
        split_batch(validation)
        _check_rows("validation", jax.tree.leaves(validation))
    _check_loss_scale("fit", loss_scale)
    micro_batches = _positive("fit", "micro_batches", micro_batches)
    if loss_scale is not None:  # overflows are routine under loss scaling: skip, don't stop
        monitor = monitor or Monitor(on_nonfinite="skip")
        optimizer = loss_scale.wrap(optimizer)
    monitor = monitor or Monitor()
    objective = objective or Supervised(model, loss_fn, metrics)  # type: ignore[arg-type]
    init_key, data_key = jax.random.split(key)

    if checkpoint is not None and checkpoint.best is not None and validation is None:
        raise ConfigError(
            f"fit: the checkpointer keeps the best {checkpoint.best!r}, which needs validation="
        )
    if rules is not None and mesh is None:
        raise ConfigError("fit: rules= shards the train state over a mesh: give mesh= too")
    if mesh is not None:
        from nn_jax import parallel  # here: nn_jax.parallel builds on this module

        batch_sharding = parallel.batch_sharding(mesh)  # checks the mesh
        replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    in_memory = isinstance(data, tuple)
    source: _InMemory | None = None
    if in_memory:
        if batch_size is None:
            raise ConfigError("fit: batch_size is required for in-memory data")
        split_batch(tuple(data))
        source = _InMemory(data, batch_size, shuffle=shuffle, drop_last=drop_last, key=data_key)
        if mesh is not None:
            _check_split(source, parallel.data_axis_size(mesh))
            source.data = jax.device_put(source.data, replicated)  # each device gathers rows
        steps_per_epoch: int | None = source.steps_per_epoch
        example = jax.tree.map(lambda a: a[: source.batch_size], source.data)
    elif steps_per_dispatch != 1:
        raise ConfigError("fit: steps_per_dispatch > 1 needs in-memory (inputs, targets) data")
    else:
        steps_per_epoch = _len_or_none(data)
        example = None
    if epochs is not None and steps_per_epoch is None:
        raise ConfigError("fit: epochs= needs data whose length is known; give steps= instead")
    total = steps if steps is not None else epochs * steps_per_epoch  # type: ignore[operator]
    batches = _BatchStream(data, source, steps_per_epoch)

    history = History()
    if init is None:
        if example is None:
            example = batches.peek()
        x = split_batch(example)[0]
        if mesh is None:
            init = TrainState.create(model, optimizer, init_key, x)
        else:  # created directly in its shardings
            init = parallel.sharded_train_state(model, optimizer, init_key, x, mesh, rules)
    ts = init
    if mesh is not None:  # (a restored checkpoint lands in these shardings)
        if rules is not None:  # its remat rules too: no change to the model's code
            objective = _rematerialized(objective, rules.remat_paths(ts.params))
        rules = rules or parallel.mesh_rules(ts.params, mesh)
        ts = parallel.shard_train_state(ts, mesh, rules)
    if checkpoint is not None and checkpoint.latest_step() is not None:
        ts, metadata = checkpoint.restore(ts)
        history = History.from_dict(metadata.get("history", {})).truncate(int(ts.step))
    start = int(ts.step)
    if start > total:
        raise ConfigError(f"fit: the train state is at step {start}, past the requested {total}")

    traced = _Traced()
    body = functools.partial(
        _train_body,
        objective,
        optimizer,
        monitor,
        traced,
        loss_scale=loss_scale,
        micro_batches=micro_batches,
    )

    def run(ts: TrainState, acc: dict[str, Any], payload: Any, kind: str) -> Any:
        return _run_chunk(body, monitor, ts, acc, kind, payload,
                          None if mesh is None else batch_sharding)  # fmt: skip

    # The train state crosses the jit boundary as a flat list of arrays (see nn_jax.dispatch),
    # rebuilt as a TrainState only where the loop reads it.
    if mesh is None:
        chunk, leaves, unflatten = flatten_step(run, ts, static_argnames="kind")
        evaluate = make_eval_step(objective)
    else:
        placed = parallel.train_state_shardings(ts, mesh, rules)
        chunk, leaves, unflatten = flatten_step(
            run, ts, static_argnames="kind", carry_shardings=(placed,), out_shardings=replicated
        )
        evaluate = parallel.make_sharded_eval_step(objective, mesh, rules)
    # Back-to-back steps with collectives can hang on simulated CPU devices when dispatched
    # asynchronously; waiting for each chunk avoids it (and costs little on a CPU).
    wait = mesh is not None and mesh.size > 1 and mesh.devices.flat[0].platform == "cpu"
    acc = _zero_accumulator(
        jax.eval_shape(
            lambda ts, b: body(ts, b)[1],
            ts,
            batches.example_batch(example),
        )
    )
    every_validation = val_every or (steps_per_epoch if epochs is not None else total) or total
    every_checkpoint = checkpoint_every or (every_validation if validation else None)
    every_checkpoint = every_checkpoint or steps_per_epoch or total

    watch = _Watch(early_stopping) if early_stopping is not None else None
    stop = False
    if watch is not None:  # a resumed run picks up where its early stopping was
        stop = any([watch.update(r, None) for r in history.validation])
    bar = tqdm(total=total, initial=start, disable=not progress, desc="train", unit="step")
    window_start, window_time = start, time.perf_counter()
    step = start
    while step < total and not stop:
        boundaries = [total, _next(step, log_every), _next(step, steps_per_dispatch)]
        if checkpoint is not None:
            boundaries.append(_next(step, every_checkpoint))
        if validation is not None:
            boundaries.append(_next(step, every_validation))
        if source is not None and source.short_last:  # the short batch gets its own chunk
            spe = source.steps_per_epoch
            boundaries.append(_next(step, spe) - 1 if (step + 1) % spe else step + 1)
        count = min(boundaries) - step
        kind, payload = batches.take(step, count)
        if mesh is not None and kind == "batch":
            payload = parallel.shard_batch(payload, mesh)
        leaves, acc = chunk(leaves, acc, payload, kind=kind)
        if wait:
            jax.block_until_ready(leaves)
        step += count
        bar.update(count)
        logged: list[Record] = []
        if step % log_every == 0 or step == total:
            record, acc = _read_window(acc, step, steps_per_epoch)
            elapsed = time.perf_counter() - window_time
            examples = (step - window_start) * (batch_size or 0)
            window_start, window_time = step, time.perf_counter()
            history.train.append(record)
            logged.append(record)
            event = _nonfinite_event(record, traced)
            if event is not None:
                history.events.append(event)
                stop = monitor.on_nonfinite == "stop"
            bar.set_postfix(_postfix(record, examples / elapsed if examples else None))
        if validation is not None and (step % every_validation == 0 or step == total):
            (ts,) = unflatten(leaves)
            record = _validate(evaluate, ts, validation, val_batch_size or batch_size, step)
            record["epoch"] = _epoch(step, steps_per_epoch)
            train_loss = _window_train_loss(history, step)
            if train_loss is not None:
                record["gap"] = record["loss"] - train_loss
            history.validation.append(record)
            logged.append(record)
            if watch is not None and watch.update(record, ts):
                history.events.append(watch.event(step))
                stop = True
        if callbacks and logged:
            (ts,) = unflatten(leaves)
        for record in logged:
            stop = any([bool(cb(ts, record)) for cb in callbacks]) or stop
        if checkpoint is not None and (step % every_checkpoint == 0 or step == total or stop):
            checkpoint.save(
                unflatten(leaves)[0],
                metadata={
                    "history": history.to_dict(),
                    "position": _position(step, steps_per_epoch),
                    "config": _config_or_none(model),
                },
                metrics=_checkpoint_metrics(history, step),
            )
    bar.close()
    (ts,) = unflatten(leaves)
    if watch is not None and watch.rule.restore_best and stop:
        ts = watch.best_state(ts, checkpoint)
    return ts, history


class _Watch:
    """Early stopping's running state: the best value, its step and train state, and how many
    validations have passed without improving on it."""

    def __init__(self, rule: EarlyStopping) -> None:
        self.rule = rule
        self.value: float | None = None
        self.step: int | None = None
        self.ts: TrainState | None = None
        self.stale = 0

    def update(self, record: Record, ts: TrainState | None) -> bool:
        """Take one validation record (``ts`` is ``None`` when replaying a resumed history);
        True when training should stop."""
        value = record.get(self.rule.monitor, float("nan"))
        if self.rule.improved(value, self.value):
            self.value, self.step, self.ts, self.stale = value, record["step"], ts, 0
            return False
        self.stale += 1
        return self.stale >= self.rule.patience

    def event(self, step: int) -> Record:
        return {
            "step": step,
            "kind": "early_stop",
            "monitor": self.rule.monitor,
            "best": self.value,
            "best_step": self.step,
        }

    def best_state(self, ts: TrainState, checkpoint: Checkpointer | None) -> TrainState:
        """The best train state: kept in memory, or (after a resume) read from the checkpoint
        folder when it kept that step (``Checkpointer(best="validation/<monitor>")``)."""
        if self.ts is not None:
            return self.ts
        if checkpoint is not None and self.step in checkpoint.steps():
            return checkpoint.restore(ts, step=self.step)[0]
        return ts


class _BatchStream:
    """The batches of step ``s``: device-side gathers for in-memory data, else the iterable."""

    def __init__(self, data: Any, source: _InMemory | None, steps_per_epoch: int | None) -> None:
        self.data, self.source, self.steps_per_epoch = data, source, steps_per_epoch
        self._iterator: Iterator[Any] | None = None
        self._position = 0
        self._peeked: list[Any] = []

    def peek(self) -> Any:
        """The next batch of an iterable, kept for the next :meth:`take`."""
        if not self._peeked:
            self._peeked.append(self._next_from_iterable())
        return self._peeked[0]

    def example_batch(self, example: Any) -> Any:
        """A batch shaped like the ones the steps see (for tracing the log structure)."""
        return example if self.source is not None else self.peek()

    def take(self, step: int, count: int) -> tuple[str, Any]:
        """Batches ``step .. step + count``: ``("rows", (data, indices))`` or ``("batch", b)``."""
        if self.source is not None:
            return ("rows", (self.source.data, self.source.indices(step, count)))
        if self._position < step:  # resuming: skip what the earlier run consumed
            for _ in range(step - self._position):
                self._next_from_iterable()
        return ("batch", self._peeked.pop(0) if self._peeked else self._next_from_iterable())

    def _next_from_iterable(self) -> Any:
        if self._iterator is None:
            self._iterator = prefetch_to_device(iter(self.data), size=2)
        try:
            batch = next(self._iterator)
        except StopIteration:
            self._iterator = prefetch_to_device(iter(self.data), size=2)
            try:
                batch = next(self._iterator)
            except StopIteration:
                raise ConfigError(
                    f"fit: the data ran out after {self._position} batches; give an iterable "
                    f"that can be iterated again (a list, a loader), not a one-shot iterator, "
                    f"or fewer steps"
                ) from None
        self._position += 1
        return tuple(batch) if isinstance(batch, list) else batch


def _rematerialized(objective: Objective, paths: Mapping[str, str]) -> Objective:
    """``objective`` run under :func:`nn_jax.remat.rematerializing` of ``paths`` (the layers a
    rule table's remat rules chose), or ``objective`` itself when there are none."""
    if not paths:
        return objective

    @functools.wraps(objective)
    def run(params: Params, state: State, batch: Any, *, rng: PRNGKey | None, train: bool) -> Any:
        with rematerializing(paths):
            return objective(params, state, batch, rng=rng, train=train)

    return run


def _run_chunk(
    body: Callable[..., tuple[TrainState, Metrics]],
    monitor: Monitor,
    ts: TrainState,
    acc: dict[str, Any],
    kind: str,
    payload: Any,
    batch_sharding: jax.sharding.Sharding | None = None,
) -> tuple[TrainState, dict[str, Any]]:
    """Steps of ``body`` (:func:`_train_body` with the objective, optimizer and options bound)
    over one chunk of batches (a ``lax.scan`` when several), accumulating the logs.

    ``payload`` is a batch (``kind="batch"``) or ``(data, row indices (k, B))`` (``"rows"``).
    On a mesh, the gathered rows are split by ``batch_sharding`` (each device keeps its own).
    """

    def one(carry: tuple[TrainState, dict[str, Any]], batch: Any) -> Any:
        ts, acc = carry
        new_ts, logs = body(ts, batch, acc["halted"])
        return (new_ts, _accumulate(acc, logs, ts.step, monitor)), None

    if kind == "batch":
        return one((ts, acc), payload)[0]
    data, indices = payload

    def gather(rows: Array) -> Any:
        batch = tuple(jax.tree.map(lambda a: a[rows], tuple(data)))
        if batch_sharding is None:
            return batch
        return jax.lax.with_sharding_constraint(batch, batch_sharding)

    if indices.shape[0] == 1:
        return one((ts, acc), gather(indices[0]))[0]
    return jax.lax.scan(lambda c, rows: one(c, gather(rows)), (ts, acc), indices)[0]


def _zero_accumulator(logs: Mapping[str, jax.ShapeDtypeStruct]) -> dict[str, Any]:
    """Running sums of a log window, and the flags of its first non-finite step."""
    return {
        "sums": {k: jnp.zeros(v.shape, jnp.float32) for k, v in logs.items() if k[0] != "_"},
        "count": jnp.zeros((), jnp.int32),
        "halted": jnp.zeros((), bool),
        "first_bad_step": jnp.full((), -1, jnp.int32),
        "first_bad_flags": {k: jnp.zeros(v.shape, bool) for k, v in logs.items() if k[0] == "_"},
    }


def _accumulate(
    acc: dict[str, Any], logs: Metrics, step: Array, monitor: Monitor
) -> dict[str, Any]:
    bad = logs["nonfinite"]
    first = (acc["first_bad_step"] < 0) & bad
    acc = dict(acc)
    acc["sums"] = {  # a skipped step's numbers stay out of the window's means
        k: s + (bad if k == "nonfinite" else jnp.where(bad, 0.0, logs[k])).astype(jnp.float32)
        for k, s in acc["sums"].items()
    }
    acc["count"] = acc["count"] + 1
    acc["first_bad_step"] = jnp.where(first, step, acc["first_bad_step"])
    acc["first_bad_flags"] = {
        k: jnp.where(first, logs[k], flags) for k, flags in acc["first_bad_flags"].items()
    }
    acc["halted"] = acc["halted"] | (bad & (monitor.on_nonfinite == "stop"))
    return acc


def _read_window(
    acc: dict[str, Any], step: int, steps_per_epoch: int | None
) -> tuple[Record, dict[str, Any]]:
    """The window's means as a record (one device-to-host transfer), and a reset accumulator."""
    host = jax.device_get(acc)
    count = max(int(host["count"]), 1)
    nonfinite = int(host["sums"]["nonfinite"])
    good = max(count - nonfinite, 1)
    record: Record = {"step": step, "epoch": _epoch(step, steps_per_epoch), "split": "train"}
    for name, total in host["sums"].items():
        value = float(total)
        record[name] = int(value) if name == "nonfinite" else value / good
    if nonfinite == count:
        record["loss"] = float("nan")
    if int(host["first_bad_step"]) >= 0:
        record["first_nonfinite_step"] = int(host["first_bad_step"])
        record["_flags"] = {k: [bool(b) for b in v] for k, v in host["first_bad_flags"].items()}
    reset = jax.tree.map(jnp.zeros_like, {**acc, "halted": None})
    reset["halted"] = acc["halted"]
    reset["first_bad_step"] = jnp.full((), -1, jnp.int32)
    return record, reset


def _nonfinite_event(record: Record, traced: _Traced) -> Record | None:
    """The window's first non-finite step: its number, the first layer whose output was
    non-finite (with activation monitoring) and the params whose gradients were."""
    flags = record.pop("_flags", {})
    if "first_nonfinite_step" not in record:
        return None
    event: Record = {"step": record.pop("first_nonfinite_step"), "kind": "nonfinite"}
    activations = flags.get("_nonfinite/activations", [])
    if any(activations):
        event["layer"] = traced.paths["activations"][activations.index(True)]
    gradients = flags.get("_nonfinite/gradients", [])
    event["gradients"] = [
        p for p, bad in zip(traced.paths["gradients"], gradients, strict=True) if bad
    ]
    return event


def _validate(
    evaluate: Callable[[Params, State, Any], Metrics],
    ts: TrainState,
    validation: Batch,
    batch_size: int | None,
    step: int,
) -> Record:
    """Eval-mode means over the validation data, in order, weighted by batch size.

    Data whose arrays do not share a leading size (a graph batch: nodes and edges) is one batch.
    """
    n = len(jax.tree.leaves(validation)[0])
    row_aligned = all(len(a) == n for a in jax.tree.leaves(validation))
    size = min(batch_size or n, n) if row_aligned else n
    sums: dict[str, Array] | None = None
    for start in range(0, n, size):
        batch = jax.tree.map(lambda a, s=start: a[s : s + size], tuple(validation))
        logs = evaluate(ts.params, ts.state, batch)
        rows = len(jax.tree.leaves(batch)[0])
        weighted = {k: v * rows for k, v in logs.items()}
        sums = weighted if sums is None else jax.tree.map(jnp.add, sums, weighted)
    means = jax.device_get(sums) or {}
    return {"step": step, "split": "validation", **{k: float(v) / n for k, v in means.items()}}


def _checkpoint_metrics(history: History, step: int) -> dict[str, float] | None:
    """This step's validation record as ``{"validation/<key>": value}`` (``None`` if the step
    was not validated: such a checkpoint can only be kept as one of the latest)."""
    last = history.validation[-1] if history.validation else {}
    if last.get("step") != step:
        return None
    return {f"validation/{k}": v for k, v in last.items() if isinstance(v, float)}


def _window_train_loss(history: History, step: int) -> float | None:
    """The mean train loss logged since the previous validation (the gap's reference)."""
    previous = history.validation[-1]["step"] if history.validation else -1
    rows = [r for r in history.train if previous < r["step"] <= step and "loss" in r]
    values = [r["loss"] for r in rows if math.isfinite(r["loss"])]
    return float(np.mean(values)) if values else None


def _postfix(record: Record, rate: float | None) -> dict[str, str]:
    shown = {
        k: f"{v:.4g}"
        for k, v in record.items()
        if isinstance(v, float) and "/" not in k and k != "grad_norm"
    }
    if rate:
        shown["ex/s"] = f"{rate:.3g}"
    return shown


def _next(step: int, every: int) -> int:
    return (step // every + 1) * every


def _epoch(step: int, steps_per_epoch: int | None) -> int | None:
    return None if not steps_per_epoch else (step - 1) // steps_per_epoch


def _position(step: int, steps_per_epoch: int | None) -> dict[str, int | None]:
    if not steps_per_epoch:
        return {"step": step, "epoch": None, "batch": step}
    epoch, batch = divmod(step, steps_per_epoch)
    return {"step": step, "epoch": epoch, "batch": batch}


def _config_or_none(model: Layer) -> dict[str, Any] | None:
    """The model's JSON config for the checkpoint (``None`` if it holds, e.g., a lambda)."""
    try:
        return to_config(model)
    except ConfigError:
        return None


def _path(path: tuple[Any, ...]) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def _len_or_none(data: Any) -> int | None:
    try:
        return len(data)
    except TypeError:
        return None


__all__ = [
    "Batch",
    "EarlyStopping",
    "Objective",
    "Supervised",
    "TrainState",
    "fit",
    "make_eval_step",
    "make_predict",
    "make_stateful_train_step",
    "make_step",
    "make_train_step",
    "split_batch",
]

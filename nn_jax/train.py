"""Training with ``jax.grad`` + optax: jit-compiled step builders and a thin ``fit`` loop.

Two step shapes, built on one gradient step:

* :func:`make_train_step` - ``step(params, opt_state, batch) -> (params, opt_state, loss)`` for
  stateless, deterministic models (the seed network, MLPs).
* :func:`make_stateful_train_step` - ``step(ts, batch) -> (ts, loss)`` over a :class:`TrainState`
  that also carries layer state (batch-norm statistics) and an rng (dropout), for any model.

``batch`` is ``(inputs, targets)`` or ``(inputs, targets, side)``, where ``side`` is the model's
side inputs (``{"lengths": (B,) ints}``, ``{"key_mask": (B, T) bools}``, ...; see
:mod:`nn_jax.core`), given to ``model.apply(..., side=side)``. ``loss_fn(predictions, targets)``
returns a scalar. Nothing in a step syncs host and device; ``fit`` reads the loss only on the
steps it logs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np
import optax
from tqdm import tqdm

from nn_jax.core import Array, Layer, Params, PRNGKey, Side, State
from nn_jax.data import batches
from nn_jax.errors import ConfigError

LossFn = Callable[[Any, Any], Array]
Batch = tuple[Any, ...]
"""``(inputs, targets)`` or ``(inputs, targets, side)``."""


def split_batch(batch: Batch) -> tuple[Any, Any, Side | None]:
    """``(inputs, targets, side)`` of a 2- or 3-tuple batch (``side`` is ``None`` if absent)."""
    if not isinstance(batch, tuple | list) or len(batch) not in (2, 3):
        given = f"a {len(batch)}-tuple" if isinstance(batch, tuple | list) else type(batch).__name__
        raise ConfigError(
            f"a batch must be (inputs, targets) or (inputs, targets, side), given {given}"
        )
    inputs, targets, *rest = batch
    return inputs, targets, (rest[0] if rest else None)


def _gradient_step(
    model: Layer,
    loss_fn: LossFn,
    optimizer: optax.GradientTransformation,
    params: Params,
    state: State,
    opt_state: optax.OptState,
    batch: Batch,
    rng: PRNGKey | None,
) -> tuple[Params, State, optax.OptState, Array]:
    inputs, targets, side = split_batch(batch)

    def objective(p: Params) -> tuple[Array, State]:
        predictions, new_state = model.apply(p, state, inputs, side=side, rng=rng, train=True)
        return loss_fn(predictions, targets), new_state

    (loss, new_state), grads = jax.value_and_grad(objective, has_aux=True)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), new_state, opt_state, loss


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

    @jax.jit
    def step(
        params: Params, opt_state: optax.OptState, batch: Batch
    ) -> tuple[Params, optax.OptState, Array]:
        params, _, opt_state, loss = _gradient_step(
            model, loss_fn, optimizer, params, {}, opt_state, batch, None
        )
        return params, opt_state, loss

    return step


class TrainState(NamedTuple):
    """Everything a training step reads and writes, as one pytree."""

    params: Params
    state: State
    opt_state: optax.OptState
    rng: PRNGKey
    step: Array

    @classmethod
    def create(
        cls, model: Layer, optimizer: optax.GradientTransformation, key: PRNGKey, x: Any
    ) -> TrainState:
        """Initialize ``model`` for inputs shaped like ``x`` and ``optimizer`` for its params."""
        init_key, rng = jax.random.split(key)
        params, state = model.init(init_key, x)
        return cls(params, state, optimizer.init(params), rng, jax.numpy.zeros((), "int32"))


def make_stateful_train_step(
    model: Layer, loss_fn: LossFn, optimizer: optax.GradientTransformation
) -> Callable[[TrainState, Batch], tuple[TrainState, Array]]:
    """A jitted ``step(ts, batch) -> (ts, loss)`` threading layer state and a per-step rng.

    The step's rng is ``fold_in(ts.rng, ts.step)``: a fresh key per step, reproducible.
    """

    @jax.jit
    def step(ts: TrainState, batch: Batch) -> tuple[TrainState, Array]:
        rng = jax.random.fold_in(ts.rng, ts.step)
        params, state, opt_state, loss = _gradient_step(
            model, loss_fn, optimizer, ts.params, ts.state, ts.opt_state, batch, rng
        )
        return TrainState(params, state, opt_state, ts.rng, ts.step + 1), loss

    return step


def make_predict(model: Layer) -> Callable[..., Any]:
    """A jitted ``predict(params, state, x, side=None)``: eval mode, no rng, state unchanged."""

    @jax.jit
    def predict(params: Params, state: State, x: Any, side: Side | None = None) -> Any:
        return model.apply(params, state, x, side=side, train=False)[0]

    return predict


class History(NamedTuple):
    """Losses read back on the logged steps (one host sync each)."""

    steps: list[int]
    losses: list[float]


def fit(
    model: Layer,
    loss_fn: LossFn,
    optimizer: optax.GradientTransformation,
    data: Batch,
    *,
    key: PRNGKey,
    epochs: int,
    batch_size: int,
    log_every: int = 10,
    progress: bool = True,
    callback: Callable[[int, TrainState], None] | None = None,
) -> tuple[TrainState, History]:
    """Train ``model`` on ``data = (inputs, targets[, side])`` with shuffled mini-batches.

    Every array of ``data`` (side inputs included) has one row per example and is batched along
    its first axis.

    A thin convenience over :func:`make_stateful_train_step`; ``callback(epoch, ts)`` runs after
    each epoch (e.g. to evaluate). Returns the final :class:`TrainState` and the logged losses.
    """
    x, _, _ = split_batch(data)
    init_key, data_key = jax.random.split(key)
    ts = TrainState.create(model, optimizer, init_key, _first(x, batch_size))
    step_fn = make_stateful_train_step(model, loss_fn, optimizer)
    history = History([], [])
    steps_per_epoch = len(jax.tree.leaves(x)[0]) // batch_size
    bar = tqdm(total=epochs * steps_per_epoch, disable=not progress, desc="train", unit="step")
    step = 0
    for epoch in range(epochs):
        for batch in batches(tuple(data), batch_size, key=jax.random.fold_in(data_key, epoch)):
            ts, loss = step_fn(ts, batch)
            step += 1
            if step % log_every == 0 or step == epochs * steps_per_epoch:
                history.steps.append(step)
                history.losses.append(float(loss))
                bar.set_postfix(loss=f"{history.losses[-1]:.4f}")
            bar.update(1)
        if callback is not None:
            callback(epoch, ts)
    bar.close()
    return ts, history


def _first(x: Any, n: int) -> Any:
    return jax.tree.map(lambda a: np.asarray(a[:n]), x)


__all__ = [
    "History",
    "TrainState",
    "fit",
    "make_predict",
    "make_stateful_train_step",
    "make_train_step",
    "split_batch",
]

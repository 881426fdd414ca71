"""Mixed precision: a dtype policy, a transparent wrapper layer, and dynamic loss scaling.

* :class:`Policy` - params stored in ``param_dtype`` (float32), the forward pass computed in
  ``compute_dtype`` (bfloat16 or float16), outputs returned in ``output_dtype`` (float32); the
  ``"params=float32,compute=bfloat16,output=float32"`` text form is the CLI's (the same as
  ``jmp.get_policy``'s).
* :class:`MixedPrecision` - applies a policy to any layer (set globally by wrapping the model,
  or per parameter path with the ``compute_dtype`` of a :class:`~nn_jax.rules.Rules` table)
  without changing its params tree: checkpoints and tap paths are the wrapped model's. Norm
  statistics and attention softmax stay in at least float32 inside the layers, and
  :mod:`nn_jax.losses` compute in at least float32, so a bfloat16 model trains on a float32
  loss whose gradients come back float32 to the float32 params.
* :class:`DynamicLossScale` - loss scaling for float16, whose gradients underflow without it:
  :func:`nn_jax.train.make_step` multiplies the loss by the scale before ``jax.grad`` and divides
  the gradients after; a step with non-finite gradients is skipped (params, layer state and
  optimizer state unchanged) and the scale divided by ``factor``; after ``growth_interval``
  finite steps in a row it is multiplied by ``factor``. The scale lives in ``opt_state``
  (:meth:`DynamicLossScale.wrap`), so checkpoints carry it. The semantics are those of
  ``jmp.DynamicLossScale`` and Keras' ``LossScaleOptimizer``; optax has no loss scaling, and
  the skip is the train step's own non-finite select (see :mod:`nn_jax.monitor` for why it is
  not ``optax.apply_if_finite``).

>>> import jax, jax.numpy as jnp
>>> from nn_jax import Dense
>>> model = MixedPrecision(Dense(3), "params=float32,compute=bfloat16,output=float32")
>>> params, _ = model.init(jax.random.key(0), jnp.zeros((2, 4)))
>>> jax.tree.map(lambda a: (a.shape, str(a.dtype)), params)
{'b': ((3,), 'float32'), 'w': ((4, 3), 'float32')}
>>> model(params, jnp.ones((2, 4))).dtype
dtype('float32')
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from nn_jax._options import at_least_float32, floating_dtype
from nn_jax.core import Array, Call, Layer, Params, PRNGKey, State, describe
from nn_jax.errors import ArgumentError, ConfigError
from nn_jax.rules import Rules

__all__ = [
    "DynamicLossScale",
    "LossScaleState",
    "LossScaledState",
    "MixedPrecision",
    "Policy",
    "cast_floats",
]

_POLICY_KEYS = {"params": "param_dtype", "compute": "compute_dtype", "output": "output_dtype"}


def cast_floats(tree: Any, dtype: Any) -> Any:
    """``tree`` with every floating array (or ``ShapeDtypeStruct``) cast to ``dtype``; integer
    and boolean leaves (token ids, masks) are left as they are."""

    def cast(leaf: Any) -> Any:
        if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
            return leaf
        if isinstance(leaf, jax.ShapeDtypeStruct):
            return jax.ShapeDtypeStruct(leaf.shape, dtype, sharding=leaf.sharding)
        return jnp.asarray(leaf).astype(dtype)

    return jax.tree.map(cast, tree)


@dataclasses.dataclass(frozen=True)
class Policy:
    """Which dtype params are stored in, the forward pass computes in, and outputs come out in.

    Args:
        param_dtype: storage dtype of floating params (what ``init`` returns, what the
            optimizer updates and checkpoints hold).
        compute_dtype: dtype floating params and inputs are cast to for the forward pass.
        output_dtype: dtype floating outputs are cast to.

    Dtypes may be given by name (``"bfloat16"``); they are stored as NumPy dtypes, so a policy
    is hashable and compares by value. ``str(policy)`` is the text form that :meth:`parse` reads.

    >>> Policy.parse("params=float32,compute=float16,output=float32")
    Policy(param_dtype='float32', compute_dtype='float16', output_dtype='float32')
    >>> str(Policy())
    'params=float32,compute=bfloat16,output=float32'
    """

    param_dtype: Any = "float32"
    compute_dtype: Any = "bfloat16"
    output_dtype: Any = "float32"

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            dtype = floating_dtype("Policy", field.name, getattr(self, field.name))
            object.__setattr__(self, field.name, dtype)

    @classmethod
    def parse(cls, text: str) -> Policy:
        """A policy from ``"params=float32,compute=bfloat16,output=float32"`` (any order; a
        key left out takes its default)."""
        if not isinstance(text, str):
            raise ConfigError(f"Policy.parse: expected a string, given {describe(text)}")
        form = "'params=float32,compute=bfloat16,output=float32'"
        values: dict[str, str] = {}
        for item in text.split(","):
            key, sep, value = (part.strip() for part in item.partition("="))
            if not sep or key not in _POLICY_KEYS or _POLICY_KEYS[key] in values:
                raise ConfigError(
                    f"Policy: cannot read {item.strip()!r} of {text!r}; expected comma-separated "
                    f"{'/'.join(_POLICY_KEYS)}=<dtype>, each once, e.g. {form}"
                )
            values[_POLICY_KEYS[key]] = value
        return cls(**values)

    def __str__(self) -> str:
        return ",".join(f"{k}={getattr(self, f).name}" for k, f in _POLICY_KEYS.items())

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{f.name}={getattr(self, f.name).name!r}" for f in dataclasses.fields(self)
        )
        return f"Policy({shown})"


@dataclasses.dataclass(frozen=True)
class MixedPrecision(Layer):
    """``model`` under a dtype :class:`Policy`, with the same params tree as ``model``.

    ``init`` returns ``model``'s params with floating ones in ``policy.param_dtype`` (then in
    the storage dtype a rule of ``rules`` sets, :meth:`Rules.cast`). ``apply`` casts floating
    params to ``policy.compute_dtype`` (or, per parameter path, to the ``compute_dtype`` a rule
    sets, :meth:`Rules.compute_dtypes`) and floating inputs to ``policy.compute_dtype``, runs
    ``model``, and casts floating outputs to ``policy.output_dtype``. The casts sit inside the
    differentiated function, so gradients come back in the params' storage dtype. Layer state
    and side inputs are passed through as they are.

    The wrapper adds no level to the params, state or tap paths (it runs ``model`` in its own
    place), so a checkpoint of the unwrapped model loads into the wrapped one and back.

    Args:
        model: the layer to run.
        policy: a :class:`Policy` or its text form; kept as the text form
            (``"params=float32,compute=bfloat16,output=float32"``) so the layer's JSON config
            holds it.
        rules: an optional :class:`~nn_jax.rules.Rules` table whose ``dtype`` and
            ``compute_dtype`` settings override the policy per parameter path (paths relative to
            ``model``'s params).
    """

    model: Layer
    policy: Any = "params=float32,compute=bfloat16,output=float32"
    rules: Any = None

    def __post_init__(self) -> None:
        policy = self.policy
        if isinstance(policy, str):
            policy = Policy.parse(policy)
        if not isinstance(policy, Policy):
            raise ConfigError(
                "MixedPrecision: policy must be a Policy or its text form "
                f"'params=float32,compute=bfloat16,output=float32', given {describe(self.policy)}"
            )
        object.__setattr__(self, "policy", str(policy))
        if self.rules is not None and not isinstance(self.rules, Rules):
            raise ArgumentError(
                f"MixedPrecision: rules must be a nn_jax.Rules table or None, given "
                f"{describe(self.rules)}"
            )

    @property
    def dtypes(self) -> Policy:
        """The :class:`Policy` (``policy`` is kept as its text form)."""
        return Policy.parse(self.policy)

    def init(self, key: PRNGKey, x: Any) -> tuple[Params, State]:
        dtypes = self.dtypes
        params, state = self.model.init(key, cast_floats(x, dtypes.compute_dtype))
        params = cast_floats(params, dtypes.param_dtype)
        return (params if self.rules is None else self.rules.cast(params)), state

    def compute(self, params: Params, state: State, x: Any, call: Call) -> tuple[Any, State]:
        dtypes = self.dtypes
        y, new_state = self.model.apply(
            self._compute_params(params, dtypes.compute_dtype),
            state,
            cast_floats(x, dtypes.compute_dtype),
            side=call.side,
            rng=call.rng,
            train=call.train,
        )
        return cast_floats(y, dtypes.output_dtype), new_state

    def _compute_params(self, params: Params, default: np.dtype[Any]) -> Params:
        if self.rules is None:
            return cast_floats(params, default)
        leaves, treedef = jax.tree.flatten(params)
        overrides = jax.tree.leaves(self.rules.compute_dtypes(params), is_leaf=lambda v: v is None)
        cast = [
            cast_floats(leaf, default if dtype is None else dtype)
            for leaf, dtype in zip(leaves, overrides, strict=True)
        ]
        return jax.tree.unflatten(treedef, cast)


# --------------------------------------------------------------------------------------------
# Dynamic loss scaling.


class LossScaleState(NamedTuple):
    """The loss scale (float32) and the number of finite steps since it last changed (int32)."""

    scale: Array
    good_steps: Array


class LossScaledState(NamedTuple):
    """``opt_state`` of :meth:`DynamicLossScale.wrap`: the scale's state and the wrapped
    optimizer's state."""

    loss_scale: LossScaleState
    inner: optax.OptState


@dataclasses.dataclass(frozen=True)
class DynamicLossScale:
    """Dynamic loss scaling for float16 training (give it to :func:`nn_jax.train.make_step`).

    Args:
        initial: the starting scale (a power of 2 keeps scaling exact).
        growth_interval: finite steps in a row after which the scale is multiplied by
            ``factor``.
        factor: what the scale is multiplied by on growth and divided by on overflow.
        min_scale: the scale never goes below this.

    Usage: the optimizer of the train state and of the step is ``loss_scale.wrap(optimizer)``
    (its state holds the scale)::

        loss_scale = DynamicLossScale()
        opt = loss_scale.wrap(optax.adam(1e-3))
        ts = TrainState.create(model, opt, key, x)
        step = make_step(objective, opt, loss_scale=loss_scale)
    """

    initial: float = 2.0**15
    growth_interval: int = 2000
    factor: float = 2.0
    min_scale: float = 1.0

    def __post_init__(self) -> None:
        numbers = {"initial": self.initial, "factor": self.factor, "min_scale": self.min_scale}
        for name, value in numbers.items():
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float | np.integer | np.floating)
                or not 0 < value < math.inf
            ):
                raise ConfigError(
                    f"DynamicLossScale: {name} must be a positive finite number, given "
                    f"{describe(value)}"
                )
            object.__setattr__(self, name, float(value))
        if self.factor <= 1:
            raise ConfigError(f"DynamicLossScale: factor must be > 1, given {self.factor}")
        if self.initial < self.min_scale:
            raise ConfigError(
                f"DynamicLossScale: initial {self.initial} is below min_scale {self.min_scale}"
            )
        interval = self.growth_interval
        if isinstance(interval, bool) or not isinstance(interval, int | np.integer) or interval < 1:
            raise ConfigError(
                f"DynamicLossScale: growth_interval must be a positive int, given "
                f"{describe(interval)}"
            )
        object.__setattr__(self, "growth_interval", int(interval))

    def init(self) -> LossScaleState:
        """The starting state: ``initial`` and no finite steps yet."""
        return LossScaleState(jnp.asarray(self.initial, jnp.float32), jnp.zeros((), jnp.int32))

    def adjust(self, state: LossScaleState, finite: Array) -> LossScaleState:
        """The state after a step whose gradients were ``finite`` (a bool scalar): divided by
        ``factor`` (not below ``min_scale``) on overflow, multiplied by it after
        ``growth_interval`` finite steps in a row."""
        good = jnp.where(finite, state.good_steps + 1, 0)
        grow = good >= self.growth_interval
        scale = jnp.where(
            finite,
            jnp.where(grow, state.scale * self.factor, state.scale),
            jnp.maximum(state.scale / self.factor, self.min_scale),
        )
        return LossScaleState(scale.astype(jnp.float32), jnp.where(grow, 0, good).astype(jnp.int32))

    def scale(self, loss: Array, state: LossScaleState) -> Array:
        """``loss * scale``, in at least float32 (a float16 loss times 2**15 would overflow)."""
        loss = loss.astype(at_least_float32(loss.dtype))
        return loss * state.scale.astype(loss.dtype)

    def unscale(self, grads: Any, state: LossScaleState) -> Any:
        """``grads / scale``, each divided in at least float32 and returned in its own dtype."""

        def unscale(g: Array) -> Array:
            wide = at_least_float32(g.dtype)
            return (g.astype(wide) / state.scale.astype(wide)).astype(g.dtype)

        return jax.tree.map(unscale, grads)

    def wrap(self, optimizer: optax.GradientTransformation) -> optax.GradientTransformation:
        """``optimizer`` with this scale's state carried in its own: ``init`` gives
        :class:`LossScaledState` ``(self.init(), optimizer.init(params))``; ``update`` applies
        ``optimizer`` to the inner state and returns the scale's state as it was.

        Scaling, the skip of a non-finite step and :meth:`adjust` are done by the train step
        (``make_step(..., loss_scale=self)``), which owns the non-finite check.
        """

        def init(params: optax.Params) -> LossScaledState:
            return LossScaledState(self.init(), optimizer.init(params))

        def update(
            updates: optax.Updates, state: LossScaledState, params: optax.Params | None = None
        ) -> tuple[optax.Updates, LossScaledState]:
            updates, inner = optimizer.update(updates, state.inner, params)
            return updates, LossScaledState(state.loss_scale, inner)

        return optax.GradientTransformation(init, update)

"""A jitted step whose carry stays a flat list of arrays between calls.

Every call of a ``jax.jit`` function flattens its pytree arguments and rebuilds its pytree
results. That happens in C++, but node by node: nn_jax's params are nested dicts (one per layer
and per sublayer), so a deep stack of small layers or a tiny model run one step per call spends
a measurable part of each step on its containers. Measured on a 2-core CPU (interleaved rounds,
the training steps of ``nn-jax bench``): the 100-block overhead stack runs 11-17% slower with
its nested-dict ``TrainState`` at the jit boundary than with the same program over a flat list
of its 600 arrays, and the seed network 10-32-16-1 about 25% slower (``benchmarks/README.md``).

:func:`flatten_step` flattens the carry once. The compiled step it returns takes and gives back
the flat list of leaves (the program XLA runs is unchanged: the nested structure is rebuilt at
trace time, inside the jit), so a training loop passes the list from one call to the next and
rebuilds the nested pytree only where it reads it: to log, validate, checkpoint or return. This
is the idea of Flax NNX's ``nnx.cached_partial``, for plain pytrees. ``fit`` runs its steps this
way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax

from nn_jax.errors import ArgumentError

__all__ = ["flatten_step"]

FlatStep = Callable[..., tuple[list[jax.Array], Any]]
"""``flat_step(leaves, *args) -> (leaves, out)``: a step over a flat carry."""


def flatten_step(
    step: Callable[..., Any],
    *carry: Any,
    static_argnames: str | Sequence[str] = (),
    carry_shardings: Any = None,
    out_shardings: Any = None,
) -> tuple[FlatStep, list[jax.Array], Callable[[Sequence[jax.Array]], tuple[Any, ...]]]:
    """``step`` over a flat carry: ``(flat_step, leaves, unflatten)``.

    ``step(*carry, *args, **static)`` must return the new carry, same structure, followed by at
    most one more value ``out`` (``make_step``'s ``(ts, logs)``, ``make_train_step``'s
    ``(params, opt_state, loss)``). ``flat_step(leaves, *args, **static)`` is one jitted call of
    it that returns ``(leaves, out)`` (``out`` is ``None`` when ``step`` returns only the carry);
    ``unflatten(leaves)`` rebuilds the carry's tuple. ``step`` may itself be jitted: it is traced
    inline, so the compiled program is ``step``'s own.

    Args:
        step: the training step.
        *carry: its first arguments, the state it threads from call to call.
        static_argnames: keyword arguments of ``step`` that are static (as in ``jax.jit``).
        carry_shardings: the new carry's shardings, a pytree prefix of ``carry`` (a tuple with
            one entry per carry argument); ``None`` lets XLA choose.
        out_shardings: ``out``'s shardings (as ``jax.jit``'s), used with ``carry_shardings``.

    >>> import jax, jax.numpy as jnp, optax
    >>> from nn_jax import Dense, losses, make_train_step
    >>> model, opt = Dense(1), optax.sgd(0.1)
    >>> params, _ = model.init(jax.random.key(0), jnp.zeros((4, 2)))
    >>> step = make_train_step(model, losses.mse, opt)
    >>> flat_step, leaves, unflatten = flatten_step(step, params, opt.init(params))
    >>> batch = (jnp.ones((4, 2)), jnp.ones((4, 1)))
    >>> for _ in range(3):
    ...     leaves, loss = flat_step(leaves, batch)
    >>> params, opt_state = unflatten(leaves)
    >>> sorted(params)
    ['b', 'w']
    """
    if not callable(step):
        raise ArgumentError(f"flatten_step: step must be callable, given {type(step).__name__}")
    if not carry:
        raise ArgumentError("flatten_step: give the carry, step's first arguments, after step")
    leaves, treedef = jax.tree.flatten(carry)
    structure: Any = treedef  # jax's PyTreeDef stub lacks the methods used below
    n = len(carry)

    def flat(leaves: list[jax.Array], *args: Any, **static: Any) -> tuple[list[jax.Array], Any]:
        results = step(*structure.unflatten(leaves), *args, **static)
        if not isinstance(results, tuple) or len(results) not in (n, n + 1):
            raise ArgumentError(
                f"flatten_step: step must return its {n} carry value(s) and at most one more, "
                f"given {type(results).__name__} of length {_length(results)}"
            )
        new_leaves, new_structure = jax.tree.flatten(results[:n])
        if new_structure != structure:
            raise ArgumentError(
                "flatten_step: step returned a carry of another structure than it was given; "
                f"expected {structure}, given {new_structure}"
            )
        return new_leaves, results[n] if len(results) > n else None

    jit_options: dict[str, Any] = {"static_argnames": static_argnames}
    if carry_shardings is not None:
        full = jax.tree.broadcast(carry_shardings, carry)
        jit_options["out_shardings"] = (structure.flatten_up_to(full), out_shardings)
    return jax.jit(flat, **jit_options), leaves, structure.unflatten


def _length(value: Any) -> int | str:
    return len(value) if isinstance(value, tuple) else "-"

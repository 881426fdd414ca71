"""The workload registry: one :class:`Workload` per benchmark, one builder per framework.

A workload is an nn_jax model with its loss, optimizer and a synthetic batch (a
:class:`Reference`, built by ``setup``), plus a builder per framework that turns the reference
into that framework's idiomatic jitted training step (an :class:`Impl`). Every builder starts
from the *same* parameters (the nn_jax ones, mapped explicitly into the framework's own
structures), so all frameworks run the same computation from the same point, and the first
losses they return must agree (``tests/test_benchmarks.py`` checks it).

dtype policy: ``bfloat16`` means *pure* bfloat16 for every framework - parameters, activations,
gradients and optimizer state all in bfloat16 (no float32 master weights), so the frameworks
still compute exactly the same thing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import optax

FRAMEWORKS: tuple[str, ...] = (
    "nn_jax",
    "jax",
    "flax_linen",
    "flax_nnx",
    "flax_nnx_split",
    "equinox",
    "haiku",
    "torch",
)
"""Every framework the suite knows, in table order. ``jax`` is the hand-written floor."""

FRAMEWORK_LABELS: dict[str, str] = {
    "nn_jax": "nn_jax",
    "jax": "raw JAX",
    "flax_linen": "Flax Linen",
    "flax_nnx": "Flax NNX (nnx.jit)",
    "flax_nnx_split": "Flax NNX (split/merge + jax.jit)",
    "equinox": "Equinox",
    "haiku": "Haiku",
    "torch": "PyTorch eager",
    "jax_control": "raw JAX again (A/A control)",
}

FRAMEWORK_PACKAGES: dict[str, str] = {
    "flax_linen": "flax",
    "flax_nnx": "flax",
    "flax_nnx_split": "flax",
    "equinox": "equinox",
    "haiku": "haiku",
    "torch": "torch",
}
"""The import each optional framework needs; missing ones are skipped, not errors."""


@dataclasses.dataclass
class Reference:
    """The nn_jax side of a workload: the model and everything its training step consumes.

    Attributes:
        model: the nn_jax layer.
        params: its parameters, already cast to ``dtype`` (the starting point of every framework).
        state: its layer state (batch-norm statistics), ``{}`` for stateless models.
        batch: ``(inputs, targets)`` as JAX arrays (inputs in ``dtype``).
        loss: the nn_jax loss function ``loss(predictions, targets) -> scalar``.
        optimizer: the optax optimizer every JAX framework uses.
        dtype: ``"float32"`` or ``"bfloat16"``.
        batch_size: examples per step.
        config: workload hyper-parameters the other frameworks need (sizes, learning rate, ...).
    """

    model: Any
    params: Any
    state: Any
    batch: tuple[Any, Any]
    loss: Callable[[Any, Any], jax.Array]
    optimizer: optax.GradientTransformation
    dtype: str
    batch_size: int
    config: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Impl:
    """One framework's training step, ready to time.

    Attributes:
        step: the idiomatically jitted step. Functional steps are called as
            ``(*carry, loss) = step(*carry, batch)``; in-place steps (``inplace=True``: Flax NNX,
            PyTorch) as ``loss = step(*carry, batch)`` and update ``carry`` themselves.
        carry: the step's state arguments (params, optimizer state, ...).
        batch: the batch in the framework's array type.
        inplace: see ``step``.
        traceable: ``step`` is a ``jax.jit`` function (has ``.trace``), so its compiled program
            can be analysed (FLOPs, memory).
        sync: waits for a result to be computed (``jax.block_until_ready`` for JAX).
        to_float: reads a returned loss as a Python float.
    """

    step: Callable[..., Any]
    carry: tuple[Any, ...]
    batch: Any
    inplace: bool = False
    traceable: bool = True
    sync: Callable[[Any], Any] = jax.block_until_ready
    to_float: Callable[[Any], float] = float

    def run(self, n: int) -> Any:
        """Run ``n`` steps (threading the carry) and wait for the last; returns the last loss."""
        step, batch = self.step, self.batch
        loss = None
        if self.inplace:  # two loops: no branch inside the timed one
            carry = self.carry
            for _ in range(n):
                loss = step(*carry, batch)
        else:
            carry = self.carry
            for _ in range(n):
                *carry, loss = step(*carry, batch)
            self.carry = tuple(carry)
        self.sync(loss)
        return loss


Builder = Callable[[Reference], Impl]


@dataclasses.dataclass(frozen=True)
class Workload:
    """A registered benchmark.

    Attributes:
        name: CLI name (``--workloads``).
        description: one line for tables.
        batch_size: default examples per step.
        setup: ``setup(batch_size, dtype, key) -> Reference``.
        builders: framework name -> builder; frameworks without one are not run.
        unit: what ``items_per_step`` counts (``"examples"``, ``"tokens"``, ``"nodes"``).
        items_per_step: throughput numerator for a reference (default: its batch size).
        analytic_flops: an independent matmul/conv FLOP count of one training step for a
            reference (a cross-check of the compiler's count), or ``None``.
    """

    name: str
    description: str
    batch_size: int
    setup: Callable[[int, str, jax.Array], Reference]
    builders: Mapping[str, Builder]
    unit: str = "examples"
    items_per_step: Callable[[Reference], int] | None = None
    analytic_flops: Callable[[Reference], float] | None = None

    def items(self, ref: Reference) -> int:
        """Items (examples, tokens, nodes) processed per step."""
        return ref.batch_size if self.items_per_step is None else self.items_per_step(ref)


WORKLOADS: dict[str, Workload] = {}
"""Registered workloads by name, in registration order (filled by :mod:`nn_jax.bench.workloads`)."""

UNAVAILABLE: dict[str, str] = {}
"""Workload families that could not be loaded (family module -> reason)."""


def register(workload: Workload) -> Workload:
    """Add ``workload`` to :data:`WORKLOADS` (names must be unique)."""
    if workload.name in WORKLOADS:
        raise ValueError(f"workload {workload.name!r} is registered twice")
    unknown = set(workload.builders) - set(FRAMEWORKS)
    if unknown:
        raise ValueError(f"workload {workload.name!r}: unknown frameworks {sorted(unknown)}")
    WORKLOADS[workload.name] = workload
    return workload


__all__ = [
    "FRAMEWORKS",
    "FRAMEWORK_LABELS",
    "FRAMEWORK_PACKAGES",
    "UNAVAILABLE",
    "WORKLOADS",
    "Builder",
    "Impl",
    "Reference",
    "Workload",
    "register",
]

"""The workload registry: one :class:`Workload` per benchmark, one builder per framework.

A workload is an nn_jax model with its loss, optimizer and a synthetic batch (a
:class:`Reference`, built by ``setup``), plus a builder per framework that turns the reference
into that framework's idiomatic jitted training step (an :class:`Impl`). Every builder starts
from the *same* parameters (the nn_jax ones, mapped explicitly into the framework's own
structures), so all frameworks run the same computation from the same point, and the first
losses they return must agree (``tests/test_benchmarks.py`` checks it).

Adding a workload is a few lines in a family module (``dense``, ``conv``, ...)::

    register(Workload(
        name="mlp", description="MLP 784-512-512-10", batch_size=256,
        setup=_mlp_setup, builders={"nn_jax": nn_jax_builder, "jax": _mlp_jax, ...},
    ))

and the family module's name in ``_FAMILIES`` below. A family whose nn_jax layers are not
importable yet is listed in :data:`UNAVAILABLE` with the reason instead of breaking the suite.

dtype policy: ``bfloat16`` means *pure* bfloat16 for every framework - parameters, activations,
gradients and optimizer state all in bfloat16 (no float32 master weights), so the frameworks
still compute exactly the same thing.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
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
        if self.inplace:
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
"""Registered workloads by name, in registration order."""

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


# --------------------------------------------------------------------------------------------
# Helpers shared by the family modules.


def cast_floating(tree: Any, dtype: Any) -> Any:
    """Cast every floating-point array leaf of ``tree`` to ``dtype`` (others unchanged)."""
    return jax.tree.map(
        lambda a: a.astype(dtype) if jnp.issubdtype(jnp.result_type(a), jnp.floating) else a,
        tree,
    )


def functional_step(
    loss_fn: Callable[[Any, Any], jax.Array], optimizer: optax.GradientTransformation
) -> Callable[[Any, Any, Any], tuple[Any, Any, jax.Array]]:
    """The textbook jitted step ``(params, opt_state, batch) -> (params, opt_state, loss)``.

    What raw JAX, Flax Linen and Haiku users write: ``jax.value_and_grad`` of
    ``loss_fn(params, batch)``, then an optax update.
    """

    @jax.jit
    def step(params: Any, opt_state: Any, batch: Any) -> tuple[Any, Any, jax.Array]:
        loss, grads = jax.value_and_grad(loss_fn)(params, batch)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return step


def stateful_functional_step(
    loss_fn: Callable[[Any, Any, Any], tuple[jax.Array, Any]],
    optimizer: optax.GradientTransformation,
) -> Callable[[Any, Any, Any, Any], tuple[Any, Any, Any, jax.Array]]:
    """As :func:`functional_step` with layer state (batch-norm statistics) threaded through.

    ``loss_fn(params, state, batch) -> (loss, new_state)``; the step is
    ``(params, state, opt_state, batch) -> (params, state, opt_state, loss)``.
    """

    @jax.jit
    def step(
        params: Any, state: Any, opt_state: Any, batch: Any
    ) -> tuple[Any, Any, Any, jax.Array]:
        (loss, state), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, state, batch)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), state, opt_state, loss

    return step


def functional_impl(loss_fn: Callable[[Any, Any], jax.Array], params: Any, ref: Reference) -> Impl:
    """An :class:`Impl` of :func:`functional_step` from ``params``, the reference's optimizer."""
    return Impl(
        functional_step(loss_fn, ref.optimizer), (params, ref.optimizer.init(params)), ref.batch
    )


def nn_jax_builder(ref: Reference) -> Impl:
    """nn_jax's own step builders: ``make_train_step`` (``make_stateful_train_step`` if state)."""
    from nn_jax.train import TrainState, make_stateful_train_step, make_train_step

    if not ref.state:
        step = make_train_step(ref.model, ref.loss, ref.optimizer)
        return Impl(step, (ref.params, ref.optimizer.init(ref.params)), ref.batch)
    step = make_stateful_train_step(ref.model, ref.loss, ref.optimizer)
    ts = TrainState(
        ref.params,
        ref.state,
        ref.optimizer.init(ref.params),
        jax.random.key(0),
        jnp.zeros((), "int32"),
    )
    return Impl(step, (ts,), ref.batch)


def equinox_impl(model: Any, loss_fn: Callable[[Any, Any], jax.Array], ref: Reference) -> Impl:
    """Equinox's idiomatic step: ``eqx.filter_jit`` + ``eqx.filter_value_and_grad`` + optax."""
    import equinox as eqx

    optimizer = ref.optimizer

    @eqx.filter_jit
    def step(model: Any, opt_state: Any, batch: Any) -> tuple[Any, Any, jax.Array]:
        loss, grads = eqx.filter_value_and_grad(loss_fn)(model, batch)
        updates, opt_state = optimizer.update(grads, opt_state, eqx.filter(model, eqx.is_array))
        return eqx.apply_updates(model, updates), opt_state, loss

    opt_state = optimizer.init(eqx.filter(model, eqx.is_array))
    return Impl(step, (model, opt_state), ref.batch, traceable=False)


def nnx_jit_impl(model: Any, loss_fn: Callable[[Any, Any], jax.Array], ref: Reference) -> Impl:
    """Flax NNX's documented step: ``nnx.jit`` over ``(model, optimizer)``, updated in place."""
    from flax import nnx

    optimizer = nnx.Optimizer(model, ref.optimizer, wrt=nnx.Param)

    @nnx.jit
    def step(model: Any, optimizer: Any, batch: Any) -> jax.Array:
        loss, grads = nnx.value_and_grad(loss_fn)(model, batch)
        optimizer.update(model, grads)
        return loss

    return Impl(step, (model, optimizer), ref.batch, inplace=True, traceable=False)


def nnx_split_impl(model: Any, loss_fn: Callable[[Any, Any], jax.Array], ref: Reference) -> Impl:
    """Flax NNX's functional style: ``nnx.split`` once, ``jax.jit`` a merge-step-split function."""
    from flax import nnx

    optimizer = nnx.Optimizer(model, ref.optimizer, wrt=nnx.Param)
    graphdef, state = nnx.split((model, optimizer))

    @jax.jit
    def step(state: Any, batch: Any) -> tuple[Any, jax.Array]:
        model, optimizer = nnx.merge(graphdef, state)
        loss, grads = nnx.value_and_grad(loss_fn)(model, batch)
        optimizer.update(model, grads)
        return nnx.state((model, optimizer)), loss

    return Impl(step, (state,), ref.batch)


def torch_impl(
    model: Any,
    loss_fn: Callable[[Any, Any], Any],
    ref: Reference,
    batch: tuple[Any, Any] | None = None,
) -> Impl:
    """PyTorch eager: ``zero_grad``, forward, ``backward``, ``torch.optim.Adam.step``.

    ``model`` is a ``torch.nn.Module`` already holding the reference weights; ``batch`` (JAX
    arrays; default ``ref.batch``) is converted once. Uses ``ref.config["lr"]`` (every
    workload's optimizer is Adam).
    """
    import torch

    device = "cuda" if torch.cuda.is_available() and jax.default_backend() == "gpu" else "cpu"
    model = model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=ref.config["lr"])
    batch = tuple(to_torch(a, device) for a in (ref.batch if batch is None else batch))

    def step(model: Any, optimizer: Any, batch: Any) -> Any:
        optimizer.zero_grad(set_to_none=True)
        inputs, targets = batch
        loss = loss_fn(model(inputs), targets)
        loss.backward()
        optimizer.step()
        return loss.detach()

    def sync(_: Any) -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    return Impl(
        step,
        (model, optimizer),
        batch,
        inplace=True,
        traceable=False,
        sync=sync,
        to_float=lambda loss: float(loss.float().item()),
    )


def to_torch(a: Any, device: str = "cpu") -> Any:
    """A JAX array as a torch tensor: same float dtype (bfloat16 via float32), integers as int64."""
    import numpy as np
    import torch

    if a.dtype == jnp.bfloat16:
        return torch.from_numpy(np.array(a.astype(jnp.float32))).to(device, torch.bfloat16)
    if jnp.issubdtype(a.dtype, jnp.integer):  # class labels: torch losses want int64
        return torch.from_numpy(np.array(a, np.int64)).to(device)
    return torch.from_numpy(np.array(a)).to(device)


# --------------------------------------------------------------------------------------------
# Loading the family modules.

_FAMILIES: tuple[str, ...] = ("dense", "conv", "recurrent", "transformer", "graph")


def _load() -> None:
    for family in _FAMILIES:
        try:
            importlib.import_module(f"{__name__}.{family}")
        except ModuleNotFoundError as e:
            if not (e.name or "").startswith("nn_jax"):
                raise
            # An nn_jax module this family needs is not there yet.
            UNAVAILABLE[family] = f"needs {e.name}, which is not importable"


_load()

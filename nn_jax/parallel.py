"""Many devices on ``jax.sharding``: meshes, sharding presets, placement and sharded steps.

Everything here is JAX's own machinery. A :class:`jax.sharding.Mesh` names its device axes
``data``, ``fsdp`` and ``tensor`` (:func:`make_mesh`); the rule table
(:class:`nn_jax.rules.Rules`, or a preset below) decides each parameter's ``PartitionSpec``;
``jax.device_put`` places arrays as ``NamedSharding`` s; and the steps are ``jax.jit`` with
explicit ``in_shardings``/``out_shardings`` around the same step bodies as on one device, so
XLA's SPMD partitioner inserts the collectives (the gradient all-reduce of data parallelism,
the parameter all-gathers of FSDP, the partial-sum reductions of row-parallel layers). Model
code does not change.

The three layouts (combine them by giving the mesh several axes of size > 1):

* **data parallel** (:func:`data_parallel_rules`): params and optimizer state replicated,
  each batch split over ``data``.
* **FSDP** (:func:`fsdp_rules`): each large param, and its optimizer state, split over
  ``fsdp`` along one dimension; batches split over ``data`` x ``fsdp``.
* **tensor parallel** (:func:`tensor_parallel_rules`, Megatron): attention split over heads,
  MLP blocks column- then row-parallel, over ``tensor``.

:func:`mesh_rules` picks the layout from the mesh's axis sizes; it is what
:func:`nn_jax.train.fit` and ``nn-jax train --mesh data=2,fsdp=4`` use.

>>> import jax, jax.numpy as jnp, optax
>>> from nn_jax import Supervised, TrainState, losses
>>> from nn_jax.models import MLP
>>> mesh = make_mesh(data=1)  # 8 devices: make_mesh("data=2,fsdp=4")
>>> dict(mesh.shape)
{'data': 1, 'fsdp': 1, 'tensor': 1}
>>> model, opt = MLP((64, 8)), optax.adam(1e-3)
>>> ts = TrainState.create(model, opt, jax.random.key(0), jnp.zeros((8, 32)))
>>> rules = mesh_rules(ts.params, mesh)
>>> ts = shard_train_state(ts, mesh, rules)
>>> step = make_sharded_step(Supervised(model, losses.mse), opt, mesh, rules)
>>> ts, logs = step(ts, (jnp.ones((8, 32)), jnp.zeros((8, 8))))
>>> ts.params["dense_0"]["w"].sharding.spec
P()

A preset's decisions can be read without the devices, on an abstract mesh:

>>> from jax.sharding import AbstractMesh
>>> eight = AbstractMesh((2, 4, 1), AXES)  # the layout of make_mesh("data=2,fsdp=4")
>>> fsdp_rules(ts.params, eight).partition_specs(ts.params)["dense_0"]
{'b': P(), 'w': P(None, 'fsdp')}
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeAlias

import jax
import numpy as np
import optax
from jax.sharding import AbstractMesh, AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from nn_jax.core import Layer, Params, PRNGKey, State, describe
from nn_jax.errors import ArgumentError, ConfigError, ParamsError, ShapeError
from nn_jax.monitor import Monitor
from nn_jax.rules import Rule, Rules
from nn_jax.train import Metrics, Objective, TrainState, make_eval_step, make_step

__all__ = [
    "AXES",
    "BATCH_AXES",
    "batch_sharding",
    "data_axis_size",
    "data_parallel_rules",
    "fsdp_rules",
    "make_mesh",
    "make_sharded_eval_step",
    "make_sharded_step",
    "mesh_rules",
    "parse_mesh",
    "shard_batch",
    "shard_train_state",
    "sharded_train_state",
    "tensor_parallel_rules",
    "train_state_shardings",
]

PyTree: TypeAlias = Any
AnyMesh: TypeAlias = Mesh | AbstractMesh

AXES = ("data", "fsdp", "tensor")
"""The mesh axes :func:`make_mesh` creates, in this order."""
BATCH_AXES = ("data", "fsdp")
"""The mesh axes a batch's leading (example) axis is split over."""

MIN_SHARD_SIZE = 2**10
"""FSDP leaves params with fewer elements than this replicated (biases, norm scales): splitting
them saves little memory and costs one all-gather each."""


# --------------------------------------------------------------------------------------------
# Meshes.


def parse_mesh(spec: str) -> dict[str, int]:
    """The axis sizes of a mesh written ``"data=2,fsdp=4"`` (the ``--mesh`` form).

    Axes are ``data``, ``fsdp`` and ``tensor``, each at most once, sizes >= 1; an axis not
    written has size 1. Anything else is a ``ConfigError`` quoting the bad part.
    """
    if not isinstance(spec, str):
        raise ArgumentError(
            f"parse_mesh: expected a string such as 'data=2,fsdp=4', given {describe(spec)}"
        )
    expected = (
        f"expected comma-separated axis=size pairs over the axes {', '.join(AXES)} with sizes "
        f">= 1, e.g. 'data=2,fsdp=4'"
    )
    sizes: dict[str, int] = {}
    for part in spec.split(","):
        name, equals, value = (s.strip() for s in part.partition("="))
        if not equals or name not in AXES or not value.isdigit() or int(value) < 1:
            raise ConfigError(f"mesh {spec!r}: {expected}; given {part.strip()!r}")
        if name in sizes:
            raise ConfigError(f"mesh {spec!r}: axis {name!r} is given twice")
        sizes[name] = int(value)
    return sizes


def make_mesh(
    spec: str | None = None,
    *,
    data: int = 1,
    fsdp: int = 1,
    tensor: int = 1,
    devices: Sequence[jax.Device] | None = None,
) -> Mesh:
    """A ``(data, fsdp, tensor)`` mesh over all devices (or ``devices``), by ``jax.make_mesh``.

    Args:
        spec: the sizes as a string, ``"data=2,fsdp=4"`` (:func:`parse_mesh`), instead of the
            keywords.
        data, fsdp, tensor: the axis sizes; their product must equal the number of devices.
        devices: the devices to lay out (default ``jax.devices()``, every process's).

    The axes are ``AxisType.Auto``: shardings are given at the jit boundary (params, batches)
    and XLA's partitioner propagates them through the model, whose code knows nothing of the
    mesh. Sizes that do not multiply to the device count are a ``ConfigError`` (JAX would
    silently use the first devices only).
    """
    if spec is not None:
        if (data, fsdp, tensor) != (1, 1, 1):
            raise ConfigError("make_mesh: give the sizes as a string or as keywords, not both")
        sizes = {"data": 1, "fsdp": 1, "tensor": 1, **parse_mesh(spec)}
    else:
        sizes = {"data": data, "fsdp": fsdp, "tensor": tensor}
    for name, size in sizes.items():
        if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 1:
            raise ConfigError(f"make_mesh: {name} must be a positive int, given {describe(size)}")
    available = list(jax.devices() if devices is None else devices)
    needed = math.prod(sizes.values())
    if needed != len(available):
        shown = " x ".join(f"{name}={size}" for name, size in sizes.items())
        hint = ""
        if available and available[0].platform == "cpu":
            hint = (
                "; on CPU, simulate N devices by setting "
                "XLA_FLAGS=--xla_force_host_platform_device_count=N before JAX starts"
            )
        raise ConfigError(
            f"make_mesh: {shown} lays out {needed} devices, but {len(available)} are given "
            f"({available[0].platform if available else 'none'}); choose sizes whose product "
            f"is {len(available)}{hint}"
        )
    return jax.make_mesh(
        tuple(int(s) for s in sizes.values()),
        AXES,
        axis_types=(AxisType.Auto,) * len(AXES),
        devices=available,
    )


# --------------------------------------------------------------------------------------------
# Rule presets: functions of the params tree (arrays or jax.ShapeDtypeStructs) returning Rules.


def data_parallel_rules() -> Rules:
    """Every param replicated (its optimizer state too); only batches are split."""
    return Rules(Rule("*", sharding=P()))


def fsdp_rules(
    params: Params, mesh: AnyMesh, *, axis: str = "fsdp", min_size: int = MIN_SHARD_SIZE
) -> Rules:
    """Fully sharded data parallel: each param split over ``axis`` along one dimension.

    How the dimension is chosen, per param: among the dimensions whose size the ``axis`` size
    divides, the largest (the first of equal ones). A param with no such dimension, or fewer
    than ``min_size`` elements, is replicated. The rules are explicit, one per param path, so
    :meth:`Rules.report` shows each decision. The optimizer state follows the params
    (:meth:`Rules.opt_state_shardings`).
    """
    return _preset("fsdp_rules", params, mesh, tensor_axis=None, fsdp_axis=axis, min_size=min_size)


def tensor_parallel_rules(
    params: Params,
    mesh: AnyMesh,
    *,
    axis: str = "tensor",
    fsdp_axis: str | None = None,
    min_size: int = MIN_SHARD_SIZE,
) -> Rules:
    """Megatron tensor parallelism over ``axis``, optionally combined with FSDP.

    Recognised by parameter names (trailing dimensions, so params stacked by ``Repeat`` work):

    * attention (a dict holding ``w_q``, ``w_k``, ``w_v``, ``w_o``): split over heads,
      ``w_q/w_k/w_v`` ``(F, H, D)`` and ``b_q/b_k/b_v`` ``(H, D)`` on ``H``, ``w_o``
      ``(H, D, F_out)`` on ``H``; ``b_o`` replicated. Each device computes its heads, and the
      output projection ends in one reduction.
    * feed-forward blocks (a dict holding ``up`` and ``down``): ``up`` (and ``gate``) column-
      parallel (``w`` ``(F, H)`` and ``b`` on ``H``), ``down`` row-parallel (``w`` on its
      input dimension, ``b`` replicated).
    * MLPs (``dense_0``, ``dense_1``, ...): consecutive pairs column- then row-parallel; an
      unpaired last layer (the output layer of an odd-length MLP) is replicated.

    The head count (and the hidden width) must be a multiple of the ``axis`` size: otherwise
    :meth:`Rules.shardings` raises a ``ShardingError`` naming the param. Every other param is
    replicated, or, with ``fsdp_axis``, split over it as :func:`fsdp_rules` decides, on a
    dimension the tensor axis does not use (the 2-D layout).
    """
    return _preset(
        "tensor_parallel_rules",
        params,
        mesh,
        tensor_axis=axis,
        fsdp_axis=fsdp_axis,
        min_size=min_size,
    )


def mesh_rules(params: Params, mesh: AnyMesh, *, min_size: int = MIN_SHARD_SIZE) -> Rules:
    """The preset a mesh asks for: tensor parallel when its ``tensor`` axis is > 1, FSDP when
    its ``fsdp`` axis is > 1 (both: the 2-D layout), else data parallel."""
    sizes = dict(mesh.shape)
    tensor = "tensor" if sizes.get("tensor", 1) > 1 else None
    fsdp = "fsdp" if sizes.get("fsdp", 1) > 1 else None
    if tensor is None and fsdp is None:
        return data_parallel_rules()
    return _preset(
        "mesh_rules", params, mesh, tensor_axis=tensor, fsdp_axis=fsdp, min_size=min_size
    )


def _preset(
    where: str,
    params: Params,
    mesh: AnyMesh,
    *,
    tensor_axis: str | None,
    fsdp_axis: str | None,
    min_size: int,
) -> Rules:
    """One exact-path rule per param: the tensor axis where the layout puts it, then the
    FSDP axis on the largest remaining dimension it divides."""
    _check_mesh(where, mesh, abstract=True)
    sizes = dict(mesh.shape)
    for name in (tensor_axis, fsdp_axis):
        if name is not None and name not in sizes:
            raise ConfigError(
                f"{where}: the mesh has no axis {name!r} (its axes: {', '.join(sizes)})"
            )
    if isinstance(min_size, bool) or not isinstance(min_size, int) or min_size < 0:
        raise ConfigError(f"{where}: min_size must be an int >= 0, given {describe(min_size)}")
    tensor_dims = _tensor_dims(params) if tensor_axis is not None else {}
    rules = []
    for key_path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        path = _path(key_path)
        if not hasattr(leaf, "shape"):
            raise ParamsError(
                f"{where}: the param at {path!r} is {describe(leaf)}, expected "
                f"an array or a jax.ShapeDtypeStruct"
            )
        shape = tuple(leaf.shape)
        spec: list[str | None] = [None] * len(shape)
        dim = tensor_dims.get(path)
        if dim is not None and -len(shape) <= dim:
            spec[dim] = tensor_axis
        if fsdp_axis is not None and math.prod(shape) >= min_size:
            free = [i for i in range(len(shape)) if spec[i] is None]
            fits = [i for i in free if shape[i] % sizes[fsdp_axis] == 0]
            if fits:
                spec[max(fits, key=lambda i: (shape[i], -i))] = fsdp_axis
        while spec and spec[-1] is None:  # P("fsdp"), not P("fsdp", None): the same, shorter
            spec.pop()
        rules.append(Rule(_literal(path), sharding=P(*spec)))
    if not rules:
        raise ParamsError(f"{where}: the params tree holds no arrays, so there is nothing to shard")
    return Rules(*rules)


_ATTENTION = {"w_q": -2, "w_k": -2, "w_v": -2, "b_q": -2, "b_k": -2, "b_v": -2, "w_o": -3}
_DENSE = re.compile(r"dense_(\d+)")


def _tensor_dims(params: Params) -> dict[str, int]:
    """Param path -> the (negative) dimension the tensor axis splits, by the layout above."""
    dims: dict[str, int] = {}

    def dense(prefix: str, layer: Any, column: bool) -> None:
        if isinstance(layer, Mapping) and "w" in layer:
            dims[f"{prefix}/w"] = -1 if column else -2
            if column and "b" in layer:
                dims[f"{prefix}/b"] = -1

    def visit(node: Any, prefix: str) -> None:
        if not isinstance(node, Mapping):
            return
        join = (lambda key: f"{prefix}/{key}") if prefix else str
        if {"w_q", "w_k", "w_v", "w_o"} <= node.keys():
            dims.update({join(k): d for k, d in _ATTENTION.items() if k in node})
        if {"up", "down"} <= node.keys():
            for name in ("up", "gate"):
                dense(join(name), node.get(name), column=True)
            dense(join("down"), node["down"], column=False)
        layers = sorted((int(m[1]), k) for k in node if (m := _DENSE.fullmatch(str(k))))
        for (_, col), (_, row) in zip(layers[0::2], layers[1::2], strict=False):
            dense(join(col), node[col], column=True)
            dense(join(row), node[row], column=False)
        for key, child in node.items():
            visit(child, join(key))

    visit(params, "")
    return dims


def _literal(path: str) -> str:
    """An fnmatch pattern matching exactly ``path``."""
    return re.sub(r"([*?\[])", r"[\1]", path)


def _path(key_path: tuple[Any, ...]) -> str:
    return jax.tree_util.keystr(key_path, simple=True, separator="/")


# --------------------------------------------------------------------------------------------
# Placement.


def _check_mesh(where: str, mesh: Any, *, abstract: bool = False) -> None:
    if not isinstance(mesh, Mesh | AbstractMesh if abstract else Mesh):
        raise ArgumentError(
            f"{where}: mesh must be a jax.sharding.Mesh, e.g. nn_jax.parallel.make_mesh("
            f"'data=2,fsdp=4'), given {describe(mesh)}"
        )


def _check_rules(where: str, rules: Any) -> None:
    if rules is not None and not isinstance(rules, Rules):
        raise ArgumentError(
            f"{where}: rules must be a nn_jax.rules.Rules (or None for mesh_rules), given "
            f"{describe(rules)}"
        )


def _batch_axes(where: str, mesh: Mesh) -> tuple[str, ...]:
    axes = tuple(a for a in BATCH_AXES if a in mesh.axis_names)
    if not axes:
        raise ConfigError(
            f"{where}: the mesh's axes {mesh.axis_names} include neither 'data' nor 'fsdp', "
            f"the axes batches are split over; build it with make_mesh"
        )
    return axes


def data_axis_size(mesh: Mesh) -> int:
    """How many ways a batch's rows are split: the product of the ``data`` and ``fsdp`` axes."""
    _check_mesh("data_axis_size", mesh)
    return math.prod(mesh.shape[a] for a in _batch_axes("data_axis_size", mesh))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Split the leading (example) axis over the mesh's ``data`` and ``fsdp`` axes."""
    _check_mesh("batch_sharding", mesh)
    return NamedSharding(mesh, P(_batch_axes("batch_sharding", mesh)))


def _rows_divisible(where: str, batch: Any, mesh: Mesh, *, strict: bool) -> bool:
    """Whether the data axes divide every batch array's leading size; with ``strict`` a
    ``ShapeError`` naming both numbers where they do not."""
    axes = _batch_axes(where, mesh)
    count = data_axis_size(mesh)
    for key_path, leaf in jax.tree_util.tree_flatten_with_path(batch)[0]:
        shape = np.shape(leaf)
        name = f"batch{jax.tree_util.keystr(key_path)}"
        if not shape:
            raise ShapeError(
                f"{where}: {name} is a scalar; every batch array needs a leading "
                f"example axis to split over the mesh axes {axes}"
            )
        if shape[0] % count:
            if strict:
                raise ShapeError(
                    f"{where}: {name} has {shape[0]} rows (shape {shape}), which the mesh axes "
                    f"{' x '.join(f'{a}={mesh.shape[a]}' for a in axes)} ({count} devices) do "
                    f"not divide; use a batch size that is a multiple of {count}"
                )
            return False
    return True


def shard_batch(batch: Any, mesh: Mesh) -> Any:
    """``batch`` placed with :func:`batch_sharding` (each device gets its rows only).

    A batch array whose leading size the data axes' device count does not divide is a
    ``ShapeError`` naming both numbers.
    """
    _rows_divisible("shard_batch", batch, mesh, strict=True)
    return jax.device_put(batch, batch_sharding(mesh))


def train_state_shardings(ts: TrainState, mesh: Mesh, rules: Rules | None = None) -> TrainState:
    """The ``NamedSharding`` of every leaf of ``ts`` (arrays or ``jax.eval_shape`` output).

    Params by ``rules`` (default :func:`mesh_rules`), the optimizer state after its params
    (:meth:`Rules.opt_state_shardings`: Adam's moments split like their params, counts
    replicated); the layer state (batch-norm statistics, caches), rng and step replicated.
    """
    _check_mesh("train_state_shardings", mesh)
    _check_rules("train_state_shardings", rules)
    if not isinstance(ts, TrainState):
        raise ArgumentError(f"train_state_shardings: expected a TrainState, given {describe(ts)}")
    rules = rules or mesh_rules(ts.params, mesh)
    replicated: Any = NamedSharding(mesh, P())  # a leaf of a TrainState of shardings
    return TrainState(
        params=rules.shardings(ts.params, mesh),
        state=jax.tree.map(lambda _: replicated, ts.state),
        opt_state=rules.opt_state_shardings(ts.opt_state, ts.params, mesh),
        rng=replicated,
        step=replicated,
    )


def shard_train_state(ts: TrainState, mesh: Mesh, rules: Rules | None = None) -> TrainState:
    """``ts`` placed on ``mesh`` by :func:`train_state_shardings` (``jax.device_put``).

    The typed PRNG key travels as its raw ``key_data`` (``jax.device_put`` of a typed key onto
    devices of other processes is refused), then is wrapped again with its own implementation.
    """
    shardings = train_state_shardings(ts, mesh, rules)
    key_data = jax.device_put(jax.random.key_data(ts.rng), shardings.rng)
    rng = jax.random.wrap_key_data(key_data, impl=jax.random.key_impl(ts.rng))
    params, state, opt_state, step = jax.device_put(
        (ts.params, ts.state, ts.opt_state, ts.step),
        (shardings.params, shardings.state, shardings.opt_state, shardings.step),
    )
    return TrainState(params, state, opt_state, rng, step)


def sharded_train_state(
    model: Layer,
    optimizer: optax.GradientTransformation,
    key: PRNGKey,
    x: Any,
    mesh: Mesh,
    rules: Rules | None = None,
) -> TrainState:
    """``TrainState.create(model, optimizer, key, x)`` computed directly in its shardings.

    The init runs under ``jax.jit`` with the shardings as ``out_shardings`` (found from
    ``jax.eval_shape``), so each device materializes only its shards: an FSDP model never has
    to fit on one device.
    """
    _check_mesh("sharded_train_state", mesh)
    _check_rules("sharded_train_state", rules)

    def create(key: PRNGKey, x: Any) -> TrainState:
        return TrainState.create(model, optimizer, key, x)

    shardings = train_state_shardings(jax.eval_shape(create, key, x), mesh, rules)
    return jax.jit(create, out_shardings=shardings)(key, x)


# --------------------------------------------------------------------------------------------
# Steps.


def make_sharded_step(
    objective: Objective,
    optimizer: optax.GradientTransformation,
    mesh: Mesh,
    rules: Rules | None = None,
    *,
    monitor: Monitor | None = None,
) -> Callable[[TrainState, Any], tuple[TrainState, Metrics]]:
    """:func:`nn_jax.train.make_step`'s step, jitted with explicit shardings on ``mesh``.

    ``step(ts, batch) -> (ts, logs)``: the train state in and out in
    :func:`train_state_shardings` (``ts`` must be placed so, by :func:`shard_train_state` or
    :func:`sharded_train_state`, or be the previous step's output), the batch split by
    :func:`batch_sharding` (placed by the step; its leading size must be a multiple of the
    data axes' device count, else a ``ShapeError``), the logs replicated. The step body is
    ``make_step``'s, so the numbers are the one-device step's up to the order of reductions.
    The shardings are fixed at the first call: one step serves one train state layout.
    """
    _check_mesh("make_sharded_step", mesh)
    _check_rules("make_sharded_step", rules)
    body = make_step(objective, optimizer, monitor=monitor)
    split, replicated = batch_sharding(mesh), NamedSharding(mesh, P())
    compiled: list[Callable[[TrainState, Any], tuple[TrainState, Metrics]]] = []

    def step(ts: TrainState, batch: Any) -> tuple[TrainState, Metrics]:
        if not isinstance(ts, TrainState):
            raise ArgumentError(
                "step(ts, batch) takes the TrainState placed by shard_train_state(ts, mesh, "
                f"rules), given {describe(ts)}"
            )
        batch = shard_batch(batch, mesh)
        if not compiled:
            shardings = train_state_shardings(ts, mesh, rules)
            compiled.append(
                jax.jit(
                    body, in_shardings=(shardings, split), out_shardings=(shardings, replicated)
                )
            )
        return compiled[0](ts, batch)

    return step


def make_sharded_eval_step(
    objective: Objective, mesh: Mesh, rules: Rules | None = None
) -> Callable[[Params, State, Any], Metrics]:
    """:func:`nn_jax.train.make_eval_step`'s ``evaluate(params, state, batch)``, jitted with
    the params in their ``rules`` shardings, the layer state replicated, the batch split over
    the data axes, and the metrics replicated.

    A batch whose leading size the data axes do not divide (the short last batch of a
    validation set) is evaluated replicated: every device computes all of it. The numbers are
    the same; only that batch is not split.
    """
    _check_mesh("make_sharded_eval_step", mesh)
    _check_rules("make_sharded_eval_step", rules)
    body = make_eval_step(objective)
    split, replicated = batch_sharding(mesh), NamedSharding(mesh, P())
    compiled: dict[bool, Callable[[Params, State, Any], Metrics]] = {}

    def evaluate(params: Params, state: State, batch: Any) -> Metrics:
        divisible = _rows_divisible("evaluate", batch, mesh, strict=False)
        placed = jax.device_put(batch, split if divisible else replicated)
        if divisible not in compiled:
            in_shardings = (
                (rules or mesh_rules(params, mesh)).shardings(params, mesh),
                jax.tree.map(lambda _: replicated, state),
                split if divisible else replicated,
            )
            compiled[divisible] = jax.jit(body, in_shardings=in_shardings, out_shardings=replicated)
        return compiled[divisible](params, state, placed)

    return evaluate

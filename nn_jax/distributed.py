"""Many hosts on ``jax.distributed``: start-up, and per-host loading of global batches.

JAX runs one Python process per host ("multi-controller"). Every process runs the same
script; :func:`initialize` (over :func:`jax.distributed.initialize`) connects them through a
coordinator (process 0), after which ``jax.devices()`` lists every host's devices and a
:class:`jax.sharding.Mesh` over them spans the cluster. A jitted step on arrays sharded over
such a mesh is one program that every process runs on its own devices; XLA inserts the
cross-host collectives (NCCL on GPU, the TPU interconnect, Gloo over TCP on CPU). Nothing here
replaces that machinery: this module starts it and feeds it.

What runs where: each process reads only *its* rows of each global batch
(:func:`process_rows`, :func:`host_batches`) and hands them to
:func:`jax.make_array_from_process_local_data` (:func:`global_batch`), which places them on
its local devices as its shards of one global ``jax.Array``. The train state is created by
every process from the same key, directly in its ``NamedSharding`` s of the mesh
(:func:`nn_jax.parallel.sharded_train_state`: a jitted init, each process materializing its
own shards), then the same step runs everywhere (:func:`nn_jax.parallel.make_sharded_step`).

On each host, the user runs the same script::

    import jax, optax, nn_jax as nj
    from nn_jax import distributed, parallel
    distributed.initialize()  # SLURM, Open MPI, TPU: detected; else pass address, count, id
    mesh = parallel.make_mesh(data=jax.device_count())
    ts = parallel.sharded_train_state(model, opt, jax.random.key(0), x[:256], mesh)
    step = parallel.make_sharded_step(nj.Supervised(model, loss_fn), opt, mesh)
    for batch in distributed.host_batches((x, y), 256, mesh, key=jax.random.key(1)):
        ts, logs = step(ts, batch)

launched as ``python train.py`` under the cluster's launcher, or by hand with
``distributed.initialize("10.0.0.1:1234", num_processes=2, process_id=i)`` on host ``i``.

**The collective-hang trap on simulated CPU devices.** With several CPU devices in one process
(``XLA_FLAGS=--xla_force_host_platform_device_count=N``), jitted steps that end in an
all-reduce, dispatched back to back without waiting, can stop forever inside the all-reduce
(XLA logs ``This thread has been waiting for `all reduce RendezvousKey...` ... may be stuck``).
``benchmarks/collective_hang.py`` reproduces it; its record
(``benchmarks/results/collective_hang.json``, 90 runs on the 2-core CI machine, jax 0.10.2,
1-minute load 1 to 12 from other jobs) shows the trigger is how many steps are in flight, not
the device count: with 2, 4 and 8 devices alike, and for the all-reduce of a data-parallel
``jax.jit`` step as for an explicit ``lax.pmean`` in ``jax.shard_map``, 200 un-synchronized
steps hung in 17 of 18 runs and up to 50 in flight in 10 of 12, while 20 un-synchronized steps
(12 runs), and blocking every 25th (12), every 10th (18) or every step (18), never hung.
(``jax_cpu_enable_async_dispatch=False`` did not help in a run by hand: it applies to
single-device programs only. GPUs and TPUs were not tried.) So on a multi-device CPU mesh,
block (``jax.block_until_ready``) at least every 10 steps; nn_jax's tests block on every
step, as the two-process test of this module does.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Iterable, Iterator
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, Sharding

from nn_jax.core import PRNGKey, check_key, describe
from nn_jax.errors import ArgumentError, ConfigError, ShapeError
from nn_jax.parallel import batch_sharding

__all__ = [
    "ProcessInfo",
    "global_batch",
    "global_batches",
    "host_batches",
    "initialize",
    "process_info",
    "process_rows",
]

CPU_COLLECTIVES = ("gloo", "mpi")
"""The cross-process collective implementations of JAX's CPU backend (Gloo over TCP needs
nothing installed; MPI needs an MPI library and launcher)."""


@dataclasses.dataclass(frozen=True)
class ProcessInfo:
    """Where this process stands in the cluster: its index, the process count, its devices.

    Attributes:
        index: this process's index, ``0 .. count - 1`` (``jax.process_index()``).
        count: the number of processes (``jax.process_count()``).
        local_devices: the devices this process drives (``jax.local_devices()``).
        devices: every process's devices, the ones a mesh spans (``jax.devices()``).
        platform: ``"cpu"``, ``"gpu"`` or ``"tpu"``.
    """

    index: int
    count: int
    local_devices: tuple[jax.Device, ...]
    devices: tuple[jax.Device, ...]
    platform: str

    def __str__(self) -> str:
        return (
            f"process {self.index} of {self.count}: {len(self.local_devices)} local of "
            f"{len(self.devices)} {self.platform} devices"
        )


def process_info() -> ProcessInfo:
    """This process's :class:`ProcessInfo` (one process, all devices local, when
    :func:`initialize` was not called).

    >>> info = process_info()
    >>> (info.index, info.count, info.local_devices == info.devices)
    (0, 1, True)
    """
    devices = tuple(jax.devices())
    return ProcessInfo(
        index=jax.process_index(),
        count=jax.process_count(),
        local_devices=tuple(jax.local_devices()),
        devices=devices,
        platform=devices[0].platform,
    )


def _check_int(name: str, value: Any, low: int, high: int | None = None) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | np.integer)
        or value < low
        or (high is not None and value > high)
    ):
        expected = f"an int in {low}..{high}" if high is not None else f"an int >= {low}"
        raise ConfigError(f"initialize: {name} must be {expected}, given {describe(value)}")


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    cpu_collectives: str | None = "gloo",
    cpu_devices: int | None = None,
    **options: Any,
) -> ProcessInfo:
    """Join this process to the cluster (:func:`jax.distributed.initialize`); call it first.

    Call it once in every process, before anything touches JAX's devices (``jax.devices()``,
    a model's ``init``, a jitted call). Without arguments, JAX detects the cluster (SLURM,
    Open MPI, Cloud TPU, or ``cluster_detection_method="mpi4py"``); elsewhere give all three
    of ``coordinator_address``, ``num_processes`` and ``process_id``.

    Args:
        coordinator_address: ``"host:port"`` of process 0, where it starts the coordinator
            service; every process passes the same one (``"127.0.0.1:<port>"`` for processes
            on one machine).
        num_processes: the number of processes, ``>= 1``.
        process_id: this process's index, ``0 .. num_processes - 1``.
        cpu_collectives: the collectives of JAX's CPU backend across processes, ``"gloo"``
            (TCP, the default) or ``"mpi"``; ``None`` keeps JAX's setting
            (``jax_cpu_collectives_implementation``). Without one, a CPU computation that
            spans processes fails. Ignored on GPU and TPU.
        cpu_devices: how many CPU devices this process simulates (``jax_num_cpu_devices``,
            like ``XLA_FLAGS=--xla_force_host_platform_device_count``); ``None`` keeps JAX's.
        **options: any other keyword of :func:`jax.distributed.initialize`
            (``local_device_ids``, ``initialization_timeout``, ``heartbeat_timeout_seconds``,
            ``shutdown_timeout_seconds``, ``cluster_detection_method``, ...).

    Returns:
        This process's :class:`ProcessInfo`.

    Raises:
        ConfigError: an argument out of range, or JAX refused (called twice, called after
            the devices were used, no cluster detected and no address given); the message
            says which.
        ArgumentError: a keyword :func:`jax.distributed.initialize` does not take.
    """
    if coordinator_address is not None:
        host, colon, port = str(coordinator_address).rpartition(":")
        if not isinstance(coordinator_address, str) or not colon or not host or not port.isdigit():
            raise ConfigError(
                "initialize: coordinator_address must be 'host:port' of process 0, e.g. "
                f"'10.0.0.1:1234' or '127.0.0.1:1234', given {describe(coordinator_address)}"
            )
    if num_processes is not None:
        _check_int("num_processes", num_processes, 1)
    if process_id is not None:
        high = None if num_processes is None else int(num_processes) - 1
        _check_int("process_id", process_id, 0, high)
    if cpu_collectives is not None and cpu_collectives not in CPU_COLLECTIVES:
        raise ConfigError(
            f"initialize: cpu_collectives must be one of {CPU_COLLECTIVES} or None, given "
            f"{describe(cpu_collectives)}"
        )
    if cpu_devices is not None:
        _check_int("cpu_devices", cpu_devices, 1)
    allowed = set(inspect.signature(jax.distributed.initialize).parameters)
    allowed -= {"coordinator_address", "num_processes", "process_id"}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ArgumentError(
            f"initialize: jax.distributed.initialize takes no keyword {unknown[0]!r}; its "
            f"other keywords are {sorted(allowed)}"
        )
    try:
        jax.distributed.initialize(coordinator_address, num_processes, process_id, **options)
    except (RuntimeError, ValueError) as err:
        raise ConfigError(
            f"initialize: jax.distributed.initialize refused: {err}. Call "
            "nn_jax.distributed.initialize once per process, first thing in the script; "
            "outside SLURM, Open MPI or TPU give coordinator_address, num_processes and "
            "process_id"
        ) from err
    # The CPU backend is created at the first use of the devices (below), after the
    # distributed client exists; these settings must be in place by then.
    if cpu_collectives is not None:
        jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
    if cpu_devices is not None:
        jax.config.update("jax_num_cpu_devices", int(cpu_devices))
    return process_info()


# --------------------------------------------------------------------------------------------
# Per-host data.


def _sharding(where: str, sharding: Any) -> Sharding:
    """The batch ``Sharding``: as given, or a mesh's :func:`nn_jax.parallel.batch_sharding`."""
    if isinstance(sharding, Mesh):
        return batch_sharding(sharding)
    if not isinstance(sharding, Sharding):
        raise ArgumentError(
            f"{where}: sharding must be a jax.sharding.Sharding such as NamedSharding(mesh, "
            f"P('data')), or a Mesh (its batch_sharding), given {describe(sharding)}"
        )
    return sharding


def process_rows(batch_size: int, sharding: Sharding | Mesh) -> np.ndarray:
    """The rows of a ``batch_size``-row global batch that this process supplies, ascending.

    They are the rows that ``sharding`` places on this process's devices (read from
    ``sharding.addressable_devices_indices_map``): with a mesh laid out process by process,
    process ``i`` of ``n`` gets the contiguous block ``i * batch_size // n`` onwards. Where
    processes replicate the batch (a mesh axis across hosts that does not split it), they
    get the same rows.

    Args:
        batch_size: the global batch's row count; the sharding's row shards must divide it.
        sharding: how the batch's leading axis is split (``NamedSharding(mesh, P("data"))``),
            or a mesh (:func:`nn_jax.parallel.batch_sharding`).

    Returns:
        An int array of row indices in ``0 .. batch_size - 1``.

    >>> import jax
    >>> process_rows(4, jax.make_mesh((1,), ("data",)))
    array([0, 1, 2, 3])
    """
    sharding = _sharding("process_rows", sharding)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer):
        raise ConfigError(f"process_rows: batch_size must be an int, given {describe(batch_size)}")
    try:
        indices = sharding.addressable_devices_indices_map((int(batch_size),))
    except ValueError:  # jax's IndivisibleError
        shards = _row_shards(sharding, local=False)
        raise ShapeError(
            f"process_rows: a global batch of {batch_size} rows does not split into the "
            f"{shards} row shards of {sharding}; use a multiple of {shards}"
        ) from None
    rows: set[int] = set()
    for index in indices.values():
        if index is not None:  # None: a device that holds no part of the array
            rows.update(range(*index[0].indices(int(batch_size))))
    return np.array(sorted(rows), dtype=np.int64)


def _row_shards(sharding: Sharding, *, local: bool) -> int:
    """Into how many row blocks ``sharding`` cuts a leading axis (on this process's devices
    with ``local``): the distinct slices it gives a probe of ``num_devices`` rows."""
    size = sharding.num_devices
    probe = (
        sharding.addressable_devices_indices_map((size,))
        if local
        else sharding.devices_indices_map((size,))
    )
    return len({index[0].indices(size) for index in probe.values() if index is not None})


def _leading_rows(where: str, name: str, data: Any) -> int:
    """The common leading size of ``data``'s leaves (``ShapeError`` if none or unequal)."""
    leaves = jax.tree_util.tree_flatten_with_path(data)[0]
    if not leaves:
        raise ArgumentError(f"{where}: {name} must hold arrays, given {describe(data)}")
    sizes = {}
    for key_path, leaf in leaves:
        shape = tuple(getattr(leaf, "shape", None) or np.shape(leaf))
        if not shape:
            raise ShapeError(
                f"{where}: {name}{jax.tree_util.keystr(key_path)} is a scalar "
                f"({describe(leaf)}); every array needs a leading example axis"
            )
        sizes[jax.tree_util.keystr(key_path)] = shape[0]
    if len(set(sizes.values())) > 1:
        raise ShapeError(f"{where}: the arrays of {name} must share their leading size, given "
                         f"{ {f'{name}{k}': n for k, n in sizes.items()} }")  # fmt: skip
    return next(iter(sizes.values()))


def global_batch(local_batch: Any, sharding: Sharding | Mesh) -> Any:
    """One global batch from this process's part: every process calls it with its rows.

    Each leaf goes through :func:`jax.make_array_from_process_local_data`: this process's rows
    (:func:`process_rows`, in that order) land on its devices as its shards of a global
    ``jax.Array`` whose leading size is the sum over processes. With one process it is
    ``jax.device_put(local_batch, sharding)``.

    Args:
        local_batch: a pytree of arrays (NumPy or JAX) sharing their leading size, this
            process's rows of the batch, e.g. ``(x_rows, y_rows)``.
        sharding: how the global batch's leading axis is split, or a mesh
            (:func:`nn_jax.parallel.batch_sharding`).

    Returns:
        The same pytree of global ``jax.Array`` s.

    Raises:
        ShapeError: a leaf without a leading axis, leaves of unequal leading size, or a row
            count this process's row blocks do not divide (the leaf path is named).
    """
    sharding = _sharding("global_batch", sharding)
    rows = _leading_rows("global_batch", "local_batch", local_batch)

    blocks = _row_shards(sharding, local=True)
    if rows % blocks:
        name = jax.tree_util.keystr(jax.tree_util.tree_flatten_with_path(local_batch)[0][0][0])
        raise ShapeError(
            f"global_batch: local_batch{name} has {rows} rows on process "
            f"{jax.process_index()}, but this process holds {blocks} row blocks of {sharding}; "
            f"give it a multiple of {blocks} rows (process_rows tells which)"
        )
    return jax.tree.map(
        lambda leaf: jax.make_array_from_process_local_data(sharding, np.asarray(leaf)),
        local_batch,
    )


def global_batches(local_batches: Iterable[Any], sharding: Sharding | Mesh) -> Iterator[Any]:
    """:func:`global_batch` of each batch of a per-host iterable (your own reader of this
    host's files): every process must yield the same number of batches, each with the same
    row count, or the processes wait on each other forever in the step's collectives."""
    sharding = _sharding("global_batches", sharding)
    try:
        iterator = iter(local_batches)
    except TypeError:
        raise ArgumentError(
            f"global_batches: expected an iterable of batches, given {describe(local_batches)}"
        ) from None
    return (global_batch(batch, sharding) for batch in iterator)


def host_batches(
    data: Any,
    batch_size: int,
    sharding: Sharding | Mesh,
    *,
    key: PRNGKey | None = None,
) -> Iterator[Any]:
    """One epoch of global batches of ``data``, each process reading only its rows.

    The global batches are those :func:`nn_jax.data.batches` gives in one process
    (``batches(data, batch_size, key=key)``: shuffled by ``key``, the short last batch
    dropped), so training on many hosts matches training on one. Process ``p`` reads, of
    each, only the rows :func:`process_rows` gives it (``data[leaf][indices]``, so an
    ``np.memmap`` reads just those rows from disk), and :func:`global_batch` assembles them.
    Every process passes the same ``data`` length, ``batch_size`` and ``key``.

    Args:
        data: a pytree of arrays sharing their leading (example) axis: NumPy arrays,
            ``np.memmap`` s, or anything indexable by an int array that has a ``shape``.
        batch_size: rows per global batch, ``1 .. N``; the sharding's row shards divide it.
        sharding: how each batch's leading axis is split, or a mesh
            (:func:`nn_jax.parallel.batch_sharding`).
        key: shuffles the examples (the same permutation on every process); ``None`` keeps
            their order.

    Returns:
        An iterator of ``N // batch_size`` batches with ``data``'s structure, each leaf a
        global ``jax.Array`` of ``batch_size`` rows.

    >>> import jax, numpy as np
    >>> mesh = jax.make_mesh((1,), ("data",))
    >>> x = np.arange(10.0).reshape(5, 2)
    >>> [b.shape for b in host_batches(x, 2, mesh)]
    [(2, 2), (2, 2)]
    """
    sharding = _sharding("host_batches", sharding)
    n = _leading_rows("host_batches", "data", data)
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, int | np.integer)
        or not 1 <= batch_size <= n
    ):
        raise ConfigError(
            f"host_batches: batch_size must be an int in 1..{n} (the number of examples), "
            f"given {describe(batch_size)}"
        )
    check_key(key, "host_batches", optional=True)
    rows = process_rows(int(batch_size), sharding)
    return _host_batches(data, n, int(batch_size), rows, sharding, key)


def _host_batches(
    data: Any, n: int, batch_size: int, rows: np.ndarray, sharding: Sharding, key: Any
) -> Iterator[Any]:
    order = np.asarray(jax.random.permutation(key, n)) if key is not None else np.arange(n)
    for start in range(0, n - n % batch_size, batch_size):
        indices = order[start : start + batch_size][rows]
        yield global_batch(jax.tree.map(lambda a, i=indices: np.asarray(a[i]), data), sharding)

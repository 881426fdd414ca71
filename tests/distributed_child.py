"""One of the two processes of ``tests/test_distributed.py``: ``python distributed_child.py
PROCESS_ID PORT``.

Joins a 2-process cluster on ``127.0.0.1:PORT`` (Gloo CPU collectives, 2 simulated CPU
devices per process, so a 4-device ``data`` mesh), trains 3 data-parallel steps of a small MLP
on the global batches of :func:`nn_jax.distributed.host_batches` with
:func:`nn_jax.parallel.make_sharded_step` (blocking on each step), and prints one JSON line:
what ``process_info`` says, which data rows this process read, each global batch as gathered
from both processes, the losses, the final params, and the errors raised on bad batches.
"""

from __future__ import annotations

import json
import sys

import numpy as np

from nn_jax import distributed

DATA_ROWS, BATCH, FEATURES, OUTPUTS = 24, 8, 5, 3


class RecordingArray:
    """An array that records which rows are read from it (``a[indices]``)."""

    def __init__(self, array: np.ndarray) -> None:
        self.array, self.shape, self.read = array, array.shape, []

    def __getitem__(self, indices: np.ndarray) -> np.ndarray:
        self.read.extend(int(i) for i in np.asarray(indices).ravel())
        return self.array[indices]


def data() -> tuple[np.ndarray, np.ndarray]:
    """The data set every process (and the test's one-process reference) uses."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(DATA_ROWS, FEATURES)).astype(np.float32)
    y = rng.normal(size=(DATA_ROWS, OUTPUTS)).astype(np.float32)
    return x, y


def main(process_id: int, port: int) -> None:
    info = distributed.initialize(
        f"127.0.0.1:{port}",
        num_processes=2,
        process_id=process_id,
        cpu_devices=2,
        initialization_timeout=60,
        shutdown_timeout_seconds=30,
    )
    import jax
    import optax
    from jax.experimental import multihost_utils

    from nn_jax import Supervised, losses, parallel
    from nn_jax.models import MLP

    x, y = data()
    recorded = (RecordingArray(x), RecordingArray(y))
    model, opt = MLP((8, OUTPUTS)), optax.adam(1e-2)
    mesh = parallel.make_mesh(data=4)
    ts = parallel.sharded_train_state(model, opt, jax.random.key(0), x[:BATCH], mesh)
    step = parallel.make_sharded_step(Supervised(model, losses.mse), opt, mesh)

    batches, losses_seen = [], []
    for batch in distributed.host_batches(recorded, BATCH, mesh, key=jax.random.key(1)):
        gathered = multihost_utils.process_allgather(batch, tiled=True)
        batches.append([np.asarray(a).tolist() for a in gathered])
        ts, logs = step(ts, batch)
        jax.block_until_ready(ts)  # the collective-hang trap: never queue steps unsynced
        losses_seen.append(float(logs["loss"]))

    errors = {}
    for name, bad in {
        "rows_indivisible": lambda: distributed.process_rows(6, mesh),
        "local_rows_indivisible": lambda: distributed.global_batch({"x": x[:3], "y": y[:3]}, mesh),
    }.items():
        try:
            bad()
        except Exception as err:
            errors[name] = f"{type(err).__name__}: {err}"

    params = jax.tree.map(lambda a: np.asarray(a.addressable_data(0)).tolist(), ts.params)
    print(
        json.dumps(
            {
                "index": info.index,
                "count": info.count,
                "local_devices": len(info.local_devices),
                "devices": len(info.devices),
                "platform": info.platform,
                "process_rows": distributed.process_rows(BATCH, mesh).tolist(),
                "rows_read": [r.read for r in recorded],
                "batches": batches,
                "losses": losses_seen,
                "params": params,
                "params_sharding": str(ts.params["dense_0"]["w"].sharding.spec),
                "errors": errors,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))

"""nn_jax.distributed: two processes on jax.distributed train like one; per-host batches.

The two-process test starts ``tests/distributed_child.py`` twice (loopback coordinator, Gloo
CPU collectives, 2 simulated CPU devices each) and compares what they print with one process
training on the same batches from :func:`nn_jax.data.batches` here, on one device.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nn_jax import Supervised, TrainState, distributed, losses, make_step
from nn_jax.data import batches
from nn_jax.errors import ArgumentError, ConfigError, ShapeError
from nn_jax.models import MLP
from tests.distributed_child import BATCH, OUTPUTS, data

CHILD = Path(__file__).with_name("distributed_child.py")
TIMEOUT = 240


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def children() -> list[dict]:
    """Both processes' JSON reports (index order). Each child runs in its own process group;
    a group still alive when the pair is done (one failed, or TIMEOUT seconds passed) is
    killed, so no process outlives the test."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(JAX_PLATFORMS="cpu", PYTHONPATH=str(CHILD.parent.parent))
    port = _free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, str(CHILD), str(i), str(port)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its own process group, killed as one
        )
        for i in range(2)
    ]
    outputs, deadline = [], time.monotonic() + TIMEOUT
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            assert proc.returncode == 0, f"child failed ({proc.returncode}):\n{err[-4000:]}"
            outputs.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()
    return outputs


@pytest.fixture(scope="module")
def reference() -> dict:
    """One process, one device: the same model, optimizer and batches, trained with
    ``make_step`` on ``nn_jax.data.batches`` (the one-host loader)."""
    x, y = data()
    model, opt = MLP((8, OUTPUTS)), optax.adam(1e-2)
    ts = TrainState.create(model, opt, jax.random.key(0), x[:BATCH])
    step = make_step(Supervised(model, losses.mse), opt)
    seen, losses_seen = [], []
    for batch in batches((x, y), BATCH, key=jax.random.key(1)):
        seen.append(batch)
        ts, logs = step(ts, batch)
        losses_seen.append(float(logs["loss"]))
    return {"batches": seen, "losses": losses_seen, "params": ts.params}


def test_two_processes_see_the_cluster(children):
    for i, child in enumerate(children):
        assert (child["index"], child["count"]) == (i, 2)
        assert (child["local_devices"], child["devices"], child["platform"]) == (2, 4, "cpu")
        # A mesh laid out process by process: process i supplies rows 4i..4i+3 of each batch.
        assert child["process_rows"] == list(range(4 * i, 4 * i + 4))


def test_each_process_reads_only_its_rows_and_the_global_batches_are_one_process_s(
    children, reference
):
    order = np.asarray(jax.random.permutation(jax.random.key(1), 24))
    for i, child in enumerate(children):
        expected = np.concatenate([order[b * 8 + 4 * i : b * 8 + 4 * i + 4] for b in range(3)])
        for leaf_rows in child["rows_read"]:  # x and y: the same 12 of the 24 examples
            np.testing.assert_array_equal(leaf_rows, expected)
    assert not set(children[0]["rows_read"][0]) & set(children[1]["rows_read"][0])
    for child in children:
        assert len(child["batches"]) == len(reference["batches"]) == 3
        for got, want in zip(child["batches"], reference["batches"], strict=True):
            for a, b in zip(got, want, strict=True):
                np.testing.assert_array_equal(np.asarray(a, np.float32), b)


def test_data_parallel_steps_on_two_processes_match_one_process(children, reference):
    want_params = jax.tree.map(np.asarray, reference["params"])
    for child in children:
        assert child["params_sharding"] == "P()"  # data parallel: params replicated
        np.testing.assert_allclose(child["losses"], reference["losses"], rtol=1e-5)
        got = jax.tree.map(np.asarray, child["params"], is_leaf=lambda v: isinstance(v, list))
        assert jax.tree.structure(got) == jax.tree.structure(want_params)
        for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want_params), strict=True):
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
    # The training moved the params (a step that did nothing would match nothing above).
    first = TrainState.create(MLP((8, OUTPUTS)), optax.adam(1e-2), jax.random.key(0), data()[0])
    assert not np.allclose(want_params["dense_0"]["w"], first.params["dense_0"]["w"], atol=1e-3)


def test_bad_batches_on_the_cluster_raise_shape_errors_naming_the_leaf(children):
    errors = children[0]["errors"]
    assert errors["rows_indivisible"].startswith("ShapeError: process_rows: a global batch of 6")
    assert "use a multiple of 4" in errors["rows_indivisible"]
    assert errors["local_rows_indivisible"].startswith(
        "ShapeError: global_batch: local_batch['x'] has 3 rows on process 0"
    )
    assert "multiple of 2 rows" in errors["local_rows_indivisible"]


# --------------------------------------------------------------------------------------------
# One process (this one): the loader equals nn_jax.data.batches; bad arguments.


def test_host_batches_on_one_process_are_data_batches():
    mesh = jax.make_mesh((1,), ("data",))
    x = np.arange(30.0, dtype=np.float32).reshape(10, 3)
    y = np.arange(10)
    got = list(distributed.host_batches({"x": x, "y": y}, 4, mesh, key=jax.random.key(3)))
    want = list(batches({"x": x, "y": y}, 4, key=jax.random.key(3)))
    assert len(got) == len(want) == 2
    for g, w in zip(got, want, strict=True):
        assert isinstance(g["x"], jax.Array)
        np.testing.assert_array_equal(g["x"], w["x"])
        np.testing.assert_array_equal(g["y"], w["y"])
    assert distributed.process_rows(4, mesh).tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"coordinator_address": "localhost"}, ConfigError, "must be 'host:port' of process 0"),
        ({"coordinator_address": "a:1", "num_processes": 0}, ConfigError,
         "num_processes must be an int >= 1, given 0"),
        ({"num_processes": 2, "process_id": 2}, ConfigError,
         "process_id must be an int in 0..1, given 2"),
        ({"cpu_collectives": "nccl"}, ConfigError, "cpu_collectives must be one of ('gloo', "),
        ({"cpu_devices": 0}, ConfigError, "cpu_devices must be an int >= 1, given 0"),
        ({"local_devices": 2}, ArgumentError, "takes no keyword 'local_devices'"),
    ],
)  # fmt: skip
def test_initialize_rejects_bad_arguments_before_calling_jax(kwargs, error, message):
    with pytest.raises(error) as info:
        distributed.initialize(**kwargs)
    assert message in str(info.value)


def test_initialize_after_the_devices_are_in_use_says_to_call_it_first():
    jax.devices()  # this process's backend is up: JAX refuses at once, before connecting
    with pytest.raises(ConfigError, match=r"refused: .*must be called before") as info:
        distributed.initialize("127.0.0.1:1", num_processes=2, process_id=1)
    assert "first thing in the script" in str(info.value)


def test_batch_helpers_reject_bad_input_by_name():
    mesh = jax.make_mesh((1,), ("data",))
    with pytest.raises(ArgumentError, match=r"sharding must be a jax\.sharding\.Sharding"):
        distributed.global_batch(np.zeros((2, 1)), "data")
    with pytest.raises(ShapeError, match=r"local_batch\['t'\] is a scalar"):
        distributed.global_batch({"x": np.zeros((2, 1)), "t": np.float32(1)}, mesh)
    with pytest.raises(ShapeError, match="must share their leading size"):
        distributed.global_batch((np.zeros((2, 1)), jnp.zeros((3,))), mesh)
    with pytest.raises(ConfigError, match=r"batch_size must be an int in 1..5 .* given 6"):
        distributed.host_batches(np.zeros((5, 2)), 6, mesh)
    with pytest.raises(ArgumentError, match="expected an iterable of batches"):
        distributed.global_batches(3, mesh)

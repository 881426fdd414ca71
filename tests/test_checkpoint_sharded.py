"""Sharded checkpoints: save on one mesh, restore into another mesh's shardings or one device.

The 8-device acceptance test runs ``checkpoint_sharded_child.py`` in a subprocess with its own
``XLA_FLAGS`` and checks what it prints; the single-device tests run here.
"""

import functools
import json
import math
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding, SingleDeviceSharding
from jax.sharding import PartitionSpec as P

from nn_jax import Dense, Sequential, TrainState
from nn_jax.checkpoint import Checkpointer, abstract_target
from nn_jax.errors import ArgumentError, ShapeError

CHILD = Path(__file__).with_name("checkpoint_sharded_child.py")
MODEL = Sequential(Dense(4), Dense(2))
OPT = optax.adamw(1e-2, weight_decay=0.1)
CREATE = functools.partial(TrainState.create, MODEL, OPT)
X = jax.ShapeDtypeStruct((2, 3), jnp.float32)


@pytest.fixture(scope="module")
def child(tmp_path_factory):
    """The facts the 8-device child prints (one run for every test that reads them)."""
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
        "JAX_PLATFORMS": "cpu",
    }
    directory = tmp_path_factory.mktemp("sharded") / "run"
    proc = subprocess.run(
        [sys.executable, str(CHILD), str(directory)],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_save_on_data8_writes_sharded_arrays(child):
    # FSDP-style on (data=8): leading dimensions 8 and 16 split 8 ways, (3,) and scalars whole.
    expected = {"['0']['w']": [1, 16], "['0']['b']": [2], "['1']['scale']": [2]}
    expected |= {"['1']['b']": [2], "['2']['w']": [2, 3], "['2']['b']": [3]}
    for prefix in (".params", ".opt_state[0].mu", ".opt_state[0].nu"):
        for name, shard in expected.items():
            assert child["saved_shards"][prefix + name] == [shard]
    assert child["saved_shards"][".state['1']['mean']"] == [[2]]
    assert child["saved_shards"][".step"] == [[]]
    assert child["meta"] == {"mesh": "data=8"}


@pytest.mark.parametrize("where", ["mesh2x4", "one_device"])
def test_restore_lands_in_the_target_sharding_with_identical_values(child, where):
    facts = child[where]
    assert len(facts) == 23  # params 6, state 2, adamw count + mu 6 + nu 6, rng, step
    for path, fact in facts.items():
        assert fact["equal"] and fact["dtype_equal"], path
        assert fact["equivalent"], path  # leaf.sharding.is_equivalent_to(target, ndim)
        assert fact["shard_shapes"] == [fact["expected_shard_shape"]], path
        assert fact["devices"] == (8 if where == "mesh2x4" else 1), path
    assert child["rng_impl"] == "threefry2x32"
    assert child["opt_state_type"] == "ScaleByAdamState"
    if where == "mesh2x4":  # spot checks of the expected shard shapes, by hand
        assert facts[".params['0']['w']"]["shard_shapes"] == [[2, 8]]  # (8, 16) by (fsdp, data)
        assert facts[".opt_state[0].nu['2']['w']"]["shard_shapes"] == [[4, 3]]  # (16, 3)
        assert facts[".state['1']['var']"]["shard_shapes"] == [[2]]  # (16,) over both axes


def test_restore_reads_each_shard_once_never_a_whole_sharded_array(child):
    """What orbax read into host memory during the (data=2, fsdp=4) restore: for each leaf,
    one buffer per distinct shard, of the shard's shape, so every element once in total."""
    expected = Counter()
    for path, (shape, _) in child["leaf_sizes"].items():
        shard = child["mesh2x4"][path]["expected_shard_shape"]
        expected[tuple(shard)] += math.prod(shape) // math.prod(shard)
    reads = child["reads_2x4"]
    assert Counter(tuple(shape) for shape, _ in reads) == expected
    assert sum(n for _, n in reads) == sum(n for _, n in child["leaf_sizes"].values())
    sharded_full_shapes = {(8, 16), (16, 3), (16,)}
    assert not sharded_full_shapes & {tuple(shape) for shape, _ in reads}


def test_bad_targets_are_named_before_anything_is_read(child):
    kind, message = child["errors"]["no_sharding"]
    assert kind == "ArgumentError"
    assert "a ShapeDtypeStruct in the target needs a sharding" in message
    assert "step has none" in message
    kind, message = child["errors"]["indivisible"]
    assert kind == "ShapeError"
    assert (
        "params/2/b: shape (3,), spec P('fsdp',): dimension 0 has size 3, which mesh axes "
        "('fsdp',) (4 ways) do not divide"
    ) in message
    kind, message = child["errors"]["abstract_indivisible"]
    assert kind == "ShapeError" and message.count("\n") == 1  # only 2/b: 4 divides 8 and 16
    assert "2/b: shape (3,), spec P('fsdp',): dimension 0 has size 3" in message


def test_abstract_target_restores_on_one_device_with_the_key_impl(tmp_path):
    """A target built with eval_shape (nothing allocated), a prefix tree of shardings, and a
    non-default PRNG implementation, which only the abstract target can tell the restore."""
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    ts = CREATE(jax.random.key(0, impl="rbg"), x)
    ts = ts._replace(params=jax.tree.map(lambda a: a + 1.0, ts.params), step=jnp.asarray(5))
    reference = jax.tree.map(np.asarray, ts._replace(rng=jax.random.key_data(ts.rng)))
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(ts)
        abstract = jax.eval_shape(CREATE, jax.random.key(1, impl="rbg"), X)
        one = SingleDeviceSharding(jax.devices()[0])
        target = abstract_target(abstract, TrainState(one, one, one, one, one))
        assert all(isinstance(a, jax.ShapeDtypeStruct) for a in jax.tree.leaves(target))
        restored, _ = ckpt.restore(target)
    assert str(jax.random.key_impl(restored.rng)) == "rbg"
    got = restored._replace(rng=jax.random.key_data(restored.rng))
    assert jax.tree.structure(got) == jax.tree.structure(reference)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(reference), strict=True):
        assert isinstance(a, jax.Array) and a.sharding == one
        assert a.dtype == b.dtype and np.array_equal(np.asarray(a), b)


def test_abstract_target_argument_errors():
    abstract = jax.eval_shape(CREATE, jax.random.key(0), X)
    one = SingleDeviceSharding(jax.devices()[0])
    with pytest.raises(
        ArgumentError,
        match=re.escape("shardings at '0' must be a jax.sharding.Sharding, given P(); put a ")
        + ".*NamedSharding",
    ):
        abstract_target(abstract.params, {"0": P(), "1": one})
    with pytest.raises(ArgumentError, match="prefix of the tree's"):
        abstract_target(abstract.params, {"0": one})
    with pytest.raises(
        ArgumentError, match=r"shardings must be a jax\.sharding\.Sharding, given None"
    ):
        abstract_target(abstract.params, None)
    mesh = jax.make_mesh((1,), ("data",))
    too_long = NamedSharding(mesh, P(None, None, "data"))  # full paths, from a prefix tree:
    with pytest.raises(ShapeError, match=r"\n  params/0/w: .* rank at least 3"):
        abstract_target(abstract, TrainState(too_long, one, one, one, one))
    # jax.eval_shape of a sharded function gives shardings over an abstract mesh: not usable.
    sds = jax.ShapeDtypeStruct((4,), jnp.float32, sharding=NamedSharding(mesh, P("data")))
    abstract_mesh = jax.eval_shape(lambda a: a * 2, sds).sharding
    with pytest.raises(ShapeError, match=r"b: its sharding .* is over an abstract mesh"):
        abstract_target({"b": sds}, abstract_mesh)

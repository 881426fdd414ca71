"""Sharding on ``jax.sharding``: meshes, rule presets, sharded steps and ``fit`` on a mesh.

The multi-device checks run in ONE child process with 8 simulated CPU devices
(``tests/parallel_child.py``; ``XLA_FLAGS`` set for the child only, a timeout so that a hang
cannot stall CI); the tests here assert on the JSON it prints. The reference for every sharded
number is the same computation on one device (``make_step``, ``make_eval_step``, ``fit``), and
the expected per-device shard shapes are derived by hand from the layouts' definitions. The
preset decisions and the errors are checked in this process on abstract meshes (no devices
needed) against hand-written specs.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import AbstractMesh
from jax.sharding import PartitionSpec as P

from nn_jax import Supervised, fit, losses
from nn_jax.errors import ArgumentError, ConfigError, ShardingError
from nn_jax.models import MLP, TransformerLM
from nn_jax.parallel import (
    AXES,
    data_parallel_rules,
    fsdp_rules,
    make_mesh,
    make_sharded_step,
    mesh_rules,
    parse_mesh,
    tensor_parallel_rules,
)

CHILD = Path(__file__).with_name("parallel_child.py")


@pytest.fixture(scope="module")
def child():
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
        "JAX_PLATFORMS": "cpu",
    }
    done = subprocess.run(
        [sys.executable, str(CHILD)], capture_output=True, text=True, timeout=480, env=env
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.splitlines()[-1])


# --------------------------------------------------------------------------------------------
# 8 devices: the same numbers as one device, and really sharded.

LAYOUTS = [
    "mlp/data",
    "mlp/fsdp",
    "mlp/tensor",
    "mlp/fsdp_tensor",
    "transformer/data",
    "transformer/fsdp",
    "transformer/tensor",
]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_five_sharded_steps_equal_five_steps_on_one_device(child, layout):
    got = child[layout]
    np.testing.assert_allclose(got["losses"], got["reference_losses"], rtol=1e-6, atol=1e-6)
    assert got["losses"][0] == pytest.approx(got["initial_loss"], rel=1e-6)
    assert got["params_diff"] < 1e-6 and got["momentum_diff"] < 1e-6
    assert got["params_moved"] > 1e-2  # ... after steps that changed them
    assert got["replicated"] == ["P()", "P()"]  # step, rng


# Per-device shard shapes, from the layouts' definitions. MLP((64, 32, 10)) on 24 features:
# dense_0/w (24, 64), dense_1/w (64, 32), dense_2/w (32, 10) (320 elements: below FSDP's
# 1024-element threshold, and the unpaired output layer under tensor parallelism).
MLP_SHARDS = {
    "mlp/data": {"dense_0/w": [24, 64], "dense_0/b": [64], "dense_1/w": [64, 32]},
    # fsdp=4 on each weight's largest dimension; biases (< 1024 elements) whole
    "mlp/fsdp": {"dense_0/w": [24, 16], "dense_0/b": [64], "dense_1/w": [16, 32]},
    # tensor=4: dense_0 column-parallel (w, b on outputs), dense_1 row-parallel (w on inputs)
    "mlp/tensor": {
        "dense_0/w": [24, 16],
        "dense_0/b": [16],
        "dense_1/w": [16, 32],
        "dense_1/b": [32],
        "dense_2/w": [32, 10],
    },
    # tensor=2 as above, fsdp=2 on the other dimension
    "mlp/fsdp_tensor": {
        "dense_0/w": [12, 32],
        "dense_0/b": [32],
        "dense_1/w": [32, 16],
        "dense_2/w": [32, 10],
    },
}
# TransformerLM(32, d_model=32, num_heads=4): w_q (32, 4, 8), w_o (4, 8, 32), b_q (4, 8),
# mlp/up/w (32, 128), mlp/down/w (128, 32), embedding/table (32, 32).
BLOCK = "block_0/attention"
TRANSFORMER_SHARDS = {
    "transformer/data": {f"{BLOCK}/w_q": [32, 4, 8], "embedding/table": [32, 32]},
    "transformer/fsdp": {  # fsdp=4 on the largest dimension (the first of equal ones)
        f"{BLOCK}/w_q": [8, 4, 8],
        f"{BLOCK}/w_o": [4, 8, 8],
        f"{BLOCK}/b_q": [4, 8],
        "block_0/mlp/up/w": [32, 32],
        "block_0/mlp/down/w": [32, 32],
        "embedding/table": [8, 32],
    },
    "transformer/tensor": {  # tensor=4: one head per device, MLP column then row
        f"{BLOCK}/w_q": [32, 1, 8],
        f"{BLOCK}/w_k": [32, 1, 8],
        f"{BLOCK}/w_v": [32, 1, 8],
        f"{BLOCK}/b_q": [1, 8],
        f"{BLOCK}/w_o": [1, 8, 32],
        f"{BLOCK}/b_o": [32],
        "block_0/mlp/up/w": [32, 32],
        "block_0/mlp/up/b": [32],
        "block_0/mlp/down/w": [32, 32],
        "block_0/mlp/down/b": [32],
        "embedding/table": [32, 32],
    },
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_params_and_optimizer_state_are_really_sharded(child, layout):
    got = child[layout]
    expected = {**MLP_SHARDS, **TRANSFORMER_SHARDS}[layout]
    assert {path: got["param_shards"][path] for path in expected} == expected
    assert got["momentum_shards"] == got["param_shards"]  # optimizer state follows its param


def test_batches_are_split_over_data_and_fsdp(child):
    assert child["batch_shards"] == [[2, 3], [2]]  # 16 rows over data=2 x fsdp=4
    message = child["batch_error"]
    assert "batch[0] has 12 rows" in message and "(8 devices)" in message


@pytest.mark.parametrize("model", ["mlp", "transformer"])
@pytest.mark.parametrize("rows", [16, 5])
def test_sharded_evaluation_equals_one_device(child, model, rows):
    # 16 rows are split over the data axes; 5 rows no axis divides, evaluated replicated.
    got, want = child[f"{model}/eval/{rows}"]
    assert got == pytest.approx(want, rel=1e-6)


def test_the_train_state_is_initialized_directly_in_its_shardings(child):
    got = child["direct_init"]
    assert got["diff"] == 0.0  # the same values as TrainState.create on one device
    assert got["shards"]["dense_0/w"] == [24, 16] and got["shards"]["dense_1/w"] == [16, 32]
    assert got["nu_shards"] == got["shards"]  # AdamW's second moments too


def test_fit_on_a_mesh_with_validation_and_resume_equals_fit_on_one_device(child):
    got = child["fit"]
    sharded, one = got["train"]
    np.testing.assert_allclose(sharded, one, rtol=1e-6)
    sharded, one = got["validation"]
    assert len(one) == 2
    np.testing.assert_allclose(sharded, one, rtol=1e-6)
    assert got["params_diff"] < 1e-6 and got["steps"] == 12
    assert got["shards"]["dense_0/w"] == [24, 16]  # FSDP over data=2 x fsdp=4
    # Inside the steps (train and validation) each device holds its rows of the batch.
    assert got["inputs_seen_as"] == ["P(('data', 'fsdp'),)"]
    assert "batch_size 12 is not a multiple of the 8 devices" in got["batch_size_error"]


# --------------------------------------------------------------------------------------------
# In this process: meshes, preset decisions on abstract meshes, errors.


def test_parse_mesh():
    assert parse_mesh("data=2,fsdp=4") == {"data": 2, "fsdp": 4}
    assert parse_mesh(" tensor = 8 ") == {"tensor": 8}
    for bad, part in [("data=2,gpu=4", "'gpu=4'"), ("data", "'data'"), ("fsdp=-1", "'fsdp=-1'")]:
        with pytest.raises(ConfigError, match=f"given {part}"):
            parse_mesh(bad)
    with pytest.raises(ConfigError, match="axis 'data' is given twice"):
        parse_mesh("data=2,data=2")


def test_make_mesh_names_the_axes_and_refuses_a_wrong_device_count():
    mesh = make_mesh()
    assert mesh.axis_names == AXES and dict(mesh.shape) == {"data": 1, "fsdp": 1, "tensor": 1}
    assert make_mesh("data=1").devices.size == 1
    with pytest.raises(ConfigError, match=r"data=2 x fsdp=4 x tensor=1 lays out 8 devices, but 1"):
        make_mesh("data=2,fsdp=4")
    with pytest.raises(ConfigError, match="xla_force_host_platform_device_count"):
        make_mesh(tensor=2)
    with pytest.raises(ConfigError, match="not both"):
        make_mesh("data=1", data=1, fsdp=1, tensor=2)
    with pytest.raises(ConfigError, match="fsdp must be a positive int, given 0"):
        make_mesh(fsdp=0)


def abstract_params(model, x):
    return jax.eval_shape(lambda: model.init(jax.random.key(0), x)[0])


MESH_2x4 = AbstractMesh((2, 4, 1), AXES)


def specs(rules, params):
    flat = jax.tree_util.tree_leaves_with_path(rules.partition_specs(params))
    return {jax.tree_util.keystr(k, simple=True, separator="/"): v for k, v in flat}


def test_fsdp_shards_the_largest_divisible_dimension_of_large_params():
    params = abstract_params(MLP((64, 30, 10)), jnp.zeros((2, 24)))
    got = specs(fsdp_rules(params, MESH_2x4), params)
    assert got == {
        "dense_0/w": P(None, "fsdp"),  # (24, 64): 64 is the largest
        "dense_0/b": P(),  # 64 elements: below min_size
        "dense_1/w": P("fsdp"),  # (64, 30): 4 does not divide 30, so 64
        "dense_1/b": P(),
        "dense_2/w": P(),  # (30, 10): 300 elements
        "dense_2/b": P(),
    }
    small = specs(fsdp_rules(params, MESH_2x4, min_size=0), params)
    assert small["dense_0/b"] == P("fsdp") and small["dense_2/w"] == P()  # 4 ∤ 30, 10


def test_tensor_parallel_layout_of_a_transformer_with_grouped_kv_heads_and_swiglu():
    model = TransformerLM(32, d_model=32, num_heads=4, num_kv_heads=2, num_layers=1,
                          max_length=8, ffn="swiglu")  # fmt: skip
    params = abstract_params(model, jnp.zeros((2, 8), jnp.int32))
    mesh = AbstractMesh((1, 1, 2), AXES)
    got = specs(tensor_parallel_rules(params, mesh), params)
    attention = {k.split("/")[-1]: v for k, v in got.items() if "/attention/" in k}
    assert attention == {
        "w_q": P(None, "tensor"),  # (32, 4, 8): over heads
        "w_k": P(None, "tensor"),  # (32, 2, 8): over the kv heads
        "w_v": P(None, "tensor"),
        "b_q": P("tensor"),
        "b_k": P("tensor"),
        "b_v": P("tensor"),
        "w_o": P("tensor"),  # (4, 8, 32)
        "b_o": P(),
    }
    assert got["block_0/mlp/up/w"] == got["block_0/mlp/gate/w"] == P(None, "tensor")
    assert got["block_0/mlp/down/w"] == P("tensor")
    assert got["embedding/table"] == got["head/w"] == P()
    # Four devices on the tensor axis do not divide the 2 kv heads: an error naming a param.
    four = AbstractMesh((1, 1, 4), AXES)
    with pytest.raises(ShardingError, match=r"'block_0/attention/b_k' of shape \(2, 8\)"):
        tensor_parallel_rules(params, four).shardings(params, four)


def test_tensor_with_fsdp_and_the_mesh_default():
    params = abstract_params(MLP((64, 32, 10)), jnp.zeros((2, 24)))
    mesh = AbstractMesh((1, 2, 2), AXES)
    both = specs(tensor_parallel_rules(params, mesh, fsdp_axis="fsdp"), params)
    assert both["dense_0/w"] == P("fsdp", "tensor") and both["dense_1/w"] == P("tensor", "fsdp")
    assert specs(mesh_rules(params, mesh), params) == both
    assert specs(mesh_rules(params, AbstractMesh((4, 1, 1), AXES)), params)["dense_0/w"] == P()
    assert data_parallel_rules().partition_specs(params)["dense_0"]["w"] == P()


def test_bad_arguments_name_what_is_wrong():
    params = abstract_params(MLP((8,)), jnp.zeros((2, 4)))
    with pytest.raises(ConfigError, match="the mesh has no axis 'model'"):
        tensor_parallel_rules(params, MESH_2x4, axis="model")
    with pytest.raises(ArgumentError, match=r"mesh must be a jax\.sharding\.Mesh"):
        fsdp_rules(params, {"fsdp": 4})
    objective = Supervised(MLP((8,)), losses.mse)
    with pytest.raises(ArgumentError, match=r"rules must be a nn_jax\.rules\.Rules"):
        make_sharded_step(objective, optax.sgd(0.1), make_mesh(), rules={"*": P()})
    with pytest.raises(ConfigError, match="rules= shards the train state over a mesh"):
        fit(MLP((8,)), losses.mse, optax.sgd(0.1), (np.zeros((4, 4)), np.zeros((4, 8))),
            key=jax.random.key(0), steps=1, batch_size=4, rules=data_parallel_rules())  # fmt: skip

"""The 8-device half of tests/test_parallel.py, run as ``python tests/parallel_child.py`` with
``XLA_FLAGS=--xla_force_host_platform_device_count=8`` (set by the parent before JAX starts).

One process checks everything (starting Python + JAX and compiling cost seconds each): for an
MLP and a transformer LM, 5 training steps under data parallel, FSDP and tensor parallel (and
FSDP x tensor for the MLP) against the same 5 steps on one device; the per-device shard shapes
of params, optimizer state and batches; sharded evaluation (also of a batch the data axes do not
divide); init directly in the shardings; and ``fit`` on a mesh, validation and resume included,
against ``fit`` on one device. Every step is waited for (``jax.block_until_ready``): back-to-back
steps with collectives can hang on simulated CPU devices under asynchronous dispatch.

It prints one JSON object on its last stdout line; the parent asserts on it.
"""

import json
import sys
import tempfile

import jax
import numpy as np
import optax

from nn_jax import Supervised, TrainState, fit, losses
from nn_jax.checkpoint import Checkpointer
from nn_jax.errors import ShapeError
from nn_jax.models import MLP, TransformerLM
from nn_jax.parallel import (
    data_parallel_rules,
    fsdp_rules,
    make_mesh,
    make_sharded_eval_step,
    make_sharded_step,
    mesh_rules,
    shard_batch,
    shard_train_state,
    sharded_train_state,
    tensor_parallel_rules,
)
from nn_jax.train import make_eval_step, make_step

STEPS = 5
BATCH = 16


def mlp_case():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(STEPS, BATCH, 24)).astype(np.float32)
    y = rng.integers(0, 10, size=(STEPS, BATCH)).astype(np.int32)
    model = MLP((64, 32, 10))
    return model, losses.softmax_cross_entropy_with_integer_labels, x, y


def transformer_case():
    rng = np.random.default_rng(1)
    tokens = rng.integers(0, 32, size=(STEPS, BATCH, 9)).astype(np.int32)
    model = TransformerLM(32, d_model=32, num_heads=4, num_layers=1, max_length=8)
    return (
        model,
        losses.softmax_cross_entropy_with_integer_labels,
        tokens[..., :-1],
        tokens[..., 1:],
    )


LAYOUTS = {
    "data": ("data=8", lambda params, mesh: data_parallel_rules()),
    "fsdp": ("data=2,fsdp=4", fsdp_rules),
    "tensor": ("data=2,tensor=4", tensor_parallel_rules),
    "fsdp_tensor": ("data=2,fsdp=2,tensor=2", mesh_rules),
}
CASES = {  # model -> the layouts it is trained under (the 2-D one on the MLP only: compiling
    # a transformer step takes seconds)
    "mlp": (mlp_case, ("data", "fsdp", "tensor", "fsdp_tensor")),
    "transformer": (transformer_case, ("data", "fsdp", "tensor")),
}


def path_of(key_path):
    return jax.tree_util.keystr(key_path, simple=True, separator="/")


def leaves(tree):
    return {path_of(k): np.asarray(v) for k, v in jax.tree_util.tree_leaves_with_path(tree)}


def shard_shapes(tree):
    return {
        path_of(k): list(v.addressable_shards[0].data.shape)
        for k, v in jax.tree_util.tree_leaves_with_path(tree)
    }


def train(step, ts, x, y):
    history = []
    for i in range(STEPS):
        ts, logs = step(ts, (x[i], y[i]))
        jax.block_until_ready(ts)  # see the module docstring
        history.append(float(logs["loss"]))
    return ts, history


def max_abs_diff(reference, sharded):
    a, b = leaves(reference), leaves(sharded)
    assert a.keys() == b.keys(), (a.keys(), b.keys())
    return max(float(np.max(np.abs(a[k] - b[k]))) for k in a)


def layouts(out):
    """5 SGD-with-momentum steps per layout against the same steps on one device (momentum:
    its trace is optimizer state sharded like the params, and its updates stay linear in the
    gradients, so float32 reduction-order differences stay at float32 size)."""
    optimizer = optax.sgd(0.1, momentum=0.9)
    for name, (case, names) in CASES.items():
        model, loss_fn, x, y = case()
        objective = Supervised(model, loss_fn)
        ts0 = TrainState.create(model, optimizer, jax.random.key(0), x[0])
        ref_ts, ref_losses = train(make_step(objective, optimizer), ts0, x, y)
        ref_eval = make_eval_step(objective)
        for layout in names:
            spec, preset = LAYOUTS[layout]
            mesh = make_mesh(spec)
            rules = preset(ts0.params, mesh)
            ts = shard_train_state(ts0, mesh, rules)
            ts, got_losses = train(make_sharded_step(objective, optimizer, mesh, rules), ts, x, y)
            out[f"{name}/{layout}"] = {
                "losses": got_losses,
                "reference_losses": ref_losses,
                "initial_loss": float(ref_eval(ts0.params, ts0.state, (x[0], y[0]))["loss"]),
                "params_diff": max_abs_diff(ref_ts.params, ts.params),
                "params_moved": max_abs_diff(ts0.params, ts.params),
                "momentum_diff": max_abs_diff(ref_ts.opt_state, ts.opt_state),
                "param_shards": shard_shapes(ts.params),
                "momentum_shards": shard_shapes(ts.opt_state[0].trace),
                "replicated": [str(a.sharding.spec) for a in (ts.step, ts.rng)],
            }
        # Sharded evaluation, on the last layout: a split batch, and 5 rows, which no data
        # axis divides (evaluated replicated).
        evaluate = make_sharded_eval_step(objective, mesh, rules)
        for rows in (BATCH, 5):
            batch = (x[0][:rows], y[0][:rows])
            got = evaluate(ts.params, ts.state, batch)["loss"]
            want = ref_eval(ref_ts.params, ref_ts.state, batch)["loss"]
            out[f"{name}/eval/{rows}"] = [float(got), float(want)]


def placement(out):
    mesh = make_mesh("data=2,fsdp=4")
    batch = shard_batch((np.zeros((16, 3), np.float32), np.zeros((16,), np.int32)), mesh)
    out["batch_shards"] = [list(a.addressable_shards[0].data.shape) for a in batch]
    try:
        shard_batch((np.zeros((12, 3)), np.zeros(12)), mesh)
    except ShapeError as e:
        out["batch_error"] = str(e)
    model, optimizer = mlp_case()[0], optax.adamw(1e-3)
    x = np.zeros((8, 24), np.float32)
    direct = sharded_train_state(model, optimizer, jax.random.key(3), x, mesh)
    eager = TrainState.create(model, optimizer, jax.random.key(3), x)
    out["direct_init"] = {
        "diff": max_abs_diff(eager.params, direct.params),
        "shards": shard_shapes(direct.params),
        "nu_shards": shard_shapes(direct.opt_state[0].nu),
    }


def fitting(out):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(96, 24)).astype(np.float32)
    y = rng.integers(0, 10, size=96).astype(np.int32)
    val = (x[:16], y[:16])  # two validation batches of 8
    model = MLP((64, 32, 10))
    loss = losses.softmax_cross_entropy_with_integer_labels
    kwargs = dict(
        key=jax.random.key(0),
        steps=12,
        batch_size=16,
        validation=val,
        val_every=6,
        val_batch_size=8,
        log_every=3,
        progress=False,
    )
    optimizer = optax.sgd(0.1, momentum=0.9)
    one_ts, one = fit(model, loss, optimizer, (x, y), **kwargs)
    mesh = make_mesh("data=2,fsdp=4")
    # On the mesh, the same loss as an objective that records how the step sees its inputs.
    seen = set()
    supervised = Supervised(model, loss)

    def objective(params, state, batch, *, rng, train):
        record = lambda sharding: seen.add(str(sharding.spec))  # noqa: E731
        jax.debug.inspect_array_sharding(batch[0], callback=record)
        return supervised(params, state, batch, rng=rng, train=train)

    kwargs = {**kwargs, "objective": objective}
    with tempfile.TemporaryDirectory() as folder:
        with Checkpointer(folder) as checkpointer:  # stopped at step 6, then resumed to 12
            fit(
                model,
                None,
                optimizer,
                (x, y),
                **{**kwargs, "steps": 6},
                mesh=mesh,
                checkpoint=checkpointer,
            )
        with Checkpointer(folder) as checkpointer:
            ts, sharded = fit(
                model, None, optimizer, (x, y), **kwargs, mesh=mesh, checkpoint=checkpointer
            )
    try:  # checked before anything is compiled
        fit(model, None, optimizer, (x, y), **{**kwargs, "batch_size": 12}, mesh=mesh)
    except ShapeError as e:
        error = str(e)
    out["fit"] = {
        "inputs_seen_as": sorted(seen),
        "batch_size_error": error,
        "train": [[r["loss"] for r in h.train] for h in (sharded, one)],
        "validation": [[r["loss"] for r in h.validation] for h in (sharded, one)],
        "params_diff": max_abs_diff(one_ts.params, ts.params),
        "shards": shard_shapes(ts.params),
        "steps": int(ts.step),
    }


def main():
    assert jax.device_count() == 8, jax.devices()
    out = {}
    layouts(out)
    placement(out)
    fitting(out)
    sys.stdout.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()

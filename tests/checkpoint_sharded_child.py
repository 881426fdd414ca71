"""Child of tests/test_checkpoint_sharded.py, run with 8 simulated CPU devices.

Saves an AdamW train state sharded FSDP-style over a (data=8) mesh and restores it onto a
(data=2, fsdp=4) mesh with other specs (an abstract target: ShapeDtypeStructs with shardings)
and onto one device (a concrete target); prints one JSON line of facts for the parent to check.

Usage: python checkpoint_sharded_child.py DIRECTORY
"""

import functools
import json
import math
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, SingleDeviceSharding
from jax.sharding import PartitionSpec as P
from orbax.checkpoint._src.serialization import serialization as orbax_serialization

from nn_jax import BatchNorm, Dense, Sequential, TrainState
from nn_jax.checkpoint import Checkpointer, abstract_target
from nn_jax.errors import NNJaxError

MODEL = Sequential(Dense(16), BatchNorm(), Dense(3))  # w: (8, 16), (16, 3); b: (16,), (3,)
OPT = optax.adamw(1e-2, weight_decay=0.1)
X = np.random.default_rng(0).standard_normal((8, 8)).astype(np.float32)
CREATE = functools.partial(TrainState.create, MODEL, OPT)


@jax.jit
def _step(ts):
    """One AdamW step: non-trivial params, BatchNorm statistics, moments and count."""

    def loss(params):
        y, state = MODEL.apply(params, ts.state, X, train=True)
        return jnp.mean((y - 1.0) ** 2), state

    grads, state = jax.grad(loss, has_aux=True)(ts.params)
    updates, opt_state = OPT.update(grads, ts.opt_state, ts.params)
    params = optax.apply_updates(ts.params, updates)
    return TrainState(params, state, opt_state, ts.rng, ts.step + 1)


def _on_mesh8(x, mesh):
    """FSDP-style: a leaf whose leading dimension 8 divides is split over "data"."""
    if x.ndim and x.shape[0] % 8 == 0:
        return NamedSharding(mesh, P("data", *[None] * (x.ndim - 1)))
    return NamedSharding(mesh, P())


def _on_mesh2x4(x, mesh):
    """Other specs: 2-D leaves (fsdp, data), or (fsdp, None) where 2 does not divide the
    second dimension; 1-D leaves 8 ways over both axes where 8 divides."""
    if x.ndim == 2:
        return NamedSharding(mesh, P("fsdp", "data" if x.shape[1] % 2 == 0 else None))
    if x.ndim == 1 and x.shape[0] % 8 == 0:
        return NamedSharding(mesh, P(("data", "fsdp")))
    return NamedSharding(mesh, P())


def _expected_shard_shape(shape, spec, mesh_shape):
    """Shard shape from first principles: each dimension divided by its mesh axes' sizes."""
    out = list(shape)
    for dim, axes in enumerate(spec):
        names = () if axes is None else (axes,) if isinstance(axes, str) else axes
        out[dim] //= math.prod(mesh_shape[n] for n in names)
    return tuple(out)


def _flat(tree):
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {jax.tree_util.keystr(p): x for p, x in leaves}


def _check_placement(restored, shardings, reference):
    """Per leaf: identical values, sharding equivalent to the target's, shard shapes."""
    got, want, ref = _flat(restored), _flat(shardings), reference
    assert got.keys() == want.keys() == ref.keys(), (
        got.keys() ^ want.keys(),
        got.keys() ^ ref.keys(),
    )
    facts = {}
    for path, leaf in got.items():
        value = (
            jax.random.key_data(leaf)
            if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)
            else leaf
        )
        target = want[path]
        mesh_shape = dict(target.mesh.shape) if isinstance(target, NamedSharding) else {}
        spec = target.spec if isinstance(target, NamedSharding) else ()
        facts[path] = {
            "equal": bool(np.array_equal(np.asarray(value), ref[path])),
            "dtype_equal": str(np.asarray(value).dtype) == str(ref[path].dtype),
            "equivalent": bool(leaf.sharding.is_equivalent_to(target, leaf.ndim)),
            "shard_shapes": sorted({tuple(s.data.shape) for s in value.addressable_shards}),
            "expected_shard_shape": _expected_shard_shape(value.shape, spec, mesh_shape),
            "devices": len(value.sharding.device_set),
        }
    return facts


def _spy_reads():
    """Record the shape of every host buffer orbax reads an array slice into (orbax 0.12's
    ``serialization._read_shard``; the spy calls the real function)."""
    reads = []
    real = orbax_serialization._read_shard

    async def spy(*args, **kwargs):
        out = await real(*args, **kwargs)
        reads.append([list(out.shape), int(out.nbytes)])
        return out

    orbax_serialization._read_shard = spy
    return reads


def main(directory):
    assert len(jax.devices()) == 8, jax.devices()
    mesh8 = jax.make_mesh((8,), ("data",))
    mesh2x4 = jax.make_mesh((2, 4), ("data", "fsdp"))

    ts = CREATE(jax.random.key(0), X)
    for _ in range(2):
        ts = jax.block_until_ready(_step(ts))
    # What the restores must give back, fetched to NumPy before anything is saved.
    reference = {
        k: np.asarray(v) for k, v in _flat(ts._replace(rng=jax.random.key_data(ts.rng))).items()
    }

    # Save on the data=8 mesh, FSDP-style.
    sharded = jax.device_put(ts, jax.tree.map(lambda x: _on_mesh8(x, mesh8), ts))
    saved_shards = {
        k: sorted({tuple(s.data.shape) for s in v.addressable_shards})
        for k, v in _flat(sharded).items()
        if not jax.dtypes.issubdtype(v.dtype, jax.dtypes.prng_key)
    }
    with Checkpointer(directory) as ckpt:
        ckpt.save(sharded, metadata={"mesh": "data=8"})

    reads = _spy_reads()
    abstract = jax.eval_shape(CREATE, jax.random.key(1), jax.ShapeDtypeStruct(X.shape, X.dtype))
    shardings2x4 = jax.tree.map(lambda x: _on_mesh2x4(x, mesh2x4), abstract)
    target2x4 = abstract_target(abstract, shardings2x4)
    with Checkpointer(directory) as ckpt:
        restored2x4, meta = ckpt.restore(target2x4)
        jax.block_until_ready(restored2x4)
        reads_2x4 = list(reads)
        # One device: a concrete target, on device 0 (where TrainState.create puts it).
        one = jax.devices()[0]
        target1 = CREATE(jax.random.key(1), X)
        restored1, _ = ckpt.restore(target1)
        shardings1 = jax.tree.map(lambda _: SingleDeviceSharding(one), target1)

        # Bad targets: caught before orbax reads anything.
        errors = {}
        no_sharding = target2x4._replace(step=jax.ShapeDtypeStruct((), jnp.int32))
        bad_spec = target2x4.params["2"]["b"].update(sharding=NamedSharding(mesh2x4, P("fsdp")))
        bad_params = {**target2x4.params, "2": {**target2x4.params["2"], "b": bad_spec}}
        for name, target in [
            ("no_sharding", no_sharding),
            ("indivisible", target2x4._replace(params=bad_params)),
        ]:
            try:
                ckpt.restore(target)
                errors[name] = None
            except NNJaxError as e:  # any other error (orbax's, wrapped) fails the parent
                errors[name] = [type(e).__name__, str(e)]
        try:
            abstract_target(abstract.params, NamedSharding(mesh2x4, P("fsdp")))
            errors["abstract_indivisible"] = None
        except NNJaxError as e:
            errors["abstract_indivisible"] = [type(e).__name__, str(e)]

    leaf_sizes = {k: [list(v.shape), int(v.nbytes)] for k, v in reference.items()}
    print(
        json.dumps(
            {
                "saved_shards": saved_shards,
                "meta": meta,
                "mesh2x4": _check_placement(restored2x4, shardings2x4, reference),
                "one_device": _check_placement(restored1, shardings1, reference),
                "rng_impl": str(jax.random.key_impl(restored2x4.rng)),
                "opt_state_type": type(restored2x4.opt_state[0]).__name__,
                "reads_2x4": reads_2x4,
                "leaf_sizes": leaf_sizes,
                "errors": errors,
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1])

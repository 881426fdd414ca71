"""Checkpointer (orbax underneath): exact round trips, retention, tree checks, crash safety."""

import gc
import json
import re
import signal
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nn_jax import BatchNorm, Dense, Sequential, TrainState
from nn_jax.checkpoint import Checkpointer
from nn_jax.errors import ConfigError, NNJaxError, ParamsError

OPT = optax.adam(1e-2)


def _model(width=8, extra=False):
    layers = [Dense(width), BatchNorm(), Dense(2)]
    return Sequential(*layers, Dense(2)) if extra else Sequential(*layers)


@jax.jit
def _step(ts, x):
    """One adam step on a toy loss, written out with jax.grad + optax."""

    def loss(params):
        y, state = _model().apply(params, ts.state, x, train=True)
        return jnp.mean((y - 1.0) ** 2), state

    grads, state = jax.grad(loss, has_aux=True)(ts.params)
    updates, opt_state = OPT.update(grads, ts.opt_state, ts.params)
    params = optax.apply_updates(params=ts.params, updates=updates)
    return TrainState(params, state, opt_state, ts.rng, ts.step + 1)


def _trained(steps=2, seed=0):
    """A train state after a few adam steps: non-trivial params, state, opt_state, rng, step."""
    x = np.random.default_rng(seed).standard_normal((4, 3)).astype(np.float32)
    ts = TrainState.create(_model(), OPT, jax.random.key(seed), x)
    for _ in range(steps):
        ts = _step(ts, x)
    return ts


def _target(seed=1, **kw):
    """A fresh train state of the same (or a changed) model, to restore into."""
    return TrainState.create(_model(**kw), OPT, jax.random.key(seed), np.zeros((4, 3), np.float32))


def _with_step(ts, step):
    return ts._replace(step=jnp.asarray(step, jnp.int32))


def _assert_identical(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        assert x.dtype == y.dtype
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            assert jax.random.key_impl(x) == jax.random.key_impl(y)
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        assert np.array_equal(np.asarray(x), np.asarray(y))


def test_round_trip_is_bit_identical(tmp_path):
    ts = _trained()
    meta = {"model": {"widths": [8, 2]}, "data": {"epoch": 1, "position": 96}, "history": {}}
    with Checkpointer(tmp_path / "run") as ckpt:
        ckpt.save(ts, metadata=meta, metrics={"val/loss": 0.5})
        assert ckpt.steps() == [2] and ckpt.latest_step() == 2
        restored, restored_meta = ckpt.restore(_target())
    _assert_identical(restored, ts)
    assert isinstance(restored.opt_state[0], optax.ScaleByAdamState)
    assert restored_meta == meta
    # The restored state trains on exactly like the original.
    x = np.ones((4, 3), np.float32)
    _assert_identical(_step(restored, x), _step(ts, x))


def test_restore_arrays_needs_no_target(tmp_path):
    ts = _trained()
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(ts, metadata={"model": "mlp"})
    with Checkpointer(tmp_path) as ckpt:
        arrays, meta = ckpt.restore_arrays()
    assert meta == {"model": "mlp"}
    assert set(arrays) == {"params", "state"}
    _assert_identical(arrays, {"params": ts.params, "state": ts.state})
    assert all(isinstance(a, np.ndarray) for a in jax.tree.leaves(arrays))


def test_restore_a_given_step_and_metadata_default(tmp_path):
    ts = _trained()
    with Checkpointer(tmp_path, keep=5) as ckpt:
        for s in (1, 2, 3):
            ckpt.save(_with_step(ts, s), metadata=None if s != 2 else {"s": s})
        restored, meta = ckpt.restore(_target(), step=2)
        assert int(restored.step) == 2 and meta == {"s": 2}
        assert ckpt.restore(_target())[1] == {}
        assert int(ckpt.restore(_target())[0].step) == 3


def test_keeps_last_k_plus_best(tmp_path):
    ts = _trained(steps=0)
    val = [5.0, 1.0, 3.0, 4.0, 6.0]
    with Checkpointer(tmp_path, keep=2, best="val/loss", mode="min") as ckpt:
        for step, loss in enumerate(val):
            ckpt.save(_with_step(ts, step), metrics={"val/loss": loss, "train/loss": 0.0})
        assert ckpt.steps() == [1, 3, 4]
        assert ckpt.best_step() == 1 and ckpt.latest_step() == 4
    # A new process sees the same steps and best (metrics are read back from disk).
    with Checkpointer(tmp_path, keep=2, best="val/loss", mode="min") as ckpt:
        assert ckpt.steps() == [1, 3, 4] and ckpt.best_step() == 1
        # A diverged evaluation is saved without metrics: one of the latest, never the best.
        ckpt.save(_with_step(ts, 5), metrics={"val/loss": float("nan")})
        assert ckpt.steps() == [1, 4, 5] and ckpt.best_step() == 1


def test_best_mode_max_and_keep_only(tmp_path):
    ts = _trained(steps=0)
    with Checkpointer(tmp_path / "max", keep=1, best="acc", mode="max") as ckpt:
        for step, acc in enumerate([0.2, 0.9, 0.5, 0.4]):
            ckpt.save(_with_step(ts, step), metrics={"acc": acc})
        assert ckpt.steps() == [1, 3] and ckpt.best_step() == 1
    with Checkpointer(tmp_path / "last", keep=2) as ckpt:
        for step in range(4):
            ckpt.save(_with_step(ts, step), metrics={"acc": float(step)})
        assert ckpt.steps() == [2, 3] and ckpt.best_step() == 3


def test_mismatched_tree_lists_every_path(tmp_path):
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(_trained())
        with pytest.raises(ParamsError) as info:
            ckpt.restore(_target(width=16, extra=True))
    message = str(info.value)
    for line in [
        "params/0/w: saved (3, 8) float32, expected (3, 16) float32",
        "params/1/scale: saved (8,) float32, expected (16,) float32",
        "params/2/w: saved (8, 2) float32, expected (16, 2) float32",
        "params/3: missing in checkpoint",
        "state/1/mean: saved (8,) float32, expected (16,) float32",
        "opt_state/0/mu/0/w: saved (3, 8) float32, expected (3, 16) float32",
        "opt_state/0/nu/3: missing in checkpoint",
    ]:
        assert line in message
    assert str(tmp_path) in message


def test_dtype_and_extra_key_mismatch(tmp_path):
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(_trained())
        target = _target()
        params = dict(target.params)
        params["0"] = {"w": params["0"]["w"].astype(jnp.bfloat16)}  # bias dropped, w cast
        with pytest.raises(ParamsError) as info:
            ckpt.restore(target._replace(params=params))
    assert "params/0/w: saved (3, 8) float32, expected (3, 8) bfloat16" in str(info.value)
    assert "params/0/b: in checkpoint, not in the target" in str(info.value)


def test_missing_file_empty_and_unknown_step(tmp_path):
    missing = tmp_path / "nope"
    with Checkpointer(missing) as ckpt:
        assert ckpt.steps() == [] and ckpt.latest_step() is None
        with pytest.raises(NNJaxError, match=re.escape(f"'{missing}' does not exist")):
            ckpt.restore_arrays()
    assert not missing.exists()  # reading never creates the folder

    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(NNJaxError, match=re.escape(f"'{a_file}' is a file, not a directory")):
        Checkpointer(a_file)

    with Checkpointer(tmp_path / "run") as ckpt:
        (tmp_path / "run").mkdir()
        with pytest.raises(NNJaxError, match=r"no checkpoint in .*run'"):
            ckpt.restore(_target())
        ckpt.save(_trained())
        with pytest.raises(
            NNJaxError,
            match=re.escape("no checkpoint of step 7 in ") + ".*" + re.escape("saved steps: [2]"),
        ):
            ckpt.restore(_target(), step=7)


# When one array read fails, orbax returns while tensorstore's other reads are still in flight;
# they complete onto orbax's closed asyncio loop ("Exception ignored ... Event loop is closed").
# Harmless noise: wait for it inside this test and ignore it here, not in the next test.
_LATE_TENSORSTORE_CALLBACKS = pytest.mark.filterwarnings(
    "ignore::pytest.PytestUnraisableExceptionWarning"
)


@pytest.mark.parametrize(
    "damage", ["metadata", pytest.param("arrays", marks=_LATE_TENSORSTORE_CALLBACKS)]
)
def test_corrupt_checkpoint_names_its_path(tmp_path, damage):
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(_trained())
    item = tmp_path / "2" / "train_state"
    if damage == "metadata":
        (item / "_METADATA").write_text("{not json")
    else:
        for f in item.rglob("manifest.ocdbt"):  # tensorstore's index of the array chunks
            f.write_bytes(b"garbage")
    with Checkpointer(tmp_path) as ckpt, pytest.raises(NNJaxError) as info:
        ckpt.restore(_target())
    assert re.search(
        re.escape(f"checkpoint '{tmp_path / '2'}' is corrupt or incomplete"), str(info.value)
    )
    time.sleep(0.5)
    gc.collect()


def test_save_rules(tmp_path):
    ts = _trained()
    with Checkpointer(tmp_path, best="val/loss") as ckpt:
        ckpt.save(ts, metrics={"val/loss": 2.0})
        with pytest.raises(NNJaxError, match=r"step 2 is already saved .*force=True"):
            ckpt.save(ts, metrics={"val/loss": 1.0})
        with pytest.raises(NNJaxError, match="step 1 is older than the latest saved step 2"):
            ckpt.save(_with_step(ts, 1), metrics={"val/loss": 1.0})
        with pytest.raises(ConfigError, match="metadata must be JSON-serializable"):
            ckpt.save(_with_step(ts, 3), metadata={"a": object()})
        with pytest.raises(ConfigError, match="metrics has no 'val/loss'"):
            ckpt.save(_with_step(ts, 3), metrics={"loss": 1.0})
        assert ckpt.steps() == [2]  # failed saves wrote nothing
        ckpt.save(ts, metadata={"v": 2}, metrics={"val/loss": 1.0}, force=True)
        assert ckpt.steps() == [2] and ckpt.restore(_target())[1] == {"v": 2}
        ckpt.save(_with_step(ts, 1), metrics={"val/loss": 3.0}, force=True)
        assert ckpt.steps() == [1, 2] and ckpt.best_step() == 2
    with pytest.raises(ConfigError, match="keep must be an int >= 1"):
        Checkpointer(tmp_path, keep=0)
    with pytest.raises(ConfigError, match="mode must be 'min' or 'max'"):
        Checkpointer(tmp_path, mode="lowest")  # type: ignore[arg-type]


def test_checkpoint_files_are_not_pickles(tmp_path):
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(_trained(), metadata={"a": 1})
    files = [f for f in tmp_path.rglob("*") if f.is_file()]
    assert files
    assert not any(f.read_bytes()[:1] == b"\x80" for f in files)  # pickle protocol >= 2 header
    assert json.loads((tmp_path / "2" / "metadata" / "metadata").read_text()) == {"a": 1}


_KILLED_SAVE = textwrap.dedent(
    """
    import sys
    import jax, jax.numpy as jnp
    from nn_jax import TrainState
    from nn_jax.checkpoint import Checkpointer

    def ts(step, n):
        w = jax.random.normal(jax.random.key(step), (n,), jnp.float32)
        return TrainState({"w": w}, {}, (), jax.random.key(step), jnp.asarray(step, jnp.int32))

    ckpt = Checkpointer(sys.argv[1])
    ckpt.save(ts(1, 1000), metadata={"step": 1})
    big = ts(2, int(sys.argv[2]))
    print("saving 2", flush=True)
    ckpt.save(big, metadata={"step": 2})
    ckpt.close()
    """
)


def test_killed_save_leaves_previous_checkpoint_intact(tmp_path):
    n = 50_000_000  # 200 MB: the write takes a while, so the kill lands mid-save
    run = tmp_path / "run"
    with subprocess.Popen(
        [sys.executable, "-c", _KILLED_SAVE, str(run), str(n)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    ) as proc:
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == b"saving 2"
            deadline = time.monotonic() + 60
            while not list(run.glob("2.orbax-checkpoint-tmp*")) and proc.poll() is None:
                assert time.monotonic() < deadline, "the step-2 save never started"
                time.sleep(0.005)
            time.sleep(0.05)  # let it write part of the 200 MB
        finally:
            proc.send_signal(signal.SIGKILL)  # no-op if it already exited
            proc.wait(timeout=60)
    assert proc.returncode in (-signal.SIGKILL, 0)

    with Checkpointer(run) as ckpt:
        latest = ckpt.latest_step()
        assert latest in (1, 2)
        assert ckpt.steps() == list(range(1, latest + 1))  # a half-written step is not listed
        arrays, meta = ckpt.restore_arrays()
        size = 1000 if latest == 1 else n
        expected = jax.random.normal(jax.random.key(latest), (size,), jnp.float32)
        assert meta == {"step": latest}
        assert np.array_equal(arrays["params"]["w"], np.asarray(expected))
        del arrays, expected

        # Saving goes on: the next step (step 2 again, if it was killed) over any leftover tmp.
        nxt = latest + 1
        small = TrainState(
            {"w": jnp.arange(3.0)}, {}, (), jax.random.key(nxt), jnp.asarray(nxt, jnp.int32)
        )
        ckpt.save(small, metadata={"step": nxt})
        restored, meta = ckpt.restore(small)
        _assert_identical(restored, small)
        assert meta == {"step": nxt} and ckpt.latest_step() == nxt
    assert not list(run.glob(f"{nxt}.orbax-checkpoint-tmp*"))

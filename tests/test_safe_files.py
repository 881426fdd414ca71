"""Safe files (issue 13, part 5): what a damaged, crafted or half-written checkpoint does.

Every damage below must give a :class:`FileFormatError` (or a ConfigError/ArgumentError for a
bad argument) naming the path and what is wrong, must leave the earlier steps readable, and
must never make nn_jax delete, overwrite or list something that is not a complete checkpoint.
Processes killed mid-save run in a forked child of one helper process (one JAX import for all
of them).
"""

from __future__ import annotations

import ast
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nn_jax
from nn_jax import TrainState
from nn_jax.checkpoint import Checkpointer
from nn_jax.config import from_json
from nn_jax.errors import ArgumentError, ConfigError, FileFormatError, NNJaxError

SIZE = 48  # a 48x48 random float32 array: 9 KB, stored in a data file (not inline in the index)


def state(step: int) -> TrainState:
    """A train state whose every value says which step it is."""
    w = np.random.default_rng(step).standard_normal((SIZE, SIZE)).astype(np.float32)
    params = {"w": jnp.asarray(w), "b": jnp.full((SIZE,), step, jnp.float32)}
    return TrainState(params, {}, (), jax.random.key(step), jnp.asarray(step, jnp.int32))


def assert_is_step(ts: TrainState, step: int) -> None:
    expected = state(step)
    assert int(ts.step) == step
    for got, want in zip(jax.tree.leaves(ts.params), jax.tree.leaves(expected.params), strict=True):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def restore(run: Path, step: int | None = None) -> tuple[TrainState, dict]:
    with Checkpointer(run) as ckpt:
        return ckpt.restore(state(0), step=step)


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes (to show nothing was changed)."""
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder with steps 1 and 2 (metadata ``{"step": s}``)."""
    run = tmp_path_factory.mktemp("saved") / "run"
    with Checkpointer(run) as ckpt:
        for step in (1, 2):
            ckpt.save(state(step), metadata={"step": step, "note": "fine"}, metrics={"loss": 1.0})
    return run


@pytest.fixture
def run(saved: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(saved, copy)
    return copy


# --------------------------------------------------------------------------------------------
# Damaged steps.


def _data_files(step_dir: Path) -> list[Path]:
    """Tensorstore's files of array chunks and index nodes, largest first."""
    files = [
        p for p in (step_dir / "train_state").rglob("*") if p.is_file() and p.parent.name == "d"
    ]
    return sorted(files, key=lambda p: p.stat().st_size, reverse=True)


def _flip(path: Path, where: float = 0.5) -> None:
    data = bytearray(path.read_bytes())
    data[int(len(data) * where)] ^= 0x01
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _write(relative: str, text: str | bytes):
    def damage(step_dir: Path) -> None:
        path = step_dir / relative
        path.write_bytes(text if isinstance(text, bytes) else text.encode())

    return damage


DAMAGES = {
    # Flipped bits inside an array's data: tensorstore reads them as other numbers; only the
    # checksums in the manifest notice.
    "array bytes flipped": (
        lambda d: _flip(_data_files(d)[0]),
        r"params/w differs from the checksums saved with the step",
    ),
    "array file truncated": (lambda d: _truncate(_data_files(d)[0]), r"OUT_OF_RANGE|DATA_LOSS"),
    "array file emptied": (lambda d: _write(str(_data_files(d)[0].relative_to(d)), b"")(d), r""),
    "array index flipped": (
        lambda d: [_flip(p) for p in (d / "train_state").rglob("manifest.ocdbt")],
        r"DATA_LOSS|corrupt",
    ),
    "array files deleted": (lambda d: [p.unlink() for p in _data_files(d)], r"NOT_FOUND"),
    "tree metadata not JSON": (
        _write("train_state/_METADATA", "{not json"),
        r"cannot read the tree of its arrays \(train_state/\)",
    ),
    "tree metadata a list": (_write("train_state/_METADATA", "[]"), r"train_state/"),
    "tree metadata deleted": (
        lambda d: (d / "train_state" / "_METADATA").unlink(),
        r"no train state found in train_state/",
    ),
    "metadata not JSON": (
        _write("metadata/metadata", '{"step": 2, "no'),
        r"metadata/metadata is not valid JSON",
    ),
    "metadata binary": (
        _write("metadata/metadata", b"\x80\x04\x95"),
        r"cannot read metadata/metadata",
    ),
    "metadata a list": (
        _write("metadata/metadata", "[1, 2]"),
        r"metadata/metadata differs from the checksum",
    ),
    "metadata null": (
        _write("metadata/metadata", "null"),
        r"metadata/metadata differs from the checksum",
    ),
    "metadata edited": (
        _write("metadata/metadata", '{"step": 3, "note": "fine"}'),
        r"metadata/metadata differs from the checksum saved with it \(the file was changed",
    ),
    "metadata deleted": (
        lambda d: (d / "metadata" / "metadata").unlink(),
        r"metadata/metadata is missing",
    ),
    "manifest not JSON": (_write("manifest/manifest", "{"), r"manifest/manifest is not valid JSON"),
    "manifest of another step": (
        lambda d: shutil.copy(
            d.parent / "1" / "manifest" / "manifest", d / "manifest" / "manifest"
        ),
        r"manifest/manifest is not a manifest of this step",
    ),
    "manifest deleted": (lambda d: shutil.rmtree(d / "manifest"), r"it has no manifest/"),
    "checksum edited": (
        lambda d: (d / "manifest" / "manifest").write_text(
            (d / "manifest" / "manifest").read_text().replace('"params/b": "', '"params/b": "0')
        ),
        r"params/b differs from the checksums",
    ),
}


@pytest.mark.parametrize("damage", DAMAGES, ids=list(DAMAGES))
def test_a_damaged_latest_step_is_refused_and_the_earlier_one_still_restores(run, damage):
    apply, message = DAMAGES[damage]
    step_1 = snapshot(run / "1")
    apply(run / "2")
    with Checkpointer(run) as ckpt:
        assert ckpt.steps() == [1, 2] and ckpt.latest_step() == 2
        for read in (lambda: ckpt.restore(state(0)), ckpt.restore_arrays):
            with pytest.raises(FileFormatError) as info:
                read()
            text = str(info.value)
            assert text.startswith(f"checkpoint '{run / '2'}' is corrupt or incomplete: "), text
            assert re.search(message, text), text
            assert "\n" not in text and "tensorstore_spec" not in text and len(text) < 700
        restored, meta = ckpt.restore(state(0), step=1)
    assert_is_step(restored, 1)
    assert meta == {"step": 1, "note": "fine"}
    assert snapshot(run / "1") == step_1  # reading never writes


def test_a_flipped_bit_would_otherwise_restore_silently(run):
    """Why the checksums exist: the same damage reads back as a wrong number without them."""
    _flip(_data_files(run / "2")[0])
    manifest = run / "2" / "manifest" / "manifest"
    data = json.loads(manifest.read_text())
    data["checksums"]["arrays"] = dict.fromkeys(data["checksums"]["arrays"])  # not verified
    manifest.write_text(json.dumps(data))
    restored, _ = restore(run)
    assert not np.array_equal(np.asarray(restored.params["w"]), np.asarray(state(2).params["w"]))


INCOMPLETE = {
    "metadata item deleted": lambda d: shutil.rmtree(d / "metadata"),
    "arrays item deleted": lambda d: shutil.rmtree(d / "train_state"),
    "orbax's commit file deleted": lambda d: (d / "_CHECKPOINT_METADATA").unlink(),
    "emptied": lambda d: [shutil.rmtree(d), d.mkdir()],
    "a file": lambda d: [shutil.rmtree(d), d.write_text("garbage")],
    "a link to a good step": lambda d: [shutil.rmtree(d), d.symlink_to(d.parent / "1")],
}


@pytest.mark.parametrize("damage", INCOMPLETE, ids=list(INCOMPLETE))
def test_an_incomplete_step_is_not_listed_restored_replaced_or_deleted(run, damage):
    INCOMPLETE[damage](run / "2")
    before = snapshot(run)
    with Checkpointer(run, keep=1) as ckpt:
        assert ckpt.steps() == [1] and ckpt.latest_step() == 1 and ckpt.best_step() == 1
        assert_is_step(ckpt.restore(state(0))[0], 1)
        with pytest.raises(FileFormatError, match=re.escape(f"'{run / '2'}'")):
            ckpt.restore(state(0), step=2)
        with pytest.raises(FileFormatError, match=r"exists but is not a complete checkpoint"):
            ckpt.save(state(2), force=True)
        assert snapshot(run) == before
        # Later steps save, and retention (keep=1) deletes step 1 but never the odd folder.
        ckpt.save(state(3))
        ckpt.save(state(4))
        assert ckpt.steps() == [4]
    assert os.path.lexists(run / "2")
    assert {k: v for k, v in snapshot(run).items() if k.startswith("2/")} == {
        k: v for k, v in before.items() if k.startswith("2/")
    }


def test_a_folder_named_like_a_later_step_is_never_the_latest(run):
    (run / "100").mkdir()
    (run / "100" / "notes.txt").write_text("not a checkpoint")
    (run / "007").mkdir()  # not a step name orbax lists
    with Checkpointer(run, keep=2, best="loss") as ckpt:
        assert ckpt.steps() == [1, 2] and ckpt.latest_step() == 2
        ckpt.save(state(3), metrics={"loss": 0.5})
        ckpt.save(state(4), metrics={"loss": 2.0})
        assert ckpt.steps() == [3, 4] and ckpt.best_step() == 3
        with pytest.raises(FileFormatError, match=r"'.*100' is not a complete checkpoint"):
            ckpt.restore(state(0), step=100)
    assert (run / "100" / "notes.txt").read_text() == "not a checkpoint"


def test_steps_saved_with_other_metrics_do_not_break_best_tracking(run):
    # Steps 1 and 2 were saved with {"loss": 1.0}; this run ranks by "accuracy".
    with Checkpointer(run, keep=1, best="accuracy", mode="max") as ckpt:
        assert ckpt.best_step() is None
        ckpt.save(state(3), metrics={"accuracy": 0.5})
        ckpt.save(state(4), metrics={"accuracy": 0.25})
        assert ckpt.steps() == [3, 4] and ckpt.best_step() == 3
    (run / "3" / "manifest" / "manifest").write_text("{broken")  # unreadable: never the best
    with Checkpointer(run, keep=1, best="accuracy", mode="max") as ckpt:
        assert ckpt.best_step() == 4


# --------------------------------------------------------------------------------------------
# Names, steps and directories given by the caller.


@pytest.mark.parametrize(
    ("step", "error", "message"),
    [
        (99, FileFormatError, r"no checkpoint of step 99 in .*; saved steps: \[1, 2\]"),
        (-1, ConfigError, r"step must be >= 0, given -1"),
        ("../x", ArgumentError, r"step must be an int or None, given str '../x'"),
        ("2", ArgumentError, r"given str '2'"),
        (True, ArgumentError, r"given bool True"),
        (2.0, ArgumentError, r"given float 2.0"),
        ([2], ArgumentError, r"given list \[2\]"),
    ],
)
def test_restore_step_must_be_a_saved_step(run, step, error, message):
    with Checkpointer(run) as ckpt, pytest.raises(error, match=message):
        ckpt.restore(state(0), step=step)


def test_restore_step_takes_numpy_and_jax_integers(run):
    assert_is_step(restore(run, np.int64(1))[0], 1)
    assert_is_step(restore(run, jnp.asarray(1))[0], 1)


@pytest.mark.parametrize(
    ("step", "message"),
    [
        (jnp.asarray(-1, jnp.int32), r"step must be >= 0, given -1"),
        (jnp.asarray([3, 4], jnp.int32), r"must be a scalar integer, given .*int32\(2,\)"),
        (jnp.asarray(3.5), r"must be a scalar integer, given .*float32"),
        ("../3", r"must be a scalar integer, given str"),
        (True, r"must be a scalar integer, given bool"),
    ],
)
def test_save_refuses_a_step_that_cannot_name_a_folder(run, step, message):
    before = snapshot(run.parent)
    with Checkpointer(run) as ckpt, pytest.raises(ConfigError, match=message):
        ckpt.save(state(3)._replace(step=step))
    assert snapshot(run.parent) == before


def test_names_never_leave_the_directory(tmp_path):
    run = tmp_path / "inside" / "run"
    params = {"../../escaped": jnp.ones(3), "/abs": jnp.zeros(2), "a/b": {"..": jnp.ones(1)}}
    ts = TrainState(params, {}, (), jax.random.key(1), jnp.asarray(1, jnp.int32))
    with Checkpointer(run, best="../../escaped") as ckpt:
        ckpt.save(
            ts,
            metadata={"../../escaped": "x", "/etc/passwd": "y"},
            metrics={"../../escaped": 1.0, "/abs": 2.0},
        )
        assert ckpt.best_step() == 1
        restored, meta = ckpt.restore(ts)
        assert meta == {"../../escaped": "x", "/etc/passwd": "y"}
        assert jax.tree.map(jnp.shape, restored.params) == jax.tree.map(jnp.shape, params)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inside"]
    assert sorted(p.name for p in (tmp_path / "inside").iterdir()) == ["run"]
    assert sorted(p.name for p in run.iterdir()) == ["1"]


def test_a_directory_that_is_a_file(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(FileFormatError, match=re.escape(f"'{a_file}' is a file, not a directory")):
        Checkpointer(a_file)
    with Checkpointer(a_file / "run") as ckpt:
        with pytest.raises(FileFormatError, match="a parent is a file"):
            ckpt.save(state(1))
        with pytest.raises(FileFormatError, match="does not exist"):
            ckpt.restore(state(0))
    later = tmp_path / "later"
    with Checkpointer(later) as ckpt:
        later.write_text("made a file after the Checkpointer")
        with pytest.raises(FileFormatError, match="is a file, not a directory"):
            ckpt.save(state(1))
        with pytest.raises(FileFormatError, match="is a file, not a directory"):
            ckpt.restore(state(0))
    assert a_file.read_text() == "x" and later.read_text().startswith("made")
    with pytest.raises(ConfigError, match="cannot use directory"):
        Checkpointer("x" * 5000)
    with pytest.raises(ConfigError, match="cannot use directory"):
        Checkpointer("nul\x00byte")
    with pytest.raises(ArgumentError, match="directory must be a path, given NoneType"):
        Checkpointer(None)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# Leftovers of killed saves and deletes; a failed replacement.


def test_leftovers_are_ignored_by_readers_and_removed_by_the_next_save(run):
    leftover = run / "3.orbax-checkpoint-tmp-1700000000"
    shutil.copytree(run / "2", leftover)  # a complete-looking step, not yet renamed
    trash = run / ".deleted" / "0"
    shutil.copytree(run / "1", trash)
    with Checkpointer(run) as ckpt:
        assert ckpt.steps() == [1, 2]
        assert_is_step(ckpt.restore(state(0))[0], 2)
    assert leftover.exists() and trash.exists()  # a reader never deletes (a writer may be busy)
    with Checkpointer(run) as ckpt:
        ckpt.save(state(3))
        assert ckpt.steps() == [1, 2, 3]
    assert not leftover.exists() and not (run / ".deleted").exists()


def test_a_failed_replacement_puts_the_old_step_back(run, monkeypatch):
    with Checkpointer(run) as ckpt:

        def crash(*args, **kwargs):
            raise OSError("disk full")

        monkeypatch.setattr(ckpt._manager, "save", crash)
        with pytest.raises(OSError, match="disk full"):
            ckpt.save(state(2), metadata={"step": "new"}, force=True)
        monkeypatch.undo()
        assert ckpt.steps() == [1, 2]
        restored, meta = ckpt.restore(state(0))
    assert_is_step(restored, 2)
    assert meta == {"step": 2, "note": "fine"}


_KILLER = textwrap.dedent(
    """
    import json, os, shutil, signal, sys, time
    import numpy as np
    from nn_jax.checkpoint import Checkpointer, ocp
    ocp.CheckpointManager  # import orbax before forking; JAX's backend starts in the children

    def child(directory, pipe, kill_at):
        import jax, jax.numpy as jnp
        from nn_jax import TrainState

        def state(step):
            w = np.random.default_rng(step).standard_normal((SIZE, SIZE)).astype(np.float32)
            params = {"w": jnp.asarray(w), "b": jnp.full((SIZE,), step, jnp.float32)}
            return TrainState(params, {}, (), jax.random.key(step), jnp.asarray(step, jnp.int32))

        def die():
            os.kill(os.getpid(), signal.SIGKILL)

        saves = []
        if kill_at == "before-commit":  # the step is fully written in its tmp folder
            rename = os.rename
            def os_rename(src, dst, *a, **k):
                if ".orbax-checkpoint-tmp" in str(src) and len(saves) >= 3:
                    die()
                return rename(src, dst, *a, **k)
            os.rename = os_rename
        if kill_at == "after-retire":  # an old step was just moved into .deleted
            replace = os.replace
            def os_replace(src, dst, *a, **k):
                replace(src, dst, *a, **k)
                if ".deleted" in str(dst) and len(saves) >= 3:
                    die()
            os.replace = os_replace
        if kill_at == "mid-purge":  # half of the retired step is removed
            rmtree = shutil.rmtree
            def shutil_rmtree(path, *a, **k):
                files = sorted(os.path.join(r, f) for r, _, fs in os.walk(path) for f in fs)
                if str(path).endswith(".deleted") and len(saves) >= 3 and files:
                    for f in files[: len(files) // 2]:
                        os.remove(f)
                    die()
                return rmtree(path, *a, **k)
            shutil.rmtree = shutil_rmtree

        with Checkpointer(directory, keep=2) as ckpt:
            steps = ckpt.steps()
            for s in steps:  # every listed step restores, with its own values
                restored, meta = ckpt.restore(state(0), step=s)
                same = np.array_equal(restored.params["w"], state(s).params["w"])
                if int(restored.step) != s or meta != {"step": s} or not same:
                    os._exit(3)
            step = steps[-1] + 1 if steps else 1
            while True:
                os.write(pipe, f"{step}\\n".encode())
                ckpt.save(state(step), metadata={"step": step})
                saves.append(step)
                step += 1

    directory = sys.argv[1]
    for kill_at in sys.argv[2:]:
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read)
            try:
                child(directory, write, kill_at)
            finally:
                os._exit(4)
        os.close(write)
        lines = os.fdopen(read)
        started = [lines.readline().strip() for _ in range(4)]  # 3 saves done, the 4th begun
        if kill_at.startswith("timer-"):
            time.sleep(float(kill_at[6:]))
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
            time.sleep(0.005)
        if done[0] == 0:
            os.kill(pid, signal.SIGKILL)
            done = os.waitpid(pid, 0)
        lines.close()
        report = {"kill_at": kill_at, "saving": started[-1], "status": done[1],
                  "listing": sorted(os.listdir(directory))}
        print(json.dumps(report), flush=True)
    """
).replace("SIZE", str(SIZE))


def test_processes_killed_mid_save_leave_every_listed_step_restorable(tmp_path):
    run = tmp_path / "run"
    kills = ["timer-0", "timer-0.02", "before-commit", "timer-0.05", "after-retire", "mid-purge"]
    done = subprocess.run(
        [sys.executable, "-c", _KILLER, str(run), *kills],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    reports = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["kill_at"] for r in reports] == kills
    for report in reports:
        # Killed (not exited 3: a child found a listed step that did not restore correctly).
        assert os.WIFSIGNALED(report["status"]), report
    by_kill = {r["kill_at"]: r for r in reports}
    # Killed before its rename, the step is a tmp folder only; the previous step is the latest.
    commit = by_kill["before-commit"]
    assert f"{commit['saving']}.orbax-checkpoint-tmp" in " ".join(commit["listing"])
    assert commit["saving"] not in commit["listing"]
    assert ".deleted" in by_kill["after-retire"]["listing"]
    assert ".deleted" in by_kill["mid-purge"]["listing"]

    with Checkpointer(run, keep=2) as ckpt:
        steps = ckpt.steps()
        assert steps and steps == sorted(steps) and len(steps) <= 3
        assert ckpt.latest_step() == steps[-1]
        for step in steps:
            restored, meta = ckpt.restore(state(0), step=step)
            assert_is_step(restored, step)
            assert meta == {"step": step}
        ckpt.save(state(steps[-1] + 1), metadata={"step": steps[-1] + 1})
    leftovers = [p.name for p in run.iterdir() if not p.name.isdigit()]
    assert leftovers == []


# --------------------------------------------------------------------------------------------
# Nothing is unpickled or executed.


class _Payload:
    """Unpickling this runs ``open(marker, "w")``: the file appears if anything unpickles."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickle_payload_in_any_json_file_is_refused_without_running(run, tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Payload(marker))
    for item in ("metadata/metadata", "manifest/manifest", "train_state/_METADATA"):
        target = run / "2" / item
        original = target.read_bytes()
        target.write_bytes(payload)
        with Checkpointer(run) as ckpt:
            for read in (lambda: ckpt.restore(state(0)), ckpt.restore_arrays):
                with pytest.raises(FileFormatError, match=re.escape(f"'{run / '2'}'")):
                    read()
        target.write_bytes(original)
    # A pickle in place of a data file, and as a .npy next to them, is never loaded either.
    data = _data_files(run / "2")[0]
    data.write_bytes(payload)
    np.save(run / "2" / "train_state" / "params.npy", np.array([_Payload(marker)], object))
    with pytest.raises(FileFormatError):
        restore(run)
    config = {"type": "Dense", "features": 2, "w_init": {"__reduce__": payload.hex()}}
    with pytest.raises(ConfigError):
        from_json(json.dumps(config))
    with pytest.raises(FileFormatError, match="not valid JSON"):
        from_json(payload)
    assert not marker.exists()


_FORBIDDEN_IMPORTS = {"pickle", "cPickle", "dill", "cloudpickle", "joblib", "marshal", "shelve"}
_FORBIDDEN_CALLS = {"eval", "exec", "load", "loads", "load_pickle", "fromfile", "unsafe_load"}


def test_no_module_can_unpickle_or_execute_what_it_reads():
    """Static guard: nn_jax imports no unpickler and calls no eval/exec/np.load/yaml.load
    (np.load(..., allow_pickle=False) is still refused: nothing here reads .npy)."""
    problems = []
    for path in sorted(Path(nn_jax.__file__).parent.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module.split(".")[0]]
            if set(names) & _FORBIDDEN_IMPORTS:
                problems.append(f"{path.name}:{node.lineno} imports {names}")
            if isinstance(node, ast.Call):
                func = node.func
                name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
                owner = func.value if isinstance(func, ast.Attribute) else None
                owner_name = getattr(owner, "id", getattr(owner, "attr", ""))
                if name in ("eval", "exec") and isinstance(func, ast.Name):
                    problems.append(f"{path.name}:{node.lineno} calls {name}()")
                if name in _FORBIDDEN_CALLS and owner_name in ("np", "numpy", "yaml", "torch"):
                    problems.append(f"{path.name}:{node.lineno} calls {owner_name}.{name}()")
    assert problems == []


def test_errors_are_nn_jax_errors():
    assert issubclass(FileFormatError, NNJaxError) and issubclass(FileFormatError, ValueError)

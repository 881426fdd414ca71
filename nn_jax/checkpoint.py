"""Checkpoints of a :class:`~nn_jax.train.TrainState`, built on orbax-checkpoint.

A :class:`Checkpointer` wraps one ``orbax.checkpoint.CheckpointManager`` over a folder with one
sub-folder per step::

    run/
      20/train_state/   params, state, opt_state, rng (as key data), step   (orbax arrays)
      20/metadata/      JSON: the model's config, the data position, the history, ...
      20/manifest/      JSON: the step, its metrics (to pick the best step) and the SHA-256 of
                        every saved array and of the metadata
      30/...

Why orbax: it writes arrays with tensorstore (no pickle), reads a checkpoint's tree of shapes and
dtypes without loading the arrays, and makes each save atomic: a step is written to
``<step>.orbax-checkpoint-tmp-*`` and renamed to ``<step>`` only once complete, so a process
killed mid-save leaves the previous steps untouched and no half-written step that would be listed
or restored.

What this module adds, so that a damaged folder never loads silently or destroys a good step:

* **Checksums.** Tensorstore detects a damaged index or a truncated file, but not a flipped
  byte inside an array's data: that restores as a wrong number. Each save records the SHA-256
  of every array's bytes and of the metadata in the step's manifest; every restore recomputes
  them and raises :class:`~nn_jax.errors.FileFormatError` naming the arrays that differ.
* **Only complete steps count.** A step is listed (and can be the latest, the best or
  restored) only if its folder holds orbax's commit metadata and both items. A folder named
  like a step that holds something else is never listed, restored, replaced or deleted.
* **Deleting is atomic too.** An old step is first renamed into ``run/.deleted/`` and only then
  removed, so a kill during retention never leaves a half-deleted step behind; leftovers of a
  killed save or delete are removed by the next save.
* **Names cannot escape the folder.** Steps are checked integers >= 0; item names are fixed.

**Sharded train states** (built on orbax's tensorstore reads and ``jax.sharding``). Saving a
train state whose arrays are sharded over a mesh writes each shard once (orbax). Restoring is
driven by the *target*: each target leaf is a ``jax.Array`` or a ``jax.ShapeDtypeStruct`` with a
``.sharding`` (:func:`abstract_target` builds one from ``jax.eval_shape`` without creating a
single array), and orbax reads, for every device, only the slice of the saved array that the
target sharding puts there and places it on that device (``ArrayRestoreArgs(sharding=...)``
underneath ``StandardRestore``). A checkpoint saved on one mesh so restores onto another mesh,
another spec, or one device, and no full copy of a sharded array is ever made on one device or
read into host memory by orbax (flax#5110, orbax#1105).

The checksums are the one exception, and what they cost: each array's SHA-256 is taken over its
whole value, gathered to host memory one array at a time (``np.asarray``) — at save and again
after a restore. That is one device-to-host copy of the train state each way and a peak of one
array's size in host memory (never on a device), and it makes the digest independent of the
sharding, so a step saved on 8 devices verifies on 1. An array this process cannot read whole
(``not is_fully_addressable``: sharded over several hosts) is not digested: it is saved with no
checksum, and a restored one is not verified (tensorstore's own integrity checks still apply).

>>> import tempfile, jax, jax.numpy as jnp, optax
>>> from nn_jax import Dense, TrainState
>>> ts = TrainState.create(Dense(2), optax.adam(1e-3), jax.random.key(0), jnp.zeros((1, 3)))
>>> with tempfile.TemporaryDirectory() as d, Checkpointer(d, keep=2) as ckpt:
...     ckpt.save(ts, metadata={"model": "Dense(2)"})
...     restored, meta = ckpt.restore(ts)
...     arrays, _ = ckpt.restore_arrays()
>>> meta
{'model': 'Dense(2)'}
>>> jax.tree.map(lambda a: a.shape, arrays)
{'params': {'b': (2,), 'w': (3, 2)}, 'state': {}}
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import math
import operator
import os
import re
import shutil
import sys
import types
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import jax
import numpy as np

from nn_jax.errors import (
    ArgumentError,
    ConfigError,
    FileFormatError,
    NNJaxError,
    ParamsError,
    ShapeError,
)
from nn_jax.train import TrainState


class _Orbax:
    """``orbax.checkpoint``, imported on first use: it takes about 0.5 s to import, which every
    ``import nn_jax`` (and every ``nn-jax`` command) would otherwise pay."""

    def __getattr__(self, name: str) -> Any:
        import orbax.checkpoint  # type: ignore[import-untyped]  # no py.typed marker

        return getattr(orbax.checkpoint, name)


ocp = _Orbax()

__all__ = ["Checkpointer", "abstract_target"]

_ARRAYS = "train_state"
_METADATA = "metadata"
_MANIFEST = "manifest"
_FORMAT = 1  # the manifest's format version
_COMMIT_FILE = "_CHECKPOINT_METADATA"  # orbax writes it into the step before the final rename
_TRASH = ".deleted"  # old steps are renamed here, then removed
_ORBAX_TMP = ".orbax-checkpoint-tmp"  # orbax's suffix of a step being written
_FIELDS = ("params", "state", "opt_state", "rng", "step")


class Checkpointer:
    """Save and restore :class:`TrainState` checkpoints in ``directory`` (orbax underneath).

    Keeps the last ``keep`` steps and, when ``best`` names a metric (e.g. ``"val/loss"``), also
    the best step by that metric (lowest for ``mode="min"``, highest for ``"max"``). Saving is
    synchronous: :meth:`save` returns once the step is complete on disk. One process writes to
    a directory at a time (others may read it).

    Args:
        directory: the run's checkpoint folder; created by the first :meth:`save`.
        keep: how many of the latest steps to keep (>= 1).
        best: the metric that ranks steps, read from ``save(..., metrics=...)``; ``None`` keeps
            only the latest ``keep``.
        mode: whether a lower (``"min"``) or higher (``"max"``) ``best`` metric is better.

    Use it as a context manager, or call :meth:`close`, so orbax's resources are released.

    Raises:
        FileFormatError: (from any method) a step is damaged, incomplete or missing, or the
            directory is a file; the message names the path. Nothing is half-loaded.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        keep: int = 3,
        best: str | None = None,
        mode: Literal["min", "max"] = "min",
    ) -> None:
        if not isinstance(keep, int) or isinstance(keep, bool) or keep < 1:
            raise ConfigError(f"Checkpointer: keep must be an int >= 1, given {keep!r}")
        if mode not in ("min", "max"):
            raise ConfigError(f"Checkpointer: mode must be 'min' or 'max', given {mode!r}")
        if best is not None and not isinstance(best, str):
            raise ConfigError(f"Checkpointer: best must be a metric name or None, given {best!r}")
        if not isinstance(directory, str | os.PathLike):
            raise ArgumentError(
                f"Checkpointer: directory must be a path, given {type(directory).__name__}"
            )
        if "\x00" in os.fsdecode(directory):
            raise ConfigError(f"Checkpointer: cannot use directory {directory!r}: a NUL byte")
        try:
            self.directory = Path(directory).absolute()
            is_file = self.directory.exists() and not self.directory.is_dir()
        except (OSError, ValueError) as e:  # a name too long, a NUL byte
            raise ConfigError(f"Checkpointer: cannot use directory {str(directory)!r}: {e}") from e
        if is_file:
            raise FileFormatError(
                f"checkpoint directory {str(self.directory)!r} is a file, not a directory"
            )
        self.keep, self.best, self.mode = keep, best, mode
        self._cleaned = False  # leftovers of killed saves are removed before the first save

        options = ocp.CheckpointManagerOptions(
            # Our own policy: the last `keep` complete steps OR the best one; never a folder
            # that is not a complete checkpoint.
            preservation_policy=_Retention(self),
            # Deleting renames the step into _TRASH first (atomic); `save` then removes it.
            todelete_subdir=_TRASH,
            # Listing steps never fails on one step's damaged commit metadata.
            step_name_format=_step_name_format(),
            # Reading a run must not create its folder: `save` creates it.
            create=False,
            enable_async_checkpointing=False,
        )
        registry = ocp.handlers.DefaultCheckpointHandlerRegistry()
        # use_ocdbt (orbax's default, pinned): every array is a key in one tensorstore
        # database, so a param named "../x" never becomes a file path.
        standard = ocp.StandardCheckpointHandler(use_ocdbt=True)
        registry.add(_ARRAYS, ocp.args.StandardSave, standard)
        registry.add(_ARRAYS, ocp.args.StandardRestore, standard)
        # Same on-disk format; PyTreeRestore allows a partial restore (params and state only).
        registry.add(_ARRAYS, ocp.args.PyTreeRestore, ocp.PyTreeCheckpointHandler(use_ocdbt=True))
        for item in (_METADATA, _MANIFEST):
            handler = ocp.JsonCheckpointHandler(filename=item)
            registry.add(item, ocp.args.JsonSave, handler)
            registry.add(item, ocp.args.JsonRestore, handler)
        try:
            self._manager = ocp.CheckpointManager(
                self.directory, options=options, handler_registry=registry
            )
        except Exception as e:
            raise FileFormatError(
                f"cannot open checkpoint directory {str(self.directory)!r}: {_short(e)}"
            ) from e

    # -- steps -------------------------------------------------------------------------------

    def steps(self) -> list[int]:
        """The saved (complete) steps, ascending."""
        return sorted(s for s in self._manager.all_steps() if self._is_complete(s))

    def latest_step(self) -> int | None:
        """The highest saved step, or ``None`` if there is none."""
        steps = self.steps()
        return steps[-1] if steps else None

    def best_step(self) -> int | None:
        """The best saved step by the ``best`` metric (the latest if ``best`` is ``None``);
        ``None`` if no saved step has a finite ``best`` metric."""
        if self.best is None:
            return self.latest_step()
        return self._best_of(self.steps())

    # -- save --------------------------------------------------------------------------------

    def save(
        self,
        ts: TrainState,
        *,
        metadata: Mapping[str, Any] | None = None,
        metrics: Mapping[str, float] | None = None,
        force: bool = False,
    ) -> None:
        """Save ``ts`` as step ``int(ts.step)``, with JSON ``metadata`` and ``metrics``.

        Args:
            ts: the train state; its ``rng`` (a typed key) is stored as ``key_data``; its
                ``step`` must be a scalar integer >= 0.
            metadata: anything JSON-serializable: the model's config, the data iterator's
                position, the history, ... Returned by :meth:`restore`.
            metrics: scalars for best-step tracking; must contain ``best`` if it is set. A step
                whose ``best`` metric is not finite is saved without metrics (it is kept while
                it is among the last ``keep``, and is never the best).
            force: replace an existing checkpoint of the same step, or save a step older than
                the latest. The old step is moved aside first and put back if the save fails.

        Returns once the step is on disk (orbax writes it to a temporary folder and renames it).
        Raises :class:`~nn_jax.errors.NNJaxError` if the step exists or is older than the latest
        and ``force`` is False, and :class:`~nn_jax.errors.FileFormatError` if a folder that is
        not a complete checkpoint already has the step's name (it is never overwritten).
        """
        tree = _to_tree(ts)
        step = _saved_step(ts)
        meta = _json_metadata(metadata)
        metric_values = None if metrics is None else _check_metrics(metrics, self.best)
        where = repr(str(self.directory))
        existing = self.steps()
        step_dir = self.directory / str(step)
        replacing = step in existing
        if replacing and not force:
            raise NNJaxError(
                f"step {step} is already saved in {where}; pass force=True to replace it"
            )
        if not replacing and (step_dir.exists() or step_dir.is_symlink()):
            raise FileFormatError(
                f"{str(step_dir)!r} exists but is not a complete checkpoint, so step {step} "
                "cannot be saved there; move it away (it was not modified)"
            )
        if not replacing and existing and step < existing[-1] and not force:
            raise NNJaxError(
                f"step {step} is older than the latest saved step {existing[-1]} in {where}; "
                "pass force=True to save it anyway"
            )
        self._make_directory()
        manifest = {
            "format": _FORMAT,
            "step": step,
            "metrics": metric_values,
            "checksums": {
                "algorithm": "sha256",
                "metadata": _json_digest(meta),
                "arrays": _digests(tree),
            },
        }
        args = ocp.args.Composite(
            **{
                _ARRAYS: ocp.args.StandardSave(tree),
                _METADATA: ocp.args.JsonSave(meta),
                _MANIFEST: ocp.args.JsonSave(manifest),
            }
        )
        if replacing:
            self._manager.delete(step)  # renamed into _TRASH, put back below if the save fails
        try:
            # force: orbax's own rule (a step must be newer than every step folder, complete
            # or not) is replaced by the checks above.
            saved = self._manager.save(step, args=args, force=True)
            self._manager.wait_until_finished()
        except BaseException:
            if replacing:
                self._put_back(step)
            raise
        _remove_tree(self.directory / _TRASH)
        if not saved:  # only if orbax's save policy declines; ours saves every step
            raise NNJaxError(f"orbax declined to save step {step} in {where}")

    # -- restore -----------------------------------------------------------------------------

    def restore(self, target: TrainState, *, step: int | None = None) -> tuple[TrainState, dict]:
        """The saved train state (latest step if ``step`` is None), placed in ``target``'s
        shardings, and its metadata.

        ``target`` gives the tree structure (optax's NamedTuples included), shapes, dtypes,
        shardings and the rng's key implementation. Each leaf is a ``jax.Array`` (restored
        like it: on its device, or sharded as it is) or a ``jax.ShapeDtypeStruct`` with a
        ``sharding`` (see :func:`abstract_target`: no model is materialized first). The mesh and
        specs need not be those of the save: orbax reads each device's slice of each saved
        array straight onto that device (see the module docstring).

        The target's tree is checked against the checkpoint's stored shapes and dtypes before
        any array is read; every mismatching path is listed in one
        :class:`~nn_jax.errors.ParamsError`. The arrays and the metadata are checked against
        the checksums saved with them (a :class:`FileFormatError` if any differs).

        Raises:
            ArgumentError: a ``ShapeDtypeStruct`` leaf has no sharding (paths listed).
            ShapeError: a leaf's sharding does not fit its shape, e.g. a mesh axis that does
                not divide the dimension it shards (paths listed).
        """
        target_tree = _to_tree(target)
        _check_target_shardings(target_tree, "Checkpointer.restore")
        step = self._resolve_step(step)
        meta, checksums = self._read_checked_metadata(step)
        saved = self._saved_tree(step)
        try:
            problems = _tree_diff(_shape_tree(saved), _shape_tree(target_tree))
        except Exception as e:  # a tree that orbax read but that makes no sense
            raise self._corrupt(step, e) from e
        if problems:
            raise ParamsError(
                f"checkpoint step {step} in {str(self.directory)!r} does not match the target "
                "train state:\n  " + "\n  ".join(problems)
            )
        # StandardRestore turns each leaf's sharding into orbax's ArrayRestoreArgs(sharding=...).
        tree = self._restore(step, ocp.args.StandardRestore(target_tree), checksums)
        rng = tree["rng"]
        if jax.dtypes.issubdtype(target.rng.dtype, jax.dtypes.prng_key):
            rng = jax.random.wrap_key_data(rng, impl=_key_impl(target.rng))
        ts = TrainState(tree["params"], tree["state"], tree["opt_state"], rng, tree["step"])
        return ts, meta

    def restore_arrays(self, *, step: int | None = None) -> tuple[dict, dict]:
        """``({"params": ..., "state": ...}, metadata)`` with NumPy arrays, without a target.

        For evaluating a run from its folder alone (rebuild the model from the metadata's
        config). The optimizer state, rng and step are not read. The arrays read and the
        metadata are checked against their checksums.
        """
        step = self._resolve_step(step)
        meta, checksums = self._read_checked_metadata(step)
        saved = self._saved_tree(step)
        try:
            wanted = {k: saved.get(k, {}) for k in ("params", "state")}
            abstract = jax.tree.map(
                lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype), wanted, is_leaf=_is_meta
            )
            restore_args = jax.tree.map(
                lambda _: ocp.RestoreArgs(restore_type=np.ndarray), abstract
            )
        except Exception as e:
            raise self._corrupt(step, e) from e
        args = ocp.args.PyTreeRestore(abstract, restore_args=restore_args, partial_restore=True)
        read = {k: v for k, v in checksums.items() if k.split("/")[0] in ("params", "state")}
        arrays = self._restore(step, args, read) or {}
        tree = {k: arrays.get(k) or {} for k in ("params", "state")}
        return tree, meta

    # -- lifetime ----------------------------------------------------------------------------

    def close(self) -> None:
        """Wait for pending work and release orbax's resources."""
        self._manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"Checkpointer({str(self.directory)!r}, keep={self.keep}, best={self.best!r}, "
            f"mode={self.mode!r})"
        )

    # -- helpers -----------------------------------------------------------------------------

    def _is_complete(self, step: int) -> bool:
        """Whether the folder of ``step`` is a finished orbax step with both of our items (a
        real folder, not a link)."""
        path = self.directory / str(step)
        try:
            return (
                path.is_dir()
                and not path.is_symlink()
                and (path / _COMMIT_FILE).is_file()
                and (path / _ARRAYS).is_dir()
                and (path / _METADATA).is_dir()
            )
        except OSError:
            return False

    def _metric(self, step: int) -> float | None:
        """The finite ``best`` metric saved with ``step`` (``None``: none, or unreadable)."""
        try:
            manifest = json.loads((self.directory / str(step) / _MANIFEST / _MANIFEST).read_text())
            value = float(manifest["metrics"][self.best])
        except (OSError, ValueError, TypeError, KeyError, IndexError, RecursionError):
            return None
        return value if math.isfinite(value) else None

    def _best_of(self, steps: Sequence[int]) -> int | None:
        """The step of ``steps`` with the best metric (the latest of equals), or ``None``."""
        sign = -1.0 if self.mode == "min" else 1.0
        scored = [(sign * v, s) for s in steps if (v := self._metric(s)) is not None]
        return max(scored)[1] if scored else None

    def _kept(self, steps: Sequence[int]) -> set[int]:
        """Which of ``steps`` (step folders orbax found) retention keeps: the latest ``keep``
        complete ones, the best one, and every folder that is not a complete checkpoint."""
        complete = sorted(s for s in steps if self._is_complete(s))
        kept = set(steps) - set(complete)
        kept.update(complete[-self.keep :])
        if self.best is not None:
            best = self._best_of(complete)
            if best is not None:
                kept.add(best)
        return kept

    def _make_directory(self) -> None:
        where = repr(str(self.directory))
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except FileExistsError as e:
            raise FileFormatError(f"checkpoint directory {where} is a file, not a directory") from e
        except NotADirectoryError as e:
            raise FileFormatError(
                f"cannot create checkpoint directory {where}: a parent is a file"
            ) from e
        except OSError as e:
            raise NNJaxError(f"cannot create checkpoint directory {where}: {e.strerror}") from e
        if not self._cleaned:  # leftovers of a save or delete killed in an earlier process
            for path in self.directory.glob(f"*{_ORBAX_TMP}*"):
                _remove_tree(path)
            _remove_tree(self.directory / _TRASH)
            self._cleaned = True

    def _put_back(self, step: int) -> None:
        """Undo ``delete(step)`` of a replacing save that failed."""
        moved, final = self.directory / _TRASH / str(step), self.directory / str(step)
        try:
            if moved.is_dir() and not final.exists():
                moved.rename(final)
        except OSError:
            pass
        self._manager.reload()

    def _resolve_step(self, step: Any) -> int:
        if step is not None:
            step = _step_argument(step)
        where = repr(str(self.directory))
        if not self.directory.exists():
            raise FileFormatError(f"no checkpoint: directory {where} does not exist")
        if not self.directory.is_dir():
            raise FileFormatError(f"checkpoint directory {where} is a file, not a directory")
        try:
            self._manager.reload()  # another process (the trainer) may have saved since
        except Exception as e:
            raise FileFormatError(f"cannot list the steps in {where}: {_short(e)}") from e
        steps = self.steps()
        if step is None:
            if not steps:
                raise FileFormatError(f"no checkpoint in {where}")
            return steps[-1]
        if step not in steps:
            path = self.directory / str(step)
            if path.exists() or path.is_symlink():
                raise FileFormatError(
                    f"{str(path)!r} is not a complete checkpoint (it needs {_COMMIT_FILE}, "
                    f"{_ARRAYS}/ and {_METADATA}/); complete steps: {steps}"
                )
            raise FileFormatError(f"no checkpoint of step {step} in {where}; saved steps: {steps}")
        return step

    def _saved_tree(self, step: int) -> dict:
        """The stored tree of array metadata (shape, dtype) of ``step``; no array is read."""
        _silence_late_tensorstore_callbacks()  # before the read: see there
        try:
            meta = self._manager.item_metadata(step)[_ARRAYS]
            tree = getattr(meta, "tree", None)
        except Exception as e:
            raise self._corrupt(
                step, f"cannot read the tree of its arrays ({_ARRAYS}/): {e}"
            ) from e
        if not isinstance(tree, dict) or not all(k in tree for k in ("params", "rng", "step")):
            raise self._corrupt(
                step, f"no train state found in {_ARRAYS}/ (tree: {tree!r:.200})"
            )  # fmt: skip
        return tree

    def _read_json(self, step: int, item: str) -> Any:
        """The JSON data of one of our items of ``step`` (``metadata/metadata``, ...)."""
        name = f"{item}/{item}"
        try:
            text = (self.directory / str(step) / item / item).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise self._corrupt(step, f"{name} is missing") from None
        except (OSError, UnicodeDecodeError) as e:
            raise self._corrupt(step, f"cannot read {name}: {e}") from e
        try:
            return json.loads(text)
        except (ValueError, RecursionError) as e:
            raise self._corrupt(step, f"{name} is not valid JSON ({e})") from e

    def _read_checked_metadata(self, step: int) -> tuple[dict, dict[str, Any]]:
        """The metadata of ``step``, checked against its manifest, and the manifest's array
        checksums. Read before any array, so that a bad step fails fast."""
        if not (self.directory / str(step) / _MANIFEST).is_dir():
            raise self._corrupt(
                step, f"it has no {_MANIFEST}/ (the checksums of its files); it is incomplete or "
                "was saved by an older nn_jax"
            )  # fmt: skip
        checksums = _check_manifest(self._read_json(step, _MANIFEST), step)
        if checksums is None:
            raise self._corrupt(step, f"{_MANIFEST}/{_MANIFEST} is not a manifest of this step")
        meta = self._read_json(step, _METADATA)
        if _json_digest(meta) != checksums["metadata"]:
            raise self._corrupt(
                step, f"{_METADATA}/{_METADATA} differs from the checksum saved with it (the file "
                "was changed after the save)"
            )  # fmt: skip
        if not isinstance(meta, dict):
            raise self._corrupt(step, f"its metadata is a {type(meta).__name__}, not an object")
        return meta, checksums["arrays"]

    def _restore(self, step: int, arrays: Any, expected: Mapping[str, str | None]) -> Any:
        """Restore the arrays of ``step`` (orbax restore args ``arrays``) and check them against
        ``expected``, their checksums by path."""
        _silence_late_tensorstore_callbacks()  # before the read: see there
        try:
            tree = self._manager.restore(step, args=ocp.args.Composite(**{_ARRAYS: arrays}))
            tree = tree[_ARRAYS]
            got = _digests(tree)
        except Exception as e:
            raise self._corrupt(step, e) from e
        # A digest is None for an array that was, or now is, sharded over several hosts: it
        # cannot be verified here (see the module docstring).
        differ = sorted(
            k
            for k in expected.keys() | got.keys()
            if k not in expected
            or k not in got
            or (None not in (expected[k], got[k]) and expected[k] != got[k])
        )
        if differ:
            listed = ", ".join(differ[:8]) + (f" and {len(differ) - 8} more" if differ[8:] else "")
            raise self._corrupt(
                step, f"{listed} differ{'s' if len(differ) == 1 else ''} from the checksums "
                "saved with the step (the files were changed after the save)"
            )  # fmt: skip
        return tree

    def _corrupt(self, step: int, why: object) -> FileFormatError:
        _silence_late_tensorstore_callbacks()
        path = repr(str(self.directory / str(step)))
        earlier = [s for s in self.steps() if s < step]
        hint = f" (to go on from an earlier step, {earlier}, move it away)" if earlier else ""
        return FileFormatError(f"checkpoint {path} is corrupt or incomplete: {_short(why)}{hint}")


def _step_name_format() -> Any:
    """orbax's standard step names (``20``), whose listing survives a damaged step.

    When orbax lists the steps (opening a folder, ``reload``), it reads each step's commit
    time from its ``_CHECKPOINT_METADATA``; one such file that is valid JSON of the wrong shape
    raises, and no step of the folder could be read. Here a commit time that cannot be read is
    the epoch (nn_jax ranks steps by number and metric, never by time).
    """
    step_lib = ocp.path.step
    standard = step_lib.standard_name_format()

    class SafeMetadata(step_lib.Metadata):  # type: ignore[name-defined]
        @property
        def commit_timestamp(self) -> datetime.datetime:
            try:
                return super().commit_timestamp
            except Exception:
                return datetime.datetime.fromtimestamp(0, tz=datetime.UTC)

    class NameFormat:
        """orbax's ``NameFormat`` protocol, by delegation to the standard one."""

        def __getattr__(self, name: str) -> Any:
            return getattr(standard, name)

        def build_name(self, step: int) -> str:
            return standard.build_name(step)

        def find_step(self, base_path: Any, step: int) -> Any:
            found = standard.find_step(base_path, step)
            return SafeMetadata(step=found.step, path=found.path)

        def find_all(self, base_path: Any) -> Any:
            return (SafeMetadata(step=m.step, path=m.path) for m in standard.find_all(base_path))

    return NameFormat()


class _Retention:
    """orbax's preservation policy for a :class:`Checkpointer` (see ``Checkpointer._kept``)."""

    def __init__(self, checkpointer: Checkpointer) -> None:
        self._checkpointer = checkpointer

    def should_preserve(self, checkpoints: Sequence[Any], *, context: Any) -> list[bool]:
        kept = self._checkpointer._kept([c.step for c in checkpoints])
        return [c.step in kept for c in checkpoints]


# --------------------------------------------------------------------------------------------
# Checks of what is saved and read.


def _step_argument(step: Any) -> int:
    """``restore(step=...)``: an int >= 0 (NumPy and JAX integer scalars too)."""
    try:
        if isinstance(step, bool | np.bool_):
            raise TypeError
        value = operator.index(step)
    except TypeError:
        raise ArgumentError(
            f"Checkpointer: step must be an int or None, given {type(step).__name__} {step!r:.80}"
        ) from None
    if value < 0:
        raise ConfigError(f"Checkpointer: step must be >= 0, given {value}")
    return value


def _saved_step(ts: TrainState) -> int:
    """``ts.step`` as the int that names its folder: a scalar integer >= 0."""
    step: Any = ts.step
    dtype = getattr(step, "dtype", None)
    integer = (isinstance(step, int) and not isinstance(step, bool)) or (
        dtype is not None and np.issubdtype(dtype, np.integer)
    )
    if not integer or np.ndim(step) != 0:
        shape = np.shape(step) if dtype is not None else ""
        raise ConfigError(
            "Checkpointer.save: the train state's step must be a scalar integer, given "
            f"{type(step).__name__} {dtype or ''}{shape}".rstrip()
        )
    value = int(step)
    if value < 0:
        raise ConfigError(f"Checkpointer.save: the train state's step must be >= 0, given {value}")
    return value


def _json_metadata(metadata: Mapping[str, Any] | None) -> Any:
    """``metadata`` as plain JSON data (tuples as lists, keys as strings), as it reads back."""
    if metadata is not None and not isinstance(metadata, Mapping):
        raise ConfigError(
            f"Checkpointer.save: metadata must be a dict, given {type(metadata).__name__}"
        )
    try:
        return json.loads(json.dumps({} if metadata is None else dict(metadata), allow_nan=False))
    except (TypeError, ValueError, RecursionError) as e:
        raise ConfigError(f"Checkpointer.save: metadata must be JSON-serializable: {e}") from e


def _json_digest(data: Any) -> str:
    """SHA-256 of ``data``'s canonical JSON (sorted keys); of its ``repr`` if it has none."""
    try:
        text = json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=True)
    except (TypeError, ValueError, RecursionError):
        text = repr(data)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _digest(leaf: Any) -> str | None:
    """SHA-256 of an array's dtype, shape and bytes; ``None`` for an array this process cannot
    read whole (sharded over several hosts: it is not verified).

    A sharded, fully addressable array is gathered to host memory for it (one array at a time,
    never onto one device), so the digest does not depend on how the array is sharded."""
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
        return None
    array = np.ascontiguousarray(np.asarray(leaf))
    digest = hashlib.sha256(f"{array.dtype.name}{array.shape}".encode())
    digest.update(array.reshape(-1).view(np.uint8).data)
    return digest.hexdigest()


def _digests(tree: Any) -> dict[str, str | None]:
    """``{"params/0/w": sha256, ...}`` for every array of ``tree``."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {_path_name(path): _digest(leaf) for path, leaf in leaves}


def _check_manifest(manifest: Any, step: int) -> dict[str, Any] | None:
    """The manifest's ``checksums`` if it is a well-formed manifest of ``step``, else None."""
    if not isinstance(manifest, dict) or manifest.get("format") != _FORMAT:
        return None
    checksums = manifest.get("checksums")
    if (
        manifest.get("step") != step
        or not isinstance(checksums, dict)
        or checksums.get("algorithm") != "sha256"
        or not isinstance(checksums.get("metadata"), str)
        or not isinstance(checksums.get("arrays"), dict)
        or not all(isinstance(v, str | None) for v in checksums["arrays"].values())
    ):
        return None
    return checksums


def _short(why: object) -> str:
    """An error (and the errors that caused it) on one line, without tensorstore's
    multi-kilobyte specs."""
    parts: list[str] = []
    seen: set[int] = set()
    while why is not None and id(why) not in seen and len(parts) < 4:
        seen.add(id(why))
        text = str(why).split(" See full TensorStore details:")[0]
        text = re.sub(r"\s*\[tensorstore_spec=.*?\]'?(?=\W*$|\s)", "", text, flags=re.S)
        text = " ".join(text.split()).rstrip(".")
        if text and not any(text in part for part in parts):
            parts.append(text)
        why = (why.__cause__ or why.__context__) if isinstance(why, BaseException) else None
    text = ": ".join(parts)
    return text if len(text) <= 400 else text[:397] + "..."


def _remove_tree(path: Path) -> None:
    """Remove a folder we own (a leftover temporary or deleted step); links are only unlinked."""
    try:
        if path.is_symlink():
            path.unlink()
        elif path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
    except OSError:
        pass


_silenced = False


def _silence_late_tensorstore_callbacks() -> None:
    """Drop the noise a failed restore leaves behind, so a corrupt checkpoint gives one error.

    When one array read fails, orbax returns while tensorstore's other reads are still in
    flight; they complete onto orbax's closed event loop later and print ``RuntimeError: Event
    loop is closed`` tracebacks (through ``sys.unraisablehook``, or ``sys.excepthook`` when
    tensorstore's callback prints it), orbax's abandoned read coroutines print theirs, and
    asyncio logs "Task exception was never retrieved".
    From the first read of a step's arrays or their metadata on (installed before the read: a
    failing read's late callbacks may print before its error is caught), exactly those are
    dropped; everything else still goes to the previous hook and logger.
    """
    global _silenced
    if _silenced:
        return
    _silenced = True
    previous = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        exc, code = unraisable.exc_value, getattr(unraisable.object, "cr_code", None)
        closed_loop = isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed"
        orbax_read = code is not None and "orbax" in Path(code.co_filename).parts
        if not (closed_loop or orbax_read):
            previous(unraisable)

    def keep(record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (
            message.startswith("Task exception was never retrieved") and "tensorstore" in message
        )

    previous_excepthook = sys.excepthook

    def excepthook(kind: type[BaseException], exc: BaseException, tb: Any) -> None:
        # tensorstore's C++ callbacks report through PyErr_Print, i.e. sys.excepthook
        if not (isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed"):
            previous_excepthook(kind, exc, tb)

    sys.unraisablehook = hook
    sys.excepthook = excepthook
    logging.getLogger("asyncio").addFilter(keep)


def _check_metrics(metrics: Mapping[str, Any], best: str | None) -> dict[str, float | None] | None:
    """The metrics as floats (non-finite ones as ``None``, JSON has no NaN); ``None`` (a step
    that can never be the best) if the best-step metric is NaN or infinite, so a diverged
    evaluation does not end the run."""
    if not isinstance(metrics, Mapping):
        raise ConfigError(f"Checkpointer.save: metrics must be a dict, given {metrics!r:.200}")
    try:
        values = {str(k): float(v) for k, v in metrics.items()}
    except (TypeError, ValueError) as e:
        raise ConfigError(
            f"Checkpointer.save: metrics must be scalars, given {metrics!r:.200}"
        ) from e
    if best is not None:
        if best not in values:
            raise ConfigError(
                f"Checkpointer.save: metrics has no {best!r} (the best-step metric); "
                f"given keys {sorted(values)}"
            )
        if not math.isfinite(values[best]):
            return None
    return {k: v if math.isfinite(v) else None for k, v in values.items()}


def _to_tree(ts: TrainState) -> dict[str, Any]:
    if not isinstance(ts, TrainState):
        raise ArgumentError(f"Checkpointer: expected a TrainState, given {type(ts).__name__}")
    rng = ts.rng
    if jax.dtypes.issubdtype(rng.dtype, jax.dtypes.prng_key):
        rng = _key_data(rng)  # orbax stores plain arrays, not typed keys
    return {
        "params": ts.params,
        "state": ts.state,
        "opt_state": ts.opt_state,
        "rng": rng,
        "step": ts.step,
    }


def _key_data(key: Any) -> Any:
    """``jax.random.key_data`` of a typed key array, or of its ``ShapeDtypeStruct`` (then a
    ``ShapeDtypeStruct`` with the key's sharding: the key data only adds trailing axes, which
    a ``NamedSharding`` or ``SingleDeviceSharding`` leaves unsharded)."""
    if not isinstance(key, jax.ShapeDtypeStruct):
        return jax.random.key_data(key)
    data = jax.eval_shape(jax.random.key_data, jax.ShapeDtypeStruct(key.shape, key.dtype))
    return jax.ShapeDtypeStruct(data.shape, data.dtype, sharding=key.sharding)


def _key_impl(key: Any) -> Any:
    """The PRNG implementation of a typed key array, or of its ``ShapeDtypeStruct`` (read
    while tracing, the one public way for an abstract key)."""
    if not isinstance(key, jax.ShapeDtypeStruct):
        return jax.random.key_impl(key)
    impls: list[Any] = []
    jax.eval_shape(lambda k: impls.append(jax.random.key_impl(k)), key)
    return impls[0]


def abstract_target(tree: Any, shardings: Any) -> Any:
    """``tree`` as ``jax.ShapeDtypeStruct`` leaves carrying ``shardings``: a restore target that
    holds no array.

    Take the train state's shapes from ``jax.eval_shape`` (nothing is computed or allocated),
    attach the shardings it should have after the restore (``jax.sharding.NamedSharding``, e.g.
    from :class:`nn_jax.rules.Rules`), and pass it to :meth:`Checkpointer.restore`, which
    reads each shard straight onto its device::

        abstract = jax.eval_shape(functools.partial(TrainState.create, model, opt), key, x)
        replicated = NamedSharding(mesh, P())
        target = abstract_target(abstract, TrainState(
            params=rules.shardings(abstract.params, mesh),
            state=replicated,
            opt_state=rules.opt_state_shardings(abstract.opt_state, abstract.params, mesh),
            rng=replicated,
            step=replicated,
        ))
        ts, metadata = checkpointer.restore(target)

    Args:
        tree: a pytree of arrays or ShapeDtypeStructs (a ``TrainState``, its params, ...).
        shardings: one ``jax.sharding.Sharding`` for every leaf, or a pytree whose structure
            is a prefix of ``tree``'s with a ``Sharding`` at each leaf (as ``jax.device_put``
            takes them): the ``Sharding`` at a node applies to every leaf below it.

    Returns:
        ``tree``'s structure; each leaf ``jax.ShapeDtypeStruct(shape, dtype, sharding=...)``.

    Raises:
        ArgumentError: ``shardings`` is not such a tree, or holds something other than a
            ``Sharding`` (the path is named).
        ShapeError: a sharding does not fit its leaf, e.g. a mesh axis that does not divide
            the dimension it shards (every such path is listed, with shape and spec).
    """
    is_sharding = lambda x: isinstance(x, jax.sharding.Sharding)  # noqa: E731
    leaves = jax.tree_util.tree_flatten_with_path(
        shardings, is_leaf=lambda x: x is None or is_sharding(x)
    )[0]
    for path, leaf in leaves:
        if not is_sharding(leaf):
            where = f" at {_path_name(path)!r}" if path else ""
            hint = ""
            if isinstance(leaf, jax.sharding.PartitionSpec):
                hint = "; put a PartitionSpec on a mesh with jax.sharding.NamedSharding(mesh, spec)"
            raise ArgumentError(
                f"abstract_target: shardings{where} must be a jax.sharding.Sharding, given "
                f"{leaf!r:.100}{hint}"
            )
    problems: list[str] = []

    def attach(path: Any, leaf: Any, sharding: Any) -> jax.ShapeDtypeStruct:
        dtype = leaf.dtype if hasattr(leaf, "dtype") else np.asarray(leaf).dtype
        try:
            return jax.ShapeDtypeStruct(np.shape(leaf), dtype, sharding=sharding)
        except ValueError as e:  # a spec longer than the rank, an unknown mesh axis
            problems.append(f"{_path_name(path)}: {_short(e)}")
            return jax.ShapeDtypeStruct(np.shape(leaf), dtype)

    def attach_all(prefix: Any, sharding: Any, subtree: Any) -> Any:
        return jax.tree_util.tree_map_with_path(
            lambda p, x: attach((*prefix, *p), x, sharding), subtree
        )

    try:
        out = jax.tree_util.tree_map_with_path(attach_all, shardings, tree, is_leaf=is_sharding)
    except ValueError as e:
        raise ArgumentError(
            f"abstract_target: shardings must be one Sharding or a tree whose structure is a "
            f"prefix of the tree's: {_short(e)}"
        ) from e
    if problems:
        raise ShapeError(
            "abstract_target: shardings that do not fit their arrays:\n  " + "\n  ".join(problems)
        )
    _check_target_shardings(out, "abstract_target")
    return out


def _check_target_shardings(tree: Any, where: str) -> None:
    """Every ``ShapeDtypeStruct`` leaf of a restore target has a sharding over real devices
    that fits its shape; checked before orbax reads anything, so a bad target never surfaces
    as a "corrupt checkpoint"."""
    missing, problems = [], []
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if not isinstance(leaf, jax.ShapeDtypeStruct):
            continue
        if leaf.sharding is None:
            missing.append(_path_name(path))
        elif (problem := _sharding_problem(leaf.shape, leaf.sharding)) is not None:
            problems.append(f"{_path_name(path)}: {problem}")
    if missing:
        listed = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if missing[8:] else "")
        raise ArgumentError(
            f"{where}: a ShapeDtypeStruct in the target needs a sharding to restore into, and "
            f"{listed} {'has' if len(missing) == 1 else 'have'} none; build the target with "
            "nn_jax.checkpoint.abstract_target(tree, shardings)"
        )
    if problems:
        raise ShapeError(
            f"{where}: target shardings that do not fit their arrays:\n  " + "\n  ".join(problems)
        )


def _sharding_problem(shape: tuple[int, ...], sharding: Any) -> str | None:
    """Why ``sharding`` cannot hold an array of ``shape`` (``None`` if it can)."""
    try:
        sharding.device_set  # noqa: B018  # raises for an AbstractMesh
    except ValueError:
        return (
            f"its sharding {sharding} is over an abstract mesh (as jax.eval_shape returns it); "
            "give a sharding over real devices"
        )
    if isinstance(sharding, jax.sharding.NamedSharding):
        for dim, axes in enumerate(sharding.spec):
            names = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
            ways = math.prod(sharding.mesh.shape[name] for name in names)
            if dim < len(shape) and shape[dim] % ways:
                return (
                    f"shape {shape}, spec {sharding.spec}: dimension {dim} has size "
                    f"{shape[dim]}, which mesh axes {names} ({ways} ways) do not divide"
                )
    try:
        sharding.shard_shape(shape)
    except Exception as e:  # any other sharding that does not fit
        return f"shape {shape}: {_short(e)}"
    return None


def _path_name(path: Any) -> str:
    """A key path as the "/"-joined names used in messages and the manifest."""
    return "/".join(_key_name(k) for k in path)


def _is_meta(x: Any) -> bool:
    return isinstance(x, ocp.metadata.Metadata)


def _key_name(key: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def _shape_tree(tree: Any) -> dict[str, Any]:
    """A nested dict of ``(shape, dtype)`` leaves; tuples and NamedTuples become str-keyed dicts.

    Orbax stores tuples as lists and NamedTuples as dicts of their fields, so both sides are
    compared in this one form. Empty subtrees (``{}``, ``EmptyState()``, ``None``) vanish.
    """
    out: dict[str, Any] = {}
    leaves = jax.tree_util.tree_flatten_with_path(tree, is_leaf=_is_meta)[0]
    for path, leaf in leaves:
        node = out
        names = [_key_name(k) for k in path]
        for name in names[:-1]:
            node = node.setdefault(name, {})
        dtype = leaf.dtype if hasattr(leaf, "dtype") else np.asarray(leaf).dtype
        node[names[-1]] = (tuple(np.shape(leaf)), np.dtype(dtype))
    return out


def _describe(x: Any) -> str:
    if isinstance(x, dict):
        return "a subtree"
    shape, dtype = x
    return f"{shape} {dtype}"


def _tree_diff(saved: dict, expected: dict, prefix: str = "") -> list[str]:
    problems = []
    for name in sorted(saved.keys() | expected.keys()):
        path = f"{prefix}{name}"
        if name not in saved:
            problems.append(f"{path}: missing in checkpoint")
        elif name not in expected:
            problems.append(f"{path}: in checkpoint, not in the target")
        elif isinstance(saved[name], dict) and isinstance(expected[name], dict):
            problems += _tree_diff(saved[name], expected[name], f"{path}/")
        elif saved[name] != expected[name]:
            problems.append(
                f"{path}: saved {_describe(saved[name])}, expected {_describe(expected[name])}"
            )
    return problems

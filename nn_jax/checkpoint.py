"""Checkpoints of a :class:`~nn_jax.train.TrainState`, built on orbax-checkpoint.

A :class:`Checkpointer` wraps one ``orbax.checkpoint.CheckpointManager`` over a folder with one
sub-folder per step::

    run/
      20/train_state/   params, state, opt_state, rng (as key data), step   (orbax arrays)
      20/metadata/      JSON: the model's config, the data position, the history, ...
      20/metrics/       JSON: the metrics used to pick the best step (written by orbax)
      30/...

Why orbax: it writes arrays with tensorstore (no pickle), reads a checkpoint's tree of shapes and
dtypes without loading the arrays, keeps the last ``keep`` steps plus the best one, and makes each
save atomic: a step is written to ``<step>.orbax-checkpoint-tmp`` and renamed to ``<step>`` only
once complete, so a process killed mid-save leaves the previous steps untouched and no
half-written step that would be listed or restored.

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

import json
import math
import os
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import jax
import numpy as np

from nn_jax.errors import ConfigError, NNJaxError, ParamsError
from nn_jax.train import TrainState


class _Orbax:
    """``orbax.checkpoint``, imported on first use: it takes about 0.5 s to import, which every
    ``import nn_jax`` (and every ``nn-jax`` command) would otherwise pay."""

    def __getattr__(self, name: str) -> Any:
        import orbax.checkpoint  # type: ignore[import-untyped]  # no py.typed marker

        return getattr(orbax.checkpoint, name)


ocp = _Orbax()

__all__ = ["Checkpointer"]

_ARRAYS = "train_state"
_METADATA = "metadata"
_FIELDS = ("params", "state", "opt_state", "rng", "step")


class Checkpointer:
    """Save and restore :class:`TrainState` checkpoints in ``directory`` (orbax underneath).

    Keeps the last ``keep`` steps and, when ``best`` names a metric (e.g. ``"val/loss"``), also
    the best step by that metric (lowest for ``mode="min"``, highest for ``"max"``). Saving is
    synchronous: :meth:`save` returns once the step is complete on disk.

    Args:
        directory: the run's checkpoint folder; created by the first :meth:`save`.
        keep: how many of the latest steps to keep (>= 1).
        best: the metric that ranks steps, read from ``save(..., metrics=...)``; ``None`` keeps
            only the latest ``keep``.
        mode: whether a lower (``"min"``) or higher (``"max"``) ``best`` metric is better.

    Use it as a context manager, or call :meth:`close`, so orbax's resources are released.
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
        self.directory = Path(directory).absolute()
        if self.directory.exists() and not self.directory.is_dir():
            raise NNJaxError(
                f"checkpoint directory {str(self.directory)!r} is a file, not a directory"
            )
        self.keep, self.best, self.mode = keep, best, mode

        policies: list[Any] = [ocp.checkpoint_managers.LatestN(n=keep)]
        best_fn = None
        if best is not None:
            best_fn = _metric_getter(best)
            # Without metrics a step is kept by LatestN only (not forever, as orbax's default).
            policies.append(
                ocp.checkpoint_managers.BestN(
                    get_metric_fn=best_fn,
                    reverse=(mode == "min"),
                    n=1,
                    keep_checkpoints_without_metrics=False,
                )
            )
        options = ocp.CheckpointManagerOptions(
            # Last `keep` OR the best one; orbax's max_to_keep + best_fn would keep the best
            # `keep` instead. best_fn/best_mode still drive `best_step()`.
            preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(policies),
            best_fn=best_fn,
            best_mode=mode,
            keep_checkpoints_without_metrics=False,
            # Reading a run must not create its folder: `save` creates it.
            create=False,
            enable_async_checkpointing=False,
        )
        registry = ocp.handlers.DefaultCheckpointHandlerRegistry()
        registry.add(_ARRAYS, ocp.args.StandardSave, ocp.StandardCheckpointHandler())
        registry.add(_ARRAYS, ocp.args.StandardRestore, ocp.StandardCheckpointHandler())
        # Same on-disk format; PyTreeRestore allows a partial restore (params and state only).
        registry.add(_ARRAYS, ocp.args.PyTreeRestore, ocp.PyTreeCheckpointHandler())
        registry.add(_METADATA, ocp.args.JsonSave, ocp.JsonCheckpointHandler())
        registry.add(_METADATA, ocp.args.JsonRestore, ocp.JsonCheckpointHandler())
        try:
            self._manager = ocp.CheckpointManager(
                self.directory, options=options, handler_registry=registry
            )
        except Exception as e:
            raise NNJaxError(
                f"cannot open checkpoint directory {str(self.directory)!r}: {e}"
            ) from e

    # -- steps -------------------------------------------------------------------------------

    def steps(self) -> list[int]:
        """The saved (complete) steps, ascending."""
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        """The highest saved step, or ``None`` if there is none."""
        return self._manager.latest_step()

    def best_step(self) -> int | None:
        """The best saved step by the ``best`` metric (the latest if ``best`` is ``None``)."""
        return self._manager.best_step()

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
            ts: the train state; its ``rng`` (a typed key) is stored as ``key_data``.
            metadata: anything JSON-serializable: the model's config, the data iterator's
                position, the history, ... Returned by :meth:`restore`.
            metrics: scalars for best-step tracking; must contain ``best`` if it is set. A step
                whose ``best`` metric is not finite is saved without metrics (it is kept while
                it is among the last ``keep``, and is never the best).
            force: replace an existing checkpoint of the same step, or save a step older than
                the latest. Replacing is not atomic: the old step is deleted first.

        Returns once the step is on disk (orbax writes it to a temporary folder and renames it).
        Raises :class:`~nn_jax.errors.NNJaxError` if the step exists or is older than the latest
        and ``force`` is False.
        """
        tree = _to_tree(ts)
        step = int(ts.step)
        meta = {} if metadata is None else dict(metadata)
        try:
            json.dumps(meta, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"Checkpointer.save: metadata must be JSON-serializable: {e}") from e
        metric_values = None if metrics is None else _check_metrics(metrics, self.best)
        existing = self.steps()
        if step in existing:
            if not force:
                raise NNJaxError(
                    f"step {step} is already saved in {str(self.directory)!r}; "
                    "pass force=True to replace it"
                )
            self._manager.delete(step)
        elif existing and step < existing[-1] and not force:
            raise NNJaxError(
                f"step {step} is older than the latest saved step {existing[-1]} in "
                f"{str(self.directory)!r}; pass force=True to save it anyway"
            )
        self.directory.mkdir(parents=True, exist_ok=True)
        args = ocp.args.Composite(
            **{
                _ARRAYS: ocp.args.StandardSave(tree),
                _METADATA: ocp.args.JsonSave(meta),
            }
        )
        saved = self._manager.save(step, args=args, metrics=metric_values, force=force)
        self._manager.wait_until_finished()
        if not saved:  # only if orbax's save policy declines; ours saves every step
            raise NNJaxError(f"orbax declined to save step {step} in {str(self.directory)!r}")

    # -- restore -----------------------------------------------------------------------------

    def restore(self, target: TrainState, *, step: int | None = None) -> tuple[TrainState, dict]:
        """The saved train state (latest step if ``step`` is None) and its metadata.

        ``target`` gives the tree structure (optax's NamedTuples included), shapes, dtypes,
        shardings and the rng's key implementation. Its tree is checked against the
        checkpoint's stored shapes and dtypes before any array is read; every mismatching path
        is listed in one :class:`~nn_jax.errors.ParamsError`.
        """
        step = self._resolve_step(step)
        saved = self._saved_tree(step)
        target_tree = _to_tree(target)
        problems = _tree_diff(_shape_tree(saved), _shape_tree(target_tree))
        if problems:
            raise ParamsError(
                f"checkpoint step {step} in {str(self.directory)!r} does not match the target "
                "train state:\n  " + "\n  ".join(problems)
            )
        restored = self._restore(
            step,
            **{
                _ARRAYS: ocp.args.StandardRestore(target_tree),
                _METADATA: ocp.args.JsonRestore(),
            },
        )
        tree = restored[_ARRAYS]
        rng = tree["rng"]
        if jax.dtypes.issubdtype(target.rng.dtype, jax.dtypes.prng_key):
            rng = jax.random.wrap_key_data(rng, impl=jax.random.key_impl(target.rng))
        ts = TrainState(tree["params"], tree["state"], tree["opt_state"], rng, tree["step"])
        return ts, dict(restored[_METADATA] or {})

    def restore_arrays(self, *, step: int | None = None) -> tuple[dict, dict]:
        """``({"params": ..., "state": ...}, metadata)`` with NumPy arrays, without a target.

        For evaluating a run from its folder alone (rebuild the model from the metadata's
        config). The optimizer state, rng and step are not read.
        """
        step = self._resolve_step(step)
        saved = self._saved_tree(step)
        wanted = {k: saved.get(k, {}) for k in ("params", "state")}
        abstract = jax.tree.map(
            lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype), wanted, is_leaf=_is_meta
        )
        restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), abstract)
        restored = self._restore(
            step,
            **{
                _ARRAYS: ocp.args.PyTreeRestore(
                    abstract, restore_args=restore_args, partial_restore=True
                ),
                _METADATA: ocp.args.JsonRestore(),
            },
        )
        arrays = restored[_ARRAYS] or {}
        tree = {k: arrays.get(k) or {} for k in ("params", "state")}
        return tree, dict(restored[_METADATA] or {})

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

    def _resolve_step(self, step: int | None) -> int:
        where = repr(str(self.directory))
        if not self.directory.exists():
            raise NNJaxError(f"checkpoint directory {where} does not exist")
        if not self.directory.is_dir():
            raise NNJaxError(f"checkpoint directory {where} is a file, not a directory")
        self._manager.reload()  # another process (the trainer) may have saved since
        steps = self.steps()
        if not steps:
            raise NNJaxError(f"no checkpoint in {where}")
        if step is None:
            return steps[-1]
        if step not in steps:
            raise NNJaxError(f"no checkpoint of step {step} in {where}; saved steps: {steps}")
        return int(step)

    def _saved_tree(self, step: int) -> dict:
        """The stored tree of array metadata (shape, dtype) of ``step``; no array is read."""
        try:
            meta = self._manager.item_metadata(step)[_ARRAYS]
            tree = getattr(meta, "tree", None)
        except Exception as e:
            raise self._corrupt(step, e) from e
        if not isinstance(tree, dict) or not all(k in tree for k in ("params", "rng", "step")):
            raise self._corrupt(step, f"no train state found (metadata: {tree!r:.200})")
        return tree

    def _restore(self, step: int, **items: Any) -> Mapping[str, Any]:
        try:
            return self._manager.restore(step, args=ocp.args.Composite(**items))
        except Exception as e:
            raise self._corrupt(step, e) from e

    def _corrupt(self, step: int, why: object) -> NNJaxError:
        path = repr(str(self.directory / str(step)))
        return NNJaxError(f"checkpoint {path} is corrupt or incomplete: {why}")


def _metric_getter(name: str) -> Any:
    def get(metrics: Mapping[str, Any]) -> float:
        return float(metrics[name])

    return get


def _check_metrics(metrics: Mapping[str, Any], best: str | None) -> dict[str, float] | None:
    """The metrics as floats; ``None`` (a step that can never be the best) if the best-step
    metric is NaN or infinite, so a diverged evaluation does not end the run."""
    try:
        values = {str(k): float(v) for k, v in metrics.items()}
    except (TypeError, ValueError) as e:
        raise ConfigError(f"Checkpointer.save: metrics must be scalars, given {metrics!r}") from e
    if best is not None:
        if best not in values:
            raise ConfigError(
                f"Checkpointer.save: metrics has no {best!r} (the best-step metric); "
                f"given keys {sorted(values)}"
            )
        if not math.isfinite(values[best]):
            return None
    return values


def _to_tree(ts: TrainState) -> dict[str, Any]:
    if not isinstance(ts, TrainState):
        raise ConfigError(f"Checkpointer: expected a TrainState, given {type(ts).__name__}")
    rng = ts.rng
    if jax.dtypes.issubdtype(rng.dtype, jax.dtypes.prng_key):
        rng = jax.random.key_data(rng)  # orbax stores plain arrays, not typed keys
    return {
        "params": ts.params,
        "state": ts.state,
        "opt_state": ts.opt_state,
        "rng": rng,
        "step": ts.step,
    }


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

"""Run folders: train a recipe into one, evaluate one, print a model's summary.

A run folder ``DIR`` holds:

* ``config.json`` - written before training: the package version, the recipe (model, dataset),
  the model's JSON config (:func:`nn_jax.config.to_config`), the input spec, the
  hyper-parameters and the data sizes. With the checkpoint it is all ``nn-jax eval`` reads.
* ``checkpoints/`` - :class:`nn_jax.checkpoint.Checkpointer` steps (the latest 3 and the best
  by validation loss); ``nn-jax train`` resumes from the latest.
* ``history.jsonl`` - every train and validation record (:class:`nn_jax.loggers.JsonlLogger`).
  On resume, lines past the checkpoint's step (logged after the last save by the interrupted
  run) are dropped before training continues, so each step is in the file once.
* ``curves.png`` (:func:`nn_jax.plots.plot_history`) and ``result.json``, after training.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
import optax

from nn_jax.checkpoint import Checkpointer
from nn_jax.config import from_config, to_config
from nn_jax.errors import ConfigError, FileFormatError, NNJaxError
from nn_jax.inspect import summary
from nn_jax.jobs.recipes import Data, Recipe, find_recipe, input_spec
from nn_jax.loggers import JsonlLogger, read_jsonl
from nn_jax.monitor import Monitor
from nn_jax.parallel import make_mesh
from nn_jax.plots import plot_history
from nn_jax.train import fit, make_eval_step

__all__ = [
    "TrainOptions",
    "check_out_dir",
    "evaluate_run",
    "format_metrics",
    "model_summary",
    "train_run",
    "version",
]

# Hyper-parameters that must match to resume a run (epochs/steps are the new total).
_SAME_TO_RESUME = ("learning_rate", "batch_size", "seed")
# The step counter is an int32.
_MAX_STEPS = 2**31 - 1


def version() -> str:
    """The installed package's version."""
    try:
        return importlib.metadata.version("nn-jax")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - a source checkout
        from nn_jax import __version__

        return __version__


class TrainOptions:
    """What ``nn-jax train`` was asked for; ``None`` means the recipe's default."""

    def __init__(
        self,
        *,
        epochs: int | None = None,
        steps: int | None = None,
        learning_rate: float | None = None,
        batch_size: int | None = None,
        seed: int = 0,
        val_every: int | None = None,
        progress: bool = True,
        mesh: str | None = None,
    ) -> None:
        self.epochs, self.steps = epochs, steps
        self.learning_rate, self.batch_size = learning_rate, batch_size
        self.seed, self.val_every, self.progress = seed, val_every, progress
        self.mesh = mesh  # "data=2,fsdp=4" (nn_jax.parallel.make_mesh), or None: one device


def check_out_dir(out: str | os.PathLike[str]) -> Path:
    """``out`` if it is, or can be created as, a writable folder; else a one-line error.

    Nothing is created: the check runs before any training (or data loading).
    """
    path = Path(out)
    try:
        is_file = path.exists() and not path.is_dir()
        existing = path
        while not existing.exists():
            existing = existing.parent
        existing_is_dir = existing.is_dir()
    except (OSError, ValueError) as e:  # a name too long, a NUL byte, no permission
        raise NNJaxError(f"--out {str(path)[:200]!r} cannot be used as a folder: {e}") from None
    if is_file:
        raise NNJaxError(f"--out {str(path)!r} is a file, not a folder")
    if not existing_is_dir:
        raise NNJaxError(f"--out {str(path)!r}: {str(existing)!r} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise NNJaxError(f"--out {str(path)!r}: {str(existing)!r} is not writable")
    return path


def _write_json(path: Path, data: Any) -> None:
    """Write ``data`` to ``path`` atomically: a crash leaves the old file or the new one."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------
# Training.


def _num_examples(recipe: Recipe, part: tuple[Any, Any]) -> int:
    """Rows of a batch, or the labelled nodes of a graph's ``(labels, mask)`` targets."""
    if recipe.full_batch:
        return int(np.sum(part[1][1]))
    return len(jax.tree.leaves(part[1])[0])


def _settings(recipe: Recipe, options: TrainOptions, data: Data) -> dict[str, Any]:
    """The run's hyper-parameters, defaults filled in, checked against the data."""
    n_train = _num_examples(recipe, data.train)
    if recipe.full_batch:
        if options.batch_size is not None:
            raise ConfigError(
                f"{recipe.model} on {recipe.dataset} trains on the whole graph at every step; "
                "drop --batch-size"
            )
        batch_size, steps_per_epoch = None, 1
    else:
        batch_size = options.batch_size or recipe.batch_size
        if batch_size > n_train:
            raise ConfigError(
                f"--batch-size {batch_size} is larger than the {n_train} training examples "
                f"of {recipe.dataset}"
            )
        steps_per_epoch = n_train // batch_size
    epochs = options.epochs if options.steps is None else None
    if epochs is None and options.steps is None:
        epochs = recipe.epochs
    total = options.steps if options.steps is not None else epochs * steps_per_epoch  # type: ignore[operator]
    if total > _MAX_STEPS:
        raise ConfigError(
            f"the run would take {total} steps, more than the {_MAX_STEPS} a run can count; "
            "ask for fewer --epochs or --steps"
        )
    val_every = options.val_every or recipe.val_every or steps_per_epoch
    return {
        "epochs": epochs,
        "steps": options.steps,
        "total_steps": total,
        "learning_rate": options.learning_rate or recipe.learning_rate,
        "batch_size": batch_size,
        "seed": options.seed,
        "val_every": min(val_every, total),
    }


def _config(recipe: Recipe, model: Any, data: Data, settings: dict[str, Any]) -> dict[str, Any]:

    example = data.train[0]
    if not recipe.full_batch:
        example = jax.tree.map(lambda a: a[: settings["batch_size"]], example)
    return {
        "nn_jax_version": version(),
        "recipe": recipe.name,
        "model_name": recipe.model,
        "dataset": recipe.dataset,
        "model": to_config(model),
        "input": input_spec(example),
        "hyperparameters": settings,
        "data": {
            part: _num_examples(recipe, getattr(data, part))
            for part in ("train", "validation", "test")
        },
    }


def _read_config(out: Path) -> dict[str, Any]:
    """The run folder's config.json, checked for what resuming and evaluating read."""
    path = out / "config.json"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileFormatError(
            f"{str(out)!r} has no config.json: not an nn-jax run folder"
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise FileFormatError(f"cannot read {str(path)!r}: {e}") from None
    try:
        config = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise FileFormatError(f"{str(path)!r} is not valid JSON: {e}") from None
    problem = _config_problem(config)
    if problem:
        raise FileFormatError(f"{str(path)!r} is not an nn-jax run config: {problem}")
    return config


def _config_problem(config: Any) -> str | None:
    """What is wrong with a run config read from JSON (``None``: nothing)."""
    if not isinstance(config, dict):
        return f"expected a JSON object, found {type(config).__name__}"
    for key, kind in [("recipe", str), ("model_name", str), ("dataset", str), ("model", dict),
                      ("hyperparameters", dict)]:  # fmt: skip
        if not isinstance(config.get(key), kind):
            found = type(config[key]).__name__ if key in config else "nothing"
            return f"{key!r} must be a {'string' if kind is str else 'JSON object'}, found {found}"
    seed = config["hyperparameters"].get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        return f"hyperparameters.seed must be an integer in [0, 2**32), found {seed!r:.40}"
    return None


def _check_resumable(out: Path, recipe: Recipe, settings: dict[str, Any]) -> None:
    """A folder with a checkpoint must hold a run of the same recipe and settings."""
    saved = _read_config(out)
    if saved["recipe"] != recipe.name:
        raise NNJaxError(
            f"{str(out)!r} holds a run of {saved['recipe']}, not {recipe.name}; "
            "choose another --out"
        )
    old = saved["hyperparameters"]
    for key in _SAME_TO_RESUME:
        if old.get(key) != settings[key]:
            flag = "--" + key.replace("_", "-").replace("learning-rate", "lr")
            raise NNJaxError(
                f"{str(out)!r} holds a run with {flag} {old.get(key)}, given {settings[key]}; "
                "resume with the same settings or choose another --out"
            )


def _trim_history(path: Path, step: int) -> None:
    """Keep the records of steps <= ``step`` (those saved with the checkpoint); the file is
    replaced atomically, so a crash here loses no record."""

    if not path.exists():
        return
    kept = []
    for record in read_jsonl(path):
        record_step = record.get("step")
        if isinstance(record_step, bool) or not isinstance(record_step, int):
            raise FileFormatError(
                f"{str(path)!r}: a record has no integer 'step' ({str(record)[:80]}); fix or "
                "delete the file to resume"
            )
        if record_step <= step:
            kept.append(record)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    with JsonlLogger(tmp) as logger:
        for record in kept:
            logger(None, record)
    os.replace(tmp, path)


def evaluate(recipe: Recipe, model: Any, params: Any, state: Any, part: Any) -> dict[str, float]:
    """Eval-mode loss and metrics of ``recipe`` on one part of its data, in one batch."""

    values = make_eval_step(recipe.objective(model))(params, state, part)
    return {k: float(v) for k, v in jax.device_get(values).items()}


def format_metrics(recipe: Recipe, values: dict[str, float], examples: int) -> str:
    """``"test accuracy 97.22% (loss 0.0931, 359 examples)"``: the line train and eval print."""
    if recipe.headline == "loss":
        return f"test {recipe.headline_label} {values['loss']:.4f} ({examples} examples)"
    return (
        f"test {recipe.headline_label} {100 * values[recipe.headline]:.2f}% "
        f"(loss {values['loss']:.4f}, {examples} examples)"
    )


def train_run(
    model_name: str, dataset: str, out: str | os.PathLike[str], options: TrainOptions
) -> dict[str, Any]:
    """Train a recipe into the run folder ``out`` (resuming its checkpoint); the result dict."""

    recipe = find_recipe(model_name, dataset)
    out_dir = check_out_dir(out)
    mesh = None if options.mesh is None else make_mesh(options.mesh)  # before any data is read
    data = recipe.load(options.seed)
    settings = _settings(recipe, options, data)
    model = recipe.build()
    config = _config(recipe, model, data, settings)

    out_dir.mkdir(parents=True, exist_ok=True)
    checkpointer = Checkpointer(out_dir / "checkpoints", best="validation/loss")
    resumed_from = checkpointer.latest_step() if (out_dir / "checkpoints").exists() else None
    history_path = out_dir / "history.jsonl"
    if resumed_from is not None:
        _check_resumable(out_dir, recipe, settings)
        if resumed_from > settings["total_steps"]:
            raise NNJaxError(
                f"{str(out_dir)!r} is at step {resumed_from}, past the requested "
                f"{settings['total_steps']} steps"
            )
        _trim_history(history_path, resumed_from)
    elif history_path.exists():
        history_path.unlink()  # a fresh run: no records of an earlier, unsaved one
    _write_json(out_dir / "config.json", config)

    train_data: Any = [data.train] if recipe.full_batch else data.train  # one batch a pass
    start = time.perf_counter()
    try:
        with JsonlLogger(history_path) as logger:
            ts, history = fit(
                model,
                recipe.loss,
                optax.adam(settings["learning_rate"]),
                train_data,
                key=jax.random.key(settings["seed"]),
                epochs=settings["epochs"],
                steps=settings["steps"],
                batch_size=settings["batch_size"],
                metrics=dict(recipe.metrics),
                validation=data.validation,
                val_every=settings["val_every"],
                callbacks=[logger],
                checkpoint=checkpointer,
                # the seed's failure modes: dead ReLUs, saturated units, where a NaN started
                monitor=Monitor(activations=True),
                progress=options.progress,
                mesh=mesh,
            )
    finally:
        checkpointer.close()
    seconds = time.perf_counter() - start

    test = evaluate(recipe, model, ts.params, ts.state, data.test)
    title = f"{recipe.model} on {recipe.dataset}"
    plot_history(history, path=out_dir / "curves.png", title=title)
    examples, steps = _num_examples(recipe, data.test), int(ts.step)
    result: dict[str, Any] = {
        "recipe": recipe.name,
        "test": test,
        "test_examples": examples,
        "steps": steps,
        "resumed_from_step": resumed_from,
        "train_seconds": round(seconds, 2),
        "out": str(out_dir),
    }
    _write_json(out_dir / "result.json", result)
    result["line"] = (
        f"{title}: {format_metrics(recipe, test, examples)}; "
        f"{steps} steps in {seconds:.1f} s; run folder {out_dir}"
    )
    return result


# --------------------------------------------------------------------------------------------
# Evaluation and summaries.


def evaluate_run(out: str | os.PathLike[str]) -> dict[str, Any]:
    """Test metrics of the run folder ``out``'s latest checkpoint, from its files alone."""

    out_dir = Path(out)
    try:
        is_dir = out_dir.is_dir()
    except (OSError, ValueError) as e:
        raise NNJaxError(f"{str(out_dir)[:200]!r} cannot be read as a folder: {e}") from None
    if not is_dir:
        raise FileFormatError(f"{str(out_dir)!r} is not a run folder")
    config = _read_config(out_dir)
    recipe = find_recipe(config["model_name"], config["dataset"])
    try:
        model = from_config(config["model"])
    except ConfigError as e:
        raise FileFormatError(
            f"{str(out_dir / 'config.json')!r}: its 'model' is not a valid model config: {e}"
        ) from None
    with Checkpointer(out_dir / "checkpoints") as checkpointer:
        step = checkpointer.latest_step() if checkpointer.directory.is_dir() else None
        if step is None:
            raise FileFormatError(f"{str(out_dir)!r} has no checkpoint: train it first")
        arrays, _ = checkpointer.restore_arrays(step=step)
    data = recipe.load(config["hyperparameters"]["seed"])
    test = evaluate(recipe, model, arrays["params"], arrays["state"], data.test)
    examples = _num_examples(recipe, data.test)
    line = (
        f"{recipe.model} on {recipe.dataset}: {format_metrics(recipe, test, examples)}; "
        f"step {step} of {out_dir}"
    )
    return {
        "recipe": recipe.name,
        "test": test,
        "test_examples": examples,
        "step": step,
        "line": line,
    }


def model_summary(model_name: str, dataset: str, batch_size: int | None = None) -> str:
    """:func:`nn_jax.inspect.summary` of the recipe's model on one batch of its dataset."""

    recipe = find_recipe(model_name, dataset)
    data = recipe.load(0)
    example = data.train[0]
    if not recipe.full_batch:
        example = jax.tree.map(lambda a: a[: batch_size or recipe.batch_size], example)
    spec = jax.tree.map(lambda a: jax.ShapeDtypeStruct(np.shape(a), np.asarray(a).dtype), example)
    header = f"{recipe.model} on {recipe.dataset} ({recipe.notes})"
    return f"{header}\n{summary(recipe.build(), spec)}"

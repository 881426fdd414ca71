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
from nn_jax.errors import ConfigError, NNJaxError
from nn_jax.inspect import summary
from nn_jax.jobs.recipes import Data, Recipe, find_recipe, input_spec
from nn_jax.loggers import JsonlLogger, read_jsonl
from nn_jax.monitor import Monitor
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
    ) -> None:
        self.epochs, self.steps = epochs, steps
        self.learning_rate, self.batch_size = learning_rate, batch_size
        self.seed, self.val_every, self.progress = seed, val_every, progress


def check_out_dir(out: str | os.PathLike[str]) -> Path:
    """``out`` if it is, or can be created as, a writable folder; else a one-line error.

    Nothing is created: the check runs before any training (or data loading).
    """
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise NNJaxError(f"--out {str(path)!r} is a file, not a folder")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise NNJaxError(f"--out {str(path)!r}: {str(existing)!r} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise NNJaxError(f"--out {str(path)!r}: {str(existing)!r} is not writable")
    return path


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
    path = out / "config.json"
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        raise NNJaxError(f"{str(out)!r} has no config.json: not an nn-jax run folder") from None
    except (OSError, ValueError) as e:
        raise NNJaxError(f"cannot read {str(path)!r}: {e}") from e
    if not isinstance(config, dict) or not {"recipe", "model", "hyperparameters"} <= set(config):
        raise NNJaxError(f"{str(path)!r} is not an nn-jax run config")
    return config


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
    """Keep the records of steps <= ``step`` (those saved with the checkpoint)."""

    if not path.exists():
        return
    kept = [r for r in read_jsonl(path) if r.get("step", 0) <= step]
    with path.open("w", encoding="utf-8") as f:
        for record in kept:
            f.write(json.dumps(record) + "\n")


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
    (out_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")

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
    (out_dir / "result.json").write_text(json.dumps(result, indent=2) + "\n")
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
    if not out_dir.is_dir():
        raise NNJaxError(f"{str(out_dir)!r} is not a run folder")
    config = _read_config(out_dir)
    recipe = find_recipe(str(config.get("model_name")), str(config.get("dataset")))
    model = from_config(config["model"])
    with Checkpointer(out_dir / "checkpoints") as checkpointer:
        step = checkpointer.latest_step() if checkpointer.directory.is_dir() else None
        if step is None:
            raise NNJaxError(f"{str(out_dir)!r} has no checkpoint: train it first")
        arrays, _ = checkpointer.restore_arrays()
    data = recipe.load(int(config["hyperparameters"]["seed"]))
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

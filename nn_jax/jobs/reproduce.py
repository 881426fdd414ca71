"""``nn-jax reproduce mnist1d``: the MNIST-1D paper's baselines (Greydanus, 2020), ours vs. theirs.

The MNIST-1D paper (Greydanus, "Scaling down deep learning", 2020;
https://github.com/greydanus/mnist1d) reports the test accuracy of four small models trained on
its 4,000 training signals of 40 steps: logistic regression 32%, MLP 68%, CNN 94%, GRU 91%
(:data:`PAPER_MNIST1D`). :func:`reproduce_mnist1d` trains the same models by the paper's
protocol (its ``train.py``) with :func:`nn_jax.fit`: Adam with learning rate ``1e-2``, batches
of 100 taken in order (``shuffle=False``: batch ``i`` starts at ``(i * 100) % 4000``), 6,000
steps, cross-entropy, and PyTorch's default initialization
(:func:`nn_jax.presets.pytorch_defaults`), on :func:`nn_jax.data.load_mnist1d` (the published
set: 4,000 train / 1,000 test signals). As the paper's ``train.py`` does, the test set is
evaluated every 250 steps; the table reports the final accuracy and, beside it, the best of
those evaluations (which selects on the test set: a reference point, not a result). Each model
is trained from several seeds and the mean is reported: one seed's MLP varies by about 4 points.

The models (:func:`mnist1d_models`, from the paper's ``models.py``), all on ``(N, 40)`` inputs:

- ``"logistic"``: ``Linear(40, 10)``.
- ``"mlp"``: ``Linear(40, 100)``, ReLU, ``Linear(100, 100)``, ReLU, ``Linear(100, 10)``, as
  the paper describes it. (The repository's current ``MLPBase`` adds a residual around the
  second layer; measured with nn_jax over 3 seeds it reaches 63-64%, the plain MLP 65-68%.)
- ``"cnn"``: ``Conv1d(1, 25, 5, stride=2, padding=1)``, ``Conv1d(25, 25, 3, stride=2,
  padding=1)`` twice, each followed by ReLU (lengths 40 -> 19 -> 10 -> 5), flatten (125), then
  ``Linear(125, 10)``. PyTorch flattens ``(N, C, L)`` channel-major and nn_jax ``(N, L, C)``
  position-major; the order matters only when porting trained weights.
- ``"gru"``: a bidirectional GRU (hidden 6, one feature per step) over the 40 steps, every
  step's ``2 * 6`` outputs flattened (480), then ``Linear(480, 10)``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import optax

from nn_jax import losses, metrics
from nn_jax.combinators import Sequential
from nn_jax.conv import Conv
from nn_jax.core import Layer
from nn_jax.data.mnist1d import load_mnist1d
from nn_jax.dense import Dense, Flatten, Reshape
from nn_jax.errors import ConfigError
from nn_jax.presets import pytorch_defaults
from nn_jax.recurrent import RNN, Bidirectional, GRUCell
from nn_jax.train import fit

__all__ = [
    "PAPER_MNIST1D",
    "QUICK",
    "QUICK_BANDS",
    "format_table",
    "mnist1d_models",
    "reproduce_mnist1d",
]

PAPER_MNIST1D: dict[str, float] = {"logistic": 0.32, "mlp": 0.68, "cnn": 0.94, "gru": 0.91}
"""Test accuracies of the MNIST-1D paper's baselines (Greydanus, 2020), by model name."""

QUICK: dict[str, Any] = {"steps": 1500, "seeds": (0,)}
"""``--quick``: a quarter of the steps, one seed (about 20 s on 2 CPU cores)."""

QUICK_BANDS: dict[str, tuple[float, float]] = {
    "logistic": (0.27, 0.37),
    "mlp": (0.55, 0.72),
    "cnn": (0.85, 0.97),
    "gru": (0.80, 0.95),
}
"""Where each model's test accuracy lands after the ``--quick`` run. Over seeds 0-2 it gave
logistic 31.9-32.2%, MLP 61.6-64.5%, CNN 89.6-92.5%, GRU 88.9-89.6%; the bands leave room for
seed and platform noise (on 1,000 test signals one standard error is about 1.5 points) while
still failing on a broken layer, initialization or optimizer step. Notebook
``08_mnist1d_reproduction`` (executed by the test suite) asserts them."""

_BATCH = 100
_LEARNING_RATE = 1e-2
_EVAL_EVERY = 250


def mnist1d_models() -> dict[str, Layer]:
    """The MNIST-1D paper's four baselines (module docstring), with PyTorch's initialization.

    Every model maps ``(N, 40)`` signals to ``(N, 10)`` logits.

    >>> import jax, jax.numpy as jnp
    >>> models = mnist1d_models()
    >>> sorted(models)
    ['cnn', 'gru', 'logistic', 'mlp']
    >>> params, _ = models["cnn"].init(jax.random.key(0), jnp.zeros((2, 40)))
    >>> params["8"]["w"].shape  # Linear(125, 10)
    (125, 10)
    """
    relu = jax.nn.relu
    models: dict[str, Layer] = {
        "logistic": Dense(10),
        "mlp": Sequential(Dense(100), relu, Dense(100), relu, Dense(10)),
        "cnn": Sequential(
            Reshape((40, 1)),
            Conv(25, (5,), strides=2, padding=1),
            relu,
            Conv(25, (3,), strides=2, padding=1),
            relu,
            Conv(25, (3,), strides=2, padding=1),
            relu,
            Flatten(),
            Dense(10),
        ),
        "gru": Sequential(Reshape((40, 1)), Bidirectional(RNN(GRUCell(6))), Flatten(), Dense(10)),
    }
    return {name: pytorch_defaults(model) for name, model in models.items()}


def reproduce_mnist1d(
    *, steps: int = 6000, seeds: Sequence[int] = (0, 1, 2), progress: bool = True
) -> list[dict[str, Any]]:
    """Train the MNIST-1D paper's baselines by its protocol; compare with its accuracies.

    Args:
        steps: Adam steps per model and seed (the paper's: 6,000, i.e. 150 passes).
        seeds: one training run per seed (``jax.random.key(seed)`` seeds the initialization).
        progress: a progress bar per run.

    Returns:
        One row per model of :func:`mnist1d_models`: ``{"model", "paper", "ours" (mean test
        accuracy over the seeds), "sd" (their standard deviation, 0 for one seed), "runs"
        (each seed's accuracy), "best" (the mean over seeds of the best test accuracy among
        the evaluations every 250 steps), "steps", "seconds"}`` (accuracies as fractions; seconds of
        wall time for all seeds, compilation included).
    """
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ConfigError(f"reproduce_mnist1d: steps must be a positive int, given {steps!r}")
    if not seeds:
        raise ConfigError("reproduce_mnist1d: give at least one seed")
    if not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 2**32 for s in seeds):
        raise ConfigError(
            f"reproduce_mnist1d: seeds must be ints in [0, 2**32), given {tuple(seeds)!r:.80}"
        )
    data = load_mnist1d()
    if len(data.x_train) % _BATCH:
        raise ConfigError(
            f"reproduce_mnist1d: {len(data.x_train)} examples is not a multiple of 100"
        )
    rows = []
    for name, model in mnist1d_models().items():
        start = time.perf_counter()
        runs, bests = [], []
        for seed in seeds:
            _, history = fit(
                model,
                losses.softmax_cross_entropy_with_integer_labels,
                optax.adam(_LEARNING_RATE),
                (data.x_train, data.y_train),
                key=jax.random.key(seed),
                steps=steps,
                batch_size=_BATCH,
                shuffle=False,
                steps_per_dispatch=50,
                log_every=_EVAL_EVERY,
                metrics={"accuracy": metrics.accuracy},
                validation=(data.x_test, data.y_test),
                val_every=_EVAL_EVERY,
                val_batch_size=len(data.x_test),
                progress=progress,
            )
            accuracy = history.series("accuracy", "validation")[1]
            runs.append(float(accuracy[-1]))
            bests.append(float(accuracy.max()))
        rows.append(
            {
                "model": name,
                "paper": PAPER_MNIST1D[name],
                "ours": statistics.mean(runs),
                "sd": statistics.stdev(runs) if len(runs) > 1 else 0.0,
                "runs": runs,
                "best": statistics.mean(bests),
                "steps": steps,
                "seconds": round(time.perf_counter() - start, 1),
            }
        )
    return rows


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The rows of :func:`reproduce_mnist1d` as a text table (accuracies in percent)."""
    header = ("model", "paper", "ours (mean ± sd)", "runs", "best evaluation", "steps", "seconds")
    cells = [header] + [
        (
            row["model"],
            f"{100 * row['paper']:.0f}%",
            f"{100 * row['ours']:.1f}% ± {100 * row['sd']:.1f}",
            " ".join(f"{100 * a:.1f}" for a in row["runs"]),
            f"{100 * row['best']:.1f}%",
            str(row["steps"]),
            f"{row['seconds']:.1f}",
        )
        for row in rows
    ]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)

"""Ready-to-run training jobs behind ``nn-jax train`` (the README's main command)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jax
import optax

from nn_jax import losses, metrics
from nn_jax.data import load_digits
from nn_jax.history import History
from nn_jax.models import MLP
from nn_jax.train import fit, make_predict


def train_digits(
    out_dir: str | Path = "runs/digits",
    *,
    epochs: int = 40,
    batch_size: int = 64,
    widths: tuple[int, ...] = (256, 128, 10),
    learning_rate: float = 1e-3,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Train an MLP on scikit-learn's bundled digits; save a loss-curve PNG and a JSON summary.

    Returns the summary: test accuracy, final loss, wall time and the output files.
    """
    split = load_digits(seed=seed)
    model = MLP(widths)
    optimizer = optax.adam(learning_rate)
    start = time.perf_counter()
    ts, history = fit(
        model,
        losses.softmax_cross_entropy_with_integer_labels,
        optimizer,
        (split.x_train, split.y_train),
        key=jax.random.key(seed),
        epochs=epochs,
        batch_size=batch_size,
        log_every=10,
        progress=progress,
    )
    seconds = time.perf_counter() - start
    logits = make_predict(model)(ts.params, ts.state, split.x_test)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result = {
        "model": f"MLP{widths}",
        "test_accuracy": float(metrics.accuracy(logits, split.y_test)),
        "final_train_loss": history.train[-1]["loss"],
        "train_examples": len(split.x_train),
        "test_examples": len(split.x_test),
        "epochs": epochs,
        "steps": history.train[-1]["step"],
        "train_seconds": round(seconds, 2),
        "loss_curve": str(out / "loss_curve.png"),
    }
    _plot_loss(history, out / "loss_curve.png", title=f"MLP{widths} on digits")
    (out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def _plot_loss(history: History, path: Path, *, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(*history.series("loss"))
    ax.set(xlabel="step", ylabel="training loss", yscale="log", title=title)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _accuracy_line(result: dict[str, Any]) -> str:
    return (
        f"test accuracy {100 * result['test_accuracy']:.2f}% on {result['test_examples']} held-out "
        f"digits after {result['steps']} steps ({result['train_seconds']} s); "
        f"loss curve: {result['loss_curve']}"
    )


def print_result(result: dict[str, Any]) -> None:
    """Print the job's one-line result."""
    print(_accuracy_line(result))


__all__ = ["print_result", "train_digits"]

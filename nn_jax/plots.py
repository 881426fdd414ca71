"""Plots of a training run: loss, metrics and monitoring signals against the step.

matplotlib is an optional dependency (``pip install 'nn-jax[examples]'``), imported when a plot
is made. Figures are built with ``matplotlib.figure.Figure``, not ``pyplot``: no display or
backend is needed (PNG files are rendered with Agg), no global figure is left open, and a
notebook still shows the returned figure.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from nn_jax.errors import ConfigError

__all__ = ["HistoryLike", "plot_history"]

# Keys of a record that are neither metrics nor monitoring signals.
_BOOKKEEPING = {"step", "epoch", "split", "loss", "gap", "nonfinite", "time", "learning_rate"}
# Prefixes of the monitoring signals (per-layer ones are "<prefix>/<layer path>").
_MONITORING = ("grad_norm", "update_ratio", "dead_relu", "saturated")
_EVENT_STYLE = {
    "nonfinite": {"color": "tab:red", "linestyle": "-"},
    "early_stop": {"color": "black", "linestyle": "--"},
}
_TRAIN, _VALIDATION = "tab:blue", "tab:orange"


class HistoryLike(Protocol):
    """What :func:`plot_history` reads: lists of records and events (a
    :class:`nn_jax.history.History` has them)."""

    @property
    def train(self) -> Sequence[Mapping[str, Any]]: ...

    @property
    def validation(self) -> Sequence[Mapping[str, Any]]: ...

    @property
    def events(self) -> Sequence[Mapping[str, Any]]: ...


def _float(record: Mapping[str, Any], key: str) -> float:
    """``record[key]`` as a float (``None`` as NaN); a ConfigError naming it if not a number."""
    value = record.get(key)
    if value is None and key != "step":
        return math.nan
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        text = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        raise ConfigError(
            f"plot_history: {key!r} must be a number in every record that has it, given "
            f"{type(value).__name__} {text}"
        )
    return float(value)


def _series(records: Sequence[Mapping[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """Steps and values of ``key`` in the records that have it (``None`` becomes NaN)."""
    steps, values = [], []
    for r in records:
        if key in r:
            steps.append(_float(r, "step"))
            values.append(_float(r, key))
    return steps, values


def _keys(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """The keys of ``records`` in order of first appearance."""
    return list(dict.fromkeys(k for r in records for k in r))


def _is_metric(key: str, records: Sequence[Mapping[str, Any]]) -> bool:
    """A number that is neither bookkeeping nor a monitoring signal (``"accuracy"``)."""
    if key in _BOOKKEEPING or key.split("/")[0] in _MONITORING:
        return False
    values = [r[key] for r in records if r.get(key) is not None]
    return bool(values) and all(
        isinstance(v, numbers.Real) and not isinstance(v, bool) for v in values
    )


def _log_if_positive(ax: Any, *value_lists: list[float]) -> None:
    """A log y axis, with ticks written ``0.6``, ``2`` (not ``6x10^-1``), if every value is > 0."""
    from matplotlib.ticker import LogFormatter

    class PlainLogFormatter(LogFormatter):
        """Labels the ticks LogFormatter would label, as ``%g``."""

        def __call__(self, x: float, pos: int | None = None) -> str:
            return f"{x:g}" if super().__call__(x, pos) else ""

    finite = [v for values in value_lists for v in values if math.isfinite(v)]
    if finite and min(finite) > 0:
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(PlainLogFormatter())
        minor = PlainLogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5))
        ax.yaxis.set_minor_formatter(minor)


def plot_history(
    history: HistoryLike, *, path: str | os.PathLike[str] | None = None, title: str | None = None
) -> Any:
    """Plot a run's loss, metrics and monitoring signals against the training step.

    Panels, each drawn only when its data is present:

    * **Loss**: training and validation loss (log scale when every value is positive).
    * **One panel per metric** (``"accuracy"``, ...): training and validation.
    * **Gradient norm**: the global gradient norm ``"grad_norm"`` of the training records.
    * **Dead / saturated units**: each ``"dead_relu/<layer>"`` and ``"saturated/<layer>"``
      fraction, in ``[0, 1]``.
    * **Generalization gap**: validation ``"gap"`` (validation minus training loss) with the zero
      line; a rising gap is overfitting.

    Every panel marks the events (``history.events``) as vertical lines: non-finite steps in
    red, early stopping dashed black, other kinds grey.

    Args:
        history: a :class:`nn_jax.history.History`, or any object with ``train``,
            ``validation`` and ``events`` lists of dicts, each with a ``"step"``.
        path: where to save the figure as a PNG (parent folders are created); not saved if
            ``None``.
        title: the figure's title.

    Returns:
        The ``matplotlib.figure.Figure``.

    Raises:
        ImportError: matplotlib is not installed.
        ConfigError: the history has no training or validation records, or a record's step
            or plotted value is not a number.
    """
    try:
        from matplotlib.figure import Figure
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("plot_history needs matplotlib: pip install 'nn-jax[examples]'") from e
    train, validation = list(history.train), list(history.validation)
    events = list(history.events)
    if not train and not validation:
        raise ConfigError("plot_history: the history has no training or validation records")

    def _pair(ax: Any, key: str) -> None:
        train_series, val_series = _series(train, key), _series(validation, key)
        if train_series[0]:
            ax.plot(*train_series, color=_TRAIN, label="train")
        if val_series[0]:
            ax.plot(*val_series, color=_VALIDATION, marker="o", markersize=3, label="validation")
        if key == "loss":
            _log_if_positive(ax, train_series[1], val_series[1])

    # (title, y label, draw function) of each panel, in reading order.
    panels: list[tuple[str, str, Any]] = [("Loss", "loss", lambda ax: _pair(ax, "loss"))]
    for key in _keys([*train, *validation]):
        if _is_metric(key, [*train, *validation]):
            panels.append((key.replace("_", " ").capitalize(), key, lambda ax, k=key: _pair(ax, k)))

    if any("grad_norm" in r for r in train):

        def _grad_norm(ax: Any) -> None:
            steps, values = _series(train, "grad_norm")
            ax.plot(steps, values, color=_TRAIN, label="global")
            _log_if_positive(ax, values)

        panels.append(("Gradient norm", "global gradient norm", _grad_norm))

    unit_keys = [k for k in _keys(train) if k.split("/")[0] in ("dead_relu", "saturated")]
    if unit_keys:

        def _units(ax: Any) -> None:
            for key in unit_keys:
                kind, _, layer = key.partition("/")
                name = "dead ReLU" if kind == "dead_relu" else "saturated"
                style = "-" if kind == "dead_relu" else "--"
                ax.plot(*_series(train, key), linestyle=style, label=f"{name} {layer}".strip())
            ax.set_ylim(-0.02, 1.02)

        panels.append(("Dead / saturated units", "fraction of units", _units))

    if any("gap" in r for r in validation):

        def _gap(ax: Any) -> None:
            ax.axhline(0.0, color="grey", linewidth=0.8)
            ax.plot(
                *_series(validation, "gap"),
                color=_VALIDATION,
                marker="o",
                markersize=3,
                label="validation - train",
            )

        panels.append(("Generalization gap", "validation - train loss", _gap))

    columns = 1 if len(panels) == 1 else 2
    rows = -(-len(panels) // columns)
    fig = Figure(
        figsize=(6.0 * columns, 3.2 * rows + (0.4 if title else 0.0)), layout="constrained"
    )
    axes = fig.subplots(rows, columns, sharex=True, squeeze=False).ravel()
    for i, (ax, (panel_title, ylabel, draw)) in enumerate(zip(axes, panels, strict=False)):
        draw(ax)
        _mark_events(ax, events, label=i == 0)  # the loss panel's legend names the events
        ax.set_title(panel_title)
        ax.set_ylabel(ylabel)
        ax.set_xlabel("step")
        ax.tick_params(labelbottom=True)  # sharex hides them above an empty slot otherwise
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
    for ax in axes[len(panels) :]:
        fig.delaxes(ax)
    if title:
        fig.suptitle(title)
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format="png", dpi=120)
    return fig


def _mark_events(ax: Any, events: Sequence[Mapping[str, Any]], *, label: bool) -> None:
    labelled = set()
    for event in events:
        kind = str(event.get("kind", "event"))
        style = _EVENT_STYLE.get(kind, {"color": "grey", "linestyle": ":"})
        name = kind.replace("_", " ") if label and kind not in labelled else None
        labelled.add(kind)
        ax.axvline(_float(event, "step"), linewidth=1.0, alpha=0.8, label=name, **style)

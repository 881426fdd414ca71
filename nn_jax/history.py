"""What a training run logged: train and validation records and events, as plain JSON-able data.

A *record* is a flat dict of numbers read back from the device on a logged step: ``"step"``,
``"epoch"``, ``"loss"``, each metric (``"accuracy"``), and the monitoring signals
(``"grad_norm"``, ``"grad_norm/<layer>"``, ``"update_ratio/<layer>"``, ``"dead_relu/<layer>"``,
``"saturated/<layer>"``); validation records add ``"gap"``, validation loss minus the training
loss over the same steps (the overfitting signal). An *event* is a dict with ``"step"`` and
``"kind"`` (``"nonfinite"``, ``"early_stop"``, ...). Keeping them as dicts means the same data
goes to JSON lines, TensorBoard, a checkpoint's metadata and :func:`nn_jax.plots.plot_history`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal

import numpy as np

__all__ = ["History", "Record"]

Record = dict[str, Any]
SplitName = Literal["train", "validation"]


@dataclasses.dataclass
class History:
    """Train and validation records in step order, and events (non-finite steps, early stop)."""

    train: list[Record] = dataclasses.field(default_factory=list)
    validation: list[Record] = dataclasses.field(default_factory=list)
    events: list[Record] = dataclasses.field(default_factory=list)

    def records(self, split: SplitName = "train") -> list[Record]:
        """The records of ``split``."""
        if split not in ("train", "validation"):
            raise ValueError(f"split must be 'train' or 'validation', given {split!r}")
        return self.train if split == "train" else self.validation

    def series(self, name: str, split: SplitName = "train") -> tuple[np.ndarray, np.ndarray]:
        """``(steps, values)`` of one logged quantity, e.g. ``history.series("loss")``."""
        rows = [r for r in self.records(split) if name in r]
        steps = np.array([r["step"] for r in rows], dtype=np.int64)
        values = np.array([_number(r[name]) for r in rows], dtype=np.float64)
        return steps, values

    def best(self, name: str, mode: Literal["min", "max"] = "min") -> Record | None:
        """The validation record with the best finite ``name`` (``None`` if there is none)."""
        rows = [r for r in self.validation if name in r and math.isfinite(_number(r[name]))]
        if not rows:
            return None
        sign = 1.0 if mode == "min" else -1.0
        return min(rows, key=lambda r: sign * _number(r[name]))

    def to_dict(self) -> dict[str, list[Record]]:
        """A JSON-able copy (what a checkpoint stores)."""
        return {
            "train": list(self.train),
            "validation": list(self.validation),
            "events": list(self.events),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> History:
        """The inverse of :meth:`to_dict`."""
        return cls(
            [dict(r) for r in data.get("train", [])],
            [dict(r) for r in data.get("validation", [])],
            [dict(r) for r in data.get("events", [])],
        )

    def truncate(self, step: int) -> History:
        """The records and events up to and including ``step`` (to resume from that step)."""
        keep = [
            [r for r in rows if r["step"] <= step]
            for rows in (self.train, self.validation, self.events)
        ]
        return History(*keep)


def _number(value: Any) -> float:
    return float("nan") if value is None else float(value)

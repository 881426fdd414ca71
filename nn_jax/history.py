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
import numbers
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np

from nn_jax.errors import ConfigError, FileFormatError

__all__ = ["History", "Record"]

Record = dict[str, Any]
SplitName = Literal["train", "validation"]

# JSON has no NaN or infinity: to_dict writes them as these strings (as JsonlLogger does) and
# from_dict reads them back.
_NONFINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
_PARTS = ("train", "validation", "events")


@dataclasses.dataclass
class History:
    """Train and validation records in step order, and events (non-finite steps, early stop)."""

    train: list[Record] = dataclasses.field(default_factory=list)
    validation: list[Record] = dataclasses.field(default_factory=list)
    events: list[Record] = dataclasses.field(default_factory=list)

    def records(self, split: SplitName = "train") -> list[Record]:
        """The records of ``split``."""
        if split not in ("train", "validation"):
            raise ConfigError(f"split must be 'train' or 'validation', given {split!r}")
        return self.train if split == "train" else self.validation

    def series(self, name: str, split: SplitName = "train") -> tuple[np.ndarray, np.ndarray]:
        """``(steps, values)`` of one logged quantity, e.g. ``history.series("loss")``.

        Raises :class:`~nn_jax.errors.ConfigError` if a record holds a value of ``name`` that
        is not a number (``None`` reads as NaN)."""
        rows = [r for r in self.records(split) if name in r]
        steps = np.array([_number(r["step"], "step", r) for r in rows], dtype=np.int64)
        values = np.array([_number(r[name], name, r) for r in rows], dtype=np.float64)
        return steps, values

    def best(self, name: str, mode: Literal["min", "max"] = "min") -> Record | None:
        """The validation record with the best finite ``name`` (``None`` if there is none)."""
        if mode not in ("min", "max"):
            raise ConfigError(f"History.best: mode must be 'min' or 'max', given {mode!r}")
        rows = [
            r for r in self.validation if name in r and math.isfinite(_number(r[name], name, r))
        ]
        if not rows:
            return None
        sign = 1.0 if mode == "min" else -1.0
        return min(rows, key=lambda r: sign * _number(r[name], name, r))

    def to_dict(self) -> dict[str, list[Record]]:
        """A JSON-able copy (what a checkpoint stores): non-finite floats, which JSON cannot
        hold, become the strings ``"NaN"``, ``"Infinity"`` and ``"-Infinity"`` (at any depth)."""
        return {part: [_encode(r) for r in getattr(self, part)] for part in _PARTS}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> History:
        """The inverse of :meth:`to_dict` (for data read from a checkpoint or a JSON file).

        Missing parts are empty; the strings ``"NaN"``, ``"Infinity"`` and ``"-Infinity"``
        become floats again.

        Raises:
            FileFormatError: ``data`` is not a dict of lists of records, or a record is not a
                dict with string keys and an integer ``"step"`` in ``[0, 2**63)``; nothing is
                returned.
        """
        if not isinstance(data, Mapping):
            raise FileFormatError(
                f"History.from_dict: expected a dict with lists {', '.join(map(repr, _PARTS))}, "
                f"given {_describe(data)}"
            )
        unknown = sorted(str(k) for k in data if k not in _PARTS)
        if unknown:
            raise FileFormatError(
                f"History.from_dict: unknown key(s) {unknown}; a history has "
                f"{', '.join(map(repr, _PARTS))}"
            )
        parts = {}
        for part in _PARTS:
            rows = data.get(part, [])
            if not isinstance(rows, list | tuple):
                raise FileFormatError(
                    f"History.from_dict: {part!r} must be a list of records, given "
                    f"{_describe(rows)}"
                )
            parts[part] = [_decode(r, f"{part}[{i}]") for i, r in enumerate(rows)]
        return cls(**parts)

    def truncate(self, step: int) -> History:
        """The records and events up to and including ``step`` (to resume from that step)."""
        keep = [
            [r for r in rows if r["step"] <= step]
            for rows in (self.train, self.validation, self.events)
        ]
        return History(*keep)


def _number(value: Any, name: str, record: Record) -> float:
    """A record's value as a float (``None`` as NaN); a ConfigError for anything else."""
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(
            f"History: {name!r} is {_describe(value)}, not a number, in the record "
            f"{_describe(record)}"
        )
    return float(value)


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 80 else text[:77] + '...'}"


def _encode(value: Any) -> Any:
    """``value`` with its non-finite floats, at any depth, as strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"
    if isinstance(value, Mapping):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_encode(v) for v in value]
    return value


def _decoded(value: Any) -> Any:
    """The inverse of :func:`_encode`."""
    if isinstance(value, str):
        return _NONFINITE.get(value, value)
    if isinstance(value, Mapping):
        return {k: _decoded(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_decoded(v) for v in value]
    return value


def _decode(record: Any, where: str) -> Record:
    if not isinstance(record, Mapping) or not all(isinstance(k, str) for k in record):
        raise FileFormatError(
            f"History.from_dict: {where} must be a record (a dict with string keys), given "
            f"{_describe(record)}"
        )
    step = record.get("step")
    if (
        isinstance(step, bool)
        or not isinstance(step, numbers.Integral)
        or not 0 <= int(step) < 2**63
    ):
        raise FileFormatError(
            f"History.from_dict: {where} needs an integer 'step' in [0, 2**63), given "
            f"{_describe(record)}"
        )
    return {k: _decoded(v) for k, v in record.items()}

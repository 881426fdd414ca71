"""Training-record loggers: JSON lines and TensorBoard, usable as training-loop callbacks.

A *record* is a flat dict the training loop logs (``"step"``, ``"epoch"``, ``"split"``,
``"loss"``, metrics, monitoring signals; see :mod:`nn_jax.history`). Each logger is called as
``logger(ts, record)`` after every logged record, ignores the train state ``ts`` and returns
``None`` (it never stops training). Close it when done, or use it as a context manager::

    with JsonlLogger("runs/mlp/log.jsonl") as log, TensorBoardLogger("runs/mlp") as tb:
        fit(..., callbacks=[log, tb])
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from nn_jax.errors import ConfigError, FileFormatError

__all__ = ["JsonlLogger", "TensorBoardLogger", "read_jsonl"]

# How JsonlLogger writes non-finite floats: JSON has no NaN or infinity, and ``null`` would lose
# which one it was (0/0 or an overflow). These are JavaScript's and Python's own spellings.
_NONFINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


class _Logger:
    """Context-manager plumbing shared by the loggers."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Any:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _number(value: Any) -> float | None:
    """``value`` as a float if it is a real number (Python, NumPy or JAX scalar), else ``None``."""
    if hasattr(value, "item") and getattr(value, "size", 1) == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _plain(value: Any) -> Any:
    """``value`` as JSON data: NumPy/JAX scalars and arrays become Python numbers and lists,
    non-finite floats the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``."""
    if hasattr(value, "tolist"):  # NumPy / JAX arrays and scalars
        value = value.tolist()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return value


class JsonlLogger(_Logger):
    """Appends each record to ``path`` as one JSON line, flushed at once.

    Every line is written and flushed to the operating system before the call returns, so a
    crashed or killed run keeps every record logged so far (:func:`read_jsonl` skips a last line
    cut short by a kill). An existing file is appended to, not replaced; parent folders are
    created.

    Non-finite floats, which JSON cannot represent, are written as the strings ``"NaN"``,
    ``"Infinity"`` and ``"-Infinity"`` (``null`` would not say which one it was);
    :func:`read_jsonl` turns them back into floats. NumPy and JAX scalars are written as numbers.

    Args:
        path: the ``.jsonl`` file.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", encoding="utf-8")

    def __call__(self, ts: Any, record: Mapping[str, Any]) -> None:
        """Write ``record`` (``ts``, the train state, is ignored)."""
        if self._file.closed:
            raise ConfigError(f"JsonlLogger({str(self.path)!r}) is closed: create a new one")
        line = json.dumps(_plain(record), allow_nan=False)
        self._file.write(line + "\n")
        self._file.flush()

    def close(self) -> None:
        """Close the file (calling it again does nothing)."""
        self._file.close()


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records of a :class:`JsonlLogger` file, in the order they were written.

    The strings ``"NaN"``, ``"Infinity"`` and ``"-Infinity"`` become floats again (so a string
    value spelled exactly that way comes back as a float). Blank lines are skipped, and so is a
    last line without its newline that does not parse (a write cut short by a crash).

    Raises:
        FileFormatError: the file is missing or unreadable, is not UTF-8 text, or has a line
            (other than a cut last one) that is not a JSON object; the message names the file
            and the line. Nothing is returned then.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileFormatError(f"{str(path)!r}: no such file") from None
    except IsADirectoryError:
        raise FileFormatError(f"{str(path)!r} is a folder, not a JSON lines file") from None
    except UnicodeDecodeError as e:
        raise FileFormatError(
            f"{str(path)!r} is not a JSON lines file: byte {e.start} is not UTF-8 text"
        ) from None
    except (OSError, ValueError) as e:  # unreadable; a NUL byte in the path
        raise FileFormatError(f"cannot read {str(path)!r}: {e}") from e
    lines = text.split("\n")
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line, object_hook=_restore)
        except (ValueError, RecursionError) as e:  # JSONDecodeError, a 5,000-digit number
            if number == len(lines):  # the last line has no newline: an interrupted write
                break
            why = e.msg if isinstance(e, json.JSONDecodeError) else str(e) or type(e).__name__
            raise FileFormatError(
                f"{path}:{number}: not a JSON line ({why}): {line[:80]!r}"
            ) from None
        if not isinstance(data, dict):
            raise FileFormatError(f"{path}:{number}: expected a JSON object, given {line[:80]!r}")
        records.append(data)
    return records


def _restore(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: _NONFINITE.get(v, v) if isinstance(v, str) else v for k, v in obj.items()}


def _summary_writer_class() -> Any:
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:
            raise ImportError(
                "TensorBoardLogger needs tensorboardX (or PyTorch with tensorboard): "
                "pip install tensorboardX"
            ) from e
    return SummaryWriter


class TensorBoardLogger(_Logger):
    """Writes each record's numbers as TensorBoard scalars ``"<split>/<key>"`` at its step.

    ``{"step": 100, "split": "train", "loss": 0.3, "grad_norm/0": 1.2}`` becomes the scalars
    ``train/loss`` and ``train/grad_norm/0`` at ``global_step=100`` (``train/epoch`` too when the
    record has an ``"epoch"``). Non-numeric values are skipped; non-finite ones are written as
    they are (TensorBoard shows them as gaps). Uses ``tensorboardX.SummaryWriter``, or PyTorch's
    ``torch.utils.tensorboard`` when tensorboardX is not installed. View with
    ``tensorboard --logdir <logdir>``.

    Args:
        logdir: the folder for the event files (created if missing).
        flush_secs: how often the writer flushes to disk in the background; :meth:`close`
            (or :meth:`flush`) writes everything at once.

    Raises:
        ImportError: neither tensorboardX nor PyTorch's tensorboard is installed.
    """

    def __init__(self, logdir: str | os.PathLike[str], *, flush_secs: float = 10.0) -> None:
        writer_class = _summary_writer_class()
        self.logdir = Path(logdir)
        self.logdir.mkdir(parents=True, exist_ok=True)
        self._writer = writer_class(str(self.logdir), flush_secs=flush_secs)
        self._closed = False

    def __call__(self, ts: Any, record: Mapping[str, Any]) -> None:
        """Write ``record``'s numbers (``ts``, the train state, is ignored)."""
        if self._closed:
            raise ConfigError(
                f"TensorBoardLogger({str(self.logdir)!r}) is closed: create a new one"
            )
        missing = [k for k in ("step", "split") if k not in record]
        if missing:
            raise ConfigError(
                f"TensorBoardLogger: a record needs 'step' and 'split', missing {missing} "
                f"(keys: {sorted(map(str, record))})"
            )
        step_value = _number(record["step"])
        if step_value is None or not step_value.is_integer():
            raise ConfigError(
                f"TensorBoardLogger: a record's 'step' must be an integer, given "
                f"{record['step']!r:.80}"
            )
        step, split = int(step_value), str(record["split"])
        for key, value in record.items():
            if key in ("step", "split"):
                continue
            number = _number(value)
            if number is not None:
                self._writer.add_scalar(f"{split}/{key}", number, global_step=step)

    def flush(self) -> None:
        """Write the pending events to disk."""
        self._writer.flush()

    def close(self) -> None:
        """Flush and close the event file (calling it again does nothing)."""
        if not self._closed:
            self._writer.close()
            self._closed = True

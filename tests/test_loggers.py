"""JSON-lines and TensorBoard loggers (``nn_jax.loggers``) and ``nn_jax.plots.plot_history``."""

import json
import math
import struct
from pathlib import Path
from types import SimpleNamespace

import jax.numpy as jnp
import numpy as np
import pytest

from nn_jax.loggers import JsonlLogger, TensorBoardLogger, read_jsonl
from nn_jax.plots import plot_history

RECORDS = [
    {"step": 10, "epoch": 0, "split": "train", "loss": 1.5, "grad_norm": 3.0},
    {"step": 20, "epoch": 1, "split": "validation", "loss": float("nan"), "gap": float("inf")},
    {"step": 30, "epoch": 1, "split": "train", "loss": -float("inf"), "accuracy": 0.5},
]


# --- JSON lines -------------------------------------------------------------------------------


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        (isinstance(a[k], float) and math.isnan(a[k]) and math.isnan(b[k])) or a[k] == b[k]
        for k in a
    )


def test_jsonl_round_trip_with_nonfinite_values(tmp_path):
    path = tmp_path / "deep" / "run" / "log.jsonl"  # parent folders are created
    with JsonlLogger(path) as log:
        for r in RECORDS:
            assert log(None, r) is None  # a callback that never stops training
    lines = path.read_text().splitlines()
    assert len(lines) == 3
    for line in lines:  # strict JSON: no bare NaN / Infinity tokens
        json.loads(line, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert json.loads(lines[1])["loss"] == "NaN" and json.loads(lines[2])["loss"] == "-Infinity"
    back = read_jsonl(path)
    assert all(_same(a, b) for a, b in zip(back, RECORDS, strict=True)), back


def test_jsonl_flushes_each_line_appends_and_converts_numpy_scalars(tmp_path):
    path = tmp_path / "log.jsonl"
    log = JsonlLogger(path)
    log(None, {"step": np.int64(1), "split": "train", "loss": jnp.float32(0.25)})
    assert read_jsonl(path) == [{"step": 1, "split": "train", "loss": 0.25}]  # before close
    log.close()
    log.close()  # idempotent
    with pytest.raises(ValueError, match="is closed"):
        log(None, {"step": 2})
    with JsonlLogger(path) as again:  # appends, does not truncate
        again(None, {"step": 2, "split": "train", "loss": 0.125})
    assert [r["step"] for r in read_jsonl(path)] == [1, 2]


def test_read_jsonl_skips_a_cut_last_line_and_rejects_a_broken_one(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text('{"step": 1}\n\n{"step": 2}\n{"step": 3, "lo')
    assert read_jsonl(path) == [{"step": 1}, {"step": 2}]
    path.write_text('{"step": 1}\n{"step": 2, "lo\n{"step": 3}\n')
    with pytest.raises(ValueError, match=r"log.jsonl:2: not a JSON line"):
        read_jsonl(path)


# --- TensorBoard ------------------------------------------------------------------------------


def _read_scalars(logdir: Path) -> dict[str, list[tuple[int, float]]]:
    """``{tag: [(step, value), ...]}`` from the event files, by a real reader.

    tensorboard's ``EventAccumulator`` when tensorboard is installed; otherwise the TFRecord
    framing (length, masked CRC, payload, masked CRC; checked with tensorboardX's own CRC) and
    tensorboardX's ``Event`` protobuf.
    """
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:
        pass
    else:  # pragma: no cover - depends on the environment
        acc = EventAccumulator(str(logdir))
        acc.Reload()
        return {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}
    event_pb2 = pytest.importorskip("tensorboardX.proto.event_pb2")
    masked_crc32c = pytest.importorskip("tensorboardX.record_writer").masked_crc32c
    scalars: dict[str, list[tuple[int, float]]] = {}
    (path,) = logdir.glob("events.out.tfevents.*")
    data = path.read_bytes()
    offset = 0
    while offset < len(data):
        header = data[offset : offset + 8]
        (length,) = struct.unpack("<Q", header)
        (header_crc,) = struct.unpack("<I", data[offset + 8 : offset + 12])
        assert header_crc == masked_crc32c(header)
        payload = data[offset + 12 : offset + 12 + length]
        (payload_crc,) = struct.unpack("<I", data[offset + 12 + length : offset + 16 + length])
        assert payload_crc == masked_crc32c(payload)
        offset += 16 + length
        event = event_pb2.Event.FromString(payload)
        for value in event.summary.value:
            scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars


def test_tensorboard_logger_writes_scalars_tagged_by_split_at_the_step(tmp_path):
    pytest.importorskip("tensorboardX")
    logdir = tmp_path / "tb"
    with TensorBoardLogger(logdir) as tb:
        for r in RECORDS:
            assert tb(None, {**r, "grad_norm/0/w": 0.5, "note": "text"}) is None
    scalars = _read_scalars(logdir)
    assert scalars["train/loss"][0] == (10, 1.5)
    assert scalars["train/loss"][1][0] == 30 and scalars["train/loss"][1][1] == -math.inf
    assert scalars["train/grad_norm"] == [(10, 3.0)]
    assert scalars["train/accuracy"] == [(30, 0.5)]
    assert scalars["train/epoch"] == [(10, 0.0), (30, 1.0)]
    assert scalars["train/grad_norm/0/w"] == [(10, 0.5), (30, 0.5)]
    assert math.isnan(scalars["validation/loss"][0][1])
    assert scalars["validation/gap"] == [(20, math.inf)]
    assert not any(t.endswith(("/step", "/split", "/note")) for t in scalars)


def test_tensorboard_logger_needs_step_and_split(tmp_path):
    pytest.importorskip("tensorboardX")
    with (
        TensorBoardLogger(tmp_path) as tb,
        pytest.raises(ValueError, match=r"needs 'step' and 'split', missing \['split'\]"),
    ):
        tb(None, {"step": 1, "loss": 1.0})


# --- plots ------------------------------------------------------------------------------------


def _history() -> SimpleNamespace:
    steps = np.arange(0, 200, 10)
    train = [
        {
            "step": int(s),
            "epoch": int(s) // 50,
            "split": "train",
            "loss": float(2 * np.exp(-s / 60) + 0.05),
            "accuracy": float(1 - np.exp(-s / 50)),
            "grad_norm": float(5 * np.exp(-s / 100) + 0.3),
            "grad_norm/0": 1.0,
            "update_ratio/0": 1e-3,
            "dead_relu/0": float(min(s / 400, 0.4)),
            "saturated/1": 0.1,
        }
        for s in steps
    ]
    validation = [
        {
            "step": int(s),
            "epoch": int(s) // 50,
            "split": "validation",
            "loss": float(2 * np.exp(-s / 60) + 0.1 + s / 1000),
            "accuracy": float(0.95 - np.exp(-s / 50)),
            "gap": float(0.05 + s / 1000),
        }
        for s in steps[::4]
    ]
    events = [{"step": 120, "kind": "nonfinite"}, {"step": 190, "kind": "early_stop"}]
    return SimpleNamespace(train=train, validation=validation, events=events)


def test_plot_history_writes_a_png_with_titled_labelled_panels(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "plots" / "history.png"
    fig = plot_history(_history(), path=path, title="MLP on digits")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    panels = {ax.get_title(): ax for ax in fig.axes}
    assert list(panels) == [
        "Loss",
        "Accuracy",
        "Gradient norm",
        "Dead / saturated units",
        "Generalization gap",
    ]
    assert fig.get_suptitle() == "MLP on digits"
    assert all(ax.get_xlabel() == "step" for ax in fig.axes)
    assert panels["Loss"].get_ylabel() == "loss" and panels["Loss"].get_yscale() == "log"
    assert panels["Accuracy"].get_ylabel() == "accuracy"
    assert panels["Gradient norm"].get_yscale() == "log"
    legend = [t.get_text() for t in panels["Loss"].get_legend().get_texts()]
    assert legend == ["train", "validation", "nonfinite", "early stop"]
    units = [t.get_text() for t in panels["Dead / saturated units"].get_legend().get_texts()]
    assert units[:2] == ["dead ReLU 0", "saturated 1"]
    # every panel marks both events
    assert all(sum(line.get_xdata()[0] in (120, 190) for line in ax.lines) >= 2 for ax in fig.axes)


def test_plot_history_only_draws_what_is_there(tmp_path):
    pytest.importorskip("matplotlib")
    history = SimpleNamespace(
        train=[{"step": 0, "loss": -1.0}, {"step": 1, "loss": 2.0}], validation=[], events=[]
    )
    fig = plot_history(history)
    assert [ax.get_title() for ax in fig.axes] == ["Loss"]
    assert fig.axes[0].get_yscale() == "linear"  # a negative loss: no log scale
    with pytest.raises(ValueError, match="no training or validation records"):
        plot_history(SimpleNamespace(train=[], validation=[], events=[]))

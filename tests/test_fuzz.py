"""Fuzzing (issue 13, part 7): no input gives a traceback or a hang, only a result or a clear error.

Hypothesis drives the readers of files a user hands to nn_jax (model configs, histories, JSON
lines logs, a checkpoint's JSON files) and the ``nn-jax`` command line. Each input must give a
result or one of nn_jax's errors (argparse's usage exit for a bad flag); a restored checkpoint
must hold exactly what was saved.

The command line runs through the real ``main`` with the real parsers and checks; what would
take long is replaced: training stops where ``fit`` is called (after data loading, the
settings checks, the model's config and the run folder's files), MNIST-1D is a blank stand-in
of its shape, and the ``reproduce`` and ``bench`` work is stubbed after their flags are read.

Example counts are small and set here (``max_examples``, ``deadline=None``), so the file runs in
a few seconds under any Hypothesis profile; ``NN_JAX_FUZZ_SCALE=20`` searches 20 times longer.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nn_jax.bench.cli
import nn_jax.data
import nn_jax.jobs.reproduce
import nn_jax.jobs.runs
from nn_jax import Dense, Sequential, TrainState, initializers
from nn_jax.checkpoint import Checkpointer
from nn_jax.cli import build_parser, main
from nn_jax.config import from_config, from_json, to_config, to_json
from nn_jax.core import Layer
from nn_jax.errors import ConfigError, FileFormatError, NNJaxError, ParamsError
from nn_jax.history import History
from nn_jax.jobs.recipes import DATASETS, MODELS, RECIPES
from nn_jax.loggers import JsonlLogger, read_jsonl

# NN_JAX_FUZZ_SCALE=20 runs 20 times the examples (a longer search, by hand).
SCALE = int(os.environ.get("NN_JAX_FUZZ_SCALE", "1"))


def fuzz(n: int) -> Any:
    return settings(
        max_examples=n * SCALE,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# --------------------------------------------------------------------------------------------
# Strategies: any JSON, and mutations of real data.

NASTY_STRINGS = [
    "", "type", "function", "initializer", "dtype", "enum", "step", "NaN", "Infinity",
    "Dense", "Sequential", "relu", "jax.numpy:cos", "os:system", "nn_jax.cli:main",
    "jax.experimental.jax2tf:convert", "float32", "object", "f4,f4", "(2,)i4", "../x", "\x00",
    "é", "\ud800", "a" * 300,
]  # fmt: skip
NASTY_NUMBERS = [0, 1, -1, 2, 2**31, 2**63, 10**40, -(10**40), 0.5, -0.0, 1e308, math.inf,
                 -math.inf, math.nan, True, False]  # fmt: skip

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(NASTY_STRINGS)
    | st.sampled_from(NASTY_NUMBERS)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=8) | st.sampled_from(NASTY_STRINGS), inner, max_size=4)
    ),
    max_leaves=12,
)


def _slots(node: Any) -> Iterator[tuple[Any, Any]]:
    """Every (container, key) of a JSON tree, the root's parent aside."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield node, key
            yield from _slots(value)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield node, i
            yield from _slots(value)


def _tweaked(data: st.DataObject, value: Any) -> Any:
    """A value of the same JSON type as ``value``, near the edge of what readers accept."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return data.draw(st.sampled_from([0, -1, 1, 2**31, 10**30, value + 1, value * 1000]))
    if isinstance(value, float):
        return data.draw(st.sampled_from([0.0, -value, math.nan, math.inf, 1e-320, value * 1e6]))
    if isinstance(value, str):
        return data.draw(st.sampled_from(NASTY_STRINGS) | st.just(value[:-1]) | st.just(value * 2))
    if isinstance(value, list):
        return data.draw(st.sampled_from([value[:-1], value + value[-1:], [], value[::-1]]))
    return {}


def mutate(data: st.DataObject, tree: Any, names: list[str]) -> Any:
    """``tree`` with 1-3 random edits: a value replaced by any JSON or by a nearby value of its
    type, a key or item deleted, a key added (from ``names``, the keys a reader looks for)."""
    tree = copy.deepcopy(tree)
    for _ in range(data.draw(st.integers(1, 3))):
        slots = list(_slots(tree))
        if not slots:
            return data.draw(json_values)
        parent, key = data.draw(st.sampled_from(slots))
        action = data.draw(st.sampled_from(["replace", "tweak", "tweak", "delete", "add"]))
        if action == "tweak":
            parent[key] = _tweaked(data, parent[key])
        elif action == "replace":
            parent[key] = data.draw(json_values)
        elif action == "delete":
            del parent[key]
        elif isinstance(parent, dict):
            parent[data.draw(st.sampled_from(names))] = data.draw(json_values)
        else:
            parent.insert(key, data.draw(json_values))
    return tree


def mutate_bytes(data: st.DataObject, raw: bytes) -> bytes:
    """``raw`` truncated, with bytes flipped, deleted or inserted."""
    raw = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 3))):
        action = data.draw(st.sampled_from(["truncate", "flip", "delete", "insert"]))
        at = data.draw(st.integers(0, max(len(raw) - 1, 0)))
        if action == "truncate":
            del raw[at:]
        elif action == "flip" and raw:
            raw[at] ^= data.draw(st.integers(1, 255))
        elif action == "delete":
            del raw[at : at + data.draw(st.integers(1, 8))]
        else:
            raw[at:at] = data.draw(st.binary(min_size=1, max_size=8))
    return bytes(raw)


# --------------------------------------------------------------------------------------------
# Model configs.

MODELS_TO_MUTATE = [recipe.build() for recipe in RECIPES] + [
    Sequential(Dense(4, w_init=initializers.normal(stddev=0.02)), jax.nn.relu, Dense(2)),
    Sequential(Dense(3, dtype=jnp.bfloat16, precision=jax.lax.Precision.HIGHEST), jnp.cos),
]
CONFIGS = [to_config(model) for model in MODELS_TO_MUTATE]
CONFIG_KEYS = sorted(
    {k for config in CONFIGS for parent, k in _slots(config) if isinstance(parent, dict)}
    | {"type", "function", "initializer", "dtype", "enum", "member", "layers"}
)


def _layer_or_config_error(read: Any) -> None:
    """A layer, a ConfigError (valid JSON, not a valid config) or a FileFormatError (not
    JSON); nothing else."""
    try:
        layer = read()
    except (ConfigError, FileFormatError):
        return
    assert isinstance(layer, Layer)


@fuzz(80)
@given(json_values)
def test_from_json_of_any_json(value):
    _layer_or_config_error(lambda: from_json(json.dumps(value)))


@fuzz(120)
@given(st.data())
def test_from_config_of_a_mutated_real_config(data):
    config = data.draw(st.sampled_from(CONFIGS))
    _layer_or_config_error(lambda: from_config(mutate(data, config, CONFIG_KEYS)))


@fuzz(60)
@given(st.data())
def test_from_json_of_mutated_text(data):
    text = to_json(data.draw(st.sampled_from(MODELS_TO_MUTATE))).encode()
    _layer_or_config_error(lambda: from_json(mutate_bytes(data, text)))


def test_from_json_of_pathological_text():
    for text in ["[" * 100_000, '{"a":' * 50_000, "1" * 5000, b"\xff\xfe", "\ufeff{}", ""]:
        with pytest.raises(FileFormatError, match="from_json: not valid JSON"):
            from_json(text)
    deep: Any = {"type": "Dense", "features": 2}
    for _ in range(2000):
        deep = {"type": "Sequential", "layers": [["0", deep]]}
    with pytest.raises(ConfigError, match="nested too deeply"):
        from_config(deep)


# --------------------------------------------------------------------------------------------
# Histories and JSON lines logs.

REAL_HISTORY = {
    "train": [
        {"step": 10, "epoch": 0, "split": "train", "loss": 0.9, "grad_norm": 1.5, "nonfinite": 0},
        {"step": 20, "epoch": 1, "split": "train", "loss": "NaN", "dead_relu/0": 0.25},
    ],
    "validation": [{"step": 20, "split": "validation", "loss": 0.7, "accuracy": 0.8, "gap": -0.1}],
    "events": [
        {"step": 15, "kind": "nonfinite", "gradients": ["0/w"]},
        {"step": 20, "kind": "early_stop", "monitor": "loss", "best": 0.7, "best_step": 20},
    ],
}
HISTORY_KEYS = ["train", "validation", "events", "step", "loss", "accuracy", "kind", "split"]


def _check_history(data: Any) -> None:
    try:
        history = History.from_dict(data)
    except FileFormatError:
        return
    # A history that loaded is usable, and writes back as strict JSON.
    json.dumps(history.to_dict(), allow_nan=False)
    assert History.from_dict(history.to_dict()).to_dict() == history.to_dict()
    history.truncate(15)
    for name in ("loss", "accuracy", "split", "step"):
        for split in ("train", "validation"):
            try:
                steps, values = history.series(name, split)  # type: ignore[arg-type]
                assert len(steps) == len(values)
                history.best(name)
            except ConfigError as e:
                assert "not a number" in str(e)


@fuzz(60)
@given(json_values)
def test_history_from_any_json(value):
    _check_history(value)


@fuzz(80)
@given(st.data())
def test_history_from_a_mutated_real_history(data):
    _check_history(mutate(data, REAL_HISTORY, HISTORY_KEYS))


def test_history_round_trips_non_finite_values_as_strict_json():
    history = History.from_dict(REAL_HISTORY)
    assert math.isnan(history.train[1]["loss"])
    text = json.dumps(history.to_dict(), allow_nan=False)
    assert '"loss": "NaN"' in text
    assert History.from_dict(json.loads(text)).to_dict() == history.to_dict()


@pytest.fixture(scope="module")
def jsonl_bytes(tmp_path_factory):
    path = tmp_path_factory.mktemp("jsonl") / "log.jsonl"
    with JsonlLogger(path) as log:
        for record in REAL_HISTORY["train"] + REAL_HISTORY["validation"]:
            log(None, {**record, "loss": np.float32(0.5), "inf": math.inf})
    return path.read_bytes()


@fuzz(80)
@given(data=st.data())
def test_read_jsonl_of_a_mutated_file(data, jsonl_bytes):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "log.jsonl"
        kind = data.draw(st.sampled_from(["bytes", "lines", "records"]))
        if kind == "bytes":
            path.write_bytes(mutate_bytes(data, jsonl_bytes))
        elif kind == "lines":
            lines = data.draw(st.lists(json_values, max_size=4))
            path.write_text("\n".join(json.dumps(v) for v in lines))
        else:
            records = [json.loads(line) for line in jsonl_bytes.decode().splitlines()]
            path.write_text("\n".join(json.dumps(r) for r in mutate(data, records, HISTORY_KEYS)))
        try:
            records = read_jsonl(path)
        except FileFormatError as e:
            assert str(path) in str(e)
            return
        assert all(isinstance(r, dict) for r in records)


def test_read_jsonl_of_what_is_not_a_file(tmp_path):
    with pytest.raises(FileFormatError, match="no such file"):
        read_jsonl(tmp_path / "missing.jsonl")
    with pytest.raises(FileFormatError, match="is a folder"):
        read_jsonl(tmp_path)
    (tmp_path / "deep.jsonl").write_text("[" * 100_000 + "\n")
    with pytest.raises(FileFormatError, match=r"deep\.jsonl:1: not a JSON line"):
        read_jsonl(tmp_path / "deep.jsonl")


# --------------------------------------------------------------------------------------------
# A checkpoint's JSON files.

JSON_FILES = [
    "metadata/metadata",
    "manifest/manifest",
    "train_state/_METADATA",
    "train_state/_sharding",
    "train_state/array_metadatas/process_0",
    "_CHECKPOINT_METADATA",
]


def _state(step: int) -> TrainState:
    w = np.random.default_rng(step).standard_normal((16, 16)).astype(np.float32)
    params = {"dense": {"w": jnp.asarray(w), "b": jnp.full((16,), step, jnp.float32)}}
    return TrainState(
        params, {"count": jnp.asarray(step)}, (), jax.random.key(step), jnp.asarray(step)
    )


@pytest.fixture(scope="module")
def checkpoint_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("checkpoint") / "run"
    with Checkpointer(run, best="loss") as ckpt:
        for step in (1, 2):
            meta = {"history": REAL_HISTORY, "position": {"epoch": step}, "config": CONFIGS[0]}
            ckpt.save(_state(step), metadata=meta, metrics={"loss": 1.0 / step})
    return run


def _same(a: Any, b: Any) -> bool:
    return all(
        np.array_equal(np.asarray(x), np.asarray(y))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


@fuzz(30)
@given(data=st.data())
def test_a_checkpoint_with_a_mutated_file(data, checkpoint_run):
    with tempfile.TemporaryDirectory() as folder:
        run = Path(folder) / "run"
        shutil.copytree(checkpoint_run, run)
        step = run / "2"
        binary = sorted(
            str(f.relative_to(step))
            for f in (step / "train_state").rglob("*")
            if f.is_file()
            and str(f.relative_to(step)) not in JSON_FILES
            and f.name != "commit_success.txt"
        )  # tensorstore's array data and index files
        name = data.draw(st.sampled_from(JSON_FILES + binary))
        target = run / "2" / name
        raw = target.read_bytes()
        how = data.draw(
            st.sampled_from(["tree", "bytes", "any"] if name in JSON_FILES else ["bytes"])
        )
        if how == "tree":
            target.write_text(json.dumps(mutate(data, json.loads(raw), HISTORY_KEYS)))
        elif how == "bytes":
            target.write_bytes(mutate_bytes(data, raw))
        else:
            target.write_text(json.dumps(data.draw(json_values)))
        with Checkpointer(run, best="loss") as ckpt:
            assert 1 in ckpt.steps()
            assert ckpt.latest_step() in (1, 2) and ckpt.best_step() in (1, 2)
            for read in ("restore", "restore_arrays"):
                try:
                    if read == "restore":
                        restored, meta = ckpt.restore(_state(0))
                        tree = (restored.params, restored.state, restored.step)
                        expected = _state(2)
                        assert _same(tree, (expected.params, expected.state, expected.step))
                    else:
                        arrays, meta = ckpt.restore_arrays()
                        assert _same(arrays["params"], _state(2).params)
                    assert meta["position"] == {"epoch": 2}  # never silently other data
                except (FileFormatError, ParamsError) as e:
                    assert str(run) in str(e)
            restored, _ = ckpt.restore(_state(0), step=1)  # the earlier step is untouched
            assert _same(restored.params, _state(1).params)


# --------------------------------------------------------------------------------------------
# The command line.


class _WouldTrain(Exception):
    """Raised in place of ``fit``: every check before training passed."""


def _fake_mnist1d(*, sequence: bool = False, **kwargs: Any) -> Any:
    shape = (40, 1) if sequence else (40,)
    x, y = np.zeros((4000, *shape), np.float32), np.arange(4000, dtype=np.int32) % 10
    return nn_jax.data.Split(x, y, x[:1000], y[:1000])


def _fake_reproduce(*, steps: int = 6000, seeds: Any = (0,), progress: bool = True) -> list:
    row = {"model": "mlp", "paper": 0.68, "ours": 0.5, "sd": 0.0, "runs": [0.5], "best": 0.5}
    return [{**row, "steps": steps, "seconds": 0.0}]


def _fake_bench(args: argparse.Namespace) -> int:
    nn_jax.bench.cli.options_from_args(args)  # the real resolution of the flags
    return 0


@pytest.fixture(scope="module")
def cli_folder(tmp_path_factory):
    """A working folder four levels down (so the '../../..' of a fuzzed --out stays in the
    test's folder), holding a file, an empty folder and run folders with a broken config, no
    checkpoint, broken checkpoints."""
    cwd = tmp_path_factory.mktemp("cli") / "a" / "b" / "c" / "d"
    cwd.mkdir(parents=True)
    (cwd / "file").write_text("not a folder")
    (cwd / "empty").mkdir()
    good = {
        "recipe": "mlp-digits",
        "model_name": "mlp",
        "dataset": "digits",
        "model": to_config(RECIPES[0].build()),
        "hyperparameters": {"seed": 0, "learning_rate": 0.001, "batch_size": 64},
    }
    for name, config in {
        "bad_config": "{not json",
        "bad_model": json.dumps({**good, "model": {"type": "Nope"}}),
        "no_checkpoint": json.dumps(good),
        "bad_checkpoint": json.dumps(good),
    }.items():
        (cwd / name).mkdir()
        (cwd / name / "config.json").write_text(config)
    (cwd / "bad_checkpoint" / "checkpoints" / "5").mkdir(parents=True)
    (cwd / "bad_checkpoint" / "checkpoints" / "5" / "_CHECKPOINT_METADATA").write_text("{}")
    (cwd / "bad_checkpoint" / "checkpoints" / "5" / "train_state").mkdir()
    (cwd / "bad_checkpoint" / "checkpoints" / "5" / "metadata").mkdir()
    patches = pytest.MonkeyPatch()
    patches.setattr(nn_jax.jobs.runs, "fit", lambda *a, **k: (_ for _ in ()).throw(_WouldTrain()))
    patches.setattr(nn_jax.data, "load_mnist1d", _fake_mnist1d)
    patches.setattr(nn_jax.jobs.reproduce, "reproduce_mnist1d", _fake_reproduce)
    patches.setattr(nn_jax.bench.cli, "run_cli", _fake_bench)
    patches.chdir(cwd)
    yield cwd
    patches.undo()


def _options() -> dict[str, list[str]]:
    """Every subcommand's option strings, read from the real parser."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {
        name: sorted(s for s in p._option_string_actions if s.startswith("--"))
        for name, p in sub.choices.items()
    }


OPTIONS = _options()
VALUES = [
    *MODELS, *DATASETS, "mnist1d", "3", "2", "1", "0", "-1", "-3", "1e3", "0.01", "nan", "inf",
    "-inf", "1.5", "4294967296", "9" * 30, "", " ", "file", "empty", "bad_config", "bad_model",
    "no_checkpoint", "bad_checkpoint", "missing", "../x", "out/run", "file/run", "x" * 300,
    "nul\x00byte", "all", "seed,mlp", "float32", "nope", "--", "-",
]  # fmt: skip
tokens = st.sampled_from(VALUES) | st.text(max_size=8).filter(
    lambda s: not s.startswith(("/", "~"))
)


@st.composite
def argvs(draw: Any) -> list[str]:
    command = draw(st.sampled_from([*OPTIONS, *OPTIONS, "frobnicate", "--version", "-h", ""]))
    argv = [command] if command else []
    options = [*OPTIONS.get(command, []), "--help", "--nope"]
    for _ in range(draw(st.integers(0, 5))):
        kind = draw(st.sampled_from(["option", "option", "value", "option=value"]))
        if kind == "option":
            argv += [draw(st.sampled_from(options)), draw(tokens)]
        elif kind == "value":
            argv.append(draw(tokens))
        else:
            argv.append(f"{draw(st.sampled_from(options))}={draw(tokens)}")
    return argv


def _run_main(argv: list[str]) -> None:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            assert main(argv) == 0
        except SystemExit as e:
            assert e.code in (0, 2), (argv, e.code)
            if e.code == 2:
                lines = err.getvalue().splitlines()
                assert len(lines) == 1 and lines[0].startswith("nn-jax: error: "), (argv, lines)
        except _WouldTrain:
            pass


@fuzz(100)
@given(argv=argvs())
def test_the_command_line_with_random_arguments(argv, cli_folder):
    _run_main(argv)


@pytest.mark.parametrize(
    "argv",
    [
        ["eval", "bad_config"],
        ["eval", "bad_model"],
        ["eval", "no_checkpoint"],
        ["eval", "bad_checkpoint"],
        ["eval", "x" * 5000],
        ["train", "--out", "x" * 5000],
        ["train", "--steps", "3", "--out", "file/run"],
        ["train", "--epochs", str(2**31 - 1)],
        ["reproduce", "mnist1d", "--seeds", "1001"],
    ],
    ids=lambda a: " ".join(a)[:40],
)
def test_bad_run_folders_and_values_give_one_line(argv, cli_folder):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    lines = err.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nn-jax: error: "), lines


def test_a_fuzzed_train_stops_before_training(cli_folder):
    with pytest.raises(_WouldTrain):
        main(["train", "gru", "--dataset", "mnist1d", "--steps", "5", "--out", "ok_run"])
    assert (
        json.loads((cli_folder / "ok_run" / "config.json").read_text())["recipe"] == "gru-mnist1d"
    )


def test_errors_are_nn_jax_errors():
    assert all(issubclass(e, NNJaxError) for e in (ConfigError, FileFormatError, ParamsError))

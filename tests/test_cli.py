"""The ``nn-jax`` command line, end to end.

Whole runs go through ``sys.executable -m nn_jax.cli`` in a fresh process with ``cwd=tmp_path``
(no training script importable): one digits run (module fixture) serves the outputs, eval and
resume tests. The many bad-input cases run in-process through ``main`` (each subprocess costs a
JAX import), plus two in a subprocess to check the process itself prints no traceback.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nn_jax.checkpoint import Checkpointer
from nn_jax.cli import main
from nn_jax.jobs import RECIPES
from nn_jax.loggers import read_jsonl

DIGITS = ["train", "mlp", "--dataset", "digits", "--no-progress"]
# "test accuracy 97.77% (loss 0.0617, 359 examples)", as train and eval print it.
METRICS = re.compile(r"test .*? examples\)")


def nn_jax(*args, cwd, env=None):
    """Run ``python -m nn_jax.cli *args`` in ``cwd`` (with ``env`` added to the environment).
    The processes share a persistent JAX compilation cache (in ``cwd``'s parent) so that the
    digits runs compile once."""
    cache = Path(cwd).parent / "jax-cache"
    env = {
        **os.environ,
        "MPLBACKEND": "Agg",
        "JAX_COMPILATION_CACHE_DIR": str(cache),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
        **(env or {}),
    }
    return subprocess.run(
        [sys.executable, "-m", "nn_jax.cli", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


def ok(done):
    assert done.returncode == 0, done.stderr
    return done.stdout


def one_error_line(stderr):
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("nn-jax: error: ") and "Traceback" not in stderr
    return lines[0]


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """``nn-jax train mlp --dataset digits --epochs 4 --out A``: (folder, stdout)."""
    cwd = tmp_path_factory.mktemp("digits")
    stdout = ok(nn_jax(*DIGITS, "--epochs", 4, "--out", "A", cwd=cwd))
    return cwd / "A", stdout


def params_of(run):
    with Checkpointer(run / "checkpoints") as checkpointer:
        return checkpointer.restore_arrays()[0]


def test_train_writes_the_run_folder(digits_run):
    run, stdout = digits_run
    assert len(stdout.splitlines()) == 1 and stdout.startswith("mlp on digits: test accuracy ")
    config = json.loads((run / "config.json").read_text())
    assert config["recipe"] == "mlp-digits" and config["model"]["type"] == "MLP"
    assert config["input"] == {"shape": [64, 64], "dtype": "float32"}
    assert config["hyperparameters"]["epochs"] == 4 and config["nn_jax_version"]
    assert config["data"] == {"train": 1294, "validation": 144, "test": 359}
    result = json.loads((run / "result.json").read_text())
    assert result["steps"] == 80 and 0 < result["test"]["accuracy"] <= 1
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    records = read_jsonl(run / "history.jsonl")
    assert [r["step"] for r in records if r["split"] == "validation"] == [20, 40, 60, 80]


def test_eval_in_a_fresh_process_prints_the_same_test_metrics(digits_run):
    run, stdout = digits_run
    evaluated = ok(nn_jax("eval", run, cwd=run.parent))
    assert METRICS.search(evaluated)[0] == METRICS.search(stdout)[0]
    assert "step 80" in evaluated


def test_interrupted_and_resumed_run_is_bit_identical(digits_run):
    run, _ = digits_run
    cwd = run.parent
    ok(nn_jax(*DIGITS, "--epochs", 2, "--out", "B", cwd=cwd))
    # An interrupted run may have logged past its last checkpoint: resuming drops such lines.
    with (cwd / "B/history.jsonl").open("a") as f:
        f.write(json.dumps({"step": 45, "split": "train", "loss": 9.0}) + "\n")
    ok(nn_jax(*DIGITS, "--epochs", 4, "--out", "B", cwd=cwd))
    a, b = params_of(run), params_of(cwd / "B")
    flat_a, flat_b = (dict(_leaves(t)) for t in (a, b))
    assert flat_a.keys() == flat_b.keys() and flat_a
    for path, value in flat_a.items():
        np.testing.assert_array_equal(flat_b[path], value, err_msg=path)
    assert read_jsonl(cwd / "B/history.jsonl") == read_jsonl(run / "history.jsonl")


def test_training_on_a_two_device_mesh_matches_one_device(digits_run):
    """``--mesh data=2`` in a process with 2 simulated CPU devices: each batch split in two,
    the same 80 steps as the one-device run of the fixture, so the same losses up to float32
    reduction order, and the params land on both devices."""
    run, _ = digits_run
    cpus = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    ok(nn_jax(*DIGITS, "--epochs", 4, "--mesh", "data=2", "--out", "M", cwd=run.parent, env=cpus))
    mesh_run = run.parent / "M"
    one, two = read_jsonl(run / "history.jsonl"), read_jsonl(mesh_run / "history.jsonl")
    assert [(r["step"], r["split"]) for r in two] == [(r["step"], r["split"]) for r in one]
    np.testing.assert_allclose([r["loss"] for r in two], [r["loss"] for r in one], rtol=1e-4)
    results = [json.loads((r / "result.json").read_text())["test"] for r in (run, mesh_run)]
    np.testing.assert_allclose(results[1]["loss"], results[0]["loss"], rtol=1e-4)
    flat_one, flat_two = (dict(_leaves(params_of(r))) for r in (run, mesh_run))
    for path, value in flat_one.items():
        np.testing.assert_allclose(flat_two[path], value, rtol=1e-3, atol=1e-5, err_msg=path)


def test_eval_of_a_damaged_checkpoint_is_one_line_in_a_subprocess(digits_run):
    """Flipped bits in the latest step's array files: refused on one line, with no trace of the
    array reads that tensorstore abandons (they would print tracebacks)."""
    run, _ = digits_run
    damaged = run.parent / "damaged"
    shutil.copytree(run, damaged)
    latest = max(int(p.name) for p in (damaged / "checkpoints").iterdir() if p.name.isdigit())
    for data in (damaged / "checkpoints" / str(latest)).rglob("d/*"):
        raw = bytearray(data.read_bytes())
        raw[len(raw) // 2] ^= 0x01
        data.write_bytes(bytes(raw))
    done = nn_jax("eval", "damaged", cwd=run.parent)
    assert done.returncode == 2
    line = one_error_line(done.stderr)
    assert f"{damaged / 'checkpoints' / str(latest)}' is corrupt or incomplete" in line


def _leaves(tree, prefix=""):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _leaves(value, f"{prefix}{key}/")
        else:
            yield f"{prefix}{key}", np.asarray(value)


def test_a_file_as_output_folder_fails_before_anything_runs(tmp_path):
    (tmp_path / "taken").write_text("")
    done = nn_jax(*DIGITS, "--out", "taken/run", cwd=tmp_path)
    assert done.returncode == 2
    assert "is a file, not a folder" in one_error_line(done.stderr)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def test_an_error_inside_a_command_is_one_line_in_a_subprocess(tmp_path):
    done = nn_jax("eval", "missing", cwd=tmp_path)
    assert done.returncode == 2
    assert "'missing' is not a run folder" in one_error_line(done.stderr)


def _bad_inputs():
    yield ["train", "resnet"], "invalid choice: 'resnet' (choose from 'mlp', 'lenet'"
    yield ["train", "mlp", "--dataset", "cifar"], "invalid choice: 'cifar' (choose from 'digits'"
    yield ["train", "gcn", "--dataset", "digits"], "no recipe trains gcn on digits"
    yield ["train", "--epochs", "0"], "--epochs: expected a positive integer, given 0"
    yield ["train", "--epochs", "-3"], "--epochs: expected a positive integer, given -3"
    yield ["train", "--steps", "ten"], "--steps: expected a positive integer, given 'ten'"
    yield ["train", "--lr", "abc"], "--lr: expected a positive number, given 'abc'"
    yield ["train", "--lr", "-0.1"], "--lr: expected a positive number, given -0.1"
    yield ["train", "--lr", "nan"], "--lr: expected a positive number, given nan"
    yield ["train", "--batch-size", "0"], "--batch-size: expected a positive integer, given 0"
    yield ["train", "--seed", "-1"], "--seed: expected an integer >= 0, given -1"
    yield ["train", "--val-every", "x"], "--val-every: expected a positive integer, given 'x'"
    yield ["train", "--epochs", "2", "--steps", "3"], "--steps: not allowed with argument --epochs"
    yield ["train", "--batch-size", "5000"], "--batch-size 5000 is larger than the 1294 training"
    yield ["train", "gcn", "--batch-size", "8"], "trains on the whole graph at every step"
    yield ["train", "--out", "file"], "'file' is a file, not a folder"
    yield ["train", "--out", "file/run"], "'file' is a file, not a folder"
    yield ["train", "--steps", "2147483648"], "expected a positive integer up to 2147483647"
    yield ["train", "--seed", "4294967296"], "--seed: expected an integer >= 0 up to 4294967295"
    yield ["train", "--out", ""], "--out: expected a folder path, given ''"
    yield ["train", "--out", "a\x00b"], "--out: expected a folder path"
    yield ["train", "--mesh", "gpu=2"], "--mesh: mesh 'gpu=2': expected comma-separated axis="
    yield ["train", "--mesh", "data=0"], "with sizes >= 1, e.g. 'data=2,fsdp=4'; given 'data=0'"
    yield ["train", "--mesh", "data=2"], "data=2 x fsdp=1 x tensor=1 lays out 2 devices, but 1"
    yield ["reproduce", "mnist1d", "--seeds", "1001"], "--seeds: expected a positive integer up to"
    yield ["eval", "nowhere"], "'nowhere' is not a run folder"
    yield ["eval", "file"], "'file' is not a run folder"
    yield ["eval", ""], "DIR: expected a folder path, given ''"
    yield ["eval", "x" * 5000], "cannot be read as a folder"
    yield ["eval", "empty"], "has no config.json"
    yield ["summary", "mlp", "--dataset", "karate"], "no recipe trains mlp on karate"
    yield ["frobnicate"], "invalid choice: 'frobnicate'"
    yield [], "the following arguments are required: COMMAND"


@pytest.mark.parametrize(
    ("argv", "message"), list(_bad_inputs()), ids=[" ".join(a) for a, _ in _bad_inputs()]
)
def test_bad_input_exits_2_with_one_line(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "file").write_text("")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in one_error_line(capsys.readouterr().err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "file"]  # nothing written


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_a_read_only_output_folder_is_refused(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(SystemExit):
        main([*DIGITS, "--out", str(locked / "run")])
    assert "is not writable" in one_error_line(capsys.readouterr().err)


def test_version(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"nn-jax {version('nn-jax')}"


# mlp-digits is trained above; mlp-mnist1d runs the same loop on another data set.
SMOKE = [r for r in RECIPES if r.name not in ("mlp-digits", "mlp-mnist1d")]


@pytest.mark.parametrize("recipe", SMOKE, ids=lambda r: r.name)
def test_every_other_recipe_trains_three_steps_and_evaluates(recipe, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", recipe.model, "--dataset", recipe.dataset, "--steps", "3", "--no-progress"]
    assert main([*args, "--out", str(out)]) == 0
    trained = capsys.readouterr().out
    assert main(["eval", str(out)]) == 0
    evaluated = capsys.readouterr().out
    assert METRICS.search(evaluated)[0] == METRICS.search(trained)[0]
    assert json.loads((out / "result.json").read_text())["steps"] == 3


def test_summary_prints_the_model_table(capsys):
    assert main(["summary", "gcn", "--dataset", "karate"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("gcn on karate") and "conv_1" in out
    assert "Total parameters: 594" in out


def test_reproduce_prints_ours_next_to_the_papers(monkeypatch, capsys):
    import nn_jax.jobs.reproduce

    calls = []

    def fake(*, steps=6000, seeds=(0, 1, 2), progress=True):
        calls.append((steps, seeds))
        row = {
            "model": "mlp",
            "paper": 0.68,
            "ours": 0.681,
            "sd": 0.0,
            "runs": [0.681],
            "best": 0.69,
            "steps": steps,
            "seconds": 1.0,
        }
        return [row]

    monkeypatch.setattr(nn_jax.jobs.reproduce, "reproduce_mnist1d", fake)
    assert main(["reproduce", "mnist1d", "--quick", "--no-progress"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2].split() == ["mlp", "68%", "68.1%", "±", "0.0", "68.1", "69.0%", "1500", "1.0"]
    assert main(["reproduce", "mnist1d", "--steps", "10", "--seeds", "2", "--no-progress"]) == 0
    assert calls == [(1500, (0,)), (10, (0, 1))]


def test_the_module_runs_as_a_script():
    source = Path(sys.modules["nn_jax.cli"].__file__).read_text()
    assert 'if __name__ == "__main__":' in source

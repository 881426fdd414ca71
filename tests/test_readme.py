"""The README's code runs as written, and its two quickstart commands are the ones CI runs."""

import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import nn_jax as nn

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()


def test_python_examples_run():
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    namespace: dict = {}
    exec(blocks[0], namespace)  # the seed's network, trained for 100 steps
    assert float(namespace["loss"]) < 0.3
    (block,) = [b for b in blocks if "class MLPBlock" in b]
    exec("import dataclasses, jax, jax.numpy as jnp\nimport nn_jax as nn\n" + block, namespace)
    layer = namespace["MLPBlock"](hidden=8)
    x = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    params, _ = layer.init(jax.random.key(0), x)
    assert jax.tree.map(jnp.shape, params) == {
        "fc1": {"b": (8,), "w": (4, 8)},
        "fc2": {"b": (4,), "w": (8, 4)},
        "gate": (1, 4),
    }
    h = x @ np.asarray(params["fc1"]["w"]) + np.asarray(params["fc1"]["b"])
    h = np.asarray(jax.nn.gelu(h))
    expected = x + np.asarray(params["gate"]) * (
        h @ np.asarray(params["fc2"]["w"]) + np.asarray(params["fc2"]["b"])
    )
    np.testing.assert_allclose(layer(params, x), expected, rtol=1e-5, atol=1e-6)


def test_ci_runs_the_readme_test_command():
    commands = re.findall(r"```bash\n(python3 -m venv .*?)\n```", README)
    assert len(commands) == 2 and "nn-jax train" in commands[0]
    assert commands[1] in (ROOT / ".ci" / "run").read_text()


def test_experiments_example_runs_and_resumes(tmp_path, monkeypatch):
    """The Experiments section's fit: validation, early stopping, checkpoints, logs, curves;
    run a second time it resumes from its checkpoint instead of starting over."""
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    (block,) = [b for b in blocks if "nn.Checkpointer(" in b]
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(block, namespace)
    history = namespace["history"]
    assert namespace["test_accuracy"] > 0.93
    assert history.validation and all("gap" in r for r in history.validation)
    assert any(k.startswith("dead_relu/") for k in history.train[-1])
    assert (tmp_path / "runs/readme/curves.png").stat().st_size > 10_000
    steps = int(namespace["ts"].step)
    again: dict = {}
    exec(block, again)  # resumes: the same final state, no step trained twice
    assert int(again["ts"].step) == steps
    lines = (tmp_path / "runs/readme/history.jsonl").read_text().splitlines()
    assert len(lines) >= len(history.train) + len(history.validation)


def test_checked_mode_example_raises_the_printed_error(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    (block,) = [b for b in blocks if "nn.checked(" in b]
    exec(block, {})
    printed = capsys.readouterr().out.strip()
    assert printed == "Embedding at <root>: indices must lie in [0, 10), given values in [1, 12]"


def test_pytorch_weights_example_round_trips():
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    (block,) = [b for b in blocks if "from_torch" in b]
    namespace: dict = {}
    exec(block, namespace)  # asserts the round trip itself
    params, sd, x = namespace["params"], namespace["state_dict"], np.ones((3, 4))
    h = np.maximum(x @ sd["0.weight"].T + sd["0.bias"], 0) @ sd["2.weight"].T + sd["2.bias"]
    y = namespace["model"](params, x.astype(np.float32))
    np.testing.assert_allclose(y, h, rtol=1e-5, atol=1e-5)


def test_scale_example_trains_with_its_rules(capsys):
    """The scale section's example: the frozen embedding is bit-identical after training, the
    head moved, the report names the rule behind each setting, and the loss fell."""
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    (block,) = [b for b in blocks if "nn.Rules(" in b]
    namespace: dict = {}
    exec(block, namespace)
    ts, history, model, x = (namespace[k] for k in ("ts", "history", "model", "x"))
    init_key = jax.random.split(jax.random.key(1))[0]  # fit's: (init key, data key)
    start = nn.TrainState.create(model, namespace["optimizer"], init_key, x[:64]).params
    assert "0.1 #2" in capsys.readouterr().out  # head/*: lr_scale from rule #2
    for name in ("w", "b"):
        np.testing.assert_array_equal(ts.params["embed"][name], start["embed"][name])
    assert not np.allclose(ts.params["head"]["w"], start["head"]["w"])
    losses = history.series("loss")[1]
    assert losses[-1] < 0.7 * losses[0]

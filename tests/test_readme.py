"""The README's code runs as written, and its two quickstart commands are the ones CI runs."""

import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

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

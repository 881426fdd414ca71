"""nn_jax.export: a trained model exported with jax.export runs without its Python code.

The reload test runs in a fresh Python process that imports only ``jax`` and ``numpy`` (not
nn_jax), so nothing of the model's code can be reached; inputs and outputs cross as ``.npy``
files read with ``allow_pickle=False``.
"""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nn_jax import BatchNorm, Conv, Dense, Flatten, MaxPool, Sequential
from nn_jax.errors import ArgumentError, FileFormatError, ShapeError
from nn_jax.export import ExportedModel, export_model, load_exported, save_exported

KEY = jax.random.key(0)


@pytest.fixture(scope="module")
def cnn():
    """A small CNN with BatchNorm whose running statistics moved away from (0, 1)."""
    model = Sequential(
        Conv(4, (3, 3)),
        BatchNorm(momentum=0.5),
        jax.nn.relu,
        MaxPool(2, strides=2),
        Flatten(),
        Dense(3),
    )
    x = jax.random.normal(jax.random.key(1), (4, 6, 6, 2))
    params, state = model.init(KEY, x)
    _, state = model.apply(params, state, 2.0 + 3.0 * x, train=True)
    assert not np.allclose(state["1"]["mean"], 0.0)
    return model, params, state


@pytest.fixture(scope="module")
def saved(cnn, tmp_path_factory):
    model, params, state = cnn
    exported = export_model(model, params, state, jnp.zeros((1, 6, 6, 2)))
    path = tmp_path_factory.mktemp("export") / "cnn.jaxexport"
    save_exported(path, exported)
    return path


def _inputs(batch):
    return np.asarray(jax.random.normal(jax.random.key(batch), (batch, 6, 6, 2)), np.float32)


def test_reloaded_in_a_fresh_process_with_only_jax(cnn, saved, tmp_path):
    model, params, state = cnn
    for batch in (1, 3):
        np.save(tmp_path / f"x{batch}.npy", _inputs(batch))
    script = textwrap.dedent(
        """
        import sys
        import jax, numpy as np
        path, folder = sys.argv[1], sys.argv[2]
        with open(path, "rb") as f:
            exported = jax.export.deserialize(bytearray(f.read()))
        for batch in (1, 3):
            x = np.load(f"{folder}/x{batch}.npy", allow_pickle=False)
            np.save(f"{folder}/y{batch}.npy", np.asarray(exported.call(x)))
        assert not any(m == "nn_jax" or m.startswith("nn_jax.") for m in sys.modules)
        """
    )
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    result = subprocess.run(
        [sys.executable, "-c", script, str(saved), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for batch in (1, 3):
        y = np.load(tmp_path / f"y{batch}.npy", allow_pickle=False)
        expected = model.apply(params, state, _inputs(batch), train=False)[0]
        assert y.shape == (batch, 3)
        np.testing.assert_allclose(y, expected, rtol=1e-6, atol=1e-6)


def test_loaded_model_checks_its_inputs(saved):
    loaded = load_exported(saved)
    assert isinstance(loaded, ExportedModel)
    assert loaded(_inputs(2)).shape == (2, 3)
    with pytest.raises(
        ShapeError, match=r"input 0 has shape \(2, 5, 6, 2\), expected \(b, 6, 6, 2\)"
    ):
        loaded(np.zeros((2, 5, 6, 2), np.float32))
    with pytest.raises(ShapeError, match="input 0 has dtype float64, expected float32"):
        loaded(np.zeros((2, 6, 6, 2), np.float64))
    with pytest.raises(ArgumentError, match="expected inputs structured as"):
        loaded(_inputs(1), _inputs(1))
    sidecar = json.loads((saved.parent / (saved.name + ".json")).read_text())
    assert sidecar["inputs"] == [{"shape": ["b", 6, 6, 2], "dtype": "float32"}]
    assert sidecar["outputs"] == [{"shape": ["b", 3], "dtype": "float32"}]
    assert sidecar["params_as_inputs"] is False


def test_params_as_inputs_and_fixed_batch(cnn, tmp_path):
    model, params, state = cnn
    exported = export_model(
        model,
        params,
        state,
        jnp.zeros((2, 6, 6, 2)),
        params_as_inputs=True,
        batch_size_symbolic=False,
    )
    path = save_exported(tmp_path / "m.bin", exported)
    loaded = load_exported(path)
    x = _inputs(2)
    # New weights go in without re-exporting: zero the last layer, the output is its bias.
    new = {**params, "5": {"w": jnp.zeros_like(params["5"]["w"]), "b": jnp.arange(3.0)}}
    np.testing.assert_allclose(loaded(new, state, x), np.tile(np.arange(3.0), (2, 1)))
    np.testing.assert_allclose(
        loaded(params, state, x), model.apply(params, state, x)[0], rtol=1e-6, atol=1e-6
    )
    with pytest.raises(ShapeError, match=r"has shape \(3, 6, 6, 2\), expected \(2, 6, 6, 2\)"):
        loaded(params, state, _inputs(3))


def test_bad_files_and_arguments(cnn, tmp_path):
    model, params, state = cnn
    (tmp_path / "junk.bin").write_bytes(b"not an exported model")
    with pytest.raises(FileFormatError, match=r"not a serialized jax\.export\.Exported"):
        load_exported(tmp_path / "junk.bin")
    with pytest.raises(FileFormatError, match="no file"):
        load_exported(tmp_path / "missing.bin")
    with pytest.raises(ArgumentError, match="params must be the dict"):
        export_model(model, (params, state), state, jnp.zeros((1, 6, 6, 2)))
    with pytest.raises(ShapeError, match="leading batch axis"):
        export_model(Dense(2), {}, {}, jnp.zeros(()))

"""The built wheel installs and runs on its own: ``pip install`` (not editable) into a fresh
virtual environment, ``nn-jax bench --quick`` from outside the repository.

Cost: one wheel build (~20 s), one venv with the runtime dependencies from pip's cache or index
(~25 s, mostly jaxlib), one quick benchmark run (~30 s): 1.5 to 2 minutes on 2 shared CPU cores.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _run(*cmd: str | Path, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"{cmd} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


IMPORT_NAMES = {"orbax-checkpoint": "orbax"}  # distribution name -> import name


def _imported_top_level_packages() -> set[str]:
    """Third-party packages imported anywhere in ``nn_jax/`` except the benchmark suite."""
    names = set()
    for path in (ROOT / "nn_jax").rglob("*.py"):
        if "bench" in path.relative_to(ROOT / "nn_jax").parts:
            continue
        for line in path.read_text().splitlines():
            m = re.match(r"\s*(?:from|import) ([A-Za-z_]\w*)", line)
            if m:
                names.add(m.group(1))
    return names - set(sys.stdlib_module_names) - {"nn_jax", "__future__"}


def test_runtime_dependencies_are_what_nn_jax_imports_at_module_level():
    declared = {re.split(r"[<>=!~ \[]", d)[0] for d in PYPROJECT["project"]["dependencies"]}
    declared = {IMPORT_NAMES.get(name, name) for name in declared}
    # the jobs' and loggers' extras, imported where they are used
    lazily_imported_extras = {"matplotlib", "sklearn", "mnist1d", "networkx", "tensorboardX"}
    # the compat bridges' extras (nn_jax.compat.*, imported only when used)
    lazily_imported_extras |= {"torch", "safetensors", "flax", "equinox"}
    # the notebooks' extras (treescope renderings, the seed's interactive diagram)
    lazily_imported_extras |= {"treescope", "ipywidgets", "IPython"}
    assert declared == _imported_top_level_packages() - lazily_imported_extras
    assert PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"] == ["nn_jax*"]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv with the wheel of this checkout and its runtime dependencies installed."""
    tmp = tmp_path_factory.mktemp("packaging")
    # Build from a copy of what the wheel is made of: setuptools writes build/ and *.egg-info
    # next to the sources, and a stale build/lib would leak old modules into the wheel.
    source = tmp / "source"
    shutil.copytree(
        ROOT / "nn_jax", source / "nn_jax", ignore=shutil.ignore_patterns("__pycache__")
    )
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", tmp / "dist", source, cwd=tmp)
    (wheel,) = (tmp / "dist").glob("nn_jax-*.whl")
    venv.create(tmp / "venv")  # without pip: this environment's pip installs into it
    python = tmp / "venv/bin/python"
    _run(
        sys.executable,
        "-m",
        "pip",
        "--python",
        python,
        "install",
        "-q",
        "--no-compile",
        wheel,
        cwd=tmp,
    )
    return tmp


def test_wheel_runs_the_quick_benchmark_without_the_repository(installed):
    out = installed / "out"
    done = _run(installed / "venv/bin/nn-jax", "bench", "--quick", "--out", out, cwd=installed)
    assert "nn_jax bench" in done.stdout
    report = json.loads((out / "results.json").read_text())
    frameworks = {r["framework"] for r in report["results"]}
    assert frameworks == {"nn_jax", "jax", "jax_control"}  # raw JAX with its A/A control
    assert not (out / "results.png").exists()  # matplotlib is an extra: no plot, no error


def test_wheel_has_no_top_level_benchmarks_and_nn_jax_imports_no_framework(installed):
    python = installed / "venv/bin/python"
    check = (
        "import importlib.util, sys, nn_jax\n"
        "assert importlib.util.find_spec('benchmarks') is None\n"
        "loaded = {m.split('.')[0] for m in sys.modules} | set(sys.modules)\n"
        "print(sorted(loaded & {'flax', 'equinox', 'haiku', 'torch', 'rich', 'nn_jax.bench'}))\n"
    )
    done = _run(python, "-c", check, cwd=installed)
    assert done.stdout.strip() == "[]"
    failed = subprocess.run([python, "-c", "import benchmarks"], cwd=installed, capture_output=True)
    assert failed.returncode == 1 and b"No module named 'benchmarks'" in failed.stderr

"""The public API: ``nn_jax.__all__`` is exactly what the public modules declare, every name
resolves and is documented, and every public module declares its names in ``__all__``.

The README has no API listing, so the modules' ``__all__`` are the listing: a layer-family module
(``dense``, ``attention``, ``train``, ...) is re-exported whole at the top level, and a namespace
module (``nn_jax.losses.mse``, ``nn_jax.models.MLP``) is exported as a module.
"""

import importlib
import inspect
import pkgutil

import pytest

import nn_jax

# Reached as ``nn_jax.<module>.<name>``: their names are not re-exported at the top level.
NAMESPACE_MODULES = {
    "activations",
    "compat",
    "data",
    "distributed",
    "initializers",
    "losses",
    "metrics",
    "models",
    "parallel",
}
# Namespace modules whose names are re-exported at the top level too (``nn.relu``).
REEXPORTED_NAMESPACES = {"activations"}
# The command line (``nn-jax``), the jobs, benchmarks and reproductions it runs: a program, not
# library API.
PROGRAM_MODULES = {"bench", "cli", "jobs", "reproduce"}


def _public_modules():
    names = [
        info.name
        for info in pkgutil.walk_packages(nn_jax.__path__, "nn_jax.")
        if not any(part.startswith("_") for part in info.name.split("."))
    ]
    return {name: importlib.import_module(name) for name in sorted(names)}


PUBLIC_MODULES = _public_modules()
FAMILY_MODULES = {
    name: module
    for name, module in PUBLIC_MODULES.items()
    if name.count(".") == 1
    and name.split(".")[1] not in (NAMESPACE_MODULES - REEXPORTED_NAMESPACES) | PROGRAM_MODULES
}


def test_all_names_exist_and_are_unique():
    assert len(set(nn_jax.__all__)) == len(nn_jax.__all__)
    for name in nn_jax.__all__:
        assert hasattr(nn_jax, name), name


@pytest.mark.parametrize("name", sorted(PUBLIC_MODULES))
def test_every_public_module_declares_all(name):
    module = PUBLIC_MODULES[name]
    assert hasattr(module, "__all__"), f"{name} has no __all__"
    assert len(set(module.__all__)) == len(module.__all__), f"{name}.__all__ repeats a name"
    missing = [n for n in module.__all__ if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ names what {name} does not define: {missing}"


def test_top_level_is_the_family_modules_plus_the_namespaces():
    expected = set(NAMESPACE_MODULES)
    for module in FAMILY_MODULES.values():
        expected |= set(getattr(module, "__all__", ()))
    assert set(nn_jax.__all__) == expected, (
        f"in the public modules' __all__ but not in nn_jax.__all__: "
        f"{sorted(expected - set(nn_jax.__all__))}; in nn_jax.__all__ but in no public family "
        f"module's __all__: {sorted(set(nn_jax.__all__) - expected)}"
    )


def test_top_level_names_are_the_modules_objects():
    for module_name, module in FAMILY_MODULES.items():
        for name in getattr(module, "__all__", ()):
            assert getattr(nn_jax, name, None) is getattr(module, name), f"{module_name}.{name}"
    for name in NAMESPACE_MODULES:
        assert getattr(nn_jax, name) is PUBLIC_MODULES[f"nn_jax.{name}"]


def test_no_public_attribute_is_left_out_of_all():
    public = {
        name
        for name, obj in vars(nn_jax).items()
        if not name.startswith("_") and not inspect.ismodule(obj)
    }
    assert public <= set(nn_jax.__all__), sorted(public - set(nn_jax.__all__))


@pytest.mark.parametrize("name", sorted(PUBLIC_MODULES))
def test_public_names_are_documented(name):
    module = PUBLIC_MODULES[name]
    assert inspect.getdoc(module), f"{name} has no module docstring"
    # Functions and classes (type aliases such as ``Params`` cannot carry a docstring; the
    # module docstring describes them).
    undocumented = [
        n
        for n in getattr(module, "__all__", ())
        if (inspect.isroutine(obj := getattr(module, n, None)) or inspect.isclass(obj))
        and not inspect.getdoc(obj)
    ]
    assert not undocumented, f"{name}: public callables without a docstring: {undocumented}"

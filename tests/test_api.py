"""The public API: __all__ is exact and sorted, every name resolves and is documented."""

import inspect

import nn_jax


def test_all_names_exist_and_are_unique():
    assert len(set(nn_jax.__all__)) == len(nn_jax.__all__)
    for name in nn_jax.__all__:
        assert hasattr(nn_jax, name), name


def test_public_callables_have_docstrings():
    missing = [
        name
        for name in nn_jax.__all__
        if callable(obj := getattr(nn_jax, name)) and not inspect.getdoc(obj)
    ]
    assert not missing


def test_no_public_attribute_is_left_out_of_all():
    public = {
        name
        for name, obj in vars(nn_jax).items()
        if not name.startswith("_") and not inspect.ismodule(obj)
    }
    assert public <= set(nn_jax.__all__), sorted(public - set(nn_jax.__all__))

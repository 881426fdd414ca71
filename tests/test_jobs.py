"""The recipes behind ``nn-jax train`` and the README's main command (``tests/test_cli.py``
runs the command line itself)."""

import numpy as np
import pytest

from nn_jax.errors import ConfigError, NNJaxError
from nn_jax.jobs import DATASETS, MODELS, RECIPES, TrainOptions, find_recipe, train_run
from nn_jax.jobs.runs import check_out_dir


def test_the_issue_s_recipes_exist_once_each():
    pairs = [(r.model, r.dataset) for r in RECIPES]
    assert len(set(pairs)) == len(pairs)
    for pair in [
        ("mlp", "digits"),
        ("lenet", "digits"),
        ("vae", "digits"),
        ("gru", "mnist1d"),
        ("cnn", "mnist1d"),
        ("transformer", "reverse"),
        ("gcn", "karate"),
    ]:
        assert pair in pairs
    assert set(MODELS) == {m for m, _ in pairs} and set(DATASETS) == {d for _, d in pairs}


def test_find_recipe_names_what_exists():
    assert find_recipe("gru", "mnist1d").name == "gru-mnist1d"
    with pytest.raises(ConfigError, match="no recipe trains gru on digits; gru trains on: mnist1d"):
        find_recipe("gru", "digits")
    with pytest.raises(ConfigError, match="unknown model 'resnet'; choose from mlp, lenet"):
        find_recipe("resnet", "digits")


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda r: r.name)
def test_validation_is_a_seeded_part_of_the_training_data(recipe):
    if recipe.full_batch:  # one graph: the parts are disjoint node masks
        data = recipe.load(0)
        masks = [part[1][1] for part in data]
        assert not np.any(masks[0] & masks[1]) and not np.any(masks[1] & masks[2])
        assert [int(m.sum()) for m in masks] == [4, 6, 24]
        return
    if recipe.dataset != "digits":
        pytest.skip("digits stands for the row datasets (generating the others costs time)")
    a, b, other = recipe.load(0), recipe.load(0), recipe.load(1)
    np.testing.assert_array_equal(a.validation[0], b.validation[0])
    assert not np.array_equal(a.validation[0], other.validation[0])
    np.testing.assert_array_equal(a.test[0], other.test[0])  # the test set never moves
    assert len(a.validation[0]) == round(0.1 * (len(a.train[0]) + len(a.validation[0])))


def test_check_out_dir_refuses_files(tmp_path):
    (tmp_path / "f").write_text("")
    assert check_out_dir(tmp_path / "new" / "run") == tmp_path / "new" / "run"
    assert not (tmp_path / "new").exists()  # checking creates nothing
    with pytest.raises(NNJaxError, match="is a file, not a folder"):
        check_out_dir(tmp_path / "f")
    with pytest.raises(NNJaxError, match="is a file, not a folder"):
        check_out_dir(tmp_path / "f" / "run")


def test_resuming_needs_the_same_recipe_and_settings(tmp_path):
    out = tmp_path / "run"
    options = TrainOptions(steps=2, progress=False)
    train_run("gcn", "karate", out, options)
    with pytest.raises(NNJaxError, match=r"holds a run with --lr 0\.01, given 0\.1"):
        train_run("gcn", "karate", out, TrainOptions(steps=4, learning_rate=0.1, progress=False))
    with pytest.raises(NNJaxError, match="holds a run of gcn-karate, not mlp-digits"):
        train_run("mlp", "digits", out, TrainOptions(steps=4, progress=False))
    with pytest.raises(NNJaxError, match="is at step 2, past the requested 1 steps"):
        train_run("gcn", "karate", out, TrainOptions(steps=1, progress=False))


@pytest.mark.slow
def test_the_readme_s_main_command_reaches_95_percent(tmp_path):
    """``nn-jax train mlp --dataset digits`` with the recipe's defaults."""
    result = train_run("mlp", "digits", tmp_path, TrainOptions(progress=False))
    assert result["test"]["accuracy"] >= 0.95, result
    assert (tmp_path / "curves.png").exists() and result["steps"] == 800

"""The experiments behind the ``nn-jax`` command line (a program module, not library API).

* :mod:`nn_jax.jobs.recipes` - one :class:`~nn_jax.jobs.recipes.Recipe` per (model, dataset)
  pair: the model, the data, the objective and the defaults.
* :mod:`nn_jax.jobs.runs` - training a recipe into a run folder (resumable), evaluating a run
  folder from its files alone, printing a model's summary.
"""

from nn_jax.jobs.recipes import DATASETS, MODELS, RECIPES, Recipe, find_recipe
from nn_jax.jobs.runs import TrainOptions, evaluate_run, model_summary, train_run

__all__ = [
    "DATASETS",
    "MODELS",
    "RECIPES",
    "Recipe",
    "TrainOptions",
    "evaluate_run",
    "find_recipe",
    "model_summary",
    "train_run",
]

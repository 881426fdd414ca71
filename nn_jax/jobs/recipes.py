"""The recipes behind ``nn-jax train``: one small :class:`Recipe` per (model, dataset) pair.

A recipe says what to build (the model, from the zoo), what to train on (train, validation and
test sets of an offline dataset; the validation set is carved out of the training set by
:func:`nn_jax.data.with_validation`, seeded), what to minimize and report (an objective made
of a loss and metric functions) and the default length, learning rate and batch size. The
runner (:mod:`nn_jax.jobs.runs`) does the rest the same way for every recipe.

Datasets are generated or bundled locally (no download): ``digits`` (scikit-learn's 8x8
digits), ``mnist1d`` (the MNIST-1D generator, published recipe), ``reverse`` (reverse a random
token sequence, :func:`nn_jax.data.reverse_task`) and ``karate`` (Zachary's karate club).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np

from nn_jax import losses, metrics
from nn_jax.core import Array, Layer
from nn_jax.errors import ConfigError
from nn_jax.train import Objective, Supervised

__all__ = ["DATASETS", "MODELS", "RECIPES", "Data", "Recipe", "find_recipe"]


class Data(NamedTuple):
    """A recipe's data, each part a batch ``(inputs, targets)`` of NumPy arrays.

    For ``full_batch`` recipes (one graph) each part is the whole graph with its targets.
    """

    train: tuple[Any, Any]
    validation: tuple[Any, Any]
    test: tuple[Any, Any]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Recipe:
    """How ``nn-jax train MODEL --dataset DATASET`` trains and evaluates.

    Args:
        model: the ``MODEL`` name on the command line.
        dataset: the ``--dataset`` name.
        build: ``build() -> Layer``, the model (a zoo model; its JSON config goes to config.json).
        load: ``load(seed) -> Data``; ``seed`` seeds the validation split (and the data
            generation where the dataset has no canonical seed).
        loss: ``loss(predictions, targets) -> scalar``.
        metrics: ``{name: fn(predictions, targets)}`` logged and reported on the test set.
        headline: the metric of the result line (``"loss"`` for models without accuracy).
        headline_label: how the result line names it (``"accuracy"``, ``"-ELBO"``, ...).
        epochs, learning_rate, batch_size: the defaults (Adam).
        val_every: validate (and checkpoint) every this many steps; ``None``: every epoch.
        full_batch: train on the whole of ``Data.train`` at every step (graphs).
        notes: one line on the protocol, shown by ``nn-jax train --help``.
    """

    model: str
    dataset: str
    build: Callable[[], Layer]
    load: Callable[[int], Data]
    loss: Callable[[Any, Any], Array]
    metrics: Mapping[str, Callable[[Any, Any], Array]] = dataclasses.field(default_factory=dict)
    headline: str = "accuracy"
    headline_label: str = "accuracy"
    epochs: int
    learning_rate: float
    batch_size: int
    val_every: int | None = None
    full_batch: bool = False
    notes: str = ""

    @property
    def name(self) -> str:
        """``"<model>-<dataset>"``, the default output folder's name."""
        return f"{self.model}-{self.dataset}"

    def objective(self, model: Layer) -> Objective:
        """The training objective: ``loss(model(x), y)``, with the metrics on the way."""
        return Supervised(model, self.loss, dict(self.metrics))


# --------------------------------------------------------------------------------------------
# Data.


def _with_validation(x_train: Any, y_train: Any, x_test: Any, y_test: Any, seed: int) -> Data:
    from nn_jax.data import Split, with_validation

    splits = with_validation(Split(x_train, y_train, x_test, y_test), fraction=0.1, seed=seed)
    return Data(splits.train, splits.validation, splits.test)


def _digits(image: bool) -> Callable[[int], Data]:
    def load(seed: int) -> Data:
        from nn_jax.data import load_digits

        return _with_validation(*load_digits(seed=0, image=image), seed=seed)

    return load


def _digits_autoencoding(seed: int) -> Data:
    """Digits as ``(x, x)``: a VAE reconstructs its input."""
    data = _digits(image=False)(seed)
    return Data(*((x, x) for x, _ in data))


def _mnist1d(sequence: bool) -> Callable[[int], Data]:
    def load(seed: int) -> Data:
        from nn_jax.data import load_mnist1d

        return _with_validation(*load_mnist1d(sequence=sequence), seed=seed)

    return load


REVERSE_LENGTH, REVERSE_VOCAB = 8, 10


def _reverse(seed: int) -> Data:
    """8 random tokens of 10 to reverse: 8,000 training sequences, 1,000 test sequences."""
    from nn_jax.data import reverse_task

    x, y = reverse_task(8000, REVERSE_LENGTH, REVERSE_VOCAB, seed=seed)
    x_test, y_test = reverse_task(1000, REVERSE_LENGTH, REVERSE_VOCAB, seed=seed + 10_000)
    return _with_validation(x, y, x_test, y_test, seed=seed)


def _karate(seed: int) -> Data:
    """The 4 seed nodes train; the other 30 are split into 6 validation and 24 test nodes.

    Targets are ``(labels, mask)`` over the graph's nodes.
    """
    from nn_jax.data import KARATE_SEEDS, Split, batch_graphs, load_karate_club, with_validation

    club = load_karate_club()
    n = len(club.labels)
    graph = batch_graphs([club.graph])
    slots = graph.num_nodes
    labels = np.zeros(slots, np.int32)
    labels[:n] = club.labels
    others = np.array([i for i in range(n) if i not in KARATE_SEEDS])
    empty = np.zeros(0, np.int32)
    held = with_validation(
        Split(others, club.labels[others], empty, empty), fraction=0.2, seed=seed
    )

    def mask(nodes: Any) -> np.ndarray:
        m = np.zeros(slots, bool)
        m[np.asarray(nodes)] = True
        return m

    parts = [mask(list(KARATE_SEEDS)), mask(held.validation[0]), mask(held.train[0])]
    return Data(*((graph, (labels, m)) for m in parts))


# --------------------------------------------------------------------------------------------
# Losses and metrics.


def _cross_entropy(logits: Any, labels: Any) -> Array:
    return losses.softmax_cross_entropy_with_integer_labels(logits, labels)


def _masked_cross_entropy(logits: Any, targets: tuple[Any, Any]) -> Array:
    labels, mask = targets
    return losses.softmax_cross_entropy_with_integer_labels(logits, labels, mask=mask)


def _masked_accuracy(logits: Any, targets: tuple[Any, Any]) -> Array:
    labels, mask = targets
    return metrics.accuracy(logits, labels, mask=mask)


def _elbo(output: Any, x: Any) -> Array:
    from nn_jax.models import elbo_loss

    return elbo_loss(output, x)


_ACCURACY = {"accuracy": metrics.accuracy}


# --------------------------------------------------------------------------------------------
# Models.


def _mlp(widths: tuple[int, ...]) -> Callable[[], Layer]:
    def build() -> Layer:
        from nn_jax.models import MLP

        return MLP(widths)

    return build


def _lenet() -> Layer:
    from nn_jax.models import LeNet

    return LeNet(10)


def _paper_mnist1d(name: str) -> Callable[[], Layer]:
    """One of the MNIST-1D paper's models (:mod:`nn_jax.jobs.reproduce`), PyTorch's init."""

    def build() -> Layer:
        from nn_jax.jobs.reproduce import mnist1d_models

        return mnist1d_models()[name]

    return build


def _gru() -> Layer:
    from nn_jax.models import RNNClassifier

    return RNNClassifier(10, cell="gru", hidden=64)


def _transformer() -> Layer:
    from nn_jax.models import TransformerEncoder

    return TransformerEncoder(
        REVERSE_VOCAB,
        vocab_size=REVERSE_VOCAB,
        pooling="none",
        num_layers=2,
        d_model=64,
        num_heads=4,
        positional="learned",
        max_length=REVERSE_LENGTH,
    )


def _gcn() -> Layer:
    from nn_jax.models import GCN

    return GCN((16, 2))


def _vae() -> Layer:
    from nn_jax.models import VAE

    return VAE((256,), latent=8)


# --------------------------------------------------------------------------------------------
# The registry.

RECIPES: tuple[Recipe, ...] = (
    Recipe(
        model="mlp",
        dataset="digits",
        build=_mlp((256, 128, 10)),
        load=_digits(image=False),
        loss=_cross_entropy,
        metrics=_ACCURACY,
        epochs=40,
        learning_rate=1e-3,
        batch_size=64,
        notes="MLP(256, 128, 10) on the 64 pixels",
    ),
    Recipe(
        model="lenet",
        dataset="digits",
        build=_lenet,
        load=_digits(image=True),
        loss=_cross_entropy,
        metrics=_ACCURACY,
        epochs=30,
        learning_rate=1e-3,
        batch_size=64,
        notes="LeNet(10) on 8x8x1 images",
    ),
    Recipe(
        model="vae",
        dataset="digits",
        build=_vae,
        load=_digits_autoencoding,
        loss=_elbo,
        headline="loss",
        headline_label="-ELBO (nats)",
        epochs=30,
        learning_rate=1e-3,
        batch_size=64,
        notes="VAE((256,), latent=8), Bernoulli likelihood; reports -ELBO (eval: z = mean)",
    ),
    Recipe(
        model="mlp",
        dataset="mnist1d",
        build=_paper_mnist1d("mlp"),
        load=_mnist1d(sequence=False),
        loss=_cross_entropy,
        metrics=_ACCURACY,
        epochs=60,
        learning_rate=1e-3,
        batch_size=100,
        notes="the MNIST-1D paper's MLP(100, 100, 10), PyTorch's init",
    ),
    Recipe(
        model="cnn",
        dataset="mnist1d",
        build=_paper_mnist1d("cnn"),
        load=_mnist1d(sequence=False),
        loss=_cross_entropy,
        metrics=_ACCURACY,
        epochs=60,
        learning_rate=1e-2,
        batch_size=100,
        notes="the MNIST-1D paper's CNN (3 stride-2 convs of 25 channels), PyTorch's init",
    ),
    Recipe(
        model="gru",
        dataset="mnist1d",
        build=_gru,
        load=_mnist1d(sequence=True),
        loss=_cross_entropy,
        metrics=_ACCURACY,
        epochs=30,
        learning_rate=5e-3,
        batch_size=128,
        notes="RNNClassifier(10, cell='gru', hidden=64) on (40, 1) sequences",
    ),
    Recipe(
        model="transformer",
        dataset="reverse",
        build=_transformer,
        load=_reverse,
        loss=_cross_entropy,
        metrics=_ACCURACY,
        headline_label="token accuracy",
        epochs=10,
        learning_rate=1e-3,
        batch_size=64,
        notes="TransformerEncoder per-token logits; reverse 8 tokens of 10",
    ),
    Recipe(
        model="gcn",
        dataset="karate",
        build=_gcn,
        load=_karate,
        loss=_masked_cross_entropy,
        metrics={"accuracy": _masked_accuracy},
        epochs=200,
        learning_rate=1e-2,
        batch_size=1,
        val_every=10,
        full_batch=True,
        notes="GCN((16, 2)) from the 4 seed nodes; accuracy on 24 of the other 30",
    ),
)

MODELS: tuple[str, ...] = tuple(dict.fromkeys(r.model for r in RECIPES))
DATASETS: tuple[str, ...] = tuple(dict.fromkeys(r.dataset for r in RECIPES))


def find_recipe(model: str, dataset: str) -> Recipe:
    """The recipe of ``model`` on ``dataset``; a :class:`ConfigError` listing the pairs if none."""
    for recipe in RECIPES:
        if (recipe.model, recipe.dataset) == (model, dataset):
            return recipe
    datasets = [r.dataset for r in RECIPES if r.model == model]
    raise ConfigError(
        f"no recipe trains {model} on {dataset}; {model} trains on: {', '.join(datasets)}"
        if datasets
        else f"unknown model {model!r}; choose from {', '.join(MODELS)}"
    )


def input_spec(tree: Any) -> Any:
    """``tree``'s arrays as ``{"shape": [...], "dtype": "..."}``; NamedTuples as dicts."""
    if tree is None:
        return None
    if isinstance(tree, tuple) and hasattr(tree, "_asdict"):
        return {k: input_spec(v) for k, v in tree._asdict().items()}
    if isinstance(tree, tuple | list):
        return [input_spec(v) for v in tree]
    a = jnp.asarray(tree) if not hasattr(tree, "shape") else tree
    return {"shape": list(a.shape), "dtype": str(np.dtype(a.dtype))}

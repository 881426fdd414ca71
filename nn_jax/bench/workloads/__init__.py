"""The registered workloads: importing this package loads every family module.

Each family module (``dense``, ``conv``, ``recurrent``, ``transformer``, ``graph``,
``overhead``) holds only its models - an nn_jax ``setup`` and one builder per framework - and
registers them with :func:`nn_jax.bench.registry.register`; the glue they share is
:mod:`nn_jax.bench.frameworks`.
Adding a workload is a few lines in a family module::

    register(Workload(
        name="mlp", description="MLP 784-512-512-10", batch_size=256,
        setup=_mlp_setup, builders={"nn_jax": nn_jax_builder, "jax": _mlp_jax, ...},
    ))

A family whose nn_jax layers are not importable is listed in :data:`UNAVAILABLE` with the
reason instead of breaking the suite.
"""

from __future__ import annotations

import importlib

from nn_jax.bench.registry import UNAVAILABLE, WORKLOADS

FAMILIES: tuple[str, ...] = ("dense", "conv", "recurrent", "transformer", "graph", "overhead")


def _load() -> None:
    for family in FAMILIES:
        try:
            importlib.import_module(f"{__name__}.{family}")
        except ModuleNotFoundError as e:
            if not (e.name or "").startswith("nn_jax"):
                raise
            UNAVAILABLE[family] = f"needs {e.name}, which is not importable"


_load()

__all__ = ["FAMILIES", "UNAVAILABLE", "WORKLOADS"]

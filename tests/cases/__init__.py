"""The registry of layer cases pushed through the conformance suite (tests/test_conformance.py).

Each layer family has one module here defining ``CASES: list[Case]``; every public ``Layer``
subclass exported by ``nn_jax`` (models included) must appear in at least one case.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from collections.abc import Callable
from typing import Any

import numpy as np

from nn_jax.core import Layer


@dataclasses.dataclass(frozen=True)
class Case:
    """One layer with an example input.

    Args:
        id: test id.
        layer: the layer under test.
        make_input: ``np.random.Generator -> input`` (float64 NumPy arrays are cast to the dtype
            under test; integer arrays are kept).
        train: call ``apply`` with ``train=True``.
        rng: pass an rng key to ``apply`` (layers with randomness).
        grad_input: also check the gradient w.r.t. the (float) input by finite differences.
        fd_rtol: tolerance of the float64 finite-difference check.
        vmap: check ``vmap`` over an extra leading axis equals a loop.
        smooth: the layer is smooth at the sampled points (skip FD checks when False,
            e.g. max-pooling ties are measure-zero but FD steps may cross kinks).
        side: ``np.random.Generator -> side inputs`` (a dict of arrays given as ``side=``
            everywhere: apply, jit, vmap, gradients, the third item of a train batch), or
            ``None``. Drawn from a generator of its own (not the input's), so it may depend on
            the input's shapes only; float arrays are cast like the input. Every array's leading
            axis is the input's batch axis (``vmap`` maps them together).
    """

    id: str
    layer: Layer
    make_input: Callable[[np.random.Generator], Any]
    train: bool = False
    rng: bool = False
    grad_input: bool = True
    fd_rtol: float = 1e-6
    vmap: bool = True
    smooth: bool = True
    side: Callable[[np.random.Generator], dict[str, Any]] | None = None


def normal(*shape: int) -> Callable[[np.random.Generator], np.ndarray]:
    """An input maker drawing standard normal values of ``shape``."""
    return lambda g: g.standard_normal(shape)


def all_cases() -> list[Case]:
    """Every case of every family module in this package."""
    cases: list[Case] = []
    for info in pkgutil.iter_modules(__path__):
        cases.extend(importlib.import_module(f"{__name__}.{info.name}").CASES)
    return cases

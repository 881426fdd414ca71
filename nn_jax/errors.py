"""The one error hierarchy of nn_jax: every message names the layer path, expected vs given."""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "NNJaxError",
    "ParamsError",
    "RngError",
    "ShapeError",
]


class NNJaxError(Exception):
    """Base class of every error nn_jax raises on purpose."""


class ShapeError(NNJaxError, ValueError):
    """An input, parameter or state array has the wrong shape, rank or dtype."""


class ParamsError(NNJaxError, ValueError):
    """A params or state tree is missing an entry or holds one of the wrong structure."""


class RngError(NNJaxError, ValueError):
    """A layer that needs randomness was called without an ``rng`` key."""


class ConfigError(NNJaxError, ValueError):
    """A layer's hyper-parameters are invalid (checked when the layer is constructed)."""

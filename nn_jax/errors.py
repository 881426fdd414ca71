"""The one error hierarchy of nn_jax: every message names the layer path, expected vs given."""

from __future__ import annotations

__all__ = [
    "ArgumentError",
    "ConfigError",
    "FileFormatError",
    "NNJaxError",
    "ParamsError",
    "RngError",
    "ShapeError",
    "ShardingError",
    "ValueRangeError",
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


class ShardingError(ConfigError):
    """A sharding does not fit a parameter or the mesh: a mesh axis the mesh lacks, a
    ``PartitionSpec`` longer than the array's rank, or mesh axes whose size does not divide the
    dimension they shard (never a silent fallback to replication)."""


class ValueRangeError(NNJaxError, ValueError):
    """An input's *values* are out of range: ids past a vocabulary, labels past the class count,
    indices past the node count, lengths past the sequence, probabilities outside [0, 1].

    Raised eagerly for concrete inputs and, inside ``jit``, in checked mode
    (:func:`nn_jax.checked`).
    """


class ArgumentError(NNJaxError, TypeError):
    """A function was called with an argument of the wrong kind: a layer class for an instance,
    a shape tuple for an array, an int for a PRNG key, a loss with the wrong signature."""


class FileFormatError(NNJaxError, ValueError):
    """A checkpoint, config or weight file is missing, truncated, corrupted or not the kind of
    file expected; nothing was loaded from it."""

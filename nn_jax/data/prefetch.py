"""Host-to-device prefetching: batches are copied to the device before the step that needs them.

``jax.device_put`` returns at once and copies in the background, and a jitted step is
dispatched asynchronously too. Putting the next few batches ahead of time therefore overlaps
their transfer (and the host work that makes them) with the device's compute, instead of making
every step wait for its own input. This is ``flax.jax_utils.prefetch_to_device`` for one device
or a :class:`jax.sharding.Sharding` rather than for ``pmap``.
"""

from __future__ import annotations

import collections
import itertools
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

import jax
import numpy as np

from nn_jax.core import describe
from nn_jax.errors import ArgumentError, ConfigError

__all__ = ["prefetch_to_device"]

T = TypeVar("T")


def prefetch_to_device(
    iterator: Iterable[T],
    size: int = 2,
    sharding: jax.sharding.Sharding | jax.Device | None = None,
) -> Iterator[T]:
    """Yield the batches of ``iterator`` already on the device, ``size`` batches ahead.

    While the caller works on batch ``i``, batches ``i + 1 .. i + size`` have been pulled from
    ``iterator`` and handed to ``jax.device_put``; nothing more is pulled, so an infinite
    generator is fine. Order and values are preserved; each batch keeps its pytree structure
    with every leaf a ``jax.Array``.

    >>> import numpy as np
    >>> data = ({"x": np.full((2, 3), i, np.float32)} for i in range(3))
    >>> [(type(b["x"]).__name__, float(b["x"][0, 0])) for b in prefetch_to_device(data)]
    [('ArrayImpl', 0.0), ('ArrayImpl', 1.0), ('ArrayImpl', 2.0)]

    Args:
        iterator: batches, each a pytree of NumPy (or JAX) arrays and scalars, e.g.
            :func:`~nn_jax.data.batches`.
        size: how many batches to keep in flight ahead of the current one (``>= 1``); 2 hides
            the latency of one transfer behind one step, more helps when host batches arrive
            unevenly.
        sharding: where to put the leaves: a :class:`jax.sharding.Sharding` (e.g. a
            ``NamedSharding`` splitting the batch axis across devices) or a
            :class:`jax.Device`; ``None`` puts them on the default device.

    Returns:
        An iterator of the same batches as device arrays.
    """
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 1:
        raise ConfigError(f"prefetch_to_device: size must be an int >= 1, given {size!r}")
    try:
        batches = iter(iterator)
    except TypeError:
        raise ArgumentError(
            f"prefetch_to_device: expected an iterable of batches, given {describe(iterator)}"
        ) from None
    return _prefetch(batches, int(size), sharding)


def _prefetch(iterator: Iterator[T], size: int, sharding: Any) -> Iterator[T]:
    queue: collections.deque[T] = collections.deque()

    def enqueue(n: int) -> None:
        for batch in itertools.islice(iterator, n):
            queue.append(jax.device_put(batch, sharding))

    enqueue(size)
    while queue:
        batch = queue.popleft()
        enqueue(1)  # before handing out `batch`: its successor transfers while it is used
        yield batch

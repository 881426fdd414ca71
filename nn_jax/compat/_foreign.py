"""What the bridges share: asking a foreign callable which keywords it takes, and re-raising a
foreign module's own errors as nn_jax errors that name the layer path."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp

from nn_jax.core import Layer
from nn_jax.errors import NNJaxError, ShapeError


def takes_keyword(fn: Callable[..., Any], name: str, *, if_unknown: bool) -> bool:
    """Whether ``fn`` accepts the keyword ``name`` (by name or through ``**kwargs``);
    ``if_unknown`` when its signature cannot be read (a builtin, a C extension)."""
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return if_unknown
    return any(p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


@contextlib.contextmanager
def foreign_errors(layer: Layer, what: str, x: Any) -> Iterator[None]:
    """Re-raise a wrapped module's own error (a raw JAX shape or type error) as a
    ``ShapeError`` naming ``layer``'s path and the input shapes; nn_jax's errors pass."""
    try:
        yield
    except NNJaxError:
        raise
    except (TypeError, ValueError, IndexError) as e:
        shapes = jax.tree.map(jnp.shape, x)
        raise layer.error(
            ShapeError,
            f"the wrapped {what} failed on inputs of shape {shapes}: {type(e).__name__}: {e}",
        ) from e

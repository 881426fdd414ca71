"""Option groups that several layer families share (a private module made for sharing)."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nn_jax.core import describe
from nn_jax.errors import ConfigError

__all__ = ["DtypeOptions", "at_least_float32", "floating_dtype"]


def at_least_float32(dtype: Any) -> Any:
    """``dtype`` if it has 32 bits or more, else float32: where softmax, norms and positional
    angles are computed for half-precision inputs. (``jnp.promote_types(dtype, float32)``
    says the same, but is refused under ``jax.numpy_dtype_promotion("strict")``.)"""
    return dtype if jnp.finfo(dtype).bits >= 32 else jnp.dtype(jnp.float32)


def floating_dtype(where: str, name: str, value: Any) -> np.dtype[Any]:
    """``value`` (a dtype or its name) as a floating NumPy dtype, else a ``ConfigError`` naming
    ``name``: the check of every dtype setting of a policy or a rule table."""
    try:
        dtype = (
            np.dtype(jnp.dtype(value)) if not isinstance(value, np.ndarray | jax.Array) else None
        )
    except TypeError:
        dtype = None
    if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
        raise ConfigError(
            f"{where}: {name} must be a floating dtype such as 'float32' or 'bfloat16', "
            f"given {describe(value)}"
        )
    return dtype


@dataclasses.dataclass(frozen=True, kw_only=True)
class DtypeOptions:
    """The dtype policy of a layer with matrix products, as in Flax (keyword-only fields).

    ``dtype``: the computation dtype (``None``: the promoted dtype of the input and params);
    ``param_dtype``: the storage dtype of the params; ``precision``: passed to
    ``jax.lax.dot_general`` / ``jnp.einsum``.
    """

    dtype: Any = None
    param_dtype: Any = jnp.float32
    precision: Any = None

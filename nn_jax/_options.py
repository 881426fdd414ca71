"""Option groups that several layer families share (a private module made for sharing)."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

__all__ = ["DtypeOptions", "at_least_float32"]


def at_least_float32(dtype: Any) -> Any:
    """``dtype`` if it has 32 bits or more, else float32: where softmax, norms and positional
    angles are computed for half-precision inputs. (``jnp.promote_types(dtype, float32)``
    says the same, but is refused under ``jax.numpy_dtype_promotion("strict")``.)"""
    return dtype if jnp.finfo(dtype).bits >= 32 else jnp.dtype(jnp.float32)


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

"""Parameter initializers: ``jax.nn.initializers``, re-exported unchanged.

An *initializer* is a function ``init(key, shape, dtype=None) -> Array`` (``jax.nn.initializers``'
signature), so any of JAX's own initializers, or your own with that signature, plugs into nn_jax.
JAX's conventions are kept exactly:

- ``zeros`` and ``ones`` **are** initializers: call ``zeros(key, (3, 4), jnp.float32)``.
- Every other name is a **factory** that returns an initializer:
  ``normal(stddev=1e-2)(key, shape, dtype)``, ``glorot_uniform()(key, shape, dtype)``.
- ``constant(value)`` fills with ``value``.
- ``normal(stddev)``: N(0, stddev^2).
- ``uniform(scale)``: uniform on ``[0, scale)`` (not symmetric about 0), variance ``scale^2/12``.
- ``truncated_normal(stddev, lower=-2.0, upper=2.0)``: ``stddev * z`` with ``z`` a standard normal
  truncated to ``[lower, upper]``; ``stddev`` is that of the *untruncated* normal, so the samples'
  standard deviation is smaller (about ``0.88 * stddev`` for the default ±2 bounds).
- ``variance_scaling(scale, mode, distribution)``: variance ``scale / n`` with ``n`` = fan_in,
  fan_out or their average (``mode``); the ``"truncated_normal"`` distribution is rescaled so the
  variance is exact. For a 2-D kernel of shape ``(in, out)`` fan_in is ``in`` and fan_out ``out``
  (``in_axis=-2``, ``out_axis=-1``; other axes are receptive field).
- ``glorot_*`` (``xavier_*``): variance ``2 / (fan_in + fan_out)``; ``he_*`` (``kaiming_*``):
  ``2 / fan_in``; ``lecun_*``: ``1 / fan_in``. ``*_normal`` variants use a truncated normal.
- ``orthogonal(scale=1.0, column_axis=-1)``: orthonormal rows or columns, whichever side is
  smaller, times ``scale``. On CPU it cannot draw ``bfloat16`` (no bfloat16 QR in LAPACK: JAX
  raises ``NotImplementedError``); draw in float32 and cast.

``Initializer`` is JAX's protocol type for annotating such functions.
"""

from __future__ import annotations

from jax.nn.initializers import (
    Initializer,
    constant,
    glorot_normal,
    glorot_uniform,
    he_normal,
    he_uniform,
    kaiming_normal,
    kaiming_uniform,
    lecun_normal,
    lecun_uniform,
    normal,
    ones,
    orthogonal,
    truncated_normal,
    uniform,
    variance_scaling,
    xavier_normal,
    xavier_uniform,
    zeros,
)

__all__ = [
    "Initializer",
    "constant",
    "glorot_normal",
    "glorot_uniform",
    "he_normal",
    "he_uniform",
    "kaiming_normal",
    "kaiming_uniform",
    "lecun_normal",
    "lecun_uniform",
    "normal",
    "ones",
    "orthogonal",
    "truncated_normal",
    "uniform",
    "variance_scaling",
    "xavier_normal",
    "xavier_uniform",
    "zeros",
]

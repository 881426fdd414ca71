"""Value checks: out-of-range ids, labels, indices, lengths and probabilities become named errors.

A wrong *shape* is caught when a layer is traced, at no cost. A wrong *value* (a token id past
the vocabulary, a label past the class count, an edge index past the node count) cannot be seen
while tracing, and JAX's gathers and scatters clamp, drop or return NaN for it silently. nn_jax
checks such values in two ways:

- **eagerly**, always, when the value is concrete (a call outside ``jit``): a
  :class:`~nn_jax.errors.ValueRangeError` naming the layer path, the allowed range and the
  offending value is raised at once;
- **inside jit**, only in checked mode: :func:`checked` wraps a function with
  :func:`jax.experimental.checkify.checkify` and traces it with the checks switched on, so the
  compiled program carries them and raises the same error after the call. Outside checked mode
  a traced check emits nothing: the compiled step is unchanged and costs nothing.

The cost of checked mode (one reduction per checked input, and a device-to-host read of the
error after each call) is measured in ``benchmarks/checked_mode.py``.

>>> import jax, jax.numpy as jnp, nn_jax as nj
>>> emb = nj.Embedding(10, 4)
>>> params, _ = emb.init(jax.random.key(0), jnp.zeros((3,), jnp.int32))
>>> lookup = nj.checked(lambda p, ids: emb(p, ids))
>>> lookup(params, jnp.array([1, 2, 12]))  # doctest: +IGNORE_EXCEPTION_DETAIL
Traceback (most recent call last):
ValueRangeError: Embedding at <root>: indices must lie in [0, 10), given values in [1, 12] ...
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Callable, Iterator
from typing import Any, ParamSpec, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import checkify

from nn_jax.errors import ValueRangeError

__all__ = ["check_in_range", "check_values", "checked", "checking", "is_checking"]

P = ParamSpec("P")
R = TypeVar("R")

_CHECKING: contextvars.ContextVar[bool] = contextvars.ContextVar("nn_jax_checking", default=False)


def is_checking() -> bool:
    """Whether traced value checks are emitted now (inside :func:`checked` or :func:`checking`)."""
    return _CHECKING.get()


@contextlib.contextmanager
def checking(enabled: bool = True) -> Iterator[None]:
    """Emit traced value checks in the enclosed tracing (for use under your own ``checkify``).

    :func:`checked` is the usual entry point; use this when composing ``checkify.checkify``
    yourself, e.g. ``checkify.checkify(fn)`` traced inside ``with nj.checking():``.
    """
    token = _CHECKING.set(enabled)
    try:
        yield
    finally:
        _CHECKING.reset(token)


def _is_concrete(*values: Any) -> bool:
    return not any(isinstance(v, jax.core.Tracer) for v in jax.tree.leaves(values))


def check_values(ok: Any, message: str, **shown: Any) -> None:
    """Raise :class:`ValueRangeError` with ``message`` unless ``ok`` (a boolean array) is all true.

    ``message`` may name arrays of ``shown`` in braces (``"given values in [{lo}, {hi}]"``),
    formatted with their values. A concrete ``ok`` is checked now; a traced one only in checked
    mode (:func:`checked`), where it becomes a ``checkify`` check; otherwise it is not checked.
    """
    ok = jnp.all(jnp.asarray(ok))
    if _is_concrete(ok, shown):
        if not bool(ok):
            raise ValueRangeError(message.format(**{k: _show(v) for k, v in shown.items()}))
        return
    if _CHECKING.get():
        arrays: dict[str, Any] = {k: jnp.asarray(v) for k, v in shown.items()}
        checkify.check(ok, message, **arrays)


def _show(value: Any) -> Any:
    # A NumPy scalar, not ``.item()``: float32 0.2 then prints (with ``!s``) as 0.2, not as
    # the float64 0.20000000298023224 - as checkify prints it in checked mode.
    value = np.asarray(value)
    return value[()] if value.ndim == 0 else value


def check_in_range(
    where: str,
    what: str,
    values: Any,
    low: int | float,
    high: int | float,
    *,
    closed: bool = False,
    mask: Any = None,
) -> None:
    """Check that every element of ``values`` lies in ``[low, high)`` (``[low, high]`` if closed).

    ``where`` is the error prefix (``layer.where()``, e.g. ``"Embedding at 'encoder/0'"``, or a
    function name); ``what`` names the values (``"token ids"``). With ``mask`` (broadcastable
    to ``values``), only entries where it is nonzero are checked: padding there may hold
    anything. Empty arrays pass.
    """
    values = jnp.asarray(values)
    if values.size == 0 or not (_CHECKING.get() or _is_concrete(values, mask)):
        return  # a traced check outside checked mode: trace nothing (no work left for XLA's DCE)
    if mask is None:
        lo, hi = jnp.min(values), jnp.max(values)
    else:
        keep = jnp.broadcast_to(jnp.asarray(mask), values.shape).astype(bool)
        # Masked entries take the neutral extremes: all masked passes, lo/hi are the real ones.
        info = jnp.iinfo if jnp.issubdtype(values.dtype, jnp.integer) else jnp.finfo
        big = jnp.asarray(info(values.dtype).max, values.dtype)
        small = jnp.asarray(info(values.dtype).min, values.dtype)
        lo, hi = jnp.min(jnp.where(keep, values, big)), jnp.max(jnp.where(keep, values, small))
    upper = hi <= high if closed else hi < high
    interval = f"[{low}, {high}]" if closed else f"[{low}, {high})"
    check_values(
        (lo >= low) & upper,
        f"{escape(where)}: {escape(what)} must lie in {interval}, given values in "
        "[{lo!s}, {hi!s}]",
        lo=lo,
        hi=hi,
    )


def escape(text: str) -> str:
    """``text`` with braces doubled, for a :func:`check_values` message."""
    return text.replace("{", "{{").replace("}", "}}")


def checked(fn: Callable[P, R], *, jit: bool = True, **jit_kwargs: Any) -> Callable[P, R]:
    """``fn`` with nn_jax's value checks compiled in: a failed check raises ``ValueRangeError``.

    Built on :func:`jax.experimental.checkify.checkify` (user checks only, so NaN and
    index-clamping checks of JAX itself are not added). ``fn`` is traced with checks switched on
    and, unless ``jit=False``, compiled with ``jax.jit(**jit_kwargs)``; after each call the error
    is read back to the host (one small transfer) and raised if a check failed.

    Use it for debugging and for data you do not trust; the unchecked step is the fast one.
    A function already jitted *separately* inside ``fn`` keeps its own (unchecked) trace.
    """

    def traced(*args: P.args, **kwargs: P.kwargs) -> R:
        with checking():
            return fn(*args, **kwargs)

    functional = checkify.checkify(traced, errors=checkify.user_checks)
    run = jax.jit(functional, **jit_kwargs) if jit else functional

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        error, out = run(*args, **kwargs)
        message = error.get()
        if message is not None:
            raise ValueRangeError(message.removesuffix(" (`check` failed)"))
        return out

    return wrapper

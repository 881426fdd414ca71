"""FLOP counts of jitted programs: XLA's cost analysis corrected for loops, and an analytic count.

* :func:`step_flops` - XLA's own cost analysis of the compiled program
  (``jit(f).lower(...).compile().cost_analysis()["flops"]``), *corrected for loops*: XLA counts a
  ``while`` body once, not once per iteration, so a ``jax.lax.scan`` over ``L`` steps (an RNN, a
  scanned stack of layers, and their transposes in the backward pass) is under-counted by about
  ``L`` times. The correction compiles each scan body on its own, asks XLA for its cost, and adds
  the iterations XLA did not count (nested scans recursively; ``unroll`` honoured).
* :func:`jaxpr_matmul_flops` - an independent analytic count from the jaxpr: ``2 * M * N * K``
  for every ``dot_general`` and ``conv_general_dilated``, times the trip count of every
  enclosing scan. Elementwise work is left out (it is the "model FLOPs" convention of MFU).

Shared by :func:`nn_jax.inspect.summary` (per-layer FLOPs) and the benchmark suite
(:mod:`nn_jax.bench.flops`, which re-exports these names).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import jax
import jax.extend


def cost_analysis(compiled: Any) -> dict[str, float]:
    """``compiled.cost_analysis()`` as one dict (older JAX returned a list of one dict)."""
    cost = compiled.cost_analysis()
    if isinstance(cost, list | tuple):
        cost = cost[0] if cost else {}
    return dict(cost or {})


def xla_flops(compiled: Any) -> float:
    """XLA's FLOP count of a compiled program (each loop body counted once)."""
    return float(cost_analysis(compiled).get("flops", 0.0))


def peak_memory_bytes(compiled: Any) -> int | None:
    """Peak device memory of a compiled program from ``memory_analysis()``.

    ``arguments + outputs + temporaries - aliased`` (aliased outputs reuse argument buffers);
    ``None`` where the backend gives no analysis.
    """
    stats = compiled.memory_analysis()
    if stats is None:
        return None
    return int(
        stats.argument_size_in_bytes
        + stats.output_size_in_bytes
        + stats.temp_size_in_bytes
        - stats.alias_size_in_bytes
    )


# --------------------------------------------------------------------------------------------
# Walking jaxprs.


def _subjaxprs(eqn: Any) -> Iterator[Any]:
    """The jaxprs nested in an equation's params (pjit, custom_jvp/vjp, remat, cond branches)."""
    return jax.extend.core.jaxprs_in_params(eqn.params)


def _counted_copies(length: int, unroll: Any) -> int:
    """Copies of a scan body that XLA's cost analysis sees: ``unroll`` in the loop, the rest
    (``length % unroll``) peeled outside it; ``unroll=True`` or ``>= length`` unrolls fully."""
    u = length if unroll is True else max(1, min(int(unroll), length))
    return u + length % u


def _compiled_body_flops(body: Any) -> float:
    """XLA's FLOP count of a scan body (a ClosedJaxpr) compiled on its own."""
    args = [jax.ShapeDtypeStruct(v.aval.shape, v.aval.dtype) for v in body.jaxpr.invars]
    fn = jax.jit(jax.extend.core.jaxpr_as_fun(body))
    return xla_flops(fn.lower(*args).compile())


def scan_correction(jaxpr: Any) -> float:
    """FLOPs XLA's cost analysis misses in the scans of ``jaxpr`` (a Jaxpr or ClosedJaxpr).

    For a scan of length ``L`` whose body XLA costs at ``c`` and which XLA sees ``k`` times
    (``k = 1`` unless unrolled), the program really runs ``L * true(body)`` where
    ``true(body) = c + scan_correction(body)``; XLA counted ``k * c``.
    """
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    total = 0.0
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "scan":
            body, length = eqn.params["jaxpr"], eqn.params["length"]
            counted = _counted_copies(length, eqn.params["unroll"])
            cost = _compiled_body_flops(body)
            total += length * (cost + scan_correction(body)) - counted * cost
        else:
            total += sum(scan_correction(sub) for sub in _subjaxprs(eqn))
    return total


def step_flops(jitted: Any, *args: Any) -> dict[str, Any]:
    """FLOPs and memory of one call of a ``jax.jit`` function on ``args``.

    Returns a dict with ``flops`` (XLA's count corrected for scans), ``flops_xla_raw`` (XLA's
    count as reported), ``flops_analytic`` (:func:`jaxpr_matmul_flops`) and
    ``peak_memory_bytes`` (see :func:`peak_memory_bytes`).
    """
    traced = jitted.trace(*args)
    compiled = traced.lower().compile()
    raw = xla_flops(compiled)
    return {
        "flops": raw + scan_correction(traced.jaxpr),
        "flops_xla_raw": raw,
        "flops_analytic": jaxpr_matmul_flops(traced.jaxpr),
        "peak_memory_bytes": peak_memory_bytes(compiled),
    }


# --------------------------------------------------------------------------------------------
# Analytic matmul/conv FLOPs.


def _dot_flops(eqn: Any) -> float:
    lhs = eqn.invars[0].aval
    (contract, _), _ = eqn.params["dimension_numbers"]
    k = math.prod(lhs.shape[d] for d in contract)
    return 2.0 * math.prod(eqn.outvars[0].aval.shape) * k


def _conv_flops(eqn: Any) -> float:
    rhs = eqn.invars[1].aval
    dn = eqn.params["dimension_numbers"]
    # rhs_spec = (out-feature dim, in-feature dim, *spatial dims) of the kernel.
    _, in_dim, *spatial = dn.rhs_spec
    per_output = rhs.shape[in_dim] * math.prod(rhs.shape[d] for d in spatial)
    return 2.0 * math.prod(eqn.outvars[0].aval.shape) * per_output


def jaxpr_matmul_flops(jaxpr: Any) -> float:
    """``2 M N K`` summed over every ``dot_general``/``conv_general_dilated`` in ``jaxpr``.

    A convolution counts every kernel tap of every output, also those on padding (XLA's cost
    analysis skips those, so it reports less for "SAME" convolutions on small images). Every
    equation counts, dead code included (XLA removes it; a training step has little).

    Scans multiply their body's count by their length; other nested jaxprs (pjit, custom
    derivatives, remat) are entered; a ``cond`` counts its costliest branch (one runs; the
    platform branches of ``jax.lax.platform_dependent`` are such a ``cond``); the body of a
    ``while`` is counted once (its trip count is unknown).
    """
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    total = 0.0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "dot_general":
            total += _dot_flops(eqn)
        elif name == "conv_general_dilated":
            total += _conv_flops(eqn)
        elif name == "scan":
            total += eqn.params["length"] * jaxpr_matmul_flops(eqn.params["jaxpr"])
        elif name == "cond":
            total += max(jaxpr_matmul_flops(b) for b in eqn.params["branches"])
        else:
            total += sum(jaxpr_matmul_flops(sub) for sub in _subjaxprs(eqn))
    return total


__all__ = [
    "cost_analysis",
    "jaxpr_matmul_flops",
    "peak_memory_bytes",
    "scan_correction",
    "step_flops",
    "xla_flops",
]

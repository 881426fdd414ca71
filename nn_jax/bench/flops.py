"""FLOP counts of a jitted step, device peaks, and the measured CPU matmul peak.

Three counts, from most to least authoritative:

* :func:`step_flops` - XLA's own cost analysis of the compiled program
  (``jit(f).lower(...).compile().cost_analysis()["flops"]``), *corrected for loops*: XLA counts a
  ``while`` body once, not once per iteration, so a ``jax.lax.scan`` over ``L`` steps (an RNN, a
  scanned stack of layers, and their transposes in the backward pass) is under-counted by about
  ``L`` times. The correction compiles each scan body on its own, asks XLA for its cost, and adds
  the iterations XLA did not count (nested scans recursively; ``unroll`` honoured).
* :func:`jaxpr_matmul_flops` - an independent analytic count from the jaxpr: ``2 * M * N * K``
  for every ``dot_general`` and ``conv_general_dilated``, times the trip count of every
  enclosing scan. Elementwise work is left out (it is the "model FLOPs" convention of MFU).
* hand-written formulas in the workload modules (``Workload.analytic_flops``), for the tests.

Device peaks: :data:`PEAKS` lists dense peak FLOP/s of known accelerators; on CPU (or an unknown
device) the peak is measured in the same run with :func:`matmul_throughput`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from typing import Any

import jax
import jax.extend
import jax.numpy as jnp


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
    derivatives, remat) are entered; for ``cond`` every branch is counted (an upper bound); the
    body of a ``while`` is counted once (its trip count is unknown).
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
        else:
            total += sum(jaxpr_matmul_flops(sub) for sub in _subjaxprs(eqn))
    return total


# --------------------------------------------------------------------------------------------
# Peaks.

PEAKS: tuple[tuple[str, float, float], ...] = (
    # (device_kind substring, float32 peak, bfloat16 peak) in FLOP/s, dense (no sparsity).
    # GPUs: float32 matmuls run on tensor cores as TF32 under JAX's default precision, so the
    # float32 peak is the TF32 one where the GPU has TF32.
    ("H200", 494.7e12, 989.4e12),
    ("H100 PCIe", 378e12, 756e12),
    ("H100", 494.7e12, 989.4e12),
    ("A100", 156e12, 312e12),
    ("L40S", 183e12, 362e12),
    ("L4", 60e12, 121e12),
    ("A10G", 35e12, 70e12),
    ("A10", 62.5e12, 125e12),
    ("V100", 15.7e12, 125e12),
    ("T4", 8.1e12, 65e12),
    # TPUs: float32 matmuls use bfloat16 passes under JAX's default precision.
    ("TPU v6", 918e12, 918e12),
    ("TPU v5p", 459e12, 459e12),
    ("TPU v5", 197e12, 197e12),  # v5e ("TPU v5 lite")
    ("TPU v4", 275e12, 275e12),
    ("TPU v3", 123e12, 123e12),
    ("TPU v2", 45e12, 45e12),
)


def table_peak(device: jax.Device, dtype: str) -> float | None:
    """The listed peak FLOP/s of ``device`` for ``dtype``, or ``None`` if it is not listed."""
    if device.platform == "cpu":
        return None
    kind = device.device_kind
    for name, f32, bf16 in PEAKS:
        if name.lower() in kind.lower():
            return bf16 if dtype == "bfloat16" else f32
    return None


def matmul_throughput(n: int = 1024, dtype: Any = jnp.float32, repeats: int = 20) -> list[float]:
    """FLOP/s of ``repeats`` calls of a jitted ``n x n`` matmul, each call waited for on its own.

    (Independent calls may run concurrently and finish out of order, so waiting only for the
    last of several would time less than all of them.) The peak is the best sample: what the
    hardware reaches when undisturbed.
    """
    a = jax.random.normal(jax.random.key(0), (n, n), dtype)
    b = jax.random.normal(jax.random.key(1), (n, n), dtype)
    matmul = jax.jit(jnp.matmul)
    jax.block_until_ready(matmul(a, b))
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(matmul(a, b))
        samples.append(2.0 * n**3 / (time.perf_counter() - start))
    return samples


__all__ = [
    "PEAKS",
    "cost_analysis",
    "jaxpr_matmul_flops",
    "matmul_throughput",
    "peak_memory_bytes",
    "scan_correction",
    "step_flops",
    "table_peak",
    "xla_flops",
]

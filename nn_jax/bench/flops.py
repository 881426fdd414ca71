"""FLOP counts of a jitted step, device peaks, and the measured CPU matmul peak.

Three counts, from most to least authoritative:

* :func:`step_flops` - XLA's own cost analysis of the compiled program, corrected for loops
  (``jax.lax.scan`` bodies are counted once per iteration, not once): see :mod:`nn_jax._flops`,
  where the counting lives so that :func:`nn_jax.inspect.summary` shares it.
* :func:`jaxpr_matmul_flops` - an independent analytic count from the jaxpr: ``2 * M * N * K``
  for every ``dot_general`` and ``conv_general_dilated``, times the trip count of every
  enclosing scan.
* hand-written formulas in the workload modules (``Workload.analytic_flops``), for the tests.

Device peaks: :data:`PEAKS` lists dense peak FLOP/s of known accelerators; on CPU (or an unknown
device) the peak is measured in the same run with :func:`matmul_throughput`.
"""

from __future__ import annotations

import time
from typing import Any

import jax
import jax.numpy as jnp

from nn_jax._flops import (
    cost_analysis,
    jaxpr_matmul_flops,
    peak_memory_bytes,
    scan_correction,
    step_flops,
    xla_flops,
)

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

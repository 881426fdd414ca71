"""FLOP counts of a jitted step, device peaks, and the measured CPU matmul peak.

Three counts, from most to least authoritative:

* :func:`step_flops` - XLA's own cost analysis of the compiled program, corrected for loops
  (``jax.lax.scan`` bodies are counted once per iteration, not once): see :mod:`nn_jax._flops`,
  where the counting lives so that :func:`nn_jax.inspect.summary` shares it.
* :func:`jaxpr_matmul_flops` - an independent analytic count from the jaxpr: ``2 * M * N * K``
  for every ``dot_general`` and ``conv_general_dilated``, times the trip count of every
  enclosing scan.
* hand-written formulas in the workload modules (``Workload.analytic_flops``), for the tests.

Device peaks: :data:`PEAKS` lists the vendors' dense peak FLOP/s of known accelerators by
``device_kind`` (:func:`table_peak`); elsewhere (CPUs, unknown devices) there is no peak, so no
MFU, and :func:`matmul_throughput` measures what a large matmul reaches in the same run.
"""

from __future__ import annotations

import re
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

PEAKS: tuple[tuple[str, float, float | None], ...] = (
    # (device model, float32 peak, bfloat16 peak) in FLOP/s, dense (the vendors' "with
    # sparsity" figures halved). The model matches whole words of ``device.device_kind``,
    # first entry first (so "H100 PCIe" before "H100"). GPUs: float32 matmuls run on tensor
    # cores as TF32 under JAX's default precision, so the float32 peak is the TF32 one.
    # NVIDIA H200 datasheet (SXM): TF32 989 / BF16 1,979 TFLOPS with sparsity; NVL: 835 / 1,671.
    ("H200 NVL", 417.5e12, 835.5e12),
    ("H200", 494.7e12, 989.4e12),
    # NVIDIA H100 datasheet: SXM TF32 989 / BF16 1,979, PCIe 756 / 1,513, NVL 835 / 1,671
    # TFLOPS with sparsity; GH200 (Grace Hopper datasheet) as the H100 SXM.
    ("H100 PCIe", 378e12, 756e12),
    ("H100 NVL", 417.5e12, 835.5e12),
    ("H100", 494.7e12, 989.4e12),
    ("GH200", 494.7e12, 989.4e12),
    # NVIDIA A100 datasheet (SXM and PCIe): TF32 156 / BF16 312 TFLOPS dense.
    ("A100", 156e12, 312e12),
    # NVIDIA L40S datasheet: TF32 183 / BF16 362.05 TFLOPS dense.
    ("L40S", 183e12, 362e12),
    # NVIDIA L4 datasheet: TF32 120 / BF16 242 TFLOPS with sparsity.
    ("L4", 60e12, 121e12),
    # NVIDIA A10 datasheet: TF32 62.5 / BF16 125 TFLOPS dense.
    ("A10", 62.5e12, 125e12),
    # NVIDIA V100 (SXM2) and T4 datasheets: FP32 15.7 and 8.1 TFLOPS; no bfloat16 tensor cores.
    ("V100", 15.7e12, None),
    ("T4", 8.1e12, None),
    # Google Cloud TPU docs, bf16 peak per chip (one JAX device per chip from v4 on); float32
    # matmuls take one bfloat16 pass under JAX's default precision, so the same peak.
    ("TPU v6 lite", 918e12, 918e12),  # v6e (Trillium)
    ("TPU v6e", 918e12, 918e12),
    ("TPU v5 lite", 197e12, 197e12),  # v5e
    ("TPU v5e", 197e12, 197e12),
    ("TPU v5p", 459e12, 459e12),
    ("TPU v5", 459e12, 459e12),  # v5p's device_kind
    ("TPU v4", 275e12, 275e12),
)


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def table_peak(device_kind: str, dtype: str) -> float | None:
    """The listed dense peak FLOP/s of a device (by ``jax.Device.device_kind``) for ``dtype``.

    ``None`` where the device or dtype is not listed (CPUs, unknown accelerators): a peak is
    never guessed. A model matches when its words appear in order as consecutive words of the
    device kind and, for TPUs, make up all of it ("TPU v5" is v5p, "TPU v5 lite" is v5e).
    """
    words = _words(device_kind)
    for model, f32, bf16 in PEAKS:
        want = _words(model)
        if want[0] == "tpu":
            found = words == want
        else:
            found = any(words[i : i + len(want)] == want for i in range(len(words)))
        if found:
            return bf16 if dtype == "bfloat16" else f32 if dtype == "float32" else None
    return None


def model_flops_utilization(
    flops: float | None, step_s: float, peak_flops_per_s: float | None
) -> float | None:
    """MFU: the step's FLOPs per second over the device's peak, ``flops / step_s / peak``.

    ``None`` where the FLOP count or the peak is unknown (never a guessed peak).
    """
    if not flops or not peak_flops_per_s:
        return None
    return flops / step_s / peak_flops_per_s


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
    "model_flops_utilization",
    "peak_memory_bytes",
    "scan_correction",
    "step_flops",
    "table_peak",
    "xla_flops",
]

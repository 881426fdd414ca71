"""Timing training steps: first call, calibrated rounds, interleaving, and the peak FLOP/s.

* :func:`timed_first_call` - compile time: the first call (trace + compile + one run), waited for.
* :func:`calibrate` - steps per round, so that one framework's round lasts about
  ``repeat_time`` seconds.
* :func:`interleaved_rounds` - ``repeats`` timed rounds after one warm-up round; in each round
  every framework runs ``inner`` steps back to back (the last result waited for), frameworks
  *interleaved* (round ``r`` starts at framework ``r mod n``, so drift and position effects hit
  all of them alike), with Python's garbage collector off.
* :func:`step_statistics` - median, quartiles and minimum of the per-step times, and the paired
  ratios (median of per-round ratios, so slow drift cancels) with their quartiles (the noise).
* :class:`Peaks` - the device's peak FLOP/s (MFU's denominator): given, or the vendor's figure
  for known GPUs/TPUs, else unknown, with the best of measured ``n x n`` matmuls beside it.
"""

from __future__ import annotations

import gc
import math
import statistics
import time
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

from nn_jax.bench import flops as flopslib
from nn_jax.bench.registry import Impl


def timed_first_call(impl: Impl) -> tuple[float, float]:
    """``(seconds, loss)`` of the first step: tracing, compilation and one run."""
    start = time.perf_counter()
    loss = impl.run(1)
    return time.perf_counter() - start, impl.to_float(loss)


def _timed(impl: Impl, steps: int) -> float:
    start = time.perf_counter()
    impl.run(steps)
    return time.perf_counter() - start


def calibrate(probe: Impl, repeat_time: float) -> int:
    """Steps per round so that a round of ``probe`` lasts about ``repeat_time`` seconds.

    The faster of two short runs, doubling the steps until a run lasts a tenth of a round.
    """
    steps, estimate = 1, math.inf
    while True:
        elapsed = _timed(probe, steps)
        estimate = min(estimate, elapsed / steps)
        if elapsed >= repeat_time / 10 or steps >= 1024:
            break
        steps *= 2
    estimate = min(estimate, _timed(probe, steps) / steps)
    return max(1, min(100_000, round(repeat_time / estimate)))


def interleaved_rounds(
    impls: Mapping[str, Impl], inner: int, repeats: int
) -> dict[str, list[float]]:
    """Per-step times (seconds) of each implementation over ``repeats`` interleaved rounds."""
    names = list(impls)
    for impl in impls.values():  # warm-up round
        impl.run(inner)
    times: dict[str, list[float]] = {name: [] for name in names}
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for r in range(repeats):
            shift = r % len(names)
            for name in names[shift:] + names[:shift]:
                times[name].append(_timed(impls[name], inner) / inner)
    finally:
        if gc_was_enabled:
            gc.enable()
    return times


def _percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def paired_ratio(times: Sequence[float], baseline: Sequence[float]) -> float:
    """The median of the per-round ratios ``times[r] / baseline[r]``."""
    return statistics.median(a / b for a, b in zip(times, baseline, strict=True))


def paired_quartiles(times: Sequence[float], baseline: Sequence[float]) -> list[float]:
    """The 25th and 75th percentiles of the per-round ratios: the run's noise on a ratio (a
    ratio whose lower quartile is at or below a target cannot be told from it in this run)."""
    ratios = [a / b for a, b in zip(times, baseline, strict=True)]
    return [_percentile(ratios, 25), _percentile(ratios, 75)]


def step_statistics(times: dict[str, list[float]], name: str) -> dict[str, Any]:
    """Median, 25th/75th percentiles and minimum of ``times[name]``, and its paired ratios to
    raw JAX and nn_jax (where they ran)."""
    t = times[name]
    stats: dict[str, Any] = {
        "step_times_s": t,
        "step_s": statistics.median(t),
        "step_s_p25": _percentile(t, 25),
        "step_s_p75": _percentile(t, 75),
        "step_s_min": min(t),
    }
    for baseline in ("jax", "nn_jax"):
        if baseline in times and name != baseline:
            stats[f"ratio_to_{baseline}"] = paired_ratio(t, times[baseline])
            stats[f"ratio_to_{baseline}_quartiles"] = paired_quartiles(t, times[baseline])
    if name == "jax":
        stats["ratio_to_jax"] = 1.0
    return stats


class Peaks:
    """Each dtype's peak FLOP/s, the denominator of MFU: the one given on the command line
    (``--peak-tflops``), else the vendor's figure for the device
    (:func:`~nn_jax.bench.flops.table_peak`), else unknown (``None``: CPUs, unlisted devices).

    Where the peak is unknown, :meth:`measure` times large matmuls in this run (best of), a
    yardstick of what the device reaches, reported next to MFU but never as its denominator.
    """

    def __init__(self, device: jax.Device, given: Mapping[str, float] | None = None) -> None:
        self.device = device
        self.given = dict(given or {})
        self.samples: dict[str, list[float]] = {}
        self.size = 1024 if device.platform == "cpu" else 8192

    def known(self, dtype: str) -> tuple[float, str] | None:
        """``(FLOP/s, source)`` of the given or listed peak, or ``None``."""
        if dtype in self.given:
            return self.given[dtype], f"given: --peak-tflops {self.given[dtype] / 1e12:g}"
        table = flopslib.table_peak(self.device.device_kind, dtype)
        if table is not None:
            return table, f"table: {self.device.device_kind} {dtype}"
        return None

    def _measure_key(self, dtype: str) -> str:
        # CPU computes bfloat16 matmuls in float32: one float32 measurement serves both.
        return "float32" if self.device.platform == "cpu" else dtype

    def measure(self, dtypes: Sequence[str]) -> None:
        """Measure (again) the matmul throughput of every dtype without a known peak."""
        for key in {self._measure_key(d) for d in dtypes if self.known(d) is None}:
            self.samples.setdefault(key, []).extend(flopslib.matmul_throughput(self.size, key))

    def peak(self, dtype: str) -> dict[str, Any]:
        """``{"flops_per_s", "source"}`` (``flops_per_s`` ``None`` when unknown), plus the
        matmul measurement (``matmul_flops_per_s``: best, ``matmul_median_flops_per_s``)
        when one was made."""
        known = self.known(dtype)
        if known is not None:
            return {"flops_per_s": known[0], "source": known[1]}
        info: dict[str, Any] = {
            "flops_per_s": None,
            "source": f"unknown for {self.device.device_kind} {dtype} (give --peak-tflops)",
        }
        key, n = self._measure_key(dtype), self.size
        samples = self.samples.get(key)
        if samples:
            info |= {
                "matmul_flops_per_s": max(samples),
                "matmul_median_flops_per_s": statistics.median(samples),
                "matmul": f"best of {len(samples)} {n}x{n} {key} matmuls in this run",
            }
        return info


__all__ = [
    "Peaks",
    "calibrate",
    "interleaved_rounds",
    "paired_ratio",
    "step_statistics",
    "timed_first_call",
]

"""The benchmark runner: builds every framework's step for each workload and dtype, times them
(:mod:`nn_jax.bench.timing`), counts FLOPs (:mod:`nn_jax.bench.flops`) and checks the targets.

For each selected workload and dtype it builds every selected framework's step from the same
nn_jax parameters, then records:

* compile time - the first call of the step (trace + compile + one run), waited for;
* steady-state step time - interleaved, calibrated rounds (see :mod:`nn_jax.bench.timing`):
  median, 25th/75th percentiles and minimum of the per-step times; ratios to raw JAX are the
  median of the per-round ratios (paired, so slow drift cancels);
* throughput - items (examples, tokens, nodes) per second at the median step time;
* FLOPs per step - XLA's cost analysis of the compiled raw-JAX step, corrected for scan trip
  counts; achieved FLOP/s; MFU, FLOPs per step / step time / the device's peak for the dtype
  (``--peak-tflops``, else the vendor's figure for known GPUs/TPUs, else unknown: ``None``);
  where the peak is unknown (CPU), the fraction of the best of 40 calls of a large matmul
  (1024x1024 float32 on CPU), 20 at the start and 20 at the end of the same run;
* peak memory - ``memory_analysis()`` of each framework's compiled step (where it is a
  ``jax.jit`` function).

Those are the ``steps`` section; the ``init`` section times each framework's init of deep
models (:mod:`nn_jax.bench.init_time`) and ``generation`` the tokens/s of ``generate``
with and without its cache (:mod:`nn_jax.bench.generation`).
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any, Protocol

import jax

from nn_jax.bench import flops as flopslib
from nn_jax.bench.environment import environment, framework_available
from nn_jax.bench.generation import measure_generation
from nn_jax.bench.init_time import measure_init
from nn_jax.bench.registry import (
    FRAMEWORK_LABELS,
    FRAMEWORK_PACKAGES,
    FRAMEWORKS,
    Impl,
    Reference,
    Workload,
)
from nn_jax.bench.timing import (
    Peaks,
    calibrate,
    interleaved_rounds,
    step_statistics,
    timed_first_call,
)
from nn_jax.bench.workloads import UNAVAILABLE, WORKLOADS

DTYPES: tuple[str, ...] = ("float32", "bfloat16")
SECTIONS: tuple[str, ...] = ("steps", "init", "generation")
"""What a run measures: training steps per workload, init time, generation tokens/s."""
CONTROL = "jax_control"
"""The A/A control: raw JAX's step built and timed a second time (same program, other buffers).
Its ratio to raw JAX, a run's difference between identical programs, widens what the run can
tell from a target (:func:`targets`)."""
OTHER_FRAMEWORKS: tuple[str, ...] = (
    "flax_linen",
    "flax_nnx",
    "flax_nnx_split",
    "equinox",
    "haiku",
)
"""The frameworks nn_jax must match or beat (the target)."""
RATIO_TARGET = 1.02
"""nn_jax / raw JAX step time must stay at or below this (and vs. the others, within it)."""
SEED_NNX_TARGET = 3.0
"""On the seed network, nnx.jit's step must take at least this many times nn_jax's."""


class Console(Protocol):
    """Where progress lines go (``print``-like)."""

    def print(self, *objects: Any) -> None: ...


class Quiet:
    """A :class:`Console` that prints nothing."""

    def print(self, *objects: Any) -> None:
        pass


class Stdout:
    """A :class:`Console` printing to standard output, flushed line by line (CI logs)."""

    def print(self, *objects: Any) -> None:
        print(*objects, flush=True)


@dataclasses.dataclass(frozen=True)
class Options:
    """What to run. ``batch_size=None`` uses each workload's default."""

    workloads: tuple[str, ...]
    dtypes: tuple[str, ...] = DTYPES
    frameworks: tuple[str, ...] = FRAMEWORKS
    batch_size: int | None = None
    repeats: int = 20
    repeat_time: float = 0.1
    quick: bool = False
    out: Path = Path("benchmarks/out")
    name: str = "results"
    seed: int = 0
    peak_flops: tuple[tuple[str, float], ...] = ()
    """``(dtype, FLOP/s)`` pairs: the device's peak for MFU, overriding the table."""
    sections: tuple[str, ...] = SECTIONS
    """Which of :data:`SECTIONS` to run (the report holds ``None`` for the others)."""


def _skip_reason(workload: Workload, framework: str) -> str | None:
    if framework not in workload.builders:
        return "no implementation for this workload"
    if not framework_available(framework):
        return f"{FRAMEWORK_PACKAGES[framework]} is not installed"
    return None


def _build(
    workload: Workload, ref: Reference, framework: str, name: str | None = None
) -> tuple[Impl, dict[str, Any]]:
    """Build and compile one framework's step; its record (as framework ``name``, default
    ``framework``) without the timings."""
    start = time.perf_counter()
    impl = workload.builders[framework](ref)
    framework = name or framework
    build_s = time.perf_counter() - start
    compile_s, first_loss = timed_first_call(impl)
    analysis = flopslib.step_flops(impl.step, *impl.carry, impl.batch) if impl.traceable else {}
    return impl, {
        "workload": workload.name,
        "description": workload.description,
        "dtype": ref.dtype,
        "framework": framework,
        "label": FRAMEWORK_LABELS.get(framework, framework),
        "batch_size": ref.batch_size,
        "items_per_step": workload.items(ref),
        "unit": workload.unit,
        "build_s": build_s,
        "compile_s": compile_s,
        "first_loss": first_loss,
        "flops_compiled": analysis.get("flops"),
        "flops_xla_raw": analysis.get("flops_xla_raw"),
        "flops_analytic": analysis.get("flops_analytic"),
        "peak_memory_bytes": analysis.get("peak_memory_bytes"),
    }


def build_all(
    workload: Workload, ref: Reference, frameworks: tuple[str, ...], console: Console
) -> tuple[dict[str, Impl], dict[str, dict[str, Any]], list[dict[str, str]]]:
    """Every selected framework's compiled step and record, and the skipped ones with reasons.

    A failing optional framework is skipped with its error; nn_jax and raw JAX must work.
    With raw JAX comes :data:`CONTROL`, a second instance of the same raw-JAX step timed like
    any framework: its ratio to raw JAX is what two identical programs read in this run.
    """
    impls, records, skipped = {}, {}, []
    for fw in frameworks:
        reason = _skip_reason(workload, fw)
        if reason is None:
            try:
                impls[fw], records[fw] = _build(workload, ref, fw)
            except Exception as e:
                if fw in ("nn_jax", "jax"):
                    raise
                reason = f"failed: {type(e).__name__}: {e}"
                console.print(f"{workload.name} {ref.dtype}: {fw} {reason}")
        if reason is not None:
            skipped.append(
                {"workload": workload.name, "dtype": ref.dtype, "framework": fw, "reason": reason}
            )
        if fw == "jax" and fw in impls:
            impls[CONTROL], records[CONTROL] = _build(workload, ref, "jax", CONTROL)
    return impls, records, skipped


def bench_workload(
    workload: Workload, dtype: str, options: Options, console: Console
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Benchmark every selected framework on one workload and dtype (see the module docstring).

    Returns the per-framework records and the skipped frameworks with reasons.
    """
    ref = workload.setup(
        options.batch_size or workload.batch_size, dtype, jax.random.key(options.seed)
    )
    impls, records, skipped = build_all(workload, ref, options.frameworks, console)
    if not impls:
        return [], skipped
    names = list(impls)  # calibrated on the first (nn_jax when selected)
    inner = calibrate(impls[names[0]], options.repeat_time)
    times = interleaved_rounds(impls, inner, options.repeats)
    for fw in names:
        rec = records[fw]
        rec.update(inner_steps=inner, repeats=options.repeats, **step_statistics(times, fw))
        rec["items_per_s"] = rec["items_per_step"] / rec["step_s"]
    # The workload's FLOPs: the raw-JAX program's count (the floor), else nn_jax's.
    reference_fw = next(
        (fw for fw in ("jax", "nn_jax") if records.get(fw, {}).get("flops_compiled")), None
    )
    for rec in records.values():
        rec["flops"] = records[reference_fw]["flops_compiled"] if reference_fw else None
        rec["flops_expected"] = workload.analytic_flops(ref) if workload.analytic_flops else None
    console.print(
        f"{workload.name} {dtype}: {len(names)} frameworks, {options.repeats} rounds x {inner} "
        f"steps, nn_jax {records.get('nn_jax', records[names[0]])['step_s'] * 1e3:.3f} ms/step"
    )
    return [records[fw] for fw in names], skipped


def add_mfu(records: list[dict[str, Any]], peaks: dict[str, dict[str, Any]]) -> None:
    """Set each record's achieved FLOP/s, its MFU against the dtype's peak (``None`` without a
    FLOP count or a known peak) and, where a matmul was measured instead, its fraction of the
    best measured matmul throughput (``matmul_fraction``, else ``None``)."""
    for rec in records:
        peak = peaks[rec["dtype"]]
        flops, matmul = rec["flops"], peak.get("matmul_flops_per_s")
        rec["achieved_flops_per_s"] = flops / rec["step_s"] if flops else None
        rec["mfu"] = flopslib.model_flops_utilization(flops, rec["step_s"], peak["flops_per_s"])
        rec["matmul_fraction"] = flopslib.model_flops_utilization(flops, rec["step_s"], matmul)


def run(options: Options, console: Console | None = None) -> dict[str, Any]:
    """Run the suite; returns the report (what :func:`nn_jax.bench.report.write_reports`
    writes as JSON)."""
    console = console or Quiet()
    env = environment()
    console.print(
        f"nn_jax bench on {env['device_kind']} ({env['platform']}), jax {env['jax']}, "
        f"load average {env['load_average_start'][0]:.2f}"
    )
    peaks = Peaks(jax.devices()[0], dict(options.peak_flops))
    results: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    if "steps" in options.sections:
        peaks.measure(options.dtypes)
        for name in options.workloads:
            for dtype in options.dtypes:
                recs, skips = bench_workload(WORKLOADS[name], dtype, options, console)
                results.extend(recs)
                skipped.extend(skips)
        peaks.measure(options.dtypes)  # again at the end: the better measurement is the peak
    init = generation = None
    if "init" in options.sections:
        available = [fw for fw in options.frameworks if framework_available(fw)]
        init = measure_init(available, log=console.print)
    if "generation" in options.sections:
        generation = measure_generation(options.repeats, options.repeat_time, options.seed)
        console.print(f"generation: {generation['speedup']:.1f}x faster with the cache")
    peak_info = {dtype: peaks.peak(dtype) for dtype in options.dtypes}
    add_mfu(results, peak_info)
    env["load_average_end"] = list(os.getloadavg())
    report = {
        "meta": env,
        "options": {
            k: (str(v) if isinstance(v, Path) else v)
            for k, v in dataclasses.asdict(options).items()
        },
        "peaks": peak_info,
        "results": results,
        "skipped": skipped,
        "unavailable_families": dict(UNAVAILABLE),
        "init": init,
        "generation": generation,
    }
    report["targets"] = targets(report)
    return report


def group_results(report: dict[str, Any]) -> dict[tuple[str, str], dict[str, dict[str, Any]]]:
    """The report's records by ``(workload, dtype)``, then by framework."""
    groups: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for rec in report["results"]:
        groups.setdefault((rec["workload"], rec["dtype"]), {})[rec["framework"]] = rec
    return groups


def fastest_other(recs: dict[str, dict[str, Any]]) -> tuple[str, float] | None:
    """The fastest of :data:`OTHER_FRAMEWORKS` that ran, and nn_jax's time over its time."""
    others = {fw: recs[fw]["ratio_to_nn_jax"] for fw in OTHER_FRAMEWORKS if fw in recs}
    if not others:
        return None
    fastest = min(others, key=lambda fw: others[fw])
    return fastest, 1.0 / others[fastest]


def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The acceptance targets per workload and dtype, checked against the measured ratios.

    * ``nn_jax / raw JAX <= 1.02``;
    * ``nn_jax / fastest of (Flax Linen, Flax NNX both styles, Equinox, Haiku) <= 1.02``
      (at least as fast, within the same 2% noise band);
    * seed network: ``Flax NNX (nnx.jit) / nn_jax >= 3``.

    Each check carries ``quartiles``, those of the per-round ratios (``None`` where not
    recorded), ``control``, the A/A control's ratio to raw JAX (:data:`CONTROL`, ``None``
    where it did not run), and ``within_noise``: a missed target that the ratio's quartile
    range still reaches, or that the ratio misses by no more than the control's distance from
    1 - one this run cannot tell from met.
    """
    checks = []
    for (workload, dtype), recs in group_results(report).items():
        if "nn_jax" not in recs:
            continue
        found: list[tuple[str, float, bool, list[float] | None]] = []
        if "jax" in recs:
            nn = recs["nn_jax"]
            value, quartiles = nn["ratio_to_jax"], nn.get("ratio_to_jax_quartiles")
            target = f"nn_jax / raw JAX <= {RATIO_TARGET}"
            found.append((target, value, value <= RATIO_TARGET, quartiles))
        other = fastest_other(recs)
        if other is not None:
            fw, value = other
            inverse = recs[fw].get("ratio_to_nn_jax_quartiles")
            quartiles = None if inverse is None else [1 / inverse[1], 1 / inverse[0]]
            target = f"nn_jax / fastest other ({FRAMEWORK_LABELS[fw]}) <= {RATIO_TARGET}"
            found.append((target, value, value <= RATIO_TARGET, quartiles))
        control = recs[CONTROL]["ratio_to_jax"] if CONTROL in recs else None
        if workload == "seed" and "flax_nnx" in recs:
            value = recs["flax_nnx"]["ratio_to_nn_jax"]
            target = f"Flax NNX nnx.jit / nn_jax >= {SEED_NNX_TARGET}"
            found.append((target, value, value >= SEED_NNX_TARGET, None))
        checks += [
            {
                "workload": workload,
                "dtype": dtype,
                "target": t,
                "value": v,
                "met": met,
                "quartiles": q,
                "control": None if q is None else control,
                "within_noise": not met and q is not None and _within_noise(v, q, control),
            }
            for t, v, met, q in found
        ]
    return checks


def _within_noise(value: float, quartiles: list[float], control: float | None) -> bool:
    """Whether a ratio above :data:`RATIO_TARGET` is inside the run's noise: its lower
    quartile reaches the target, or it exceeds the target by at most ``|control - 1|``."""
    if quartiles[0] <= RATIO_TARGET:
        return True
    return control is not None and value - RATIO_TARGET <= abs(control - 1.0)


__all__ = [
    "CONTROL",
    "DTYPES",
    "OTHER_FRAMEWORKS",
    "RATIO_TARGET",
    "SECTIONS",
    "SEED_NNX_TARGET",
    "Console",
    "Options",
    "Quiet",
    "Stdout",
    "add_mfu",
    "bench_workload",
    "build_all",
    "fastest_other",
    "group_results",
    "run",
    "targets",
]

"""The benchmark runner: timing, FLOPs/MFU, memory, and the reports (terminal, JSON, md, PNG).

For each selected workload and dtype it builds every selected framework's step from the same
nn_jax parameters, then measures:

* compile time - the first call of the step (trace + compile + one run), waited for;
* steady-state step time - ``repeats`` timed rounds after one warm-up round. In each round every
  framework runs ``inner`` steps back to back (the carry threaded, the last result waited for
  with ``block_until_ready``), frameworks *interleaved* (round ``r`` starts at framework
  ``r mod n``, so drift and position effects hit all of them alike). ``inner`` is chosen once
  per workload so one framework's round lasts about ``repeat_time`` seconds. Reported: median,
  25th/75th percentiles and minimum of the per-step times; ratios to raw JAX are the median of
  the per-round ratios (paired, so slow drift cancels);
* throughput - items (examples, tokens, nodes) per second at the median step time;
* FLOPs per step - XLA's cost analysis of the compiled raw-JAX step, corrected for scan trip
  counts (:mod:`benchmarks.flops`); achieved FLOP/s and MFU against the device's peak (a table
  for known GPUs/TPUs; on CPU the best of 40 calls of a 1024x1024 float32 matmul, 20 at the
  start and 20 at the end of the same run);
* peak memory - ``memory_analysis()`` of each framework's compiled step (where it is a
  ``jax.jit`` function).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import importlib
import importlib.util
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from benchmarks import flops as flopslib
from benchmarks.workloads import (
    FRAMEWORK_LABELS,
    FRAMEWORK_PACKAGES,
    FRAMEWORKS,
    UNAVAILABLE,
    WORKLOADS,
    Impl,
    Workload,
)

DTYPES: tuple[str, ...] = ("float32", "bfloat16")
QUICK_WORKLOADS: tuple[str, ...] = ("seed", "mlp")
QUICK_FRAMEWORKS: tuple[str, ...] = ("nn_jax", "jax")
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


# --------------------------------------------------------------------------------------------
# The command line.


def _choices(kind: str, allowed: Sequence[str], extra: str = "") -> Any:
    """An argparse ``type`` for a comma-separated subset of ``allowed`` (or ``all``)."""

    def parse(text: str) -> tuple[str, ...]:
        names = tuple(n.strip() for n in text.split(",") if n.strip())
        if names == ("all",):
            return tuple(allowed)
        unknown = [n for n in names if n not in allowed]
        if unknown or not names:
            given = ", ".join(repr(n) for n in unknown) if unknown else repr(text)
            raise argparse.ArgumentTypeError(
                f"unknown {kind} {given}; choose from: {', '.join(allowed)} "
                f"(comma-separated, or 'all'){extra}"
            )
        return names

    parse.__name__ = kind  # argparse names the type in some messages
    return parse


def _positive(kind: type) -> Any:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a positive {kind.__name__}, given {text!r}"
            ) from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, given {text!r}")
        return value

    parse.__name__ = kind.__name__
    return parse


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the suite's flags to ``parser`` (``nn-jax bench`` and ``python -m benchmarks``)."""
    missing = "".join(
        f"; unavailable: {family} family ({why})" for family, why in UNAVAILABLE.items()
    )
    parser.add_argument(
        "--workloads",
        type=_choices("workload", tuple(WORKLOADS), missing),
        help=f"comma-separated workloads or 'all' (default; --quick: "
        f"{','.join(QUICK_WORKLOADS)}). Known: {', '.join(WORKLOADS)}",
    )
    parser.add_argument(
        "--dtype",
        type=_choices("dtype", DTYPES),
        help="float32, bfloat16, or both comma-separated / 'all' (default; --quick: float32). "
        "bfloat16 is pure bfloat16 (params, activations, optimizer state)",
    )
    parser.add_argument(
        "--frameworks",
        type=_choices("framework", FRAMEWORKS),
        help=f"comma-separated frameworks or 'all' (default: all installed; --quick: "
        f"{','.join(QUICK_FRAMEWORKS)}). Known: {', '.join(FRAMEWORKS)}",
    )
    parser.add_argument(
        "--batch-size", type=_positive(int), help="override every workload's batch size"
    )
    parser.add_argument(
        "--repeats", type=_positive(int), help="timed rounds per workload (default 20; --quick 3)"
    )
    parser.add_argument(
        "--repeat-time",
        type=_positive(float),
        help="seconds one framework's timed round should last (default 0.1; --quick 0.02)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a fast smoke run: few repeats, small subset (for CI); explicit flags still win",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("benchmarks/out"),
        help="output folder for NAME.json, NAME.md, NAME.png (default benchmarks/out)",
    )
    parser.add_argument("--name", default="results", help="output file stem (default results)")
    parser.add_argument("--seed", type=int, default=0, help="PRNG seed of params and batches")
    parser.add_argument(
        "--list", action="store_true", help="list workloads and frameworks, then exit"
    )
    return parser


def options_from_args(args: argparse.Namespace) -> Options:
    """Resolve parsed flags (and ``--quick`` defaults) into :class:`Options`."""
    quick = args.quick

    def pick(value: Any, normal: Any, fast: Any) -> Any:
        return value if value is not None else (fast if quick else normal)

    return Options(
        workloads=pick(args.workloads, tuple(WORKLOADS), QUICK_WORKLOADS),
        dtypes=pick(args.dtype, DTYPES, ("float32",)),
        frameworks=pick(args.frameworks, FRAMEWORKS, QUICK_FRAMEWORKS),
        batch_size=args.batch_size,
        repeats=pick(args.repeats, 20, 3),
        repeat_time=pick(args.repeat_time, 0.1, 0.02),
        quick=quick,
        out=args.out,
        name=args.name,
        seed=args.seed,
    )


def make_console() -> Any:
    """A ``rich`` console; wide when writing to a file or CI log (the table has 12 columns)."""
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=180)


def run_cli(args: argparse.Namespace) -> int:
    """Run the suite for parsed arguments: print the table, write the reports."""
    console = make_console()
    if args.list:
        for workload in WORKLOADS.values():
            console.print(f"{workload.name:<12} {workload.description}")
        for family, why in UNAVAILABLE.items():
            console.print(f"({family} family unavailable: {why})")
        console.print("frameworks: " + ", ".join(FRAMEWORKS))
        return 0
    options = options_from_args(args)
    report = run(options, console)
    console.print(rich_table(report))
    console.print(targets_text(report))
    paths = write_reports(report, options.out, options.name)
    console.print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks``: the same flags as ``nn-jax bench``."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description="nn_jax accelerator benchmark suite"
    )
    add_arguments(parser)
    return run_cli(parser.parse_args(argv))


# --------------------------------------------------------------------------------------------
# Environment.


def _version(module: str) -> str | None:
    if importlib.util.find_spec(module) is None:
        return None
    mod = importlib.import_module(module)
    return str(getattr(mod, "__version__", "unknown"))


def framework_available(framework: str) -> bool:
    """Whether ``framework``'s package is importable (nn_jax and raw JAX always are)."""
    package = FRAMEWORK_PACKAGES.get(framework)
    return package is None or importlib.util.find_spec(package) is not None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict[str, Any]:
    """Device, versions and host, recorded with every result."""
    import jaxlib

    device = jax.devices()[0]
    versions = {
        name: _version(module)
        for name, module in (
            ("nn_jax", "nn_jax"),
            ("optax", "optax"),
            ("flax", "flax"),
            ("equinox", "equinox"),
            ("haiku", "haiku"),
            ("torch", "torch"),
        )
    }
    return {
        "device": str(device),
        "platform": device.platform,
        "device_kind": device.device_kind,
        "device_count": jax.device_count(),
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "python": platform.python_version(),
        "versions": versions,
        "host": {
            "node": platform.node(),
            "system": platform.platform(),
            "cpu": _cpu_model(),
            "cpu_count": os.cpu_count(),
        },
        "load_average_start": list(os.getloadavg()),
        "timestamp": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "argv": [Path(sys.argv[0]).name, *sys.argv[1:]],  # no machine paths in results
    }


# --------------------------------------------------------------------------------------------
# Measuring.


def _timed_first_call(impl: Impl) -> tuple[float, float]:
    """``(seconds, loss)`` of the first step: tracing, compilation and one run."""
    start = time.perf_counter()
    loss = impl.run(1)
    return time.perf_counter() - start, impl.to_float(loss)


def _percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


class Peaks:
    """Peak FLOP/s per dtype: the device table, or a matmul measured in this run (best of)."""

    def __init__(self, device: jax.Device) -> None:
        self.device = device
        self.samples: dict[str, list[float]] = {}
        self.size = 1024 if device.platform == "cpu" else 8192

    def _measure_key(self, dtype: str) -> str:
        # CPU computes bfloat16 matmuls in float32: one float32 measurement serves both.
        return "float32" if self.device.platform == "cpu" else dtype

    def measure(self, dtypes: Sequence[str]) -> None:
        """Measure (again) every dtype that the table does not cover."""
        for key in {
            self._measure_key(d) for d in dtypes if not flopslib.table_peak(self.device, d)
        }:
            self.samples.setdefault(key, []).extend(flopslib.matmul_throughput(self.size, key))

    def peak(self, dtype: str) -> dict[str, Any]:
        """``{"flops_per_s", "source"}`` (and the measurement's median, when measured)."""
        table = flopslib.table_peak(self.device, dtype)
        if table is not None:
            return {"flops_per_s": table, "source": f"table: {self.device.device_kind} {dtype}"}
        key, n = self._measure_key(dtype), self.size
        samples = self.samples[key]
        return {
            "flops_per_s": max(samples),
            "median_flops_per_s": statistics.median(samples),
            "source": f"measured: best of {len(samples)} {n}x{n} {key} matmuls in this run",
        }


def bench_workload(
    workload: Workload, dtype: str, options: Options, console: Any
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Benchmark every selected framework on one workload and dtype (see the module docstring).

    Returns the per-framework records and the skipped frameworks with reasons.
    """
    batch_size = options.batch_size or workload.batch_size
    ref = workload.setup(batch_size, dtype, jax.random.key(options.seed))
    tag = f"{workload.name} {dtype}"
    impls: dict[str, Impl] = {}
    records: dict[str, dict[str, Any]] = {}
    skipped: list[dict[str, str]] = []
    for fw in options.frameworks:
        reason = None
        if fw not in workload.builders:
            reason = "no implementation for this workload"
        elif not framework_available(fw):
            reason = f"{FRAMEWORK_PACKAGES[fw]} is not installed"
        if reason:
            skipped.append(
                {"workload": workload.name, "dtype": dtype, "framework": fw, "reason": reason}
            )
            continue
        try:
            start = time.perf_counter()
            impl = workload.builders[fw](ref)
            build_s = time.perf_counter() - start
            compile_s, first_loss = _timed_first_call(impl)
            analysis = (
                flopslib.step_flops(impl.step, *impl.carry, impl.batch) if impl.traceable else {}
            )
        except Exception as e:
            if fw in ("nn_jax", "jax"):
                raise
            why = f"failed: {type(e).__name__}: {e}"
            console.print(f"[yellow]{tag}: {fw} {why}")
            skipped.append(
                {"workload": workload.name, "dtype": dtype, "framework": fw, "reason": why}
            )
            continue
        impls[fw] = impl
        records[fw] = {
            "workload": workload.name,
            "description": workload.description,
            "dtype": dtype,
            "framework": fw,
            "label": FRAMEWORK_LABELS.get(fw, fw),
            "batch_size": batch_size,
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
    if not impls:
        return [], skipped

    names = list(impls)
    # Calibrate the steps per round on the first framework (nn_jax when selected): the faster
    # of two short runs, doubling the steps until a run lasts a tenth of a round.
    probe, steps, estimate = impls[names[0]], 1, math.inf
    while True:
        start = time.perf_counter()
        probe.run(steps)
        elapsed = time.perf_counter() - start
        estimate = min(estimate, elapsed / steps)
        if elapsed >= options.repeat_time / 10 or steps >= 1024:
            break
        steps *= 2
    start = time.perf_counter()
    probe.run(steps)
    estimate = min(estimate, (time.perf_counter() - start) / steps)
    inner = max(1, min(100_000, round(options.repeat_time / estimate)))
    for impl in impls.values():  # warm-up round
        impl.run(inner)
    times: dict[str, list[float]] = {fw: [] for fw in names}
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for r in range(options.repeats):
            shift = r % len(names)
            for fw in names[shift:] + names[:shift]:
                impl = impls[fw]
                start = time.perf_counter()
                impl.run(inner)
                times[fw].append((time.perf_counter() - start) / inner)
    finally:
        if gc_was_enabled:
            gc.enable()

    for fw in names:
        t = times[fw]
        rec = records[fw]
        rec.update(
            inner_steps=inner,
            repeats=options.repeats,
            step_times_s=t,
            step_s=statistics.median(t),
            step_s_p25=_percentile(t, 25),
            step_s_p75=_percentile(t, 75),
            step_s_min=min(t),
        )
        rec["items_per_s"] = rec["items_per_step"] / rec["step_s"]
        if "jax" in times:
            ratios = [a / b for a, b in zip(t, times["jax"], strict=True)]
            rec["ratio_to_jax"] = statistics.median(ratios)
        if fw != "nn_jax" and "nn_jax" in times:
            ratios = [a / b for a, b in zip(t, times["nn_jax"], strict=True)]
            rec["ratio_to_nn_jax"] = statistics.median(ratios)
    # The workload's FLOPs: the raw-JAX program's count (the floor), else nn_jax's.
    reference_fw = next(
        (fw for fw in ("jax", "nn_jax") if records.get(fw, {}).get("flops_compiled")), None
    )
    workload_flops = records[reference_fw]["flops_compiled"] if reference_fw else None
    expected = workload.analytic_flops(ref) if workload.analytic_flops else None
    for rec in records.values():
        rec["flops"] = workload_flops
        rec["flops_expected"] = expected
    console.print(
        f"{tag}: {len(names)} frameworks, {options.repeats} rounds x {inner} steps, "
        f"nn_jax {records.get('nn_jax', records[names[0]])['step_s'] * 1e3:.3f} ms/step"
    )
    return [records[fw] for fw in names], skipped


def run(options: Options, console: Any = None) -> dict[str, Any]:
    """Run the suite; returns the report (what :func:`write_reports` writes as JSON)."""
    if console is None:
        from rich.console import Console

        console = Console(quiet=True)
    env = environment()
    console.print(
        f"nn_jax bench on {env['device_kind']} ({env['platform']}), jax {env['jax']}, "
        f"load average {env['load_average_start'][0]:.2f}"
    )
    device = jax.devices()[0]
    peaks = Peaks(device)
    peaks.measure(options.dtypes)
    results: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    for name in options.workloads:
        for dtype in options.dtypes:
            recs, skips = bench_workload(WORKLOADS[name], dtype, options, console)
            results.extend(recs)
            skipped.extend(skips)
    peaks.measure(options.dtypes)  # again at the end: the better measurement is the peak
    peak_info = {dtype: peaks.peak(dtype) for dtype in options.dtypes}
    for rec in results:
        peak = peak_info[rec["dtype"]]["flops_per_s"]
        if rec["flops"]:
            rec["achieved_flops_per_s"] = rec["flops"] / rec["step_s"]
            rec["mfu"] = rec["achieved_flops_per_s"] / peak
        else:
            rec["achieved_flops_per_s"] = rec["mfu"] = None
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
    }
    report["targets"] = targets(report)
    return report


# --------------------------------------------------------------------------------------------
# Targets.


def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The acceptance targets per workload and dtype, checked against the measured ratios.

    * ``nn_jax / raw JAX <= 1.02``;
    * ``nn_jax / fastest of (Flax Linen, Flax NNX both styles, Equinox, Haiku) <= 1.02``
      (at least as fast, within the same 2% noise band);
    * seed network: ``Flax NNX (nnx.jit) / nn_jax >= 3``.
    """
    groups: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for rec in report["results"]:
        groups.setdefault((rec["workload"], rec["dtype"]), {})[rec["framework"]] = rec
    checks = []
    for (workload, dtype), recs in groups.items():
        if "nn_jax" not in recs:
            continue
        if "jax" in recs:
            value = recs["nn_jax"]["ratio_to_jax"]
            checks.append(
                {
                    "workload": workload,
                    "dtype": dtype,
                    "target": f"nn_jax / raw JAX <= {RATIO_TARGET}",
                    "value": value,
                    "met": value <= RATIO_TARGET,
                }
            )
        others = {fw: recs[fw]["ratio_to_nn_jax"] for fw in OTHER_FRAMEWORKS if fw in recs}
        if others:
            fastest = min(others, key=others.get)
            value = 1.0 / others[fastest]
            checks.append(
                {
                    "workload": workload,
                    "dtype": dtype,
                    "target": f"nn_jax / fastest other ({FRAMEWORK_LABELS[fastest]}) "
                    f"<= {RATIO_TARGET}",
                    "value": value,
                    "met": value <= RATIO_TARGET,
                }
            )
        if workload == "seed" and "flax_nnx" in recs:
            value = recs["flax_nnx"]["ratio_to_nn_jax"]
            checks.append(
                {
                    "workload": workload,
                    "dtype": dtype,
                    "target": f"Flax NNX nnx.jit / nn_jax >= {SEED_NNX_TARGET}",
                    "value": value,
                    "met": value >= SEED_NNX_TARGET,
                }
            )
    return checks


# --------------------------------------------------------------------------------------------
# Reports.


def _fmt_time(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.1f} µs"


def _fmt_si(value: float | None, unit: str = "") -> str:
    """``1.23 G`` + unit; a unit starting with a space is kept apart (``1.23G examples/s``)."""
    if value is None or not math.isfinite(value):
        return "-"
    sep = "" if unit.startswith(" ") else " "
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{sep}{prefix}{unit}"
    return f"{value:.3g}{sep}{unit}".strip()


def _fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}x"


COLUMNS = (
    "workload",
    "dtype",
    "framework",
    "compile",
    "step (median)",
    "±IQR/2",
    "throughput",
    "FLOP/step",
    "FLOP/s",
    "MFU",
    "peak mem",
    "vs raw JAX",
)


def table_rows(report: dict[str, Any]) -> list[tuple[str, ...]]:
    """The report as rows of strings (shared by the terminal and markdown tables)."""
    rows = []
    for rec in report["results"]:
        iqr = (rec["step_s_p75"] - rec["step_s_p25"]) / rec["step_s"] * 100
        mem = rec["peak_memory_bytes"]
        rows.append(
            (
                rec["workload"],
                rec["dtype"],
                rec["label"],
                _fmt_time(rec["compile_s"]),
                _fmt_time(rec["step_s"]),
                f"±{iqr / 2:.1f}%",
                _fmt_si(rec["items_per_s"], f" {rec['unit']}/s"),
                _fmt_si(rec["flops"]),
                _fmt_si(rec["achieved_flops_per_s"], "FLOP/s"),
                "-" if rec["mfu"] is None else f"{rec['mfu'] * 100:.2f}%",
                "-" if mem is None else f"{mem / 2**20:.2f} MiB",
                _fmt_ratio(rec.get("ratio_to_jax")),
            )
        )
    return rows


def _header(report: dict[str, Any]) -> str:
    meta = report["meta"]
    peaks = "; ".join(
        f"{dtype}: {_fmt_si(p['flops_per_s'], 'FLOP/s')} ({p['source']})"
        for dtype, p in report["peaks"].items()
    )
    return (
        f"{meta['device_kind']} ({meta['platform']}) on {meta['host']['cpu']} "
        f"x{meta['host']['cpu_count']}, jax/jaxlib {meta['jax']}/{meta['jaxlib']}, "
        f"{meta['timestamp']}. Peak: {peaks}. Load average {meta['load_average_start'][0]:.2f} "
        f"-> {meta['load_average_end'][0]:.2f}."
    )


def rich_table(report: dict[str, Any]) -> Any:
    """The report as a ``rich`` table."""
    from rich.table import Table

    table = Table(title="nn_jax bench", caption=_header(report))
    for i, col in enumerate(COLUMNS):
        table.add_column(col, justify="left" if i < 3 else "right")
    results = report["results"]
    for i, row in enumerate(table_rows(report)):
        group = (results[i]["workload"], results[i]["dtype"])
        last = (
            i + 1 == len(results) or (results[i + 1]["workload"], results[i + 1]["dtype"]) != group
        )
        table.add_row(*row, end_section=last)
    return table


def targets_text(report: dict[str, Any]) -> str:
    """One line per target check, plus skipped frameworks and unavailable families."""
    lines = [
        f"{'MET ' if c['met'] else 'MISS'} {c['workload']} {c['dtype']}: {c['target']}: "
        f"{c['value']:.3f}"
        for c in report["targets"]
    ]
    reasons: dict[str, set[str]] = {}
    for s in report["skipped"]:
        reasons.setdefault(f"{s['framework']} ({s['reason']})", set()).add(s["workload"])
    lines += [f"skipped {k}: {', '.join(sorted(v))}" for k, v in reasons.items()]
    lines += [
        f"unavailable: {f} family ({why})" for f, why in report["unavailable_families"].items()
    ]
    return "\n".join(lines)


SUMMARY_COLUMNS = (
    "workload",
    "dtype",
    "nn_jax step",
    "MFU",
    "nn_jax / raw JAX",
    "nn_jax / fastest other",
    "nnx.jit / nn_jax",
)


def summary_rows(report: dict[str, Any]) -> list[tuple[str, ...]]:
    """One row per workload and dtype: nn_jax's step time and MFU and its ratios to the others.

    Ratios are medians of per-round ratios; "fastest other" is the fastest of Flax Linen,
    Flax NNX (both styles), Equinox and Haiku that ran.
    """
    groups: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for rec in report["results"]:
        groups.setdefault((rec["workload"], rec["dtype"]), {})[rec["framework"]] = rec
    rows = []
    for (workload, dtype), recs in groups.items():
        nn = recs.get("nn_jax")
        if nn is None:
            continue
        others = {fw: recs[fw]["ratio_to_nn_jax"] for fw in OTHER_FRAMEWORKS if fw in recs}
        fastest = min(others, key=others.get) if others else None
        nnx = recs.get("flax_nnx")
        rows.append(
            (
                workload,
                dtype,
                _fmt_time(nn["step_s"]),
                "-" if nn["mfu"] is None else f"{nn['mfu'] * 100:.1f}%",
                _fmt_ratio(nn.get("ratio_to_jax")),
                "-"
                if fastest is None
                else f"{1 / others[fastest]:.3f}x ({FRAMEWORK_LABELS[fastest]})",
                "-" if nnx is None else _fmt_ratio(nnx["ratio_to_nn_jax"]),
            )
        )
    return rows


def _md_table(columns: Sequence[str], rows: Sequence[Sequence[str]], left: int) -> list[str]:
    return [
        "| " + " | ".join(columns) + " |",
        "|" + "|".join("---" if i < left else "---:" for i in range(len(columns))) + "|",
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


def markdown(report: dict[str, Any]) -> str:
    """The report as markdown: environment, a per-workload summary, the full table, targets."""
    summary = _md_table(SUMMARY_COLUMNS, summary_rows(report), 2)
    full = _md_table(COLUMNS, table_rows(report), 3)
    checks = targets_text(report).splitlines()
    return "\n".join(
        [
            _header(report),
            "",
            *(summary if len(summary) > 2 else []),
            "",
            *full,
            "",
            "Targets:",
            "",
            *(f"- {c}" for c in checks),
            "",
        ]
    )


def bar_chart(report: dict[str, Any], path: Path) -> bool:
    """A PNG of each framework's step time relative to raw JAX, per workload (needs matplotlib).

    Grouped markers on a log axis (ratios span 0.5x to 20x), the 1x line being raw JAX.
    """
    if importlib.util.find_spec("matplotlib") is None:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    results = [r for r in report["results"] if r.get("ratio_to_jax")]
    groups = list(dict.fromkeys((r["workload"], r["dtype"]) for r in results))
    frameworks = [fw for fw in FRAMEWORKS if any(r["framework"] == fw for r in results)]
    if not groups:
        return False
    width = 0.8 / max(1, len(frameworks))
    fig, ax = plt.subplots(figsize=(min(14.0, max(6.0, 0.75 * len(groups) + 3)), 5.5))
    for i, fw in enumerate(frameworks):
        points = [
            (groups.index((r["workload"], r["dtype"])), r["ratio_to_jax"])
            for r in results
            if r["framework"] == fw
        ]
        offset = (i - (len(frameworks) - 1) / 2) * width
        ax.scatter(
            [g + offset for g, _ in points],
            [v for _, v in points],
            marker="ovs^Dpx*"[i % 8],
            label=FRAMEWORK_LABELS[fw],
            zorder=3,
        )
    ax.axhline(1.0, color="black", linewidth=0.8)
    for j in range(1, len(groups)):
        ax.axvline(j - 0.5, color="0.85", linewidth=0.8)
    ax.set_yscale("log")
    ticks = [0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 20, 50, 100]
    ax.yaxis.set_major_locator(FixedLocator(ticks))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.grid(axis="y", which="major", color="0.9")
    ax.set_xticks(range(len(groups)))
    short = {"float32": "f32", "bfloat16": "bf16"}
    ax.set_xticklabels([f"{w}\n{short.get(d, d)}" for w, d in groups], fontsize="small")
    ax.set_xlim(-0.5, len(groups) - 0.5)
    ax.set_ylabel("step time / raw JAX (lower is faster)")
    ax.set_title(f"nn_jax bench: {report['meta']['device_kind']}, jax {report['meta']['jax']}")
    ax.legend(fontsize="small", ncols=4, loc="upper center", bbox_to_anchor=(0.5, -0.14))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def write_reports(report: dict[str, Any], out: Path, name: str = "results") -> list[Path]:
    """Write ``NAME.json``, ``NAME.md`` and (with matplotlib) ``NAME.png`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.json", out / f"{name}.md"]
    paths[0].write_text(json.dumps(report, indent=1) + "\n")
    paths[1].write_text(markdown(report))
    png = out / f"{name}.png"
    if bar_chart(report, png):
        paths.append(png)
    return paths


__all__ = [
    "DTYPES",
    "Options",
    "add_arguments",
    "bench_workload",
    "environment",
    "main",
    "markdown",
    "options_from_args",
    "rich_table",
    "run",
    "run_cli",
    "targets",
    "write_reports",
]

"""The suite's command line: ``nn-jax bench`` (and ``python -m nn_jax.bench``), same flags."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from nn_jax.bench.registry import FRAMEWORKS
from nn_jax.bench.report import targets_text, text_table, write_reports
from nn_jax.bench.runner import DTYPES, SECTIONS, Options, Stdout, run
from nn_jax.bench.workloads import UNAVAILABLE, WORKLOADS

QUICK_WORKLOADS: tuple[str, ...] = ("seed", "mlp")
QUICK_FRAMEWORKS: tuple[str, ...] = ("nn_jax", "jax")
QUICK_SECTIONS: tuple[str, ...] = ("steps",)


def _choices(kind: str, allowed: Sequence[str], extra: str = "") -> Callable[[str], Any]:
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


def _positive(kind: type) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or value <= 0:
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, given {text!r}")
        return value

    parse.__name__ = kind.__name__
    return parse


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"expected an integer in [0, 2**32), given {text!r}")
    return value


def _file_stem(text: str) -> str:
    """A report file name stem: letters, digits, ``-``, ``_`` and ``.`` only (no folders), so
    the reports land in ``--out`` and nowhere else."""
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}", text):
        raise argparse.ArgumentTypeError(
            f"expected a file name stem (letters, digits, '-', '_', '.'; no '/'), given {text!r}"
        )
    return text


def _peak_tflops(text: str) -> tuple[tuple[str, float], ...]:
    """``--peak-tflops``: ``989`` (every dtype of the run) or ``bfloat16=989,float32=494.7``,
    as ``(dtype, FLOP/s)`` pairs (``("*", ...)`` for every dtype)."""
    pairs = []
    for item in text.split(","):
        dtype, sep, value = item.strip().rpartition("=")
        dtype = dtype.strip() if sep else "*"
        try:
            tflops = float(value)
        except ValueError:
            tflops = -1.0
        if dtype not in (*DTYPES, "*") or not 0 < tflops < float("inf"):
            raise argparse.ArgumentTypeError(
                f"expected a positive peak in TFLOP/s, e.g. 989, or DTYPE=TFLOPS pairs with "
                f"DTYPE in {', '.join(DTYPES)}, e.g. bfloat16=989,float32=494.7; given {text!r}"
            )
        pairs.append((dtype, tflops * 1e12))
    return tuple(pairs)


def _add_selection(parser: argparse.ArgumentParser) -> None:
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
        "--sections",
        type=_choices("section", SECTIONS),
        help="what to measure, comma-separated or 'all' (default; --quick: steps): steps "
        "(training steps of --workloads), init (init time of ResNet-8 and a 12-layer "
        "transformer, a fresh process per framework), generation (TransformerLM.generate "
        "tokens/s with and without the KV cache)",
    )
    parser.add_argument(
        "--batch-size", type=_positive(int), help="override every workload's batch size"
    )
    parser.add_argument(
        "--peak-tflops",
        type=_peak_tflops,
        default=(),
        help="the device's dense peak in TFLOP/s for MFU, overriding the built-in table: one "
        "number for every dtype, or DTYPE=TFLOPS pairs (bfloat16=989,float32=494.7). Without it "
        "and off the table (CPUs) MFU is reported as unknown",
    )


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the suite's flags to ``parser`` (``nn-jax bench`` and ``python -m nn_jax.bench``)."""
    _add_selection(parser)
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
    parser.add_argument(
        "--name", type=_file_stem, default="results", help="output file stem (default results)"
    )
    parser.add_argument("--seed", type=_seed, default=0, help="PRNG seed of params and batches")
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
        sections=pick(args.sections, SECTIONS, QUICK_SECTIONS),
        batch_size=args.batch_size,
        repeats=pick(args.repeats, 20, 3),
        repeat_time=pick(args.repeat_time, 0.1, 0.02),
        quick=quick,
        out=args.out,
        name=args.name,
        seed=args.seed,
        peak_flops=tuple(
            (dtype, flops)
            for given, flops in args.peak_tflops
            for dtype in (DTYPES if given == "*" else (given,))
        ),
    )


def _list() -> None:
    for workload in WORKLOADS.values():
        print(f"{workload.name:<12} {workload.description}")
    for family, why in UNAVAILABLE.items():
        print(f"({family} family unavailable: {why})")
    print("frameworks: " + ", ".join(FRAMEWORKS))


def run_cli(args: argparse.Namespace) -> int:
    """Run the suite for parsed arguments: print the table, write the reports."""
    if args.list:
        _list()
        return 0
    options = options_from_args(args)
    report = run(options, Stdout())
    print(text_table(report))
    print(targets_text(report))
    paths = write_reports(report, options.out, options.name)
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m nn_jax.bench``: the same flags as ``nn-jax bench``."""
    parser = argparse.ArgumentParser(
        prog="python -m nn_jax.bench", description="nn_jax accelerator benchmark suite"
    )
    add_arguments(parser)
    return run_cli(parser.parse_args(argv))


__all__ = [
    "QUICK_FRAMEWORKS",
    "QUICK_SECTIONS",
    "QUICK_WORKLOADS",
    "add_arguments",
    "main",
    "options_from_args",
    "run_cli",
]

"""The reports: a text table for the terminal, markdown, JSON, and the PNG (:mod:`.plot`)."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nn_jax.bench.plot import bar_chart
from nn_jax.bench.registry import FRAMEWORK_LABELS
from nn_jax.bench.runner import CONTROL, fastest_other, group_results


def fmt_time(seconds: float) -> str:
    """``1.23 s``, ``4.56 ms`` or ``7.8 µs``."""
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.1f} µs"


def fmt_si(value: float | None, unit: str = "") -> str:
    """``1.23 G`` + unit; a unit starting with a space is kept apart (``1.23G examples/s``)."""
    if value is None or not math.isfinite(value):
        return "-"
    sep = "" if unit.startswith(" ") else " "
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{sep}{prefix}{unit}"
    return f"{value:.3g}{sep}{unit}".strip()


def fmt_ratio(value: float | None) -> str:
    """``1.234x``, or ``-`` for none."""
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
    "of matmul",
    "peak mem",
    "vs raw JAX",
)


def fmt_percent(value: float | None, digits: int = 2) -> str:
    """``12.34%``, or ``-`` for none (an unknown MFU)."""
    return "-" if value is None else f"{value * 100:.{digits}f}%"


def _row(rec: dict[str, Any]) -> tuple[str, ...]:
    iqr = (rec["step_s_p75"] - rec["step_s_p25"]) / rec["step_s"] * 100
    mem = rec["peak_memory_bytes"]
    return (
        rec["workload"],
        rec["dtype"],
        rec["label"],
        fmt_time(rec["compile_s"]),
        fmt_time(rec["step_s"]),
        f"±{iqr / 2:.1f}%",
        fmt_si(rec["items_per_s"], f" {rec['unit']}/s"),
        fmt_si(rec["flops"]),
        fmt_si(rec["achieved_flops_per_s"], "FLOP/s"),
        fmt_percent(rec["mfu"]),
        fmt_percent(rec.get("matmul_fraction")),
        "-" if mem is None else f"{mem / 2**20:.2f} MiB",
        fmt_ratio(rec.get("ratio_to_jax")),
    )


def table_rows(report: dict[str, Any]) -> list[tuple[str, ...]]:
    """The report as rows of strings (shared by the terminal and markdown tables)."""
    return [_row(rec) for rec in report["results"]]


def header(report: dict[str, Any]) -> str:
    """One paragraph: device, host, versions, time, peaks and load averages."""
    meta = report["meta"]
    peaks = "; ".join(
        f"{dtype}: {fmt_si(p['flops_per_s'], 'FLOP/s')} ({p['source']})"
        + (
            f", matmul {fmt_si(p['matmul_flops_per_s'], 'FLOP/s')} ({p['matmul']})"
            if "matmul" in p
            else ""
        )
        for dtype, p in report["peaks"].items()
    )
    return (
        f"{meta['device_kind']} ({meta['platform']}) on {meta['host']['cpu']} "
        f"x{meta['host']['cpu_count']}, jax/jaxlib {meta['jax']}/{meta['jaxlib']}, "
        f"{meta['timestamp']}. Peak: {peaks}. Load average {meta['load_average_start'][0]:.2f} "
        f"-> {meta['load_average_end'][0]:.2f}."
    )


def _text_lines(
    columns: Sequence[str], rows: Sequence[Sequence[str]], left: int, group: int
) -> list[str]:
    """An aligned text table: the first ``left`` columns left-aligned, the others right; a rule
    between rows whose first ``group`` cells differ."""
    widths = [max(len(r[i]) for r in [columns, *rows]) for i in range(len(columns))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i < left else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    rule = "-" * len(line(columns))
    lines = [line(columns), rule]
    for i, row in enumerate(rows):
        if i and row[:group] != rows[i - 1][:group]:
            lines.append(rule)
        lines.append(line(row))
    return [*lines, rule]


def text_table(report: dict[str, Any]) -> str:
    """The report as an aligned text table for the terminal, one section per workload and
    dtype, under the :func:`header`; then the init and generation tables where they ran."""
    lines = ["nn_jax bench", *_text_lines(COLUMNS, table_rows(report), 3, 2), header(report)]
    for title, columns, rows, left in _sections(report):
        lines += ["", title, *_text_lines(columns, rows, left, group=left - 1)]
    return "\n".join(lines)


INIT_COLUMNS = ("model", "framework", "first call", "warm call", "first / Linen", "warm / Linen")
GENERATION_COLUMNS = (
    "method",
    "compile",
    "call (median)",
    "±IQR/2",
    "tokens/s",
    "time / KV cache",
)


def init_rows(report: dict[str, Any]) -> list[tuple[str, ...]]:
    """One row per model and framework: first and warm init times and their ratios to Flax
    Linen's (a framework that failed or timed out every round shows its status instead)."""

    def cell(seconds: float | None, status: str) -> str:
        return status if seconds is None else fmt_time(seconds)

    return [
        (
            rec["description"],
            rec["label"],
            cell(rec["first_s"], rec["status"]),
            cell(rec["warm_s"], rec["status"]),
            fmt_ratio(rec["first_to_linen"]),
            fmt_ratio(rec["warm_to_linen"]),
        )
        for rec in report["init"]["records"]
    ]


def generation_rows(report: dict[str, Any]) -> list[tuple[str, ...]]:
    """One row per way of generating: compile time, call time, tokens/s, time vs the cache."""
    gen = report["generation"]
    return [
        (
            rec["label"],
            fmt_time(rec["compile_s"]),
            fmt_time(rec["call_s"]),
            f"±{(rec['call_s_p75'] - rec['call_s_p25']) / rec['call_s'] * 50:.1f}%",
            fmt_si(rec["tokens_per_s"], " tokens/s"),
            "1.000x" if rec["method"] == "kv_cache" else fmt_ratio(gen["speedup"]),
        )
        for rec in gen["records"]
    ]


_Section = tuple[str, Sequence[str], list[tuple[str, ...]], int]


def _sections(report: dict[str, Any]) -> list[_Section]:
    """``(title, columns, rows, left)`` of the init and generation tables that ran (``left``:
    how many columns are text; the text table rules off groups of the first ``left - 1``)."""
    sections: list[_Section] = []
    init, gen = report.get("init"), report.get("generation")
    if init:
        title = (
            f"Init time: a fresh process per framework and model, median of {init['rounds']} "
            "rounds (ratios: median of per-round ratios to Flax Linen)"
        )
        sections.append((title, INIT_COLUMNS, init_rows(report), 2))
    if gen:
        title = (
            f"Generation: {gen['model']}, {gen['dtype']}, batch {gen['batch']}, prompt "
            f"{gen['prompt_tokens']}, {gen['new_tokens']} new tokens, greedy: the cache is "
            f"{gen['speedup']:.1f}x faster (median of per-round ratios)"
        )
        sections.append((title, GENERATION_COLUMNS, generation_rows(report), 1))
    return sections


def _noise(check: dict[str, Any]) -> str:
    """`` (per-round 0.97-1.09: within the run's noise)`` for a check with quartiles."""
    quartiles = check.get("quartiles")
    if not quartiles:
        return ""
    control = check.get("control")
    aa = "" if control is None else f", A/A control {control:.3f}"
    within = ": within the run's noise" if check.get("within_noise") else ""
    return f" (per-round quartiles {quartiles[0]:.3f}-{quartiles[1]:.3f}{aa}{within})"


def targets_text(report: dict[str, Any]) -> str:
    """One line per target check, plus skipped frameworks, inits that failed or timed out,
    and unavailable families."""
    lines = [
        f"{'MET ' if c['met'] else 'MISS'} {c['workload']} {c['dtype']}: {c['target']}: "
        f"{c['value']:.3f}" + _noise(c)
        for c in report["targets"]
    ]
    reasons: dict[str, set[str]] = {}
    for s in report["skipped"]:
        reasons.setdefault(f"{s['framework']} ({s['reason']})", set()).add(s["workload"])
    lines += [f"skipped {k}: {', '.join(sorted(v))}" for k, v in reasons.items()]
    lines += [
        f"init {rec['model']} {rec['framework']}: {rec['status']}: {rec['error']}"
        for rec in (report.get("init") or {}).get("records", [])
        if rec["status"] != "ok"
    ]
    lines += [
        f"unavailable: {f} family ({why})" for f, why in report["unavailable_families"].items()
    ]
    return "\n".join(lines)


SUMMARY_COLUMNS = (
    "workload",
    "dtype",
    "nn_jax step",
    "MFU",
    "of matmul",
    "nn_jax / raw JAX",
    "A/A control",
    "nn_jax / fastest other",
    "nnx.jit / nn_jax",
)


def summary_rows(report: dict[str, Any]) -> list[tuple[str, ...]]:
    """One row per workload and dtype: nn_jax's step time, MFU (``-`` where the device's peak
    is unknown), fraction of the measured matmul throughput (where measured) and its ratios.

    Ratios are medians of per-round ratios (nn_jax / raw JAX with their quartiles, the run's
    noise, in brackets; the A/A control, raw JAX's own step timed a second time, over raw
    JAX); "fastest other" is the fastest of Flax Linen, Flax NNX (both styles), Equinox and
    Haiku that ran.
    """
    rows: list[tuple[str, ...]] = []
    for (workload, dtype), recs in group_results(report).items():
        nn, nnx, other = recs.get("nn_jax"), recs.get("flax_nnx"), fastest_other(recs)
        control = recs.get(CONTROL)
        if nn is None:
            continue
        rows.append(
            (
                workload,
                dtype,
                fmt_time(nn["step_s"]),
                fmt_percent(nn["mfu"], 1),
                fmt_percent(nn.get("matmul_fraction"), 1),
                fmt_ratio(nn.get("ratio_to_jax")) + _quartiles(nn.get("ratio_to_jax_quartiles")),
                "-" if control is None else fmt_ratio(control["ratio_to_jax"]),
                "-" if other is None else f"{other[1]:.3f}x ({FRAMEWORK_LABELS[other[0]]})",
                "-" if nnx is None else fmt_ratio(nnx["ratio_to_nn_jax"]),
            )
        )
    return rows


def _quartiles(quartiles: Sequence[float] | None) -> str:
    return "" if not quartiles else f" [{quartiles[0]:.2f}-{quartiles[1]:.2f}]"


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
    sections = [
        line
        for title, columns, rows, left in _sections(report)
        for line in (f"{title}:", "", *_md_table(columns, rows, left), "")
    ]
    return "\n".join(
        [
            header(report),
            "",
            *(summary if len(summary) > 2 else []),
            "",
            *full,
            "",
            *sections,
            "Targets:",
            "",
            *(f"- {c}" for c in checks),
            "",
        ]
    )


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


def write_study(
    env: dict[str, Any],
    records: list[dict[str, Any]],
    skipped: list[dict[str, str]],
    peaks: dict[str, Any],
    out: Path,
    name: str,
) -> None:
    """A study script's report (``benchmarks/*.py``): the suite's report without targets,
    printed as a table and written as ``NAME.json`` and ``NAME.md`` into ``out``."""
    env["load_average_end"] = list(os.getloadavg())
    report = {
        "meta": env,
        "peaks": peaks,
        "results": records,
        "skipped": skipped,
        "unavailable_families": {},
        "targets": [],
    }
    print(text_table(report))
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / f"{name}.md").write_text(markdown(report))
    print(f"wrote {out / f'{name}.json'}, {out / f'{name}.md'}")


__all__ = [
    "COLUMNS",
    "GENERATION_COLUMNS",
    "INIT_COLUMNS",
    "SUMMARY_COLUMNS",
    "fmt_percent",
    "fmt_ratio",
    "fmt_si",
    "fmt_time",
    "generation_rows",
    "header",
    "init_rows",
    "markdown",
    "summary_rows",
    "table_rows",
    "targets_text",
    "text_table",
    "write_reports",
    "write_study",
]

"""The report's PNG: each framework's step time relative to raw JAX, per workload and dtype."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from nn_jax.bench.registry import FRAMEWORK_LABELS, FRAMEWORKS

TICKS = (0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 20, 50, 100)
SHORT_DTYPES = {"float32": "f32", "bfloat16": "bf16"}


def _series(
    report: dict[str, Any],
) -> tuple[list[tuple[str, str]], dict[str, list[tuple[int, float]]]]:
    """The ``(workload, dtype)`` groups, and per framework its ``(group index, ratio)`` points."""
    results = [r for r in report["results"] if r.get("ratio_to_jax")]
    groups = list(dict.fromkeys((r["workload"], r["dtype"]) for r in results))
    series = {
        fw: [
            (groups.index((r["workload"], r["dtype"])), r["ratio_to_jax"])
            for r in results
            if r["framework"] == fw
        ]
        for fw in FRAMEWORKS
    }
    return groups, {fw: points for fw, points in series.items() if points}


def _style_axes(ax: Any, groups: list[tuple[str, str]], title: str) -> None:
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    ax.axhline(1.0, color="black", linewidth=0.8)
    for j in range(1, len(groups)):
        ax.axvline(j - 0.5, color="0.85", linewidth=0.8)
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(FixedLocator(TICKS))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.grid(axis="y", which="major", color="0.9")
    ax.set_xticks(range(len(groups)))
    labels = [f"{w}\n{SHORT_DTYPES.get(d, d)}" for w, d in groups]
    ax.set_xticklabels(labels, fontsize="small")
    ax.set_xlim(-0.5, len(groups) - 0.5)
    ax.set_ylabel("step time / raw JAX (lower is faster)")
    ax.set_title(title)
    ax.legend(fontsize="small", ncols=4, loc="upper center", bbox_to_anchor=(0.5, -0.14))


def bar_chart(report: dict[str, Any], path: Path) -> bool:
    """Write the PNG to ``path``; ``False`` (nothing written) without matplotlib or results.

    Grouped markers on a log axis (ratios span 0.5x to 20x), the 1x line being raw JAX.
    """
    groups, series = _series(report)
    if importlib.util.find_spec("matplotlib") is None or not groups:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    width = 0.8 / max(1, len(series))
    fig, ax = plt.subplots(figsize=(min(14.0, max(6.0, 0.75 * len(groups) + 3)), 5.5))
    for i, (fw, points) in enumerate(series.items()):
        offset = (i - (len(series) - 1) / 2) * width
        xs, ys = [g + offset for g, _ in points], [v for _, v in points]
        ax.scatter(xs, ys, marker="ovs^Dpx*"[i % 8], label=FRAMEWORK_LABELS[fw], zorder=3)
    meta = report["meta"]
    _style_axes(ax, groups, f"nn_jax bench: {meta['device_kind']}, jax {meta['jax']}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


__all__ = ["bar_chart"]

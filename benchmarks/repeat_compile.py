"""Compile time of a training step against depth: ``Repeat`` (scan over layers) vs unrolled.

The step is ``jax.jit(jax.value_and_grad(loss))`` of a stack of ``TransformerEncoderBlock``
(d_model 64, 4 heads, MLP 256, pre-norm; batch 8 x 32 tokens), as ``Repeat(block, n)`` and as the
unrolled ``Sequential(*[block] * n)``, at depths 4, 8, 16 and 32. Each measurement lowers and
compiles a freshly built function (``.lower(...).compile()``: tracing, lowering and XLA
compilation; nothing is run), the median of ``--repeats`` runs, after one unrecorded warm-up
compile of each form (the first trace pays one-off costs). Acceptance (issue 11): the
``Repeat`` step at 32 layers compiles within 1.5x of the one at 4 layers.

Run ``python benchmarks/repeat_compile.py``; it writes ``benchmarks/results/repeat_compile.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from nn_jax.bench.environment import environment
from nn_jax.combinators import Sequential
from nn_jax.core import Layer
from nn_jax.repeat import Repeat
from nn_jax.transformer import TransformerEncoderBlock

RESULTS = Path(__file__).parent / "results"
BLOCK = TransformerEncoderBlock(4, 256, norm_position="pre")
X = jax.ShapeDtypeStruct((8, 32, 64), jnp.float32)


def compile_seconds(model: Layer) -> float:
    """Seconds to trace, lower and compile a fresh jitted gradient step of ``model``."""
    params = jax.eval_shape(model.init, jax.random.key(0), X)[0]

    def loss(p: Any, x: jax.Array) -> jax.Array:
        return jnp.mean(model(p, x) ** 2)

    start = time.perf_counter()
    jax.jit(jax.value_and_grad(loss)).lower(params, X).compile()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--depths", default="4,8,16,32")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS / "repeat_compile.json")
    args = parser.parse_args()
    depths = [int(d) for d in args.depths.split(",")]
    load_before = round(os.getloadavg()[0], 2)
    for model in (Repeat(BLOCK, 2), Sequential(BLOCK, BLOCK)):  # warm-up, not recorded: the
        compile_seconds(model)  # first trace of a layer type pays one-off Python/JAX costs
    rows = []
    for n in depths:
        for kind, model in (("repeat", Repeat(BLOCK, n)), ("unrolled", Sequential(*[BLOCK] * n))):
            times = [compile_seconds(model) for _ in range(args.repeats)]
            rows.append(
                {"depth": n, "kind": kind, "median_s": statistics.median(times), "times_s": times}
            )
            print(f"{kind:9s} depth {n:3d}: {statistics.median(times):7.2f} s  {times}")
    median = {(r["kind"], r["depth"]): r["median_s"] for r in rows}
    lo, hi = min(depths), max(depths)
    ratios = {kind: median[(kind, hi)] / median[(kind, lo)] for kind in ("repeat", "unrolled")}
    print(
        f"compile time {hi} layers / {lo} layers: "
        + ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items())
    )
    record = {
        "description": __doc__.split("\n\n")[1].replace("\n", " "),
        "environment": {
            **environment(),
            "cpu_count": os.cpu_count(),
            "load_before": load_before,
            "load_after": round(os.getloadavg()[0], 2),
        },
        "rows": rows,
        f"ratio_{hi}_over_{lo}": ratios,
        "acceptance_repeat_within_1_5x": ratios["repeat"] <= 1.5,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()

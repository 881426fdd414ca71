"""Compiled temp memory of a gradient step with and without rematerialization.

XLA's ``memory_analysis().temp_size_in_bytes`` of ``jax.jit(jax.grad(loss)).lower(...).compile()``
(a compile-time quantity: nothing is run or timed) for a deep residual MLP (16 blocks
512 -> 2048 -> 512, batch 256) in five forms: unrolled ``Sequential``; unrolled with each block
wrapped in ``Remat`` (nothing_saveable); ``Repeat`` (scan over stacked layers); ``Repeat`` with
``remat="nothing_saveable"`` and with ``remat="dots_saveable"``. On XLA:CPU the recomputation of
a ``Remat`` in an unrolled stack is scheduled early, so it saves little there; in a scan each
layer is recomputed in its own backward iteration and the saving shows.

Run ``python benchmarks/remat_memory.py``; it writes ``benchmarks/results/remat_memory.json``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from nn_jax.bench.environment import environment
from nn_jax.combinators import Residual, Sequential
from nn_jax.core import Layer
from nn_jax.dense import Dense
from nn_jax.remat import Remat
from nn_jax.repeat import Repeat

RESULTS = Path(__file__).parent / "results"
DEPTH, WIDTH, HIDDEN, BATCH = 16, 512, 2048, 256


def temp_bytes(model: Layer, x: jax.ShapeDtypeStruct) -> int:
    """XLA's compiled temp buffer size of the gradient of a squared-output loss."""
    params = jax.eval_shape(model.init, jax.random.key(0), x)[0]

    def loss(p: Any, x: jax.Array) -> jax.Array:
        return jnp.sum(model(p, x) ** 2)

    compiled = jax.jit(jax.grad(loss)).lower(params, x).compile()
    return int(compiled.memory_analysis().temp_size_in_bytes)


def main() -> None:
    block = Residual(Sequential(Dense(HIDDEN), jax.nn.gelu, Dense(WIDTH)))
    x = jax.ShapeDtypeStruct((BATCH, WIDTH), jnp.float32)
    models = {
        "unrolled": Sequential(*[block] * DEPTH),
        "unrolled, Remat(nothing_saveable) per block": Sequential(
            *[Remat(block, "nothing_saveable")] * DEPTH
        ),
        "Repeat": Repeat(block, DEPTH),
        "Repeat(remat='nothing_saveable')": Repeat(block, DEPTH, remat="nothing_saveable"),
        "Repeat(remat='dots_saveable')": Repeat(block, DEPTH, remat="dots_saveable"),
    }
    rows = {}
    for name, model in models.items():
        rows[name] = temp_bytes(model, x)
        print(f"{name:45s} {rows[name] / 2**20:9.2f} MiB")
    base = rows["unrolled"]
    record = {
        "description": __doc__.split("\n\n")[1].replace("\n", " "),
        "model": {"depth": DEPTH, "width": WIDTH, "hidden": HIDDEN, "batch": BATCH},
        "environment": {**environment(), "cpu_count": os.cpu_count()},
        "temp_bytes": rows,
        "ratio_to_unrolled": {name: base / v for name, v in rows.items()},
        "ratio_repeat_over_repeat_remat_nothing": rows["Repeat"]
        / rows["Repeat(remat='nothing_saveable')"],
    }
    out = RESULTS / "remat_memory.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()

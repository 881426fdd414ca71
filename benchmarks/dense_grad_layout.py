"""The weight gradient's GEMM orientation on XLA:CPU: ``nn_jax.dense.project`` against one
``dot_general``.

For each shape ``(rows, D, F)`` and dtype, two jitted gradient-descent steps on
``loss(w, x) = sum(tanh(x @ w) * g)`` with ``x: (rows, D)`` and ``w: (D, F)``, run interleaved
(``nn_jax.bench.timing.interleaved_rounds``), in two modes:

* ``w``: the gradient of ``w`` only (a first layer: its input needs none);
* ``w+x``: the gradients of ``w`` and ``x`` (a hidden layer).

``plain`` multiplies with ``jax.lax.dot_general(x, w)``, as raw JAX, Flax and Haiku do;
``project`` with ``nn_jax.dense.project``, which ``Dense`` uses: on CPU it takes the weight
gradient as ``(F, D)`` where ``w`` is float32, ``D >= 2 F`` and the product is large enough
(column ``branch``), and is ``plain`` elsewhere, so rows with ``branch = plain`` are an A/A
control of the run's noise. The ratio is the median of per-round ratios ``project / plain``,
with their quartiles.

Run ``python benchmarks/dense_grad_layout.py``; it writes
``benchmarks/results/dense_grad_layout.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nn_jax.bench.environment import environment
from nn_jax.bench.registry import Impl
from nn_jax.bench.timing import calibrate, interleaved_rounds, paired_quartiles, paired_ratio
from nn_jax.dense import project

RESULTS = Path(__file__).parent / "results"
# (rows, D, F, where it occurs)
SHAPES = (
    (2708, 1433, 16, "GCN layer 1 (Cora)"),
    (2708, 16, 7, "GCN layer 2 (Cora)"),
    (256, 784, 512, "MLP layer 1"),
    (256, 512, 512, "MLP layer 2"),
    (256, 512, 10, "MLP head"),
    (4096, 512, 128, "transformer MLP down-projection"),
    (4096, 128, 512, "transformer MLP up-projection"),
    (2708, 1433, 64, "GCN, 64 hidden"),
    (1024, 256, 1, "regression head"),
    (8, 32, 16, "seed network"),
)
MODES = ("w", "w+x")


def chooses_cpu_branch(rows: int, d: int, f: int, dtype: str) -> bool:
    """Whether ``project`` runs its CPU branch (a ``platform_dependent`` in its jaxpr)."""
    x, w = jax.ShapeDtypeStruct((rows, d), dtype), jax.ShapeDtypeStruct((d, f), dtype)
    return "platform_index" in str(jax.make_jaxpr(project)(x, w))


def step_impl(matmul: Callable[..., jax.Array], mode: str, arrays: tuple[Any, ...]) -> Impl:
    """A gradient-descent step on ``w`` (and ``x`` in mode ``w+x``) through ``matmul``."""
    w, x, g = arrays

    def loss(w: jax.Array, x: jax.Array) -> jax.Array:
        return jnp.sum(jnp.tanh(matmul(x, w)) * g)

    argnums = (0, 1) if mode == "w+x" else 0

    @jax.jit
    def step(w: jax.Array, x: jax.Array, _: Any) -> tuple[jax.Array, jax.Array, jax.Array]:
        value, grads = jax.value_and_grad(loss, argnums)(w, x)
        dw, dx = grads if mode == "w+x" else (grads, jnp.zeros_like(x))
        return w - 1e-6 * dw, x - 1e-6 * dx, value

    return Impl(step, (w, x), None)


def plain(x: jax.Array, w: jax.Array) -> jax.Array:
    """One ``dot_general``, as raw JAX, Flax and Haiku write ``x @ w``."""
    return jax.lax.dot_general(x, w, (((x.ndim - 1,), (0,)), ((), ())))


def measure(rows: int, d: int, f: int, dtype: str, mode: str, repeats: int) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    arrays = tuple(
        jnp.asarray(rng.standard_normal(shape, np.float32), dtype)
        for shape in ((d, f), (rows, d), (rows, f))
    )
    impls = {"plain": step_impl(plain, mode, arrays), "project": step_impl(project, mode, arrays)}
    inner = calibrate(impls["plain"], 0.05)
    times = interleaved_rounds(impls, inner, repeats)
    return {
        "plain_s": float(np.median(times["plain"])),
        "project_s": float(np.median(times["project"])),
        "ratio": paired_ratio(times["project"], times["plain"]),
        "quartiles": paired_quartiles(times["project"], times["plain"]),
    }


def markdown(record: dict[str, Any]) -> str:
    env = record["environment"]
    lines = [
        "# Weight-gradient GEMM orientation on XLA:CPU (`benchmarks/dense_grad_layout.py`)",
        "",
        record["description"],
        "",
        f"{env['platform']} ({env['device_kind']}), jax {env['jax']}, {env['cpu_count']} CPUs, "
        f"load average {env['load_before']} -> {env['load_after']}, {record['repeats']} rounds.",
        "",
        "| rows | D | F | where | dtype | grads | branch | plain | project | project / plain "
        "[quartiles] |",
        "|---:|---:|---:|---|---|---|---|---:|---:|---:|",
    ]
    for r in record["rows"]:
        q0, q1 = r["quartiles"]
        lines.append(
            f"| {r['rows']} | {r['d']} | {r['f']} | {r['where']} | {r['dtype']} | {r['mode']} | "
            f"{r['branch']} | {r['plain_s'] * 1e6:.1f} us | {r['project_s'] * 1e6:.1f} us | "
            f"{r['ratio']:.3f} [{q0:.2f}-{q1:.2f}] |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    load_before = round(os.getloadavg()[0], 2)
    rows = []
    for rows_, d, f, where in SHAPES:
        for dtype in args.dtypes.split(","):
            branch = "cpu" if chooses_cpu_branch(rows_, d, f, dtype) else "plain"
            for mode in MODES:
                r = measure(rows_, d, f, dtype, mode, args.repeats)
                row = {"rows": rows_, "d": d, "f": f, "where": where, "dtype": dtype}
                rows.append(row | {"mode": mode, "branch": branch} | r)
                print(
                    f"{rows_:5d} x {d:4d} -> {f:4d} {dtype:8s} {mode:3s} {branch:5s} "
                    f"plain {r['plain_s'] * 1e6:8.1f} us  project {r['project_s'] * 1e6:8.1f} us"
                    f"  ratio {r['ratio']:.3f} [{r['quartiles'][0]:.2f}-{r['quartiles'][1]:.2f}]",
                    flush=True,
                )
    env = environment()
    record = {
        "description": "\n\n".join(__doc__.split("\n\n")[1:4]),
        "environment": env
        | {
            "cpu_count": os.cpu_count(),
            "load_before": load_before,
            "load_after": round(os.getloadavg()[0], 2),
        },
        "repeats": args.repeats,
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "dense_grad_layout.json").write_text(json.dumps(record, indent=1) + "\n")
    (args.out / "dense_grad_layout.md").write_text(markdown(record))
    print(f"wrote {args.out / 'dense_grad_layout.json'}, {args.out / 'dense_grad_layout.md'}")


if __name__ == "__main__":
    main()

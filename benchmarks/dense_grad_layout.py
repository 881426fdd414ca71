"""The weight gradient's GEMM orientation on XLA:CPU, and where ``nn_jax.dense.project`` uses it.

For each shape ``(rows, D, F)`` and dtype, jitted gradient-descent steps on
``loss(w, x) = sum(tanh(x @ w) * g)`` with ``x: (rows, D)`` and ``w: (D, F)``, run interleaved
(``nn_jax.bench.timing.interleaved_rounds``), in two modes: ``w``, the gradient of ``w`` only
(a first layer: its input needs none), and ``w+x``, the gradients of ``w`` and ``x``.

* ``plain``: ``jax.lax.dot_general(x, w)``, as raw JAX, Flax and Haiku write ``x @ w``, whose
  weight gradient XLA computes ``(D, F)``-major;
* ``narrow``: the same product with the weight gradient computed ``(F, D)``-major and then
  transposed (``nn_jax.dense``'s custom JVP, forced for every shape and dtype);
* ``control``: ``plain`` built and timed a second time, the run's A/A noise.

Ratios are medians of per-round ratios to ``plain``, with their quartiles. The column
``project`` says which of the two ``nn_jax.dense.project`` (and so ``Dense``) runs on CPU for
that shape and dtype: ``narrow`` for float32 with ``2 <= F <= 32``, ``D >= 2 F`` and
``rows * D * F >= 2**18``.

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
from nn_jax.dense import project, project_narrow_major_grad

RESULTS = Path(__file__).parent / "results"
# (rows, D, F, where it occurs)
SHAPES = (
    (2708, 1433, 16, "GCN layer 1 (Cora)"),
    (2708, 16, 7, "GCN layer 2 (Cora)"),
    (256, 512, 10, "MLP head"),
    (128, 784, 120, "LeNet dense 1"),
    (256, 784, 512, "MLP layer 1"),
    (4096, 512, 128, "transformer MLP down-projection"),
    (2708, 1433, 64, "GCN, 64 hidden"),
    (512, 256, 32, "a 256 -> 32 bottleneck"),
    (1024, 256, 1, "regression head"),
)
MODES = ("w", "w+x")
VARIANTS = ("plain", "narrow", "control")


def plain(x: jax.Array, w: jax.Array) -> jax.Array:
    """One ``dot_general``, as raw JAX, Flax and Haiku write ``x @ w``."""
    return jax.lax.dot_general(x, w, (((x.ndim - 1,), (0,)), ((), ())))


def narrow(x: jax.Array, w: jax.Array) -> jax.Array:
    """``x @ w`` with the weight gradient computed ``(F, D)``-major on CPU, whatever the shape."""
    return project_narrow_major_grad(x, w, None)


def project_uses_narrow(rows: int, d: int, f: int, dtype: str) -> bool:
    """Whether ``project`` takes the narrow-major weight gradient (its custom JVP) here."""
    x, w = jax.ShapeDtypeStruct((rows, d), dtype), jax.ShapeDtypeStruct((d, f), dtype)
    return "custom_jvp_call" in str(jax.make_jaxpr(project)(x, w))


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


def measure(rows: int, d: int, f: int, dtype: str, mode: str, repeats: int) -> dict[str, Any]:
    """Median step time of each variant, and the paired ratios to ``plain``."""
    rng = np.random.default_rng(0)
    arrays = tuple(
        jnp.asarray(rng.standard_normal(shape, np.float32), dtype)
        for shape in ((d, f), (rows, d), (rows, f))
    )
    matmuls = {"plain": plain, "narrow": narrow, "control": plain}
    impls = {name: step_impl(matmuls[name], mode, arrays) for name in VARIANTS}
    times = interleaved_rounds(impls, calibrate(impls["plain"], 0.05), repeats)
    out: dict[str, Any] = {f"{name}_s": float(np.median(times[name])) for name in VARIANTS}
    for name in ("narrow", "control"):
        out[name] = paired_ratio(times[name], times["plain"])
        out[f"{name}_quartiles"] = paired_quartiles(times[name], times["plain"])
    return out


def _ratio(row: dict[str, Any], name: str) -> str:
    q0, q1 = row[f"{name}_quartiles"]
    return f"{row[name]:.3f} [{q0:.2f}-{q1:.2f}]"


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
        "| rows | D | F | where | dtype | grads | plain | narrow / plain [quartiles] | "
        "control / plain | project |",
        "|---:|---:|---:|---|---|---|---:|---:|---:|---|",
    ]
    for r in record["rows"]:
        lines.append(
            f"| {r['rows']} | {r['d']} | {r['f']} | {r['where']} | {r['dtype']} | {r['mode']} | "
            f"{r['plain_s'] * 1e6:.1f} us | {_ratio(r, 'narrow')} | {_ratio(r, 'control')} | "
            f"{r['project']} |"
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
    for n, d, f, where in SHAPES:
        for dtype in args.dtypes.split(","):
            chosen = "narrow" if project_uses_narrow(n, d, f, dtype) else "plain"
            for mode in MODES:
                r = measure(n, d, f, dtype, mode, args.repeats)
                row = {"rows": n, "d": d, "f": f, "where": where, "dtype": dtype, "mode": mode}
                rows.append(row | r | {"project": chosen})
                print(
                    f"{n:5d} x {d:4d} -> {f:4d} {dtype:8s} {mode:3s} plain "
                    f"{r['plain_s'] * 1e6:8.1f} us  narrow {_ratio(r, 'narrow')}  control "
                    f"{_ratio(r, 'control')}  project: {chosen}",
                    flush=True,
                )
    record = {
        "description": "\n\n".join(__doc__.split("\n\n")[1:4]),
        "environment": environment()
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

"""What ``fit`` costs over the bare jitted step, and what ``steps_per_dispatch`` buys.

Two workloads, each timed side by side with the bare step called in a Python loop (the
hand-written baseline) in the same run, interleaved over rounds:

* the seed network (10-32-16-1, batch 8): bound by Python dispatch, so ``fit`` with
  ``steps_per_dispatch=k`` runs k steps per call with ``lax.scan``;
* the benchmark suite's MLP (784-512-512-10, batch 256): bound by compute, so ``fit`` (one step
  per dispatch, default monitoring) should add next to nothing.

``fit``'s per-step time is measured between its second and last logged records (each log is a
device-to-host sync), so compiling is left out, as it is for the warmed-up bare loop.
Run ``python benchmarks/fit_overhead.py``; it writes ``benchmarks/results/fit_overhead.{json,md}``.
"""

from __future__ import annotations

import itertools
import json
import platform
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

import nn_jax as nn
from nn_jax.models import MLP, SimpleNetwork

RESULTS = Path(__file__).parent / "results"


def _bare_loop_seconds(step, carry, batches, n, window):
    """Seconds per step of ``carry = step(*carry, batch)`` in a Python loop (after warm-up),
    cycling through ``batches`` (device arrays, so the loop moves no data): the median over
    windows of ``window`` steps, each ending in a sync (as ``fit``'s logs do)."""
    out = step(*carry, batches[0])
    jax.block_until_ready(out)
    times = []
    for w in range(n // window):
        start = time.perf_counter()
        for i in range(w * window, (w + 1) * window):
            out = step(*out[:-1], batches[i % len(batches)])
        jax.block_until_ready(out)
        times.append((time.perf_counter() - start) / window)
    return statistics.median(times)


def _fit_seconds(model, loss, opt, data, batch_size, n, *, log_every, **kwargs):
    """Seconds per step of ``fit`` in steady state: the median over the windows between its
    logged records (each log reads the metrics back, a sync), the first (compiling) left out."""
    stamps = []

    def clock(ts, record):
        stamps.append((record["step"], time.perf_counter()))

    nn.fit(
        model,
        loss,
        opt,
        data,
        key=jax.random.key(0),
        steps=n,
        batch_size=batch_size,
        progress=False,
        log_every=log_every,
        callbacks=[clock],
        **kwargs,
    )
    return statistics.median(
        (t1 - t0) / (s1 - s0) for (s0, t0), (s1, t1) in itertools.pairwise(stamps)
    )


def seed_network(rounds: int, n: int) -> dict:
    model, loss, opt = SimpleNetwork(), nn.losses.binary_cross_entropy, optax.adam(0.01)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 10)).astype(np.float32)
    y = (rng.random((8, 1)) > 0.5).astype(np.float32)
    params, _ = model.init(jax.random.key(0), x)
    step = nn.make_train_step(model, loss, opt)
    batches = [(jnp.asarray(x), jnp.asarray(y))]
    variants = {f"fit, steps_per_dispatch={k}": {"steps_per_dispatch": k} for k in (1, 10, 100)}
    variants["fit, steps_per_dispatch=1000"] = {"steps_per_dispatch": 1000}
    variants["fit, steps_per_dispatch=1000, on_nonfinite='ignore'"] = {
        "steps_per_dispatch": 1000,
        "monitor": nn.Monitor(on_nonfinite="ignore"),  # no skip guard, as the bare step
    }
    rows: dict[str, list[float]] = {"bare step loop": []} | {name: [] for name in variants}
    for _ in range(rounds):
        rows["bare step loop"].append(
            _bare_loop_seconds(step, (params, opt.init(params)), batches, n, n // 10)
        )
        for name, options in variants.items():
            log_every = max(options["steps_per_dispatch"], n // 10)
            rows[name].append(
                _fit_seconds(model, loss, opt, (x, y), 8, 4 * n, log_every=log_every, **options)
            )
    return _summary(rows, "bare step loop")


def mlp(rounds: int, n: int) -> dict:
    model = MLP((512, 512, 10))
    loss, opt = nn.losses.softmax_cross_entropy_with_integer_labels, optax.adam(1e-3)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((256 * 8, 784)).astype(np.float32)
    y = rng.integers(0, 10, 256 * 8).astype(np.int32)
    ts = nn.TrainState.create(model, opt, jax.random.key(0), x[:256])
    step = nn.make_stateful_train_step(model, loss, opt)
    batches = [
        (jnp.asarray(x[i : i + 256]), jnp.asarray(y[i : i + 256])) for i in range(0, 2048, 256)
    ]

    def bare(ts, batch):
        ts, logs = step(ts, batch)
        return ts, logs["loss"]

    rows: dict[str, list[float]] = {"bare step loop": [], "fit (log_every=50)": []}
    for _ in range(rounds):
        rows["bare step loop"].append(_bare_loop_seconds(bare, (ts,), batches, n, 50))
        rows["fit (log_every=50)"].append(
            _fit_seconds(model, loss, opt, (x, y), 256, n, log_every=50)
        )
    return _summary(rows, "bare step loop")


def _summary(rows: dict[str, list[float]], baseline: str) -> dict:
    base = statistics.median(rows[baseline])
    return {
        name: {
            "us_per_step": round(1e6 * statistics.median(times), 1),
            "steps_per_second": round(1 / statistics.median(times)),
            "vs_bare": round(statistics.median(times) / base, 3),
        }
        for name, times in rows.items()
    }


def main() -> None:
    results = {
        "environment": {
            "jax": jax.__version__,
            "backend": jax.default_backend(),
            "device": str(jax.devices()[0]),
            "cpu_count": __import__("os").cpu_count(),
            "python": platform.python_version(),
        },
        "seed_network_10_32_16_1_batch_8": seed_network(rounds=5, n=2000),
        "mlp_784_512_512_10_batch_256": mlp(rounds=5, n=400),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "fit_overhead.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = ["# fit vs the bare jitted step", "", f"Environment: {results['environment']}", ""]
    for workload, rows in results.items():
        if workload == "environment":
            continue
        lines += [
            f"## {workload}",
            "",
            "| loop | us/step | steps/s | time vs bare step |",
            "|---|---:|---:|---:|",
        ]
        lines += [
            f"| {name} | {r['us_per_step']} | {r['steps_per_second']} | {r['vs_bare']} |"
            for name, r in rows.items()
        ]
        lines.append("")
    (RESULTS / "fit_overhead.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

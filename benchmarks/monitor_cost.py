"""What nn_jax's default step monitoring and a nested carry cost.

``python benchmarks/monitor_cost.py [--workloads ...] [--repeats N] [--out DIR]`` times, on the
suite's workloads and interleaved like the suite:

* ``jax``: the hand-written raw-JAX step (the suite's floor);
* ``nn_jax``: nn_jax's step as the suite runs it (``make_train_step``, or for models with
  state ``make_stateful_train_step(..., monitor=Monitor(grad_norm=False,
  on_nonfinite="ignore"))``): the same work as the raw step, dispatched as ``fit`` does
  (``nn_jax.flatten_step``: the carry a flat list of arrays between calls);
* ``nn_jax_pytree``: the same step called with the nested params/``TrainState`` every time, as a
  hand-written ``ts, logs = step(ts, batch)`` loop does;
* ``nn_jax_monitored``: ``make_stateful_train_step`` with the default ``Monitor()``, as ``fit``
  runs it: also the global gradient norm and a NaN/inf check of every gradient array (a sum of
  squares per array, small arrays of one shape reduced together), a step with a non-finite
  gradient skipped;
* ``jax_skip_loss``, ``jax_skip_update``: the raw-JAX step followed, in the same jitted function,
  by a skip of a non-finite step (``jnp.where(keep, new, old)`` over the carry: params,
  optimizer and layer state) with ``keep`` the loss's finiteness, or that and the finiteness of
  every updated array (the predicate then waits for all of the step's arrays, as the default
  ``Monitor()``'s does for every gradient): what that skip costs written by hand.

Each workload's ``nn_jax_pytree / jax`` against ``nn_jax / jax`` is the cost of the nested
carry at the jit boundary; ``nn_jax_monitored / jax`` against ``nn_jax / jax`` is the cost of
monitoring: on CPU it grows with the number of parameter arrays, not with their size (XLA
runs a kernel per reduction), so the ``overhead`` workload (400 tiny arrays) is the worst case.
It writes ``monitor_cost.json`` and ``monitor_cost.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from nn_jax.bench.environment import environment
from nn_jax.bench.frameworks import nn_jax_pytree_builder, nn_jax_stateful_impl
from nn_jax.bench.registry import Impl, Reference, Workload
from nn_jax.bench.report import write_study
from nn_jax.bench.runner import Options, Stdout, add_mfu, bench_workload
from nn_jax.bench.workloads import WORKLOADS

DEFAULT_WORKLOADS = ("seed", "mlp", "resnet", "transformer", "overhead")


def _all_finite(tree: Any) -> jax.Array:
    """Whether every floating-point array of ``tree`` is free of NaN and inf."""
    leaves = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)]
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def raw_skip(raw: Callable[[Reference], Impl], on: str) -> Callable[[Reference], Impl]:
    """The raw-JAX builder ``raw`` with a skip of non-finite steps inside its jitted step:
    ``keep`` is ``isfinite(loss)`` (``on="loss"``), and also every updated array finite
    (``on="update"``)."""

    def build(ref: Reference) -> Impl:
        impl = raw(ref)
        inner = impl.step

        @jax.jit
        def step(*args: Any) -> Any:
            *old, batch = args
            *new, loss = inner(*old, batch)
            keep = jnp.isfinite(loss)
            if on == "update":
                keep &= _all_finite(new)
            kept = jax.tree.map(lambda a, b: jnp.where(keep, a, b), new, old)
            return (*kept, loss)

        return dataclasses.replace(impl, step=step)

    return build


def workloads(names: Sequence[str]) -> dict[str, Workload]:
    """Each named suite workload with builders ``jax``, ``nn_jax``, ``nn_jax_pytree``,
    ``nn_jax_monitored``, ``jax_skip_loss`` and ``jax_skip_update``."""
    out = {}
    for name in names:
        suite = WORKLOADS[name]
        builders = {
            "jax": suite.builders["jax"],
            "nn_jax": suite.builders["nn_jax"],
            "nn_jax_pytree": nn_jax_pytree_builder,
            "nn_jax_monitored": nn_jax_stateful_impl,
            "jax_skip_loss": raw_skip(suite.builders["jax"], "loss"),
            "jax_skip_update": raw_skip(suite.builders["jax"], "update"),
        }
        out[name] = dataclasses.replace(suite, builders=builders)
    return out


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="benchmarks/monitor_cost.py", description=__doc__)
    parser.add_argument("--workloads", default=",".join(DEFAULT_WORKLOADS))
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--repeat-time", type=float, default=0.2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out"))
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    names = args.workloads.split(",")
    unknown = sorted(set(names) - set(WORKLOADS))
    if unknown:
        raise SystemExit(f"--workloads: unknown {unknown}; known {sorted(WORKLOADS)}")
    env = environment()
    records: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    for workload in workloads(names).values():
        options = Options(
            (workload.name,),
            ("float32",),
            tuple(workload.builders),
            repeats=args.repeats,
            repeat_time=args.repeat_time,
        )
        done, left_out = bench_workload(workload, "float32", options, Stdout())
        records += done
        skipped += left_out
    peak = {"float32": {"flops_per_s": None, "source": "not measured: step times only"}}
    add_mfu(records, peak)
    write_study(env, records, skipped, peak, args.out, "monitor_cost")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""What checked mode (``nn_jax.checked``) costs over the unchecked jitted train step.

nn_jax checks *values* - token ids against the vocabulary, labels against the class count, edge
indices, lengths, positions - eagerly on concrete inputs, and inside ``jit`` only in checked mode,
where ``nj.checked(step)`` compiles the checks into the program (``checkify``) and reads the error
back after every call. Outside checked mode a traced check emits nothing, so the unchecked step
is the program it was before the checks existed.

Two workloads of the benchmark suite (``nn_jax/bench/workloads``), timed side by side in the same
run, interleaved over rounds (round ``r`` starts at variant ``r mod n``):

* ``mlp``: ``MLP((512, 512, 10))`` on 784 inputs, batch 256, softmax cross-entropy with integer
  labels (checked: the labels), adam;
* ``transformer``: ``TransformerEncoder`` (2 layers, d 128, 4 heads) on 64 *token ids*, batch 32,
  mean pool -> 10 classes (checked: the token ids against the vocabulary, and the labels), adam.

Variants, all from the same parameters and batch:

* ``raw JAX``: the suite's hand-written step (the floor);
* ``nn_jax``: ``nn_jax.make_train_step`` (jitted, unchecked);
* ``nn_jax checked``: ``nj.checked(step)`` of the same step function - the checks in the program
  and the error read back to the host after every step (so steps no longer overlap dispatch);
* ``checks in program, no per-step read``: the same checked program (``checkify`` traced under
  ``nj.checking()``), its error read only at the end of each round: the cost of the checks'
  reductions alone.

Reported: median per-step times and the median of per-round ratios to the unchecked nn_jax step
(paired, so drift cancels), the first-call (compile) time of each variant, and a check that the
checked step does raise ``ValueRangeError`` on a bad label and a bad token id.

Run ``python benchmarks/checked_mode.py``; it writes ``benchmarks/results/checked_mode.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import checkify

import nn_jax as nj
from nn_jax.bench import frameworks as fw
from nn_jax.bench import timing
from nn_jax.bench.registry import Impl, Reference
from nn_jax.bench.workloads import WORKLOADS  # importing it registers every workload

RESULTS = Path(__file__).parent / "results"
BASELINE = "nn_jax"
LABELS = {
    "jax": "raw JAX (hand-written step)",
    "nn_jax": "nn_jax make_train_step (unchecked)",
    "checked": "nn_jax checked: nj.checked(step)",
    "checks_no_read": "checks in program, error read once per round",
}


def _step_fn(ref: Reference) -> Any:
    """The unjitted train step ``(params, opt_state, batch) -> (params, opt_state, loss)``, as
    ``make_train_step`` builds it (jitting it there would freeze an unchecked trace)."""
    model, loss_fn, opt = ref.model, ref.loss, ref.optimizer

    def step(params: Any, opt_state: Any, batch: Any) -> tuple[Any, Any, jax.Array]:
        x, y = batch

        def loss(p: Any) -> jax.Array:
            return loss_fn(model(p, x, train=True), y)

        value, grads = jax.value_and_grad(loss)(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    return step


def _checks_in_program(step: Any) -> Any:
    """The checked program without the per-step read: ``(*carry, (error, loss))``."""

    def traced(params: Any, opt_state: Any, batch: Any) -> Any:
        with nj.checking():
            return step(params, opt_state, batch)

    run = jax.jit(checkify.checkify(traced, errors=checkify.user_checks))

    def wrapped(params: Any, opt_state: Any, batch: Any) -> Any:
        error, (params, opt_state, loss) = run(params, opt_state, batch)
        return params, opt_state, (error, loss)

    return wrapped


def _impls(name: str) -> tuple[Reference, dict[str, Impl]]:
    workload = WORKLOADS[name]
    ref = workload.setup(workload.batch_size, "float32", jax.random.key(0))
    step = _step_fn(ref)
    carry = (ref.params, ref.optimizer.init(ref.params))
    impls = {
        "jax": workload.builders["jax"](ref),
        "nn_jax": fw.nn_jax_pytree_builder(ref),  # nested carry, like the checked steps
        "checked": Impl(nj.checked(step), carry, ref.batch),
        "checks_no_read": Impl(
            _checks_in_program(step),
            carry,
            ref.batch,
            to_float=lambda error_and_loss: float(error_and_loss[1]),
        ),
    }
    return ref, impls


def _program_cost(ref: Reference) -> dict[str, dict[str, float]]:
    """XLA's cost analysis of the compiled unchecked and checked programs (noise-free)."""
    step = _step_fn(ref)
    carry = (ref.params, ref.optimizer.init(ref.params))

    def traced(*args: Any) -> Any:
        with nj.checking():
            return step(*args)

    programs = {
        "unchecked": jax.jit(step),
        "checked": jax.jit(checkify.checkify(traced, errors=checkify.user_checks)),
    }
    out = {}
    for key, fn in programs.items():
        compiled = fn.lower(*carry, ref.batch).compile()
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        out[key] = {
            "flops": float(cost.get("flops", float("nan"))),
            "bytes_accessed": float(cost.get("bytes accessed", float("nan"))),
            "hlo_lines": len(compiled.as_text().splitlines()),
        }
    return out


def _bad_inputs_raise(ref: Reference) -> dict[str, str]:
    """The checked step on a bad label (and a bad token id): the messages it raises."""
    step = nj.checked(_step_fn(ref))
    carry = (ref.params, ref.optimizer.init(ref.params))
    x, y = ref.batch
    bad = {"label past the classes": (x, y.at[0].set(10_000))}
    if jnp.issubdtype(x.dtype, jnp.integer):
        bad["token id past the vocabulary"] = (x.at[0, 0].set(10_000), y)
    caught = {}
    for what, batch in bad.items():
        try:
            step(*carry, batch)
        except nj.ValueRangeError as error:
            caught[what] = str(error)
        else:
            raise AssertionError(f"checked step did not catch a {what}")
    return caught


def run_workload(name: str, rounds: int, repeat_time: float) -> dict[str, Any]:
    ref, impls = _impls(name)
    compile_s, losses = {}, {}
    for key, impl in impls.items():
        compile_s[key], losses[key] = timing.timed_first_call(impl)
    inner = timing.calibrate(impls[BASELINE], repeat_time)
    times = timing.interleaved_rounds(impls, inner, rounds)
    leftover = impls["checks_no_read"].run(1)[0].get()
    assert leftover is None, leftover
    rows = {
        LABELS[key]: {
            "us_per_step": round(1e6 * statistics.median(t), 1),
            "us_p25": round(1e6 * float(np.percentile(t, 25)), 1),
            "us_p75": round(1e6 * float(np.percentile(t, 75)), 1),
            "vs_unchecked": round(timing.paired_ratio(t, times[BASELINE]), 3),
            "vs_raw_jax": round(timing.paired_ratio(t, times["jax"]), 3),
            "first_call_s": round(compile_s[key], 2),
            "first_loss": losses[key],
            "step_times_s": t,
        }
        for key, t in times.items()
    }
    return {
        "description": WORKLOADS[name].description,
        "batch_size": ref.batch_size,
        "steps_per_round": inner,
        "rounds": rounds,
        "variants": rows,
        "program_cost": _program_cost(ref),
        "checked_step_raises": _bad_inputs_raise(ref),
    }


def _markdown(results: dict[str, Any]) -> str:
    env = results["environment"]
    lines = [
        "# Checked mode vs the unchecked step",
        "",
        f"Environment: jax {env['jax']}, {env['backend']} ({env['device']}), "
        f"{env['cpu_count']} CPU cores, load average {env['load_before']} -> "
        f"{env['load_after']}. Medians over interleaved rounds; ratios are medians of "
        "per-round ratios. On a shared, loaded machine single step times spread widely "
        "(see p25-p75): the paired ratios and XLA's program costs are the robust figures.",
        "",
    ]
    for name, r in results["workloads"].items():
        lines += [
            f"## {name}: {r['description']}, batch {r['batch_size']}",
            "",
            f"{r['rounds']} rounds of {r['steps_per_round']} steps per variant.",
            "",
            "| step | µs/step (p25-p75) | vs unchecked nn_jax | vs raw JAX | first call (s) |",
            "|---|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {label} | {v['us_per_step']} ({v['us_p25']}-{v['us_p75']}) | "
            f"{v['vs_unchecked']} | {v['vs_raw_jax']} | {v['first_call_s']} |"
            for label, v in r["variants"].items()
        ]
        cost = r["program_cost"]
        lines += ["", "Compiled programs (XLA cost analysis, unchecked -> checked):", ""]
        lines += [
            f"- {what}: {cost['unchecked'][key]:.4g} -> {cost['checked'][key]:.4g} "
            f"(+{cost['checked'][key] - cost['unchecked'][key]:.4g})"
            for key, what in (
                ("flops", "FLOPs"),
                ("bytes_accessed", "bytes accessed"),
                ("hlo_lines", "HLO lines"),
            )
        ]
        lines += ["", "The checked step raised:", ""]
        lines += [f"- {what}: `{msg}`" for what, msg in r["checked_step_raises"].items()]
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--repeat-time", type=float, default=0.25, help="seconds per round")
    parser.add_argument("--workloads", default="mlp,transformer")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--name", default="checked_mode")
    args = parser.parse_args()
    results: dict[str, Any] = {
        "environment": {
            "jax": jax.__version__,
            "backend": jax.default_backend(),
            "device": str(jax.devices()[0]),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "load_before": round(os.getloadavg()[0], 2),
        },
        "workloads": {},
    }
    for name in args.workloads.split(","):
        results["workloads"][name] = run_workload(name, args.rounds, args.repeat_time)
    results["environment"]["load_after"] = round(os.getloadavg()[0], 2)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(results, indent=2) + "\n")
    text = _markdown(results)
    (args.out / f"{args.name}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()

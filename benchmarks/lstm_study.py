"""What nn_jax can do about the LSTM's speed: hoisting the input projection, unrolling the scan.

``python benchmarks/lstm_study.py [--repeats N] [--out DIR] [--dtype float32]`` times, on the
``lstm`` workload (hidden 128, 40 steps, batch 64) and interleaved like the suite:

* ``jax``: raw JAX, input projection ``x_t @ w_i + b`` inside the scan (the suite's floor);
* ``jax_hoisted``: the projection for all steps before the scan (one matmul), handed to the scan
  as one ``(T, B, H)`` array per gate;
* ``jax_fused``: hoisted, handed to the scan as one ``(T, B, 4H)`` array split inside;
* ``jax_unroll{k}``: the floor with ``jax.lax.scan(..., unroll=k)``;
* ``nn_jax``: ``RNNClassifier`` as in the suite (``RNN`` defaults);
* ``nn_jax_hoisted``, ``nn_jax_unroll{k}``: the same network as ``Sequential(RNN(LSTMCell(128),
  return_sequences=False, ...), Dense(10))`` with ``hoist_input_projection=True`` or
  ``unroll=k``: nn_jax's own knobs;
* ``torch``: PyTorch's ``nn.LSTM`` (when installed), for reference.

It writes ``lstm_study.json`` and ``lstm_study.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax

from nn_jax.bench.environment import environment
from nn_jax.bench.frameworks import nn_jax_builder
from nn_jax.bench.registry import Impl, Reference
from nn_jax.bench.report import markdown, text_table
from nn_jax.bench.runner import DTYPES, Options, Stdout, add_mfu, bench_workload
from nn_jax.bench.timing import Peaks
from nn_jax.bench.workloads import WORKLOADS
from nn_jax.bench.workloads.recurrent import lstm_jax_impl

UNROLLS = (2, 4, 8, 40)


def _nn_jax_variant(**rnn_options: Any) -> Any:
    def build(ref: Reference) -> Impl:
        from nn_jax.combinators import Sequential
        from nn_jax.dense import Dense
        from nn_jax.recurrent import RNN, LSTMCell

        rnn = RNN(LSTMCell(ref.model.hidden), return_sequences=False, **rnn_options)
        model = Sequential(rnn, Dense(ref.model.num_classes))
        params = {"0": ref.params["rnn"]["0"], "1": ref.params["head"]}
        return nn_jax_builder(dataclasses.replace(ref, model=model, params=params))

    return build


def variants() -> dict[str, Any]:
    """Builder per variant name (see the module docstring)."""
    lstm = WORKLOADS["lstm"]
    out: dict[str, Any] = {
        "nn_jax": lstm.builders["nn_jax"],
        "jax": lstm.builders["jax"],
        "nn_jax_hoisted": _nn_jax_variant(hoist_input_projection=True),
        "jax_hoisted": lambda ref: lstm_jax_impl(ref, hoist="gates"),
        "jax_fused": lambda ref: lstm_jax_impl(ref, hoist="fused"),
    }
    for k in UNROLLS:
        out[f"nn_jax_unroll{k}"] = _nn_jax_variant(unroll=k)
        out[f"jax_unroll{k}"] = lambda ref, k=k: lstm_jax_impl(ref, unroll=k)
    out["torch"] = lstm.builders["torch"]
    return out


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="benchmarks/lstm_study.py", description=__doc__)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--repeat-time", type=float, default=0.2)
    parser.add_argument("--dtype", choices=DTYPES, default="float32")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out"))
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    builders = variants()
    workload = dataclasses.replace(WORKLOADS["lstm"], name="lstm_study", builders=builders)
    options = Options(
        (workload.name,),
        (args.dtype,),
        tuple(builders),
        repeats=args.repeats,
        repeat_time=args.repeat_time,
    )
    env = environment()
    records, skipped = bench_workload(workload, args.dtype, options, Stdout())
    peaks = Peaks(jax.devices()[0])
    peaks.measure((args.dtype,))
    peak = {args.dtype: peaks.peak(args.dtype)}
    add_mfu(records, peak)
    env["load_average_end"] = list(os.getloadavg())
    report = {
        "meta": env,
        "peaks": peak,
        "results": records,
        "skipped": skipped,
        "unavailable_families": {},
        "targets": [],
    }
    print(text_table(report))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "lstm_study.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.out / "lstm_study.md").write_text(markdown(report))
    print(f"wrote {args.out / 'lstm_study.json'}, {args.out / 'lstm_study.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""What nn_jax can do about the LSTM's speed: hoisting the input projection, unrolling the scan.

``python benchmarks/lstm_study.py [--repeats N] [--out DIR] [--dtype float32] [--sections ...]``
times, on the ``lstm`` workload (hidden 128, 40 steps, batch 64) and interleaved like the suite:

* ``jax``: raw JAX, input projection ``x_t @ w_i + b`` inside the scan (the suite's floor);
* ``jax_hoisted``: the projection for all steps before the scan (one matmul), handed to the scan
  as one ``(T, B, H)`` array per gate;
* ``jax_fused``: hoisted, handed to the scan as one ``(T, B, 4H)`` array split inside (what
  nn_jax's ``hoist_input_projection=True`` does);
* ``jax_unroll{k}``: the floor with ``jax.lax.scan(..., unroll=k)``;
* ``nn_jax``: ``RNNClassifier`` as in the suite (``RNN`` defaults);
* ``nn_jax_hoisted``, ``nn_jax_unroll{k}``: the same network as ``Sequential(RNN(LSTMCell(128),
  return_sequences=False, ...), Dense(10))`` with ``hoist_input_projection=True`` or
  ``unroll=k``: nn_jax's own knobs;
* ``torch``: PyTorch's ``nn.LSTM`` (when installed), for reference.

A second section, ``gru_study``, runs the same network with a GRU cell
(``RNNClassifier(cell="gru")``, same batch and optimizer) against a hand-written raw-JAX GRU scan
from the same parameters (``jax``): the check that nn_jax's ``GRUCell`` costs nothing either.
``--sections lstm,gru`` picks the sections (default both).

It writes ``lstm_study.json`` and ``lstm_study.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from nn_jax.bench import frameworks as fw
from nn_jax.bench.environment import environment
from nn_jax.bench.frameworks import nn_jax_builder
from nn_jax.bench.registry import Impl, Reference, Workload
from nn_jax.bench.report import write_study
from nn_jax.bench.runner import DTYPES, Options, Stdout, add_mfu, bench_workload
from nn_jax.bench.timing import Peaks
from nn_jax.bench.workloads import WORKLOADS
from nn_jax.bench.workloads.recurrent import LR, lstm_jax_impl

UNROLLS = (2, 4, 8, 40)
SECTIONS = ("lstm", "gru")


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


def gru_last_hidden(p: dict[str, jax.Array], x: jax.Array) -> jax.Array:
    """Raw-JAX GRU (``[r | z | n]``, reset after ``w_h`` as nn_jax's ``GRUCell``) over
    ``x: (B, T, F)``, the input projection inside the scan; returns the last ``h: (B, H)``."""

    def body(h: jax.Array, x_t: jax.Array) -> tuple[jax.Array, None]:
        x_r, x_z, x_n = jnp.split(x_t @ p["w_i"] + p["b"][None, :], 3, axis=-1)
        h_r, h_z, h_n = jnp.split(h @ p["w_h"], 3, axis=-1)
        r, z = jax.nn.sigmoid(x_r + h_r), jax.nn.sigmoid(x_z + h_z)
        n = jnp.tanh(x_n + r * (h_n + p["b_hn"][None, :]))
        return (1 - z) * n + z * h, None

    zeros = jnp.zeros((x.shape[0], p["w_h"].shape[0]), x.dtype)
    h, _ = jax.lax.scan(body, zeros, jnp.swapaxes(x, 0, 1))
    return h


def _gru_setup(batch_size: int, dtype: str, key: jax.Array) -> Reference:
    """The ``lstm`` workload's batch, network and optimizer with a GRU cell."""
    lstm = WORKLOADS["lstm"].setup(batch_size, dtype, key)
    model = dataclasses.replace(lstm.model, cell="gru")
    return fw.make_reference(model, lstm.batch, key, dtype, lr=LR)


def _gru_jax(ref: Reference) -> Impl:
    rnn, head = ref.params["rnn"], ref.params["head"]
    p = {name: fw.leaf(rnn, name) for name in ("w_i", "w_h", "b", "b_hn")}
    p |= {"w_o": fw.leaf(head, "w"), "b_o": fw.leaf(head, "b")}

    def loss_fn(p: dict[str, jax.Array], batch: Any) -> jax.Array:
        x, labels = batch
        return fw.cross_entropy(gru_last_hidden(p, x) @ p["w_o"] + p["b_o"][None, :], labels)

    return fw.functional_impl(loss_fn, p, ref)


def workloads() -> dict[str, Workload]:
    """The study's sections as workloads: ``lstm`` (:func:`variants`) and ``gru``."""
    lstm = WORKLOADS["lstm"]
    return {
        "lstm": dataclasses.replace(lstm, name="lstm_study", builders=variants()),
        "gru": dataclasses.replace(
            lstm,
            name="gru_study",
            description="the lstm workload with a GRU cell (hidden 128)",
            setup=_gru_setup,
            builders={"nn_jax": nn_jax_builder, "jax": _gru_jax},
            analytic_flops=None,
        ),
    }


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="benchmarks/lstm_study.py", description=__doc__)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--repeat-time", type=float, default=0.2)
    parser.add_argument("--dtype", choices=DTYPES, default="float32")
    parser.add_argument(
        "--sections", default=",".join(SECTIONS), help=f"comma-separated, of {SECTIONS}"
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out"))
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    sections = args.sections.split(",")
    if not set(sections) <= set(SECTIONS):
        raise SystemExit(f"--sections: give some of {SECTIONS}, given {args.sections!r}")
    env = environment()
    records: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    study = workloads()
    for workload in (study[section] for section in sections):
        options = Options(
            (workload.name,),
            (args.dtype,),
            tuple(workload.builders),
            repeats=args.repeats,
            repeat_time=args.repeat_time,
        )
        done, left_out = bench_workload(workload, args.dtype, options, Stdout())
        records += done
        skipped += left_out
    peaks = Peaks(jax.devices()[0])
    peaks.measure((args.dtype,))
    peak = {args.dtype: peaks.peak(args.dtype)}
    add_mfu(records, peak)
    write_study(env, records, skipped, peak, args.out, "lstm_study")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

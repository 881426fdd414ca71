"""Compare two frameworks' compiled steps: ``python benchmarks/hlo_diff.py gcn [nn_jax jax]``.

For one workload it compiles both steps (``jit(step).lower(...).compile()``) and prints XLA's
FLOP and bytes-accessed counts, the argument pytree sizes, and the optimized-HLO instructions
whose counts differ: the first thing to look at when one step is slower than the other. Then
the top-level instructions of the two entry computations (what runs, one kernel each: fusions
by kind, dots, copies) whose counts differ, keyed by shape and the JAX operation that made
them (e.g. ``kLoop f32[32,4,1,64,64] transpose``: an extra copy of attention logits). With
``--dump DIR`` it also writes both optimized HLO modules (``DIR/<workload>_<framework>.hlo``).
"""

from __future__ import annotations

import argparse
import collections
import itertools
import re
from collections.abc import Sequence
from pathlib import Path

import jax

from nn_jax.bench import flops
from nn_jax.bench.runner import DTYPES
from nn_jax.bench.workloads import WORKLOADS

_OP = re.compile(r"= \S+ ([a-z][\w-]*)\(")
_TOP = re.compile(r"^\s*%\S+ = (\S+?)(?:\{[\d,]*\})? ([a-z][\w-]*)\(")
_KIND = re.compile(r"kind=(\w+)")
_JAX_OP = re.compile(r'op_name="[^"]*?/([^"/]+)"')
_NOT_RUN = {"parameter", "constant", "bitcast", "tuple", "get-tuple-element"}


def op_histogram(hlo_text: str) -> collections.Counter[str]:
    """How often each HLO opcode occurs in an HLO module's text (fused computations included)."""
    return collections.Counter(m.group(1) for m in map(_OP.search, hlo_text.splitlines()) if m)


def entry_ops(hlo_text: str) -> collections.Counter[tuple[str, str, str]]:
    """``(what, shape, JAX operation)`` of each instruction the entry computation runs: a
    fusion by its kind (``kLoop``, ``ynn`` for the CPU's YNNPACK ones, ...), else the opcode;
    the last name of the JAX operation in its metadata, so framework scopes do not differ."""
    lines = hlo_text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("ENTRY"))
    ops: collections.Counter[tuple[str, str, str]] = collections.Counter()
    for line in itertools.takewhile(lambda line: not line.startswith("}"), lines[start + 1 :]):
        m = _TOP.match(line)
        if not m or m.group(2) in _NOT_RUN:
            continue
        what = m.group(2)
        if what == "fusion":
            kind = _KIND.search(line)
            what = "ynn" if '"__ynn_fusion"' in line else kind.group(1) if kind else what
        op = _JAX_OP.search(line)
        ops[what, m.group(1), op.group(1) if op else ""] += 1
    return ops


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/hlo_diff.py", description=__doc__)
    parser.add_argument("workload", choices=tuple(WORKLOADS))
    parser.add_argument("frameworks", nargs="*", default=["nn_jax", "jax"])
    parser.add_argument("--dtype", choices=DTYPES, default="float32")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--dump", type=Path, help="write both optimized HLO modules here")
    args = parser.parse_args(argv)
    if len(args.frameworks) != 2:
        parser.error(f"give two frameworks, given {args.frameworks}")
    workload = WORKLOADS[args.workload]
    ref = workload.setup(args.batch_size or workload.batch_size, args.dtype, jax.random.key(0))
    texts, hists, entries = {}, {}, {}
    for fw in args.frameworks:
        impl = workload.builders[fw](ref)
        compiled = impl.step.lower(*impl.carry, impl.batch).compile()
        cost = flops.cost_analysis(compiled)
        texts[fw] = compiled.as_text()
        hists[fw] = op_histogram(texts[fw])
        entries[fw] = entry_ops(texts[fw])
        leaves = len(jax.tree.leaves((impl.carry, impl.batch)))
        print(
            f"{fw:>16}: {cost.get('flops', 0):.4g} FLOPs, {cost.get('bytes accessed', 0):.4g} "
            f"bytes accessed, {sum(hists[fw].values())} HLO instructions, {leaves} argument leaves"
        )
        if args.dump:
            args.dump.mkdir(parents=True, exist_ok=True)
            (args.dump / f"{args.workload}_{fw}.hlo").write_text(texts[fw])
    a, b = (hists[fw] for fw in args.frameworks)
    for op in sorted(set(a) | set(b)):
        if a[op] != b[op]:
            print(f"{op:>24}: {a[op]:5d} vs {b[op]:5d}")
    ea, eb = (entries[fw] for fw in args.frameworks)
    print(f"entry computation: {ea.total()} vs {eb.total()} instructions run; those that differ:")
    for key in sorted(set(ea) | set(eb)):
        if ea[key] != eb[key]:
            print(f"{' '.join(key):>56}: {ea[key]:5d} vs {eb[key]:5d}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The ``nn-jax`` command line: ``nn-jax <command> ...``.

Commands are argparse subparsers; each registers its flags and sets ``run(args) -> int``.

* ``nn-jax train`` - train an MLP on the bundled digits (:func:`nn_jax.jobs.train_digits`).
* ``nn-jax bench`` - the benchmark suite (:mod:`nn_jax.bench`, imported only for this command).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence


def _add_bench_parser(subparsers: argparse._SubParsersAction) -> None:
    from nn_jax.bench.cli import add_arguments, run_cli

    parser = subparsers.add_parser(
        "bench",
        help="run the benchmark suite (step time, FLOPs, MFU vs. raw JAX and other frameworks)",
        description="Benchmark nn_jax training steps against the same steps in raw JAX, Flax, "
        "Equinox, Haiku and PyTorch (those installed).",
    )
    add_arguments(parser)
    parser.set_defaults(run=run_cli)


def _add_train_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train an MLP on scikit-learn's bundled digits and report test accuracy",
        description="Train MLP(256, 128, 10) with Adam on the 8x8 digits (no download); "
        "saves a loss curve PNG and result.json in --out.",
    )
    parser.add_argument("--out", default="runs/digits", help="output folder (default: %(default)s)")
    parser.add_argument("--epochs", type=_positive_int, default=40)
    parser.add_argument("--batch-size", type=_positive_int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    def run(args: argparse.Namespace) -> int:
        from nn_jax.jobs import print_result, train_digits

        result = train_digits(
            args.out,
            epochs=args.epochs,
            batch_size=args.batch_size,
            seed=args.seed,
            progress=not args.no_progress,
        )
        print_result(result)
        return 0

    parser.set_defaults(run=run)


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, given {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The ``nn-jax`` parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="nn-jax", description="nn_jax command line tools")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_train_parser(subparsers)
    _add_bench_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``nn-jax`` script: parse ``argv`` and run the chosen command."""
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    raise SystemExit(main())

__all__ = ["build_parser", "main"]

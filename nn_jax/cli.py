"""The ``nn-jax`` command line: ``nn-jax <command> ...``.

Commands are argparse subparsers; each registers its flags and sets ``run(args) -> int``.

* ``nn-jax train [MODEL] [--dataset NAME] [--mesh data=2,fsdp=4]`` - train a recipe of
  :mod:`nn_jax.jobs.recipes` into a run folder (default ``runs/<model>-<dataset>``), on a
  device mesh with ``--mesh``; resumes when the folder holds a checkpoint. Bare
  ``nn-jax train`` is ``nn-jax train mlp --dataset digits``.
* ``nn-jax eval DIR`` - the test metrics of a run folder, from its config.json and checkpoint.
* ``nn-jax summary MODEL --dataset NAME`` - the model's layer table on the dataset's inputs.
* ``nn-jax reproduce mnist1d [--quick]`` - the MNIST-1D paper's models, ours vs. the paper's.
* ``nn-jax bench`` - the benchmark suite (:mod:`nn_jax.bench`, imported only for this command).

Every error a user can cause (a bad flag or value, an unknown model, an output path that is a
file, a damaged run folder or checkpoint, an :class:`~nn_jax.errors.NNJaxError` raised by a
command, an ``OSError`` such as a full disk) prints one line, ``nn-jax: error: ...``, on stderr
and exits with status 2; never a traceback.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from nn_jax.errors import NNJaxError
from nn_jax.jobs.recipes import DATASETS, MODELS, RECIPES


class _Parser(argparse.ArgumentParser):
    """argparse, with errors on one line: ``nn-jax: error: <message> (see nn-jax train -h)``."""

    def error(self, message: str) -> NoReturn:
        _fail(f"{message} (see {self.prog} -h)")


def _fail(message: str) -> NoReturn:
    one_line = " ".join(str(message).split())
    sys.stderr.write(f"nn-jax: error: {one_line}\n")
    raise SystemExit(2)


# Counts (steps, epochs, batch sizes) fit JAX's int32 step counter; seeds, a uint32.
_MAX_COUNT = 2**31 - 1
_MAX_SEED = 2**32 - 1
_MAX_SEEDS = 1000


def _int(text: str, low: int, high: int, expected: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, given {text[:40]!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"expected {expected}, given {value}")
    if value > high:
        raise argparse.ArgumentTypeError(f"expected {expected} up to {high}, given {value}")
    return value


def _positive_int(text: str) -> int:
    return _int(text, 1, _MAX_COUNT, "a positive integer")


def _seed(text: str) -> int:
    return _int(text, 0, _MAX_SEED, "an integer >= 0")


def _seed_count(text: str) -> int:
    return _int(text, 1, _MAX_SEEDS, "a positive integer")


def _folder(text: str) -> str:
    """A folder path: not empty, no NUL byte (the OS refuses those)."""
    if not text.strip() or "\x00" in text:
        raise argparse.ArgumentTypeError(f"expected a folder path, given {text[:40]!r}")
    return text


def _mesh(text: str) -> str:
    """A mesh written ``data=2,fsdp=4`` (checked by :func:`nn_jax.parallel.parse_mesh`)."""
    from nn_jax.parallel import parse_mesh

    try:
        parse_mesh(text)
    except NNJaxError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a positive number, given {text[:40]!r}"
        ) from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number, given {text}")
    return value


# --------------------------------------------------------------------------------------------
# Commands.


def _add_train_parser(subparsers: Any) -> None:
    recipes = "\n".join(
        f"  {r.model:<12} --dataset {r.dataset:<8} {r.epochs:>4} epochs, lr {r.learning_rate:g}, "
        f"batch {r.batch_size if not r.full_batch else 'whole graph'}: {r.notes}"
        for r in RECIPES
    )
    parser = subparsers.add_parser(
        "train",
        help="train a zoo model on an offline dataset into a resumable run folder",
        description="Train MODEL on --dataset with Adam, validating on a seeded 10%% of the "
        "training set; writes config.json (first), checkpoints/, history.jsonl, curves.png and "
        "result.json in --out, and prints the test result. Run it again with the same --out to "
        "resume from the latest checkpoint up to the requested total of epochs or steps.",
        epilog=f"recipes (MODEL, dataset, defaults):\n{recipes}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "model", nargs="?", default="mlp", choices=MODELS, metavar="MODEL",
        help=f"one of {', '.join(MODELS)} (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--dataset", default=None, choices=DATASETS, metavar="NAME",
        help=f"one of {', '.join(DATASETS)} (default: digits for mlp, else the model's only one)",
    )  # fmt: skip
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=_positive_int, help="total epochs (default: the recipe's)")
    length.add_argument("--steps", type=_positive_int, help="total optimizer steps instead")
    parser.add_argument("--lr", type=_positive_float, help="Adam's learning rate")
    parser.add_argument("--batch-size", type=_positive_int, help="examples per step")
    parser.add_argument("--seed", type=_seed, default=0, help="init, shuffles, split")
    parser.add_argument(
        "--val-every", type=_positive_int, help="validate and checkpoint every N steps"
    )
    parser.add_argument("--out", type=_folder, help="run folder (default: runs/<model>-<dataset>)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument(
        "--mesh", type=_mesh, metavar="AXES",
        help="train on a device mesh, e.g. data=2,fsdp=4 (axes data, fsdp, tensor; the sizes "
        "multiply to the device count): batches split over data x fsdp, params sharded as "
        "nn_jax.parallel.mesh_rules decides",
    )  # fmt: skip

    def run(args: argparse.Namespace) -> int:
        from nn_jax.jobs.runs import TrainOptions, check_out_dir, train_run

        dataset = args.dataset or _default_dataset(args.model)
        out = args.out or f"runs/{args.model}-{dataset}"
        from nn_jax.jobs.recipes import find_recipe

        find_recipe(args.model, dataset)
        check_out_dir(out)
        options = TrainOptions(
            epochs=args.epochs,
            steps=args.steps,
            learning_rate=args.lr,
            batch_size=args.batch_size,
            seed=args.seed,
            val_every=args.val_every,
            progress=not args.no_progress,
            mesh=args.mesh,
        )
        print(train_run(args.model, dataset, out, options)["line"])
        return 0

    parser.set_defaults(run=run)


def _default_dataset(model: str) -> str:
    datasets = [r.dataset for r in RECIPES if r.model == model]
    return "digits" if "digits" in datasets else datasets[0]


def _add_eval_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="print the test metrics of a run folder (from its config.json and checkpoint)",
        description="Rebuild the model of a run folder from config.json, restore its latest "
        "checkpoint and print the test metrics, as `nn-jax train` printed them.",
    )
    parser.add_argument(
        "dir", metavar="DIR", type=_folder, help="a run folder written by nn-jax train"
    )

    def run(args: argparse.Namespace) -> int:
        from nn_jax.jobs.runs import evaluate_run

        print(evaluate_run(args.dir)["line"])
        return 0

    parser.set_defaults(run=run)


def _add_summary_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "summary",
        help="print a recipe's model as a table of layers, shapes and parameter counts",
        description="nn_jax.inspect.summary of MODEL on one batch of --dataset's inputs.",
    )
    parser.add_argument("model", choices=MODELS, metavar="MODEL", help=", ".join(MODELS))
    parser.add_argument(
        "--dataset", default=None, choices=DATASETS, metavar="NAME",
        help=f"one of {', '.join(DATASETS)} (default: as for train)",
    )  # fmt: skip
    parser.add_argument("--batch-size", type=_positive_int, help="rows of the example batch")

    def run(args: argparse.Namespace) -> int:
        from nn_jax.jobs.runs import model_summary

        dataset = args.dataset or _default_dataset(args.model)
        print(model_summary(args.model, dataset, args.batch_size))
        return 0

    parser.set_defaults(run=run)


def _add_reproduce_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "reproduce",
        help="reproduce a paper's table (mnist1d: the MNIST-1D paper's models)",
        description="Train the MNIST-1D paper's models with its recipe and print our test "
        "accuracy next to the paper's.",
    )
    parser.add_argument("benchmark", choices=("mnist1d",), metavar="BENCHMARK", help="mnist1d")
    parser.add_argument(
        "--quick", action="store_true", help="1,500 steps, one seed (a smoke test, about 20 s)"
    )
    parser.add_argument("--steps", type=_positive_int, help="training steps per model and seed")
    parser.add_argument(
        "--seeds",
        type=_seed_count,
        default=3,
        help=f"runs per model (seeds 0..N-1, N <= {_MAX_SEEDS}; default 3)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")

    def run(args: argparse.Namespace) -> int:
        from nn_jax.jobs.reproduce import QUICK, format_table, reproduce_mnist1d

        options = dict(QUICK) if args.quick else {"seeds": tuple(range(args.seeds))}
        if args.steps is not None:
            options["steps"] = args.steps
        print(format_table(reproduce_mnist1d(**options, progress=not args.no_progress)))
        return 0

    parser.set_defaults(run=run)


def _add_bench_parser(subparsers: Any) -> None:
    from nn_jax.bench.cli import add_arguments, run_cli

    parser = subparsers.add_parser(
        "bench",
        help="run the benchmark suite (step time, FLOPs, MFU vs. raw JAX and other frameworks)",
        description="Benchmark nn_jax training steps against the same steps in raw JAX, Flax, "
        "Equinox, Haiku and PyTorch (those installed).",
    )
    add_arguments(parser)
    parser.set_defaults(run=run_cli)


def build_parser() -> argparse.ArgumentParser:
    """The ``nn-jax`` parser with every subcommand."""
    from nn_jax.jobs.runs import version

    parser = _Parser(prog="nn-jax", description="nn_jax command line tools")
    parser.add_argument("--version", action="version", version=f"nn-jax {version()}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_train_parser(subparsers)
    _add_eval_parser(subparsers)
    _add_summary_parser(subparsers)
    _add_reproduce_parser(subparsers)
    _add_bench_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``nn-jax`` script: parse ``argv`` and run the chosen command.

    Returns the exit status; a user error prints one line and raises ``SystemExit(2)``.
    """
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except NNJaxError as e:
        _fail(str(e))
    except OSError as e:  # the disk is full, a folder became read-only, ...
        _fail(f"{type(e).__name__}: {e}")
    except KeyboardInterrupt:
        sys.stderr.write("nn-jax: interrupted; run the same command again to resume\n")
        return 130


if __name__ == "__main__":
    raise SystemExit(main())

__all__ = ["build_parser", "main"]

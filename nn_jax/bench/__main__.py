"""``python -m nn_jax.bench``: run the benchmark suite (the same flags as ``nn-jax bench``)."""

from nn_jax.bench.cli import main

raise SystemExit(main())

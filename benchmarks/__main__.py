"""``python -m benchmarks``: run the nn_jax benchmark suite (the same flags as ``nn-jax bench``)."""

from benchmarks.suite import main

raise SystemExit(main())

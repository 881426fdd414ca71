"""The nn_jax benchmark suite: ``nn-jax bench`` or ``python -m nn_jax.bench``.

Modules, by concern (none is imported by ``import nn_jax``; the optional frameworks - Flax,
Equinox, Haiku, PyTorch - only inside the builders that use them):

* :mod:`~nn_jax.bench.cli` - the command line's flags and entry point;
* :mod:`~nn_jax.bench.registry` - :class:`~nn_jax.bench.registry.Workload`,
  :class:`~nn_jax.bench.registry.Reference`, :class:`~nn_jax.bench.registry.Impl` and the
  registry; :mod:`~nn_jax.bench.workloads` - one module of models per workload family;
* :mod:`~nn_jax.bench.frameworks` - the glue every workload shares (each framework's training
  step, losses, parameter mapping);
* :mod:`~nn_jax.bench.runner` - building, timing and checking every framework's step;
  :mod:`~nn_jax.bench.timing` - the timing method and device peaks;
  :mod:`~nn_jax.bench.environment` - device, versions and host;
  :mod:`~nn_jax.bench.flops` - XLA's FLOP count corrected for scans, analytic counts;
* :mod:`~nn_jax.bench.report` and :mod:`~nn_jax.bench.plot` - terminal, JSON, markdown, PNG.

The repository's ``benchmarks/`` folder holds the recorded results and study scripts.
"""

__all__: list[str] = []

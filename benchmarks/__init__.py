"""The nn_jax benchmark suite: ``nn-jax bench`` or ``python -m benchmarks`` (see README.md).

Modules: :mod:`benchmarks.suite` (runner, timing, reports), :mod:`benchmarks.flops` (XLA cost
analysis corrected for scans, analytic FLOPs, device peaks) and :mod:`benchmarks.workloads`
(the workload registry and one module per workload family).
"""

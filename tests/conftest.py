"""Strict JAX settings for the whole suite: bugs must not hide in broadcasting or promotion.

Compiled programs are also cached on disk (JAX's persistent compilation cache), shared by the
xdist workers: many tests compile the same step (a fit resumed, a model trained twice), and
compiling is most of the suite's time on CPU. Only programs that took 0.2 s or more to compile
are written (the thousands of tiny ones would cost more to write than to compile again). The
cache key is the program and the JAX version, so a stale entry is never used.
"""

import getpass
import os
import tempfile
from pathlib import Path

import jax

os.environ.setdefault("MPLBACKEND", "Agg")
jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update(
    "jax_compilation_cache_dir",
    str(Path(tempfile.gettempdir()) / f"nn_jax_tests_jax_cache_{getpass.getuser()}"),
)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

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

# Hypothesis profiles for the property-based tests (tests/test_properties.py documents them):
# "ci" (derandomized: the same few examples on every run) when the CI environment variable is
# set, else "dev" (random, four times as many, failures remembered under the temp dir);
# NN_JAX_HYPOTHESIS_PROFILE=ci|dev|deep overrides the choice ("deep": twenty times as many, for
# a long run by hand). Hypothesis is a dev dependency: without it the property tests skip
# themselves and the rest of the suite runs.
try:
    from hypothesis import HealthCheck, settings
    from hypothesis.database import DirectoryBasedExampleDatabase
except ImportError:  # pragma: no cover - a plain install without the dev extras
    pass
else:
    settings.register_profile(
        "ci",
        max_examples=5,
        derandomize=True,
        database=None,
        deadline=None,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow],
    )
    _database = DirectoryBasedExampleDatabase(
        Path(tempfile.gettempdir()) / f"nn_jax_tests_hypothesis_{getpass.getuser()}"
    )
    for _name, _examples in (("dev", 20), ("deep", 100)):
        settings.register_profile(
            _name,
            max_examples=_examples,
            deadline=None,
            print_blob=True,
            suppress_health_check=[HealthCheck.too_slow],
            database=_database,
        )
    _in_ci = os.environ.get("CI", "").strip().lower() not in ("", "0", "false")
    settings.load_profile(
        os.environ.get("NN_JAX_HYPOTHESIS_PROFILE") or ("ci" if _in_ci else "dev")
    )

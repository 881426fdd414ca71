"""Strict JAX settings for the whole suite: bugs must not hide in broadcasting or promotion."""

import os

import jax

os.environ.setdefault("MPLBACKEND", "Agg")
jax.config.update("jax_numpy_rank_promotion", "raise")

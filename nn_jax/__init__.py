"""nn_jax."""

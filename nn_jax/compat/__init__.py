"""Bridges to other ecosystems: bring models in, take nn_jax layers out.

Each submodule is imported on its own, so that its optional dependency is needed only when used:

- :mod:`nn_jax.compat.torch`: PyTorch ``state_dict`` weights (safetensors files) into nn_jax
  params and state, and back; torch itself is never imported.
- :mod:`nn_jax.compat.flax`: ``flax.linen`` and ``flax.nnx`` modules as nn_jax layers, and nn_jax
  layers inside Linen modules.
- :mod:`nn_jax.compat.equinox`: ``equinox.Module`` instances as nn_jax layers, and the reverse.
- :mod:`nn_jax.compat.stax`: ``(init_fun, apply_fun)`` pairs of ``jax.example_libraries.stax``
  as nn_jax layers, and nn_jax layers as such pairs.
"""

__all__: list[str] = []

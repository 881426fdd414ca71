"""Autoencoders: a dense ``Autoencoder``, a ``ConvAutoencoder`` and a variational ``VAE``.

The VAE's loss is the negative evidence lower bound, :func:`elbo_loss`: a reconstruction term
plus the closed-form KL divergence :func:`gaussian_kl` of the approximate posterior from the
standard normal prior.

>>> import jax, jax.numpy as jnp, numpy as np
>>> model = VAE((32,), latent=2)
>>> x = jnp.zeros((5, 64))
>>> params, _ = model.init(jax.random.key(0), x)
>>> jax.tree.map(np.shape, params)["encoder"]
{'dense_0': {'b': (32,), 'w': (64, 32)}, 'dense_1': {'b': (4,), 'w': (32, 4)}}
>>> out = model(params, x, rng=jax.random.key(1), train=True)
>>> out.reconstruction.shape, out.mean.shape, elbo_loss(out, x).shape
((5, 64), (5, 2), ())
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import KW_ONLY
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from nn_jax.activations import get_activation
from nn_jax.combinators import Sequential
from nn_jax.conv import Conv, ConvTranspose
from nn_jax.core import Activation, Array, Block, Layer, Scope, Size, Sizes
from nn_jax.errors import ConfigError, ShapeError
from nn_jax.losses import binary_cross_entropy_with_logits, mse
from nn_jax.models.mlp import MLP

__all__ = ["VAE", "Autoencoder", "ConvAutoencoder", "VAEOutput", "elbo_loss", "gaussian_kl"]


def _check_hidden(block: Autoencoder | VAE) -> None:
    """``hidden`` (a tuple of ints, by its annotation) may be empty; its widths are sizes."""
    if any(h <= 0 for h in block.hidden):
        raise ConfigError(
            f"{type(block).__name__}: hidden must be a tuple of positive ints, given "
            f"{block.hidden!r}"
        )


def _features(block: Block, x: Any) -> int:
    """The input's feature size ``D`` (last axis) of an input ``(..., D)``."""
    block.check_rank(x, 1)
    return int(jnp.shape(x)[-1])


@dataclasses.dataclass(frozen=True)
class Autoencoder(Block):
    """A dense autoencoder: an MLP encoder to a ``latent`` code and a mirrored MLP decoder.

    Encoder ``D -> hidden[0] -> ... -> latent`` (no activation on the code), decoder
    ``latent -> hidden[-1] -> ... -> D`` with ``output_activation`` at the end. Train it to
    reproduce its input (e.g. ``losses.mse(model(params, x), x)``).

    Args:
        hidden: the encoder's hidden widths (the decoder uses them reversed).
        latent: the code size.
        activation: between layers (a callable or a name).
        output_activation: on the reconstruction (e.g. ``"sigmoid"`` for data in ``[0, 1]``);
            ``None`` for none.

    Input ``(..., D)``; output ``(..., D)``. Params: ``{"encoder": MLP params, "decoder": MLP
    params}``; :meth:`encoder` and :meth:`decoder` give those layers, to encode or generate.
    """

    hidden: tuple[int, ...]
    latent: Size
    _: KW_ONLY
    activation: Activation = "relu"
    output_activation: Activation | None = None

    def __post_init__(self) -> None:
        _check_hidden(self)

    def encoder(self) -> MLP:
        """The encoder: ``(..., D) -> (..., latent)``; its params are ``params["encoder"]``."""
        return MLP((*self.hidden, self.latent), activation=self.activation)

    def decoder(self, features: int) -> MLP:
        """The decoder to ``features`` outputs; its params are ``params["decoder"]``."""
        return MLP(
            (*reversed(self.hidden), features),
            activation=self.activation,
            final_activation=self.output_activation,
        )

    def forward(self, scope: Scope, x: Any) -> Array:
        features = _features(self, x)
        code = scope("encoder", self.encoder(), x)
        return scope("decoder", self.decoder(features), code)


@dataclasses.dataclass(frozen=True)
class ConvAutoencoder(Block):
    """A convolutional autoencoder: strided convolutions down, transposed convolutions back up.

    Encoder: ``Conv(channels[i], kernel_size, strides=2)`` and the activation, for each ``i``
    (each halves every spatial size, "SAME" padding). Decoder: ``ConvTranspose(c, kernel_size,
    strides=2)`` for ``c`` in ``channels[-2::-1]`` and finally the input's channel count ``C``,
    activations between them and ``output_activation`` at the end (each doubles the sizes).
    The code is the last feature map ``(..., H / 2^L, W / 2^L, channels[-1])`` with
    ``L = len(channels)``, so the spatial sizes must be divisible by ``2^L``. The rank is
    ``len(kernel_size)``: 1-D, 2-D or 3-D, channels-last; with an int ``kernel_size`` it is the
    input's rank - 2 (one batch axis), as for :class:`~nn_jax.conv.Conv`.

    Args:
        channels: the encoder's channel counts.
        kernel_size: one int per spatial axis, or an int for the same on every axis.
        activation: between layers (a callable or a name).
        output_activation: on the reconstruction (``None`` for none).

    Input ``(*batch, *spatial, C)``; output the same shape. Params: ``{"encoder": {"0": Conv,
    "2": Conv, ...}, "decoder": {"0": ConvTranspose, ...}}`` (odd slots are activations).

    >>> import jax, jax.numpy as jnp
    >>> model = ConvAutoencoder((8, 16))
    >>> params, _ = model.init(jax.random.key(0), jnp.zeros((2, 8, 8, 1)))
    >>> jax.tree.map(jnp.shape, params["decoder"])
    {'0': {'b': (8,), 'w': (3, 3, 8, 16)}, '2': {'b': (1,), 'w': (3, 3, 1, 8)}}
    """

    channels: Sizes
    kernel_size: int | tuple[int, ...] = (3, 3)
    _: KW_ONLY
    activation: Activation = "relu"
    output_activation: Activation | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "kernel_size", Conv(1, self.kernel_size).kernel_size)

    def encoder(self) -> Sequential:
        """The encoder ``(..., *spatial, C) -> (..., *spatial / 2^L, channels[-1])``."""
        act = get_activation(self.activation)
        layers: list[Layer | Callable[[Any], Any]] = []
        for c in self.channels:
            layers += [Conv(c, self.kernel_size, strides=2), act]
        return Sequential(*layers)

    def decoder(self, channels: int) -> Sequential:
        """The decoder back to ``channels`` output channels, each spatial size times ``2^L``."""
        act = get_activation(self.activation)
        sizes = (*self.channels[-2::-1], channels)
        layers: list[Layer | Callable[[Any], Any]] = []
        for i, c in enumerate(sizes):
            layers.append(ConvTranspose(c, self.kernel_size, strides=2))
            if i < len(sizes) - 1:
                layers.append(act)
        if self.output_activation is not None:
            layers.append(get_activation(self.output_activation))
        return Sequential(*layers)

    def forward(self, scope: Scope, x: Any) -> Array:
        kernel = self.kernel_size
        rank = len(kernel) if isinstance(kernel, tuple) else jnp.ndim(x) - 2
        self.check_rank(x, rank + 1)
        spatial = tuple(jnp.shape(x)[-rank - 1 : -1])
        factor = 2 ** len(self.channels)
        if any(size % factor for size in spatial):
            raise self.error(
                ShapeError,
                f"spatial sizes must be divisible by 2^{len(self.channels)} = {factor} (one "
                f"halving per encoder layer), given {spatial} (input shape {jnp.shape(x)})",
            )
        code = scope("encoder", self.encoder(), x)
        return scope("decoder", self.decoder(int(jnp.shape(x)[-1])), code)


class VAEOutput(NamedTuple):
    """What :class:`VAE` returns (a pytree).

    Fields:
        reconstruction: ``(..., D)``, the decoder's raw output for the sampled code (in eval
            mode, for the posterior mean): Bernoulli logits, or Gaussian means.
        mean: ``(..., latent)``, the posterior mean ``mu(x)``.
        logvar: ``(..., latent)``, the posterior log-variance ``log sigma^2(x)``.
    """

    reconstruction: Array
    mean: Array
    logvar: Array


@dataclasses.dataclass(frozen=True)
class VAE(Block):
    """A variational autoencoder (Kingma & Welling, 2014) with dense encoder and decoder.

    The encoder gives ``q(z|x) = N(mu, diag(sigma^2))``; in training the code is sampled by the
    reparameterization ``z = mu + sigma * eps``, ``eps ~ N(0, I)`` drawn from the ``rng`` passed
    to ``apply`` (an ``RngError`` without one); in evaluation ``z = mu`` (deterministic). Train
    with :func:`elbo_loss` and ``make_stateful_train_step`` (a fresh rng per step).

    Args:
        hidden: the encoder's hidden widths (the decoder uses them reversed).
        latent: the code size ``L``.
        activation: between layers (a callable or a name).

    Input ``(..., D)``; output :class:`VAEOutput`. Params: ``{"encoder": MLP params ending in
    (hidden[-1], 2L) (mean, then log-variance), "decoder": MLP params}``. :meth:`decoder` gives
    the decoder, e.g. to generate from prior samples ``z ~ N(0, I)``.

    Reference: D. Kingma, M. Welling, "Auto-Encoding Variational Bayes", ICLR 2014.
    """

    hidden: tuple[int, ...]
    latent: Size
    _: KW_ONLY
    activation: Activation = "relu"

    def __post_init__(self) -> None:
        _check_hidden(self)

    def encoder(self) -> MLP:
        """The encoder: ``(..., D) -> (..., 2L)``, the posterior mean then log-variance."""
        return MLP((*self.hidden, 2 * self.latent), activation=self.activation)

    def decoder(self, features: int) -> MLP:
        """The decoder ``(..., L) -> (..., features)`` (raw outputs, e.g. logits)."""
        return MLP((*reversed(self.hidden), features), activation=self.activation)

    def forward(self, scope: Scope, x: Any) -> VAEOutput:
        features = _features(self, x)
        stats = scope("encoder", self.encoder(), x)
        mean, logvar = jnp.split(stats, 2, axis=-1)
        if scope.train:
            eps = jax.random.normal(scope.rng("sample"), mean.shape, mean.dtype)
            code = mean + jnp.exp(0.5 * logvar) * eps
        else:
            code = mean
        return VAEOutput(scope("decoder", self.decoder(features), code), mean, logvar)


def gaussian_kl(mean: ArrayLike, logvar: ArrayLike) -> Array:
    """``KL(N(mean, diag(exp(logvar))) || N(0, I))`` in closed form, per distribution.

    ``KL = 1/2 * sum_j (exp(logvar_j) + mean_j^2 - 1 - logvar_j)`` (Kingma & Welling 2014,
    appendix B).

    Args:
        mean: ``(..., L)``.
        logvar: ``(..., L)``, the log-variances.

    Returns:
        ``(...)``, one KL (in nats) per distribution.
    """
    mean, logvar = jnp.asarray(mean), jnp.asarray(logvar)
    if mean.shape != logvar.shape or mean.ndim < 1:
        raise ShapeError(
            f"gaussian_kl: mean and logvar must have the same shape (..., L), given "
            f"{mean.shape} and {logvar.shape}"
        )
    return 0.5 * jnp.sum(jnp.exp(logvar) + mean**2 - 1.0 - logvar, axis=-1)


_LIKELIHOODS = ("bernoulli", "gaussian")


def elbo_loss(
    output: VAEOutput, targets: ArrayLike, *, likelihood: str = "bernoulli", beta: float = 1.0
) -> Array:
    """The negative evidence lower bound, averaged over examples: ``mean(recon + beta * KL)``.

    Per example, ``recon = -log p(x | z)`` summed over the features, with ``z`` the code the
    VAE used (one reparameterized sample in training), and ``KL = gaussian_kl(mean, logvar)``:

    - ``"bernoulli"``: ``p(x|z) = Bernoulli(sigmoid(reconstruction))``, for data in ``[0, 1]``
      (binary cross-entropy with logits, soft targets allowed);
    - ``"gaussian"``: ``p(x|z) = N(reconstruction, I)``, so
      ``recon = 1/2 * sum (x - reconstruction)^2 + D/2 * log(2 pi)``.

    ``beta`` weighs the KL (``beta = 1``: the ELBO; other values: a beta-VAE). The signature fits
    ``make_stateful_train_step(model, elbo_loss, optimizer)`` with batches ``(x, x)``.

    Args:
        output: the :class:`VAEOutput` of a VAE applied to ``targets``.
        targets: the input ``x``, shape of ``output.reconstruction``.
        likelihood: ``"bernoulli"`` or ``"gaussian"``.
        beta: weight of the KL term.

    Returns:
        A scalar: ``-ELBO`` in nats per example (a loss to minimize).
    """
    if likelihood not in _LIKELIHOODS:
        raise ConfigError(
            f"elbo_loss: likelihood must be one of {_LIKELIHOODS}, given {likelihood!r}"
        )
    recon, targets = output.reconstruction, jnp.asarray(targets)
    if likelihood == "bernoulli":
        per_element = binary_cross_entropy_with_logits(recon, targets, reduction="none")
    else:
        per_element = 0.5 * mse(recon, targets, reduction="none") + 0.5 * math.log(2 * math.pi)
    kl = gaussian_kl(output.mean, output.logvar)
    feature_axes = tuple(range(kl.ndim, per_element.ndim))
    return jnp.mean(jnp.sum(per_element, axis=feature_axes) + beta * kl)

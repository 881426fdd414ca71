"""Autoencoders: dense, convolutional and variational (eval mode, and training with an rng)."""

from nn_jax.models.autoencoder import VAE, Autoencoder, ConvAutoencoder
from tests.cases import Case, normal

CASES = [
    Case(
        "autoencoder",
        Autoencoder((6,), 3, activation="tanh", output_activation="sigmoid"),
        normal(4, 8),
    ),
    Case(
        "conv_autoencoder",
        ConvAutoencoder((3, 4), activation="tanh", output_activation="sigmoid"),
        normal(2, 4, 4, 2),
    ),
    Case("conv_autoencoder_1d", ConvAutoencoder((3,), (3,), activation="tanh"), normal(2, 6, 2)),
    Case("vae_eval", VAE((6,), 2, activation="tanh"), normal(4, 8)),
    Case("vae_train", VAE((5, 4), 2, activation="tanh"), normal(3, 7), train=True, rng=True),
]

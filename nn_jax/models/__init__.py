"""The model zoo: ready models built from nn_jax layers."""

from nn_jax.models.autoencoder import (
    VAE,
    Autoencoder,
    ConvAutoencoder,
    VAEOutput,
    elbo_loss,
    gaussian_kl,
)
from nn_jax.models.cnn import BasicBlock, LeNet, ResNet, UNet
from nn_jax.models.gnn import GCN, GraphClassifier
from nn_jax.models.mlp import MLP, SimpleNetwork
from nn_jax.models.rnn import RNNClassifier
from nn_jax.models.transformer import TransformerEncoder, TransformerLM, generate

__all__ = [
    "GCN",
    "MLP",
    "VAE",
    "Autoencoder",
    "BasicBlock",
    "ConvAutoencoder",
    "GraphClassifier",
    "LeNet",
    "RNNClassifier",
    "ResNet",
    "SimpleNetwork",
    "TransformerEncoder",
    "TransformerLM",
    "UNet",
    "VAEOutput",
    "elbo_loss",
    "gaussian_kl",
    "generate",
]

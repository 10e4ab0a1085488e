"""Analytic KL divergences."""
import jax.numpy as jnp


def gaussian_kl_per_dim(mean, logvar):
  """KL(N(mean, exp(logvar)) || N(0, 1)) for each latent dimension, shape (B, D)."""
  return 0.5 * (jnp.exp(logvar) + jnp.square(mean) - 1.0 - logvar)


def gaussian_kl(mean, logvar):
  """Per-example KL to the standard normal prior, shape (B,)."""
  return gaussian_kl_per_dim(mean, logvar).sum(-1)

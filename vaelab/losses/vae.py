"""The ELBO objective of the VAE family."""
from __future__ import annotations

import jax.numpy as jnp

from vaelab import spmd
from vaelab.losses import kl as kl_lib
from vaelab.losses import reconstruction


def elbo_terms(likelihood: str, decoded, x, mean, logvar, sigma=1.0):
  """Per-example -log p(x|z) and KL(q(z|x) || p(z)), each shape (B,), and KL per dim (B, D)."""
  nll = reconstruction.nll(likelihood, decoded, x, sigma)
  kl_dims = kl_lib.gaussian_kl_per_dim(mean, logvar)
  return nll, kl_dims.sum(-1), kl_dims


def vae_loss(nll, kl, beta):
  """Batch mean of -ELBO with the KL weighted by beta (beta=1: the ELBO; beta>1: beta-VAE).

  `beta` is an array so a population of betas can share one compiled step.
  """
  return (nll + beta * kl).mean()


def capacity(step, capacity_max, capacity_steps):
  """Burgess et al.'s target KL: rises linearly from 0 to `capacity_max` nats over
  `capacity_steps` steps, then stays."""
  return capacity_max * jnp.clip(step / jnp.maximum(capacity_steps, 1.0), 0.0, 1.0)


def capacity_loss(nll, kl, gamma, target):
  """Batch mean of -log p(x|z) + gamma * |KL - C| (Burgess et al. 2017).

  The constraint is on the batch-mean KL, as in the paper's experiments: the encoder may
  spend more nats on some images and fewer on others as long as the average meets C. It is
  the GLOBAL batch's mean KL: |.| of a shard's mean, averaged over devices, would be
  another objective on every device count.
  """
  return nll.mean() + gamma * jnp.abs(spmd.global_mean(kl.mean()) - target)

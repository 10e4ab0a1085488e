"""DIP-VAE's covariance penalty (Kumar et al. 2018, "Variational Inference of Disentangled
Latent Concepts from Unlabeled Observations", Eqs. 6 and 7).

The penalty pulls a covariance matrix C of the codes towards the identity,

  lambda_od * sum_{i != j} C_ij^2  +  lambda_d * sum_i (C_ii - 1)^2,

with C, over the batch, either

  i   Cov[mu(x)], the covariance of the encoder means (DIP-VAE-I), or
  ii  Cov[mu(x)] + E[diag sigma^2(x)], the covariance of the aggregate posterior
      q(z) = E_x q(z|x) (DIP-VAE-II),

both the biased (divide by B) covariance, as disentanglement_lib computes them. The batch
is the GLOBAL batch: the moments are means over each shard then over devices
(`spmd.global_mean`), so the covariance is the whole batch's on any device count.
"""
from __future__ import annotations

import jax.numpy as jnp

from vaelab import spmd

DIP_TYPES = ("i", "ii")


def covariance_of_means(mean):
  """Cov[mu] over the global batch, (D, D), from one shard's means (B_local, D). Centred on
  the global mean first: the same matrix as E[mu mu^T] - E[mu] E[mu]^T, without its
  cancellation when the means sit far from 0."""
  centre = spmd.global_mean(mean.mean(0))
  d = mean - centre
  return spmd.global_mean(jnp.einsum("bi,bj->ij", d, d) / mean.shape[0])


def dip_covariance(dip_type: str, mean, logvar):
  """The covariance DIP-VAE-`dip_type` regularizes (module docstring), (D, D)."""
  cov = covariance_of_means(mean)
  if dip_type == "i":
    return cov
  if dip_type == "ii":
    return cov + jnp.diag(spmd.global_mean(jnp.exp(logvar).mean(0)))
  raise ValueError(f"loss.dip_type={dip_type!r}: expected one of {DIP_TYPES}")


def deviations(cov):
  """(sum of the squared off-diagonal entries, sum of (diagonal - 1)^2) of `cov`."""
  diag = jnp.diagonal(cov)
  off = cov - jnp.diag(diag)
  return jnp.sum(jnp.square(off)), jnp.sum(jnp.square(diag - 1.0))


def dip_penalty(cov, lambda_od, lambda_d):
  """lambda_od * sum_{i != j} C_ij^2 + lambda_d * sum_i (C_ii - 1)^2."""
  off, diag = deviations(cov)
  return lambda_od * off + lambda_d * diag


def dip_vae_loss(nll, kl, penalty):
  """Batch mean of -ELBO plus the penalty of the global batch's covariance."""
  return (nll + kl).mean() + penalty

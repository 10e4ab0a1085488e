"""The sparsity penalty of the sparse autoencoder (Ng, "Sparse autoencoder" lecture notes).

Each hidden unit j has a mean activation rho_hat_j over the batch; the penalty is
sum_j KL(rho || rho_hat_j) between Bernoulli distributions, which pushes every unit to be
active on a fraction rho of the inputs.
"""
from __future__ import annotations

import jax.numpy as jnp

from vaelab import spmd

# rho_hat of a saturated sigmoid can round to exactly 0 or 1 in float32; the KL would be inf.
_EPS = 1e-6


def bernoulli_kl(rho, rho_hat):
  """KL(Bernoulli(rho) || Bernoulli(rho_hat)), elementwise; rho in (0, 1)."""
  rho_hat = jnp.clip(rho_hat, _EPS, 1 - _EPS)
  return rho * jnp.log(rho / rho_hat) + (1 - rho) * jnp.log((1 - rho) / (1 - rho_hat))


def mean_activation(code):
  """rho_hat: per-unit mean of `code` (B, H) over the GLOBAL batch.

  Under the step's shard_map each device holds a shard of the batch; the penalty is a
  nonlinear function of the batch mean, so a shard's mean would make the objective change
  with the device count (spmd.global_mean takes it over the whole batch).
  """
  return spmd.global_mean(code.mean(0))


def sparsity_penalty(rho, rho_hat):
  """sum_j KL(rho || rho_hat_j)."""
  return bernoulli_kl(rho, rho_hat).sum()

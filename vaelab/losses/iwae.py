"""Importance-weighted bounds (Burda et al. 2016) for a Gaussian-posterior VAE.

    L_K = E[log (1/K) sum_i p(x, z_i) / q(z_i | x)],   z_i ~ q(z | x)

L_1 is the ELBO and L_K increases to log p(x) as K grows. The log-weights are
computed in chunks of samples under `lax.map`, so that K = 5000 needs memory for one
chunk of decoder outputs at a time and only the (B, K) log-weights are kept.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp

_LOG_2PI = math.log(2 * math.pi)


def gaussian_log_density(z, mean, logvar):
  """log N(z | mean, exp(logvar)) summed over the last axis."""
  return -0.5 * jnp.sum(_LOG_2PI + logvar + jnp.square(z - mean) * jnp.exp(-logvar), -1)


def log_mean_exp(a, axis=-1):
  """log (1/K) sum exp(a) over `axis`, stable for any magnitudes."""
  return logsumexp(a, axis=axis) - math.log(a.shape[axis])


def log_weights(decode_nll, keys, mean, logvar, num_samples: int, chunk: int):
  """(B, num_samples) log p(x, z_i) - log q(z_i | x) for z_i ~ q(z | x).

  `decode_nll(z)` maps latents (B, D) to -log p(x | z) per example (B,). Sample i of
  example b is drawn from fold_in(keys[b], i), so the weights do not depend on `chunk`.
  """
  chunk = min(chunk, num_samples)
  num_chunks = -(-num_samples // chunk)
  std = jnp.exp(0.5 * logvar)

  def one_chunk(c):
    idx = c * chunk + jnp.arange(chunk)

    def sample(i):
      eps = jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, i), mean.shape[1:],
                                                 mean.dtype))(keys)
      z = mean + std * eps
      log_prior = gaussian_log_density(z, 0.0, jnp.zeros_like(z))
      return -decode_nll(z) + log_prior - gaussian_log_density(z, mean, logvar)

    return jax.vmap(sample, out_axes=1)(idx)  # (B, chunk)

  w = jax.lax.map(one_chunk, jnp.arange(num_chunks))  # (chunks, B, chunk)
  return jnp.moveaxis(w, 0, 1).reshape(mean.shape[0], -1)[:, :num_samples]


def bounds_from_log_weights(w, ks) -> dict[int, jnp.ndarray]:
  """{K: per-example estimate of L_K} for each K in `ks` from the (B, K_max) log-weights.

  L_K for K < K_max averages log_mean_exp over the floor(K_max / K) disjoint groups of K
  weights: each group is an unbiased estimate of L_K, so the average has the same mean and
  a lower variance than one group, at no extra decoder cost.
  """
  out = {}
  for k in ks:
    groups = w.shape[1] // k
    out[k] = log_mean_exp(w[:, :groups * k].reshape(w.shape[0], groups, k)).mean(-1)
  return out


def iwae_loss(w):
  """Batch mean of -L_K from (B, K) log-weights: the IWAE training objective."""
  return -log_mean_exp(w).mean()

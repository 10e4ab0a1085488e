"""FactorVAE's objectives (Kim & Mnih 2018), as disentanglement_lib computes them.

A discriminator tells codes z ~ q(z) (class 0) from codes whose dimensions were shuffled
independently across the batch, samples of prod_j q(z_j) (class 1). Its logit difference
estimates the total correlation (the density-ratio trick), which the VAE's loss adds with
weight gamma; the discriminator is trained, by its own optimizer, to tell the two apart.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from vaelab import spmd

# disentanglement_lib clips the discriminator's probabilities before taking their log.
PROB_CLIP = 1e-6


def shuffle_dimensions(z, keys):
  """Each latent dimension of the GLOBAL batch permuted on its own (the batch's codes under
  prod_j q(z_j)); returns this device's rows. The permutation sorts per-example uniforms
  drawn from each example's key, so it is a function of (seed, step), not of the devices."""
  u = jax.vmap(lambda k: jax.random.uniform(k, z.shape[1:]))(keys)
  everyone, u = spmd.global_gather(z), spmd.global_gather(u)
  order = jnp.argsort(u, axis=0)
  return spmd.local_part(jnp.take_along_axis(everyone, order, axis=0))


def probabilities(logits):
  return jnp.clip(jax.nn.softmax(logits), PROB_CLIP, 1 - PROB_CLIP)


def total_correlation(logits):
  """Per-example estimate log D(z) / (1 - D(z)) = logit_0 - logit_1, (B,)."""
  return logits[:, 0] - logits[:, 1]


def discriminator_terms(logits_joint, logits_shuffled):
  """Per-example (loss, accuracy) of the discriminator, (B,) each: the mean of its loss
  is disentanglement_lib's -(0.5 E log D_0(z) + 0.5 E log D_1(z_shuffled)); ln 2 at chance."""
  p, q = probabilities(logits_joint), probabilities(logits_shuffled)
  loss = -0.5 * (jnp.log(p[:, 0]) + jnp.log(q[:, 1]))
  accuracy = 0.5 * ((p[:, 0] > 0.5).astype(jnp.float32) + (q[:, 1] > 0.5).astype(jnp.float32))
  return loss, accuracy

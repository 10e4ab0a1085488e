"""The objectives of the weakly-supervised VAEs (Locatello et al. 2020): GroupVAE (Ada-GVAE)
and ML-VAE (Ada-ML-VAE), as disentanglement_lib writes them (methods/weak/weak_vae.py).

Each image of a pair is encoded alone; the latents the pair shares are replaced in both
posteriors by one aggregate of the two (GroupVAE: the mean of the means and of the
variances; ML-VAE: the product of the two Gaussians), and which latents are shared is
decided per pair by `aggregate_argmax` (adaptive: the latents whose KL between the two
posteriors falls in the lower of two equal-width bins) or `aggregate_labels` (every latent
but the one of the changed factor's index). The objective is the reconstruction of both
images from samples of their aggregated posteriors, averaged, plus beta times the mean of
their KLs to the prior.
"""
from __future__ import annotations

import jax.numpy as jnp

from vaelab.losses import kl as kl_lib

COMBINES = ("group", "ml")
AGGREGATIONS = ("argmax", "labels")


def compute_kl(mean_1, mean_2, logvar_1, logvar_2):
  """dlib's `compute_kl` per latent, (B, D): twice KL(q_1 || q_2), as dlib writes it
  (var_1 / var_2 + (mean_2 - mean_1)^2 / var_2 - 1 + logvar_2 - logvar_1)."""
  var_1, var_2 = jnp.exp(logvar_1), jnp.exp(logvar_2)
  return var_1 / var_2 + jnp.square(mean_2 - mean_1) / var_2 - 1.0 + logvar_2 - logvar_1


def combine(kind: str, mean_1, mean_2, logvar_1, logvar_2):
  """(mean, log-variance) of the shared posterior: GroupVAE's average of the means and of
  the variances ("group"), or ML-VAE's product of the two Gaussians ("ml")."""
  var_1, var_2 = jnp.exp(logvar_1), jnp.exp(logvar_2)
  if kind == "group":
    return 0.5 * mean_1 + 0.5 * mean_2, jnp.log(0.5 * var_1 + 0.5 * var_2)
  if kind == "ml":
    new_var = 2 * var_1 * var_2 / (var_1 + var_2)
    return (mean_1 / var_1 + mean_2 / var_2) * new_var * 0.5, jnp.log(new_var)
  raise ValueError(f"combine={kind!r}: expected one of {COMBINES}")


def upper_bin(kl_per_point):
  """(B, D) bool: the latents of each pair in the upper of two equal-width bins between
  its least and largest KL (tf.histogram_fixed_width_bins(x, [min, max], nbins=2) == 1).
  A pair whose KLs are all equal (identical images) has no upper bin: TF's bin is then
  the NaN of 0 / 0 cast to an integer, never 1, and every latent is shared."""
  low = kl_per_point.min(-1, keepdims=True)
  high = kl_per_point.max(-1, keepdims=True)
  span = high - low
  scaled = (kl_per_point - low) / jnp.where(span > 0, span, 1.0)
  bins = jnp.clip(jnp.floor(2.0 * scaled), 0.0, 1.0)
  return (bins == 1.0) & (span > 0)


def label_mask(labels, latent_dim: int):
  """(B, D) bool: dlib's `aggregate_labels` keeps latent `label` of each pair its own
  (where a one-hot of the label equals its row's maximum: every latent when the label is
  not a latent's index)."""
  one_hot = (jnp.arange(latent_dim)[None, :] == labels[:, None]).astype(jnp.float32)
  return one_hot == one_hot.max(-1, keepdims=True)


def aggregate(own_mask, mean, logvar, new_mean, new_logvar):
  """The posterior of one image of the pair: its own where `own_mask`, shared elsewhere."""
  return jnp.where(own_mask, mean, new_mean), jnp.where(own_mask, logvar, new_logvar)


def weak_loss(nll_1, nll_2, mean_1, logvar_1, mean_2, logvar_2, beta):
  """(loss, reconstruction, kl): 0.5 (mean nll_1 + mean nll_2) + beta * 0.5 (mean KL_1 +
  mean KL_2), the KLs of the aggregated posteriors to N(0, I)."""
  recon = 0.5 * nll_1.mean() + 0.5 * nll_2.mean()
  kl = 0.5 * kl_lib.gaussian_kl(mean_1, logvar_1).mean() + 0.5 * kl_lib.gaussian_kl(
      mean_2, logvar_2).mean()
  return recon + beta * kl, recon, kl

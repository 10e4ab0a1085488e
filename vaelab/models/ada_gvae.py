"""Ada-GVAE (Locatello et al. 2020): a VAE trained on pairs of images, whose shared latents
take GroupVAE's average of the pair's two posteriors (the mean of the means and of the
variances), dlib's `group_vae_argmax` (`loss.aggregation=labels`: `group_vae_labels`).
What it shares with Ada-ML-VAE: models/weak_vae.py."""
from __future__ import annotations

from vaelab.models import weak_vae


def config_keys(c, likelihood: str = "bernoulli") -> None:
  weak_vae.config_keys(c, "ada_gvae", likelihood)


FAMILY = weak_vae.family("ada_gvae", "group")

"""Ada-ML-VAE (Locatello et al. 2020): a VAE trained on pairs of images, whose shared
latents take ML-VAE's product of the pair's two Gaussian posteriors, dlib's `mlvae_argmax`
(`loss.aggregation=labels`: `mlvae_labels`). What it shares with Ada-GVAE:
models/weak_vae.py."""
from __future__ import annotations

from vaelab.models import weak_vae


def config_keys(c, likelihood: str = "bernoulli") -> None:
  weak_vae.config_keys(c, "ada_mlvae", likelihood)


FAMILY = weak_vae.family("ada_mlvae", "ml")

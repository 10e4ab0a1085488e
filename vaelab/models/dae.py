"""Denoising autoencoder (Vincent et al. 2008): reconstruct the clean x from a corrupted x~.

The corruption q_D(x~|x) (`model.corruption`: mask | gaussian | salt_pepper, at
`model.noise_level`) is drawn on device inside the step from each example's own key, and
the loss compares the reconstruction of x~ with the CLEAN x. The network, the evaluation
(eval/denoise_sse among the shared autoencoder metrics) and the baselines are the plain
AE's. The noise level enters the step as an array (FAMILY.hparams), so a population of runs
can vmap over it; at noise level 0 the objective is exactly the plain AE's.
"""
from __future__ import annotations

import jax

from vaelab.errors import ConfigError
from vaelab.losses import dae as dae_losses
from vaelab.losses import reconstruction
from vaelab.models import ae


def config_keys(c) -> None:
  """The keys of the denoising autoencoder: the autoencoder's and its corruption."""
  ae.config_keys(c)
  c.model.name = "dae"
  c.model.corruption = "mask"  # mask | gaussian | salt_pepper
  c.model.noise_level = 0.25  # fraction of pixels (mask, salt_pepper) or sigma (gaussian)


def make_loss(config, info=None):
  likelihood, kind = config.model.likelihood, config.model.corruption

  def loss(model, params, model_state, batch, keys, hparams):
    x = batch["image"]
    noisy = dae_losses.corrupt(kind, x, hparams["noise_level"], keys)
    logits = model.apply({"params": params, **model_state}, noisy)
    value = reconstruction.nll(likelihood, logits, x).mean()
    sse = reconstruction.sse(jax.nn.sigmoid(logits), x).mean()
    return value, ({"recon_sse": sse}, model_state)

  return loss


def hparams(config):
  return {"noise_level": float(config.model.noise_level)}


def validate(config):
  m = config.model
  if m.corruption not in dae_losses.KINDS:
    raise ConfigError(f"model.corruption={m.corruption!r}: expected one of {dae_losses.KINDS}")
  ae.validate_noise_level("model.noise_level", m.corruption, m.noise_level)
  ae.validate(config)


FAMILY = ae.variant("dae", make_loss, hparams, validate,
                    options={"model.corruption": dae_losses.KINDS})

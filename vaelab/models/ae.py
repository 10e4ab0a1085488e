"""Deterministic autoencoder (Hinton & Salakhutdinov 2006 shape: 784-1000-500-250-30, linear code).

The decoder emits logits; images are their sigmoid, so `model.recon_loss` can be the
Bernoulli cross-entropy the paper used for MNIST or the squared error.
"""
from __future__ import annotations

import flax.linen as nn
import jax

from vaelab.errors import ConfigError
from vaelab.evaluate import pca
from vaelab.losses import ae as ae_losses
from vaelab.losses import reconstruction
from vaelab.models import nets
from vaelab.models.base import Family

RECON_LOSSES = ("bernoulli", "mse")


class AE(nn.Module):
  spec: nets.NetSpec
  latent_dim: int
  image_shape: tuple[int, int, int]

  def setup(self):
    self.encoder = nets.make_encoder(self.spec, self.latent_dim)
    self.decoder = nets.make_decoder(self.spec, self.image_shape)

  def encode(self, x):
    return self.encoder(x)

  def decode(self, code):
    return self.decoder(code)

  def __call__(self, x, keys=None):
    return self.decode(self.encode(x))

  def reconstruct(self, x):
    return jax.nn.sigmoid(self(x))


def make_model(config, info):
  return AE(nets.NetSpec.from_config(config.model), config.model.latent_dim, info.image_shape)


def _recon_loss_per_example(recon_loss, logits, x):
  if recon_loss == "mse":
    return reconstruction.sse(jax.nn.sigmoid(logits), x)
  return reconstruction.bernoulli_nll(logits, x)


def make_loss(config):
  recon_loss = config.model.recon_loss

  def loss(model, params, model_state, batch, keys, hparams):
    x = batch["image"]
    logits = model.apply({"params": params, **model_state}, x)
    value = _recon_loss_per_example(recon_loss, logits, x).mean()
    sse = reconstruction.sse(jax.nn.sigmoid(logits), x).mean()
    return value, ({"recon_sse": sse}, model_state)

  return loss


def make_eval_metrics(config):
  recon_loss = config.model.recon_loss

  def eval_metrics(model, variables, batch, keys, hparams):
    x = batch["image"]
    logits = model.apply(variables, x)
    return {"loss": _recon_loss_per_example(recon_loss, logits, x),
            "recon_sse": reconstruction.sse(jax.nn.sigmoid(logits), x)}

  return eval_metrics


def validate(config):
  m = config.model
  nets.validate(m)
  if m.recon_loss not in RECON_LOSSES:
    raise ConfigError(f"model.recon_loss={m.recon_loss!r}: expected one of {RECON_LOSSES}")


def baselines(config, train_source, eval_source):
  """PCA with as many components as the code has units, fitted on the training split."""
  return {"eval/pca_recon_sse": pca.pca_recon_sse(train_source, eval_source,
                                                   config.model.latent_dim)}


FAMILY = Family(
    name="ae",
    make_model=make_model,
    make_loss=make_loss,
    make_eval_metrics=make_eval_metrics,
    validate=validate,
    baselines=baselines,
)

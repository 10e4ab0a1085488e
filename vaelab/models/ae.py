"""Deterministic autoencoder (Hinton & Salakhutdinov 2006 shape: 784-1000-500-250-30, linear code).

The decoder emits logits; images are their sigmoid, so `model.likelihood` can be `bernoulli`,
the cross-entropy the paper used for MNIST, or `sigmoid_sse`, the squared error of the image
(losses/reconstruction.py). The module and the
evaluation here are shared by every deterministic autoencoder family (denoising, sparse,
contractive reuse `AE`; all report the same eval/ metrics through `make_eval_metrics`).
"""
from __future__ import annotations

import flax.linen as nn
import jax
import numpy as np

from vaelab.errors import ConfigError
from vaelab.evaluate import latent_pictures, pca
from vaelab.losses import cae as cae_losses
from vaelab.losses import dae as dae_losses
from vaelab.losses import reconstruction
from vaelab.models import nets
from vaelab.models.base import Family, method

# The decoder emits logits.
LIKELIHOODS = reconstruction.LOGIT_LIKELIHOODS
CODE_ACTIVATIONS = ("linear", "sigmoid", "relu")


def config_keys(c) -> None:
  """The keys every deterministic autoencoder family shares (the variants' config_keys
  start from them)."""
  c.model.name = "ae"
  c.model.likelihood = "bernoulli"  # bernoulli | sigmoid_sse (losses/reconstruction.py)
  c.model.code_activation = "linear"  # linear | sigmoid | relu
  # The corruption under which eval/denoise_sse is measured, for every autoencoder family.
  c.eval.corruption = "mask"  # mask | gaussian | salt_pepper
  c.eval.noise_level = 0.25


class AE(nn.Module):
  spec: nets.NetSpec
  latent_dim: int
  image_shape: tuple[int, int, int]
  # linear: Hinton's deep AE; sigmoid: the one-layer sparse and contractive autoencoders.
  code_activation: str = "linear"

  def setup(self):
    self.encoder = nets.make_encoder(self.spec, self.latent_dim)
    self.decoder = nets.make_decoder(self.spec, self.image_shape)

  def encode(self, x):
    code = self.encoder(x)
    if self.code_activation == "linear":
      return code
    return nets.activation(self.code_activation)(code)

  def decode(self, code):
    return self.decoder(code)

  def __call__(self, x, keys=None):
    return self.decode(self.encode(x))

  def reconstruct(self, x):
    return jax.nn.sigmoid(self(x))

  def generate(self, code):
    """Images in [0, 1] of codes (the decoder emits logits)."""
    return jax.nn.sigmoid(self.decode(code))


def make_model(config, info):
  return AE(nets.NetSpec.from_config(config.model, config.dtype), config.model.latent_dim,
            info.image_shape, config.model.code_activation)


def make_loss(config, info=None):
  likelihood = config.model.likelihood

  def loss(model, params, model_state, batch, keys, hparams):
    x = batch["image"]
    logits = model.apply({"params": params, **model_state}, x)
    value = reconstruction.nll(likelihood, logits, x).mean()
    sse = reconstruction.sse(jax.nn.sigmoid(logits), x).mean()
    return value, ({"recon_sse": sse}, model_state)

  return loss


def make_eval_metrics(config):
  """What every deterministic autoencoder reports, so the families can be compared:
  loss, recon_sse and denoise_sse (clean image vs reconstruction of its corrupted version,
  corruption `eval.corruption` at `eval.noise_level`)."""
  likelihood = config.model.likelihood
  kind, level = config.eval.corruption, float(config.eval.noise_level)

  def eval_metrics(model, variables, batch, keys, hparams):
    x = batch["image"]
    encode = lambda v: model.apply(variables, v, method="encode")
    logits = model.apply(variables, encode(x), method="decode")
    noisy = dae_losses.corrupt(kind, x, level, keys)
    denoised = model.apply(variables, noisy, method="reconstruct")
    return {"loss": reconstruction.nll(likelihood, logits, x),
            "recon_sse": reconstruction.sse(jax.nn.sigmoid(logits), x),
            "denoise_sse": reconstruction.sse(denoised, x)}

  return eval_metrics


def make_final_eval_metrics(config):
  """jacobian_fro2: the exact ||J_f(x)||_F^2 of the encoder, so that every autoencoder's
  contraction can be compared. Final only: it costs one encoder pass per input pixel."""

  def final_metrics(model, variables, batch, keys, hparams):
    encode = lambda v: model.apply(variables, v, method="encode")
    return {"jacobian_fro2": cae_losses.jacobian_fro2_exact(encode, batch["image"])}

  return final_metrics


def validate(config):
  """Checks the keys every deterministic autoencoder family shares."""
  m = config.model
  nets.validate(m)
  reconstruction.validate(m.likelihood, LIKELIHOODS, m.name)
  if m.code_activation not in CODE_ACTIVATIONS:
    raise ConfigError(f"model.code_activation={m.code_activation!r}: expected one of "
                      f"{CODE_ACTIVATIONS}")
  if config.eval.corruption not in dae_losses.KINDS:
    raise ConfigError(f"eval.corruption={config.eval.corruption!r}: expected one of "
                      f"{dae_losses.KINDS}")
  validate_noise_level("eval.noise_level", config.eval.corruption, config.eval.noise_level)


def validate_noise_level(key: str, kind: str, level) -> None:
  """A fraction of pixels for mask and salt_pepper, a standard deviation for gaussian."""
  level = float(level)
  if kind == "gaussian" and not level >= 0:
    raise ConfigError(f"{key}={level}: a gaussian noise level (sigma) must be >= 0")
  if kind != "gaussian" and not 0 <= level <= 1:
    raise ConfigError(f"{key}={level}: a {kind} noise level is a fraction in [0, 1]")


def final_baselines(config, train_source, eval_source):
  """PCA with as many components as the code has units, fitted on the training split.

  Skipped for overcomplete codes (as many units as pixels or more), where PCA is exact.
  """
  if config.model.latent_dim >= int(np.prod(train_source.info.image_shape)):
    return {}
  return {"eval/pca_recon_sse": pca.pca_recon_sse(train_source, eval_source,
                                                   config.model.latent_dim)}


# The string options that change every autoencoder's step: the contract tests run each on
# `ae`; the variants (denoising, contractive, ...) share this code and declare their own.
OPTIONS = {"model.likelihood": LIKELIHOODS, "model.code_activation": CODE_ACTIVATIONS}


def variant(name, make_loss, hparams, validate, options=None) -> Family:
  """A family that is this AE with another objective (denoising, contractive, ...)."""
  return Family(name=name, make_model=make_model, make_loss=make_loss,
                make_eval_metrics=make_eval_metrics,
                make_final_eval_metrics=make_final_eval_metrics, hparams=hparams,
                validate=validate, final_baselines=final_baselines,
                features=method("encode"), decode=method("generate"),
                pictures=latent_pictures.save_code_pictures, mixed_precision=True,
                options=options or {})


FAMILY = Family(
    name="ae",
    make_model=make_model,
    make_loss=make_loss,
    make_eval_metrics=make_eval_metrics,
    make_final_eval_metrics=make_final_eval_metrics,
    validate=validate,
    final_baselines=final_baselines,
    features=method("encode"),
    decode=method("generate"),
    pictures=latent_pictures.save_code_pictures,
    mixed_precision=True,
    options=OPTIONS,
)

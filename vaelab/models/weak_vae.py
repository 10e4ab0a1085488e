"""What the weakly-supervised VAEs share (Locatello et al. 2020, "Weakly-Supervised
Disentanglement Without Compromises"): Ada-GVAE (models/ada_gvae.py, GroupVAE's average of
the pair's posteriors) and Ada-ML-VAE (models/ada_mlvae.py, ML-VAE's product of them).

They train on pairs of images that share all but a few ground-truth factors
(data/pairs.py, `data.pair_k`): `transform_sources` turns the training split into pairs,
and the evaluation split stays single images. The model is the VAE of models/vae.py,
applied to each image of a pair; the objective (losses/weak_vae.py) averages the latents
the pair shares, chosen per pair by `loss.aggregation`: `argmax` (the adaptive threshold,
the "Ada-" methods) or `labels` (the index of the changed factor, as dlib's `_labels`
variants). beta is a step argument. Logged beside the VAE's recon / kl / elbo:
train/num_shared, the mean number of latents averaged per pair.

Evaluation is the VAE's on single images (ELBO, IWAE bounds, active units, every
disentanglement score of the posterior means); eval/loss is the negative ELBO of an image,
the objective being one of pairs.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from vaelab import checks
from vaelab.data import pairs
from vaelab.errors import ConfigError
from vaelab.losses import reconstruction
from vaelab.losses import weak_vae as weak_losses
from vaelab.models import vae
from vaelab.models.base import Family

AGGREGATIONS = weak_losses.AGGREGATIONS


def config_keys(c, name: str, likelihood: str = "bernoulli") -> None:
  """The keys of a weakly-supervised family `name` (the VAE's model and bound keys)."""
  c.model.name = name
  vae.common_keys(c, likelihood)
  c.loss.beta = 1.0
  c.loss.aggregation = "argmax"  # argmax (adaptive) | labels (the changed factor's index)
  # Factors a pair changes: k, or -1 for k drawn per pair (data/pairs.py).
  c.data.pair_k = 1


def dsprites_config(name: str, arg):
  """The config of `configs/<name>_dsprites.py`, either weakly-supervised family: the
  unsupervised study's trunk and optimizer (disentanglement_lib's conv trunk, Adam at 1e-4,
  batch 64 pairs, 300k steps) on pairs of procedural dSprites images. `arg` holds the
  variants `runlocal` (the MLP (512, 256) at lr 1e-3, about a minute of training on a
  2-core CPU, a fifth of disentanglement_lib's metric sample sizes), `beta` and `k`."""
  from vaelab import config_base
  c = config_base.base_config()
  config_keys(c, name, likelihood="bernoulli")
  c.data.name = "procedural_dsprites"
  c.data.num_eval = 5000
  c.data.pair_k = arg.k
  c.model.encoder = "dlib_conv"
  c.model.conv_channels = (32, 32, 64, 64)
  c.model.dense = 256
  c.model.latent_dim = 10
  c.loss.beta = arg.beta
  c.batch_size = 64
  c.num_train_steps = 300_000
  c.log_every = 500
  c.eval_every = 10_000
  c.checkpoint_every = 10_000
  c.optimizer.learning_rate = 1e-4
  c.eval.batch_size = 500
  c.eval.iwae_ks = (1, 10, 100)  # binary pixels: K = 500 would cost 500 decoder passes
  if arg.runlocal:
    c.model.encoder = "mlp"
    c.model.hidden = (512, 256)
    c.num_train_steps = 1000
    c.log_every = 100
    c.eval_every = c.checkpoint_every = 1000
    c.optimizer.learning_rate = 1e-3
    c.data.num_eval = 2000
    c.eval.disentanglement_num_train = 2000
    c.eval.disentanglement_num_eval = 1000
  return c


def dsprites_sweep(h):
  """disentanglement_lib's grid for the weakly-supervised study: beta x k. k reaches the
  data, so each k is its own population of six betas."""
  return h.product(h.sweep("loss.beta", [1.0, 2.0, 4.0, 6.0, 8.0, 16.0]),
                   h.sweep("data.pair_k", [1, -1]))


def transform_sources(config, train_source, eval_source):
  return pairs.pair_source(train_source, int(config.data.pair_k)), eval_source


def _single(info):
  """The info of one image of a pair."""
  shape = info.image_shape
  return dataclasses.replace(info, image_shape=tuple(shape[1:])) if len(shape) == 4 else info


def make_model(config, info):
  return vae.make_model(config, _single(info))


def init_input(model, train_source):
  return jnp.zeros((1, *_single(train_source.info).image_shape), jnp.float32)


def _split_pairs(x):
  return x[:, 0], x[:, 1]


def make_loss_for(combine: str):

  def make_loss(config, info=None):
    aggregation = config.loss.aggregation
    likelihood, sigma = config.model.likelihood, config.model.obs_sigma
    latent_dim = int(config.model.latent_dim)

    def loss(model, params, model_state, batch, keys, hparams):
      variables = {"params": params, **model_state}
      x_1, x_2 = _split_pairs(batch["image"])
      n = x_1.shape[0]
      # Both images through the encoder at once: the same weights, half the calls.
      mean, logvar = model.apply(variables, jnp.concatenate([x_1, x_2]), method=vae.VAE.encode)
      mean_1, mean_2, logvar_1, logvar_2 = mean[:n], mean[n:], logvar[:n], logvar[n:]
      new_mean, new_logvar = weak_losses.combine(combine, mean_1, mean_2, logvar_1, logvar_2)
      if aggregation == "labels":
        own = weak_losses.label_mask(batch["pair_label"], latent_dim)
      else:
        own = weak_losses.upper_bin(weak_losses.compute_kl(mean_1, mean_2, logvar_1, logvar_2))
      post_1 = weak_losses.aggregate(own, mean_1, logvar_1, new_mean, new_logvar)
      post_2 = weak_losses.aggregate(own, mean_2, logvar_2, new_mean, new_logvar)
      fold = jax.vmap(jax.random.fold_in, in_axes=(0, None))
      z = jnp.concatenate([vae.reparameterize(fold(keys, 0), *post_1),
                           vae.reparameterize(fold(keys, 1), *post_2)])
      decoded = model.apply(variables, z, method=vae.VAE.decode)
      nll = reconstruction.nll(likelihood, decoded, jnp.concatenate([x_1, x_2]), sigma)
      value, recon, kl = weak_losses.weak_loss(nll[:n], nll[n:], *post_1, *post_2,
                                               hparams["beta"])
      metrics = {"recon": recon, "kl": kl, "elbo": -(recon + kl),
                 "num_shared": jnp.sum(~own, axis=-1).astype(jnp.float32).mean()}
      return value, (metrics, model_state)

    return loss

  return make_loss


def _first_images(fn):
  """`fn` on batches of single images; a batch of pairs (the training split's, which the
  population's program signature evaluates) is scored on its first images."""

  def on_singles(model, variables, batch, keys, hparams):
    if batch["image"].ndim == 5:
      batch = {**batch, "image": batch["image"][:, 0]}
      if "image_raw" in batch:
        batch["image_raw"] = batch["image_raw"][:, 0]
    return fn(model, variables, batch, keys, hparams)

  return on_singles


def make_eval_metrics(config):
  return _first_images(vae.eval_metrics_with(config, vae.negative_elbo))


def make_final_eval_metrics(config):
  return _first_images(vae.make_final_eval_metrics(config))


def hparams(config):
  return {"beta": float(config.loss.beta)}


def validate(config):
  vae.validate_model(config)
  if config.loss.aggregation not in AGGREGATIONS:
    raise ConfigError(f"loss.aggregation={config.loss.aggregation!r}: expected one of "
                      f"{AGGREGATIONS}")
  if not float(config.loss.beta) >= 0:
    raise ConfigError(f"loss.beta={config.loss.beta}: must be >= 0")
  checks.integer(config.data.pair_k, "data.pair_k", -1)
  if int(config.data.pair_k) == 0:
    raise ConfigError("data.pair_k=0: a pair changes at least one factor (or -1: drawn per "
                      "pair)")
  vae.validate_bounds(config)


def family(name: str, combine: str) -> Family:
  return vae.variant(
      name, make_model=make_model, make_loss=make_loss_for(combine),
      make_eval_metrics=make_eval_metrics, make_final_eval_metrics=make_final_eval_metrics,
      hparams=hparams, validate=validate, transform_sources=transform_sources,
      init_input=init_input, options={"loss.aggregation": AGGREGATIONS})

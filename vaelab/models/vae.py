"""Variational autoencoder (Kingma & Welling 2014): diagonal Gaussian posterior, N(0, I) prior.

The likelihood is `model.likelihood`: `bernoulli` (decoder emits logits) or `gaussian`
(decoder emits means, fixed scale `model.obs_sigma`). `loss.beta` weights the KL
(beta-VAE when > 1) and enters the step as an array.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from vaelab.errors import ConfigError
from vaelab.losses import reconstruction
from vaelab.losses import vae as vae_losses
from vaelab.models import nets
from vaelab.models.base import Family

LIKELIHOODS = ("bernoulli", "gaussian")


class VAE(nn.Module):
  spec: nets.NetSpec
  latent_dim: int
  image_shape: tuple[int, int, int]
  likelihood: str = "bernoulli"

  def setup(self):
    self.encoder = nets.make_encoder(self.spec, 2 * self.latent_dim)
    self.decoder = nets.make_decoder(self.spec, self.image_shape)

  def encode(self, x):
    """Posterior mean and log-variance, each (B, latent_dim)."""
    mean, logvar = jnp.split(self.encoder(x), 2, axis=-1)
    return mean, logvar

  def decode(self, z):
    return self.decoder(z)

  def __call__(self, x, keys):
    """Decoder output for one reparameterized posterior sample per example."""
    mean, logvar = self.encode(x)
    z = reparameterize(keys, mean, logvar)
    return self.decode(z), mean, logvar

  def posterior_mean(self, x):
    """The representation used downstream (probes, disentanglement metrics)."""
    return self.encode(x)[0]

  def reconstruct(self, x):
    """Decoded posterior mean: the deterministic reconstruction used for pictures and SSE."""
    return self.generate(self.encode(x)[0])

  def generate(self, z):
    """Decoder mean in pixel space (pictures show means: sampled pixels only add noise)."""
    return reconstruction.mean_image(self.likelihood, self.decode(z))


def reparameterize(keys, mean, logvar):
  """z = mean + sigma * eps with eps drawn from each example's own key."""
  eps = jax.vmap(lambda k: jax.random.normal(k, mean.shape[1:], mean.dtype))(keys)
  return mean + jnp.exp(0.5 * logvar) * eps


def make_model(config, info):
  return VAE(nets.NetSpec.from_config(config.model), config.model.latent_dim, info.image_shape,
             config.model.likelihood)


def _terms(config, model, variables, x, keys):
  decoded, mean, logvar = model.apply(variables, x, keys)
  return vae_losses.elbo_terms(config.model.likelihood, decoded, x, mean, logvar,
                               config.model.obs_sigma)


def make_loss(config):
  def loss(model, params, model_state, batch, keys, hparams):
    nll, kl, kl_dims = _terms(config, model, {"params": params, **model_state}, batch["image"],
                              keys)
    value = vae_losses.vae_loss(nll, kl, hparams["beta"])
    metrics = {"recon": nll.mean(), "kl": kl.mean(), "elbo": -(nll + kl).mean()}
    metrics.update({f"kl_dim{d}": v for d, v in enumerate(kl_dims.mean(0))})
    return value, (metrics, model_state)

  return loss


def make_eval_metrics(config):
  def eval_metrics(model, variables, batch, keys, hparams):
    x = batch["image"]
    nll, kl, _ = _terms(config, model, variables, x, keys)
    recon = model.apply(variables, x, method=VAE.reconstruct)
    return {"loss": nll + hparams["beta"] * kl, "elbo": -(nll + kl), "kl": kl, "recon": nll,
            "recon_sse": reconstruction.sse(recon, x)}

  return eval_metrics


def sample(model, variables, key, n):
  z = jax.random.normal(key, (n, model.latent_dim))
  return model.apply(variables, z, method=VAE.generate)


def hparams(config):
  return {"beta": float(config.loss.beta)}


def validate(config):
  m = config.model
  nets.validate(m)
  if m.likelihood not in LIKELIHOODS:
    raise ConfigError(f"model.likelihood={m.likelihood!r}: expected one of {LIKELIHOODS}")
  if not float(m.obs_sigma) > 0:
    raise ConfigError(f"model.obs_sigma={m.obs_sigma}: must be > 0")
  if not float(config.loss.beta) >= 0:
    raise ConfigError(f"loss.beta={config.loss.beta}: must be >= 0")


FAMILY = Family(
    name="vae",
    make_model=make_model,
    make_loss=make_loss,
    make_eval_metrics=make_eval_metrics,
    hparams=hparams,
    validate=validate,
    sample=sample,
    features="posterior_mean",
)

"""Variational autoencoder (Kingma & Welling 2014): diagonal Gaussian posterior, N(0, I) prior.

The likelihood is `model.likelihood` (losses/reconstruction.py): `bernoulli` (decoder emits
logits) or `gaussian` (decoder emits means, fixed scale `model.obs_sigma`). `loss.objective`
picks what is minimized: the beta-weighted ELBO (beta-VAE, Higgins et al. 2017), the
capacity-annealed objective (Burgess et al. 2017) or the importance-weighted bound (IWAE,
Burda et al. 2016).
Every number in them (beta, gamma, C_max, the annealing length) enters the step as an
array, so a population of them can share one compiled step.

Every VAE is evaluated with importance-weighted bounds L_K (eval/iwae_k{K}), eval/nll,
active units and the KL per latent dimension.
"""
from __future__ import annotations

import dataclasses

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vaelab.errors import ConfigError
from vaelab.evaluate import latent_pictures
from vaelab.losses import iwae, reconstruction
from vaelab.losses import vae as vae_losses
from vaelab import checks, spmd
from vaelab.models import base, nets
from vaelab.models.base import Family

# The bounds on log p(x) need a normalized density.
LIKELIHOODS = reconstruction.DENSITIES
# elbo: -ELBO with the KL weighted by loss.beta (beta-VAE for beta > 1); capacity: Burgess
# et al.'s gamma * |KL - C(step)|; iwae: Burda et al.'s K-sample bound, K = loss.iwae_k.
OBJECTIVES = ("elbo", "capacity", "iwae")
# Burda et al.'s threshold on Var_x E_q[z_d | x] for a latent dimension to count as active.
ACTIVE_UNIT_THRESHOLD = 0.01


def config_keys(c, likelihood: str = "bernoulli") -> None:
  """The keys of the VAE family."""
  c.model.name = "vae"
  common_keys(c, likelihood)
  c.loss.objective = "elbo"  # elbo (beta-weighted) | capacity (Burgess) | iwae (Burda)
  c.loss.beta = 1.0
  c.loss.gamma = 1000.0  # capacity objective: weight of |KL - C|
  c.loss.capacity_max = 25.0  # C_max, nats
  c.loss.capacity_steps = 100000  # steps over which C rises linearly from 0 to C_max
  c.loss.iwae_k = 5  # samples per example of the iwae objective


def common_keys(c, likelihood: str = "bernoulli") -> None:
  """The keys every Gaussian-posterior family built on this module reads (validate_model,
  validate_bounds): the likelihood and the final evaluation's bounds."""
  c.model.likelihood = likelihood  # bernoulli | gaussian (losses/reconstruction.py)
  c.model.obs_sigma = 1.0  # scale of the gaussian likelihood
  # Importance-weighted bounds reported at the end; eval/nll = -L_K for the largest K.
  c.eval.iwae_ks = (1, 5, 50, 500)
  # Samples decoded at once per example (memory vs speed): on the default job's final step
  # (500 images of 64x64, K = 100) 25 both compiled and ran faster than 50.
  c.eval.iwae_chunk = 25


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
  return VAE(nets.NetSpec.from_config(config.model, config.dtype), config.model.latent_dim,
             info.image_shape, config.model.likelihood)


def _terms(config, model, variables, x, keys):
  decoded, mean, logvar = model.apply(variables, x, keys)
  return vae_losses.elbo_terms(config.model.likelihood, decoded, x, mean, logvar,
                               config.model.obs_sigma)


def sampled_terms(config, model, variables, x, keys):
  """`_terms` with the posterior's parameters and its sample beside them: (nll, kl, kl_dims,
  mean, logvar, z), for objectives that regularize the codes themselves (beta_tcvae,
  dip_vae). The draw is the one `VAE.__call__` makes from the same keys."""
  mean, logvar = model.apply(variables, x, method=VAE.encode)
  z = reparameterize(keys, mean, logvar)
  decoded = model.apply(variables, z, method=VAE.decode)
  nll, kl, kl_dims = vae_losses.elbo_terms(config.model.likelihood, decoded, x, mean, logvar,
                                           config.model.obs_sigma)
  return nll, kl, kl_dims, mean, logvar, z


def elbo_metrics(nll, kl, kl_dims) -> dict:
  """The train metrics every VAE objective logs: recon, kl, elbo and the KL per latent."""
  metrics = {"recon": nll.mean(), "kl": kl.mean(), "elbo": -(nll + kl).mean()}
  metrics.update({f"kl_dim{d}": v for d, v in enumerate(kl_dims.mean(0))})
  return metrics


def _log_weights(config, model, variables, x, keys, num_samples: int, chunk: int):
  """(B, num_samples) importance log-weights log p(x, z_i) - log q(z_i | x)."""
  mean, logvar = model.apply(variables, x, method=VAE.encode)
  likelihood, sigma = config.model.likelihood, config.model.obs_sigma
  decode_nll = lambda z: reconstruction.nll(likelihood, model.apply(variables, z,
                                                                    method=VAE.decode), x, sigma)
  return iwae.log_weights(decode_nll, keys, mean, logvar, num_samples, chunk)


def _iwae_keys(keys):
  """The IWAE objective's samples, apart from the ELBO's (which feed the metrics)."""
  return jax.vmap(lambda k: jax.random.fold_in(k, 1))(keys)


def _objective_value(config, model, variables, x, keys, nll, kl, hparams):
  """Per-example value of the configured objective, for eval/loss.

  iwae: -L_K with K = loss.iwae_k, the bound being trained. The capacity objective
  constrains the batch-mean KL, so it has no per-example form (gamma * |KL_i - C| of single
  images is thousands of nats and means nothing): it reports the negative ELBO, beside
  which eval/kl shows how close the KL is to C_max.
  """
  if config.loss.objective == "iwae":
    k = int(config.loss.iwae_k)
    return -iwae.log_mean_exp(_log_weights(config, model, variables, x, _iwae_keys(keys), k, k))
  if config.loss.objective == "capacity":
    return nll + kl
  return nll + hparams["beta"] * kl


def make_loss(config, info=None):
  objective = config.loss.objective
  train_k = int(config.loss.iwae_k)

  def loss(model, params, model_state, batch, keys, hparams):
    variables = {"params": params, **model_state}
    x = batch["image"]
    nll, kl, kl_dims = _terms(config, model, variables, x, keys)
    metrics = elbo_metrics(nll, kl, kl_dims)
    if objective == "capacity":
      target = vae_losses.capacity(hparams["step"], hparams["capacity_max"],
                                   hparams["capacity_steps"])
      value = vae_losses.capacity_loss(nll, kl, hparams["gamma"], target)
      metrics["capacity"] = target
    elif objective == "iwae":
      value = iwae.iwae_loss(_log_weights(config, model, variables, x, _iwae_keys(keys),
                                          train_k, train_k))
      metrics[f"iwae_k{train_k}"] = -value
    else:
      value = vae_losses.vae_loss(nll, kl, hparams["beta"])
    return value, (metrics, model_state)

  return loss


def make_eval_metrics(config):
  return eval_metrics_with(config, functools.partial(_objective_value, config))


def negative_elbo(model, variables, x, keys, nll, kl, hparams):
  """eval/loss of an objective whose regularizer is a statistic of the batch (capacity,
  beta_tcvae's TC, dip_vae's covariance): it has no per-example value, so eval/loss reports
  the negative ELBO."""
  return nll + kl


def eval_metrics_with(config, objective_value):
  """The VAE's per-example evaluation metrics, eval/loss given by `objective_value(model,
  variables, x, keys, nll, kl, hparams)` -> (B,)."""
  def eval_metrics(model, variables, batch, keys, hparams):
    x = batch["image"]
    nll, kl, kl_dims = _terms(config, model, variables, x, keys)
    recon = model.apply(variables, x, method=VAE.reconstruct)
    out = {"loss": objective_value(model, variables, x, keys, nll, kl, hparams),
           "elbo": -(nll + kl), "kl": kl,
           "recon": nll,
           # Against the image before binarization: the decoder mean estimates its intensities.
           "recon_sse": reconstruction.sse(recon, batch.get("image_raw", x))}
    out.update({f"kl_dim{d}": kl_dims[:, d] for d in range(kl_dims.shape[1])})
    return out

  return eval_metrics


def make_final_eval_metrics(config):
  """Importance-weighted bounds eval/iwae_k{K} for K in eval.iwae_ks, all from one set of
  max(K) samples per image; eval/nll = -L_{max K}; bits_per_dim for Bernoulli pixels."""
  ks = sorted(int(k) for k in config.eval.iwae_ks)
  chunk = int(config.eval.iwae_chunk)

  def final_metrics(model, variables, batch, keys, hparams):
    x = batch["image"]
    w = _log_weights(config, model, variables, x, keys, ks[-1], chunk)
    bounds = iwae.bounds_from_log_weights(w, ks)
    out = {f"iwae_k{k}": v for k, v in bounds.items()}
    out["nll"] = -bounds[ks[-1]]
    if config.model.likelihood == "bernoulli":
      out["bits_per_dim"] = out["nll"] / (math.prod(x.shape[1:]) * math.log(2))
    return out

  return final_metrics


def final_analyses(config, model, variables, train_source, eval_source):
  """Active units (Burda et al.): latent dimensions whose posterior mean varies over the
  evaluation images, Var_x E_q[z_d | x] > 0.01."""
  means = spmd.apply_in_chunks(model, variables, eval_source, method=VAE.posterior_mean,
                               indices=np.arange(min(len(eval_source), 10000)))
  return {"eval/active_units": float((means.var(0) > ACTIVE_UNIT_THRESHOLD).sum())}


def sample(model, variables, key, n, config=None):
  return _sample(model, variables, key, int(n))


@functools.partial(jax.jit, static_argnums=(0, 3))
def _sample(model, variables, key, n):
  # One compilation: run op by op, the draw and the decoder compiled ~20 programs, a large
  # part of the default job's pictures.
  z = jax.random.normal(key, (n, model.latent_dim))
  return model.apply(variables, z, method=VAE.generate)


def hparams(config):
  return {"beta": float(config.loss.beta), "gamma": float(config.loss.gamma),
          "capacity_max": float(config.loss.capacity_max),
          "capacity_steps": float(config.loss.capacity_steps)}


def validate(config):
  l = config.loss
  validate_model(config)
  if l.objective not in OBJECTIVES:
    raise ConfigError(f"loss.objective={l.objective!r}: expected one of {OBJECTIVES}")
  for key in ("beta", "gamma", "capacity_max"):
    if not float(l[key]) >= 0:
      raise ConfigError(f"loss.{key}={l[key]}: must be >= 0")
  checks.integer(l.capacity_steps, "loss.capacity_steps", 1)
  checks.integer(l.iwae_k, "loss.iwae_k", 1)
  validate_bounds(config)


def validate_model(config):
  """The trunk, model.likelihood and model.obs_sigma: what every Gaussian-posterior family
  built on this module checks."""
  m = config.model
  nets.validate(m)
  reconstruction.validate(m.likelihood, LIKELIHOODS, m.name)
  if not float(m.obs_sigma) > 0:
    raise ConfigError(f"model.obs_sigma={m.obs_sigma}: must be > 0")


def validate_bounds(config):
  """eval.iwae_ks and eval.iwae_chunk, read by the final metrics (make_final_eval_metrics)."""
  ks = tuple(config.eval.iwae_ks)
  if not ks:
    raise ConfigError("eval.iwae_ks=(): give at least one number of importance samples, "
                      "e.g. (1, 5, 50, 500)")
  for k in ks:
    checks.integer(k, f"eval.iwae_ks (entry {k!r})", 1)
  checks.integer(config.eval.iwae_chunk, "eval.iwae_chunk", 1)


FAMILY = Family(
    name="vae",
    make_model=make_model,
    make_loss=make_loss,
    make_eval_metrics=make_eval_metrics,
    make_final_eval_metrics=make_final_eval_metrics,
    final_analyses=final_analyses,
    pictures=latent_pictures.save_latent_pictures,
    hparams=hparams,
    validate=validate,
    sample=sample,
    features=base.method("posterior_mean"),
    decode=base.method("generate"),
    mixed_precision=True,
    options={"loss.objective": OBJECTIVES, "model.likelihood": LIKELIHOODS,
             "model.encoder": nets.ENCODERS},
)


def variant(name: str, **hooks) -> Family:
  """A family that is this VAE with its own objective (β-TCVAE, DIP-VAE, FactorVAE, the
  weakly-supervised VAEs): the VAE's evaluation, analyses, pictures, prior sampling and
  representation, with `hooks` (make_loss, hparams, validate, options, ...) its own. Its
  options are only those it names."""
  return dataclasses.replace(FAMILY, name=name, **{"options": {}, **hooks})

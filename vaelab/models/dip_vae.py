"""DIP-VAE (Kumar et al. 2018): a VAE whose codes' covariance is pulled towards the identity.

The model is the VAE of `vaelab/models/vae.py`; the step minimizes

  -E_q[log p(x|z)] + KL(q(z|x) || p(z))
      + lambda_od * sum_{i != j} C_ij^2 + lambda_d * sum_i (C_ii - 1)^2,

disentanglement_lib's DIPVAE objective, with C over the global batch
(`vaelab/losses/dip_vae.py`): `loss.dip_type` = `i`, the covariance of the encoder means
(DIP-VAE-I), or `ii`, that plus the mean of the posterior variances, the aggregate
posterior's covariance (DIP-VAE-II). `loss.lambda_d` = -1 (the default) derives lambda_d
as disentanglement_lib does, lambda_d_factor * lambda_od with its factor 10 for i and 1 for
ii, from whatever `loss.dip_type` and `loss.lambda_od` end up being (variants, overrides,
sweeps); a value >= 0 sets it explicitly. lambda_od and lambda_d are step arguments
(populations share one compiled step).

Logged: train/dip_offdiag and train/dip_diag (the two sums, unweighted) and train/dip (the
weighted penalty); the evaluation adds eval/dip_offdiag and eval/dip_diag of the whole
evaluation set's covariance, beside the VAE's metrics. eval/loss is the negative ELBO: the
penalty is a statistic of a set, not of an image.
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from vaelab.errors import ConfigError
from vaelab.losses import dip_vae as dip_losses
from vaelab.models import vae
from vaelab.models.vae import VAE

DIP_TYPES = dip_losses.DIP_TYPES
# disentanglement_lib's lambda_d_factor per type (dip_vae_i: 10, dip_vae_ii: 1).
LAMBDA_D_FACTOR = {"i": 10.0, "ii": 1.0}
DERIVED = -1.0  # loss.lambda_d: lambda_d_factor[dip_type] * lambda_od


def config_keys(c, likelihood: str = "bernoulli") -> None:
  """The keys of the DIP-VAE family (the VAE's model and bound keys, its own loss keys)."""
  c.model.name = "dip_vae"
  vae.common_keys(c, likelihood)
  c.loss.dip_type = "i"  # i (covariance of the means) | ii (of the aggregate posterior)
  c.loss.lambda_od = 10.0  # weight of the squared off-diagonal entries
  # Weight of the squared deviations of the diagonal from 1; -1: derived as dlib does.
  c.loss.lambda_d = DERIVED


def make_loss(config, info=None):
  dip_type = config.loss.dip_type

  def loss(model, params, model_state, batch, keys, hparams):
    variables = {"params": params, **model_state}
    nll, kl, kl_dims, mean, logvar, _ = vae.sampled_terms(config, model, variables,
                                                          batch["image"], keys)
    cov = dip_losses.dip_covariance(dip_type, mean, logvar)
    penalty = dip_losses.dip_penalty(cov, hparams["lambda_od"], hparams["lambda_d"])
    off, diag = dip_losses.deviations(cov)
    metrics = vae.elbo_metrics(nll, kl, kl_dims)
    metrics.update(dip_offdiag=off, dip_diag=diag, dip=penalty)
    return dip_losses.dip_vae_loss(nll, kl, penalty), (metrics, model_state)

  return loss


def make_eval_metrics(config):
  return vae.eval_metrics_with(config, vae.negative_elbo)


def make_eval_set_stats(config):
  """The evaluation set's covariance of the codes, from sums over its batches:
  eval/dip_offdiag and eval/dip_diag."""
  dip_type = config.loss.dip_type

  def stats(model, variables, batch, keys, hparams, mask):
    mean, logvar = model.apply(variables, batch["image"], method=VAE.encode)
    w = mask[:, None]
    return {"count": mask.sum(), "mean": (w * mean).sum(0),
            "outer": jnp.einsum("bi,bj->ij", w * mean, mean),
            "var": (w * jnp.exp(logvar)).sum(0)}

  def reduce(totals):
    n = float(totals["count"])
    m = np.asarray(totals["mean"], np.float64) / n
    cov = np.asarray(totals["outer"], np.float64) / n - np.outer(m, m)
    if dip_type == "ii":
      cov = cov + np.diag(np.asarray(totals["var"], np.float64) / n)
    diag = np.diag(cov)
    return {"dip_offdiag": float(np.sum(np.square(cov - np.diag(diag)))),
            "dip_diag": float(np.sum(np.square(diag - 1.0)))}

  return stats, reduce


def lambda_d(config) -> float:
  """The diagonal weight the step uses: `loss.lambda_d`, or dlib's derived value when it
  is -1 (10 * lambda_od for dip_type i, lambda_od for ii)."""
  l = config.loss
  if float(l.lambda_d) == DERIVED:
    return LAMBDA_D_FACTOR[l.dip_type] * float(l.lambda_od)
  return float(l.lambda_d)


def hparams(config):
  return {"lambda_od": float(config.loss.lambda_od), "lambda_d": lambda_d(config)}


def validate(config):
  vae.validate_model(config)
  l = config.loss
  if l.dip_type not in DIP_TYPES:
    raise ConfigError(f"loss.dip_type={l.dip_type!r}: expected one of {DIP_TYPES}")
  if not float(l.lambda_od) >= 0:
    raise ConfigError(f"loss.lambda_od={l.lambda_od}: must be >= 0")
  if not (float(l.lambda_d) >= 0 or float(l.lambda_d) == DERIVED):
    raise ConfigError(f"loss.lambda_d={l.lambda_d}: must be >= 0, or -1 to derive it from "
                      f"loss.lambda_od and loss.dip_type as disentanglement_lib does")
  vae.validate_bounds(config)


FAMILY = vae.variant(
    "dip_vae", make_loss=make_loss, make_eval_metrics=make_eval_metrics,
    make_eval_set_stats=make_eval_set_stats, hparams=hparams, validate=validate,
    options={"loss.dip_type": DIP_TYPES})

"""Sparse autoencoder (Ng's lecture notes): one sigmoid hidden layer with a KL sparsity penalty.

loss = reconstruction + loss.sparsity_weight * sum_j KL(model.rho || rho_hat_j), where
rho_hat_j is unit j's mean activation over the global batch (see losses/sparse_ae.py for why
it is averaged across devices). Both numbers enter the step as arrays (FAMILY.hparams).
The module is the plain AE with a sigmoid code (`model.code_activation="sigmoid"`,
`model.hidden=()` for Ng's single hidden layer); evaluation adds eval/mean_activation, the
mean over units of rho_hat on the evaluation set, to the shared autoencoder metrics.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from vaelab.errors import ConfigError
from vaelab.losses import reconstruction
from vaelab.losses import sparse_ae as sparse_losses
from vaelab.models import ae
from vaelab.models.base import Family


def config_keys(c) -> None:
  """The keys of the sparse autoencoder: the autoencoder's with a sigmoid code (the
  Bernoulli KL needs activations in (0, 1)), the target activation and the penalty's
  weight (Ng's values)."""
  ae.config_keys(c)
  c.model.name = "sparse_ae"
  c.model.code_activation = "sigmoid"
  c.model.rho = 0.05  # target mean activation of every unit
  c.loss.sparsity_weight = 3.0  # beta, the weight of sum_j KL(rho || rho_hat_j)


def make_loss(config, info=None):
  likelihood = config.model.likelihood

  def loss(model, params, model_state, batch, keys, hparams):
    x = batch["image"]
    variables = {"params": params, **model_state}
    code = model.apply(variables, x, method="encode")
    logits = model.apply(variables, code, method="decode")
    recon = reconstruction.nll(likelihood, logits, x).mean()
    rho_hat = sparse_losses.mean_activation(code)
    penalty = sparse_losses.sparsity_penalty(hparams["rho"], rho_hat)
    value = recon + hparams["sparsity_weight"] * penalty
    metrics = {"recon": recon, "sparsity_kl": penalty, "mean_activation": rho_hat.mean(),
               "recon_sse": reconstruction.sse(jax.nn.sigmoid(logits), x).mean()}
    return value, (metrics, model_state)

  return loss


def make_eval_metrics(config):
  shared = ae.make_eval_metrics(config)

  def eval_metrics(model, variables, batch, keys, hparams):
    out = shared(model, variables, batch, keys, hparams)
    code = model.apply(variables, batch["image"], method="encode")
    # The mean of this over the evaluation set is the mean over units of rho_hat.
    out["mean_activation"] = jnp.mean(code, axis=-1)
    return out

  return eval_metrics


def hparams(config):
  return {"rho": float(config.model.rho), "sparsity_weight": float(config.loss.sparsity_weight)}


def validate(config):
  ae.validate(config)
  if config.model.code_activation != "sigmoid":
    raise ConfigError(f"model.code_activation={config.model.code_activation!r}: the sparse "
                      "autoencoder's Bernoulli KL needs activations in (0, 1); use 'sigmoid'")
  rho = float(config.model.rho)
  if not 0 < rho < 1:
    raise ConfigError(f"model.rho={config.model.rho}: the target activation must be in (0, 1)")
  if not float(config.loss.sparsity_weight) >= 0:
    raise ConfigError(f"loss.sparsity_weight={config.loss.sparsity_weight}: must be >= 0")


FAMILY = Family(
    name="sparse_ae",
    make_model=ae.make_model,
    make_loss=make_loss,
    make_eval_metrics=make_eval_metrics,
    make_final_eval_metrics=ae.make_final_eval_metrics,
    hparams=hparams,
    validate=validate,
    final_baselines=ae.final_baselines,
    features=ae.FAMILY.features,
    decode=ae.FAMILY.decode,
    pictures=ae.FAMILY.pictures,
    mixed_precision=True,
)

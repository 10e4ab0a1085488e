"""beta-TCVAE (Chen et al. 2018): a VAE whose total correlation is weighted by beta.

The model is the VAE of `vaelab/models/vae.py` (diagonal Gaussian posterior, N(0, I) prior,
`model.likelihood` bernoulli or gaussian); only the objective differs. The KL splits into
index-code mutual information, total correlation (TC) and dimension-wise KL, estimated over
the global batch (`vaelab/losses/beta_tcvae.py`, `loss.tc_estimator` = `mws` or `mss`, with
the training set's size N), and the step minimizes

  -E_q[log p(x|z)] + KL(q(z|x) || p(z)) + (beta - 1) * TC,

disentanglement_lib's form (its BetaTCVAE regularizer: the closed-form KL plus
(beta - 1) times the TC estimate). It is Chen et al.'s Eq. 4 with alpha = gamma = 1,
-log p(x|z) + MI + beta * TC + DWKL, with the sampled KL MI + TC + DWKL replaced by the
closed form, whose expectation it is: the same TC gradient with a lower-variance KL, and the
objective of the study this family reproduces (Locatello et al. 2019). With mws the TC here
keeps the (D - 1) log(N B) disentanglement_lib leaves out, so train/tc is the estimate
itself; the loss reads (beta - 1) (D - 1) log(N B) above dlib's, the gradients are dlib's.
beta is a step argument (populations of betas share one compiled step). Logged as well:
train/mi, train/tc, train/dwkl (their sum is the sampled KL of the batch).

Evaluation is the VAE's (ELBO, IWAE bounds, active units, disentanglement scores);
eval/loss is the negative ELBO, the TC being a statistic of a batch, not of an image.
"""
from __future__ import annotations

from vaelab.errors import ConfigError
from vaelab.losses import beta_tcvae as tc_losses
from vaelab.models import vae

TC_ESTIMATORS = tc_losses.ESTIMATORS


def config_keys(c, likelihood: str = "bernoulli") -> None:
  """The keys of the beta-TCVAE family (the VAE's model and bound keys, its own loss keys)."""
  c.model.name = "beta_tcvae"
  vae.common_keys(c, likelihood)
  c.loss.beta = 6.0  # weight of the total correlation (1: the plain VAE)
  c.loss.tc_estimator = "mws"  # mws (minibatch-weighted) | mss (minibatch stratified)


def make_loss(config, info=None):
  estimator = config.loss.tc_estimator
  num_examples = None if info is None else info.num_examples
  if num_examples is None:
    raise ValueError("beta_tcvae's estimators need the training set's size: make_loss "
                     "takes the training split's SourceInfo with num_examples")
  if estimator == "mss" and int(num_examples) < int(config.batch_size):
    raise ConfigError(f"loss.tc_estimator='mss' weights a batch of batch_size="
                      f"{config.batch_size} against a training set of {num_examples}: the "
                      f"set must hold at least a batch")

  def loss(model, params, model_state, batch, keys, hparams):
    variables = {"params": params, **model_state}
    nll, kl, kl_dims, mean, logvar, z = vae.sampled_terms(config, model, variables,
                                                          batch["image"], keys)
    mi, tc, dwkl = tc_losses.global_decomposition(z, mean, logvar, int(num_examples),
                                                  estimator)
    metrics = vae.elbo_metrics(nll, kl, kl_dims)
    metrics.update(mi=mi, tc=tc, dwkl=dwkl)
    return tc_losses.beta_tcvae_loss(nll, kl, tc, hparams["beta"]), (metrics, model_state)

  return loss


def make_eval_metrics(config):
  return vae.eval_metrics_with(config, vae.negative_elbo)


def hparams(config):
  return {"beta": float(config.loss.beta)}


def validate(config):
  vae.validate_model(config)
  l = config.loss
  if l.tc_estimator not in TC_ESTIMATORS:
    raise ConfigError(f"loss.tc_estimator={l.tc_estimator!r}: expected one of "
                      f"{TC_ESTIMATORS}")
  if not float(l.beta) >= 0:
    raise ConfigError(f"loss.beta={l.beta}: must be >= 0")
  if int(config.batch_size) < 2:
    raise ConfigError(f"batch_size={config.batch_size}: beta_tcvae estimates the aggregate "
                      f"posterior from the batch and needs at least 2 examples")
  vae.validate_bounds(config)


FAMILY = vae.variant(
    "beta_tcvae", make_loss=make_loss, make_eval_metrics=make_eval_metrics, hparams=hparams,
    validate=validate, options={"loss.tc_estimator": TC_ESTIMATORS})

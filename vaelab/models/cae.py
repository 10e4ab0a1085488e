"""Contractive autoencoder (Rifai et al. 2011): reconstruction + lambda * ||J_f(x)||_F^2.

The module is `ae.AE` (the paper's shape is one sigmoid layer, 784-1000: `model.hidden=()`,
`model.code_activation="sigmoid"`). `loss.penalty` picks how the encoder Jacobian's squared
Frobenius norm is computed (vaelab/losses/cae.py): `closed_form` (exact, one sigmoid
layer only, the cost of a matmul), `estimator` (unbiased, `loss.num_projections` jvps, any
encoder) or `jacfwd` (the definition, any encoder, the full Jacobian: many times an AE
step).
lambda (`loss.contractive_weight`) enters the step as an array, so runs that differ only in
lambda can share one compiled step.
"""
from __future__ import annotations

import jax

from vaelab import checks
from vaelab.errors import ConfigError
from vaelab.losses import cae as cae_losses
from vaelab.losses import reconstruction
from vaelab.models import ae

# Separates the projections' randomness from any other use of the example keys.
_PROJECTION_STREAM = 7


def config_keys(c) -> None:
  """The keys of the contractive autoencoder: the autoencoder's, lambda and the penalty's
  path (`estimator` works on any encoder; `closed_form` needs the paper's single sigmoid
  layer, model.hidden=() and model.code_activation='sigmoid')."""
  ae.config_keys(c)
  c.model.name = "cae"
  c.loss.contractive_weight = 0.1  # lambda
  c.loss.penalty = "estimator"  # closed_form | estimator | jacfwd
  c.loss.num_projections = 1  # estimator only


def penalty_fn(penalty: str, num_projections: int):
  """-> fn(model, variables, x, keys) -> (per-example ||J||_F^2 (B,), code (B, H))."""

  def fn(model, variables, x, keys):
    encode = lambda v: model.apply(variables, v, method="encode")
    if penalty == "closed_form":
      h = encode(x)
      kernel = variables["params"]["encoder"]["dense_0"]["kernel"]
      return cae_losses.jacobian_fro2_sigmoid(h, kernel), h
    if penalty == "estimator":
      keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, _PROJECTION_STREAM)
      return cae_losses.jacobian_fro2_estimator(encode, x, keys, num_projections), encode(x)
    return cae_losses.jacobian_fro2_jacfwd(encode, x), encode(x)

  return fn


def make_loss(config, info=None):
  likelihood = config.model.likelihood
  penalty = penalty_fn(config.loss.penalty, int(config.loss.num_projections))

  def loss(model, params, model_state, batch, keys, hparams):
    x = batch["image"]
    variables = {"params": params, **model_state}
    fro2, code = penalty(model, variables, x, keys)
    logits = model.apply(variables, code, method="decode")
    recon = reconstruction.nll(likelihood, logits, x).mean()
    jac = fro2.mean()
    value = recon + hparams["contractive_weight"] * jac
    sse = reconstruction.sse(jax.nn.sigmoid(logits), x).mean()
    return value, ({"recon": recon, "jacobian_fro2": jac, "recon_sse": sse}, model_state)

  return loss


def hparams(config):
  return {"contractive_weight": float(config.loss.contractive_weight)}


def validate(config):
  ae.validate(config)
  m, loss = config.model, config.loss
  weight = float(loss.contractive_weight)
  if not weight >= 0:
    raise ConfigError(f"loss.contractive_weight={weight}: must be >= 0")
  if loss.penalty not in cae_losses.PENALTIES:
    raise ConfigError(f"loss.penalty={loss.penalty!r}: expected one of {cae_losses.PENALTIES}")
  checks.integer(loss.num_projections, "loss.num_projections", 1)
  if loss.penalty == "closed_form" and (m.encoder != "mlp" or tuple(m.hidden)
                                        or m.code_activation != "sigmoid"):
    raise ConfigError(
        f"loss.penalty='closed_form' is exact only for one sigmoid layer (model.encoder='mlp', "
        f"model.hidden=(), model.code_activation='sigmoid'); got model.encoder={m.encoder!r}, "
        f"model.hidden={tuple(m.hidden)}, model.code_activation={m.code_activation!r}. Use "
        f"loss.penalty='estimator' (or 'jacfwd') for other encoders.")


FAMILY = ae.variant("cae", make_loss, hparams, validate,
                    options={"loss.penalty": cae_losses.PENALTIES})

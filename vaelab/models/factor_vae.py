"""FactorVAE (Kim & Mnih 2018): a VAE whose total correlation a discriminator estimates.

The model is the VAE of `vaelab/models/vae.py` plus a discriminator over codes, built as
disentanglement_lib builds it: six dense layers of 1000 leaky-ReLU units (slope 0.2,
Glorot-uniform kernels) and two logits. The VAE minimizes

  -E_q[log p(x|z)] + KL(q(z|x) || p(z)) + gamma * E_q[logit_0(z) - logit_1(z)],

the logit difference estimating the total correlation; the discriminator, a parameter group
of its own (`Family.groups`: trained by `discriminator_optimizer.*`, disentanglement_lib's
Adam with b1 0.5, b2 0.9, lr 1e-4), learns on the same batch to tell the codes from codes
whose dimensions were shuffled across the GLOBAL batch (`losses/factor_vae.py`). The VAE's
loss does not train the discriminator nor the discriminator's loss the encoder: the step
takes each part's gradient of its own loss only.

Logged: train/tc, train/discriminator_loss (ln 2 at chance), train/discriminator_accuracy,
the group's train/discriminator_grad_norm and train/discriminator_learning_rate. Evaluation
is the VAE's, with eval/loss the objective above per image, and the discriminator's loss and
accuracy on held-out codes (eval/discriminator_loss, eval/discriminator_accuracy).
"""
from __future__ import annotations

import flax.linen as nn
import jax

from vaelab.errors import ConfigError
from vaelab.losses import factor_vae as fv
from vaelab import checks, config_base
from vaelab.models import nets, vae

DISCRIMINATOR = "discriminator"  # the submodule, its parameter group and config section


class Discriminator(nn.Module):
  hidden: tuple[int, ...]

  @nn.compact
  def __call__(self, z):
    h = z.astype(jax.numpy.float32)
    for width in self.hidden:
      h = nn.leaky_relu(nn.Dense(width, kernel_init=nn.initializers.glorot_uniform())(h), 0.2)
    return nn.Dense(2, kernel_init=nn.initializers.glorot_uniform())(h)


class FactorVAE(vae.VAE):
  discriminator_hidden: tuple[int, ...] = (1000,) * 6

  def setup(self):
    super().setup()
    self.discriminator = Discriminator(tuple(self.discriminator_hidden))

  def __call__(self, x, keys):
    decoded, mean, logvar = super().__call__(x, keys)
    if self.is_initializing():  # the discriminator's parameters are made with the model's
      self.discriminator(mean)
    return decoded, mean, logvar

  def discriminate(self, z):
    """(B, 2) logits: class 0 codes of the joint q(z), class 1 shuffled codes."""
    return self.discriminator(z)


def config_keys(c, likelihood: str = "bernoulli") -> None:
  """The keys of the FactorVAE family: the VAE's model and bound keys, gamma, the
  discriminator's widths and its own optimizer section."""
  c.model.name = "factor_vae"
  vae.common_keys(c, likelihood)
  c.model.discriminator_hidden = (1000,) * 6
  c.loss.gamma = 10.0  # weight of the total correlation estimate
  c[f"{DISCRIMINATOR}_optimizer"] = config_base.optimizer_section(
      learning_rate=1e-4, b1=0.5, b2=0.9)


def make_model(config, info):
  m = config.model
  return FactorVAE(nets.NetSpec.from_config(m, config.dtype), m.latent_dim, info.image_shape,
                   m.likelihood, tuple(int(w) for w in m.discriminator_hidden))


def _discriminator_terms(model, variables, z, keys):
  """Per-example (discriminator loss, accuracy) on codes z (its own gradient stops at z)."""
  z = jax.lax.stop_gradient(z)
  shuffled = fv.shuffle_dimensions(z, jax.vmap(lambda k: jax.random.fold_in(k, 2))(keys))
  logits = model.apply(variables, z, method=FactorVAE.discriminate)
  logits_shuffled = model.apply(variables, shuffled, method=FactorVAE.discriminate)
  return fv.discriminator_terms(logits, logits_shuffled)


def make_loss(config, info=None):
  def loss(model, params, model_state, batch, keys, hparams):
    variables = {"params": params, **model_state}
    nll, kl, kl_dims, _, _, z = vae.sampled_terms(config, model, variables, batch["image"],
                                                  keys)
    tc = fv.total_correlation(model.apply(variables, z, method=FactorVAE.discriminate))
    d_loss, d_accuracy = _discriminator_terms(model, variables, z, keys)
    metrics = vae.elbo_metrics(nll, kl, kl_dims)
    metrics.update(tc=tc.mean(), discriminator_accuracy=d_accuracy.mean())
    losses = {"model": (nll + kl + hparams["gamma"] * tc).mean(),
              DISCRIMINATOR: d_loss.mean()}
    return losses, (metrics, model_state)

  return loss


def _objective(model, variables, x, keys, nll, kl, hparams):
  """eval/loss per image: the objective trained, the TC estimate being per code."""
  mean, logvar = model.apply(variables, x, method=vae.VAE.encode)
  z = vae.reparameterize(keys, mean, logvar)
  tc = fv.total_correlation(model.apply(variables, z, method=FactorVAE.discriminate))
  return nll + kl + hparams["gamma"] * tc


def make_eval_metrics(config):
  vae_metrics = vae.eval_metrics_with(config, _objective)

  def eval_metrics(model, variables, batch, keys, hparams):
    out = vae_metrics(model, variables, batch, keys, hparams)
    mean, logvar = model.apply(variables, batch["image"], method=vae.VAE.encode)
    z = vae.reparameterize(keys, mean, logvar)
    out["discriminator_loss"], out["discriminator_accuracy"] = _discriminator_terms(
        model, variables, z, keys)
    return out

  return eval_metrics


def hparams(config):
  return {"gamma": float(config.loss.gamma)}


def validate(config):
  vae.validate_model(config)
  if not float(config.loss.gamma) >= 0:
    raise ConfigError(f"loss.gamma={config.loss.gamma}: must be >= 0")
  widths = tuple(config.model.discriminator_hidden)
  if not widths or not all(checks.is_integer(w) and w >= 1 for w in widths):
    raise ConfigError(f"model.discriminator_hidden={widths!r}: expected a non-empty tuple of "
                      f"positive integers (disentanglement_lib: six layers of 1000)")
  if int(config.batch_size) < 2:
    raise ConfigError(f"batch_size={config.batch_size}: the discriminator's shuffled codes "
                      f"come from the batch and need at least 2 examples")
  vae.validate_bounds(config)


FAMILY = vae.variant(
    "factor_vae", make_model=make_model, make_loss=make_loss,
    make_eval_metrics=make_eval_metrics, hparams=hparams, validate=validate,
    groups=(DISCRIMINATOR,))

"""VQGAN's objective (Esser et al. 2021) beside the VQ-VAE's: an adversarial term from a patch
discriminator, its adaptive weight, and the discriminator's own loss.

The generator (encoder, quantizer, decoder) minimises

  L_rec + L_quant + adopt(step) * lambda * L_G,  lambda = disc_weight * sg(clip(
      ||grad_W L_rec|| / (||grad_W L_G|| + 1e-4), 0, 1e4))

with W the decoder's last kernel and L_rec the reconstruction plus the perceptual term, so
the adversarial gradient reaching the decoder is never much larger than the reconstruction's
(taming-transformers' `calculate_adaptive_weight`). The discriminator minimises
adopt(step) * (L_D + lecam_weight * R_LeCam). `adopt` is 0 before `loss.disc_start`
(taming's `adopt_weight`): until then the autoencoder trains on reconstruction alone and the
discriminator does not move.

These are pure functions of logits and gradients; the family (models/vqgan.py) assembles
them. Means here are over one device's shard; the train step averages them over devices.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

GANS = ("hinge", "non_saturating", "none")
MAX_WEIGHT = 1e4
EPS = 1e-4


def discriminator_loss(gan: str, real, fake):
  """The discriminator's loss from its logits on real and reconstructed images (means over
  every patch): hinge 0.5 (E relu(1 - D(x)) + E relu(1 + D(x_hat))), non-saturating
  0.5 (E softplus(-D(x)) + E softplus(D(x_hat))) = 0.5 (-E log s(D(x)) - E log(1 - s(D(x_hat))))."""
  if gan == "hinge":
    return 0.5 * (jnp.mean(jax.nn.relu(1.0 - real)) + jnp.mean(jax.nn.relu(1.0 + fake)))
  if gan == "non_saturating":
    return 0.5 * (jnp.mean(jax.nn.softplus(-real)) + jnp.mean(jax.nn.softplus(fake)))
  raise ValueError(f"loss.gan={gan!r}: expected one of {GANS[:2]}")


def generator_loss(gan: str, fake):
  """The generator's adversarial loss: hinge -E D(x_hat), non-saturating E softplus(-D(x_hat))."""
  if gan == "hinge":
    return -jnp.mean(fake)
  if gan == "non_saturating":
    return jnp.mean(jax.nn.softplus(-fake))
  raise ValueError(f"loss.gan={gan!r}: expected one of {GANS[:2]}")


def adopt_weight(step, start):
  """1 from step `start` on, 0 before."""
  return (step >= start).astype(jnp.float32)


def adaptive_weight(grad_rec, grad_gan, disc_weight):
  """disc_weight * sg(clip(||grad_rec|| / (||grad_gan|| + 1e-4), 0, 1e4)), from the two
  losses' gradients with respect to the decoder's last kernel (those of the global batch)."""
  ratio = jnp.linalg.norm(grad_rec.ravel()) / (jnp.linalg.norm(grad_gan.ravel()) + EPS)
  return disc_weight * lax.stop_gradient(jnp.clip(ratio, 0.0, MAX_WEIGHT))


def lecam_ema(ema, value, decay):
  """One step of the exponential moving average of a discriminator output's mean."""
  return decay * ema + (1.0 - decay) * value


def lecam_regularizer(real, fake, ema_real, ema_fake):
  """LeCam regularisation (Tseng et al. 2021): E relu(D(x) - ema_fake)^2 +
  E relu(ema_real - D(x_hat))^2, the EMAs of D's mean outputs held constant."""
  ema_real, ema_fake = lax.stop_gradient(ema_real), lax.stop_gradient(ema_fake)
  return (jnp.mean(jnp.square(jax.nn.relu(real - ema_fake)))
          + jnp.mean(jnp.square(jax.nn.relu(ema_real - fake))))


def with_gradient(value, out, cotangent):
  """A scalar equal to `value` whose gradient with respect to `out` is `cotangent` (both
  held constant): a loss whose gradient was computed inside the objective already, applied
  to the rest of the network through `out`."""
  product = jnp.sum(lax.stop_gradient(cotangent) * out)
  return lax.stop_gradient(value) + product - lax.stop_gradient(product)

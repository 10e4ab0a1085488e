"""Reconstruction objective of the deterministic autoencoders (decoders emit logits)."""
import jax

from vaelab.losses import reconstruction


def recon_loss_per_example(recon_loss: str, logits, x):
  """`model.recon_loss` per example: `bernoulli` cross-entropy, or `mse` (squared error of
  the sigmoid image)."""
  if recon_loss == "mse":
    return reconstruction.sse(jax.nn.sigmoid(logits), x)
  return reconstruction.bernoulli_nll(logits, x)

"""Objective of the plain (deterministic) autoencoder."""
from vaelab.losses import reconstruction


def ae_loss(recon_loss: str, decoded, x):
  """Batch mean of the reconstruction loss named by `model.recon_loss` (`bernoulli` | `mse`)."""
  return reconstruction.nll(recon_loss, decoded, x).mean()

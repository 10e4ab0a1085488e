"""VQ-VAE objective (van den Oord et al. 2017): reconstruction + codebook + beta * commitment.

  L = recon + ||sg(z_e) - e||^2 + beta ||z_e - sg(e)||^2

The codebook term moves the codes toward the encoder outputs; with an EMA codebook the
moving averages do that and the term is dropped: L = recon + beta * commitment. The
commitment term keeps the encoder's outputs near their codes, so that they do not grow
away from a codebook that adapts slowly. Both are summed over the latent elements of an
image, like the reconstruction term is over its pixels (the paper's ||.||^2), so the
per-example value is the negative log-likelihood plus the quantization terms; batch means
are taken by the caller. The two squared norms have the same value and differ only in
where the gradient goes.

The terms act on the (input, code) pairs a quantizer reports (`pairs` of its output,
models/quantizer.py): one per codebook lookup. A VQ gives one pair per latent level, a
residual VQ one per codebook (each level's residual and its code, so every codebook gets
its own codebook term and the encoder a commitment to each), FSQ none: its grid is fixed
and its bound keeps the input within half a level of the code, so the objective is the
reconstruction alone (Mentzer et al. 2023).
"""
from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from vaelab.losses import reconstruction


def _sum_latent(x):
  return x.reshape(x.shape[0], -1).sum(-1)


def codebook_loss(z_e, z_q):
  """Per example ||sg(z_e) - e||^2: gradient only to the codes."""
  return _sum_latent(jnp.square(lax.stop_gradient(z_e) - z_q))


def commitment_loss(z_e, z_q):
  """Per example ||z_e - sg(e)||^2: gradient only to the encoder."""
  return _sum_latent(jnp.square(z_e - lax.stop_gradient(z_q)))


def vq_loss(pairs, commitment, ema: bool):
  """Per-example quantization terms summed over the (z_e, z_q) `pairs` of every level's
  quantizer (one for a VQ-VAE with one codebook, two for VQ-VAE-2, num_quantizers per level
  for residual VQ, none for FSQ: then 0); `commitment` is beta (an array in the step)."""
  total = 0.0
  for z_e, z_q in pairs:
    total = total + commitment * commitment_loss(z_e, z_q)
    if not ema:
      total = total + codebook_loss(z_e, z_q)
  return total


def objective(likelihood: str, logits, x, levels, commitment, ema: bool):
  """The per-example terms (reconstruction, quantization) of both VQ families' objective,
  from the decoder's logits and every latent level's quantizer output (`levels`; their
  `pairs`): the `model.likelihood` term of the image x, and vq_loss. The loss is their sum."""
  recon = reconstruction.nll(likelihood, logits, x)
  quant = vq_loss([p for q in levels for p in q["pairs"]], commitment, ema)
  return recon, quant

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
reconstruction alone (Mentzer et al. 2023). LFQ and BSQ (models/lfq.py, models/bsq.py)
have fixed codes too: a commitment term and no codebook term (`codebook_term` = False),
and an entropy penalty per level, weight * (E[H(p(c|z))] - H(E[p(c|z)])), the mean
per-sample entropy of the soft code assignment minus the entropy of the global batch's mean
assignment (losses/binary_entropy.py: exact for LFQ, BSQ's per-channel factorisation for
BSQ). The entropies are per latent position, and the penalty is multiplied by the level's
number of positions per image, so that like the other terms it is a sum over an image's
latents; being a batch statistic, it is the same for every example of the batch.
"""
from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp
from jax import lax

from vaelab.losses import binary_entropy, reconstruction


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
  for residual VQ, none for FSQ: then 0); `commitment` is beta (an array in the step).
  `ema`: no codebook term (an EMA codebook, or codes that are not learned: lfq, bsq)."""
  total = 0.0
  for z_e, z_q in pairs:
    total = total + commitment * commitment_loss(z_e, z_q)
    if not ema:
      total = total + codebook_loss(z_e, z_q)
  return total


@dataclasses.dataclass(frozen=True)
class Entropy:
  """The entropy penalty of the binary quantizers: loss.entropy_weight, the soft
  assignment's temperature tau (loss.entropy_temperature) and whether the codebook entropy
  is exact over all codes (lfq) or factorised per channel (bsq)."""
  weight: float
  temperature: float
  exact: bool


def level_entropies(q, entropy: Entropy):
  """(E[H(p(c|z))], H(E[p(c|z)])) in nats per latent position over the global batch, from a
  binary quantizer's output `q` (its per-channel logits at tau = 1, `bit_logits`)."""
  logits = q["bit_logits"] / entropy.temperature
  codebook = (binary_entropy.codebook_entropy if entropy.exact
              else binary_entropy.factorised_codebook_entropy)
  return binary_entropy.per_sample_entropy(logits), codebook(logits)


def entropy_penalty(levels, entropy: Entropy | None, elements: int):
  """weight * elements * (per-sample entropy - codebook entropy), summed over the levels with
  `bit_logits`: a scalar, 0.0 without a penalty (other quantizers, entropy None).

  `elements` is the number of values of one image (pixels times channels). MAGVIT-v2 weighs
  the penalty, a mean over latent positions, against a reconstruction that is a mean over
  pixels; here the reconstruction is a sum over them (the negative log-likelihood of an
  image), so the penalty is scaled by the same count and `loss.entropy_weight` keeps the
  paper's meaning (0.1 is MAGVIT-v2's)."""
  total = 0.0
  if entropy is None:
    return total
  for q in levels:
    if "bit_logits" in q:
      per_sample, codebook = level_entropies(q, entropy)
      total = total + entropy.weight * elements * (per_sample - codebook)
  return total


def objective(likelihood: str, logits, x, levels, commitment, ema: bool,
              entropy: Entropy | None = None):
  """The per-example terms (reconstruction, quantization) of both VQ families' objective,
  from the decoder's logits and every latent level's quantizer output (`levels`; their
  `pairs`): the `model.likelihood` term of the image x, and vq_loss plus the entropy
  penalty (the same for every example). The loss is their sum."""
  recon = reconstruction.nll(likelihood, logits, x)
  quant = vq_loss([p for q in levels for p in q["pairs"]], commitment, ema)
  return recon, quant + entropy_penalty(levels, entropy, math.prod(x.shape[1:]))

"""Binary spherical quantization (Zhao et al. 2024, "Image and Video Tokenization with
Binary Spherical Quantization").

The encoder output is projected to d = log2(model.num_codes) channels, put on the unit
sphere and quantized to the nearest corner of the hypercube inscribed in it:

  u = v / ||v||,  q = sign(u) / sqrt(d),  index = sum_i 2^i [q_i > 0]

(the index packing is lfq.py's, channel i bit i; a zero channel goes to -1). Every code
has norm 1, like u, so ||u - q|| is bounded (the paper's quantization-error bound) and the
2^d codes are as far apart as d signs make them. The decoder's gradient reaches u by
straight-through, or by the rotation trick from u to q (`model.gradient`); a learned
linear map projects code_dim -> d before the normalization and d -> code_dim after it,
left out when they are equal (the paper always projects: with code_dim = d this module
quantizes the normalized encoder output directly).

The objective (losses/vqvae.py) is the commitment term ||u - sg(q)||^2 (weight
loss.commitment) and the paper's entropy penalty
loss.entropy_weight * (gamma_0 E[H(q(c|u))] - gamma H(E[q(c|u)])), with the soft
assignment q(c|u) = softmax_c(-||u - c||^2 / tau) over the 2^d codes, which factorises over
channels: q(c_i = +1/sqrt(d)|u_i) = sigmoid(4 u_i / (sqrt(d) tau)) (`bit_logits` = 4 u /
sqrt(d), at tau = 1). Both entropies are in the paper's factorised form, per channel: the
per-sample one is the sum of the channels' binary entropies (exact), the codebook one
sum_i H(E[q(c_i|u_i)]), the entropy of the product of the batch's per-channel marginals
(lfq.factorised_codebook_entropy: an upper bound of the exact codebook entropy that LFQ
uses). Choices, from the paper's reference implementation where the text leaves them:
gamma_0 = gamma = 1, tau = 1 (its inverse temperature 1) and the overall weight 0.1, set by
vqvae.apply_preset(c, "bsq") as loss.entropy_temperature and loss.entropy_weight.
"""
from __future__ import annotations

import math

from vaelab.models.lfq import BinaryQuantizer
from vaelab.models.quantizer import l2_normalize


class BinarySphericalQuantizer(BinaryQuantizer):
  """BSQ (module docstring); the interface is lfq.BinaryQuantizer's."""

  def normalize(self, z):
    return l2_normalize(z)

  def scale(self) -> float:
    return 1.0 / math.sqrt(self.bits)

  def bit_logits(self, z):
    # log q(+|u_i) / q(-|u_i) = (||u_i + s||^2 - ||u_i - s||^2) / tau = 4 s u_i / tau.
    return 4.0 * self.scale() * z

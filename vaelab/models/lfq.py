"""Lookup-free quantization (Yu et al. 2023, "Language Model Beats Diffusion", MAGVIT-v2).

The codebook is the implicit set {-1, 1}^d of K = 2^d codes, d = log2(model.num_codes):
each channel is quantized on its own to its sign,

  q = sign(z),  index = sum_i 2^i [q_i > 0]   (channel i is bit i),

so there is nothing to look up, learn, restart or initialize, and the nearest code of z
is q for every z (||z - c||^2 is a sum over channels). A zero channel goes to -1 (the paper
leaves sign(0) open; any fixed choice gives the same codes almost surely). The encoder's
code_dim need not be d: a learned linear map projects code_dim -> d before the sign and
d -> code_dim after it (as fsq.py does, and left out when they are equal). The decoder's
gradient reaches z by straight-through, or by the rotation trick from z to q
(`model.gradient`, quantizer.rotation_trick).

The objective adds the commitment term ||z - sg(q)||^2 (`pairs`, weight loss.commitment)
and the paper's entropy penalty, loss.entropy_weight * (E[H(p(c|z))] - H(E[p(c|z)])) with
p(c|z) = softmax_c(-||z - c||^2 / tau) over all 2^d codes (losses/vqvae.py). That softmax
factorises over channels: p(c|z) = prod_i p(c_i|z_i), p(c_i = +1|z_i) = sigmoid(4 z_i / tau),
so this module reports the per-channel logits 4 z (`bit_logits`, at tau = 1) and the loss
computes both entropies exactly from them: the per-sample one as a sum of binary
entropies, the codebook one from the exact mean distribution over all 2^d codes
(binary_entropy.codebook_entropy), without an (N, 2^d) array. The mean is over the GLOBAL batch, so
the run does not depend on the device count. The paper names no temperature; tau = 1 is
this library's choice (loss.entropy_temperature, module vqvae's config_keys): at |z_i| = 1,
where the commitment term holds the inputs, a channel's assignment is then confident
(p = sigmoid(4) = 0.98), so the per-sample term can be driven near 0, while around the
decision boundary the sigmoid is wide enough to give every input a gradient (at tau = 0.01,
the reference implementations' value on unit-norm logits, the sigmoid is a step for all
but |z_i| < 0.01 and the penalty's gradient vanishes almost everywhere).

What binary spherical quantization (bsq.py) shares with this module lives here: the
index packing (`bits_to_indices`, `indices_to_signs`) and the module (`BinaryQuantizer`);
the entropies both penalties are made of are losses/binary_entropy.py's. Usage statistics
are those of the implicit codebook: `counts` (2^d,) psummed over `axis_name` like the VQ's.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from vaelab.models.quantizer import GRADIENTS, code_counts

# 2^d counts per step and the exact codebook entropy's 2^(d/2) x 2^(d/2) matrix: above
# this the arrays outgrow what a step should hold.
MAX_BITS = 24


def num_bits(num_codes: int) -> int:
  """d with 2^d = num_codes (a power of 2, checked by quantizer_spec.validate)."""
  return int(num_codes).bit_length() - 1


def is_power_of_two(n) -> bool:
  """Whether n is 2^d for some d >= 1 (an integer-valued float counts, as checks.integer
  accepts one)."""
  if isinstance(n, bool) or not isinstance(n, (int, float, np.integer, np.floating)):
    return False
  if not float(n).is_integer():
    return False
  k = int(n)
  return k >= 2 and (k & (k - 1)) == 0


def bits_to_indices(bits):
  """Booleans (..., d), channel i set when its code is positive -> int32 (...) indices
  sum_i 2^i bit_i."""
  d = bits.shape[-1]
  return jnp.sum(bits.astype(jnp.int32) << jnp.arange(d, dtype=jnp.int32), axis=-1)


def indices_to_bits(indices, d: int):
  """int (...) -> booleans (..., d), the inverse of bits_to_indices."""
  idx = jnp.asarray(indices, jnp.int32)[..., None]
  return ((idx >> jnp.arange(d, dtype=jnp.int32)) & 1).astype(bool)


def indices_to_signs(indices, d: int):
  """int (...) -> the codes in {-1, 1}^d (..., d) float32."""
  return jnp.where(indices_to_bits(indices, d), 1.0, -1.0).astype(jnp.float32)


class BinaryQuantizer(nn.Module):
  """What LFQ and BSQ share: the projections, the sign, the index packing, the counts.
  Subclasses define `normalize` (the vector that is quantized), `scale` (the code's value
  per channel) and `bit_logits` (the per-channel logits of the soft assignment at tau = 1)."""
  num_codes: int
  code_dim: int
  gradient: str = "straight_through"
  # The mesh axis to psum the usage counts over; set only inside the train step.
  axis_name: str | None = None

  @property
  def bits(self) -> int:
    return num_bits(self.num_codes)

  @property
  def projected(self) -> bool:
    return self.code_dim != self.bits

  def setup(self):
    if self.projected:
      self.project_in = nn.Dense(self.bits, name="project_in")
      self.project_out = nn.Dense(self.code_dim, name="project_out")

  def normalize(self, z):
    return z

  def scale(self) -> float:
    return 1.0

  def bit_logits(self, z):
    raise NotImplementedError

  def _out(self, z):
    return self.project_out(z) if self.projected else z

  def lookup(self, indices):
    """Decoder inputs of an integer array of indices: (...) -> (..., code_dim)."""
    return self._out(indices_to_signs(indices, self.bits) * self.scale())

  def __call__(self, z_e, keys=None):
    """z_e (..., code_dim) -> the dict of quantizer.VectorQuantizer.__call__ (z_e the
    projected, normalized input, z_q its code, pairs ((z_e, z_q),) for the commitment
    term) and `bit_logits` (..., d) for the entropy penalty. `keys` is unused."""
    z = self.normalize(self.project_in(z_e) if self.projected else z_e)
    positive = z > 0
    z_q = jnp.where(positive, 1.0, -1.0).astype(z.dtype) * self.scale()
    idx = bits_to_indices(positive)
    counts = code_counts(idx, self.num_codes)
    if self.axis_name is not None:
      counts = lax.psum(counts, self.axis_name)
    return {"quantized": self._out(GRADIENTS[self.gradient](z, z_q)), "z_e": z, "z_q": z_q,
            "indices": idx, "counts": counts, "pairs": ((z, z_q),),
            "bit_logits": self.bit_logits(z)}


class LookupFreeQuantizer(BinaryQuantizer):
  """LFQ (module docstring): codes {-1, 1}^d."""

  def bit_logits(self, z):
    # log p(+1|z_i) / p(-1|z_i) = (||z_i + 1||^2 - ||z_i - 1||^2) / tau = 4 z_i / tau.
    return 4.0 * z


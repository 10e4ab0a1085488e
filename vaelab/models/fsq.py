"""Finite scalar quantization (Mentzer et al. 2023, "FSQ: VQ-VAE made simple").

Each of the d = len(levels) channels is bounded to an interval and rounded to one of its
L_i levels; the code is the tuple of rounded channels, so the codebook is the implicit grid
of prod(L_i) points and has nothing to learn: no codebook loss, no commitment loss, no EMA,
no dead codes to restart. The paper's reference (its appendix A.1), in this module's terms:

  bound(z)_i = tanh(z_i + s_i) h_i - o_i,  h_i = (L_i - 1)(1 - 1e-3) / 2,
               o_i = 1/2 for even L_i (else 0), s_i = tan(o_i / h_i)
  z_q        = round(bound(z)) / (L_i // 2)       in [-1, 1]; straight-through gradient
  index      = sum_i (round(bound(z))_i + L_i // 2) * prod_{j<i} L_j

The offset makes an even number of levels possible: tanh(.) h - 1/2 spans (-L/2, L/2 - 1)
rounded to the L integers -L/2 .. L/2 - 1, and the shift moves bound(0) to within 1e-3 of 0
for L >= 3 (the paper's tan: atanh would put it at 0 exactly, but is undefined for L = 2,
where tan leaves bound(0) = -0.04, still rounded to 0). Indices and grid
points convert both ways (`codes_to_indices`, `indices_to_codes`), so a prior trained on
FSQ indices decodes through `lookup` like any codebook's.

The encoder's code_dim need not be d: a learned linear map projects code_dim -> d before
the bound and d -> code_dim after the rounding (what the reference implementations do), and
is left out when they are equal. `gradient` = "rotation" replaces the rounding's
straight-through estimator by the rotation trick from bound(z) to its grid point
(quantizer.rotation_trick).

Usage statistics are those of the implicit codebook: `counts` (prod(L_i),) per grid point,
psummed over the mesh axis `axis_name` inside the train step like the VQ's.
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
from jax import lax

from vaelab.models.quantizer import GRADIENTS, code_counts

_EPS = 1e-3
# The FSQ paper's recommended levels (Mentzer et al. 2023, Table 1), for target codebook
# sizes 2^8, 2^10, 2^12, 2^14 and 2^16: 240, 1000, 4375, 15360 and 64000 codes.
PAPER_LEVELS = {256: (8, 6, 5), 1024: (8, 5, 5, 5), 4096: (7, 5, 5, 5, 5),
                16384: (8, 8, 8, 6, 5), 65536: (8, 8, 8, 5, 5, 5)}
# This project's own choices for the odd powers the table skips, not the paper's: 2^9 as
# (8, 8, 8) = 512 codes, 2^11 as (8, 8, 6, 5) = 1920.
OWN_LEVELS = {512: (8, 8, 8), 2048: (8, 8, 6, 5)}
# Both, by target size (levels_near takes the first of two equally near targets).
RECOMMENDED_LEVELS = dict(sorted({**PAPER_LEVELS, **OWN_LEVELS}.items()))


def codebook_size(levels) -> int:
  return int(math.prod(int(l) for l in levels))


def levels_near(num_codes: int) -> tuple[int, ...]:
  """The RECOMMENDED_LEVELS (the paper's, or this project's for 2^9 and 2^11) whose target
  size is nearest `num_codes` (in log scale)."""
  target = min(RECOMMENDED_LEVELS, key=lambda k: abs(math.log(k) - math.log(num_codes)))
  return RECOMMENDED_LEVELS[target]


def _levels(levels):
  return np.asarray(levels, np.int64)


def _basis(levels):
  """The mixed-radix place values prod_{j<i} L_j (the first channel varies fastest)."""
  return np.concatenate([[1], np.cumprod(_levels(levels)[:-1])]).astype(np.int64)


def bound(z, levels):
  """(..., d) -> (..., d) in (-L_i/2, L_i/2) (shifted by 1/2 for even L_i), smooth in z."""
  lv = _levels(levels).astype(np.float64)
  half_l = (lv - 1) * (1 - _EPS) / 2
  offset = np.where(_levels(levels) % 2 == 0, 0.5, 0.0)
  shift = np.tan(offset / half_l)
  return (jnp.tanh(z + shift.astype(np.float32)) * half_l.astype(np.float32)
          - offset.astype(np.float32))


def half_width(levels):
  return (_levels(levels) // 2).astype(np.float32)


def quantize(z, levels):
  """(bounded z, z_q), both scaled by 1 / (L_i // 2): z_q is the grid point round(bound)."""
  b = bound(z, levels)
  return b / half_width(levels), jnp.round(b) / half_width(levels)


def codes_to_indices(z_q, levels):
  """Grid points (..., d) (as `quantize` returns them) -> int32 (...) indices."""
  digits = jnp.round(z_q * half_width(levels) + half_width(levels)).astype(jnp.int32)
  return jnp.sum(digits * jnp.asarray(_basis(levels), jnp.int32), axis=-1)


def indices_to_codes(indices, levels):
  """int (...) indices -> grid points (..., d) in [-1, 1], the inverse of codes_to_indices."""
  idx = jnp.asarray(indices, jnp.int32)[..., None]
  basis = jnp.asarray(_basis(levels), jnp.int32)
  digits = (idx // basis) % jnp.asarray(_levels(levels), jnp.int32)
  return (digits.astype(jnp.float32) - half_width(levels)) / half_width(levels)


def implicit_codebook(levels):
  """All prod(L_i) grid points, row i the point of index i: (K, d)."""
  return indices_to_codes(jnp.arange(codebook_size(levels)), levels)


class FiniteScalarQuantizer(nn.Module):
  levels: tuple[int, ...]
  code_dim: int
  gradient: str = "straight_through"
  # The mesh axis to psum the usage counts over; set only inside the train step.
  axis_name: str | None = None

  @property
  def num_codes(self) -> int:
    return codebook_size(self.levels)

  @property
  def projected(self) -> bool:
    return self.code_dim != len(self.levels)

  def setup(self):
    if self.projected:
      self.project_in = nn.Dense(len(self.levels), name="project_in")
      self.project_out = nn.Dense(self.code_dim, name="project_out")

  def _out(self, z):
    return self.project_out(z) if self.projected else z

  def lookup(self, indices):
    """Decoder inputs of an integer array of indices: (...) -> (..., code_dim)."""
    return self._out(indices_to_codes(indices, self.levels))

  def __call__(self, z_e, keys=None):
    """z_e (..., code_dim) -> the dict of quantizer.VectorQuantizer.__call__: z_e is the
    bounded (projected) input, z_q its grid point, pairs is empty (nothing to commit to:
    the bound keeps z_e within half a level of its code). `keys` is unused."""
    z = self.project_in(z_e) if self.projected else z_e
    bounded, z_q = quantize(z, self.levels)
    idx = codes_to_indices(z_q, self.levels)
    counts = code_counts(idx, self.num_codes)
    if self.axis_name is not None:
      counts = lax.psum(counts, self.axis_name)
    return {"quantized": self._out(GRADIENTS[self.gradient](bounded, z_q)), "z_e": bounded,
            "z_q": z_q, "indices": idx, "counts": counts, "pairs": ()}

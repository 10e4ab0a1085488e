"""Residual vector quantization (Zeghidour et al. 2021, SoundStream, Algorithm 1).

`num_quantizers` codebooks in sequence: the first quantizes the encoder output, each next
one the residual the previous ones left,

  r_0 = z,  q_l = Q_l(r_l),  r_{l+1} = r_l - q_l,  z_q = sum_l q_l,

so a latent position is stored as num_quantizers indices (K each, K^num_quantizers
combinations) and every level refines the last. Each level is a quantizer.VectorQuantizer
of its own (submodules q0, q1, ...: own EMA statistics psummed over the mesh axis, own
dead-code restarts drawn from its own key stream, own k-means initialization on the
residuals it sees). The residuals are formed with the codes held constant, as the
reference implementations do: r_{l+1} = r_l - sg(q_l), so a level's commitment term
||r_l - sg(q_l)||^2 trains the encoder alone and its codebook term ||sg(r_l) - q_l||^2 its own
codebook alone (losses/vqvae.py sums one pair per level). The decoder input is z_q with the
gradient estimator (`gradient`) applied from z to the sum z_q, as for a single codebook.

`codebook_dim` > 0 projects z to that many dimensions before the first level and the sum
back after the last (the levels share the space). There is no l2 option: the residuals
shrink from level to level, and unit-norm codes cannot add up to them.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from vaelab.models.quantizer import GRADIENTS, VectorQuantizer


class ResidualVectorQuantizer(nn.Module):
  num_quantizers: int
  num_codes: int  # K of every level
  code_dim: int
  ema_decay: float = 0.99
  epsilon: float = 1e-5
  dead_code_steps: int = 0
  kmeans_init: bool = False
  axis_name: str | None = None
  codebook_dim: int = 0
  gradient: str = "straight_through"

  @property
  def lookup_dim(self) -> int:
    return self.codebook_dim or self.code_dim

  def setup(self):
    if self.codebook_dim:
      self.project_in = nn.Dense(self.codebook_dim, name="project_in")
      self.project_out = nn.Dense(self.code_dim, name="project_out")
    self.levels = [VectorQuantizer(self.num_codes, self.lookup_dim, self.ema_decay,
                                   self.epsilon, self.dead_code_steps, self.kmeans_init,
                                   self.axis_name, name=f"q{l}")
                   for l in range(self.num_quantizers)]

  def _out(self, z):
    return self.project_out(z) if self.codebook_dim else z

  def lookup(self, indices):
    """Decoder inputs of indices (..., num_quantizers) -> (..., code_dim): the sum of the
    levels' codes."""
    total = sum(jnp.take(level.embeddings(), indices[..., l], axis=0)
                for l, level in enumerate(self.levels))
    return self._out(total)

  def __call__(self, z_e, keys=None):
    """z_e (..., code_dim) -> the dict of quantizer.VectorQuantizer.__call__, with
      indices: int32 (..., num_quantizers), level l's index in [..., l]
      counts:  (num_quantizers, K) uses of each level's codes
      pairs:   one (r_l, q_l) per level
    and z_e, z_q the projected input and the sum of its codes."""
    z = self.project_in(z_e) if self.codebook_dim else z_e
    residual, z_q, outs = z, jnp.zeros_like(z), []
    for l, level in enumerate(self.levels):
      # Separate key streams: each level restarts codes from rows of its own choosing.
      level_keys = None if keys is None else jax.vmap(jax.random.fold_in, (0, None))(keys, l)
      out = level(residual, level_keys)
      outs.append(out)
      z_q = z_q + out["z_q"]
      residual = residual - lax.stop_gradient(out["z_q"])
    return {"quantized": self._out(GRADIENTS[self.gradient](z, z_q)), "z_e": z, "z_q": z_q,
            "indices": jnp.stack([o["indices"] for o in outs], -1),
            "counts": jnp.stack([o["counts"] for o in outs]),
            "pairs": tuple(p for o in outs for p in o["pairs"])}

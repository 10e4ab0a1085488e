"""SimVQ (Zhu et al. 2024, "Addressing Representation Collapse in Vector Quantized Models
with One Linear Layer").

The codebook is a FROZEN random matrix C (K x D) times one learned linear map W (D x D):
the codes are the rows of C W, the nearest one (squared distance) is looked up for each
encoder output z, and

  L_quant = ||sg(z) - C W||^2 + beta ||z - sg(C W)||^2

(losses/vqvae.py's codebook and commitment terms; `pairs` = ((z, z_q),)). The codebook
term's gradient reaches W only, and through W moves every code at once, used or not:
the whole codebook follows the encoder's distribution as one linear space, which is what
keeps codes from dying; there is no EMA, no restart and no k-means (quantizer_spec
refuses them). The decoder's gradient reaches z by straight-through or the rotation trick
(`model.gradient`).

C is drawn once, at init, from the model's "params" init key, N(0, 1/D) (the reference
implementation's scale), and lives in the non-"params" collection quantizer.COLLECTION
("vq"), under the name `frozen_codebook`: it is saved with the model's state and never
reaches the optimizer, and since the module never writes it (make_loss applies the model
with that collection immutable for quantizers without an EMA) it stays what init drew. W
has the paper's form C W, without a bias (the reference's linear layer has one), and
Flax's default initialization (variance 1/D), so that the initial codes C W have the
scale of C.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from vaelab.models.quantizer import COLLECTION, GRADIENTS, code_counts, nearest_codes


class SimVectorQuantizer(nn.Module):
  num_codes: int
  code_dim: int
  gradient: str = "straight_through"
  axis_name: str | None = None

  def setup(self):
    k, d = self.num_codes, self.code_dim
    self.frozen = self.variable(
        COLLECTION, "frozen_codebook",
        lambda: jax.random.normal(self.make_rng("params"), (k, d), jnp.float32) * d**-0.5)
    self.linear = self.param("linear", nn.initializers.lecun_normal(), (d, d), jnp.float32)

  def embeddings(self):
    """The codebook C W (K, D)."""
    return jnp.dot(self.frozen.value, self.linear, precision=lax.Precision.HIGHEST)

  def lookup(self, indices):
    """Decoder inputs of an integer array of indices: (...) -> (..., code_dim)."""
    return jnp.take(self.embeddings(), indices, axis=0)

  def __call__(self, z_e, keys=None):
    """z_e (..., code_dim) -> the dict of quantizer.VectorQuantizer.__call__. `keys` is
    unused."""
    codebook = self.embeddings()
    flat = z_e.reshape(-1, self.code_dim)
    idx = nearest_codes(lax.stop_gradient(flat), lax.stop_gradient(codebook))
    counts = code_counts(idx, self.num_codes)
    if self.axis_name is not None:
      counts = lax.psum(counts, self.axis_name)
    z_q = jnp.take(codebook, idx, axis=0).reshape(z_e.shape)
    return {"quantized": GRADIENTS[self.gradient](z_e, z_q), "z_e": z_e, "z_q": z_q,
            "indices": idx.reshape(z_e.shape[:-1]), "counts": counts,
            "pairs": ((z_e, z_q),)}

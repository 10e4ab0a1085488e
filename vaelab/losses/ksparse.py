"""The k-sparse autoencoder's objective (Makhzani & Frey 2013): the reconstruction of x from a
code that keeps only each example's k largest units, with k falling over training.

The mask is computed under stop_gradient and multiplied in, so the gradient reaches exactly
the kept units (the paper's "support" of the code) and no others. k starts at k_start and
falls linearly to its final value over the first half of training: a large k early keeps
every unit in use, where starting at the final k leaves dead units.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from vaelab.losses import reconstruction


def topk_mask(code, k, k_max: int):
  """0/1 mask of each row's k largest entries; k may be traced, k <= k_max (static).

  lax.top_k with the static bound gives the k_max largest in descending order; the first k of
  them are kept. Exactly k ones per row even with ties, and no recompilation when k changes.
  """
  code = jax.lax.stop_gradient(code)
  _, idx = jax.lax.top_k(code, k_max)
  keep = (jnp.arange(k_max) < k).astype(code.dtype)
  rows = jnp.arange(code.shape[0])[:, None]
  return jnp.zeros_like(code).at[rows, idx].set(jnp.broadcast_to(keep, idx.shape))


def sparse_code(code, k, k_max: int):
  """`code` (B, H) with all but each row's k largest entries zeroed (k <= k_max, static)."""
  return code * topk_mask(code, k, k_max)


def k_at_step(step, k: int, k_start: int, num_train_steps: int):
  """k_start at step 0, linearly down to k at num_train_steps / 2, then k (an int32 array)."""
  half = max(num_train_steps / 2, 1.0)
  frac = jnp.clip(jnp.asarray(step, jnp.float32) / half, 0.0, 1.0)
  return jnp.round(k_start + (k - k_start) * frac).astype(jnp.int32)


def ksparse_loss(likelihood: str, decode, code, x, k, k_max: int):
  """(batch mean of the `model.likelihood` term of x, the decoder's logits) from the dense code
  (B, H) of x with only its k largest units kept; `decode` maps codes to logits."""
  logits = decode(sparse_code(code, k, k_max))
  return reconstruction.nll(likelihood, logits, x).mean(), logits

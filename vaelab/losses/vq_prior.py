"""The objective of the prior over VQ codes (models/vq_prior.py): the cross-entropy of the
codes under an autoregressive model's logits, in nats.

Every level's map (VQ-VAE: one; VQ-VAE-2: top and bottom) is scored by its own logits. The
loss is nats per code over all levels (total nats over total codes, so a level weighs by
its number of codes), reported per level as well; compare with the uniform log K.
"""
from __future__ import annotations

import math

import jax.numpy as jnp
import optax


def nll_per_example(logits, codes):
  """Cross-entropy of the codes under the logits, summed over positions: (B,) nats."""
  ce = optax.softmax_cross_entropy_with_integer_labels(
      logits.astype(jnp.float32), codes.astype(jnp.int32))
  return ce.reshape(ce.shape[0], -1).sum(-1)


def nats_per_code(logits, codes):
  """(B,) mean nats per code; compare with the uniform log K."""
  return nll_per_example(logits, codes) / math.prod(codes.shape[1:])


def bits_per_code(logits, codes):
  """(B,) nats / (H * W * ln 2)."""
  return nats_per_code(logits, codes) / math.log(2)


def level_metric(name: str, level: str) -> str:
  """A metric's name at a level ("" for VQ-VAE's single level)."""
  return f"{name}_{level}" if level else name


def nll_terms(levels: tuple[str, ...], logits, codes) -> dict:
  """Per-example nats per code of every level's (logits, codes): "nll" over all levels
  (total nats / total codes) and, with more than one level, "nll_<level>" for each."""
  nats = [nll_per_example(l, c) for l, c in zip(logits, codes)]
  total_codes = sum(math.prod(c.shape[1:]) for c in codes)
  out = {"nll": sum(nats) / total_codes}
  if len(levels) > 1:
    for level, n, c in zip(levels, nats, codes):
      out[level_metric("nll", level)] = n / math.prod(c.shape[1:])
  return out

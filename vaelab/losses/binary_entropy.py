"""The entropies of the binary quantizers' penalties (models/lfq.py, models/bsq.py).

A soft assignment p(c|z) over the 2^d sign patterns c that factorises over the d channels,
given by each channel's logit l_i = log p(c_i = +1|z) / p(c_i = -1|z) (..., d). Code index
j has channel i positive where bit i of j is set (lfq.bits_to_indices). Batch statistics
are over the GLOBAL batch (spmd.global_mean), so the penalty, a nonlinear function of a
batch mean, does not change with the device count.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from vaelab import spmd


def binary_entropy(logits):
  """The entropy (nats) of Bernoulli(sigmoid(logits)), elementwise: softplus(l) - l sigmoid(l),
  which is finite and smooth for saturated logits, where the form in p takes 0 log 0."""
  return jax.nn.softplus(logits) - logits * jax.nn.sigmoid(logits)


def _entropy_of(p):
  """-sum p log p over all entries (0 log 0 = 0)."""
  safe = jnp.where(p > 0, p, 1.0)
  return -jnp.sum(jnp.where(p > 0, p * jnp.log(safe), 0.0))


def per_sample_entropy(logits):
  """E[H(p(c|z))] over the GLOBAL batch: logits (..., d) of independent channels, so each
  sample's entropy over the 2^d codes is the sum of its channels' binary entropies."""
  flat = logits.reshape(-1, logits.shape[-1])
  return spmd.global_mean(jnp.mean(jnp.sum(binary_entropy(flat), -1)))


def _code_log_probs(logits):
  """(N, m) channel logits -> (N, 2^m) log p of every code of those m channels (index
  sum_i 2^i bit_i, as lfq.bits_to_indices): sums of log sigmoid(+-l) picked by each code's bits.
  At full precision: a bf16 pass would blur codes whose log-probabilities nearly tie."""
  m = logits.shape[-1]
  bits = ((np.arange(2**m)[:, None] >> np.arange(m)) & 1).astype(np.float32)  # (2^m, m)
  pos, neg = jax.nn.log_sigmoid(logits), jax.nn.log_sigmoid(-logits)
  hi = lax.Precision.HIGHEST
  return jnp.dot(pos, bits.T, precision=hi) + jnp.dot(neg, 1.0 - bits.T, precision=hi)


def codebook_distribution(logits):
  """The exact E[p(c|z)] over the GLOBAL batch as a (2^a, 2^b) matrix, a = d // 2, b = d - a,
  entry [j, k] the probability of code j + 2^a k. p(c|z) factorises into the first a and
  the last b channels' distributions P_A (N, 2^a) and P_B (N, 2^b), so the batch mean of
  their outer products is P_A^T P_B / N: O(N 2^(d/2)) where the (N, 2^d) softmax is not."""
  flat = logits.reshape(-1, logits.shape[-1])
  a = flat.shape[-1] // 2
  p_a, p_b = jnp.exp(_code_log_probs(flat[:, :a])), jnp.exp(_code_log_probs(flat[:, a:]))
  mean = jnp.dot(p_a.T, p_b, precision=lax.Precision.HIGHEST) / flat.shape[0]
  return spmd.global_mean(mean)


def codebook_entropy(logits):
  """H(E[p(c|z)]) of the exact global-batch distribution over all 2^d codes (nats)."""
  return _entropy_of(codebook_distribution(logits))


def factorised_codebook_entropy(logits):
  """sum_i H(E[p(c_i|z_i)]): the entropy of the product of the channels' global-batch
  marginals, an upper bound of H(E[p(c|z)]) (equal when the channels are independent over
  the batch); BSQ's approximation (models/bsq.py)."""
  flat = logits.reshape(-1, logits.shape[-1])
  p = spmd.global_mean(jnp.mean(jax.nn.sigmoid(flat), 0))
  return _entropy_of(jnp.stack([p, 1.0 - p]))

"""Codes of sampled observations: what every sampled metric asks the representation for.

Observations are requested in chunks of a few thousand (one `render` or `get` call per
chunk, which is what makes procedural dSprites affordable) and passed to `represent` in
fixed-size batches, the last one padded, so a jitted encoder compiles once.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

Represent = Callable[[np.ndarray], np.ndarray]

# Observations materialised at once: 4096 dSprites images are 64 MB of float32, large
# enough that the per-call overhead of rendering or reading them is nil.
CHUNK_IMAGES = 4096


class NonFiniteCodesError(ValueError):
  """`represent` returned NaN or inf (a diverged model): no score is meaningful."""


def encode(represent: Represent, observations: np.ndarray, batch_size: int) -> np.ndarray:
  """Codes (n, d) float64 of (n, ...) observations, `batch_size` at a time."""
  n = len(observations)
  out = []
  for start in range(0, n, batch_size):
    x = observations[start:start + batch_size]
    m = len(x)
    if m < batch_size:  # pad so that every call has one shape (one jit compilation)
      x = np.concatenate([x, np.repeat(x[-1:], batch_size - m, axis=0)])
    z = np.asarray(represent(x))
    if z.ndim != 2 or z.shape[0] != batch_size:
      raise ValueError(f"represent must map ({batch_size}, ...) observations to "
                       f"({batch_size}, d) codes, got shape {z.shape}")
    out.append(z[:m])
  codes = np.concatenate(out).astype(np.float64)
  if not np.isfinite(codes).all():
    raise NonFiniteCodesError("represent returned non-finite codes")
  return codes


def sample_codes(represent, ground_truth, n, rng, batch_size):
  """n (factors, codes) pairs, drawn in chunks."""
  factors, codes = [], []
  for start in range(0, n, CHUNK_IMAGES):
    f, obs = ground_truth.sample(min(CHUNK_IMAGES, n - start), rng)
    factors.append(np.asarray(f))
    codes.append(encode(represent, obs, batch_size))
  return np.concatenate(factors), np.concatenate(codes)


def grouped_codes(represent, ground_truth, factor_indices, group_size, rng, batch_size,
                  align=1):
  """Yields (slice, codes (P, group_size, d)) for chunks of groups with factor_indices fixed.

  Chunks hold a multiple of `align` groups (BetaVAE's pairs of one point stay together).
  """
  per_chunk = max(align, CHUNK_IMAGES // group_size // align * align)
  for start in range(0, len(factor_indices), per_chunk):
    ks = factor_indices[start:start + per_chunk]
    _, obs = ground_truth.sample_with_fixed(group_size, ks, rng)
    z = encode(represent, obs.reshape((ks.size * group_size,) + obs.shape[2:]), batch_size)
    yield slice(start, start + ks.size), z.reshape(ks.size, group_size, -1)


def scored_factors(factors: np.ndarray, candidates: Sequence[int]) -> list[int]:
  """The candidate factor columns that take more than one value in this sample."""
  return [k for k in candidates if np.unique(factors[:, k]).size > 1]


def check_codes_factors(codes, factors, what):
  """(codes as float64 (n, d), factors (n, F)); `what` names the caller in errors."""
  codes, factors = np.asarray(codes, np.float64), np.asarray(factors)
  if codes.ndim != 2 or factors.ndim != 2 or len(codes) != len(factors):
    raise ValueError(f"{what}: codes must be (n, d) and factors (n, F) with the same n, got "
                     f"{codes.shape} and {factors.shape}")
  if not np.isfinite(codes).all():
    raise NonFiniteCodesError(f"{what}: the codes are not finite")
  return codes, factors

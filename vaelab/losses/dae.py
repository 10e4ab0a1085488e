"""The corruption process q_D(x~|x) of denoising autoencoders (Vincent et al. 2008).

Applied on device inside the step; each example's noise comes from its own key, so the
corruption does not depend on how the batch is split over devices.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

KINDS = ("mask", "gaussian", "salt_pepper")


def corrupt(kind: str, x, level, keys):
  """mask: a fraction `level` of pixels forced to 0; gaussian: + N(0, level^2), clipped to [0, 1];
  salt_pepper: a fraction `level` of pixels set to 0 or 1 with equal probability."""
  if kind == "mask":
    u = jax.vmap(lambda k: jax.random.uniform(k, x.shape[1:], x.dtype))(keys)
    return jnp.where(u < level, 0.0, x)
  if kind == "gaussian":
    eps = jax.vmap(lambda k: jax.random.normal(k, x.shape[1:], x.dtype))(keys)
    return jnp.clip(x + level * eps, 0.0, 1.0)
  if kind == "salt_pepper":
    def one(k):
      k1, k2 = jax.random.split(k)
      return (jax.random.uniform(k1, x.shape[1:], x.dtype),
              jax.random.bernoulli(k2, 0.5, x.shape[1:]).astype(x.dtype))
    u, salt = jax.vmap(one)(keys)
    return jnp.where(u < level, salt, x)
  raise ValueError(f"unknown corruption {kind!r}; expected one of {KINDS}")

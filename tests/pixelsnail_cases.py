"""The tiny PixelSNAIL priors and code maps that tests/test_pixelsnail.py (the network) and
tests/test_pixelsnail_sampler.py (its samplers) share."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from vaelab.models import pixelsnail

K = 4


def model(**kw):
  base = dict(num_codes=K, channels=16, num_blocks=1, res_per_block=1, num_heads=2,
              condition_codes=K)
  return pixelsnail.PixelSNAIL(**{**base, **kw})


def codes(b, h, w, k=K, seed=0):
  return jnp.asarray(np.random.default_rng(seed).integers(0, k, (b, h, w)), jnp.int32)


def init(model, *args, seed=0):
  """model.init's parameter tree, traced but filled from numpy (fan-in scaled normals).

  On this CPU every random initializer is a separate slow XLA compilation; tracing alone
  still runs the module's init code.
  """
  shapes = jax.eval_shape(model.init, jax.random.key(0), *args)
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    names = [getattr(k, "key", "") for k in path]
    if names[-1] == "bias":
      return jnp.zeros(leaf.shape, leaf.dtype)
    if names[-1] == "scale":
      return jnp.ones(leaf.shape, leaf.dtype)
    if names[-1] == "kernel":  # attention's q/k/v kernels are (in, heads, head_dim)
      qkv = names[-2] in ("query", "key", "value")
      fan_in = leaf.shape[0] if qkv else math.prod(leaf.shape[:-1])
      return jnp.asarray(rng.normal(0, fan_in ** -0.5, leaf.shape), leaf.dtype)
    return jnp.asarray(rng.normal(0, 1, leaf.shape), leaf.dtype)  # embeddings

  return jax.tree_util.tree_map_with_path(fill, shapes)


def bottom_prior():
  """Attention + a lower-resolution conditioning map: the shape of VQ-VAE-2's bottom prior.
  (model, variables, codes (1, 5, 5), condition (1, 3, 3))."""
  m = model()
  c, cond = codes(1, 5, 5), codes(1, 3, 3, seed=1)
  return m, init(m, c, cond), c, cond

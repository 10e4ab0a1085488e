"""Per-example reconstruction terms: each returns shape (B,), summed over pixels (nats)."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def _sum_pixels(x):
  return x.reshape(x.shape[0], -1).sum(-1)


def bernoulli_nll(logits, x):
  """-log Bernoulli(x | sigmoid(logits)); stable for any logits, x may be fractional."""
  return _sum_pixels(jax.nn.softplus(logits) - x * logits)


def gaussian_nll(mean, x, sigma):
  """-log N(x | mean, sigma^2 I) with a fixed scalar sigma."""
  z = (x - mean) / sigma
  return _sum_pixels(0.5 * z * z + jnp.log(sigma) + 0.5 * math.log(2 * math.pi))


def sse(pred, x):
  """Sum of squared errors per image; with pixels in [0, 1] this is `eval/recon_sse`."""
  return _sum_pixels(jnp.square(pred - x))


def mean_image(likelihood: str, out):
  """The decoder output as an image in pixel space."""
  return jax.nn.sigmoid(out) if likelihood == "bernoulli" else out


def nll(likelihood: str, out, x, sigma=1.0):
  """-log p(x | decoder output) for the likelihood named by `model.likelihood`."""
  if likelihood == "bernoulli":
    return bernoulli_nll(out, x)
  if likelihood == "gaussian":
    return gaussian_nll(out, x, sigma)
  if likelihood == "mse":
    return sse(out, x)
  raise ValueError(f"unknown likelihood {likelihood!r}")


LIKELIHOODS = ("bernoulli", "gaussian", "mse")

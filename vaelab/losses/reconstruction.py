"""Per-example reconstruction terms: each returns shape (B,), summed over pixels (nats).

`model.likelihood` says what a decoder's output means, with one meaning in every family:

  bernoulli    the output is logits; the image is their sigmoid; the term is the Bernoulli
               cross-entropy -log Bernoulli(x | sigmoid(out)) (x may be fractional)
  gaussian     the output is the mean image itself; the term is -log N(x | out,
               model.obs_sigma^2 I)
  sigmoid_sse  the output is logits; the image is their sigmoid; the term is the sum of
               squared errors ||sigmoid(out) - x||^2 (a Gaussian of variance 1/2 about the
               image less its constant: no normalized density of x)

A family accepts the values its decoder and its objective can take: the autoencoders and
the VQ models, whose decoders emit logits, `LOGIT_LIKELIHOODS`; the VAEs and TD-VAE, whose
bounds on log p(x) need a normalized density, `DENSITIES`.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from vaelab.errors import ConfigError

LIKELIHOODS = ("bernoulli", "gaussian", "sigmoid_sse")
LOGIT_LIKELIHOODS = ("bernoulli", "sigmoid_sse")
DENSITIES = ("bernoulli", "gaussian")


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
  return out if likelihood == "gaussian" else jax.nn.sigmoid(out)


def nll(likelihood: str, out, x, sigma=1.0):
  """The reconstruction term of `model.likelihood` (module docstring) of x given the decoder
  output; `sigma` is the gaussian's scale."""
  if likelihood == "bernoulli":
    return bernoulli_nll(out, x)
  if likelihood == "gaussian":
    return gaussian_nll(out, x, sigma)
  if likelihood == "sigmoid_sse":
    return sse(jax.nn.sigmoid(out), x)
  raise ValueError(f"unknown likelihood {likelihood!r}; expected one of {LIKELIHOODS}")


def validate(likelihood, allowed: tuple, family: str) -> None:
  """ConfigError naming model.likelihood unless it is one of `allowed`, the values family
  `family` takes."""
  if likelihood not in allowed:
    raise ConfigError(f"model.likelihood={likelihood!r}: expected one of {allowed} for "
                      f"model.name={family!r} (their meanings: vaelab/losses/reconstruction.py)")

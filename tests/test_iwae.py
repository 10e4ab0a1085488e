"""Importance-weighted bounds (vaelab/losses/iwae.py) against a linear-Gaussian model whose
log p(x) is known. The VAE's bounds, its IWAE and capacity objectives: tests/test_vae.py."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from vaelab.losses import iwae

# x = A z + sigma * noise with z ~ N(0, I): p(x) = N(0, A A^T + sigma^2 I).
A = np.array([[1.0, 0.5], [-0.3, 0.8], [0.2, -1.1]], np.float32)
SIGMA = 0.7
X = np.array([[0.4, -1.2, 0.9], [1.5, 0.3, -0.2]], np.float32)


def _decode_nll(z):
  r = (X - z @ A.T) / SIGMA
  return 0.5 * jnp.sum(r * r, -1) + X.shape[1] * (math.log(SIGMA) + 0.5 * math.log(2 * math.pi))


def _log_px():
  cov = A @ A.T + SIGMA**2 * np.eye(3)
  _, logdet = np.linalg.slogdet(cov)
  quad = np.einsum("bi,ij,bj->b", X, np.linalg.inv(cov), X)
  return -0.5 * (quad + logdet + 3 * math.log(2 * math.pi))


def _posterior():
  cov = np.linalg.inv(np.eye(2) + A.T @ A / SIGMA**2)
  return X @ A @ cov / SIGMA**2, cov  # means (B, 2), shared covariance


def _keys(n=2, seed=0):
  return jax.random.split(jax.random.key(seed), n)


def test_exact_posterior_gives_constant_weights_equal_to_log_px():
  # q is a diagonal Gaussian, so take A with orthogonal columns: the posterior is diagonal.
  a = np.array([[1.2, 0.0], [0.0, 0.6], [0.0, 0.0]], np.float32)
  cov_x = a @ a.T + SIGMA**2 * np.eye(3)
  _, logdet = np.linalg.slogdet(cov_x)
  log_px = -0.5 * (np.einsum("bi,ij,bj->b", X, np.linalg.inv(cov_x), X) + logdet
                   + 3 * math.log(2 * math.pi))
  post_cov = np.linalg.inv(np.eye(2) + a.T @ a / SIGMA**2)
  post_mean = X @ a @ post_cov / SIGMA**2
  nll = lambda z: (0.5 * jnp.sum(((X - z @ a.T) / SIGMA)**2, -1)
                   + 3 * (math.log(SIGMA) + 0.5 * math.log(2 * math.pi)))
  w = iwae.log_weights(nll, _keys(), jnp.asarray(post_mean, jnp.float32),
                       jnp.log(jnp.asarray(np.diag(post_cov), jnp.float32))[None].repeat(2, 0),
                       num_samples=20, chunk=7)
  assert w.shape == (2, 20)
  np.testing.assert_allclose(w, np.repeat(log_px[:, None], 20, 1), rtol=1e-5, atol=1e-4)


def test_bounds_rise_from_the_elbo_to_log_px():
  """q = N(posterior mean + 0.5, 2 * diag(posterior variance)): wrong, but with heavier
  tails than the posterior, so the weights have a finite variance and L_K converges."""
  mean, cov = _posterior()
  q_mean = jnp.asarray(mean + 0.5, jnp.float32)
  q_logvar = jnp.log(jnp.asarray(2 * np.diag(cov), jnp.float32))[None].repeat(2, 0)
  w = iwae.log_weights(_decode_nll, _keys(), q_mean, q_logvar, num_samples=5000, chunk=500)
  bounds = {k: np.asarray(v) for k, v in iwae.bounds_from_log_weights(w, (1, 10, 100, 5000)).items()}
  # The ELBO in closed form: E_q log p(x|z) - KL(q || N(0, I)).
  qm, qv = np.asarray(q_mean), np.exp(np.asarray(q_logvar))
  resid = X - qm @ A.T
  expected_ll = (-0.5 * (np.sum(resid**2, -1) + np.sum((A**2) @ qv.T, 0)) / SIGMA**2
                 - 3 * (math.log(SIGMA) + 0.5 * math.log(2 * math.pi)))
  kl = 0.5 * np.sum(qv + qm**2 - 1 - np.log(qv), -1)
  elbo = expected_ll - kl
  se = np.asarray(w).std(1) / math.sqrt(5000)
  assert np.all(np.abs(bounds[1] - elbo) < 4 * se + 1e-4), (bounds[1], elbo, se)
  log_px = _log_px()
  for b in range(2):
    seq = [bounds[k][b] for k in (1, 10, 100, 5000)]
    assert seq == sorted(seq), seq
  # The delta method: sd of log(mean of K weights) ~ sd(w) / (mean(w) sqrt(K)).
  ratio = np.exp(np.asarray(w, np.float64) - np.asarray(w).max(1, keepdims=True))
  tol = 4 * ratio.std(1) / ratio.mean(1) / math.sqrt(5000)
  assert np.all(log_px - elbo > 3 * tol), (log_px - elbo, tol)  # a gap there is to close
  assert np.all(np.abs(bounds[5000] - log_px) < tol), (bounds[5000], log_px, tol)


def test_log_weights_do_not_depend_on_the_chunk_size():
  mean, cov = _posterior()
  args = (_decode_nll, _keys(), jnp.asarray(mean, jnp.float32), jnp.zeros((2, 2)))
  np.testing.assert_allclose(iwae.log_weights(*args, 12, 5), iwae.log_weights(*args, 12, 12),
                             rtol=1e-6)


def test_log_mean_exp_is_stable_and_exact():
  a = jnp.array([[1000.0, 1000.0 + math.log(3)], [-1000.0, -1000.0]])
  np.testing.assert_allclose(iwae.log_mean_exp(a), [1000.0 + math.log(2), -1000.0], rtol=1e-6)

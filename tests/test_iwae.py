"""Importance-weighted bounds against a linear-Gaussian model whose log p(x) is known, the
VAE's final metrics, the IWAE and capacity objectives, and their config checks."""
from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_config
from vaelab import validation
from vaelab.errors import ConfigError
from vaelab.losses import iwae
from vaelab.losses import vae as vae_losses
from vaelab.training import loop

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


def test_capacity_schedule():
  c = [float(vae_losses.capacity(s, 25.0, 100.0)) for s in (0, 50, 100, 400)]
  assert c == [0.0, 12.5, 25.0, 25.0]


@pytest.fixture(scope="module")
def capacity_run(npz_pair, tmp_path_factory):
  config = tiny_config("vae", *npz_pair, **{
      "loss.objective": "capacity", "loss.gamma": 100.0, "loss.capacity_max": 6.0,
      "loss.capacity_steps": 150, "num_train_steps": 300, "log_every": 10,
      "eval_every": 300, "checkpoint_every": 300, "eval.iwae_ks": (1, 8, 64),
      "eval.iwae_chunk": 16})
  workdir = tmp_path_factory.mktemp("capacity")
  results = loop.train_and_evaluate(config, str(workdir))
  rows = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
  return results, [r for r in rows if "train/kl" in r]


def test_capacity_kl_follows_c(capacity_run):
  _, rows = capacity_run
  after = [r for r in rows if r["step"] >= 100]
  assert after
  for r in after:
    assert abs(r["train/kl"] - r["train/capacity"]) < 1.0, r
  assert rows[-1]["train/capacity"] == pytest.approx(6.0)


def test_final_bounds_are_ordered_and_reported(capacity_run):
  results, _ = capacity_run
  bounds = [results[f"eval/iwae_k{k}"] for k in (1, 8, 64)]
  assert bounds == sorted(bounds), bounds
  assert results["eval/nll"] == pytest.approx(-bounds[-1])
  assert results["eval/bits_per_dim"] == pytest.approx(results["eval/nll"] / (64 * math.log(2)))
  assert 1 <= results["eval/active_units"] <= 4
  kl_dims = sum(results[f"eval/kl_dim{d}"] for d in range(4))
  assert kl_dims == pytest.approx(results["eval/kl"], rel=1e-4)


def test_iwae_objective_trains(npz_pair, tmp_path):
  config = tiny_config("vae", *npz_pair, **{
      "loss.objective": "iwae", "loss.iwae_k": 4, "num_train_steps": 60, "log_every": 30,
      "eval_every": 60, "checkpoint_every": 60, "eval.iwae_ks": (1, 4)})
  results = loop.train_and_evaluate(config, str(tmp_path))
  rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  train = [r["train/iwae_k4"] for r in rows if "train/iwae_k4" in r]
  assert len(train) == 2 and train[1] > train[0] + 1.0
  assert np.isfinite(results["eval/iwae_k4"])


def test_iwae_objective_reports_minus_its_own_bound_as_eval_loss(npz_pair):
  from vaelab.data.base import SourceInfo
  from vaelab.models import vae as vae_lib
  config = tiny_config("vae", *npz_pair, **{"loss.objective": "iwae", "loss.iwae_k": 6})
  model = vae_lib.make_model(config, SourceInfo((8, 8, 1)))
  x = jnp.asarray(np.random.default_rng(0).random((5, 8, 8, 1)), jnp.float32)
  keys = jax.random.split(jax.random.key(0), 5)
  variables = model.init(jax.random.key(1), x, keys)
  out = vae_lib.make_eval_metrics(config)(model, variables, {"image": x}, keys, {"beta": 1.0})
  # -L_6 from the objective's own samples (fold_in 1 of each example's key), not -ELBO.
  iw_keys = jax.vmap(lambda k: jax.random.fold_in(k, 1))(keys)
  w = vae_lib._log_weights(config, model, variables, x, iw_keys, 6, 6)
  np.testing.assert_allclose(out["loss"], -iwae.log_mean_exp(w), rtol=1e-6)
  assert float(jnp.mean(out["loss"])) < float(jnp.mean(-out["elbo"]))  # L_6 >= L_1 here


@pytest.mark.parametrize("key,value", [
    ("loss.beta", -1.0), ("loss.beta", float("inf")), ("loss.gamma", float("nan")), ("loss.capacity_max", -5.0), ("loss.gamma", -1.0),
    ("loss.iwae_k", 0), ("eval.iwae_ks", (1, 0)), ("loss.capacity_steps", 0),
    ("loss.objective", "iwea"), ("eval.iwae_chunk", 0)])
def test_bad_values_are_refused_naming_the_key(npz_pair, key, value):
  config = tiny_config("vae", *npz_pair, **{key: value})
  with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
    validation.validate(config)

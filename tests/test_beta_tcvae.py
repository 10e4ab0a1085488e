"""beta-TCVAE: the KL decomposition against a brute-force numpy computation, its three terms
summing to the sampled KL, the objective, config checks, and a short run of the runlocal
config that must lower its loss."""
from __future__ import annotations

import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import ROOT
from vaelab import config_base, spmd, validation
from vaelab.data.base import SourceInfo
from vaelab.errors import ConfigError
from vaelab.losses import beta_tcvae as tc_losses
from vaelab.models import beta_tcvae, vae
from vaelab.training import loop

CONFIG = os.path.join(ROOT, "configs", "beta_tcvae_dsprites.py")
B, D, N = 6, 3, 50

# One compilation per estimator for every formula test below.
_decomposition = jax.jit(tc_losses.decomposition, static_argnames=("num_examples",
                                                                    "estimator"))


def _batch(seed=0):
  rng = np.random.default_rng(seed)
  mean = rng.normal(size=(B, D)).astype(np.float32)
  logvar = rng.uniform(-1.5, 0.5, size=(B, D)).astype(np.float32)
  z = (mean + np.exp(0.5 * logvar) * rng.normal(size=(B, D))).astype(np.float32)
  return z, mean, logvar


def _log_normal(x, m, lv):
  return -0.5 * (math.log(2 * math.pi) + lv + (x - m) ** 2 / math.exp(lv))


def _weights(estimator, j):
  """The estimator's weights of row j, written from Chen et al.'s definitions."""
  if estimator == "mws":
    return [1.0 / (N * B)] * B
  m = B - 1
  w = [1.0 / m] * B
  w[j] = 1.0 / N
  w[(j + 1) % B] = (N - m) / (N * m)
  return w


def _brute_force(z, mean, logvar, estimator):
  """(mi, tc, dwkl) per example with explicit sums of densities, in float64."""
  z, mean, logvar = (np.asarray(a, np.float64) for a in (z, mean, logvar))
  out = []
  for j in range(B):
    w = _weights(estimator, j)
    cond = [[_log_normal(z[j, l], mean[i, l], logvar[i, l]) for l in range(D)]
            for i in range(B)]
    q_joint = sum(w[i] * math.exp(sum(cond[i])) for i in range(B))
    q_dims = [sum(w[i] * math.exp(cond[i][l]) for i in range(B)) for l in range(D)]
    log_qzx = sum(cond[j])
    log_pz = sum(_log_normal(z[j, l], 0.0, 0.0) for l in range(D))
    log_prod = sum(math.log(q) for q in q_dims)
    out.append((log_qzx - math.log(q_joint), math.log(q_joint) - log_prod, log_prod - log_pz))
  return np.asarray(out).T


def _terms(estimator, seed=0):
  z, mean, logvar = _batch(seed)
  rows = jnp.arange(B)
  return _decomposition(z, mean, logvar, z, mean, logvar, rows, num_examples=N,
                        estimator=estimator)


@pytest.mark.parametrize("estimator", beta_tcvae.TC_ESTIMATORS)
def test_decomposition_matches_brute_force(estimator):
  got = np.asarray(_terms(estimator))
  want = _brute_force(*_batch(), estimator)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("estimator", beta_tcvae.TC_ESTIMATORS)
def test_terms_sum_to_the_sampled_kl(estimator):
  z, mean, logvar = _batch(1)
  mi, tc, dwkl = (np.asarray(t, np.float64) for t in _terms(estimator, seed=1))
  z64, m64, lv64 = (np.asarray(a, np.float64) for a in (z, mean, logvar))
  log_qzx = np.sum(-0.5 * (math.log(2 * math.pi) + lv64 + (z64 - m64) ** 2 / np.exp(lv64)), -1)
  log_pz = np.sum(-0.5 * (math.log(2 * math.pi) + z64 ** 2), -1)
  np.testing.assert_allclose(mi + tc + dwkl, log_qzx - log_pz, rtol=1e-6, atol=1e-5)
  # On the batch: the means of the three terms are the batch's sampled KL.
  np.testing.assert_allclose(mi.mean() + tc.mean() + dwkl.mean(), (log_qzx - log_pz).mean(),
                             rtol=1e-6, atol=1e-5)


def test_weights_of_a_row():
  rows = jnp.arange(B)
  mss = np.exp(np.asarray(tc_losses.log_weights("mss", rows, B, N), np.float64))
  np.testing.assert_allclose(mss.sum(1), 1.0, rtol=1e-6)
  np.testing.assert_allclose(np.diag(mss), 1.0 / N, rtol=1e-6)
  mws = np.exp(np.asarray(tc_losses.log_weights("mws", rows, B, N), np.float64))
  np.testing.assert_allclose(mws.sum(1), 1.0 / N, rtol=1e-6)
  # Rows scored on one device of several keep their global positions.
  part = tc_losses.log_weights("mss", jnp.arange(2, 4), B, N)
  np.testing.assert_array_equal(part, tc_losses.log_weights("mss", rows, B, N)[2:4])


def test_total_correlation_responds_to_dependence():
  """A batch of independent coordinates has a TC near 0 (mss), one whose second coordinate
  copies the first a clearly positive one; mws reads (D - 1) log N higher (its weights sum
  to 1/N), a constant: the difference between the two batches is the same."""
  rng = np.random.default_rng(3)
  n, size = 256, 737_280
  mean = rng.normal(size=(n, 2)).astype(np.float32)
  logvar = np.full((n, 2), -2.4, np.float32)
  tcs = {}
  for dependent in (False, True):
    m = np.stack([mean[:, 0], mean[:, 0 if dependent else 1]], 1)
    z = (m + np.exp(-1.2) * rng.normal(size=(n, 2))).astype(np.float32)
    for estimator in beta_tcvae.TC_ESTIMATORS:
      _, tc, _ = tc_losses.decomposition(z, m, logvar, z, m, logvar, jnp.arange(n), size,
                                         estimator)
      tcs[estimator, dependent] = float(tc.mean())
  assert abs(tcs["mss", False]) < 0.3 and tcs["mss", True] > 0.6
  assert abs(tcs["mws", False] - tcs["mss", False] - math.log(size)) < 0.5
  assert tcs["mws", True] - tcs["mws", False] > 0.6


def _tiny_config(npz_pair, **overrides):
  c = config_base.base_config()
  beta_tcvae.config_keys(c)
  c.data.name = "npz"
  c.data.train_path, c.data.eval_path = npz_pair
  c.batch_size = 8
  c.model.hidden = (16,)
  c.model.latent_dim = 3
  c.eval.batch_size = 16
  return config_base.set_overrides(c, overrides)


@pytest.fixture(scope="module")
def tiny(npz_pair):
  config = _tiny_config(npz_pair)
  info = SourceInfo(image_shape=(8, 8, 1), num_examples=256)
  model = vae.make_model(config, info)
  x = jnp.asarray(np.random.default_rng(0).uniform(size=(8, 8, 8, 1)), jnp.float32)
  keys = spmd.example_keys(0, 0, jnp.arange(8))
  variables = spmd.init(model, jax.random.key(0), x[:1], keys[:1])
  return config, info, model, variables, x, keys


def test_loss_is_the_elbo_plus_beta_minus_one_tc_and_finite(tiny):
  config, info, model, variables, x, keys = tiny
  loss_fn = beta_tcvae.make_loss(config, info)
  run = jax.jit(lambda p, b, k, h: loss_fn(model, p, {}, {"image": b}, k, h))
  for beta in (1.0, 6.0):
    value, (metrics, _) = run(variables["params"], x, keys, {"beta": jnp.float32(beta)})
    for name in ("recon", "kl", "elbo", "mi", "tc", "dwkl", "kl_dim0"):
      assert np.isfinite(metrics[name]), name
    np.testing.assert_allclose(value, metrics["recon"] + metrics["kl"]
                               + (beta - 1.0) * metrics["tc"], rtol=1e-6)
  # beta = 1 is the plain VAE's objective, on the same draws.
  vae_config = _tiny_config((config.data.train_path, config.data.eval_path))
  vae.config_keys(vae_config)
  vae_value, _ = jax.jit(lambda p: vae.make_loss(vae_config)(
      model, p, {}, {"image": x}, keys, {"beta": jnp.float32(1.0)}))(variables["params"])
  np.testing.assert_allclose(value - 5.0 * metrics["tc"], vae_value, rtol=1e-5)


def test_eval_metrics_shapes(tiny):
  config, _, model, variables, x, keys = tiny
  out = jax.jit(lambda v: beta_tcvae.make_eval_metrics(config)(
      model, v, {"image": x}, keys, {"beta": jnp.float32(6.0)}))(variables)
  assert {"loss", "elbo", "kl", "recon", "recon_sse", "kl_dim2"} <= set(out)
  for name, v in out.items():
    assert v.shape == (8,) and np.all(np.isfinite(v)), name
  np.testing.assert_allclose(out["loss"], -out["elbo"], rtol=1e-6)


def test_loss_needs_the_training_set_size(tiny):
  config, info, *_ = tiny
  with pytest.raises(ValueError, match="num_examples"):
    beta_tcvae.make_loss(config, None)
  mss = _tiny_config((config.data.train_path, config.data.eval_path),
                     **{"loss.tc_estimator": "mss"})
  with pytest.raises(ConfigError, match="tc_estimator"):
    beta_tcvae.make_loss(mss, SourceInfo(image_shape=(8, 8, 1), num_examples=4))


@pytest.mark.parametrize("key,value,message", [
    ("loss.tc_estimator", "naive", "loss.tc_estimator='naive'"),
    ("loss.beta", -1.0, "loss.beta=-1.0"),
    ("batch_size", 1, "batch_size=1"),
    ("model.likelihood", "poisson", "model.likelihood='poisson'"),
    ("eval.iwae_ks", (), "eval.iwae_ks=()"),
])
def test_bad_values_are_refused_naming_the_key(npz_pair, key, value, message):
  config = _tiny_config(npz_pair, **{key: value})
  with pytest.raises(ConfigError) as e:
    validation.validate(config, num_devices=1)
  assert message in str(e.value)


def test_runlocal_config_trains():
  config = config_base.load_config(CONFIG + ":runlocal", {
      "num_train_steps": 60, "log_every": 10, "data.num_eval": 100})
  _, _, _, history = loop.train(config, None, evaluate=False)
  rows = [h for h in history if "train/loss" in h]
  first, last = rows[0], rows[-1]
  assert all(np.isfinite(h["train/loss"]) for h in rows)
  assert {"train/mi", "train/tc", "train/dwkl"} <= set(last)
  assert last["train/loss"] < 0.6 * first["train/loss"], (first, last)
  assert -last["train/elbo"] < 0.6 * -first["train/elbo"]

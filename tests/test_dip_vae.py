"""DIP-VAE: the covariance penalty against its formula on means built with a chosen
covariance, both types, the evaluation's covariance of the set, config checks, and a short
run of the runlocal config that must lower its loss."""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import ROOT
from vaelab import config_base, spmd, validation
from vaelab.data.base import SourceInfo
from vaelab.errors import ConfigError
from vaelab.losses import dip_vae as dip_losses
from vaelab.models import dip_vae, vae
from vaelab.training import loop

CONFIG = os.path.join(ROOT, "configs", "dip_vae_dsprites.py")
B = 64
# A covariance with large off-diagonal entries and a diagonal away from 1.
COV = np.array([[2.0, 0.6, -0.3], [0.6, 0.5, 0.2], [-0.3, 0.2, 1.3]])
OFFSET = np.array([3.0, -1.0, 0.5])


def _means_with_covariance(cov, seed=0):
  """(B, D) float32 means whose batch covariance (divided by B) is `cov`: random rows,
  whitened by their own covariance, coloured by cov's Cholesky factor, moved off 0."""
  x = np.random.default_rng(seed).normal(size=(B, cov.shape[0]))
  x -= x.mean(0)
  white = x @ np.linalg.inv(np.linalg.cholesky(x.T @ x / B)).T
  return (white @ np.linalg.cholesky(cov).T + OFFSET).astype(np.float32)


def _formula(cov, lambda_od, lambda_d):
  off = cov - np.diag(np.diag(cov))
  return lambda_od * np.sum(off ** 2) + lambda_d * np.sum((np.diag(cov) - 1) ** 2)


_penalty = jax.jit(lambda dip_type, mean, logvar, lod, ld: dip_losses.dip_penalty(
    dip_losses.dip_covariance(dip_type, mean, logvar), lod, ld), static_argnums=0)


def test_the_means_have_the_chosen_covariance():
  mean = _means_with_covariance(COV).astype(np.float64)
  np.testing.assert_allclose(np.cov(mean.T, bias=True), COV, atol=1e-5)


@pytest.mark.parametrize("lambda_od,lambda_d", [(10.0, 100.0), (2.0, 2.0), (0.0, 1.0)])
def test_dip_i_penalty_matches_the_formula(lambda_od, lambda_d):
  mean = _means_with_covariance(COV)
  logvar = np.zeros_like(mean)
  cov = dip_losses.covariance_of_means(jnp.asarray(mean))
  np.testing.assert_allclose(cov, COV, atol=2e-5)
  got = _penalty("i", mean, logvar, jnp.float32(lambda_od), jnp.float32(lambda_d))
  np.testing.assert_allclose(got, _formula(COV, lambda_od, lambda_d), rtol=1e-5, atol=1e-4)
  # disentanglement_lib's one-pass form E[mu mu^T] - E[mu] E[mu]^T, the same matrix.
  m64 = mean.astype(np.float64)
  one_pass = m64.T @ m64 / B - np.outer(m64.mean(0), m64.mean(0))
  np.testing.assert_allclose(cov, one_pass, atol=2e-5)


def test_dip_ii_adds_the_mean_posterior_variance():
  mean = _means_with_covariance(COV, seed=1)
  rng = np.random.default_rng(2)
  variances = rng.uniform(0.1, 0.9, size=mean.shape)
  logvar = np.log(variances).astype(np.float32)
  want = COV + np.diag(variances.mean(0))
  cov = dip_losses.dip_covariance("ii", jnp.asarray(mean), jnp.asarray(logvar))
  np.testing.assert_allclose(cov, want, atol=2e-5)
  got = _penalty("ii", mean, logvar, jnp.float32(10.0), jnp.float32(10.0))
  np.testing.assert_allclose(got, _formula(want, 10.0, 10.0), rtol=1e-5, atol=1e-4)


def test_identity_covariance_costs_nothing():
  mean = _means_with_covariance(np.eye(3))
  got = _penalty("i", mean, np.zeros_like(mean), jnp.float32(10.0), jnp.float32(100.0))
  assert abs(float(got)) < 1e-6 * 100


def _tiny_config(npz_pair, **overrides):
  c = config_base.base_config()
  dip_vae.config_keys(c)
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


@pytest.mark.parametrize("dip_type", dip_vae.DIP_TYPES)
def test_loss_is_the_elbo_plus_the_penalty_and_finite(tiny, dip_type):
  config, info, model, variables, x, keys = tiny
  config = config_base.set_overrides(config.copy_and_resolve_references(),
                                     {"loss.dip_type": dip_type})
  loss_fn = dip_vae.make_loss(config, info)
  h = {"lambda_od": jnp.float32(10.0), "lambda_d": jnp.float32(5.0)}
  value, (metrics, _) = jax.jit(lambda p: loss_fn(model, p, {}, {"image": x}, keys, h))(
      variables["params"])
  for name in ("recon", "kl", "elbo", "dip", "dip_offdiag", "dip_diag"):
    assert np.isfinite(metrics[name]), name
  np.testing.assert_allclose(metrics["dip"], 10.0 * metrics["dip_offdiag"]
                             + 5.0 * metrics["dip_diag"], rtol=1e-6)
  np.testing.assert_allclose(value, metrics["recon"] + metrics["kl"] + metrics["dip"],
                             rtol=1e-6)
  # The evaluation's set statistics on the same batch give the same covariance.
  stats_fn, reduce_fn = dip_vae.make_eval_set_stats(config)
  totals = jax.device_get(jax.jit(lambda v: stats_fn(model, v, {"image": x}, keys, h,
                                                     jnp.ones(8)))(variables))
  reduced = reduce_fn(totals)
  np.testing.assert_allclose(reduced["dip_offdiag"], metrics["dip_offdiag"], rtol=1e-3,
                             atol=1e-6)
  np.testing.assert_allclose(reduced["dip_diag"], metrics["dip_diag"], rtol=1e-3, atol=1e-6)


def test_eval_stats_leave_out_the_padding(tiny):
  config, _, model, variables, x, keys = tiny
  stats_fn, reduce_fn = dip_vae.make_eval_set_stats(config)
  run = jax.jit(lambda v, b, m: stats_fn(model, v, {"image": b}, keys, {}, m))
  mask = jnp.asarray([1.0] * 5 + [0.0] * 3)
  padded = reduce_fn(jax.device_get(run(variables, x, mask)))
  garbage = x.at[5:].set(1.0)
  np.testing.assert_allclose(reduce_fn(jax.device_get(run(variables, garbage, mask)))[
      "dip_offdiag"], padded["dip_offdiag"], rtol=1e-6)


def test_eval_metrics_shapes(tiny):
  config, _, model, variables, x, keys = tiny
  out = jax.jit(lambda v: dip_vae.make_eval_metrics(config)(model, v, {"image": x}, keys, {}))(
      variables)
  for name, v in out.items():
    assert v.shape == (8,) and np.all(np.isfinite(v)), name
  np.testing.assert_allclose(out["loss"], -out["elbo"], rtol=1e-6)


@pytest.mark.parametrize("key,value,message", [
    ("loss.dip_type", "iii", "loss.dip_type='iii'"),
    ("loss.lambda_od", -1.0, "loss.lambda_od=-1.0"),
    ("loss.lambda_d", -0.5, "loss.lambda_d=-0.5"),
    ("model.obs_sigma", 0.0, "model.obs_sigma=0.0"),
])
def test_bad_values_are_refused_naming_the_key(npz_pair, key, value, message):
  config = _tiny_config(npz_pair, **{key: value})
  with pytest.raises(ConfigError) as e:
    validation.validate(config, num_devices=1)
  assert message in str(e.value)


def test_variants_tie_lambda_d_as_the_study_does():
  c = config_base.load_config(CONFIG + ":dip_type=ii,lambda_od=5")
  assert (c.loss.dip_type, *dip_vae.hparams(c).values()) == ("ii", 5.0, 5.0)
  c = config_base.load_config(CONFIG + ":lambda_od=2")
  assert (c.loss.dip_type, *dip_vae.hparams(c).values()) == ("i", 2.0, 20.0)
  with pytest.raises(ValueError, match="dip_type"):
    config_base.load_config(CONFIG + ":dip_type=iii")


def test_runlocal_config_trains():
  config = config_base.load_config(CONFIG + ":runlocal", {
      "num_train_steps": 60, "log_every": 10, "data.num_eval": 100})
  _, _, _, history = loop.train(config, None, evaluate=False)
  rows = [h for h in history if "train/loss" in h]
  first, last = rows[0], rows[-1]
  assert all(np.isfinite(h["train/loss"]) for h in rows)
  assert {"train/dip", "train/dip_offdiag", "train/dip_diag"} <= set(last)
  assert last["train/loss"] < 0.6 * first["train/loss"], (first, last)

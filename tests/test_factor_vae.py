"""FactorVAE (models/factor_vae.py, losses/factor_vae.py): the discriminator's objective and
shuffled codes as disentanglement_lib defines them, and a discriminator that learns, in
isolation and inside a real run (its loss below ln 2 and its accuracy above chance on
held-out codes), with its group's metrics logged."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import set_overrides
from vaelab import config_base
from vaelab.losses import factor_vae as fv
from vaelab.models import factor_vae
from vaelab.training import loop

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def tiny_factor_vae(npz_pair, **overrides):
  c = config_base.base_config()
  factor_vae.config_keys(c)
  c.data.name, (c.data.train_path, c.data.eval_path) = "npz", npz_pair
  c.batch_size, c.num_train_steps = 32, 10
  c.log_every = c.eval_every = c.checkpoint_every = 10
  c.model.hidden, c.model.latent_dim = (32,), 4
  c.model.discriminator_hidden = (32, 32)
  c.eval.batch_size, c.eval.num_pictures, c.eval.iwae_ks = 32, 4, (1, 2)
  return set_overrides(c, overrides)


def test_discriminator_terms_are_disentanglement_libs():
  rng = np.random.default_rng(0)
  a, b = rng.normal(size=(5, 2)), rng.normal(size=(5, 2))
  a[0] = (40.0, -40.0)  # a saturated probability is clipped as disentanglement_lib clips it
  loss, accuracy = fv.discriminator_terms(jnp.asarray(a), jnp.asarray(b))
  softmax = lambda l: np.exp(l) / np.exp(l).sum(1, keepdims=True)
  p = np.clip(softmax(a), 1e-6, 1 - 1e-6)
  q = np.clip(softmax(b), 1e-6, 1 - 1e-6)
  np.testing.assert_allclose(loss, -0.5 * (np.log(p[:, 0]) + np.log(q[:, 1])), rtol=1e-5)
  np.testing.assert_allclose(accuracy, 0.5 * ((p[:, 0] > .5) * 1.0 + (q[:, 1] > .5)))
  np.testing.assert_allclose(fv.total_correlation(jnp.asarray(a)), a[:, 0] - a[:, 1],
                             rtol=1e-6)


def test_shuffled_codes_permute_each_dimension_on_its_own():
  z = jnp.arange(64 * 3, dtype=jnp.float32).reshape(64, 3)
  keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(0), i))(jnp.arange(64))
  s = np.asarray(fv.shuffle_dimensions(z, keys))
  for d in range(3):
    np.testing.assert_array_equal(np.sort(s[:, d]), np.asarray(z[:, d]))
  rows = [tuple(r) for r in np.asarray(z)]
  assert sum(tuple(r) in rows for r in s) < 8  # rows are broken up, not moved whole


def test_the_discriminator_learns_correlated_codes():
  """Codes whose two dimensions are equal: the joint and the shuffled codes differ, and a
  discriminator trained on the objective tells them apart on codes it has not seen."""
  disc = factor_vae.Discriminator((64, 64))
  keys = lambda seed: jax.vmap(lambda i: jax.random.fold_in(jax.random.key(seed), i))(
      jnp.arange(256))
  codes = lambda seed: jnp.repeat(jax.random.normal(jax.random.key(seed), (256, 1)), 2, 1)
  terms = lambda p, seed: fv.discriminator_terms(
      disc.apply(p, codes(seed)), disc.apply(p, fv.shuffle_dimensions(codes(seed), keys(seed))))
  params = disc.init(jax.random.key(0), jnp.zeros((1, 2)))
  tx = optax.adam(1e-3, b1=0.5, b2=0.9)
  opt = tx.init(params)

  @jax.jit
  def update(params, opt, seed):
    grads = jax.grad(lambda p: terms(p, seed)[0].mean())(params)
    updates, opt = tx.update(grads, opt)
    return optax.apply_updates(params, updates), opt

  for seed in range(300):
    params, opt = update(params, opt, seed)
  loss, accuracy = terms(params, 10_000)
  assert float(loss.mean()) < 0.8 * math.log(2)
  assert float(accuracy.mean()) > 0.7


@pytest.fixture(scope="module")
def run(npz_pair):
  config = tiny_factor_vae(npz_pair, num_train_steps=300, log_every=50, eval_every=10**6,
                           **{"loss.gamma": 1.0, "optimizer.learning_rate": 3e-3,
                              "discriminator_optimizer.learning_rate": 1e-3})
  _, _, results, history = loop.train(config, None, evaluate=True)
  return results, history


def test_a_run_trains_its_discriminator_and_logs_its_group(run):
  results, history = run
  logged = [h for h in history if "train/loss" in h]
  for name in ("discriminator_loss", "discriminator_grad_norm", "discriminator_learning_rate",
               "discriminator_accuracy", "tc"):
    assert all(np.isfinite(h[f"train/{name}"]) for h in logged), name
  assert logged[-1]["train/discriminator_learning_rate"] == pytest.approx(1e-3)
  assert logged[-1]["train/loss"] < 0.8 * logged[0]["train/loss"]
  # held out: the evaluation split's codes
  assert results["eval/discriminator_loss"] < math.log(2)
  assert results["eval/discriminator_accuracy"] > 0.5
  assert {"eval/elbo", "eval/kl", "eval/loss", "eval/nll"} <= set(results)

"""The weakly-supervised VAEs (models/weak_vae.py, ada_gvae.py, ada_mlvae.py,
losses/weak_vae.py) and their pairs (data/pairs.py): disentanglement_lib's formulas
(methods/weak/weak_vae.py, train_weak_lib.simple_dynamics) written again here in numpy and
compared on identical arrays, the pairs on both input paths, finite gradients, and short
runs of the runlocal configs."""
from __future__ import annotations

import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import ROOT
from vaelab import config_base, validation
from vaelab.data import dsprites, pairs, pipeline
from vaelab.errors import ConfigError
from vaelab.losses import weak_vae as weak_losses
from vaelab.models import vae, weak_vae
from vaelab.training import experiment as experiment_lib
from vaelab.training import loop

GVAE = os.path.join(ROOT, "configs", "ada_gvae_dsprites.py")
MLVAE = os.path.join(ROOT, "configs", "ada_mlvae_dsprites.py")
B, D = 16, 6


# ------------------------------------------------ dlib's formulas, in numpy (float64)


def np_compute_kl(z_1, z_2, logvar_1, logvar_2):
  var_1, var_2 = np.exp(logvar_1), np.exp(logvar_2)
  return var_1 / var_2 + np.square(z_2 - z_1) / var_2 - 1 + logvar_2 - logvar_1


def np_discretize_in_bins(x):
  """tf.histogram_fixed_width_bins(x, [min(x), max(x)], nbins=2): NaN (0 / 0) bins are
  INT_MIN, as TF's cast of a NaN float to int32 gives on x86."""
  with np.errstate(invalid="ignore", divide="ignore"):
    scaled = (x - x.min()) / (x.max() - x.min())
    idx = np.floor(2.0 * scaled)
    idx = np.minimum(np.maximum(idx, 0.0), 1.0)
  return np.where(np.isnan(idx), np.iinfo(np.int32).min, idx).astype(np.int64)


def np_aggregate_argmax(z_mean, z_logvar, new_mean, new_log_var, kl_per_point):
  mask = np.stack([np_discretize_in_bins(row) for row in kl_per_point]) == 1
  return np.where(mask, z_mean, new_mean), np.where(mask, z_logvar, new_log_var)


def np_aggregate_labels(z_mean, z_logvar, new_mean, new_log_var, labels):
  # tf.one_hot: a row of zeros for a label out of range.
  one_hot = (labels[:, None] == np.arange(z_mean.shape[1])[None, :]).astype(np.float32)
  keep = one_hot == one_hot.max(1, keepdims=True)
  return np.where(keep, z_mean, new_mean), np.where(keep, z_logvar, new_log_var)


def np_group(z_mean, z_mean_2, z_logvar, z_logvar_2):
  new_mean = 0.5 * z_mean + 0.5 * z_mean_2
  return new_mean, np.log(0.5 * np.exp(z_logvar) + 0.5 * np.exp(z_logvar_2))


def np_ml(z_mean, z_mean_2, z_logvar, z_logvar_2):
  var_1, var_2 = np.exp(z_logvar), np.exp(z_logvar_2)
  new_var = 2 * var_1 * var_2 / (var_1 + var_2)
  return (z_mean / var_1 + z_mean_2 / var_2) * new_var * 0.5, np.log(new_var)


def np_gaussian_kl(mean, logvar):
  """dlib's vae.compute_gaussian_kl: the batch mean of the per-example KL."""
  return np.mean(0.5 * np.sum(np.square(mean) + np.exp(logvar) - logvar - 1, axis=1))


def np_bernoulli_loss(x, logits):
  """dlib's bernoulli_loss (activation 'logits'): sigmoid cross-entropy summed per image."""
  x, logits = x.reshape(len(x), -1), logits.reshape(len(logits), -1)
  return np.sum(np.maximum(logits, 0) - logits * x + np.log1p(np.exp(-np.abs(logits))), 1)


def np_simple_dynamics(z, num_values, random_state, k):
  """simple_dynamics(..., return_index=True) on one row of factors (dlib draws the new
  values from numpy's global state; here from `random_state` too)."""
  z = z.copy()
  num_factors = len(num_values)
  k_observed = random_state.randint(1, num_factors) if k == -1 else k
  index_list = random_state.choice(z.shape[1], random_state.choice([1, k_observed]),
                                   replace=False)
  idx = -1
  for index in index_list:
    z[:, index] = random_state.choice(range(num_values[index]))
    idx = index
  return z, idx


def _posteriors(seed=0, equal_rows=()):
  rng = np.random.default_rng(seed)
  m1, m2 = rng.normal(size=(2, B, D)).astype(np.float32)
  l1, l2 = rng.uniform(-3, 1, size=(2, B, D)).astype(np.float32)
  for r in equal_rows:  # identical images give identical posteriors: every KL is 0
    m2[r], l2[r] = m1[r], l1[r]
  return m1, m2, l1, l2


# ------------------------------------------------ the formulas


def test_compute_kl_is_dlibs():
  m1, m2, l1, l2 = _posteriors()
  got = np.asarray(jax.jit(weak_losses.compute_kl)(m1, m2, l1, l2))
  np.testing.assert_allclose(got, np_compute_kl(*(a.astype(np.float64) for a in
                                                  (m1, m2, l1, l2))), rtol=2e-5, atol=2e-5)
  np.testing.assert_array_equal(np.asarray(weak_losses.compute_kl(m1, m1, l1, l1)), 0.0)


@pytest.mark.parametrize("kind,reference", [("group", np_group), ("ml", np_ml)])
def test_the_shared_posterior_is_dlibs(kind, reference):
  m1, m2, l1, l2 = _posteriors(1)
  got = [np.asarray(a) for a in weak_losses.combine(kind, m1, m2, l1, l2)]
  want = reference(*(a.astype(np.float64) for a in (m1, m2, l1, l2)))
  for g, w in zip(got, want):
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


def test_argmax_aggregation_is_dlibs_two_bin_threshold():
  m1, m2, l1, l2 = _posteriors(2, equal_rows=(3, 7))
  kl = np.array(weak_losses.compute_kl(m1, m2, l1, l2))
  # Rows whose values sit on a bin's edge: the maximum, the midpoint, ties.
  kl[0] = [0.0, 1.0, 2.0, 0.5, 1.5, 2.0]
  kl[1] = [5.0, 5.0, 5.0, 5.0, 5.0, 6.0]
  new_mean, new_logvar = np_group(m1, m2, l1, l2)
  want = np_aggregate_argmax(m1, l1, new_mean, new_logvar, kl)
  own = np.asarray(weak_losses.upper_bin(jnp.asarray(kl)))
  got = weak_losses.aggregate(own, m1, l1, new_mean, new_logvar)
  for g, w in zip(got, want):
    np.testing.assert_array_equal(np.asarray(g), w)
  assert not own[3].any() and not own[7].any()  # identical pair: every latent shared
  np.testing.assert_array_equal(own[0], [False, True, True, False, True, True])
  assert 0 < own.sum() < own.size


def test_labels_aggregation_is_dlibs():
  m1, m2, l1, l2 = _posteriors(3)
  labels = np.array([0, 1, 2, 3, 4, 5, 6, 9, 0, 2, 4, 1, 3, 5, 2, 0])  # 6, 9: no such latent
  new_mean, new_logvar = np_ml(m1, m2, l1, l2)
  want = np_aggregate_labels(m1, l1, new_mean, new_logvar, labels)
  own = np.asarray(weak_losses.label_mask(jnp.asarray(labels), D))
  got = weak_losses.aggregate(own, m1, l1, new_mean, new_logvar)
  for g, w in zip(got, want):
    np.testing.assert_array_equal(np.asarray(g), w)
  assert own[6].all() and own[7].all() and own[0].sum() == 1 and own[0, 0]


# ------------------------------------------------ the objective against dlib's model_fn


def _config(path=GVAE, **overrides):
  base = {"model.hidden": (32,), "model.latent_dim": D, "batch_size": 8,
          "num_train_steps": 40, "log_every": 10, "data.num_eval": 64}
  return config_base.load_config(path + ":runlocal", {**base, **overrides})


_EXPERIMENTS = {}


def _experiment(config):
  key = config_base.flat(config)
  key = str(sorted(key.items()))
  if key not in _EXPERIMENTS:
    _EXPERIMENTS[key] = experiment_lib.build(config)
  return _EXPERIMENTS[key]


@pytest.mark.parametrize("path,combine,aggregation", [
    (GVAE, np_group, "argmax"), (GVAE, np_group, "labels"),
    (MLVAE, np_ml, "argmax"), (MLVAE, np_ml, "labels")])
def test_loss_is_dlibs_model_fn(path, combine, aggregation):
  config = _config(path, **{"loss.aggregation": aggregation, "loss.beta": 4.0,
                            "data.pair_k": -1})
  exp = _experiment(config)
  variables = exp.init_state().variables()
  batch = exp.train_source.get(np.arange(8))
  keys = jax.random.split(jax.random.key(5), 8)
  loss_fn = exp.family.make_loss(config, exp.train_source.info)
  value, (metrics, _) = loss_fn(exp.model, variables["params"], {}, batch, keys,
                                {"beta": jnp.float32(4.0)})
  # dlib's model_fn, from the same encoder outputs and the same standard-normal draws.
  x1, x2 = batch["image"][:, 0], batch["image"][:, 1]
  enc = lambda x: [np.asarray(a, np.float64) for a in
                   exp.model.apply(variables, x, method=vae.VAE.encode)]
  (m1, l1), (m2, l2) = enc(x1), enc(x2)
  new_mean, new_logvar = combine(m1, m2, l1, l2)
  if aggregation == "labels":
    agg = lambda m, l: np_aggregate_labels(m, l, new_mean, new_logvar, batch["pair_label"])
  else:
    kl = np_compute_kl(m1, m2, l1, l2)
    agg = lambda m, l: np_aggregate_argmax(m, l, new_mean, new_logvar, kl)
  # Which latents are averaged: where the aggregate of a posterior whose means are all
  # distinct from the shared ones takes the shared ones.
  own = agg(np.full_like(m1, np.inf), l1)[0] == np.inf
  (ms1, ls1), (ms2, ls2) = agg(m1, l1), agg(m2, l2)
  fold = lambda i: jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, i)
  eps = lambda k: np.asarray(jax.vmap(lambda k: jax.random.normal(k, (D,)))(k), np.float64)
  z1 = ms1 + np.exp(ls1 / 2) * eps(fold(0))
  z2 = ms2 + np.exp(ls2 / 2) * eps(fold(1))
  dec = lambda z: np.asarray(exp.model.apply(variables, jnp.asarray(z, jnp.float32),
                                             method=vae.VAE.decode), np.float64)
  recon = 0.5 * np_bernoulli_loss(x1, dec(z1)).mean() + 0.5 * np_bernoulli_loss(
      x2, dec(z2)).mean()
  kl_loss = 0.5 * np_gaussian_kl(ms1, ls1) + 0.5 * np_gaussian_kl(ms2, ls2)
  np.testing.assert_allclose(float(value), recon + 4.0 * kl_loss, rtol=2e-5)
  np.testing.assert_allclose(float(metrics["kl"]), kl_loss, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(float(metrics["num_shared"]), np.mean(D - own.sum(1)))
  if aggregation == "labels":
    assert float(metrics["num_shared"]) == D - 1  # every label (< 5) is a latent's index


@pytest.mark.parametrize("path", [GVAE, MLVAE])
def test_gradients_are_finite_and_reach_every_parameter(path):
  config = _config(path)
  exp = _experiment(config)
  variables = exp.init_state().variables()
  batch = exp.train_source.get(np.arange(8))
  keys = jax.random.split(jax.random.key(0), 8)
  loss_fn = exp.family.make_loss(config, exp.train_source.info)
  grads = jax.grad(lambda p: loss_fn(exp.model, p, {}, batch, keys,
                                     {"beta": jnp.float32(1.0)})[0])(variables["params"])
  leaves = jax.tree.leaves(grads)
  assert all(np.isfinite(np.asarray(g)).all() for g in leaves)
  assert all(np.abs(np.asarray(g)).max() > 0 for g in leaves)


# ------------------------------------------------ the pairs


_SIZES = dsprites.FACTOR_SIZES
_VARYING = tuple(i for i, s in enumerate(_SIZES) if s > 1)


def _changes(first, second):
  return first[:, list(_VARYING)] != second[:, list(_VARYING)]


def _jax_pairs(k, n, seed=0):
  rng = np.random.default_rng(seed)
  first = dsprites.index_to_factors(rng.integers(0, dsprites.NUM_IMAGES, n))
  keys = jax.random.split(jax.random.key(seed), n)
  second, labels = jax.jit(pairs.pair_factors, static_argnums=(2, 3, 4))(
      keys, first, _VARYING, tuple(_SIZES[i] for i in _VARYING), k)
  return first, np.asarray(second), np.asarray(labels)


def _dlib_pairs(k, n, seed=0):
  rs = np.random.RandomState(seed)
  sizes = [_SIZES[i] for i in _VARYING]
  first = np.stack([[rs.randint(s) for s in sizes] for _ in range(n)])
  out = [np_simple_dynamics(first[i:i + 1], sizes, rs, k) for i in range(n)]
  return first, np.concatenate([o[0] for o in out]), np.array([o[1] for o in out])


def _histogram(counts, bins):
  return np.bincount(counts, minlength=bins)[:bins] / len(counts)


@pytest.mark.parametrize("k", [1, 3, -1])
def test_pairs_change_factors_as_dlibs_simple_dynamics(k):
  n = 6000
  first, second, labels = _jax_pairs(k, n)
  changes = _changes(first, second)
  # Only the varying factors change (the colour has one value), and a changed factor is
  # one of those chosen: with one chosen (always for k = 1), the label.
  np.testing.assert_array_equal(first[:, 0], second[:, 0])
  single = changes.sum(1) == 1
  if k == 1:
    assert changes.sum(1).max() == 1
    np.testing.assert_array_equal(np.argmax(changes[single], 1), labels[single])
  d_first, d_second, d_labels = _dlib_pairs(k, n, seed=1)
  d_changes = d_first != d_second
  # How many factors change, which ones, and the label's factor: as dlib draws them.
  np.testing.assert_allclose(_histogram(changes.sum(1), 6), _histogram(d_changes.sum(1), 6),
                             atol=0.03)
  np.testing.assert_allclose(changes.mean(0), d_changes.mean(0), atol=0.03)
  np.testing.assert_allclose(_histogram(labels, 5), _histogram(d_labels, 5), atol=0.03)
  # New values are uniform over a factor's range: pos_x's changed values.
  moved = changes[:, 3]
  values = np.bincount(second[moved, 4], minlength=32) / moved.sum()
  assert values.min() > 0 and values.max() < 3.0 / 32


def test_pair_k_is_refused_outside_the_factors():
  for k in (0, 6, -2):
    with pytest.raises(ConfigError, match="data.pair_k"):
      config = _config(**{"data.pair_k": k})
      validation.validate(config)
      pairs.pair_source(experiment_lib.make_sources(config.data)[0], k)


def test_pairs_are_the_same_on_both_paths_and_a_function_of_seed_step_and_row():
  config = _config(**{"data.pair_k": -1, "batch_size": 16})
  exp = _experiment(config)
  feed_of = lambda seed: pipeline.DeviceFeed(
      [pipeline.Batcher(exp.train_source, 16, seed)], exp.train_form, exp.mesh)
  batcher = pipeline.Batcher(exp.train_source, 16, 0)
  host = batcher.batch(5)
  device = jax.device_get(feed_of(0).batch(5))
  for key in ("image", "factors", "pair_label", "index"):
    np.testing.assert_array_equal(host[key], device[key], err_msg=key)
  assert host["image"].shape == (16, 2, 64, 64, 1)
  # The images are the renderer's of the pair's factors.
  np.testing.assert_array_equal(host["image"][:, 1], dsprites.render(host["factors"][:, 1]))
  # Another seed, the same rows: other first images, and other changes.
  other = jax.device_get(feed_of(1).batch(5))
  assert not np.array_equal(other["factors"], device["factors"])
  # The same first image met at another step draws another pair.
  idx = batcher.indices(5)
  later = exp.train_source.get(idx, keys=jax.random.split(jax.random.key(9), 16))
  np.testing.assert_array_equal(later["factors"][:, 0], host["factors"][:, 0])
  assert not np.array_equal(later["factors"][:, 1], host["factors"][:, 1])


# ------------------------------------------------ short runs


@pytest.mark.parametrize("path", [GVAE, MLVAE])
def test_runlocal_config_trains(path):
  config = config_base.load_config(path + ":runlocal", {
      "num_train_steps": 40, "log_every": 10, "data.num_eval": 100, "data.pair_k": -1,
      "model.hidden": (128,), "batch_size": 32})
  _, _, _, history = loop.train(config, None, evaluate=False)
  rows = [h for h in history if "train/loss" in h]
  assert all(np.isfinite(h["train/loss"]) for h in rows)
  assert all(0 <= h["train/num_shared"] <= 10 for h in rows)
  assert rows[-1]["train/loss"] < 0.6 * rows[0]["train/loss"], (rows[0], rows[-1])


@pytest.mark.parametrize("path", [GVAE])
def test_sweep_is_dlibs_grid_and_each_k_one_population(path):
  from vaelab.training import population, sweep
  trials = sweep.load_sweep(path)
  assert {(t["loss.beta"], t["data.pair_k"]) for t in trials} == {
      (b, k) for b in (1.0, 2.0, 4.0, 6.0, 8.0, 16.0) for k in (1, -1)}
  configs = [config_base.set_overrides(_config(path), t) for t in trials]
  ks = [sorted({configs[i].data.pair_k for i in g}) for g in population.groups(configs)]
  assert sorted(ks) == [[-1], [1]]

"""Denoising autoencoder: the corruption process, the loss against the clean input, its
noise level as a step argument, refused values, and an end-to-end run."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_config
from vaelab import validation
from vaelab.errors import ConfigError
from vaelab.losses import dae as dae_losses
from vaelab.losses import reconstruction
from vaelab.models import ae, dae, get_family
from vaelab.models import nets
from vaelab.training import loop

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

N, SHAPE = 64, (8, 8, 1)


def _keys(n=N, seed=0):
  return jax.vmap(lambda i: jax.random.fold_in(jax.random.key(seed), i))(jnp.arange(n))


def dae_config(npz_pair, **overrides):
  overrides = {"model.name": "dae", "model.corruption": "mask", "model.noise_level": 0.25,
               **overrides}
  return tiny_config("dae", *npz_pair, **overrides)


@pytest.mark.parametrize("level", [0.1, 0.25, 0.6])
def test_masking_zeroes_a_fraction_nu_of_the_pixels(level):
  x = jnp.full((N, *SHAPE), 0.7)
  out = np.asarray(dae_losses.corrupt("mask", x, level, _keys()))
  assert set(np.unique(out)) <= {0.0, np.float32(0.7)}
  n = out.size  # 4096 pixels: standard error of the fraction <= 0.008
  assert (out == 0).mean() == pytest.approx(level, abs=4 * np.sqrt(level * (1 - level) / n))


def test_salt_and_pepper_sets_a_fraction_nu_to_zero_or_one():
  level, x = 0.3, jnp.full((N, *SHAPE), 0.5)
  out = np.asarray(dae_losses.corrupt("salt_pepper", x, level, _keys()))
  assert set(np.unique(out)) <= {0.0, 0.5, 1.0}
  changed = out != 0.5
  se = np.sqrt(level * (1 - level) / out.size)
  assert changed.mean() == pytest.approx(level, abs=4 * se)
  assert (out[changed] == 1).mean() == pytest.approx(0.5, abs=4 * 0.5 / np.sqrt(changed.sum()))


def test_gaussian_noise_has_the_right_std_and_is_clipped():
  x = jnp.full((N, *SHAPE), 0.5)
  out = np.asarray(dae_losses.corrupt("gaussian", x, 0.1, _keys()))
  # sigma = 0.1 on mid-grey: clipping at 5 sigma touches nothing.
  assert (out - 0.5).std() == pytest.approx(0.1, rel=0.05)
  assert abs((out - 0.5).mean()) < 4 * 0.1 / np.sqrt(out.size)
  wide = np.asarray(dae_losses.corrupt("gaussian", x, 2.0, _keys()))
  assert wide.min() == 0.0 and wide.max() == 1.0
  assert ((wide == 0) | (wide == 1)).mean() > 0.6  # P(|N(0, 2)| > 0.5) = 0.80


def test_corruption_of_an_example_does_not_depend_on_its_batch():
  x = jax.random.uniform(jax.random.key(1), (N, *SHAPE))
  keys = _keys()
  whole = dae_losses.corrupt("salt_pepper", x, 0.4, keys)
  halves = jnp.concatenate([dae_losses.corrupt("salt_pepper", x[:32], 0.4, keys[:32]),
                            dae_losses.corrupt("salt_pepper", x[32:], 0.4, keys[32:])])
  np.testing.assert_array_equal(whole, halves)


def _model_and_params():
  model = ae.AE(nets.NetSpec(hidden=(16,)), 4, SHAPE)
  x = jax.random.uniform(jax.random.key(2), (N, *SHAPE))
  params = model.init(jax.random.key(3), x)["params"]
  return model, params, {"image": x}


@pytest.mark.parametrize("kind", dae_losses.KINDS)
def test_noise_level_zero_is_exactly_the_plain_autoencoder(npz_pair, kind):
  model, params, batch = _model_and_params()
  config = dae_config(npz_pair, **{"model.corruption": kind})
  hp = {k: jnp.asarray(v) for k, v in dae.hparams(config).items()}
  hp["noise_level"] = jnp.asarray(0.0)
  value, (metrics, _) = dae.make_loss(config)(model, params, {}, batch, _keys(), hp)
  ref, (ref_metrics, _) = ae.make_loss(config)(model, params, {}, batch, _keys(), {})
  assert float(value) == float(ref)
  assert float(metrics["recon_sse"]) == float(ref_metrics["recon_sse"])


def test_loss_reconstructs_the_corrupted_input_against_the_clean_one(npz_pair):
  model, params, batch = _model_and_params()
  config = dae_config(npz_pair)
  x, keys = batch["image"], _keys()
  value, _ = dae.make_loss(config)(model, params, {}, batch, keys,
                                   {"noise_level": jnp.asarray(0.5)})
  noisy = dae_losses.corrupt("mask", x, 0.5, keys)
  logits = model.apply({"params": params}, noisy)
  against_clean = reconstruction.nll("bernoulli", logits, x).mean()
  against_noisy = reconstruction.nll("bernoulli", logits, noisy).mean()
  np.testing.assert_allclose(value, against_clean, rtol=1e-6)
  assert abs(float(against_clean) - float(against_noisy)) > 1e-2  # 1e4 x the tolerance
  plain, _ = ae.make_loss(config)(model, params, {}, batch, keys, {})
  assert abs(float(value) - float(plain)) > 1e-2


def test_noise_level_is_an_array_a_population_can_vmap_over(npz_pair):
  model, params, batch = _model_and_params()
  config = dae_config(npz_pair)
  assert dae.FAMILY.hparams(config) == {"noise_level": 0.25}
  loss_fn = dae.make_loss(config)
  levels = jnp.array([0.0, 0.25, 0.5])
  one = lambda nu: loss_fn(model, params, {}, batch, _keys(), {"noise_level": nu})[0]
  batched = jax.jit(jax.vmap(one))(levels)
  for i, nu in enumerate(levels):
    # Two programs summing ~1,000 float32 terms in their own orders (measured 1.0e-6 apart).
    np.testing.assert_allclose(batched[i], one(nu), rtol=1e-5)
  plain, _ = ae.make_loss(config)(model, params, {}, batch, _keys(), {})
  assert float(batched[0]) == pytest.approx(float(plain), rel=1e-5)
  assert len({float(v) for v in batched}) == 3


@pytest.mark.parametrize("overrides, match", [
    ({"model.noise_level": 1.5}, r"model\.noise_level=1\.5"),
    ({"model.noise_level": -0.1}, r"model\.noise_level=-0\.1"),
    ({"model.corruption": "gaussian", "model.noise_level": -0.2}, r"model\.noise_level=-0\.2"),
    ({"model.corruption": "salt_pepper", "model.noise_level": 1.01}, r"model\.noise_level"),
    ({"model.corruption": "blur"}, r"model\.corruption='blur'"),
    ({"eval.noise_level": 2.0}, r"eval\.noise_level=2\.0"),
    ({"model.likelihood": "l1"}, r"model\.likelihood='l1'"),
    ({"model.likelihood": "gaussian"}, r"model\.likelihood='gaussian'.*sigmoid_sse"),
])
def test_bad_values_are_refused_naming_the_key(npz_pair, overrides, match):
  with pytest.raises(ConfigError, match=match):
    validation.validate(dae_config(npz_pair, **overrides), num_devices=1)


def test_good_values_pass(npz_pair):
  for kind, level in (("mask", 0.0), ("mask", 1.0), ("gaussian", 1.5), ("salt_pepper", 0.5)):
    family = validation.validate(dae_config(npz_pair, **{"model.corruption": kind,
                                                         "model.noise_level": level}), 1)
    assert family is get_family("dae") and family.name == "dae"


def test_training_run_reports_the_autoencoder_metrics(npz_pair, tmp_path):
  config = dae_config(npz_pair, num_train_steps=30, log_every=10, eval_every=30,
                      checkpoint_every=30, **{"optimizer.learning_rate": 3e-3})
  results = loop.train_and_evaluate(config, str(tmp_path / "dae"))
  for name in ("eval/loss", "eval/recon_sse", "eval/denoise_sse", "eval/jacobian_fro2",
               "eval/pca_recon_sse", "eval/probe_error", "eval/probe_error_pixels"):
    assert np.isfinite(results[name]), name
  with open(tmp_path / "dae" / "metrics.jsonl") as f:
    losses = [m["train/loss"] for m in map(json.loads, f) if "train/loss" in m]
  assert losses[-1] < 0.8 * losses[0]

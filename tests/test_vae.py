"""The VAE family (vaelab/models/vae.py): per-example reparameterization, the capacity
objective tracking C, the final bounds and active units, the IWAE objective and its eval/loss,
and its config checks. (The bounds' estimator: tests/test_iwae.py; the objectives' formulas:
tests/test_losses.py.)"""
from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_config
from vaelab import validation
from vaelab.data.base import SourceInfo
from vaelab.errors import ConfigError
from vaelab.losses import iwae
from vaelab.models import vae as vae_lib
from vaelab.spmd import example_keys
from vaelab.training import loop


def test_reparameterization_depends_on_each_examples_key_only():
  """The same example with the same key gets the same z wherever it sits in the batch, so a
  batch split over devices draws the same noise as on one device."""
  mean, logvar = jnp.zeros((4, 3)), jnp.zeros((4, 3))
  keys = example_keys(7, 3, jnp.arange(4))
  z_all = vae_lib.reparameterize(keys, mean, logvar)
  z_half = vae_lib.reparameterize(keys[2:], mean[2:], logvar[2:])
  np.testing.assert_array_equal(z_all[2:], z_half)
  assert not np.allclose(z_all[0], z_all[1])
  # And it is a sample from N(mean, exp(logvar)).
  keys = example_keys(0, 0, jnp.arange(20000))
  z = vae_lib.reparameterize(keys, jnp.full((20000, 1), 2.0), jnp.full((20000, 1), np.log(0.25)))
  assert abs(float(z.mean()) - 2.0) < 0.02 and abs(float(z.std()) - 0.5) < 0.02



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
    ("loss.beta", -1.0), ("loss.beta", float("inf")), ("loss.gamma", float("nan")),
    ("loss.capacity_max", -5.0), ("loss.gamma", -1.0),
    ("loss.iwae_k", 0), ("eval.iwae_ks", (1, 0)), ("loss.capacity_steps", 0),
    ("loss.objective", "iwea"), ("eval.iwae_chunk", 0)])
def test_bad_values_are_refused_naming_the_key(npz_pair, key, value):
  config = tiny_config("vae", *npz_pair, **{key: value})
  with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
    validation.validate(config)

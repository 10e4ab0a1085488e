"""Contractive autoencoder: the three penalty paths agree, bad values are refused by key, and
a tiny run learns with the penalty lowering the Jacobian norm."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_config, set_overrides
from vaelab import validation
from vaelab.errors import ConfigError
from vaelab.losses import cae as cae_losses
from vaelab.models import ae, cae
from vaelab.models.nets import NetSpec
from vaelab.training import loop

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def cae_config(npz_pair, **overrides):
  c = tiny_config("cae", *npz_pair, **{"model.hidden": (),
                                      "model.code_activation": "sigmoid"})
  c.model.latent_dim = 24
  c.loss.contractive_weight, c.loss.penalty, c.loss.num_projections = 0.5, "closed_form", 2
  return set_overrides(c, overrides)


def _sigmoid_ae(hidden=()):
  m = ae.AE(NetSpec(hidden=hidden, activation="tanh"), 12, (5, 5, 1), "sigmoid")
  x = jax.random.uniform(jax.random.key(0), (4, 5, 5, 1))
  v = m.init(jax.random.key(1), x)
  # Larger weights than the default init, so the sigmoid is far from linear.
  v = jax.tree.map(lambda a: 3 * a, v)
  return m, v, x


def test_closed_form_equals_jacfwd_on_a_sigmoid_layer():
  m, v, x = _sigmoid_ae()
  encode = lambda u: m.apply(v, u, method="encode")
  exact = cae_losses.jacobian_fro2_jacfwd(encode, x)
  fn = cae.penalty_fn("closed_form", 1)
  closed, _ = fn(m, v, x, jax.random.split(jax.random.key(2), 4))
  assert exact.shape == (4,)
  np.testing.assert_allclose(closed, exact, rtol=1e-5)
  np.testing.assert_allclose(cae_losses.jacobian_fro2_exact(encode, x), exact, rtol=1e-5)
  # The closed form is not trivially right: with the kernel of another model it differs.
  kernel = v["params"]["encoder"]["dense_0"]["kernel"]
  wrong = cae_losses.jacobian_fro2_sigmoid(encode(x), 1.1 * kernel)
  assert not np.allclose(wrong, exact, rtol=1e-3)


@pytest.mark.parametrize("hidden", [(), (7,)])
def test_estimator_mean_is_within_standard_errors_of_the_exact_value(hidden):
  m, v, x = _sigmoid_ae(hidden)
  encode = lambda u: m.apply(v, u, method="encode")
  exact = np.asarray(cae_losses.jacobian_fro2_jacfwd(encode, x))
  n = 2000
  keys = jax.random.split(jax.random.key(3), 4)
  # n independent one-projection estimates per example: their mean and standard error.
  many = np.asarray(jax.vmap(lambda p: cae_losses.jacobian_fro2_estimator(
      encode, x, jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, p), 1))(jnp.arange(n)))
  assert many.shape == (n, 4)
  mean, se = many.mean(0), many.std(0, ddof=1) / np.sqrt(n)
  assert (se > 0).all()
  assert (np.abs(mean - exact) < 4 * se).all(), (mean, exact, se)
  # Through the family's path with num_projections draws, averaged in one call.
  est, _ = cae.penalty_fn("estimator", 500)(m, v, x, keys)
  np.testing.assert_allclose(est, exact, rtol=0.25)


@pytest.mark.parametrize("key,value,message", [
    ("loss.contractive_weight", -0.1, "loss.contractive_weight=-0.1"),
    ("loss.penalty", "hessian", "loss.penalty='hessian'"),
    ("loss.num_projections", 0, "loss.num_projections=0"),
    ("model.hidden", (8,), "loss.penalty='closed_form'"),
    ("model.code_activation", "relu", "loss.penalty='closed_form'"),
])
def test_bad_values_are_refused_naming_the_key(npz_pair, key, value, message):
  config = cae_config(npz_pair, **{key: value})
  with pytest.raises(ConfigError) as e:
    validation.validate(config, num_devices=1)
  assert message in str(e.value)


def test_deep_encoder_is_accepted_with_the_estimator(npz_pair):
  config = cae_config(npz_pair, **{"model.hidden": (8,), "loss.penalty": "estimator"})
  validation.validate(config, num_devices=1)


def test_tiny_runs_learn_and_the_penalty_contracts(npz_pair, tmp_path):
  results, first_last = {}, {}
  for weight in (0.0, 1.0):
    config = cae_config(npz_pair, num_train_steps=40, log_every=10, eval_every=40,
                        checkpoint_every=40, **{"optimizer.learning_rate": 1e-2,
                                                "loss.contractive_weight": weight,
                                                "eval.probe_train_size": 64})
    workdir = str(tmp_path / f"w{weight}")
    results[weight] = loop.train_and_evaluate(config, workdir)
    with open(f"{workdir}/metrics.jsonl") as f:
      logged = [json.loads(l) for l in f if "train/loss" in l]
    first_last[weight] = logged[0]["train/loss"], logged[-1]["train/loss"]
  for weight, (first, last) in first_last.items():
    assert last < 0.8 * first, (weight, first, last)
  assert results[1.0]["eval/jacobian_fro2"] < 0.5 * results[0.0]["eval/jacobian_fro2"]
